//! Host Unix-socket helpers of the hybrid back-end: the path a guest-initiated connection goes to,
//! a connect that never blocks the event loop, and a client still sending its `CONNECT` line.

use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::connect_line::{parse_connect_line, ConnectLineError, LineBuffer, LineProgress};

/// `<uds_path>_<port>`: where a guest connection to host port `port` is forwarded (the rule is
/// the agent protocol's: [`hull_proto::handshake::guest_connection_path`]).
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    hull_proto::handshake::guest_connection_path(uds_path, port)
}

/// Connects to a Unix stream listener without blocking: a listener whose backlog is full gives
/// `WouldBlock` instead of stalling the VMM's event loop. The stream is returned non-blocking.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd: RawFd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns; the UnixStream closes it on every path.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };

    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable Unix socket path {}", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Why a client was dropped before its connection reached the guest.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client closed before sending a complete line.
    #[error("client closed before sending a CONNECT line")]
    ClosedEarly,
    /// The line was malformed or too long.
    #[error("bad CONNECT line {line:?}: {source}")]
    BadLine {
        /// What was received (lossy UTF-8).
        line: String,
        /// What was wrong with it.
        source: ConnectLineError,
    },
    /// Reading the client failed.
    #[error("reading the CONNECT line failed: {0}")]
    Io(#[source] io::Error),
}

/// A host client that connected to the hybrid socket and has not finished its `CONNECT` line.
#[derive(Debug)]
pub struct PendingClient {
    /// The client's stream (non-blocking).
    pub stream: UnixStream,
    /// Drop the client if the line is not complete by then.
    pub deadline: Instant,
    line: LineBuffer,
}

impl PendingClient {
    /// A client accepted now; `deadline` bounds how long it may take to send its line.
    pub fn new(stream: UnixStream, deadline: Instant) -> Self {
        PendingClient {
            stream,
            deadline,
            line: LineBuffer::default(),
        }
    }

    /// Reads what the client sent, one byte at a time so that nothing after the newline is taken.
    /// Returns `Ok(Some(port))` once a valid line is complete, `Ok(None)` if more bytes are needed.
    pub fn read_line(&mut self) -> Result<Option<u32>, HandshakeError> {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(HandshakeError::ClosedEarly),
                Ok(_) => {
                    let progress = self
                        .line
                        .push(byte[0])
                        .map_err(|source| self.bad_line(source))?;
                    if progress == LineProgress::Complete {
                        return parse_connect_line(self.line.as_bytes())
                            .map(Some)
                            .map_err(|source| self.bad_line(source));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
    }

    fn bad_line(&self, source: ConnectLineError) -> HandshakeError {
        HandshakeError::BadLine {
            line: String::from_utf8_lossy(self.line.as_bytes()).into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_nonblocking_reaches_a_listener_and_reports_a_missing_one() {
        let dir = tempdir();
        let path = dir.join("l.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut s = connect_nonblocking(&path).unwrap();
        s.write_all(b"x").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        let err = connect_nonblocking(&dir.join("missing.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let long = PathBuf::from("/".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pending_client_reads_exactly_the_line() {
        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut p = PendingClient::new(server, Instant::now());
        assert!(matches!(p.read_line(), Ok(None)));
        client.write_all(b"CONNECT 10").unwrap();
        assert!(matches!(p.read_line(), Ok(None)));
        client.write_all(b"24\nDATA").unwrap();
        assert!(matches!(p.read_line(), Ok(Some(1024))));
        // The bytes after the newline are still in the socket.
        let mut rest = [0u8; 4];
        p.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"DATA");
    }

    #[test]
    fn pending_client_errors() {
        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut p = PendingClient::new(server, Instant::now());
        client.write_all(&[b'C'; 40]).unwrap();
        let err = p.read_line().unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::BadLine {
                source: ConnectLineError::TooLong,
                ..
            }
        ));

        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut p = PendingClient::new(server, Instant::now());
        client.write_all(b"GET / HTTP/1.0\n").unwrap();
        assert!(matches!(p.read_line(), Err(HandshakeError::BadLine { .. })));

        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut p = PendingClient::new(server, Instant::now());
        drop(client);
        assert!(matches!(p.read_line(), Err(HandshakeError::ClosedEarly)));
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hull-vsock-hs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
