//! hull-agent: PID 1 of a Hull guest. It sets the guest up and serves the agent API
//! (`hull_proto`) over vsock; on a host (tests) it serves the same API on a Unix socket.
//!
//! Modules: [`cli`] (host-mode command line), [`pid1`] (init mode), [`guest_init`] (mounts,
//! banner, boot marker), [`server`] (ttrpc server lifecycle), [`service`] (the RPC handlers),
//! [`validate`] (request validation), [`guest_info`] (GetGuestDetails), [`reaper`] (zombies),
//! [`power`] (guest power-off), [`oom`] (GetOOMEvent), [`mounts`] (mount table clean-up),
//! [`network`] (interfaces and routes over rtnetlink), [`port_forward`] (TCP forwards from
//! the host into the guest), [`console`] (the debug console), [`logging`].

pub mod cli;
pub mod conn_limits;
pub mod console;
pub mod container;
pub mod exits;
pub mod guest_info;
pub mod guest_init;
pub mod hybrid;
pub mod kmsg;
pub mod logging;
pub mod mounts;
pub mod network;
pub mod oom;
pub mod pid1;
pub mod port_forward;
pub mod power;
pub mod ready;
pub mod reaper;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod stats;
pub mod stdio;
pub mod validate;

/// This agent's build version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether this process is the guest's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Host mode: serves the API on `listen` on a current-thread runtime until PowerOff or
/// SIGTERM/SIGINT. Returns why it stopped.
pub fn run_host(
    listen: &cli::ListenAddress,
    shared_dir: Option<std::path::PathBuf>,
) -> Result<server::StopReason, HostError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HostError::Runtime)?;
    Ok(runtime.block_on(server::serve(listen, shared_dir))?)
}

/// Host mode failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The tokio runtime could not be built.
    #[error("building the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
}
