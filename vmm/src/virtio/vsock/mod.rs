//! virtio-vsock device with a hybrid (Unix socket) back-end, compatible with Firecracker's
//! contract: host clients connect to one Unix socket and send `CONNECT <port>\n` (answered
//! `OK <host port>\n`); guest connections to the host on port P go to `<socket path>_P`.
//!
//! Modules, from the wire up:
//! - [`packet`]: header layout and constants;
//! - [`connect_line`]: the `CONNECT <port>\n` handshake line;
//! - [`connection`]: one connection's state machine, credit and buffering (no file descriptors);
//! - [`host_socket`]: Unix-socket helpers (non-blocking connect, clients still handshaking);
//! - [`backend`]: all connections and host sockets, and the packets owed to the guest;
//! - [`device`]: the virtio device (queues, config, event-loop subscriber);
//! - [`log_limit`]: keeps a misbehaving guest from flooding the log.

pub mod backend;
pub mod connect_line;
pub mod connection;
pub mod device;
pub mod host_socket;
pub mod log_limit;
pub mod packet;

pub use device::{Vsock, VsockError};

#[cfg(test)]
mod tests;
