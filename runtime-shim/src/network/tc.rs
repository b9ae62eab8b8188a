//! The tap wiring: taps, ingress qdiscs and match-everything `u32` filters with a `mirred
//! egress redirect` action between each CNI interface and its tap, and their removal.
//!
//! `u32` with one zero key (mask 0) rather than `matchall`: kernels built without
//! CONFIG_NET_CLS_MATCHALL exist (this project's CI host is one), while `u32` is everywhere.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::discover::{links, LinkFacts};
use super::netlink::Netlink;
use super::tap::open_tap;
use super::{Interface, NetworkError, PodNetwork, TapNic, Wiring, TAP_PREFIX, TC_PRIORITY};

/// The ingress qdisc's handle (`ffff:`) and its parent (`ffff:fff1`).
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The parent of filters on the ingress hook (`ffff:fff2`, for `ingress` and `clsact`).
const INGRESS_FILTER_PARENT: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_INGRESS,
};
/// `ETH_P_ALL` in network byte order, as tc's `protocol all`.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();

/// `tcm_info` of our filters: priority in the upper half, protocol in the lower.
pub(super) fn filter_info() -> u32 {
    (u32::from(TC_PRIORITY) << 16) | u32::from(PROTOCOL_ALL)
}

/// The name of the `n`th tap.
pub(super) fn tap_name(n: usize) -> String {
    format!("{TAP_PREFIX}{n}")
}

/// Refuses a namespace that already has a tap of ours: it belongs to a live wiring or a crashed
/// one, either way not ours to take over or (when undoing a failure) to delete.
pub(super) fn refuse_if_wired(nl: &mut Netlink) -> Result<(), NetworkError> {
    match links(nl)?.into_iter().find(LinkFacts::ours) {
        Some(tap) => Err(NetworkError::AlreadyWired(tap.name)),
        None => Ok(()),
    }
}

pub(super) fn wire(nl: &mut Netlink, network: &PodNetwork) -> Result<Wiring, NetworkError> {
    refuse_if_wired(nl)?;
    let mut nics = Vec::new();
    for (n, interface) in network.interfaces.iter().enumerate() {
        match wire_one(nl, interface, tap_name(n)) {
            Ok(nic) => nics.push(nic),
            Err(e) => {
                let mut taps: Vec<String> =
                    nics.iter().map(|n: &TapNic| n.tap_name.clone()).collect();
                taps.push(tap_name(n));
                let mut indexes: Vec<u32> = nics.iter().map(|n| n.guest.index).collect();
                indexes.push(interface.index);
                if let Err(undo) = cleanup(nl, Some((&taps, &indexes))) {
                    tracing::warn!(error = %undo, "undoing a failed wiring");
                }
                return Err(e);
            }
        }
    }
    Ok(Wiring {
        nics,
        routes: network.routes.clone(),
    })
}

fn wire_one(nl: &mut Netlink, interface: &Interface, tap: String) -> Result<TapNic, NetworkError> {
    let fd = open_tap(&tap).map_err(|source| NetworkError::Tap {
        name: tap.clone(),
        source,
    })?;
    let tap_index = tap_index(nl, &tap)?;
    quiet_tap(nl, tap_index, &tap);
    connect(nl, interface, &tap, tap_index)?;
    Ok(TapNic {
        tap_name: tap,
        fd: Some(fd),
        guest: interface.clone(),
    })
}

/// Wires `interface` to the tap `tap` that is already in this namespace (a pre-booted VM's,
/// moved here); the tap's descriptor stays with its VMM.
pub(super) fn wire_existing(
    nl: &mut Netlink,
    interface: &Interface,
    tap: &str,
) -> Result<TapNic, NetworkError> {
    let index = tap_index(nl, tap)?;
    // A link moved into another namespace gets that namespace's IPv6 address generation back.
    quiet_tap(nl, index, tap);
    connect(nl, interface, tap, index)?;
    Ok(TapNic {
        tap_name: tap.to_string(),
        fd: None,
        guest: interface.clone(),
    })
}

