//! Hull's containerd runtime: the shim v2 (`containerd-shim-hull-v2`) that runs each pod in a
//! microVM (or, for tests only, behind a host agent) and the `hull` command line tool.

pub mod agent_client;
pub mod agent_log;
pub mod bench;
pub mod check;
pub mod config;
pub mod console;
pub mod convert;
pub mod cri;
pub mod cri_client;
pub mod daemon;
pub mod events;
pub mod exit;
pub mod install;
pub mod mounts;
pub mod network;
pub mod pool;
pub mod port_forward;
pub mod proc_tree;
pub mod publisher;
pub mod sandbox;
pub mod shared_dir;
pub mod shim;
pub mod stdio;
pub mod task;
pub mod threads;
