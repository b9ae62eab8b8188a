//! Process stdio over dedicated stream connections (see "Process stdio streams" in
//! agent.proto): port allocation ([`StreamHub`]), the process's pipes or pty
//! ([`ProcessStdio`]) and the forwarders that copy bytes until EOF, drain output after the
//! process exits and then shut the connection's write side down.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hull_proto::agent::{StdioPorts, StdioRequest};
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{oneshot, watch, Notify};
use tracing::{debug, warn};

/// A connected byte stream (a Unix socket in hybrid mode, a vsock socket in the guest).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// A boxed [`ByteStream`].
pub type Stream = Pin<Box<dyn ByteStream>>;

/// How long Start waits for the host to connect every named stream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the process exited, how long a pty may stay silent before its output is considered
/// drained (a pty's line discipline delivers to the master asynchronously).
const PTY_DRAIN_IDLE: Duration = Duration::from_millis(200);
/// Longest a pty is drained after its process exited.
const PTY_DRAIN_MAX: Duration = Duration::from_secs(2);
/// Most bytes forwarded after a process exited: more than a pipe can hold (the largest pipe an
/// unprivileged process can ask for is 1 MiB by default), so only descendants can write beyond it.
const MAX_DRAIN: usize = 2 * 1024 * 1024;
/// Buffer size of the forwarders.
const CHUNK: usize = 32 * 1024;

/// Hands out stdio ports and routes the one connection each port accepts.
pub struct StreamHub {
    next_port: AtomicU32,
    pending: Mutex<HashMap<u32, oneshot::Sender<Stream>>>,
    vsock: bool,
}

impl StreamHub {
    /// A hub whose connections arrive through [`StreamHub::deliver`] (hybrid mode), or, with
    /// `vsock`, through a vsock listener per port.
    pub fn new(vsock: bool) -> Arc<Self> {
        Arc::new(StreamHub {
            next_port: AtomicU32::new(hull_proto::STDIO_PORT_BASE),
            pending: Mutex::new(HashMap::new()),
            vsock,
        })
    }

