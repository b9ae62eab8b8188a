//! `hull console <sandbox>`: the operator's shell in a sandbox's guest. The shim opens the
//! guest's debug console only when its config says `debug_console = true` (CreateSandbox's
//! `debug_console`), and then leaves [`ENABLED_MARKER`] in the sandbox directory; `hull
//! console` refuses a sandbox without it, in words. It connects to the sandbox's hybrid-vsock
//! socket (hull-vmm's, or the host agent's listener) with the CONNECT handshake to
//! [`hull_proto::DEBUG_CONSOLE_PORT`] and splices the local terminal with the guest's pty
//! ([`splice`]), the local terminal in raw mode when stdin is one ([`terminal`]).

pub mod splice;
pub mod terminal;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sandbox::SandboxPaths;

/// File in the sandbox directory saying the sandbox was created with the debug console.
pub const ENABLED_MARKER: &str = "debug-console";
/// How long the CONNECT handshake to the console port may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `hull console` cannot open a console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The id cannot name a sandbox.
    #[error("bad sandbox id {0:?}")]
    BadId(String),
    /// No sandbox directory with that id.
    #[error("no sandbox {id} under {run_dir}; `hull ps` lists the sandboxes")]
    NoSandbox {
        /// The id.
        id: String,
        /// The run directory searched.
        run_dir: PathBuf,
    },
    /// The sandbox was started without the console.
    #[error(
        "sandbox {0} has no debug console: it was started without `debug_console = true` in the \
         hull config (the setting applies to sandboxes started after it is set; the guest image \
         needs a shell too: `make guest DEBUG_IMAGE=1`)"
    )]
    NotEnabled(String),
    /// The handshake to the console port failed.
    #[error(
        "the debug console of {what} did not answer (an agent older than this hull, or one \
         started without it): {source}"
    )]
    Unreachable {
        /// The sandbox or socket.
        what: String,
        /// The handshake error.
        source: hull_proto::client::HybridVsockError,
    },
    /// Local terminal or socket I/O failed.
    #[error("{action}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Records in sandbox directory `dir` that its console is open (the shim, after CreateSandbox).
pub fn mark_enabled(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(ENABLED_MARKER), b"")
}

/// The hybrid-vsock socket of sandbox `id` under `run_dir`, if it exists and has the console.
pub fn console_socket(run_dir: &Path, id: &str) -> Result<PathBuf, ConsoleError> {
    if !hull_proto::valid_id(id) {
        return Err(ConsoleError::BadId(id.to_string()));
    }
    let paths = SandboxPaths::new(run_dir, id);
    if !paths.pids_file.is_file() {
        return Err(ConsoleError::NoSandbox {
            id: id.to_string(),
            run_dir: run_dir.to_path_buf(),
        });
    }
    if !paths.dir.join(ENABLED_MARKER).is_file() {
        return Err(ConsoleError::NotEnabled(id.to_string()));
    }
    Ok(paths.vsock_socket)
}

/// Opens the console of sandbox `id` and runs it on this process's stdin/stdout until the
/// guest side closes (or Ctrl-] on a terminal).
pub async fn run(run_dir: &Path, id: &str) -> Result<(), ConsoleError> {
    let socket = console_socket(run_dir, id)?;
    attach(&socket, format!("sandbox {id}")).await
}

/// Opens the console through hybrid-vsock socket `uds` directly (a VM or host agent started
/// by hand: `hull agent console`) and runs it as [`run`] does.
pub async fn run_on_socket(uds: &Path) -> Result<(), ConsoleError> {
    attach(uds, uds.display().to_string()).await
}

async fn attach(socket: &Path, label: String) -> Result<(), ConsoleError> {
    let stream = hull_proto::client::open_hybrid_vsock_stream(
        socket,
        hull_proto::DEBUG_CONSOLE_PORT,
        CONNECT_TIMEOUT,
    )
    .await
    .map_err(|source| ConsoleError::Unreachable {
        what: label.clone(),
        source,
    })?;
    let stream = stream.into_std().map_err(|source| ConsoleError::Io {
        action: "taking the console socket",
        source,
    })?;
    tokio::task::spawn_blocking(move || splice::run_on_stdio(stream, &label))
        .await
        .map_err(|e| ConsoleError::Io {
            action: "running the console",
            source: std::io::Error::other(e.to_string()),
        })?
}
