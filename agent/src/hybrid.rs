//! The hybrid-vsock listener (`--listen hybrid:///path`): the same protocol hull-vmm's hybrid
//! vsock socket speaks. Each connection sends `CONNECT <port>\n` (read byte by byte, at most
//! [`MAX_CONNECT_LINE`] bytes, within the handshake timeout); the agent answers `OK <port>\n`
//! and treats the rest of the stream as a vsock connection to that port: the API port goes to
//! the ttrpc server, the log port to the log forwarder, the port-forward port to
//! [`crate::port_forward`], the debug console port (once enabled) to [`crate::console`], a
//! stdio port to its process. Anything else is closed without a reply, as the VMM does when
//! nothing listens on a port.
//!
//! Every connection is bounded ([`crate::conn_limits`], numbers from [`hull_proto::contract`],
//! the same as the unix and vsock listeners apply): at most `MAX_HANDSHAKING_CONNECTIONS` wait
//! for their CONNECT line, at most `MAX_API_CONNECTIONS` API connections are open, and an API
//! connection that sends no request within the first-request timeout is closed (one that did
//! stays for as long as the host keeps it); at most `MAX_LOG_READERS` log readers and
//! `MAX_PORT_FORWARDS` port forwards. A connection beyond a cap is closed at once, before any
//! `OK` line, with a rate-limited warning.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::conn_limits::{admit_api_connection, ApiConnection, ConnectionLimits, Slots};
use crate::console::DebugConsole;
use crate::logging::LogReaders;
use crate::port_forward::PortForwards;
use crate::stdio::StreamHub;

pub use hull_proto::handshake::{parse_connect, MAX_CONNECT_LINE};

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

/// Where the listener sends what it accepted, and what it counts.
struct Routes {
    limits: ConnectionLimits,
    handshaking: Slots,
    api_slots: Slots,
    api: mpsc::Sender<ApiConnection<UnixStream>>,
    logs: Arc<LogReaders>,
    hub: Arc<StreamHub>,
    forwards: Arc<PortForwards>,
    console: Arc<DebugConsole>,
}

/// Accepts connections forever, routing them by port, within `limits`.
pub async fn accept_loop(
    listener: UnixListener,
    limits: ConnectionLimits,
    api: mpsc::Sender<ApiConnection<UnixStream>>,
    logs: Arc<LogReaders>,
    hub: Arc<StreamHub>,
    forwards: Arc<PortForwards>,
    console: Arc<DebugConsole>,
) {
    let routes = Arc::new(Routes {
        limits,
        handshaking: Slots::new("connections in the handshake", limits.max_handshaking),
        api_slots: Slots::new("API connections", limits.max_api),
        api,
        logs,
        hub,
        forwards,
        console,
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                warn!(%err, "accepting a hybrid vsock connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Beyond the cap the connection is dropped (closed) right here.
        let Some(slot) = routes.handshaking.take() else {
            continue;
        };
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            route(stream, &routes, slot).await;
        });
    }
}

async fn route(
    mut stream: UnixStream,
    routes: &Routes,
    handshake_slot: tokio::sync::OwnedSemaphorePermit,
) {
    let timeout = routes.limits.handshake_timeout;
    let Ok(Some(port)) = tokio::time::timeout(timeout, read_connect(&mut stream)).await else {
        debug!("hybrid vsock connection without a valid CONNECT line; closed");
        return;
    };
    let reply = hull_proto::handshake::ok_line(port);
    if port == hull_proto::AGENT_API_PORT {
        let Some(api_slot) = routes.api_slots.take() else {
            return;
        };
        drop(handshake_slot);
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        let timeout = routes.limits.first_request_timeout;
        admit_api_connection(stream, api_slot, timeout, &routes.api).await;
    } else if port == hull_proto::AGENT_LOG_PORT {
        let Some(reader_slot) = routes.logs.take_slot() else {
            return;
        };
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            routes.logs.add(reader_slot, Box::pin(stream)).await;
        }
    } else if port == hull_proto::PORT_FORWARD_PORT {
        let Some(forward_slot) = routes.forwards.take_slot() else {
            return;
        };
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            routes.forwards.run(forward_slot, Box::pin(stream));
        }
    } else if port == hull_proto::DEBUG_CONSOLE_PORT && routes.console.is_enabled() {
        if stream.write_all(reply.as_bytes()).await.is_ok() {
            routes.console.spawn(Box::pin(stream));
        }
    } else if routes.hub.is_pending(port) {
        if stream.write_all(reply.as_bytes()).await.is_ok()
            && !routes.hub.deliver(port, Box::pin(stream))
        {
            debug!(port, "stdio port was taken meanwhile");
        }
    } else {
        debug!(port, "CONNECT to a port nobody listens on; closed");
    }
}