    /// Takes a fresh port; the receiver gets the stream once the host connects.
    pub fn allocate(self: &Arc<Self>) -> (u32, oneshot::Receiver<Stream>) {
        let port = self.next_port.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(port, tx);
        if self.vsock {
            let hub = Arc::clone(self);
            tokio::spawn(async move { hub.accept_vsock_once(port).await });
        }
        (port, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Stream>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `port` waits for its connection.
    pub fn is_pending(&self, port: u32) -> bool {
        self.lock().contains_key(&port)
    }

    /// Hands `stream` to `port`'s owner; false (stream dropped) if the port is unknown or
    /// already connected.
    pub fn deliver(&self, port: u32, stream: Stream) -> bool {
        match self.lock().remove(&port) {
            Some(tx) => tx.send(stream).is_ok(),
            None => false,
        }
    }

    /// Forgets a port nobody will connect to any more.
    pub fn release(&self, port: u32) {
        self.lock().remove(&port);
    }

    async fn accept_vsock_once(&self, port: u32) {
        let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
        let listener = match tokio_vsock::VsockListener::bind(addr) {
            Ok(listener) => listener,
            Err(err) => {
                warn!(port, %err, "binding a vsock stdio port");
                self.release(port);
                return;
            }
        };
        // The listener lives until the connection came or the port was released.
        loop {
            if !self.is_pending(port) {
                return;
            }
            let accepted = tokio::time::timeout(Duration::from_secs(1), listener.accept()).await;
            match accepted {
                Ok(Ok((stream, _))) => {
                    self.deliver(port, Box::pin(stream));
                    return;
                }
                Ok(Err(err)) => {
                    warn!(port, %err, "accepting a vsock stdio connection");
                    return;
                }
                Err(_) => continue,
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

fn devnull() -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// A process's stdio before it runs: the agent's ends, the child's ends and the pending
/// stream connections.
pub struct ProcessStdio {
    /// The ports handed to the host.
    pub ports: StdioPorts,
    stdin_conn: Option<oneshot::Receiver<Stream>>,
    stdout_conn: Option<oneshot::Receiver<Stream>>,
    stderr_conn: Option<oneshot::Receiver<Stream>>,
    stdin_stream: Option<Stream>,
    stdout_stream: Option<Stream>,
    stderr_stream: Option<Stream>,
    stdin_writer: Option<OwnedFd>,
    stdout_reader: Option<OwnedFd>,
    stderr_reader: Option<OwnedFd>,
    pty_master: Option<Arc<OwnedFd>>,
    child: Option<[OwnedFd; 3]>,
    hub: Arc<StreamHub>,
}

impl ProcessStdio {
    /// Allocates ports and creates pipes for `request` (for a terminal, the process makes its
    /// pty itself, see [`ProcessStdio::set_pty_master`]).
    pub fn new(hub: &Arc<StreamHub>, request: &StdioRequest) -> io::Result<ProcessStdio> {
        let mut ports = StdioPorts::default();
        let take = |wanted: bool, port: &mut u32| {
            wanted.then(|| {
                let (p, rx) = hub.allocate();
                *port = p;
                rx
            })
        };
        let stdin_conn = take(request.stdin, &mut ports.stdin_port);
        let stdout_conn = take(request.stdout, &mut ports.stdout_port);
        let stderr_conn = take(request.stderr && !request.terminal, &mut ports.stderr_port);
        let mut stdio = ProcessStdio {
            ports,
            stdin_conn,
            stdout_conn,
            stderr_conn,
            stdin_stream: None,
            stdout_stream: None,
            stderr_stream: None,
            stdin_writer: None,
            stdout_reader: None,
            stderr_reader: None,
            pty_master: None,
            child: None,
            hub: Arc::clone(hub),
        };
        if request.terminal {
            // The process opens its pty in the container's own devpts and the agent receives
            // the master ([`ProcessStdio::set_pty_master`]); until then its fds 0-2 are
            // /dev/null.
            stdio.child = Some([devnull()?, devnull()?, devnull()?]);
        } else {
            let stdin = if request.stdin {
                let (r, w) = pipe()?;
                stdio.stdin_writer = Some(w);
                r
            } else {
                devnull()?
            };
            let output = |wanted: bool, reader: &mut Option<OwnedFd>| -> io::Result<OwnedFd> {
                if wanted {
                    let (r, w) = pipe()?;
                    *reader = Some(r);
                    Ok(w)
                } else {
                    devnull()
                }
            };
            let stdout = output(request.stdout, &mut stdio.stdout_reader)?;
            let stderr = output(request.stderr, &mut stdio.stderr_reader)?;
            stdio.child = Some([stdin, stdout, stderr]);
        }
        Ok(stdio)
    }

    /// The child's stdin, stdout and stderr (once).
    pub fn take_child_fds(&mut self) -> Option<[OwnedFd; 3]> {
        self.child.take()
    }

    /// The master of the pty the process opened (terminal mode).
    pub fn set_pty_master(&mut self, master: OwnedFd) -> Arc<OwnedFd> {
        let master = Arc::new(master);
        self.pty_master = Some(Arc::clone(&master));
        master
    }

    /// Waits until every requested stream is connected (at most [`CONNECT_TIMEOUT`]).
    pub async fn wait_connected(&mut self) -> Result<ConnectedStreams, String> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        // What connects is kept even when another stream is late: Start may be called again.
        wait_for_stream(
            &mut self.stdin_conn,
            &mut self.stdin_stream,
            deadline,
            "stdin",
            self.ports.stdin_port,
        )
        .await?;
        wait_for_stream(
            &mut self.stdout_conn,
            &mut self.stdout_stream,
            deadline,
            "stdout",
            self.ports.stdout_port,
        )
        .await?;
        wait_for_stream(
            &mut self.stderr_conn,
            &mut self.stderr_stream,
            deadline,
            "stderr",
            self.ports.stderr_port,
        )
        .await?;
        Ok(ConnectedStreams {
            stdin: self.stdin_stream.take(),
            stdout: self.stdout_stream.take(),
            stderr: self.stderr_stream.take(),
        })
    }

    /// Starts the forwarders. `exited` turns true when the process has exited.
    pub fn start_forwarding(
        &mut self,
        streams: ConnectedStreams,
        exited: watch::Receiver<bool>,
    ) -> io::Result<Forwarding> {
        let stdin_close = Arc::new(Notify::new());
        let mut outputs = Vec::new();
        let (stdin_src, stdout_src, stderr_src) = match &self.pty_master {
            Some(master) => (
                Some(master.try_clone()?),
                Some((master.try_clone()?, true)),
                None,
            ),
            None => (
                self.stdin_writer.take(),
                self.stdout_reader.take().map(|fd| (fd, false)),
                self.stderr_reader.take().map(|fd| (fd, false)),
            ),
        };
        if let (Some(conn), Some(fd)) = (streams.stdin, stdin_src) {
            set_nonblocking(&fd)?;
            let fd = register(fd)?;
            tokio::spawn(forward_stdin(conn, fd, Arc::clone(&stdin_close)));
        }
        for (conn, src) in [(streams.stdout, stdout_src), (streams.stderr, stderr_src)] {
            // Without a connection (not requested) the pipe does not exist either.
            if let (Some(conn), Some((fd, is_pty))) = (conn, src) {
                set_nonblocking(&fd)?;
                let fd = register(fd)?;
                let (done_tx, done_rx) = watch::channel(false);
                tokio::spawn(forward_output(fd, conn, exited.clone(), is_pty, done_tx));
                outputs.push(done_rx);
            }
        }
        Ok(Forwarding {
            stdin_close,
            outputs,
        })
    }

    /// Gives back the ports of streams never connected.
    pub fn release_ports(&self) {
        for port in [
            self.ports.stdin_port,
            self.ports.stdout_port,
            self.ports.stderr_port,
        ] {
            if port != 0 {
                self.hub.release(port);
            }
        }
    }
}

impl Drop for ProcessStdio {
    fn drop(&mut self) {
        self.release_ports();
    }
}

/// Waits until `deadline` for the connection `pending` announces, moving it to `connected`.
async fn wait_for_stream(
    pending: &mut Option<oneshot::Receiver<Stream>>,
    connected: &mut Option<Stream>,
    deadline: tokio::time::Instant,
    name: &str,
    port: u32,
) -> Result<(), String> {
    let Some(rx) = pending.as_mut() else {
        return Ok(());
    };
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(stream)) => {
            *connected = Some(stream);
            *pending = None;
            Ok(())
        }
        // Kept pending: a retried Start fails the same way instead of running without it.
        Ok(Err(_)) => Err(format!(
            "the {name} stream (port {port}) can no longer be connected"
        )),
        Err(_) => Err(format!(
            "the {name} stream (port {port}) was not connected within {CONNECT_TIMEOUT:?}"
        )),
    }
}

/// The host's connections for one process.
pub struct ConnectedStreams {
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
}

/// Handles on the running forwarders of one process.
pub struct Forwarding {
    stdin_close: Arc<Notify>,
    outputs: Vec<watch::Receiver<bool>>,
}

impl Forwarding {
    /// Closes the process's stdin after what is already readable was forwarded.
    pub fn close_stdin(&self) {
        self.stdin_close.notify_one();
    }

    /// Resolves once every output stream was drained and shut down.
    pub async fn outputs_done(&self) {
        for done in &self.outputs {
            let mut done = done.clone();
            let _ = done.wait_for(|d| *d).await;
        }
    }
}

/// Sets a pty's window size.
pub fn resize_pty(master: &OwnedFd, rows: u16, columns: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    Errno::result(rc).map(drop).map_err(io::Error::from)
}

/// Registers an owned fd with the reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
    unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| read_now(inner.get_ref(), buf)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

fn read_now(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd.as_fd(), buf).map_err(io::Error::from)
}

async fn write_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(err)) => return Err(err),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// End of output: EOF, or EIO on a pty whose slave side is closed.
fn is_end(result: &io::Result<usize>) -> bool {
    match result {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => {
            err.raw_os_error() == Some(libc::EIO) || err.kind() != io::ErrorKind::WouldBlock
        }
    }
}

async fn forward_output(
    src: AsyncFd<OwnedFd>,
    mut dst: Stream,
    mut exited: watch::Receiver<bool>,
    is_pty: bool,
    done: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut host_open = true;
    loop {
        // Checked before every read: a descendant writing without pause keeps the pipe readable,
        // and must not keep the exit from being seen.
        if *exited.borrow() {
            host_open = drain_after_exit(&src, &mut dst, host_open, is_pty, &mut buf).await;
            break;
        }
        tokio::select! {
            biased;
            result = read_fd(&src, &mut buf) => {
                if is_end(&result) {
                    break;
                }
                let n = result.unwrap_or(0);
                host_open = send_chunk(&mut dst, host_open, &buf[..n]).await;
            }
            changed = exited.changed() => {
                if changed.is_err() {
                    // The process record is gone without an exit: nothing will drain it.
                    host_open = drain_after_exit(&src, &mut dst, host_open, is_pty, &mut buf).await;
                    break;
                }
            }
        }
    }
    if host_open {
        let _ = dst.flush().await;
        if let Err(err) = dst.shutdown().await {
            debug!(%err, "shutting down an output stream");
        }
    }
    let _ = done.send(true);
}

/// After the process exited, forwards what it left in the pipe or pty; returns whether the host
/// is still reading. Everything the process wrote is already in a pipe's buffer, so the drain
/// stops at the first empty read: descendants that inherited the pipe (`sh -c 'cmd &'`) may keep
/// it open for as long as they live, and neither WaitProcess nor the agent waits for them. A
/// pty's line discipline delivers asynchronously, so there the drain stops after
/// [`PTY_DRAIN_IDLE`] of silence. Either way at most [`MAX_DRAIN`] bytes or [`PTY_DRAIN_MAX`]
/// are spent, so a descendant writing without pause cannot hold the exit back.
async fn drain_after_exit(
    src: &AsyncFd<OwnedFd>,
    dst: &mut Stream,
    mut host_open: bool,
    is_pty: bool,
    buf: &mut [u8],
) -> bool {
    let deadline = tokio::time::Instant::now() + PTY_DRAIN_MAX;
    let mut drained = 0usize;
    while drained < MAX_DRAIN {
        let result = if is_pty {
            let idle_end = (tokio::time::Instant::now() + PTY_DRAIN_IDLE).min(deadline);
            match tokio::time::timeout_at(idle_end, read_fd(src, buf)).await {
                Ok(result) => result,
                Err(_) => break,
            }
        } else {
            read_now(src.get_ref(), buf)
        };
        let n = match result {
            Ok(n) if n > 0 => n,
            // EOF, EAGAIN (drained: only descendants hold the pipe), EIO (pty closed), errors.
            _ => break,
        };
        host_open = send_chunk(dst, host_open, &buf[..n]).await;
        drained += n;
    }
    host_open
}

/// Writes `data` to the host if it is still reading; returns whether it still is. When the
/// host went away the bytes are dropped and reading goes on (stdio step 7).
async fn send_chunk(dst: &mut Stream, host_open: bool, data: &[u8]) -> bool {
    host_open && dst.write_all(data).await.is_ok()
}

async fn forward_stdin(mut src: Stream, dst: AsyncFd<OwnedFd>, close: Arc<Notify>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            // Bytes already received go first: CloseStdin closes after them.
            biased;
            result = src.read(&mut buf) => match result {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Err(err) = write_fd(&dst, &buf[..n]).await {
                        debug!(%err, "writing to the process's stdin");
                        break;
                    }
                }
            },
            _ = close.notified() => break,
        }
    }
    // Dropping `dst` closes the process's stdin (for a pty: our duplicate of the master).
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Runs `forward_output` for a pipe whose process exits after `exit_after`, on a runtime of
    /// its own (a forwarder that never yields would otherwise hang the test instead of failing
    /// it). Returns what the host received and whether the forwarder finished while `descendant`
    /// (another holder of the pipe's write end, run on a thread) was still alive.
    fn forward_after_exit(
        reader: OwnedFd,
        exit_after: Duration,
        descendant: impl FnOnce() + Send + 'static,
    ) -> (Vec<u8>, bool) {
        let released = Arc::new(AtomicBool::new(false));
        let released_by_descendant = Arc::clone(&released);
        std::thread::spawn(move || {
            descendant();
            released_by_descendant.store(true, Ordering::SeqCst);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let output = rt.block_on(async {
            let (agent_end, mut host_end) = tokio::net::UnixStream::pair().unwrap();
            let host = tokio::spawn(async move {
                let mut got = Vec::new();
                host_end.read_to_end(&mut got).await.unwrap();
                got
            });
            set_nonblocking(&reader).unwrap();
            let (exited_tx, exited_rx) = watch::channel(false);
            tokio::spawn(async move {
                tokio::time::sleep(exit_after).await;
                let _ = exited_tx.send(true);
                // Kept alive: a dropped sender is not an exit.
                std::future::pending::<()>().await;
            });
            let (done_tx, mut done_rx) = watch::channel(false);
            forward_output(
                register(reader).unwrap(),
                Box::pin(agent_end),
                exited_rx,
                false,
                done_tx,
            )
            .await;
            assert!(*done_rx.borrow_and_update());
            host.await.unwrap()
        });
        (output, !released.load(Ordering::SeqCst))
    }

    #[test]
    fn output_ends_at_exit_while_a_descendant_holds_the_pipe() {
        let (reader, writer) = pipe().unwrap();
        nix::unistd::write(&writer, b"written before exit\n").unwrap();
        let (output, in_time) = forward_after_exit(reader, Duration::ZERO, move || {
            // `sh -c 'cmd &'`: the background child keeps stdout open and stays silent.
            std::thread::sleep(Duration::from_secs(20));
            drop(writer);
        });
        assert_eq!(output, b"written before exit\n");
        assert!(
            in_time,
            "the forwarder waited for the descendant to close the pipe"
        );
    }

    #[test]
    fn a_descendant_writing_without_pause_cannot_hold_the_exit_back() {
        let (reader, writer) = pipe().unwrap();
        // The process exits while the descendant's output is streaming.
        let (output, in_time) = forward_after_exit(reader, Duration::from_millis(200), move || {
            let chunk = [b'x'; 4096];
            let until = std::time::Instant::now() + Duration::from_secs(20);
            // Writes until the forwarder drops the read end (EPIPE), then lingers until `until`.
            while std::time::Instant::now() < until && nix::unistd::write(&writer, &chunk).is_ok() {
            }
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        });
        assert!(in_time, "the forwarder kept draining a descendant's output");
        assert!(!output.is_empty(), "nothing was forwarded before the exit");
    }
}
