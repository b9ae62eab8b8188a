//! hull-vmm: a KVM microVM monitor for Hull sandboxes.

pub mod boot;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod virtio;
