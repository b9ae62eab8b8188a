//! virtio-balloon (virtio 1.2, section 5.5) used for one job: **free page reporting**. The guest
//! driver hands back blocks of memory it has freed (the initramfs after unpacking, init sections,
//! dropped page cache) and hull-vmm releases their host pages, so an idle pod costs the host what
//! its guest uses now, not everything it ever touched.
//!
//! The balloon itself is never inflated: `num_pages` stays 0, so a well-behaved driver posts
//! nothing on the inflate and deflate queues; chains found there are returned untouched.
//!
//! Modules:
//! - [`report`]: a reporting chain read into guest-physical ranges (pure over guest memory; every
//!   hostile-guest check lives here), and the [`Discard`] seam that releases them;
//! - [`device`]: the virtio device (features, config space, queues, event-loop subscriber).

pub mod device;
pub mod report;

pub use device::{Balloon, BalloonError, BalloonStats};
pub use report::{Discard, FreeRange, PunchHole, ReportError};

/// Feature bit: the device has a free page reporting queue (virtio 1.2, 5.5.3).
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;

/// Size of the balloon's guest page (the unit of the ranges it accepts).
pub const BALLOON_PAGE_SIZE: u64 = 4096;

#[cfg(test)]
mod tests;
