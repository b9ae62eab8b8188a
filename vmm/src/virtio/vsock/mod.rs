//! virtio-vsock device with a hybrid (Unix socket) back-end.

pub mod connect_line;
pub mod connection;
pub mod packet;
