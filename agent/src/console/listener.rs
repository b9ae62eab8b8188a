//! Guest mode: accepts vsock connections on [`hull_proto::DEBUG_CONSOLE_PORT`] (bound only
//! once the console is enabled) and hands each to the console.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::DebugConsole;

/// Accepts console connections forever.
pub async fn accept_vsock(console: Arc<DebugConsole>) {
    let port = hull_proto::DEBUG_CONSOLE_PORT;
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(port, %err, "binding the vsock debug console port");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => console.spawn(Box::pin(stream)),
            Err(err) => {
                warn!(%err, "accepting a debug console connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
