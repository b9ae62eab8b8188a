//! Logs go through `tracing` (filter from `RUST_LOG`: a level, or `target=level` directives
//! separated by commas; default `info`) to stderr (the console when
//! PID 1) and into a bounded in-memory buffer that [`forward_logs`] sends to the host's readers
//! on the log port ([`hull_proto::AGENT_LOG_PORT`], at most [`MAX_LOG_READERS`] of them:
//! [`LogReaders`]). Writing a log line never waits for the host: when the
//! host does not read, the oldest lines are dropped and the next delivery says how many bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use std::task::Poll;

use tokio::io::{AsyncWriteExt as _, ReadBuf};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::conn_limits::Slots;
use crate::stdio::Stream;

/// Most bytes of log kept for the host (boot logs wait here until the host connects).
pub const LOG_BUFFER_BYTES: usize = 256 * 1024;

static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// Installs the global subscriber, with every line to stderr; a second call is a no-op.
pub fn init(ansi: bool) {
    init_with_stderr_level(ansi, tracing::Level::TRACE);
}

/// Installs the global subscriber; stderr gets only lines at `stderr_level` or more severe (the
/// host's readers get every line the filter lets through). A second call is a no-op.
pub fn init_with_stderr_level(ansi: bool, stderr_level: tracing::Level) {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let buffer = Arc::clone(BUFFER.get_or_init(|| Arc::new(LogBuffer::new(LOG_BUFFER_BYTES))));
    let to_buffer = move || BufferWriter(Arc::clone(&buffer));
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr.with_max_level(stderr_level).and(to_buffer))
        .with_ansi(ansi)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(format)
        .with(filter)
        .try_init();
}

/// The most verbose level PID 1 writes to the console for a kernel command line and whether
/// `RUST_LOG` is set: with `quiet` (how the shim boots guests unless its config says `debug`)
/// warnings and errors only, since every console byte is an exit to the VMM on the boot's
/// critical path and the host reads the whole log over vsock anyway; without `quiet`, or when
/// `RUST_LOG` asks for a level explicitly (on the kernel command line it reaches PID 1's
/// environment), everything the filter lets through.
pub fn console_level(cmdline: &str, rust_log_set: bool) -> tracing::Level {
    if !rust_log_set && crate::guest_init::cmdline_has_word(cmdline, "quiet") {
        tracing::Level::WARN
    } else {
        tracing::Level::TRACE
    }
}

/// The filter `RUST_LOG` asks for (`debug`, `hull_agent=debug,info`, ...); `info` when it is
/// unset or does not parse. A plain target filter, not `EnvFilter`: the agent lives in every
/// guest's memory, and EnvFilter's regex engine is about a megabyte of it.
pub fn log_filter(rust_log: Option<&str>) -> Targets {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => info(),
        Some(spec) => spec.parse().unwrap_or_else(|_| info()),
    }
}

/// The buffer the subscriber writes into, once [`init`] ran.
pub fn buffer() -> Option<Arc<LogBuffer>> {
    BUFFER.get().cloned()
}

/// Log bytes waiting for the host, oldest first, at most `capacity` of them.
pub struct LogBuffer {
    capacity: usize,
    state: Mutex<BufferState>,
    ready: Notify,
}

