//! Wiring containerd's stdio FIFOs to the agent's per-process stdio streams (see the stdio design
//! in agent.proto): stdin FIFO -> stream, stream -> stdout/stderr FIFO.

use std::path::{Path, PathBuf};

use hull_proto::agent::{StdioPorts, StdioRequest};
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a CloseIO waits for what is still in the stdin FIFO to reach the process.
const STDIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The FIFO paths containerd gave for one process (empty = not wanted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Stdin FIFO.
    pub stdin: String,
    /// Stdout FIFO.
    pub stdout: String,
    /// Stderr FIFO.
    pub stderr: String,
    /// The process gets a terminal (stdout carries stdout and stderr).
    pub terminal: bool,
}

impl StdioPaths {
    /// Which streams to ask the agent for.
    pub fn request(&self) -> StdioRequest {
        StdioRequest {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty() && !self.terminal,
            terminal: self.terminal,
            ..Default::default()
        }
    }
}

/// The copying tasks of one process.
pub struct ProcessIo {
    stdin_close: Option<oneshot::Sender<()>>,
    outputs: Vec<JoinHandle<()>>,
}

impl ProcessIo {
    /// Closes the process's stdin (CloseIO): the stdin copier stops and shuts the stream down.
    pub fn close_stdin(&mut self) {
        if let Some(close) = self.stdin_close.take() {
            let _ = close.send(());
        }
    }

    /// Takes the output copiers, to wait until everything was written to the FIFOs.
    pub fn take_outputs(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.outputs)
    }
}

/// Starts copying between the FIFOs and the connected streams. `streams` are the stdin,
/// stdout and stderr connections, each present when the agent named a port for it.
pub fn wire(
    paths: &StdioPaths,
    stdin: Option<UnixStream>,
    stdout: Option<UnixStream>,
    stderr: Option<UnixStream>,
) -> ProcessIo {
    let mut outputs = Vec::new();
    for (stream, fifo) in [(stdout, &paths.stdout), (stderr, &paths.stderr)] {
        match stream {
            Some(stream) => outputs.push(tokio::spawn(copy_output(stream, PathBuf::from(fifo)))),
            None if !fifo.is_empty() => {
                // Terminal mode: stderr carries nothing, but it must be opened and closed or a
                // reader (CRI ExecSync) waits forever.
                let fifo = PathBuf::from(fifo);
                outputs.push(tokio::spawn(async move {
                    if let Err(e) = open_output_fifo(&fifo) {
                        tracing::warn!(%e, fifo = %fifo.display(), "opening output FIFO");
                    }
                }));
            }
            None => {}
        }
    }
    let stdin_close = stdin.map(|stream| {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(copy_input(PathBuf::from(&paths.stdin), stream, rx));
        tx
    });
    ProcessIo {
        stdin_close,
        outputs,
    }
}

/// Opens an output FIFO for writing without blocking on the reader: read-write, so the open
/// succeeds even before containerd's reader appears and a write never fails with EPIPE.
fn open_output_fifo(path: &Path) -> std::io::Result<pipe::Sender> {
    pipe::OpenOptions::new().read_write(true).open_sender(path)
}

async fn copy_output(mut stream: UnixStream, fifo: PathBuf) {
    let mut sender = match open_output_fifo(&fifo) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, fifo = %fifo.display(), "opening output FIFO; output dropped");
            // Keep reading so the agent never blocks on this stream.
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            return;
        }
    };
    if let Err(e) = tokio::io::copy(&mut stream, &mut sender).await {
        tracing::warn!(%e, fifo = %fifo.display(), "copying process output");
    }
    let _ = sender.flush().await;
}

