//! Bounds on the host's connections to the agent, the same in every listen mode (hybrid, unix,
//! vsock): how many may be in the hybrid handshake, how many API connections may be open, how
//! long each may stay silent ([`ConnectionLimits`]), the slots that count them ([`Slots`]), the
//! wait for an API connection's first request ([`read_first_request`]) and the API stream that
//! holds its slot while ttrpc serves it ([`ApiConnection`]). [`accept_api_connections`] is the
//! accept loop of the listen modes without a handshake (`unix://`, and the guest's vsock API
//! port); the hybrid listener ([`crate::hybrid`]) applies the same pieces after its handshake.

#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hull_proto::contract;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Overrides [`contract::HANDSHAKE_TIMEOUT_SECS`], in milliseconds (tests).
pub const HANDSHAKE_TIMEOUT_ENV: &str = "HULL_AGENT_HANDSHAKE_TIMEOUT_MS";
/// Overrides [`contract::API_FIRST_REQUEST_TIMEOUT_SECS`], in milliseconds (tests).
pub const FIRST_REQUEST_TIMEOUT_ENV: &str = "HULL_AGENT_FIRST_REQUEST_TIMEOUT_MS";

/// The limits every listener of the agent applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for the CONNECT line (hybrid listener).
    pub handshake_timeout: Duration,
    /// Time from the `OK` line (hybrid) or the accept (unix, vsock) to the first byte of the
    /// first request on the API port.
    pub first_request_timeout: Duration,
    /// Connections in the hybrid handshake at once.
    pub max_handshaking: usize,
    /// API connections open at once.
    pub max_api: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(contract::HANDSHAKE_TIMEOUT_SECS),
            first_request_timeout: Duration::from_secs(contract::API_FIRST_REQUEST_TIMEOUT_SECS),
            max_handshaking: contract::MAX_HANDSHAKING_CONNECTIONS,
            max_api: contract::MAX_API_CONNECTIONS,
        }
    }
}

impl ConnectionLimits {
    /// The contract's limits, with the timeouts taken from [`HANDSHAKE_TIMEOUT_ENV`] and
    /// [`FIRST_REQUEST_TIMEOUT_ENV`] when set (a bad value is named in a warning and ignored).
    pub fn from_env() -> Self {
        Self::with_overrides(|name| std::env::var(name).ok())
    }

    /// The contract's limits with the timeouts `lookup` gives (by variable name).
    pub fn with_overrides(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut limits = ConnectionLimits::default();
        for (name, field) in [
            (HANDSHAKE_TIMEOUT_ENV, &mut limits.handshake_timeout),
            (FIRST_REQUEST_TIMEOUT_ENV, &mut limits.first_request_timeout),
        ] {
            let Some(value) = lookup(name) else { continue };
            match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => *field = Duration::from_millis(ms),
                _ => warn!(
                    variable = name,
                    value, "not a positive number of milliseconds; the default stays"
                ),
            }
        }
        limits
    }
}

/// A counted kind of connection: at most `limit` at once; a refusal is logged at most once a
/// second (with how many were refused in between).
pub struct Slots {
    what: &'static str,
    limit: usize,
    slots: Arc<Semaphore>,
    refusals: RateLimitedWarning,
}

impl Slots {
    /// `limit` slots for connections described as `what` in the log.
    pub fn new(what: &'static str, limit: usize) -> Slots {
        Slots {
            what,
            limit,
            slots: Arc::new(Semaphore::new(limit)),
            refusals: RateLimitedWarning::new(Duration::from_secs(1)),
        }
    }

    /// A slot, or None (logged) when all are taken.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok();
        if slot.is_none() {
            self.refusals.note(self.what, self.limit);
        }
        slot
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

/// Logs "limit reached" at most once per `interval`, counting the ones it kept quiet.
pub struct RateLimitedWarning {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    quiet: AtomicU64,
}

impl RateLimitedWarning {
    /// A warning logged at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimitedWarning {
            interval,
            last: Mutex::new(None),
            quiet: AtomicU64::new(0),
        }
    }

    /// Records one refusal; returns whether it was logged.
    pub fn note(&self, what: &str, limit: usize) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.interval) {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *last = Some(Instant::now());
        let also_refused = self.quiet.swap(0, Ordering::Relaxed);
        warn!(
            limit,
            also_refused, "too many {what} at once; connection closed"
        );
        true
    }
}

