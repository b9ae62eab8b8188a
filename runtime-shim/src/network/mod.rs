//! Pod network wiring: carries the interfaces that CNI put into a pod's network namespace on
//! the host into the pod's microVM.
//!
//! containerd's CRI runs the CNI plugin, which leaves a veth (or macvlan, ipvlan, ...) with the
//! pod IP, routes and MTU in a network namespace on the host. The pod itself runs in a VM, so
//! for each such interface we:
//!
//! 1. [`discover`] it: name, MAC, MTU, addresses and the main-table routes through it;
//! 2. [`wire`] it: create a tap `hulltap<n>` beside it in the same namespace, and connect the
//!    two with an `ingress` qdisc on each and a match-everything `u32` filter whose `mirred
//!    egress redirect` action moves every frame that enters one device out of the other. The namespace's own IP
//!    stack never sees a frame: the veth is only a pipe end. The guest NIC gets the veth's MAC
//!    (so ARP/NDP answers for the pod IP carry the MAC the peer already expects) and MTU, and
//!    the guest agent gets the addresses and routes ([`Interface::to_proto`],
//!    [`Route::to_proto`]);
//! 3. [`unwire`] it on teardown, or [`unwire_all`] after a crash: taps with our prefix are
//!    deleted, and our filter (priority [`TC_PRIORITY`]) and the then-empty ingress qdisc are
//!    removed from the CNI interfaces.
//!
//! Everything goes through NETLINK_ROUTE from a thread that has `setns`ed into the pod's
//! namespace (sockets and taps belong to the namespace they were created in); no `ip` or `tc`
//! binaries run. The functions block (a few netlink round trips each): call them from
//! `tokio::task::spawn_blocking` in async code.
//!
//! The taps are not persistent: a tap lives while a descriptor of it is open (the one in
//! [`TapNic::fd`], and hull-vmm's inherited copy), so a crash of both leaves only our filter and
//! qdisc on the veth, which [`unwire_all`] removes.

mod discover;
mod netlink;
mod tap;
mod tc;

use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use hull_proto::network as proto;

pub use tap::VNET_HDR_LEN;

/// Name prefix of the taps we create (`hulltap0`, `hulltap1`, ...); [`unwire_all`] deletes
/// every tap whose name starts with it.
pub const TAP_PREFIX: &str = "hulltap";

/// Priority of our tc filters, which marks them as ours.
pub const TC_PRIORITY: u16 = 0x4855;

/// A failed network operation.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The network namespace could not be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("{action}: {source}")]
    Netlink {
        /// What was being done.
        action: String,
        /// The error (the kernel's errno for a NACK).
        source: io::Error,
    },
    /// A tap could not be created or configured.
    #[error("tap {name}: {source}")]
    Tap {
        /// The tap name.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The namespace already has a tap of ours (a live wiring, or a crashed one that
    /// [`unwire_all`] clears).
    #[error(
        "network namespace already wired: tap {0} exists (unwire_all clears a crashed wiring)"
    )]
    AlreadyWired(String),
    /// The namespace thread panicked.
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An address with its prefix length, e.g. 10.88.0.5/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix_len: u8,
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An interface CNI made, as the guest should see it (maps onto the agent's `Interface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name in the pod netns, also the guest interface name (e.g. `eth0`).
    pub name: String,
    /// Interface index in the pod netns (host side only; not sent to the guest).
    pub index: u32,
    /// MAC address, which the guest NIC takes over.
    pub mac: MacAddr,
    /// MTU, which the tap and the guest NIC take over.
    pub mtu: u32,
    /// Addresses (IPv6 link-local ones left out: the guest makes its own from the same MAC).
    pub addresses: Vec<IpNet>,
}

/// A route through one of the pod's interfaces (maps onto the agent's `Route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; `None` for a default route.
    pub destination: Option<IpNet>,
    /// Next hop; `None` for a directly connected route.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface name.
    pub device: String,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Scope as in `ip route` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Whether this is an IPv6 route.
    pub ipv6: bool,
}

/// What CNI configured in a pod's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetwork {
    /// The interfaces to carry into the guest, in index order.
    pub interfaces: Vec<Interface>,
    /// Their main-table routes, link-scope ones first and default ones last (so that each
    /// gateway is reachable when its route is added in order). Routes the guest kernel makes
    /// itself from the addresses (protocol `kernel`) are left out.
    pub routes: Vec<Route>,
}

