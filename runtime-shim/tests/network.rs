//! The shim's pod network wiring in scratch network namespaces: a veth pair between a "pod"
//! namespace (the CNI side, `a`) and a "peer host" namespace (`b`); `discover` + `wire` in `a`;
//! frames from `b`'s own IP stack are read from the tap, answers written into the tap reach
//! `b`'s stack; `unwire` / `unwire_all` leave nothing behind. Needs root and iproute2 (used
//! here only to build and inspect the namespaces; the code under test uses netlink).

mod common;

use common::run;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hull_runtime::network::{self, PodNetwork, Wiring, TC_PRIORITY, VNET_HDR_LEN};
use serde_json::Value;

const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const MTU: u64 = 1400;

/// Whether this machine can run these tests; on CI it must.
fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && ip {
        return true;
    }
    let why = format!("needs root ({root}) and iproute2 ({ip})");
    if std::env::var_os("CI").is_some() {
        panic!("network tests {why}");
    }
    eprintln!("SKIPPED: network tests {why}");
    false
}

fn json(program: &str, args: &[&str]) -> Value {
    let text = run(program, args);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap()
}

/// Two scratch namespaces joined by a veth pair, removed on drop (even after a failure).
struct Scratch {
    a: String,
    b: String,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        let base = format!("hull-net-{}-{tag}", std::process::id());
        let scratch = Scratch {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        for ns in [&scratch.a, &scratch.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run("ip", &["netns", "add", ns]);
        }
        let (a, b) = (scratch.a.as_str(), scratch.b.as_str());
        let mtu = MTU.to_string();
        run(
            "ip",
            &[
                "-n", a, "link", "add", "eth0", "mtu", &mtu, "type", "veth", "peer", "name",
                "peer0", "mtu", &mtu, "netns", b,
            ],
        );
        run(
            "ip",
            &["-n", a, "addr", "add", "10.99.0.2/24", "dev", "eth0"],
        );
        run(
            "ip",
            &[
                "-n",
                a,
                "addr",
                "add",
                "fd00:99::2/64",
                "dev",
                "eth0",
                "nodad",
            ],
        );
        run(
            "ip",
            &["-n", b, "addr", "add", "10.99.0.1/24", "dev", "peer0"],
        );
        run(
            "ip",
            &[
                "-n",
                b,
                "addr",
                "add",
                "fd00:99::1/64",
                "dev",
                "peer0",
                "nodad",
            ],
        );
        for (ns, dev) in [(a, "eth0"), (a, "lo"), (b, "peer0"), (b, "lo")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        run(
            "ip",
            &["-n", a, "route", "add", "192.0.2.0/24", "dev", "eth0"],
        );
        run(
            "ip",
            &["-n", a, "route", "add", "default", "via", "10.99.0.1"],
        );
        run(
            "ip",
            &[
                "-n",
                a,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:99::1",
            ],
        );
        scratch
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.a)
    }

