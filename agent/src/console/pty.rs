//! The pseudo-terminal of one console session: [`open`] makes the pair (master non-blocking,
//! both ends close-on-exec), [`PtyMaster`] is the master as a tokio byte stream. A read of the
//! master after every slave descriptor closed fails with EIO on Linux: [`PtyMaster`] reports
//! that as end of file (the shell and everything it started are gone).

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The window size a console starts with (the host does not send its own).
pub const DEFAULT_ROWS: u16 = 24;
/// See [`DEFAULT_ROWS`].
pub const DEFAULT_COLS: u16 = 80;

/// Both ends of a new pty.
pub struct PtyPair {
    /// The agent's end.
    pub master: OwnedFd,
    /// The shell's terminal.
    pub slave: OwnedFd,
}

/// Opens a pty of [`DEFAULT_ROWS`] x [`DEFAULT_COLS`].
pub fn open() -> io::Result<PtyPair> {
    let size = nix::pty::Winsize {
        ws_row: DEFAULT_ROWS,
        ws_col: DEFAULT_COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        set_fd_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)?;
    }
    set_fd_flag(&pty.master, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK)?;
    Ok(PtyPair {
        master: pty.master,
        slave: pty.slave,
    })
}

fn set_fd_flag(fd: &OwnedFd, get: i32, set: i32, flag: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, integer arguments only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), get) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), set, flags | flag) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The master end of a pty as an async byte stream.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Registers the (non-blocking) master with the tokio reactor.
    pub fn new(master: OwnedFd) -> io::Result<PtyMaster> {
        // SAFETY: the AsyncFd owns `master` (an OwnedFd): it stays open and the same
        // descriptor for the AsyncFd's whole life.
        let fd =
            unsafe { AsyncFd::register(master) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(PtyMaster { fd })
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                // SAFETY: reads into the caller's initialised buffer, at most its length.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every slave descriptor is closed: end of the session's output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                // SAFETY: writes at most `data.len()` bytes from `data`.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