#[derive(Default)]
struct BufferState {
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl LogBuffer {
    /// An empty buffer holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            capacity,
            state: Mutex::new(BufferState::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BufferState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `data`; when full, drops whole lines from the front (or, for one line longer
    /// than the buffer, its beginning).
    pub fn push(&self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let mut state = self.lock();
        let over = (state.bytes.len() + data.len()).saturating_sub(self.capacity);
        if over > 0 {
            let mut cut = over;
            // Up to the end of the line the cut falls in, so delivery starts at a line.
            while cut < state.bytes.len() && state.bytes[cut - 1] != b'\n' {
                cut += 1;
            }
            let cut = cut.min(state.bytes.len());
            state.bytes.drain(..cut);
            state.dropped += cut as u64;
        }
        state.bytes.extend(data);
        drop(state);
        self.ready.notify_one();
    }

    /// Puts back bytes taken by [`LogBuffer::take`] that could not be delivered, ahead of the
    /// newer ones (as far as they fit).
    fn put_back(&self, data: &[u8]) {
        let mut state = self.lock();
        let room = self.capacity.saturating_sub(state.bytes.len());
        let keep = &data[data.len().saturating_sub(room)..];
        state.dropped += (data.len() - keep.len()) as u64;
        for byte in keep.iter().rev() {
            state.bytes.push_front(*byte);
        }
    }

    /// Waits until there is something to deliver and takes all of it, preceded by a note when
    /// bytes were dropped since the last delivery.
    pub async fn take(&self) -> Vec<u8> {
        loop {
            {
                let mut state = self.lock();
                if !state.bytes.is_empty() {
                    let mut out = Vec::with_capacity(state.bytes.len() + 64);
                    if state.dropped > 0 {
                        out.extend_from_slice(
                            format!(
                                "[hull-agent: {} bytes of log dropped: the host was not reading]\n",
                                state.dropped
                            )
                            .as_bytes(),
                        );
                        state.dropped = 0;
                    }
                    out.extend(state.bytes.drain(..));
                    return out;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// The `io::Write` side of the buffer for the subscriber.
struct BufferWriter(Arc<LogBuffer>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Most readers of the log at once (the shim, plus a few `hull agent logs`).
pub const MAX_LOG_READERS: usize = hull_proto::contract::MAX_LOG_READERS;
/// How long one reader may take to accept one chunk before it is dropped.
const READER_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The log port's readers, in every listen mode: at most [`MAX_LOG_READERS`] at once; one
/// beyond is refused (closed at once, a rate-limited warning), so the readers already there —
/// the shim's among them — keep their place. Each reader holds its slot until
/// [`forward_logs`] drops it.
pub struct LogReaders {
    slots: Slots,
    readers: mpsc::Sender<LogReader>,
}

/// One host connection reading the log, holding its [`LogReaders`] slot.
pub struct LogReader {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
}

impl LogReaders {
    /// Room for [`MAX_LOG_READERS`] readers; the receiver goes to [`forward_logs`].
    pub fn new() -> (Arc<LogReaders>, mpsc::Receiver<LogReader>) {
        Self::with_limit(MAX_LOG_READERS)
    }

    /// Room for `limit` readers.
    pub fn with_limit(limit: usize) -> (Arc<LogReaders>, mpsc::Receiver<LogReader>) {
        let (readers, rx) = mpsc::channel(limit.max(1));
        let slots = Slots::new("log readers", limit);
        (Arc::new(LogReaders { slots, readers }), rx)
    }

    /// A reader's slot, or None (logged) when all are taken: the hybrid listener asks before
    /// it answers the handshake.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.take()
    }

    /// Readers connected now.
    pub fn connected(&self) -> usize {
        self.slots.in_use()
    }

    /// Hands `stream`, counted by `slot`, to [`forward_logs`] (dropped if it is gone).
    pub async fn add(&self, slot: OwnedSemaphorePermit, stream: Stream) {
        let reader = LogReader {
            stream,
            _slot: slot,
        };
        let _ = self.readers.send(reader).await;
    }

    /// Adds `stream` as a reader if there is room; otherwise it is closed here.
    pub async fn offer(&self, stream: Stream) {
        if let Some(slot) = self.take_slot() {
            self.add(slot, stream).await;
        }
    }
}

/// Sends the buffer's contents, as they come, to every reader from `readers` (at most
/// [`MAX_LOG_READERS`], counted by [`LogReaders`]). A reader that fails, closes, sends anything
/// or does not take a chunk within 2 s is dropped (freeing its slot at once); with no reader
/// left, the bytes wait in the buffer. Returns when `readers` closes and no reader is left.
pub async fn forward_logs(buffer: Arc<LogBuffer>, mut connections: mpsc::Receiver<LogReader>) {
    let mut readers: Vec<LogReader> = Vec::new();
    let mut open = true;
    loop {
        if !open && readers.is_empty() {
            return;
        }
        tokio::select! {
            connection = connections.recv(), if open => match connection {
                Some(reader) => readers.push(reader),
                None => open = false,
            },
            gone = first_gone(&mut readers), if !readers.is_empty() => {
                readers.remove(gone);
            }
            chunk = buffer.take(), if !readers.is_empty() => {
                let mut kept = Vec::with_capacity(readers.len());
                for mut reader in readers.drain(..) {
                    let write = reader.stream.write_all(&chunk);
                    let sent = tokio::time::timeout(READER_WRITE_TIMEOUT, write).await;
                    if matches!(sent, Ok(Ok(()))) {
                        kept.push(reader);
                    }
                }
                if kept.is_empty() {
                    buffer.put_back(&chunk);
                }
                readers = kept;
            }
        }
    }
}

/// Resolves to the index of the first reader that closed, failed or sent bytes (a reader only
/// reads); pending while every reader is quiet.
async fn first_gone(readers: &mut [LogReader]) -> usize {
    std::future::poll_fn(|cx| {
        for (index, reader) in readers.iter_mut().enumerate() {
            let mut scratch = [0u8; 64];
            let mut buf = ReadBuf::new(&mut scratch);
            if reader.stream.as_mut().poll_read(cx, &mut buf).is_ready() {
                // EOF, an error, or bytes nobody asked for: this reader is done.
                return Poll::Ready(index);
            }
        }
        Poll::Pending
    })
    .await
}

/// Accepts host connections on the vsock log port forever, adding each to `readers` (or
/// closing it when they are full).
pub async fn accept_vsock_log_connections(readers: Arc<LogReaders>) {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, hull_proto::AGENT_LOG_PORT);
    let listener = match tokio_vsock::VsockListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(%err, port = hull_proto::AGENT_LOG_PORT, "binding the vsock log port");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => readers.offer(Box::pin(stream)).await,
            Err(err) => {
                tracing::warn!(%err, "accepting a log connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn a_quiet_guest_console_gets_warnings_and_errors_only() {
        use tracing::Level;
        let quiet = console_level("console=ttyS0 reboot=k quiet root=/dev/pmem0", false);
        assert_eq!(quiet, Level::WARN);
        assert!(Level::ERROR <= quiet && Level::INFO > quiet);
        assert_eq!(console_level("console=ttyS0 reboot=k", false), Level::TRACE);
        assert_eq!(console_level("notquiet quiet=1", false), Level::TRACE);
        // RUST_LOG is an explicit request: the console shows what it lets through.
        assert_eq!(console_level("console=ttyS0 quiet", true), Level::TRACE);
    }

    #[test]
    fn rust_log_sets_the_level_per_target_and_defaults_to_info() {
        use tracing::Level;
        use tracing_subscriber::filter::LevelFilter;
        let default = log_filter(None);
        assert!(default.would_enable("hull_agent", &Level::INFO));
        assert!(!default.would_enable("hull_agent", &Level::DEBUG));
        let debug = log_filter(Some("debug"));
        assert!(debug.would_enable("hull_agent::runtime", &Level::DEBUG));
        assert!(!debug.would_enable("hull_agent::runtime", &Level::TRACE));
        let mixed = log_filter(Some("warn,hull_agent::network=trace"));
        assert!(mixed.would_enable("hull_agent::network", &Level::TRACE));
        assert!(!mixed.would_enable("hull_agent::runtime", &Level::INFO));
        assert!(mixed.would_enable("ttrpc", &Level::WARN));
        assert_eq!(
            log_filter(Some("off")).default_level(),
            Some(LevelFilter::OFF)
        );
        // Not a filter: the default, not silence.
        let bad = log_filter(Some("hull_agent=loud"));
        assert!(bad.would_enable("hull_agent", &Level::INFO));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_buffer_drops_whole_old_lines_and_says_so() {
        let buffer = LogBuffer::new(32);
        buffer.push(b"first line\n");
        buffer.push(b"second line\n");
        buffer.push(b"third line here\n");
        let out = String::from_utf8(buffer.take().await).unwrap();
        assert_eq!(
            out,
            "[hull-agent: 11 bytes of log dropped: the host was not reading]\n\
             second line\nthird line here\n"
        );
        // A line longer than the buffer keeps its end.
        buffer.push(&[b'x'; 100]);
        assert_eq!(buffer.take().await.len(), 32);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn logs_reach_every_reader_and_wait_when_there_is_none() {
        let buffer = Arc::new(LogBuffer::new(1024));
        buffer.push(b"before anyone connected\n");
        let (readers, rx) = LogReaders::new();
        let forwarder = tokio::spawn(forward_logs(Arc::clone(&buffer), rx));

        let (agent_end, mut first) = tokio::net::UnixStream::pair().unwrap();
        readers.offer(Box::pin(agent_end)).await;
        let mut got = vec![0u8; 24];
        first.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"before anyone connected\n");

        // A second reader: both get what is logged from now on.
        let (agent_end, mut second) = tokio::net::UnixStream::pair().unwrap();
        readers.offer(Box::pin(agent_end)).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        buffer.push(b"for both\n");
        for reader in [&mut first, &mut second] {
            let mut got = vec![0u8; 9];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"for both\n");
        }

        // Both go away; a line logged meanwhile waits for the next reader.
        drop(first);
        drop(second);
        buffer.push(b"while nobody listened\n");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (agent_end, mut third) = tokio::net::UnixStream::pair().unwrap();
        readers.offer(Box::pin(agent_end)).await;
        drop(readers);
        let mut all = Vec::new();
        let reader = tokio::spawn(async move {
            let _ = third.read_to_end(&mut all).await;
            all
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        forwarder.abort();
        let all = String::from_utf8(reader.await.unwrap()).unwrap();
        assert!(all.ends_with("while nobody listened\n"), "{all:?}");
    }

    /// Whether the agent closed `stream` (EOF or reset) within `within`.
    async fn closed_within(stream: &mut tokio::net::UnixStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn readers_beyond_the_limit_are_refused_and_the_first_ones_keep_their_place() {
        let buffer = Arc::new(LogBuffer::new(1024));
        let (readers, rx) = LogReaders::new();
        tokio::spawn(forward_logs(Arc::clone(&buffer), rx));
        let mut held = Vec::new();
        for _ in 0..MAX_LOG_READERS {
            let (agent_end, host_end) = tokio::net::UnixStream::pair().unwrap();
            readers.offer(Box::pin(agent_end)).await;
            held.push(host_end);
        }
        // A flood of further readers: each is closed at once.
        for _ in 0..20 {
            let (agent_end, mut refused) = tokio::net::UnixStream::pair().unwrap();
            readers.offer(Box::pin(agent_end)).await;
            assert!(closed_within(&mut refused, Duration::from_secs(1)).await);
        }
        assert_eq!(readers.connected(), MAX_LOG_READERS);
        // The first reader (the shim's) still gets every line.
        buffer.push(b"still here\n");
        for reader in &mut held {
            let mut got = vec![0u8; 11];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"still here\n");
        }

        // One closes: its place is free at once, with nothing logged meanwhile.
        drop(held.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while readers.connected() == MAX_LOG_READERS {
            assert!(
                tokio::time::Instant::now() < deadline,
                "closed reader kept its slot"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // One that sends bytes (readers only read) is dropped as well.
        held[0].write_all(b"not a reader's business").await.unwrap();
        assert!(closed_within(&mut held[0], Duration::from_secs(2)).await);
        assert_eq!(readers.connected(), MAX_LOG_READERS - 2);
        let (agent_end, mut newcomer) = tokio::net::UnixStream::pair().unwrap();
        readers.offer(Box::pin(agent_end)).await;
        // It gets what is logged once the forwarder took it in (a line logged just before may
        // go to the others only).
        let mut got = vec![0u8; 8];
        for _ in 0..50 {
            buffer.push(b"welcome\n");
            let read = newcomer.read_exact(&mut got);
            if tokio::time::timeout(Duration::from_millis(100), read)
                .await
                .is_ok()
            {
                break;
            }
        }
        assert_eq!(got, b"welcome\n");
    }
}
