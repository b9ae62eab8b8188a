//! Reading what CNI configured: links, addresses and routes of the pod's network namespace.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;
use super::{Interface, IpNet, MacAddr, NetworkError, PodNetwork, Route, TAP_PREFIX};

/// The facts about one link that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkFacts {
    pub index: u32,
    pub name: String,
    pub ether: bool,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Whether `IFLA_INFO_KIND` is `tun` (a tun or tap device).
    pub tun: bool,
}

impl LinkFacts {
    pub(super) fn from_message(link: &LinkMessage) -> Self {
        let mut facts = LinkFacts {
            index: link.header.index,
            name: String::new(),
            ether: link.header.link_layer_type == LinkLayerType::Ether,
            mac: None,
            mtu: 0,
            tun: false,
        };
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(name) => facts.name = name.clone(),
                LinkAttribute::Mtu(mtu) => facts.mtu = *mtu,
                LinkAttribute::Address(mac) => {
                    facts.mac = <[u8; 6]>::try_from(&mac[..]).ok().map(MacAddr)
                }
                LinkAttribute::LinkInfo(infos) => {
                    facts.tun = infos
                        .iter()
                        .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Tun)));
                }
                _ => {}
            }
        }
        facts
    }

    /// Whether this is one of our taps.
    pub(super) fn ours(&self) -> bool {
        self.tun && self.name.starts_with(TAP_PREFIX)
    }

    /// Whether this is an interface to carry into the guest: an Ethernet device with a MAC
    /// that is not a tun/tap (so not loopback, tunnels, or our own taps).
    pub(super) fn carried(&self) -> bool {
        self.ether && !self.tun && self.mac.is_some() && !self.name.starts_with(TAP_PREFIX)
    }
}

/// Every link of the namespace.
pub(super) fn links(nl: &mut Netlink) -> Result<Vec<LinkFacts>, NetworkError> {
    let messages = nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
        "list links".into()
    })?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(LinkFacts::from_message(link)),
            _ => None,
        })
        .collect())
}

pub(super) fn discover(nl: &mut Netlink) -> Result<PodNetwork, NetworkError> {
    let mut interfaces: Vec<Interface> = links(nl)?
        .into_iter()
        .filter(LinkFacts::carried)
        .map(|link| Interface {
            mac: link.mac.unwrap_or(MacAddr([0; 6])),
            name: link.name,
            index: link.index,
            mtu: link.mtu,
            addresses: Vec::new(),
        })
        .collect();
    interfaces.sort_by_key(|i| i.index);

    let addresses = nl.dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        || "list addresses".into(),
    )?;
    for message in &addresses {
        let RouteNetlinkMessage::NewAddress(address) = message else {
            continue;
        };
        let Some(interface) = interfaces
            .iter_mut()
            .find(|i| i.index == address.header.index)
        else {
            continue;
        };
        if let Some(net) = address_of(address) {
            interface.addresses.push(net);
        }
    }

    let names: HashMap<u32, String> = interfaces
        .iter()
        .map(|i| (i.index, i.name.clone()))
        .collect();
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let messages = nl.dump(RouteNetlinkMessage::GetRoute(request), || {
            format!("list {family:?} routes")
        })?;
        for message in &messages {
            if let RouteNetlinkMessage::NewRoute(route) = message {
                routes.extend(route_of(route, &names));
            }
        }
    }
    order_routes(&mut routes);
    Ok(PodNetwork { interfaces, routes })
}

/// The address of an `RTM_NEWADDR`, unless it is one the guest should not get (IPv6
/// link-local: the guest derives its own from the same MAC).
pub(super) fn address_of(message: &AddressMessage) -> Option<IpNet> {
    let mut address = None;
    let mut local = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a point-to-point
    // link and the same as IFA_LOCAL otherwise (IPv6 sends only IFA_ADDRESS).
    let addr = local.or(address)?;
    if is_ipv6_link_local(addr) {
        return None;
    }
    Some(IpNet {
        addr,
        prefix_len: message.header.prefix_len,
    })
}

fn is_ipv6_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The guest's form of a route, for a unicast main-table route through one of the carried
/// interfaces (`names`: index to name) that the guest kernel does not make by itself.
pub(super) fn route_of(message: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let header = &message.header;
    let ipv6 = match header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if header.kind != RouteType::Unicast || header.protocol == RouteProtocol::Kernel {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut destination, mut gateway, mut source, mut oif) = (None, None, None, None);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::MultiPath(_) => {
                tracing::warn!(?message, "a multipath route is not carried into the guest");
                return None;
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let device = names.get(&oif?)?.clone();
    let destination = match (destination, header.destination_prefix_length) {
        (_, 0) => None,
        (Some(addr), prefix_len) if !is_ipv6_link_local(addr) => Some(IpNet { addr, prefix_len }),
        _ => return None,
    };
    Some(Route {
        destination,
        gateway,
        device,
        source,
        scope: u8::from(header.scope),
        ipv6,
    })
}

/// Link-scope routes first, default routes last (a gateway must be reachable when the route
/// through it is added); otherwise the kernel's order.
pub(super) fn order_routes(routes: &mut [Route]) {
    let link = u8::from(RouteScope::Link);
    routes.sort_by_key(|r| (r.scope != link, r.destination.is_none()));
}
