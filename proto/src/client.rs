//! Host side: reaching a guest vsock port through hull-vmm's hybrid-vsock Unix socket.
//!
//! The handshake: connect to the VMM's Unix socket, write `CONNECT <port>\n`, read one line
//! `OK <host-port>\n`; from then on the connection is a byte stream to the guest listener on
//! `<port>`. The reply is read one byte at a time so that not a single byte of the stream that
//! follows it is consumed by the handshake. If nothing listens on the port, the VMM closes the
//! connection instead of replying.
//!
//! [`connect_hybrid_vsock`] returns a ttrpc client for the agent API; [`open_hybrid_vsock_stream`]
//! returns the raw stream (for process stdio streams).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// How long [`connect_hybrid_vsock`] waits for the socket connection and the `OK` reply.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

use crate::handshake::MAX_OK_LINE as MAX_REPLY_LEN;

/// A failed hybrid-vsock handshake.
#[derive(Debug, thiserror::Error)]
pub enum HybridVsockError {
    /// The Unix socket could not be connected.
    #[error("connecting to the hybrid vsock socket {path}: {source}")]
    Connect {
        /// The VMM's hybrid-vsock socket.
        path: PathBuf,
        /// The connect error.
        source: io::Error,
    },
    /// Writing `CONNECT <port>` or reading the reply failed.
    #[error("hybrid vsock handshake for guest port {port} on {path}: {source}")]
    Io {
        /// The VMM's hybrid-vsock socket.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The I/O error.
        source: io::Error,
    },
    /// The VMM closed the connection without a complete reply: usually nothing listens on the
    /// guest port.
    #[error(
        "{path} closed the connection before replying to CONNECT {port} \
         (is the guest listening on port {port}?); received {received:?}"
    )]
    Closed {
        /// The VMM's hybrid-vsock socket.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// What arrived before the close.
        received: String,
    },
    /// The reply is not `OK <number>\n`.
    #[error("unexpected reply to CONNECT {port} on {path}: {reply:?}")]
    UnexpectedReply {
        /// The VMM's hybrid-vsock socket.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The reply as received (lossy UTF-8, at most a few dozen bytes).
        reply: String,
    },
    /// No complete reply within the timeout.
    #[error("no reply to CONNECT {port} on {path} within {timeout:?}")]
    Timeout {
        /// The VMM's hybrid-vsock socket.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The timeout that elapsed.
        timeout: Duration,
    },
}

/// Connects to guest vsock `port` through the hybrid-vsock socket at `uds_path` and returns a
/// ttrpc client over that stream (wrap it in [`crate::agent_ttrpc::AgentServiceClient::new`]).
/// Waits at most [`DEFAULT_HANDSHAKE_TIMEOUT`] for the handshake. Needs a tokio runtime.
pub async fn connect_hybrid_vsock(
    uds_path: impl AsRef<Path>,
    port: u32,
) -> Result<ttrpc::asynchronous::Client, HybridVsockError> {
    connect_hybrid_vsock_with_timeout(uds_path, port, DEFAULT_HANDSHAKE_TIMEOUT).await
}

/// [`connect_hybrid_vsock`] with an explicit handshake timeout.
pub async fn connect_hybrid_vsock_with_timeout(
    uds_path: impl AsRef<Path>,
    port: u32,
    timeout: Duration,
) -> Result<ttrpc::asynchronous::Client, HybridVsockError> {
    let stream = open_hybrid_vsock_stream(uds_path, port, timeout).await?;
    Ok(ttrpc::asynchronous::Client::new(
        ttrpc::asynchronous::transport::Socket::new(stream),
    ))
}

