//! One console connection: a shell on a new pty, bytes spliced between the host's stream and
//! the pty master until the shell side is gone (every holder of the terminal exited) or the
//! host stops reading. The host closing its sending side is passed on as the terminal's
//! end-of-file character (Ctrl-D), so a shell fed from a pipe ends when the pipe does. When
//! the session ends the master is closed: the kernel hangs the terminal up (SIGHUP to the
//! shell's session), and the agent sends SIGHUP to the shell's process group as well.

use std::path::Path;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::{info, warn};

use super::pty::{self, PtyMaster};
use super::shell;
use crate::stdio::Stream;

/// The terminal's end-of-file character (VEOF, Ctrl-D), written when the host closes.
pub const EOF_CHAR: u8 = 0x04;
/// Buffer size of each direction.
const BUFFER: usize = 16 * 1024;

/// The one-line error a console gets when the guest image has no shell.
pub fn no_shell_message(shell: &Path) -> String {
    format!(
        "hull-agent: no {} in this guest image; the debug console needs a debug image \
         (make guest DEBUG_IMAGE=1)\r\n",
        shell.display()
    )
}

/// Writes `line` to the host and closes the connection.
pub async fn refuse(mut stream: Stream, line: &str) {
    warn!(reason = line.trim_end(), "debug console refused");
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Runs one console session on `stream` with `shell`; returns when it is over.
pub async fn run(stream: Stream, shell: &Path) {
    if !shell.is_file() {
        return refuse(stream, &no_shell_message(shell)).await;
    }
    let pair = match pty::open() {
        Ok(pair) => pair,
        Err(e) => return refuse(stream, &format!("hull-agent: opening a pty: {e}\r\n")).await,
    };
    let pid = match shell::spawn(shell, &pair.slave) {
        Ok(pid) => pid,
        Err(e) => {
            let line = format!("hull-agent: starting {}: {e}\r\n", shell.display());
            return refuse(stream, &line).await;
        }
    };
    // Only the shell (and what it starts) holds the terminal now: when they are all gone
    // the master reads end of file.
    drop(pair.slave);
    let master = match PtyMaster::new(pair.master) {
        Ok(master) => master,
        Err(e) => {
            hang_up(pid);
            return refuse(stream, &format!("hull-agent: pty: {e}\r\n")).await;
        }
    };
    info!(pid, shell = %shell.display(), "debug console: shell started");
    let (to_shell, to_host) = splice(stream, master).await;
    hang_up(pid);
    info!(pid, to_shell, to_host, "debug console closed");
}

/// SIGHUP to the shell's process group (its session leader's pid), as a terminal hang-up.
fn hang_up(pid: u32) {
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGHUP) };
}

/// Copies host → pty and pty → host until the pty side ends or a write fails. Returns the
/// bytes copied each way.
async fn splice(stream: Stream, master: PtyMaster) -> (u64, u64) {
    let (mut host_rx, mut host_tx) = tokio::io::split(stream);
    let (mut pty_rx, mut pty_tx) = tokio::io::split(master);
    let mut to_shell = 0u64;
    let mut to_host = 0u64;
    let host_to_shell = async {
        let mut buf = vec![0u8; BUFFER];
        loop {
            match host_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if pty_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    to_shell += n as u64;
                }
            }
        }
        // The host sends no more: end of file for the shell, and wait for it to finish.
        let _ = pty_tx.write_all(&[EOF_CHAR]).await;
        std::future::pending::<()>().await;
    };
    let shell_to_host = async {
        let mut buf = vec![0u8; BUFFER];
        loop {
            match pty_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if host_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    to_host += n as u64;
                }
            }
        }
        let _ = host_tx.shutdown().await;
    };
    tokio::select! {
        () = host_to_shell => {}
        () = shell_to_host => {}
    }
    (to_shell, to_host)
}
