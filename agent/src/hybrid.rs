//! The hybrid-vsock listener (`--listen hybrid:///path`): the same protocol hull-vmm's hybrid
//! vsock socket speaks. Each connection sends `CONNECT <port>\n` (read byte by byte, at most
//! [`MAX_CONNECT_LINE`] bytes, within [`HANDSHAKE_TIMEOUT`]); the agent answers `OK <port>\n`
//! and treats the rest of the stream as a vsock connection to that port: the API port goes to
//! the ttrpc server, the log port to the log forwarder, the port-forward port to
//! [`crate::port_forward`], a stdio port to its process. Anything else is closed without a reply,
//! as the VMM does when nothing listens on a port.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::port_forward::PortForwards;
use crate::stdio::{Stream, StreamHub};

pub use hull_proto::handshake::{parse_connect, MAX_CONNECT_LINE};
/// How long a client may take to send its CONNECT line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

async fn read_connect(stream: &mut UnixStream) -> Option<u32> {
    let mut line = Vec::with_capacity(MAX_CONNECT_LINE);
    let mut byte = [0u8; 1];
    while line.len() < MAX_CONNECT_LINE {
        if stream.read(&mut byte).await.ok()? != 1 {
            return None;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return parse_connect(&line);
        }
    }
    None
}

/// Accepts connections forever, routing them by port.
pub async fn accept_loop(
    listener: UnixListener,
    api: mpsc::Sender<UnixStream>,
    logs: mpsc::Sender<Stream>,
    hub: Arc<StreamHub>,
    forwards: Arc<PortForwards>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                warn!(%err, "accepting a hybrid vsock connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let api = api.clone();
        let logs = logs.clone();
        let hub = Arc::clone(&hub);
        let forwards = Arc::clone(&forwards);
        tokio::spawn(async move { route(stream, api, logs, hub, forwards).await });
    }
}

async fn route(
    mut stream: UnixStream,
    api: mpsc::Sender<UnixStream>,
    logs: mpsc::Sender<Stream>,
    hub: Arc<StreamHub>,
    forwards: Arc<PortForwards>,
) {
    let Ok(Some(port)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_connect(&mut stream)).await
    else {
        debug!("hybrid vsock connection without a valid CONNECT line; closed");
        return;
    };
    let reply = hull_proto::handshake::ok_line(port);
    if port == hull_proto::AGENT_API_PORT {
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            let _ = api.send(stream).await;
        }
    } else if port == hull_proto::AGENT_LOG_PORT {
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            let _ = logs.send(Box::pin(stream)).await;
        }
    } else if port == hull_proto::PORT_FORWARD_PORT {
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            forwards.spawn(Box::pin(stream));
        }
    } else if hub.is_pending(port) {
        if stream.write_all(reply.as_bytes()).await.is_ok() && !hub.deliver(port, Box::pin(stream))
        {
            debug!(port, "stdio port was taken meanwhile");
        }
    } else {
        debug!(port, "CONNECT to a port nobody listens on; closed");
    }
}

/// A ttrpc listener fed with the API connections.
pub fn api_listener(rx: mpsc::Receiver<UnixStream>) -> ttrpc::asynchronous::transport::Listener {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, std::io::Error>(s), rx))
    });
    ttrpc::asynchronous::transport::Listener::new(stream)
}
