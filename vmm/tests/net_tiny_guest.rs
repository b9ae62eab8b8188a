//! The virtio-net device inside a real hull-vmm over a REAL tap, driven by the tiny guest's polling
//! driver (`net-echo`): the guest's frame arrives on the host side of the tap, and a frame sent
//! there reaches the guest. hull-vmm runs in a network namespace the test creates (`ip netns`,
//! removed afterwards), attached to a tap made there beforehand.
//!
//! Needs root, /dev/net/tun and `ip`: without them it prints SKIPPED, unless `HULL_REQUIRE_NET` or
//! `CI` is set, where it fails.

mod common;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{ip, net_allowed, NetNs};
use common::{tiny_guest, vmm_bin, Entry};

const TIMEOUT: Duration = Duration::from_secs(120);
const TAP: &str = "hulltap0";
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// An AF_PACKET socket on the tap, made by a thread inside the namespace.
fn packet_socket(ns: &str) -> OwnedFd {
    let nsfile = File::open(format!("/var/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on an open netns file affects only this thread.
        assert_eq!(
            unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let name = std::ffi::CString::new(TAP).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{TAP} not found in the namespace");
        let proto = 0x0003u16.to_be(); // ETH_P_ALL
                                       // SAFETY: plain socket creation; owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a new fd nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        sock
    })
    .join()
    .unwrap()
}

#[test]
fn guest_and_host_exchange_frames_through_a_tap() {
    if !net_allowed("net tiny-guest") {
        return;
    }
    let ns = NetNs(format!("hull-tg-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "netns",
        "exec",
        &ns.0,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    ip(&["-n", &ns.0, "tuntap", "add", "dev", TAP, "mode", "tap"]);
    ip(&["-n", &ns.0, "link", "set", TAP, "up"]);
    let sock = packet_socket(&ns.0);

    let kernel = tiny_guest(Entry::Pvh);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, vmm_bin(), "--kernel"])
        .arg(&kernel)
        .args([
            "--net",
            &format!("tap={TAP},mac=02:00:00:00:00:0a"),
            "--cmdline",
            "console=ttyS0 net-echo",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The guest's broadcast frame arrives on the host side; answer it.
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 2048];
    let from_guest = loop {
        assert!(Instant::now() < deadline, "no frame from the guest");
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "hull-vmm ended ({status}) before the guest's frame arrived\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 14 && buf[12..14] == ETHERTYPE && buf[6..12] == GUEST_MAC {
            break buf[..n as usize].to_vec();
        }
        if n < 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert_eq!(&from_guest[..6], &[0xff; 6]);
    assert!(from_guest[14..].starts_with(b"hello from the tiny guest"));
    let mut reply = [0u8; 60];
    reply[..6].copy_from_slice(&GUEST_MAC);
    reply[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    reply[12..14].copy_from_slice(&ETHERTYPE);
    reply[14..33].copy_from_slice(b"hello from the host");
    // SAFETY: `reply` is readable for its length.
    let n = unsafe { libc::send(sock.as_raw_fd(), reply.as_ptr().cast(), reply.len(), 0) };
    assert_eq!(n, reply.len() as isize, "{}", io::Error::last_os_error());

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tiny-guest: net mac=2:0:0:0:0:10"),
        "{stdout}"
    );
    assert!(stdout.contains("tiny-guest: net sent"), "{stdout}");
    assert!(
        stdout.contains("tiny-guest: net received num_buffers=1 len=72: hello from the host|"),
        "{stdout}\n{stderr}"
    );
}
