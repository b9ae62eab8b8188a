//! Creating a tap through `/dev/net/tun` (in the calling thread's network namespace).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Length of the virtio-net header in front of every frame read from or written to a tap we
/// create (`struct virtio_net_hdr_mrg_rxbuf`, the header of virtio 1.0 devices).
pub const VNET_HDR_LEN: usize = 12;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags at the start of the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Whether `name` fits a Linux interface name (1-15 bytes, no `/`, whitespace or `:`).
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Creates (or attaches to) the tap `name`, not persistent: it goes away with the last
/// descriptor. The descriptor is blocking and close-on-exec.
pub(super) fn open_tap(name: &str) -> io::Result<OwnedFd> {
    if !valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid interface name",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _rest: [0; 22],
    };
    for (dst, src) in request.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out (40 bytes), and may
    // write the final name back into it.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let header_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &header_len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}