/// Opens the stdin FIFO for reading (blocks until containerd's writer opens it), then copies it
/// to the stream until EOF or CloseIO, then shuts the stream's write side down (EOF for the
/// process).
async fn copy_input(fifo: PathBuf, mut stream: UnixStream, close: oneshot::Receiver<()>) {
    let path = fifo.clone();
    let mut open = tokio::task::spawn_blocking(move || std::fs::File::open(&path));
    tokio::pin!(close);
    let mut closed = false;
    let file = tokio::select! {
        // A writer that connected wins over a CloseIO handled at the same moment.
        biased;
        opened = &mut open => opened,
        _ = &mut close => {
            closed = true;
            // The open may have completed (ctr connected, wrote and closed) without this task
            // having seen it yet: finish it and drain what is in the FIFO, never drop it.
            match finish_open_after_close(&fifo, &mut open).await {
                Some(opened) => opened,
                None => {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
    };
    let receiver = match file {
        Ok(Ok(file)) => pipe::Receiver::from_file(file),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    };
    match receiver {
        Ok(mut receiver) => {
            let copy = tokio::io::copy(&mut receiver, &mut stream);
            tokio::pin!(copy);
            // CloseIO comes after containerd closed its end of the FIFO, but what it wrote
            // before may still be in the FIFO: pass that on before the EOF (bounded, as
            // another writer could still hold the FIFO open).
            let result = if closed {
                tokio::time::timeout(STDIN_DRAIN, &mut copy).await.ok()
            } else {
                tokio::select! {
                    result = &mut copy => Some(result),
                    _ = &mut close => tokio::time::timeout(STDIN_DRAIN, &mut copy).await.ok(),
                }
            };
            if let Some(Err(e)) = result {
                tracing::debug!(%e, "copying stdin");
            }
        }
        Err(e) => tracing::warn!(%e, fifo = %fifo.display(), "opening stdin FIFO"),
    }
    let _ = stream.shutdown().await;
}

type FifoOpen = tokio::task::JoinHandle<std::io::Result<std::fs::File>>;

/// After a CloseIO, brings the blocking open of the stdin FIFO to an end: wakes it (again, in
/// case the blocking thread had not reached `open` yet) until it returns, for at most
/// [`STDIN_DRAIN`]. `None` if it never returned.
async fn finish_open_after_close(
    fifo: &Path,
    open: &mut FifoOpen,
) -> Option<Result<std::io::Result<std::fs::File>, tokio::task::JoinError>> {
    let wake_until_open = async {
        loop {
            unblock_fifo_open(fifo);
            tokio::select! {
                opened = &mut *open => return opened,
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        }
    };
    tokio::time::timeout(STDIN_DRAIN, wake_until_open)
        .await
        .ok()
}

/// Wakes a thread blocked opening `fifo` for reading by opening (and closing) its write side.
fn unblock_fifo_open(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

/// The streams a process needs: (stdin, stdout, stderr) ports, 0 where none was named.
pub fn ports(ports: &StdioPorts) -> [u32; 3] {
    [ports.stdin_port, ports.stdout_port, ports.stderr_port]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn terminal_never_asks_for_stderr() {
        let paths = StdioPaths {
            stdin: "/i".into(),
            stdout: "/o".into(),
            stderr: "/e".into(),
            terminal: true,
        };
        let r = paths.request();
        assert!(r.stdin && r.stdout && !r.stderr && r.terminal);
        let none = StdioPaths::default().request();
        assert!(!none.stdin && !none.stdout && !none.stderr && !none.terminal);
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[tokio::test]
    async fn output_and_input_flow_between_fifos_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let (stdin_fifo, stdout_fifo) = (dir.path().join("in"), dir.path().join("out"));
        mkfifo(&stdin_fifo);
        mkfifo(&stdout_fifo);
        let paths = StdioPaths {
            stdin: stdin_fifo.to_string_lossy().into(),
            stdout: stdout_fifo.to_string_lossy().into(),
            ..Default::default()
        };
        let (shim_in, mut agent_in) = UnixStream::pair().unwrap();
        let (shim_out, mut agent_out) = UnixStream::pair().unwrap();
        let mut io = wire(&paths, Some(shim_in), Some(shim_out), None);

        // containerd's side: a reader on stdout, a writer on stdin.
        let mut reader = pipe::OpenOptions::new()
            .open_receiver(&stdout_fifo)
            .unwrap();
        let mut writer = {
            let path = stdin_fifo.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::OpenOptions::new().write(true).open(path).unwrap()
            })
            .await
            .unwrap()
        };
        std::io::Write::write_all(&mut writer, b"typed").unwrap();
        drop(writer);
        let mut got = Vec::new();
        agent_in.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"typed");

        agent_out.write_all(b"hello\n").await.unwrap();
        drop(agent_out);
        for h in io.take_outputs() {
            h.await.unwrap();
        }
        let mut buf = [0u8; 6];
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello\n");
    }

    /// ctr writes, closes its end, then sends CloseIO: the CloseIO may be handled before the
    /// copier read the FIFO. The bytes must still reach the process, then EOF.
    #[tokio::test]
    async fn close_stdin_after_the_writer_wrote_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let stdin_fifo = dir.path().join("in");
        mkfifo(&stdin_fifo);
        let paths = StdioPaths {
            stdin: stdin_fifo.to_string_lossy().into(),
            ..Default::default()
        };
        let (shim_in, mut agent_in) = UnixStream::pair().unwrap();
        let mut io = wire(&paths, Some(shim_in), None, None);
        let mut writer = {
            let path = stdin_fifo.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::OpenOptions::new().write(true).open(path).unwrap()
            })
            .await
            .unwrap()
        };
        io.close_stdin();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        std::io::Write::write_all(&mut writer, b"through stdin\n").unwrap();
        drop(writer);
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            agent_in.read_to_end(&mut got),
        )
        .await
        .expect("stdin stream must reach EOF after CloseIO")
        .unwrap();
        assert_eq!(got, b"through stdin\n");
    }

    #[tokio::test]
    async fn close_stdin_before_any_writer_gives_eof() {
        let dir = tempfile::tempdir().unwrap();
        let stdin_fifo = dir.path().join("in");
        mkfifo(&stdin_fifo);
        let paths = StdioPaths {
            stdin: stdin_fifo.to_string_lossy().into(),
            ..Default::default()
        };
        let (shim_in, mut agent_in) = UnixStream::pair().unwrap();
        let mut io = wire(&paths, Some(shim_in), None, None);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        io.close_stdin();
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            agent_in.read_to_end(&mut got),
        )
        .await
        .expect("stdin stream must reach EOF after CloseIO")
        .unwrap();
        assert!(got.is_empty());
    }
}