/// The index of the tap `tap` in this namespace.
pub(super) fn tap_index(nl: &mut Netlink, tap: &str) -> Result<u32, NetworkError> {
    links(nl)?
        .into_iter()
        .find(|l| l.name == tap && l.tun)
        .map(|l| l.index)
        .ok_or_else(|| NetworkError::Tap {
            name: tap.to_string(),
            source: std::io::Error::other("not in this network namespace"),
        })
}

/// No IPv6 link-local address on the tap: its own neighbour discovery would reach the guest.
pub(super) fn quiet_tap(nl: &mut Netlink, tap_index: u32, tap: &str) {
    let mut quiet = LinkMessage::default();
    quiet.header.index = tap_index;
    quiet
        .attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    if let Err(e) = nl.request(RouteNetlinkMessage::SetLink(quiet), 0, || {
        format!("set addrgenmode none on {tap}")
    }) {
        tracing::debug!(error = %e, "tap keeps IPv6 link-local addressing");
    }
}

/// Sets the tap's MTU to the interface's, brings it up and redirects frames both ways.
fn connect(
    nl: &mut Netlink,
    interface: &Interface,
    tap: &str,
    tap_index: u32,
) -> Result<(), NetworkError> {
    let mut up = LinkMessage::default();
    up.header.index = tap_index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    up.attributes.push(LinkAttribute::Mtu(interface.mtu));
    nl.request(RouteNetlinkMessage::SetLink(up), 0, || {
        format!("set MTU {} and up on {tap}", interface.mtu)
    })?;

    for (index, name) in [(interface.index, interface.name.as_str()), (tap_index, tap)] {
        add_ingress_qdisc(nl, index, name)?;
    }
    add_redirect(nl, interface.index, tap_index, || {
        format!("redirect {} ingress to {tap}", interface.name)
    })?;
    add_redirect(nl, tap_index, interface.index, || {
        format!("redirect {tap} ingress to {}", interface.name)
    })?;
    tracing::info!(
        interface = %interface.name,
        tap = %tap,
        mac = %interface.mac,
        mtu = interface.mtu,
        "pod interface wired to a tap"
    );
    Ok(())
}

/// Moves the link `name` of this namespace into the namespace `to`.
pub(super) fn move_link(
    nl: &mut Netlink,
    name: &str,
    to: std::os::fd::BorrowedFd<'_>,
) -> Result<(), NetworkError> {
    use std::os::fd::AsRawFd;
    let index = tap_index(nl, name)?;
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::NetNsFd(to.as_raw_fd()));
    nl.request(RouteNetlinkMessage::SetLink(message), 0, || {
        format!("move {name} into the pod's network namespace")
    })
}

/// Adds an ingress qdisc; one that is already there (ours from before, or another's) is used
/// as it is.
fn add_ingress_qdisc(nl: &mut Netlink, index: u32, name: &str) -> Result<(), NetworkError> {
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = TcHandle::INGRESS;
    message.header.handle = INGRESS_HANDLE;
    message.attributes.push(TcAttribute::Kind("ingress".into()));
    let existed = nl.request_tolerating(
        RouteNetlinkMessage::NewQueueDiscipline(message),
        NLM_F_CREATE | NLM_F_EXCL,
        &[libc::EEXIST],
        || format!("add an ingress qdisc on {name}"),
    )?;
    if existed {
        tracing::info!(
            interface = name,
            "an ingress qdisc was already there; adding to it"
        );
    }
    Ok(())
}

/// A filter message (without kind or options) at our priority on `index`'s ingress.
fn filter_message(index: u32) -> TcMessage {
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = INGRESS_FILTER_PARENT;
    message.header.info = filter_info();
    message
}

