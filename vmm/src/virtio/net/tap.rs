//! The host side of a virtio-net device: a tap interface in `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`
//! mode, read and written one frame (12-byte `virtio_net_hdr_v1` + Ethernet frame) at a time.
//!
//! [`TapIo`] is the seam between the device and the host: the device only reads frames, writes
//! frames and sets offloads, so tests can put a socketpair behind it. (A vhost-net back-end would
//! not sit behind this trait: it takes the queues themselves; see the `net` module docs.)

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::frame::VNET_HDR_LEN;
use super::TapSource;

/// Offload bits of TUNSETOFFLOAD (linux/if_tun.h).
pub mod offload {
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    pub const TSO6: u32 = libc::TUN_F_TSO6;
}

/// What the device needs from its host side.
pub trait TapIo: AsRawFd + Send {
    /// Reads one frame (vnet header + Ethernet frame) into `buf`; `WouldBlock` when none waits.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (vnet header + Ethernet frame).
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Which offloaded frames the host may hand us (TUN_F_* bits): only what the guest accepted.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// Errors opening a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    #[error(
        "cannot attach to tap {name:?} (TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR): {source}"
    )]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("inherited fd {fd} is not usable: {source}")]
    BadFd {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("inherited fd {fd} is not a tap opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (flags {flags:#x})")]
    NotAVnetTap { fd: RawFd, flags: i32 },
    #[error("tap {name:?}: {what} failed: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

const REQUIRED_FLAGS: i32 = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// `struct ifreq` as TUNSETIFF/TUNGETIFF use it: the name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    fn new() -> Self {
        IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        }
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// A tap interface opened in vnet-header mode, non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens the tap described by `source`.
    pub fn from_source(source: &TapSource) -> Result<Tap, TapError> {
        match source {
            TapSource::Name(name) => Tap::open(name),
            // SAFETY: the operator handed this fd to the VMM for this device (`--net fd=N`); it is
            // taken over here exactly once and checked before use.
            TapSource::Fd(fd) => unsafe { Tap::from_raw_fd_checked(*fd) },
        }
    }

    /// Opens (creating it if missing and allowed) the tap `name` in the caller's network namespace.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq::new();
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TapError::SetIff {
                name: name.to_string(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        req.flags = REQUIRED_FLAGS as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as (40 bytes).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(TapError::SetIff {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: req.name(),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// Takes over an inherited tap fd: it must be a tap with IFF_NO_PI and IFF_VNET_HDR. It is
    /// made non-blocking and close-on-exec.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else in the process owns or will close.
    pub unsafe fn from_raw_fd_checked(fd: RawFd) -> Result<Tap, TapError> {
        let bad = |source| TapError::BadFd { fd, source };
        // SAFETY: fcntl on a number that may not be open only returns EBADF.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 {
            return Err(bad(io::Error::last_os_error()));
        }
        // SAFETY: the caller gives us ownership of the open fd.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq::new();
        // SAFETY: TUNGETIFF writes a `struct ifreq`; an fd that is not a tun file returns EBADFD
        // or ENOTTY without writing.
        let rc = unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut req) };
        if rc < 0 {
            return Err(bad(io::Error::last_os_error()));
        }
        let flags = i32::from(req.flags);
        if flags & REQUIRED_FLAGS != REQUIRED_FLAGS {
            return Err(TapError::NotAVnetTap { fd, flags });
        }
        // SAFETY: plain fcntl calls on an fd we own.
        let rc = unsafe {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK).min(libc::fcntl(
                fd,
                libc::F_SETFD,
                libc::FD_CLOEXEC,
            ))
        };
        if rc < 0 {
            return Err(bad(io::Error::last_os_error()));
        }
        let tap = Tap {
            file,
            name: req.name(),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn ioctl_err(&self, what: &'static str) -> TapError {
        TapError::Ioctl {
            name: self.name.clone(),
            what,
            source: io::Error::last_os_error(),
        }
    }

    /// TUNSETVNETHDRSZ: frames carry the 12-byte `virtio_net_hdr_v1`.
    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        let len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        if rc < 0 {
            return Err(self.ioctl_err("TUNSETVNETHDRSZ"));
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
