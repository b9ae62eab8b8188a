//! hull-vmm: a KVM microVM monitor for Hull sandboxes.
//!
//! [`microvm::run`] takes a [`microvm::VmConfig`] and runs the VM until the guest powers off, the VMM
//! is signalled, or a vCPU fails.

pub mod boot;
pub mod cmdline;
pub mod control;
pub mod devices;
pub mod exit_stats;
pub mod kvm_host;
pub mod kvm_stats;
pub mod layout;
pub mod memory;
pub mod microvm;
pub mod seccomp;
pub mod vcpu;
pub mod virtio;
pub mod vm;
