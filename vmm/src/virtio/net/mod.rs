//! virtio-net device over a tap (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), driven by the event loop.
//!
//! Modules, from the wire up:
//! - [`config`]: the `--net` value, offered features, config space;
//! - [`frame`]: tx chains gathered into frames, rx frames scattered over chains (pure over guest
//!   memory; all the hostile-guest checks live here);
//! - [`tap`]: the [`TapIo`] seam and the real [`Tap`];
//! - [`device`]: the virtio device (queues, features, event-loop subscriber).
//!
//! Back-end seam: the userspace device talks to the host only through [`TapIo`]. A vhost-net
//! back-end (where `/dev/vhost-net` exists) would instead hand the queues to the kernel: it would be
//! a second `VirtioDevice` sharing [`config`] (features, config space) and [`Tap`] (the tap fd is
//! what VHOST_NET_SET_BACKEND takes), not another `TapIo`.

pub mod config;
pub mod device;
pub mod frame;
pub mod tap;

pub use config::{MacAddr, NetConfig, NetConfigError, TapSource};
pub use device::{Net, NetError, NetStats};
pub use tap::{Tap, TapError, TapIo};

#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod tests;