/// One interface wired to a tap.
#[derive(Debug)]
pub struct TapNic {
    /// Name of the tap in the pod netns.
    pub tap_name: String,
    /// The tap's descriptor (opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, vnet header
    /// size [`VNET_HDR_LEN`], blocking, close-on-exec): hand it to hull-vmm as an inherited fd
    /// (`--net fd=N,mac=MAC,mtu=MTU`, see [`TapNic::vmm_net_arg`]). The VMM sets offloads and
    /// `O_NONBLOCK` itself. `None` for a tap a running VMM already holds ([`adopt_tap`]).
    pub fd: Option<OwnedFd>,
    /// The guest side: name, MAC and MTU for the guest NIC, and the addresses.
    pub guest: Interface,
}

impl TapNic {
    /// hull-vmm's `--net` value for this NIC once the tap is the VMM's descriptor `fd`.
    pub fn vmm_net_arg(&self, fd: RawFd) -> String {
        format!("fd={fd},mac={},mtu={}", self.guest.mac, self.guest.mtu)
    }
}

/// The wiring of one pod: a tap per interface, and the routes for the guest.
#[derive(Debug)]
pub struct Wiring {
    /// The NICs, in the order of [`PodNetwork::interfaces`].
    pub nics: Vec<TapNic>,
    /// The routes for the guest agent.
    pub routes: Vec<Route>,
}

/// Lists the interfaces CNI put into the network namespace `netns` (a path such as
/// `/var/run/netns/cni-<uuid>`) and their routes. Loopback, taps and non-Ethernet devices are
/// left out.
pub fn discover(netns: &Path) -> Result<PodNetwork, NetworkError> {
    in_netns(netns, || {
        let mut nl = netlink::Netlink::open()?;
        discover::discover(&mut nl)
    })
}

/// Creates a tap for each interface of `network` in `netns` and redirects frames both ways
/// between the two. On failure what was made is removed again.
pub fn wire(netns: &Path, network: &PodNetwork) -> Result<Wiring, NetworkError> {
    in_netns(netns, || {
        let mut nl = netlink::Netlink::open()?;
        tc::wire(&mut nl, network)
    })
}

/// Removes what [`wire`] made for `wiring` (its taps, our filters and the ingress qdiscs left
/// empty on its interfaces). Idempotent; the descriptors in `wiring` are left for the caller
/// to drop.
pub fn unwire(netns: &Path, wiring: &Wiring) -> Result<(), NetworkError> {
    let taps: Vec<String> = wiring.nics.iter().map(|n| n.tap_name.clone()).collect();
    let links: Vec<u32> = wiring.nics.iter().map(|n| n.guest.index).collect();
    in_netns(netns, || {
        let mut nl = netlink::Netlink::open()?;
        tc::cleanup(&mut nl, Some((&taps, &links)))
    })
}

/// Removes every tap named `hulltap*`, every filter of ours and the ingress qdiscs that
/// become empty in `netns`, whatever made them (the crash-safe form of [`unwire`], for the
/// shim's `delete`). Idempotent. A namespace that no longer exists is already clean.
pub fn unwire_all(netns: &Path) -> Result<(), NetworkError> {
    if !netns.exists() {
        return Ok(());
    }
    in_netns(netns, || {
        let mut nl = netlink::Netlink::open()?;
        tc::cleanup(&mut nl, None)
    })
}

/// Makes a new network namespace with nothing in it but a down loopback, and returns a
/// descriptor of it (it lives while the descriptor, or a process in it, does).
pub fn new_netns() -> Result<OwnedFd, NetworkError> {
    let label = PathBuf::from("(new network namespace)");
    let err = |source: io::Error| NetworkError::Netns {
        path: label.clone(),
        source,
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("hull-netns".into())
            .spawn_scoped(scope, || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| err(e.into()))?;
                File::open("/proc/thread-self/ns/net")
                    .map(OwnedFd::from)
                    .map_err(err)
            })
            .map_err(err)?
            .join()
            .map_err(|_| NetworkError::Panicked(label.clone()))?
    })
}

/// Creates the tap `name` (down, without IPv6 link-local addressing) in the namespace `netns`
/// and returns its descriptor: the NIC of a VM booted before its pod's network exists
/// ([`adopt_tap`] carries it into the pod's namespace later).
pub fn create_detached_tap(netns: &File, name: &str) -> Result<OwnedFd, NetworkError> {
    in_netns_file(netns, Path::new("(detached tap namespace)"), || {
        let fd = tap::open_tap(name).map_err(|source| NetworkError::Tap {
            name: name.to_string(),
            source,
        })?;
        let mut nl = netlink::Netlink::open()?;
        let index = tc::tap_index(&mut nl, name)?;
        tc::quiet_tap(&mut nl, index, name);
        Ok(fd)
    })
}