/// `tc filter add dev <from> ingress prio TC_PRIORITY protocol all u32 match u32 0 0 action
/// mirred egress redirect dev <to>`.
fn add_redirect(
    nl: &mut Netlink,
    from: u32,
    to: u32,
    action: impl FnOnce() -> String,
) -> Result<(), NetworkError> {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut redirect = TcAction::default();
    redirect.tab = 1;
    redirect.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    let mut everything = TcU32Selector::default();
    everything.flags = TcU32SelectorFlags::Terminal;
    everything.nkeys = 1;
    everything.keys = vec![TcU32Key::default()];
    let mut message = filter_message(from);
    message.attributes = vec![
        TcAttribute::Kind(TcFilterU32::KIND.into()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(everything)),
            TcOption::U32(TcFilterU32Option::Action(vec![redirect])),
        ]),
    ];
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(message),
        NLM_F_CREATE | NLM_F_EXCL,
        action,
    )
}

/// Removes our taps and filters: those named in `only` (tap names, interface indexes), or all
/// of them in the namespace for `None`. An ingress qdisc on a CNI interface that has no
/// filter left is removed too. What is already gone is skipped.
pub(super) fn cleanup(
    nl: &mut Netlink,
    only: Option<(&[String], &[u32])>,
) -> Result<(), NetworkError> {
    let all = links(nl)?;
    for link in all.iter().filter(|l| l.ours()) {
        if only.is_some_and(|(taps, _)| !taps.contains(&link.name)) {
            continue;
        }
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        nl.request_tolerating(
            RouteNetlinkMessage::DelLink(message),
            0,
            &[libc::ENODEV],
            || format!("delete tap {}", link.name),
        )?;
        tracing::info!(tap = %link.name, "tap deleted");
    }
    for link in all.iter().filter(|l| l.carried()) {
        if only.is_some_and(|(_, indexes)| !indexes.contains(&link.index)) {
            continue;
        }
        unredirect(nl, link)?;
    }
    Ok(())
}

/// Removes our filter from `link`'s ingress, and the ingress qdisc if no filter is left on it.
fn unredirect(nl: &mut Netlink, link: &LinkFacts) -> Result<(), NetworkError> {
    let ingress_qdisc = nl
        .dump(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(link.index as i32)),
            || "list qdiscs".into(),
        )?
        .into_iter()
        .any(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) => {
                q.header.index == link.index as i32
                    && q.header.parent == TcHandle::INGRESS
                    && q.attributes.contains(&TcAttribute::Kind("ingress".into()))
            }
            _ => false,
        });
    let filters = nl.dump(
        RouteNetlinkMessage::GetTrafficFilter(filter_message(link.index)),
        || format!("list ingress filters of {}", link.name),
    )?;
    let mut others = 0;
    let mut ours = false;
    for filter in &filters {
        let RouteNetlinkMessage::NewTrafficFilter(f) = filter else {
            continue;
        };
        if f.header.index != link.index as i32 {
            continue;
        }
        if (f.header.info >> 16) as u16 == TC_PRIORITY {
            ours = true;
        } else {
            others += 1;
        }
    }
    if ours {
        // Handle 0 with a priority: the whole filter instance at that priority goes.
        nl.request_tolerating(
            RouteNetlinkMessage::DelTrafficFilter(filter_message(link.index)),
            0,
            &[libc::ENOENT],
            || format!("delete our ingress filter on {}", link.name),
        )?;
        tracing::info!(interface = %link.name, "tap redirect removed");
    }
    if ingress_qdisc && others == 0 {
        let mut message = TcMessage::with_index(link.index as i32);
        message.header.parent = TcHandle::INGRESS;
        message.header.handle = INGRESS_HANDLE;
        nl.request_tolerating(
            RouteNetlinkMessage::DelQueueDiscipline(message),
            0,
            &[libc::ENOENT, libc::EINVAL],
            || format!("delete the ingress qdisc of {}", link.name),
        )?;
    }
    Ok(())
}
