//! Tests of the network module. The netlink ones run as root in a scratch network namespace
//! each (`ip netns add hull-agt-<pid>-<n>`, removed on drop even when the test fails), with
//! veth links made by `ip` inside it, and check the result with `ip -j` in that
//! namespace. The host's own interfaces are never touched.

use std::sync::atomic::{AtomicU32, Ordering};

use hull_proto::network::{Interface, IpAddress, IpFamily, Route};
use serde_json::Value;
use ttrpc::Code;

use super::link::{format_mac, parse_mac};
use super::route::describe;
use super::*;

/// A network namespace made for one test, deleted on drop.
struct ScratchNetns {
    name: String,
}

impl ScratchNetns {
    /// None (after printing SKIPPED) when not root on a developer's machine; on CI (`CI` set)
    /// a missing root fails the test.
    fn new() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespace tests need root"
            );
            eprintln!("SKIPPED: network namespace tests need root");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hull-agt-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Some(ScratchNetns { name })
    }

    fn netns(&self) -> Netns {
        Netns::Path(format!("/run/netns/{}", self.name).into())
    }

    /// `ip -n <ns> ARGS`, which must succeed; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A veth `name` (with `mac` when given) whose peer `p-<name>` is up, as a pod's NIC
    /// would be (this host's kernel has no dummy links).
    fn veth(&self, name: &str, mac: Option<&str>) {
        let peer = format!("p-{name}");
        let mut args = vec!["link", "add", name];
        if let Some(mac) = mac {
            args.extend(["address", mac]);
        }
        args.extend(["type", "veth", "peer", "name", &peer]);
        self.ip(&args);
        self.ip(&["link", "set", &peer, "up"]);
    }

    /// `ip -j -n <ns> ARGS` parsed.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j output")
    }

    /// The `ip -j addr show dev NAME` object.
    fn link(&self, name: &str) -> Value {
        self.json(&["addr", "show", "dev", name]).remove(0)
    }

    /// The routes of the main table of `family` ("-4"/"-6") as "DST via GW dev DEV" lines.
    fn routes(&self, family: &str) -> Vec<String> {
        self.json(&[family, "route", "show"])
            .iter()
            .map(|r| {
                let mut line = r["dst"].as_str().unwrap().to_string();
                if let Some(gw) = r["gateway"].as_str() {
                    line.push_str(&format!(" via {gw}"));
                }
                line.push_str(&format!(" dev {}", r["dev"].as_str().unwrap()));
                if let Some(src) = r["prefsrc"].as_str() {
                    line.push_str(&format!(" src {src}"));
                }
                line
            })
            .collect()
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ip addr` entries of a link as "ADDR/PREFIX", without IPv6 link-local ones.
fn addresses(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link" || a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn is_up(link: &Value) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

fn ip(family: IpFamily, address: &str, prefix: u32) -> IpAddress {
    IpAddress {
        family: family.into(),
        address: address.into(),
        prefix_length: prefix,
        ..Default::default()
    }
}

fn interface(name: &str, mac: &str, mtu: u32, addresses: Vec<IpAddress>) -> Interface {
    Interface {
        name: name.into(),
        hw_address: mac.into(),
        mtu,
        addresses,
        ..Default::default()
    }
}

fn route(family: IpFamily, destination: &str, gateway: &str, device: &str) -> Route {
    Route {
        family: family.into(),
        destination: destination.into(),
        gateway: gateway.into(),
        device: device.into(),
        ..Default::default()
    }
}

const V4: IpFamily = IpFamily::IP_FAMILY_V4;
const V6: IpFamily = IpFamily::IP_FAMILY_V6;

#[tokio::test(flavor = "current_thread")]
async fn update_interface_by_mac_renames_sets_mtu_replaces_addresses_and_brings_up() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    ns.veth("tmp0", Some("02:00:00:aa:bb:01"));
    ns.veth("other0", None);
    ns.ip(&["link", "set", "tmp0", "up"]);
    ns.ip(&["addr", "add", "192.168.77.7/24", "dev", "tmp0"]);
    ns.ip(&["addr", "add", "fd00:77::7/64", "dev", "tmp0", "nodad"]);
    ns.ip(&["addr", "add", "192.168.66.6/24", "dev", "other0"]);

    let wanted = interface(
        "eth0",
        "02:00:00:AA:BB:01",
        1400,
        vec![ip(V4, "10.88.0.5", 16), ip(V6, "fd00:88::5", 64)],
    );
    let configured = update_interface(&ns.netns(), &wanted).await.unwrap();

    let eth0 = ns.link("eth0");
    assert_eq!(eth0["address"], "02:00:00:aa:bb:01");
    assert_eq!(eth0["mtu"], 1400);
    assert!(is_up(&eth0), "{eth0}");
    let mut got = addresses(&eth0);
    got.sort();
    assert_eq!(got, ["10.88.0.5/16", "fd00:88::5/64"]);
    let links = ns.json(&["link", "show"]);
    assert!(!links.iter().any(|l| l["ifname"] == "tmp0"), "{links:?}");
    assert_eq!(addresses(&ns.link("other0")), ["192.168.66.6/24"]);

    assert_eq!(configured.name, "eth0");
    assert_eq!(configured.hw_address, "02:00:00:aa:bb:01");
    assert_eq!(configured.mtu, 1400);
    for wanted in &wanted.addresses {
        assert!(
            configured.addresses.contains(wanted),
            "{wanted:?} not in {:?}",
            configured.addresses
        );
    }

    // Again, as a retried request would: nothing to rename, same result.
    let again = update_interface(&ns.netns(), &wanted).await.unwrap();
    assert_eq!(again.name, "eth0");
    let mut got = addresses(&ns.link("eth0"));
    got.sort();
    assert_eq!(got, ["10.88.0.5/16", "fd00:88::5/64"]);
}

#[tokio::test(flavor = "current_thread")]
async fn update_interface_by_name_on_a_veth_keeps_the_mtu_when_zero() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    ns.ip(&[
        "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
    ]);
    ns.ip(&["link", "set", "veth-b", "up"]);
    let wanted = interface("veth-a", "", 0, vec![ip(V4, "10.1.0.2", 24)]);
    let configured = update_interface(&ns.netns(), &wanted).await.unwrap();
    let link = ns.link("veth-a");
    assert!(is_up(&link), "{link}");
    assert_eq!(link["mtu"], 1500);
    assert_eq!(addresses(&link), ["10.1.0.2/24"]);
    assert_eq!(configured.mtu, 1500);
    assert_eq!(configured.hw_address, link["address"].as_str().unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn update_interface_gives_the_link_a_new_mac_and_name() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    // A pre-booted VM's NIC (MAC A, up) taking over a pod's (MAC B).
    ns.veth("tmp0", Some("02:00:00:aa:00:0a"));
    ns.ip(&["link", "set", "tmp0", "up"]);
    let wanted = Interface {
        new_hw_address: "02:00:00:BB:00:0B".into(),
        ..interface(
            "eth-x",
            "02:00:00:aa:00:0a",
            0,
            vec![ip(V4, "10.88.0.9", 16)],
        )
    };
    let configured = update_interface(&ns.netns(), &wanted).await.unwrap();

    let link = ns.link("eth-x");
    assert_eq!(link["address"], "02:00:00:bb:00:0b");
    assert!(is_up(&link), "{link}");
    assert_eq!(addresses(&link), ["10.88.0.9/16"]);
    let links = ns.json(&["link", "show"]);
    assert!(!links.iter().any(|l| l["ifname"] == "tmp0"), "{links:?}");
    assert_eq!(configured.name, "eth-x");
    assert_eq!(configured.hw_address, "02:00:00:bb:00:0b");

    // Retried: no link has MAC A any more; the one with MAC B is it.
    let again = update_interface(&ns.netns(), &wanted).await.unwrap();
    assert_eq!(again.name, "eth-x");
    assert_eq!(again.hw_address, "02:00:00:bb:00:0b");

    // Another MAC for the link, up and already named: it is taken down for the change and
    // comes up again.
    let by_name = Interface {
        new_hw_address: "02:00:00:cc:00:0c".into(),
        ..interface("eth-x", "", 0, vec![ip(V4, "10.88.0.9", 16)])
    };
    let configured = update_interface(&ns.netns(), &by_name).await.unwrap();
    let link = ns.link("eth-x");
    assert_eq!(link["address"], "02:00:00:cc:00:0c");
    assert!(is_up(&link), "{link}");
    assert_eq!(configured.hw_address, "02:00:00:cc:00:0c");
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_link_is_not_found_and_named() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    let by_name = interface("nope0", "", 0, vec![]);
    let err = update_interface(&ns.netns(), &by_name).await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
    assert!(err.to_string().contains("nope0"), "{err}");

    let by_mac = interface("eth0", "02:00:00:00:00:99", 0, vec![]);
    let err = update_interface(&ns.netns(), &by_mac).await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
    assert!(err.to_string().contains("02:00:00:00:00:99"), "{err}");

    let routes = [route(V4, "10.0.0.0/8", "", "nope1")];
    let err = update_routes(&ns.netns(), &routes).await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
    assert!(err.to_string().contains("nope1"), "{err}");
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");

    let err = set_link_up(&ns.netns(), "nope2").await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
}

/// eth0 (10.88.0.5/16, fd00:88::5/64, up) and other0 (192.168.66.6/24 with a route).
async fn pod_like(ns: &ScratchNetns) {
    ns.veth("eth0", None);
    ns.veth("other0", None);
    ns.ip(&["link", "set", "other0", "up"]);
    ns.ip(&["addr", "add", "192.168.66.6/24", "dev", "other0"]);
    ns.ip(&["route", "add", "198.51.100.0/24", "via", "192.168.66.1"]);
    let eth0 = interface(
        "eth0",
        "",
        0,
        vec![ip(V4, "10.88.0.5", 16), ip(V6, "fd00:88::5", 64)],
    );
    update_interface(&ns.netns(), &eth0).await.unwrap();
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "eth0"]);
}

#[tokio::test(flavor = "current_thread")]
async fn update_routes_installs_link_gateway_default_and_v6_routes() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    pod_like(&ns).await;
    let mut via_src = route(V4, "10.99.0.0/16", "10.88.0.1", "eth0");
    via_src.source = "10.88.0.5".into();
    // The default route's gateway is only reachable through the link route after it.
    let wanted = vec![
        route(V4, "default", "172.16.0.1", "eth0"),
        route(V4, "172.16.0.0/24", "", "eth0"),
        via_src,
        route(V6, "default", "fd00:88::1", "eth0"),
        route(V6, "fd00:99::/64", "", "eth0"),
    ];
    let installed = update_routes(&ns.netns(), &wanted).await.unwrap();

    let v4 = ns.routes("-4");
    for line in [
        "default via 172.16.0.1 dev eth0",
        "172.16.0.0/24 dev eth0",
        "10.99.0.0/16 via 10.88.0.1 dev eth0 src 10.88.0.5",
        // Kept: the kernel's subnet route and another interface's route.
        "10.88.0.0/16 dev eth0 src 10.88.0.5",
        "198.51.100.0/24 via 192.168.66.1 dev other0",
    ] {
        assert!(v4.iter().any(|l| l == line), "{line:?} not in {v4:#?}");
    }
    assert!(!v4.iter().any(|l| l.starts_with("192.0.2.0/24")), "{v4:#?}");
    let link_route = &ns.json(&["-4", "route", "show", "172.16.0.0/24"])[0];
    assert_eq!(link_route["scope"], "link", "{link_route}");
    let v6 = ns.routes("-6");
    for line in ["default via fd00:88::1 dev eth0", "fd00:99::/64 dev eth0"] {
        assert!(v6.iter().any(|l| l == line), "{line:?} not in {v6:#?}");
    }

    let described: Vec<String> = installed.iter().map(describe).collect();
    for wanted in &wanted {
        assert!(
            described.contains(&describe(wanted)),
            "{} not in {described:#?}",
            describe(wanted)
        );
    }
    assert!(
        installed.iter().all(|r| r.device == "eth0"),
        "{described:#?}"
    );

    // A second table replaces the first on eth0.
    let second = [route(V4, "10.77.0.0/16", "10.88.0.1", "eth0")];
    let installed = update_routes(&ns.netns(), &second).await.unwrap();
    let v4 = ns.routes("-4");
    assert!(
        v4.contains(&"10.77.0.0/16 via 10.88.0.1 dev eth0".to_string()),
        "{v4:#?}"
    );
    assert!(!v4.iter().any(|l| l.starts_with("default")), "{v4:#?}");
    assert!(!v4.iter().any(|l| l.starts_with("10.99.")), "{v4:#?}");
    assert!(v4.iter().any(|l| l.starts_with("10.88.0.0/16")), "{v4:#?}");
    assert!(
        v4.iter().any(|l| l.starts_with("198.51.100.0/24")),
        "{v4:#?}"
    );
    let v6 = ns.routes("-6");
    assert!(!v6.iter().any(|l| l.starts_with("default")), "{v6:#?}");
    assert_eq!(installed.len(), 1, "{installed:#?}");
    assert_eq!(
        describe(&installed[0]),
        "10.77.0.0/16 via 10.88.0.1 dev eth0"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_kernel_refusal_names_the_route_and_the_errno() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    pod_like(&ns).await;
    let unreachable = [route(V4, "default", "203.0.113.1", "eth0")];
    let err = update_routes(&ns.netns(), &unreachable).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT, "{text}");
    assert!(text.contains("routes[0]"), "{text}");
    assert!(text.contains("default via 203.0.113.1 dev eth0"), "{text}");
    assert!(text.contains("unreachable"), "{text}");

    // A name another link has already.
    let clash = interface("other0", "", 0, vec![]);
    ns.veth("new0", Some("02:00:00:00:00:42"));
    let by_mac = Interface {
        hw_address: "02:00:00:00:00:42".into(),
        ..clash
    };
    let err = update_interface(&ns.netns(), &by_mac).await.unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT, "{err}");
    assert!(err.to_string().contains("renaming new0 to other0"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn list_interfaces_reports_every_link() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    pod_like(&ns).await;
    ns.ip(&[
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:00:05",
        "mtu",
        "1450",
    ]);
    let listed = list_interfaces(&ns.netns()).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "p-eth0", "eth0", "p-other0", "other0"]);
    let eth0 = &listed[2];
    assert_eq!(eth0.hw_address, "02:00:00:00:00:05");
    assert_eq!(eth0.mtu, 1450);
    for wanted in [ip(V4, "10.88.0.5", 16), ip(V6, "fd00:88::5", 64)] {
        assert!(eth0.addresses.contains(&wanted), "{eth0:?}");
    }
    let shown = ns.json(&["addr", "show"]);
    for (interface, link) in listed.iter().zip(&shown) {
        assert_eq!(interface.name, link["ifname"].as_str().unwrap());
        assert_eq!(interface.hw_address, link["address"].as_str().unwrap());
        assert_eq!(u64::from(interface.mtu), link["mtu"].as_u64().unwrap());
        assert_eq!(
            interface.addresses.len(),
            link["addr_info"].as_array().unwrap().len(),
            "{interface:?} vs {link}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn set_link_up_brings_loopback_up() {
    let Some(ns) = ScratchNetns::new() else {
        return;
    };
    assert!(!is_up(&ns.link("lo")));
    set_link_up(&ns.netns(), "lo").await.unwrap();
    let lo = ns.link("lo");
    assert!(is_up(&lo), "{lo}");
    assert!(addresses(&lo).contains(&"127.0.0.1/8".to_string()), "{lo}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_namespace_is_a_socket_error() {
    let Err(err) = Netlink::open(&Netns::Path("/nonexistent/netns".into())) else {
        panic!("opened a socket in a missing namespace");
    };
    assert_eq!(err.code(), Code::INTERNAL);
    assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
}

#[test]
fn macs_parse_and_format() {
    assert_eq!(
        parse_mac("02:00:0A:bb:cc:ff"),
        Some([2, 0, 0x0a, 0xbb, 0xcc, 0xff])
    );
    for bad in [
        "",
        "02:00:0a:bb:cc",
        "02:00:0a:bb:cc:ff:00",
        "+2:00:0a:bb:cc:ff",
        "0200:0a:bb:cc:ff",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
    assert_eq!(
        format_mac(&[2, 0, 0x0a, 0xbb, 0xcc, 0xff]),
        "02:00:0a:bb:cc:ff"
    );
    assert_eq!(format_mac(&[]), "");
}

#[test]
fn kernel_errnos_map_to_status_codes() {
    let kernel = |errno| NetError::Kernel {
        what: "x".into(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    assert_eq!(kernel(libc::ENETUNREACH).code(), Code::INVALID_ARGUMENT);
    assert_eq!(kernel(libc::EEXIST).code(), Code::INVALID_ARGUMENT);
    assert_eq!(kernel(libc::ENODEV).code(), Code::NOT_FOUND);
    assert_eq!(kernel(libc::EPERM).code(), Code::INTERNAL);
    assert!(kernel(libc::ENETUNREACH)
        .to_string()
        .starts_with("x: Network is unreachable"));
    let missing = NetError::NotFound {
        what: "interface eth9".into(),
    };
    assert_eq!(missing.code(), Code::NOT_FOUND);
}
