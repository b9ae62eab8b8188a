//! The guest's debug console (`hull console <sandbox>`): off unless CreateSandbox asks for it
//! (`debug_console`, from the host's `debug_console = true`). Once enabled, each connection to
//! [`hull_proto::DEBUG_CONSOLE_PORT`] (vsock in a guest, the hybrid listener's CONNECT in host
//! mode) gets a shell ([`SHELL`]) on its own pty with the bytes spliced both ways; at most
//! [`hull_proto::MAX_DEBUG_CONSOLES`] at once. A guest image without the shell (the default
//! image) answers with one line saying so and closes.
//!
//! Modules: [`pty`] (the pty pair, the master as a stream), [`shell`] (starting the shell on
//! the terminal), [`session`] (one connection), [`listener`] (the vsock port).

pub mod listener;
pub mod pty;
pub mod session;
pub mod shell;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::warn;

use crate::stdio::Stream;

/// The shell a console runs: the guest image's `/bin/sh` (only debug images have one).
pub const SHELL: &str = "/bin/sh";

/// The console's state: whether it is enabled, and the free session slots.
pub struct DebugConsole {
    enabled: AtomicBool,
    /// Guest mode: enabling binds the vsock port (host mode routes through the hybrid listener).
    vsock: bool,
    slots: Arc<Semaphore>,
    shell: PathBuf,
}

impl DebugConsole {
    /// A disabled console running [`SHELL`]; `vsock`: listen on the vsock port once enabled.
    pub fn new(vsock: bool) -> Arc<DebugConsole> {
        Self::with_shell(vsock, PathBuf::from(SHELL))
    }

    /// A disabled console running `shell`.
    pub fn with_shell(vsock: bool, shell: PathBuf) -> Arc<DebugConsole> {
        Arc::new(DebugConsole {
            enabled: AtomicBool::new(false),
            vsock,
            slots: Arc::new(Semaphore::new(hull_proto::MAX_DEBUG_CONSOLES)),
            shell,
        })
    }

    /// Opens the console for the rest of the agent's life (CreateSandbox with
    /// `debug_console`). Must run inside the tokio runtime.
    pub fn enable(self: &Arc<Self>) {
        if self.enabled.swap(true, Ordering::SeqCst) {
            return;
        }
        warn!(
            port = hull_proto::DEBUG_CONSOLE_PORT,
            shell = %self.shell.display(),
            "debug console enabled: each host connection to this port gets a root shell in the guest"
        );
        if self.vsock {
            tokio::spawn(listener::accept_vsock(Arc::clone(self)));
        }
    }

    /// Whether [`DebugConsole::enable`] was called.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Runs a console session on `stream` on its own task, or refuses it with a one-line
    /// error when [`hull_proto::MAX_DEBUG_CONSOLES`] are open already.
    pub fn spawn(&self, stream: Stream) {
        let slot = Arc::clone(&self.slots).try_acquire_owned();
        let shell = self.shell.clone();
        tokio::spawn(async move {
            match slot {
                Ok(slot) => {
                    session::run(stream, &shell).await;
                    drop(slot);
                }
                Err(_) => {
                    let line = format!(
                        "hull-agent: {} debug consoles are open already; close one first\r\n",
                        hull_proto::MAX_DEBUG_CONSOLES
                    );
                    session::refuse(stream, &line).await;
                }
            }
        });
    }
}
