//! Logs go through `tracing` (level from `RUST_LOG`, default `info`) to stderr (the console when
//! PID 1) and into a bounded in-memory buffer that [`forward_logs`] sends to the host's readers
//! on the log port ([`hull_proto::AGENT_LOG_PORT`]). Writing a log line never waits for the host: when the
//! host does not read, the oldest lines are dropped and the next delivery says how many bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, Notify};
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::EnvFilter;

use crate::stdio::Stream;

/// Most bytes of log kept for the host (boot logs wait here until the host connects).
pub const LOG_BUFFER_BYTES: usize = 256 * 1024;

static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// Installs the global subscriber; a second call is a no-op.
pub fn init(ansi: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let buffer = Arc::clone(BUFFER.get_or_init(|| Arc::new(LogBuffer::new(LOG_BUFFER_BYTES))));
    let to_buffer = move || BufferWriter(Arc::clone(&buffer));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr.and(to_buffer))
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
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

/// Sends the buffer's contents, as they come, to every host connection from `connections` (at
/// most [`MAX_LOG_READERS`]: a new one beyond that replaces the oldest). A reader that fails or
/// does not take a chunk within 2 s is dropped; with no reader left, the bytes wait in the
/// buffer. Returns when `connections` closes and no reader is left.
pub async fn forward_logs(buffer: Arc<LogBuffer>, mut connections: mpsc::Receiver<Stream>) {
    let mut readers: Vec<Stream> = Vec::new();
    let mut open = true;
    loop {
        if !open && readers.is_empty() {
            return;
        }
        tokio::select! {
            connection = connections.recv(), if open => match connection {
                Some(stream) => {
                    if readers.len() >= MAX_LOG_READERS {
                        readers.remove(0);
                    }
                    readers.push(stream);
                }
                None => open = false,
            },
            chunk = buffer.take(), if !readers.is_empty() => {
                let mut kept = Vec::with_capacity(readers.len());
                for mut reader in readers.drain(..) {
                    let sent =
                        tokio::time::timeout(READER_WRITE_TIMEOUT, reader.write_all(&chunk)).await;
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

/// Accepts host connections on the vsock log port forever, handing each to `connections`.
pub async fn accept_vsock_log_connections(connections: mpsc::Sender<Stream>) {
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
            Ok((stream, _)) => {
                if connections.send(Box::pin(stream)).await.is_err() {
                    return;
                }
            }
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
    use tokio::io::AsyncReadExt as _;

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
        let (tx, rx) = mpsc::channel(4);
        let forwarder = tokio::spawn(forward_logs(Arc::clone(&buffer), rx));

        let (agent_end, mut first) = tokio::net::UnixStream::pair().unwrap();
        tx.send(Box::pin(agent_end)).await.unwrap();
        let mut got = vec![0u8; 24];
        first.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"before anyone connected\n");

        // A second reader: both get what is logged from now on.
        let (agent_end, mut second) = tokio::net::UnixStream::pair().unwrap();
        tx.send(Box::pin(agent_end)).await.unwrap();
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
        tx.send(Box::pin(agent_end)).await.unwrap();
        drop(tx);
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
}
