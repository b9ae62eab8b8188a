//! Splices this process's stdin and stdout with a console stream: stdin goes to the guest on
//! its own thread, the guest's output comes back on the caller's; it ends when the guest side
//! closes. Stdin's end of file is passed on as a write shutdown (the agent turns it into the
//! terminal's Ctrl-D). On a terminal, [`ESCAPE`] (Ctrl-]) leaves the console.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::terminal::{stdin_is_tty, RawMode};
use super::ConsoleError;

/// The byte that leaves the console when stdin is a terminal: Ctrl-] (as telnet's escape).
pub const ESCAPE: u8 = 0x1d;
const BUFFER: usize = 16 * 1024;

/// Runs the console on stdin/stdout; `label` names it in the greeting on a terminal.
pub fn run_on_stdio(console: UnixStream, label: &str) -> Result<(), ConsoleError> {
    let io = |action| {
        move |source| ConsoleError::Io {
            action: action as &'static str,
            source,
        }
    };
    console
        .set_nonblocking(false)
        .map_err(io("setting up the console socket"))?;
    let tty = stdin_is_tty();
    let raw = if tty { Some(RawMode::enter()?) } else { None };
    if tty {
        eprint!("hull: debug console of {label}; Ctrl-] quits\r\n");
    }
    let to_guest = console
        .try_clone()
        .map_err(io("setting up the console socket"))?;
    std::thread::spawn(move || copy_input(std::io::stdin().lock(), to_guest, tty));
    let result = copy_output(console, std::io::stdout().lock());
    drop(raw);
    if tty {
        eprintln!("\nhull: console closed");
    }
    result
}

/// Where [`ESCAPE`] is in `chunk`, if anywhere.
pub fn escape_position(chunk: &[u8]) -> Option<usize> {
    chunk.iter().position(|&b| b == ESCAPE)
}

/// Copies `input` to `console`. At `input`'s end shuts the console's write side; with
/// `watch_escape`, at [`ESCAPE`] sends what came before it and shuts both sides (the caller's
/// read then ends).
pub fn copy_input(mut input: impl Read, mut console: UnixStream, watch_escape: bool) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if let Some(at) = escape_position(chunk).filter(|_| watch_escape) {
            let _ = console.write_all(&chunk[..at]);
            let _ = console.shutdown(Shutdown::Both);
            return;
        }
        if console.write_all(chunk).is_err() {
            return;
        }
    }
    let _ = console.shutdown(Shutdown::Write);
}

/// Copies `console` to `output` until the console closes.
pub fn copy_output(mut console: impl Read, mut output: impl Write) -> Result<(), ConsoleError> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ConsoleError::Io {
                    action: "reading from the console",
                    source,
                })
            }
        };
        output
            .write_all(&buf[..n])
            .and_then(|()| output.flush())
            .map_err(|source| ConsoleError::Io {
                action: "writing the console's output",
                source,
            })?;
    }
}
