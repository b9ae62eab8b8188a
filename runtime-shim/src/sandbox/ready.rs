//! The agent's ready signal ([`hull_proto::AGENT_READY_PORT`]): a listener on the socket a guest
//! connection to that port reaches, bound before the VMM (or the host agent) starts, so the shim
//! calls Version once the agent serves instead of polling the API port through the whole boot.
//! Each refused poll costs the guest a connection request and its reset, the VMM and the shim a
//! wake-up. Removed when the shim stops waiting: no guest connection reaches the shim after that.
//! A hint only: whoever connects, the shim still checks the Version reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;

use super::SandboxError;

/// The ready signal's listener. Dropping it removes its socket file.
#[derive(Debug)]
pub struct ReadySignal {
    listener: UnixListener,
    path: PathBuf,
    seen: bool,
}

impl ReadySignal {
    /// Listens where a guest connection to the ready port goes when the VMM's (or host
    /// agent's) hybrid-vsock socket is `vsock_socket` (a host path). Needs a tokio runtime.
    pub fn bind(vsock_socket: &Path) -> Result<Self, SandboxError> {
        let path = hull_proto::handshake::guest_connection_path(
            vsock_socket,
            hull_proto::AGENT_READY_PORT,
        );
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| SandboxError::Io {
            action: "listening for the agent's ready signal on",
            path: path.clone(),
            source,
        })?;
        Ok(ReadySignal {
            listener,
            path,
            seen: false,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a ready signal came.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Waits until a ready signal comes or `at_most` passed; returns [`Self::seen`].
    pub async fn wait(&mut self, at_most: Duration) -> bool {
        if self.seen {
            return true;
        }
        match tokio::time::timeout(at_most, self.listener.accept()).await {
            Ok(Ok(_connection)) => self.seen = true,
            Ok(Err(err)) => {
                // Never a busy loop of polls: wait the whole time as if nothing came.
                tracing::debug!(%err, path = %self.path.display(), "accepting the ready signal");
                tokio::time::sleep(at_most).await;
            }
            Err(_) => {}
        }
        self.seen
    }
}

impl Drop for ReadySignal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
