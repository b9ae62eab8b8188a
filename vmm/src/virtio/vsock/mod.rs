//! virtio-vsock device with a hybrid (Unix socket) back-end.