    /// Names of `ns`'s links.
    fn links(&self, ns: &str) -> Vec<Value> {
        json("ip", &["-n", ns, "-j", "-d", "link", "show"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The qdisc kinds on `dev` in `a`.
    fn qdiscs(&self, dev: &str) -> Vec<String> {
        json("tc", &["-n", &self.a, "-j", "qdisc", "show", "dev", dev])
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// The ingress filters on `dev` in `a`.
    fn filters(&self, dev: &str) -> Vec<Value> {
        json(
            "tc",
            &["-n", &self.a, "-j", "filter", "show", "dev", dev, "ingress"],
        )
        .as_array()
        .unwrap()
        .clone()
    }

    /// Asserts that nothing of ours is left in `a`, and that eth0 is as CNI left it.
    fn assert_clean(&self) {
        let links = self.links(&self.a);
        let names: Vec<&str> = links
            .iter()
            .map(|l| l["ifname"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["lo", "eth0"], "links left in the pod netns");
        assert!(
            !self.qdiscs("eth0").contains(&"ingress".to_string()),
            "ingress qdisc left"
        );
        assert_eq!(self.filters("eth0"), Vec::<Value>::new(), "filters left");
        let eth0 = &links[1];
        assert_eq!(eth0["mtu"].as_u64(), Some(MTU));
        assert!(eth0["flags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("UP")));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread inside the named namespace (sockets made there stay there).
fn in_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(PathBuf::from("/run/netns").join(name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Reads one frame (without its virtio-net header) from the tap, waiting until `deadline`.
fn read_frame(tap: BorrowedFd<'_>, deadline: Instant) -> Option<Vec<u8>> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } <= 0 {
        return None;
    }
    let mut buf = vec![0u8; 65536];
    let n = nix::unistd::read(tap, &mut buf).unwrap();
    assert!(
        n >= VNET_HDR_LEN + 14,
        "short frame from the tap: {n} bytes"
    );
    Some(buf[VNET_HDR_LEN..n].to_vec())
}

/// Writes one frame into the tap behind a zeroed virtio-net header (no offloads).
fn write_frame(tap: BorrowedFd<'_>, frame: &[u8]) {
    let mut buf = vec![0u8; VNET_HDR_LEN];
    buf.extend_from_slice(frame);
    assert_eq!(nix::unistd::write(tap, &buf).unwrap(), buf.len());
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request for `POD_IP`: the asker's MAC and IP.
fn arp_request_for_pod(frame: &[u8]) -> Option<([u8; 6], [u8; 4])> {
    let arp = frame.get(14..42)?;
    let is_request = frame[12..14] == [0x08, 0x06] && arp[6..8] == [0, 1];
    (is_request && arp[24..28] == POD_IP.octets()).then(|| {
        (
            arp[8..14].try_into().unwrap(),
            arp[14..18].try_into().unwrap(),
        )
    })
}

fn arp_reply(pod_mac: [u8; 6], asker_mac: [u8; 6], asker_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&asker_mac);
    f.extend_from_slice(&pod_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&pod_mac);
    f.extend_from_slice(&POD_IP.octets());
    f.extend_from_slice(&asker_mac);
    f.extend_from_slice(&asker_ip);
    f
}

/// A UDP datagram to `POD_IP`: (source MAC, source address, destination port, payload).
fn udp_to_pod(frame: &[u8]) -> Option<([u8; 6], SocketAddr, u16, Vec<u8>)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ip[9] != 17 || ip[16..20] != POD_IP.octets() {
        return None;
    }
    let udp = &ip[ihl..];
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let src = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        u16::from_be_bytes([udp[0], udp[1]]),
    );
    Some((
        frame[6..12].try_into().unwrap(),
        src,
        u16::from_be_bytes([udp[2], udp[3]]),
        udp[8..len].to_vec(),
    ))
}

fn udp_reply(
    pod_mac: [u8; 6],
    to_mac: [u8; 6],
    from_port: u16,
    to: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let IpAddr::V4(to_ip) = to.ip() else {
        unreachable!()
    };
    let udp_len = 8 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&POD_IP.octets());
    ip.extend_from_slice(&to_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&from_port.to_be_bytes());
    ip.extend_from_slice(&to.port().to_be_bytes());
    ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    ip.extend_from_slice(payload);
    let mut f = Vec::new();
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&pod_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

/// `b`'s IP stack sends a datagram to the pod IP; the test, playing the guest behind the tap,
/// answers the ARP request and the datagram; `b` receives the answer.
fn frames_cross(scratch: &Scratch, wiring: &Wiring) {
    let tap = wiring.nics[0].fd.as_ref().expect("a tap descriptor");
    frames_cross_tap(scratch, wiring, tap.as_fd());
}

/// [`frames_cross`] through `tap`, the descriptor of the wiring's tap.
fn frames_cross_tap(scratch: &Scratch, wiring: &Wiring, tap: BorrowedFd<'_>) {
    let pod_mac = wiring.nics[0].guest.mac.0;
    let socket = in_ns(&scratch.b, || UdpSocket::bind((PEER_IP, 0)).unwrap());
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(b"hello pod", (POD_IP, 7777)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut saw_arp, mut saw_udp) = (false, false);
    while !saw_udp {
        let frame = read_frame(tap, deadline).expect("no frame from the tap in time");
        if let Some((mac, ip)) = arp_request_for_pod(&frame) {
            write_frame(tap, &arp_reply(pod_mac, mac, ip));
            saw_arp = true;
        } else if let Some((mac, from, port, payload)) = udp_to_pod(&frame) {
            assert_eq!(port, 7777);
            assert_eq!(payload, b"hello pod");
            assert_eq!(from, socket.local_addr().unwrap());
            write_frame(tap, &udp_reply(pod_mac, mac, 7777, from, b"hello peer"));
            saw_udp = true;
        }
        // Anything else (IPv6 neighbour discovery, MLD from b) is not for this test.
    }
    assert!(saw_arp, "the datagram came before any ARP request");
    let mut buf = [0u8; 64];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("the answer did not reach b");
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(from, SocketAddr::from((POD_IP, 7777)));
}

fn check_discovered(scratch: &Scratch, pod: &PodNetwork) {
    assert_eq!(pod.interfaces.len(), 1, "{pod:?}");
    let eth0 = &pod.interfaces[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(u64::from(eth0.mtu), MTU);
    let links = scratch.links(&scratch.a);
    let mac = links.iter().find(|l| l["ifname"] == "eth0").unwrap()["address"].clone();
    assert_eq!(Value::from(eth0.mac.to_string()), mac);
    let addresses: Vec<String> = eth0.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addresses, ["10.99.0.2/24", "fd00:99::2/64"]);
    let routes: Vec<_> = pod.routes.iter().map(|r| r.to_proto()).collect();
    let summary: Vec<(String, String, u32)> = routes
        .iter()
        .map(|r| (r.destination.clone(), r.gateway.clone(), r.scope))
        .collect();
    assert_eq!(
        summary,
        [
            ("192.0.2.0/24".to_string(), String::new(), 253),
            ("default".to_string(), "10.99.0.1".to_string(), 0),
            ("default".to_string(), "fd00:99::1".to_string(), 0),
        ]
    );
    assert!(routes.iter().all(|r| r.device == "eth0"));
}

fn check_wired(scratch: &Scratch, wiring: &Wiring) {
    let nic = &wiring.nics[0];
    assert_eq!(nic.tap_name, "hulltap0");
    let links = scratch.links(&scratch.a);
    let tap = links
        .iter()
        .find(|l| l["ifname"] == "hulltap0")
        .expect("no tap");
    assert_eq!(tap["mtu"].as_u64(), Some(MTU));
    assert!(tap["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("UP")));
    assert_eq!(tap["linkinfo"]["info_kind"], "tun");
    for dev in ["eth0", "hulltap0"] {
        assert!(
            scratch.qdiscs(dev).contains(&"ingress".to_string()),
            "{dev}"
        );
        let filters = scratch.filters(dev);
        assert!(filters
            .iter()
            .all(|f| f["pref"].as_u64() == Some(u64::from(TC_PRIORITY))));
        let ours: Vec<_> = filters
            .iter()
            .filter(|f| f["options"]["actions"].is_array())
            .collect();
        assert_eq!(ours.len(), 1, "{dev}: {filters:?}");
        assert_eq!(ours[0]["kind"], "u32");
        assert_eq!(ours[0]["pref"].as_u64(), Some(u64::from(TC_PRIORITY)));
        let text = ours[0]["options"].to_string();
        let to = if dev == "eth0" { "hulltap0" } else { "eth0" };
        assert!(
            text.contains("mirred") && text.contains(to),
            "{dev}: {text}"
        );
    }
}

#[test]
fn discover_wire_frames_cross_unwire() {
    if !can_run() {
        return;
    }
    let scratch = Scratch::new("w");
    let pod = network::discover(&scratch.path()).unwrap();
    check_discovered(&scratch, &pod);

    let wiring = network::wire(&scratch.path(), &pod).unwrap();
    check_wired(&scratch, &wiring);
    assert_eq!(wiring.routes, pod.routes);
    // Wiring twice is refused and leaves the first wiring as it was.
    let again = network::wire(&scratch.path(), &pod).unwrap_err();
    assert!(
        matches!(again, network::NetworkError::AlreadyWired(ref tap) if tap == "hulltap0"),
        "{again}"
    );
    check_wired(&scratch, &wiring);
    frames_cross(&scratch, &wiring);

    network::unwire(&scratch.path(), &wiring).unwrap();
    network::unwire(&scratch.path(), &wiring).unwrap();
    drop(wiring);
    scratch.assert_clean();

    // With the redirect gone, a's own stack gets b's datagrams again.
    let listener = in_ns(&scratch.a, || UdpSocket::bind((POD_IP, 7777)).unwrap());
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sender = in_ns(&scratch.b, || UdpSocket::bind((PEER_IP, 0)).unwrap());
    sender.send_to(b"direct", (POD_IP, 7777)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = listener.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"direct");
}

#[test]
fn unwire_all_cleans_up_after_a_crash() {
    if !can_run() {
        return;
    }
    let scratch = Scratch::new("c");
    let pod = network::discover(&scratch.path()).unwrap();

    // The shim and the VMM died: the tap went with its last descriptor, our filter and qdisc
    // stay on eth0.
    let wiring = network::wire(&scratch.path(), &pod).unwrap();
    drop(wiring);
    let names: Vec<Value> = scratch
        .links(&scratch.a)
        .iter()
        .map(|l| l["ifname"].clone())
        .collect();
    assert!(!names.contains(&Value::from("hulltap0")), "{names:?}");
    assert!(scratch.qdiscs("eth0").contains(&"ingress".to_string()));
    network::unwire_all(&scratch.path()).unwrap();
    scratch.assert_clean();

    // The shim died, the VMM still holds the tap.
    let wiring = network::wire(&scratch.path(), &pod).unwrap();
    check_wired(&scratch, &wiring);
    network::unwire_all(&scratch.path()).unwrap();
    scratch.assert_clean();
    network::unwire_all(&scratch.path()).unwrap();
    network::unwire(&scratch.path(), &wiring).unwrap();
    drop(wiring);
    scratch.assert_clean();

    // A wiring that fails half-way (the interface vanished after discover) is undone.
    let mut vanished = pod.clone();
    vanished.interfaces[0].index = 999_999;
    let err = network::wire(&scratch.path(), &vanished).unwrap_err();
    assert!(err.to_string().contains("ingress qdisc"), "{err}");
    scratch.assert_clean();

    // A namespace that is gone is clean.
    network::unwire_all(&PathBuf::from("/run/netns/hull-net-no-such-namespace")).unwrap();
}

#[test]
fn a_pre_booted_vms_tap_is_carried_into_the_pod_and_wired() {
    if !can_run() {
        return;
    }
    let scratch = Scratch::new("p");
    let pod = network::discover(&scratch.path()).unwrap();
    // The pool: a namespace of the VM's own with its tap (the VMM holds the descriptor).
    let vm_netns = std::fs::File::from(network::new_netns().unwrap());
    let vm_tap = network::create_detached_tap(&vm_netns, "hulltap0").unwrap();
    let from = PathBuf::from(format!("/proc/self/fd/{}", vm_netns.as_raw_fd()));

    // A pod with two interfaces cannot take a VM with one NIC; nothing moves.
    let mut two = pod.clone();
    two.interfaces.push(two.interfaces[0].clone());
    let err = network::adopt_tap(&from, "hulltap0", &scratch.path(), &two).unwrap_err();
    assert!(err.to_string().contains("one NIC"), "{err}");

    let wiring = network::adopt_tap(&from, "hulltap0", &scratch.path(), &pod).unwrap();
    assert!(
        wiring.nics[0].fd.is_none(),
        "the VMM keeps the only descriptor"
    );
    assert_eq!(wiring.routes, pod.routes);
    check_wired(&scratch, &wiring);
    // The move gave the tap the pod namespace's IPv6 address generation back; it must have no
    // link-local address of its own there (its neighbour discovery would reach the guest).
    let addresses = json(
        "ip",
        &["-n", &scratch.a, "-j", "addr", "show", "dev", "hulltap0"],
    );
    let inet6 = addresses[0]["addr_info"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["family"] == "inet6"));
    assert!(!inet6, "{addresses}");
    frames_cross_tap(&scratch, &wiring, vm_tap.as_fd());
    // The tap left the VM's namespace.
    let again = network::adopt_tap(&from, "hulltap0", &scratch.path(), &pod).unwrap_err();
    assert!(
        matches!(again, network::NetworkError::AlreadyWired(ref tap) if tap == "hulltap0"),
        "{again}"
    );

    network::unwire(&scratch.path(), &wiring).unwrap();
    drop(vm_tap);
    scratch.assert_clean();
}