/// What the first wait on a fresh API connection saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstRequest {
    /// The first bytes of the request (at least one), to be replayed to ttrpc.
    Arrived(Vec<u8>),
    /// The host closed the connection (or it failed).
    Closed,
    /// Nothing came within the timeout.
    TimedOut,
}

/// Most bytes [`read_first_request`] takes (ttrpc reads the rest itself).
const FIRST_READ_BYTES: usize = 512;

/// Waits up to `timeout` for the first bytes of a request on `stream` (or its end). Works on
/// any stream (a vsock stream cannot be peeked through tokio): the bytes read are handed to
/// [`ApiConnection::new`], which gives them to ttrpc before the rest of the stream.
pub async fn read_first_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> FirstRequest {
    let mut first = vec![0u8; FIRST_READ_BYTES];
    match tokio::time::timeout(timeout, stream.read(&mut first)).await {
        Err(_) => FirstRequest::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => FirstRequest::Closed,
        Ok(Ok(n)) => {
            first.truncate(n);
            FirstRequest::Arrived(first)
        }
    }
}

/// Waits for the first request on `stream` (within `timeout`) and hands it to ttrpc through
/// `api`, counted by `slot`; a connection that stays silent or closes is dropped.
pub async fn admit_api_connection<S>(
    mut stream: S,
    slot: OwnedSemaphorePermit,
    timeout: Duration,
    api: &mpsc::Sender<ApiConnection<S>>,
) where
    S: AsyncRead + Unpin,
{
    match read_first_request(&mut stream, timeout).await {
        FirstRequest::Arrived(first) => {
            let _ = api.send(ApiConnection::new(stream, first, slot)).await;
        }
        FirstRequest::Closed => {}
        FirstRequest::TimedOut => {
            debug!(?timeout, "API connection sent no request in time; closed")
        }
    }
}

/// The accept loop of an API listener without a handshake (`unix://`, guest vsock): at most
/// `limits.max_api` connections are open (one beyond is closed at once, with a rate-limited
/// warning), and one that sends no request within `limits.first_request_timeout` of its accept
/// is closed. Admitted connections go to `api` (see [`ttrpc_listener`]). Returns when
/// `incoming` ends or `api` is closed.
pub async fn accept_api_connections<S, I>(
    mut incoming: I,
    limits: ConnectionLimits,
    api: mpsc::Sender<ApiConnection<S>>,
) where
    S: AsyncRead + Send + Unpin + 'static,
    I: futures::Stream<Item = std::io::Result<S>> + Unpin,
{
    let slots = Slots::new("API connections", limits.max_api);
    while let Some(accepted) = incoming.next().await {
        if api.is_closed() {
            return;
        }
        let stream = match accepted {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%err, "accepting an API connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Beyond the cap the connection is dropped (closed) right here.
        let Some(slot) = slots.take() else {
            continue;
        };
        let api = api.clone();
        let timeout = limits.first_request_timeout;
        tokio::spawn(async move {
            admit_api_connection(stream, slot, timeout, &api).await;
        });
    }
}

/// A ttrpc listener fed with the admitted API connections.
pub fn ttrpc_listener<S>(
    rx: mpsc::Receiver<ApiConnection<S>>,
) -> ttrpc::asynchronous::transport::Listener
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, std::io::Error>(s), rx))
    });
    ttrpc::asynchronous::transport::Listener::new(stream)
}

/// An API connection handed to ttrpc: the bytes [`read_first_request`] took, then the rest of
/// the stream; it holds its slot until ttrpc drops it.
pub struct ApiConnection<S> {
    first: Vec<u8>,
    replayed: usize,
    stream: S,
    _slot: OwnedSemaphorePermit,
}

impl<S> ApiConnection<S> {
    /// `stream`, whose first bytes `first` were already read, counted by `slot`.
    pub fn new(stream: S, first: Vec<u8>, slot: OwnedSemaphorePermit) -> Self {
        ApiConnection {
            first,
            replayed: 0,
            stream,
            _slot: slot,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ApiConnection<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.first.len() {
            let rest = &this.first[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.first.len() {
                this.first = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ApiConnection<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
