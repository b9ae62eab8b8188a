//! Port forwarding into the guest (`kubectl port-forward`): the host's shim mirrors the guest's
//! listening TCP ports ([`list_tcp_listeners`], the ListTcpListeners RPC) in the pod's network
//! namespace on the host and sends each connection to [`hull_proto::PORT_FORWARD_PORT`]. Such
//! a connection starts with `TCP <port>\n`; the agent connects to 127.0.0.1:<port> (else
//! [::1]:<port>) in its own network namespace and copies bytes both ways until both directions
//! are closed, passing each EOF on as a write shutdown. Copies go through fixed-size buffers,
//! and at most [`MAX_FORWARDS`] forwards run at once.

mod listeners;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hull_proto::handshake::{parse_tcp, MAX_TCP_LINE};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::conn_limits::RateLimitedWarning;
use crate::stdio::Stream;

pub use listeners::{list_tcp_listeners, merge_ports, parse_proc_net_tcp, MAX_LISTENERS};

/// Most port forwards running at once; further connections are closed at once.
pub const MAX_FORWARDS: usize = hull_proto::contract::MAX_PORT_FORWARDS;
/// How long the host may take to send the `TCP <port>` line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to the guest port may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer size of each copy direction.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Accepts port-forward streams and runs them, bounded.
pub struct PortForwards {
    slots: Arc<Semaphore>,
    limit: usize,
    refusals: RateLimitedWarning,
}

impl PortForwards {
    /// A forwarder allowing [`MAX_FORWARDS`] concurrent forwards.
    pub fn new() -> Arc<Self> {
        Self::with_limit(MAX_FORWARDS)
    }

    /// A forwarder allowing `limit` concurrent forwards.
    pub fn with_limit(limit: usize) -> Arc<Self> {
        Arc::new(PortForwards {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            refusals: RateLimitedWarning::new(Duration::from_secs(1)),
        })
    }

    /// Runs one port-forward connection on its own task (or closes it if the limit is
    /// reached).
    pub fn spawn(&self, stream: Stream) {
        if let Some(slot) = self.take_slot() {
            self.run(slot, stream);
        }
    }

    /// A slot for one forward, or None (logged) when [`PortForwards::spawn`] would close the
    /// connection: the hybrid listener asks before it answers the handshake.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok();
        if slot.is_none() {
            self.refusals.note("port forwards", self.limit);
        }
        slot
    }

    /// Runs one port-forward connection on its own task, holding `slot` until it ends.
    pub fn run(&self, slot: OwnedSemaphorePermit, stream: Stream) {
        tokio::spawn(async move {
            forward(stream).await;
            drop(slot);
        });
    }
}

/// Reads the `TCP <port>` line, connects, splices. Every failure closes `stream`.
async fn forward(mut stream: Stream) {
    let port = match tokio::time::timeout(LINE_TIMEOUT, read_tcp_line(&mut stream)).await {
        Ok(Some(port)) => port,
        Ok(None) => {
            debug!("port forward without a valid TCP line; closed");
            return;
        }
        Err(_) => {
            debug!("port forward: no TCP line within {LINE_TIMEOUT:?}; closed");
            return;
        }
    };
    let Some(mut target) = connect_localhost(port).await else {
        debug!(port, "port forward: nothing accepts on localhost; closed");
        return;
    };
    debug!(port, "port forward connected");
    match splice(&mut stream, &mut target).await {
        Ok((to_guest, to_host)) => debug!(port, to_guest, to_host, "port forward finished"),
        Err(err) => debug!(port, %err, "port forward ended with an error"),
    }
}

/// Reads one `TCP <port>\n` line byte by byte (never past it).
pub async fn read_tcp_line<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Option<u16> {
    let mut line = Vec::with_capacity(MAX_TCP_LINE);
    let mut byte = [0u8; 1];
    while line.len() < MAX_TCP_LINE {
        if stream.read(&mut byte).await.ok()? != 1 {
            return None;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return parse_tcp(&line);
        }
    }
    None
}

/// Connects to 127.0.0.1:`port`, else [::1]:`port`.
async fn connect_localhost(port: u16) -> Option<TcpStream> {
    for address in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(err)) => debug!(%address, %err, "port forward connect"),
            Err(_) => debug!(%address, "port forward connect timed out"),
        }
    }
    None
}

/// Copies both ways until both directions reached EOF; each EOF becomes a write shutdown of
/// the other side. Returns the bytes copied (a → b, b → a).
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}

/// Guest mode: accepts vsock connections on [`hull_proto::PORT_FORWARD_PORT`] forever.
pub async fn accept_vsock(forwards: Arc<PortForwards>) {
    let port = hull_proto::PORT_FORWARD_PORT;
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(port, %err, "binding the vsock port-forward port");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => forwards.spawn(Box::pin(stream)),
            Err(err) => {
                warn!(%err, "accepting a port-forward connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
