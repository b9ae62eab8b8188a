//! The device over a REAL tap: the test makes a network namespace (`ip netns add`, removed on drop),
//! opens a tap in it through [`Tap::open`], and watches the host side of the tap with an AF_PACKET
//! socket bound to it. The guest side is the in-memory driver queues; the device runs in a real
//! event manager.
//!
//! Needs root, /dev/net/tun and `ip`. Without them it prints SKIPPED, unless `HULL_REQUIRE_NET` or
//! `CI` is set, where it fails.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
};
use vmm_sys_util::eventfd::EventFd;

use super::device::{RX_QUEUE, TX_QUEUE};
use super::frame::VNET_HDR_LEN;
use super::tests::{eth_frame, with_hdr};
use super::{Net, NetConfig, Tap, TapError};
use crate::virtio::test_driver::{guest_memory, DriverQueue, SLOT};
use crate::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

const TAP: &str = "hulltap0";
const ETH_P_ALL: u16 = 0x0003;
const WAIT: Duration = Duration::from_secs(5);

/// True when this machine can run the test; SKIPPED (or a failure on CI) otherwise.
fn net_test_allowed() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tun = std::path::Path::new("/dev/net/tun").exists();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && tun && ip {
        return true;
    }
    let why = format!("needs root ({root}), /dev/net/tun ({tun}) and `ip` ({ip})");
    if std::env::var_os("HULL_REQUIRE_NET").is_some() || std::env::var_os("CI").is_some() {
        panic!("the real-tap test {why}");
    }
    eprintln!("SKIPPED: the real-tap test {why}");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace owned by the test.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> NetNs {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hull-net-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        // No IPv6 chatter (router solicitations, MLD) on the tap.
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// Runs `f` on a thread that has entered the namespace (sockets and taps made there stay in it).
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on an open netns file affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// An AF_PACKET socket bound to interface `ifindex` (made in the current thread's namespace).
fn packet_socket(ifindex: u32) -> OwnedFd {
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a new socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
    sock
}

/// Waits for a frame on the packet socket that satisfies `want`.
fn packet_recv(sock: &OwnedFd, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && want(&buf[..n as usize]) {
            return Some(buf[..n as usize].to_vec());
        }
        if n < 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    None
}

#[test]
fn frames_cross_a_real_tap_both_ways() {
    if !net_test_allowed() {
        return;
    }
    let ns = NetNs::create();
    let (tap, sock, fd_check) = ns.enter(|| {
        let tap = Tap::open(TAP).unwrap();
        assert_eq!(tap.name(), TAP);
        // The `fd=N` path: a second descriptor for the same tap is accepted; /dev/null is not.
        // SAFETY: a fresh dup that only `from_raw_fd_checked` owns.
        let dup = unsafe { Tap::from_raw_fd_checked(libc::dup(tap.as_raw_fd())) }.map(|t| {
            assert_eq!(t.name(), TAP);
        });
        let null = File::open("/dev/null").unwrap();
        let null_fd = std::os::fd::IntoRawFd::into_raw_fd(null);
        // SAFETY: the fd was just released by its File.
        let refused = unsafe { Tap::from_raw_fd_checked(null_fd) };
        assert!(
            matches!(refused, Err(TapError::BadFd { .. })),
            "{refused:?}"
        );
        let name = std::ffi::CString::new(TAP).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0);
        (tap, packet_socket(ifindex), dup)
    });
    fd_check.unwrap();
    ip(&["-n", &ns.name, "link", "set", TAP, "up"]);

    let cfg: NetConfig = format!("tap={TAP},mac=02:00:00:00:00:02").parse().unwrap();
    let mut dev = Net::with_tap(&cfg, Box::new(tap)).unwrap();
    let kicks: Vec<EventFd> = dev
        .queue_events()
        .iter()
        .map(|e| e.try_clone().unwrap())
        .collect();
    let mem = guest_memory();
    let mut rx = DriverQueue::new(0, 0x10_0000);
    let mut tx = DriverQueue::new(0x1_0000, 0x10_0000 + 256 * SLOT);
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    // Offloads on: activation sets them on the real tap (TUNSETOFFLOAD).
    let offloads = [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
    ];
    dev.set_acked_features(
        offloads
            .iter()
            .fold(VIRTIO_F_VERSION_1, |f, b| f | (1 << b)),
    );
    dev.activate(mem.clone(), irq, vec![rx.queue(), tx.queue()])
        .unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em = EventManager::new().unwrap();
    em.add_subscriber(dev.clone());
    em.run_with_timeout(10).unwrap();

    // Guest -> host: a broadcast frame over two descriptors arrives on the tap's host side.
    let mut out = eth_frame(600, 0x40);
    out[..6].copy_from_slice(&[0xff; 6]);
    let hdr = [0u8; VNET_HDR_LEN];
    tx.add(&mem, &[(12, false, &hdr), (600, false, &out)]);
    kicks[TX_QUEUE].write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    let seen = packet_recv(&sock, |f| f == out.as_slice());
    assert!(seen.is_some(), "the guest's frame never reached the tap");
    assert_eq!(tx.pop_used(&mem).map(|u| u.1), Some(0));

    // Host -> guest: a frame sent on the tap's host side lands in the guest's rx buffers.
    for _ in 0..4 {
        rx.add(&mem, &[(1024, true, &[])]);
    }
    kicks[RX_QUEUE].write(1).unwrap();
    em.run_with_timeout(10).unwrap();
    let mut back = eth_frame(1400, 0x80);
    back[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    // SAFETY: `back` is readable for its length; the socket is bound to the tap.
    let n = unsafe { libc::send(sock.as_raw_fd(), back.as_ptr().cast(), back.len(), 0) };
    assert_eq!(n, back.len() as isize, "{}", io::Error::last_os_error());
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while Instant::now() < deadline && got.len() < VNET_HDR_LEN + back.len() {
        em.run_with_timeout(50).unwrap();
        while let Some((idxs, len)) = rx.pop_used(&mem) {
            got.extend(rx.read_buf(&mem, idxs[0], len as usize));
        }
    }
    assert_eq!(got.len(), VNET_HDR_LEN + back.len(), "bytes the guest got");
    assert_eq!(&got[10..12], &2u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &with_hdr(&back)[VNET_HDR_LEN..]);
    let stats = dev.lock().unwrap().stats();
    assert_eq!((stats.tx_frames, stats.rx_frames), (1, 1), "{stats:?}");
    drop(em);
    drop(dev);
    drop(sock);
    drop(ns);
}
