//! Bounds on the host connections of the hybrid listener: how many may be in the handshake, how
//! many API connections may be open, how long each may stay silent ([`ConnectionLimits`]), the
//! slots that count them ([`Slots`]) and the API stream that holds its slot while ttrpc serves
//! it ([`ApiConnection`]).

use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hull_proto::contract;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Overrides [`contract::HANDSHAKE_TIMEOUT_SECS`], in milliseconds (tests).
pub const HANDSHAKE_TIMEOUT_ENV: &str = "HULL_AGENT_HANDSHAKE_TIMEOUT_MS";
/// Overrides [`contract::API_FIRST_REQUEST_TIMEOUT_SECS`], in milliseconds (tests).
pub const FIRST_REQUEST_TIMEOUT_ENV: &str = "HULL_AGENT_FIRST_REQUEST_TIMEOUT_MS";

/// The limits the hybrid listener applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for the CONNECT line.
    pub handshake_timeout: Duration,
    /// Time from the `OK` line to the first byte of the first request on the API port.
    pub first_request_timeout: Duration,
    /// Connections in the handshake at once.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRequest {
    /// Request bytes are waiting.
    Arrived,
    /// The host closed the connection.
    Closed,
    /// Nothing came within the timeout.
    TimedOut,
}

/// Waits up to `timeout` until `stream` has bytes to read (peeked, not consumed) or is closed.
pub async fn wait_for_first_request(stream: &UnixStream, timeout: Duration) -> FirstRequest {
    let peek = async {
        loop {
            if stream.readable().await.is_err() {
                return FirstRequest::Closed;
            }
            let mut byte = 0u8;
            let peeked = stream.try_io(Interest::READABLE, || {
                // SAFETY: one byte into a live local; the fd belongs to `stream`.
                let n = unsafe {
                    libc::recv(
                        stream.as_raw_fd(),
                        (&mut byte as *mut u8).cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n)
                }
            });
            match peeked {
                Ok(0) => return FirstRequest::Closed,
                Ok(_) => return FirstRequest::Arrived,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return FirstRequest::Closed,
            }
        }
    };
    tokio::time::timeout(timeout, peek)
        .await
        .unwrap_or(FirstRequest::TimedOut)
}

/// An API connection handed to ttrpc, holding its slot until ttrpc drops it.
pub struct ApiConnection {
    stream: UnixStream,
    _slot: OwnedSemaphorePermit,
}

impl ApiConnection {
    /// `stream`, counted by `slot`.
    pub fn new(stream: UnixStream, slot: OwnedSemaphorePermit) -> Self {
        ApiConnection {
            stream,
            _slot: slot,
        }
    }
}

impl AsyncRead for ApiConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConnection {
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
