//! virtio-mmio transport (version 2).