/// Performs the hybrid-vsock handshake for guest `port` on the socket at `uds_path` and returns
/// the connected stream, positioned at the first byte after the `OK` line.
pub async fn open_hybrid_vsock_stream(
    uds_path: impl AsRef<Path>,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, HybridVsockError> {
    let path = uds_path.as_ref();
    match tokio::time::timeout(timeout, handshake(path, port)).await {
        Ok(result) => result,
        Err(_) => Err(HybridVsockError::Timeout {
            path: path.to_path_buf(),
            port,
            timeout,
        }),
    }
}

async fn handshake(path: &Path, port: u32) -> Result<UnixStream, HybridVsockError> {
    let mut stream =
        UnixStream::connect(path)
            .await
            .map_err(|source| HybridVsockError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
    let io_error = |source| HybridVsockError::Io {
        path: path.to_path_buf(),
        port,
        source,
    };
    stream
        .write_all(crate::handshake::connect_line(port).as_bytes())
        .await
        .map_err(io_error)?;
    let line = read_reply_line(&mut stream, path, port).await?;
    crate::handshake::parse_ok(&line).ok_or_else(|| HybridVsockError::UnexpectedReply {
        path: path.to_path_buf(),
        port,
        reply: String::from_utf8_lossy(&line).into_owned(),
    })?;
    Ok(stream)
}

/// Reads up to and including the first `\n`, one byte at a time (never past it).
async fn read_reply_line(
    stream: &mut UnixStream,
    path: &Path,
    port: u32,
) -> Result<Vec<u8>, HybridVsockError> {
    let mut line = Vec::with_capacity(MAX_REPLY_LEN);
    loop {
        let mut byte = [0u8; 1];
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|source| HybridVsockError::Io {
                path: path.to_path_buf(),
                port,
                source,
            })?;
        if n == 0 {
            return Err(HybridVsockError::Closed {
                path: path.to_path_buf(),
                port,
                received: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_REPLY_LEN {
            return Err(HybridVsockError::UnexpectedReply {
                path: path.to_path_buf(),
                port,
                reply: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake VMM socket: accepts one connection, checks the CONNECT line, answers `reply`
    /// (in one write, so any bytes after the line arrive together with it), then holds the
    /// connection open until the client closes it.
    async fn fake_vmm(
        reply: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while conn.read(&mut byte).await.unwrap() == 1 {
                request.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            conn.write_all(reply).await.unwrap();
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
            String::from_utf8(request).unwrap()
        });
        (dir, path, task)
    }

    #[tokio::test]
    async fn handshake_sends_connect_and_does_not_over_read() {
        let (_dir, path, vmm) = fake_vmm(b"OK 77\nguest-bytes").await;
        let mut stream = open_hybrid_vsock_stream(&path, 1024, Duration::from_secs(5))
            .await
            .unwrap();
        let mut after = [0u8; 11];
        stream.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"guest-bytes");
        drop(stream);
        assert_eq!(vmm.await.unwrap(), "CONNECT 1024\n");
    }

    #[tokio::test]
    async fn unexpected_reply_is_reported() {
        let (_dir, path, _vmm) = fake_vmm(b"NO 1\n").await;
        let err = open_hybrid_vsock_stream(&path, 5, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HybridVsockError::UnexpectedReply { reply, port: 5, .. } if reply == "NO 1\n"),
            "{err}"
        );
        assert!(err.to_string().contains("unexpected reply"), "{err}");
    }

    #[tokio::test]
    async fn endless_reply_line_is_cut_off() {
        let (_dir, path, _vmm) = fake_vmm(&[b'O'; 100]).await;
        let err = open_hybrid_vsock_stream(&path, 5, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HybridVsockError::UnexpectedReply { reply, .. } if reply.len() == MAX_REPLY_LEN),
            "{err}"
        );
    }

    #[tokio::test]
    async fn close_without_reply_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut line = [0u8; 13];
            conn.read_exact(&mut line).await.unwrap();
            conn.write_all(b"OK").await.unwrap();
            // dropped: closed mid-reply
        });
        let err = open_hybrid_vsock_stream(&path, 1024, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HybridVsockError::Closed { received, port: 1024, .. } if received == "OK"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let holder = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(conn);
        });
        let started = std::time::Instant::now();
        let err = open_hybrid_vsock_stream(&path, 1024, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HybridVsockError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        holder.abort();
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_hybrid_vsock(dir.path().join("absent.sock"), 1024)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, HybridVsockError::Connect { .. }), "{err}");
    }
}