/// Carries the tap `tap` of a running VM from the namespace `from` (the VMM's) into the pod's
/// namespace `netns` and wires the pod's one interface to it, as [`wire`] does with a new tap.
/// The pod must have exactly one interface (a VM booted with one NIC can carry no more).
pub fn adopt_tap(
    from: &Path,
    tap: &str,
    netns: &Path,
    network: &PodNetwork,
) -> Result<Wiring, NetworkError> {
    let [interface] = network.interfaces.as_slice() else {
        return Err(NetworkError::Tap {
            name: tap.to_string(),
            source: io::Error::other(format!(
                "a pre-booted VM has one NIC, the pod has {} interfaces",
                network.interfaces.len()
            )),
        });
    };
    let pod = File::open(netns).map_err(|source| NetworkError::Netns {
        path: netns.to_path_buf(),
        source,
    })?;
    in_netns(
        netns,
        || tc::refuse_if_wired(&mut netlink::Netlink::open()?),
    )?;
    in_netns(from, || {
        let mut nl = netlink::Netlink::open()?;
        tc::move_link(&mut nl, tap, pod.as_fd())
    })?;
    let nic = in_netns(netns, || {
        let mut nl = netlink::Netlink::open()?;
        let wired = tc::wire_existing(&mut nl, interface, tap);
        if wired.is_err() {
            let undo = tc::cleanup(&mut nl, Some((&[tap.to_string()], &[interface.index])));
            if let Err(undo) = undo {
                tracing::warn!(error = %undo, "undoing a failed adoption");
            }
        }
        wired
    })?;
    Ok(Wiring {
        nics: vec![nic],
        routes: network.routes.clone(),
    })
}

/// Runs `f` on a new thread that has entered the network namespace at `netns`.
fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, NetworkError> + Send,
) -> Result<T, NetworkError> {
    let file = File::open(netns).map_err(|source| NetworkError::Netns {
        path: netns.to_path_buf(),
        source,
    })?;
    in_netns_file(&file, netns, f)
}

/// Runs `f` on a new thread that has entered the network namespace `netns` (named `label` in
/// errors).
fn in_netns_file<T: Send>(
    netns: &File,
    label: &Path,
    f: impl FnOnce() -> Result<T, NetworkError> + Send,
) -> Result<T, NetworkError> {
    let netns_err = |source| NetworkError::Netns {
        path: label.to_path_buf(),
        source,
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("hull-netns".into())
            .spawn_scoped(scope, || {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(e.into()))?;
                f()
            })
            .map_err(netns_err)?;
        thread
            .join()
            .map_err(|_| NetworkError::Panicked(label.to_path_buf()))?
    })
}

fn family(ipv6: bool) -> proto::IpFamily {
    if ipv6 {
        proto::IpFamily::IP_FAMILY_V6
    } else {
        proto::IpFamily::IP_FAMILY_V4
    }
}

impl IpNet {
    /// The agent API's `IpAddress`.
    pub fn to_proto(&self) -> proto::IpAddress {
        proto::IpAddress {
            family: family(self.addr.is_ipv6()).into(),
            address: self.addr.to_string(),
            prefix_length: self.prefix_len.into(),
            ..Default::default()
        }
    }
}

impl Interface {
    /// The agent API's `Interface` (for UpdateInterface).
    pub fn to_proto(&self) -> proto::Interface {
        proto::Interface {
            name: self.name.clone(),
            hw_address: self.mac.to_string(),
            mtu: self.mtu,
            addresses: self.addresses.iter().map(IpNet::to_proto).collect(),
            ..Default::default()
        }
    }
}

impl Route {
    /// The agent API's `Route` (for UpdateRoutes).
    pub fn to_proto(&self) -> proto::Route {
        let text = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        proto::Route {
            destination: self
                .destination
                .map_or_else(|| "default".to_string(), |d| d.to_string()),
            gateway: text(self.gateway),
            device: self.device.clone(),
            source: text(self.source),
            scope: self.scope.into(),
            family: family(self.ipv6).into(),
            ..Default::default()
        }
    }
}

impl PodNetwork {
    /// The agent API's interfaces and routes.
    pub fn to_proto(&self) -> (Vec<proto::Interface>, Vec<proto::Route>) {
        (
            self.interfaces.iter().map(Interface::to_proto).collect(),
            self.routes.iter().map(Route::to_proto).collect(),
        )
    }
}

#[cfg(test)]
mod tests;
