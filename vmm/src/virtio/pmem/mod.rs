//! virtio-pmem (virtio 1.2, section 5.19) for one job: a **read-only guest root image shared by
//! every VM through the host page cache**. The image file is mapped MAP_PRIVATE into its own KVM
//! memory slot above the guest's RAM; the guest's pmem driver sees it as persistent memory and,
//! with a PFN info block in the image and fs-DAX, maps file pages straight into its processes. An
//! agent run from such a root costs each VM no RAM for its text: the pages are the host's page
//! cache of the image, one copy for all VMs.
//!
//! Nothing the guest does reaches the file: it is opened read-only and mapped private, so a guest
//! write (a hostile guest can write anywhere in the window) lands in a private copy of that page,
//! bounded by the image size and dropped with the VM. A flush request therefore has nothing to
//! persist and succeeds.
//!
//! Modules:
//! - [`image`]: the image file checked and mapped (the memory slot's backing);
//! - [`device`]: the virtio device (config space `start`/`size`, the request queue; each request
//!   read by a pure function over guest memory).

pub mod device;
pub mod image;

pub use device::{Pmem, PmemError, PmemStats};
pub use image::{PmemImage, PmemImageError, PMEM_ALIGN};

/// Request type of a flush (virtio 1.2, 5.19.6): the only request the driver sends.
pub const VIRTIO_PMEM_REQ_TYPE_FLUSH: u32 = 0;
/// Response: the request succeeded.
pub const VIRTIO_PMEM_RESP_TYPE_OK: u32 = 0;
/// Response: the request failed (an unknown request type).
pub const VIRTIO_PMEM_RESP_TYPE_EIO: u32 = 1;

#[cfg(test)]
mod tests;
