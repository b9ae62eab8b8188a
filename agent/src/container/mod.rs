//! The container runtime: OCI spec to namespaces, mounts, process set-up and cgroup v2.

pub mod caps;
pub mod cgroup;
pub mod config;
pub mod devices;
pub mod helper;
pub mod init;
pub mod launch;
pub mod paths;
pub mod seccomp;
pub mod syscall;
