use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteNextHop, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;

use super::discover::{address_of, order_routes, route_of, LinkFacts};
use super::tap::valid_ifname;
use super::tc::{filter_info, tap_name};
use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn mac_is_printed_as_six_lowercase_hex_pairs() {
    assert_eq!(
        MacAddr([0x02, 0xab, 0, 0x10, 0xff, 0x7]).to_string(),
        "02:ab:00:10:ff:07"
    );
}

#[test]
fn interface_maps_onto_the_agent_api() {
    let interface = Interface {
        name: "eth0".into(),
        index: 2,
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
        mtu: 1450,
        addresses: vec![
            IpNet {
                addr: v4(10, 88, 0, 5),
                prefix_len: 16,
            },
            IpNet {
                addr: "fd00::5".parse().unwrap(),
                prefix_len: 64,
            },
        ],
    };
    let p = interface.to_proto();
    assert_eq!(p.name, "eth0");
    assert_eq!(p.hw_address, "02:00:00:00:00:01");
    assert_eq!(p.mtu, 1450);
    assert_eq!(p.addresses.len(), 2);
    assert_eq!(p.addresses[0].address, "10.88.0.5");
    assert_eq!(p.addresses[0].prefix_length, 16);
    assert_eq!(
        p.addresses[0].family.enum_value(),
        Ok(proto::IpFamily::IP_FAMILY_V4)
    );
    assert_eq!(p.addresses[1].address, "fd00::5");
    assert_eq!(
        p.addresses[1].family.enum_value(),
        Ok(proto::IpFamily::IP_FAMILY_V6)
    );
}

#[test]
fn routes_map_onto_the_agent_api() {
    let default = Route {
        destination: None,
        gateway: Some(v4(10, 88, 0, 1)),
        device: "eth0".into(),
        source: None,
        scope: 0,
        ipv6: false,
    };
    let p = default.to_proto();
    assert_eq!(p.destination, "default");
    assert_eq!(p.gateway, "10.88.0.1");
    assert_eq!(p.device, "eth0");
    assert_eq!(p.source, "");
    assert_eq!(p.scope, 0);
    assert_eq!(p.family.enum_value(), Ok(proto::IpFamily::IP_FAMILY_V4));

    let link = Route {
        destination: Some(IpNet {
            addr: "fd00:1::".parse().unwrap(),
            prefix_len: 48,
        }),
        gateway: None,
        device: "eth0".into(),
        source: Some("fd00::5".parse().unwrap()),
        scope: 253,
        ipv6: true,
    };
    let p = link.to_proto();
    assert_eq!(p.destination, "fd00:1::/48");
    assert_eq!(p.gateway, "");
    assert_eq!(p.source, "fd00::5");
    assert_eq!(p.scope, 253);
    assert_eq!(p.family.enum_value(), Ok(proto::IpFamily::IP_FAMILY_V6));

    let network = PodNetwork {
        interfaces: vec![],
        routes: vec![default, link],
    };
    assert_eq!(network.to_proto().1.len(), 2);
}

#[test]
fn vmm_arg_names_the_fd_and_the_veth_mac_and_mtu() {
    let fd: OwnedFd = File::open("/dev/null").unwrap().into();
    let nic = TapNic {
        tap_name: "hulltap0".into(),
        fd: Some(fd),
        guest: Interface {
            name: "eth0".into(),
            index: 2,
            mac: MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            mtu: 1500,
            addresses: vec![],
        },
    };
    assert_eq!(nic.vmm_net_arg(3), "fd=3,mac=aa:bb:cc:dd:ee:ff,mtu=1500");
}

fn link(name: &str, kind: Option<InfoKind>, layer: LinkLayerType) -> LinkFacts {
    let mut message = LinkMessage::default();
    message.header.index = 7;
    message.header.link_layer_type = layer;
    message.attributes.push(LinkAttribute::IfName(name.into()));
    message.attributes.push(LinkAttribute::Mtu(1400));
    message
        .attributes
        .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]));
    if let Some(kind) = kind {
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    }
    LinkFacts::from_message(&message)
}

#[test]
fn only_ethernet_devices_other_than_taps_are_carried() {
    let veth = link("eth0", Some(InfoKind::Veth), LinkLayerType::Ether);
    assert_eq!(veth.index, 7);
    assert_eq!(veth.mtu, 1400);
    assert_eq!(veth.mac, Some(MacAddr([2, 0, 0, 0, 0, 9])));
    assert!(veth.carried() && !veth.ours());
    assert!(link("net1", Some(InfoKind::MacVlan), LinkLayerType::Ether).carried());
    assert!(!link("lo", None, LinkLayerType::Loopback).carried());
    let ours = link("hulltap0", Some(InfoKind::Tun), LinkLayerType::Ether);
    assert!(ours.ours() && !ours.carried());
    let foreign_tap = link("tap9", Some(InfoKind::Tun), LinkLayerType::Ether);
    assert!(!foreign_tap.ours() && !foreign_tap.carried());
    // A veth someone named like our taps is neither ours to delete nor carried.
    let impostor = link("hulltap5", Some(InfoKind::Veth), LinkLayerType::Ether);
    assert!(!impostor.ours() && !impostor.carried());
}

fn address(
    family: AddressFamily,
    prefix_len: u8,
    attributes: Vec<AddressAttribute>,
) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = family;
    message.header.prefix_len = prefix_len;
    message.attributes = attributes;
    message
}

#[test]
fn addresses_use_the_local_address_and_skip_ipv6_link_local() {
    let peer = address(
        AddressFamily::Inet,
        32,
        vec![
            AddressAttribute::Address(v4(10, 0, 0, 1)),
            AddressAttribute::Local(v4(10, 0, 0, 2)),
        ],
    );
    assert_eq!(
        address_of(&peer),
        Some(IpNet {
            addr: v4(10, 0, 0, 2),
            prefix_len: 32
        })
    );
    let global = address(
        AddressFamily::Inet6,
        64,
        vec![AddressAttribute::Address("fd00::2".parse().unwrap())],
    );
    assert_eq!(address_of(&global).unwrap().to_string(), "fd00::2/64");
    let link_local = address(
        AddressFamily::Inet6,
        64,
        vec![AddressAttribute::Address("fe80::1".parse().unwrap())],
    );
    assert_eq!(address_of(&link_local), None);
}

fn route(v6: bool, prefix: u8, attributes: Vec<RouteAttribute>) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.header.destination_prefix_length = prefix;
    message.header.table = 254;
    message.header.kind = RouteType::Unicast;
    message.header.protocol = RouteProtocol::Boot;
    message.attributes = attributes;
    message
}

#[test]
fn routes_through_carried_interfaces_are_kept() {
    let names = HashMap::from([(2, "eth0".to_string())]);
    let default = route(
        false,
        0,
        vec![
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1))),
            RouteAttribute::Oif(2),
        ],
    );
    let r = route_of(&default, &names).unwrap();
    assert_eq!(r.destination, None);
    assert_eq!(r.gateway, Some(v4(10, 0, 0, 1)));
    assert_eq!(r.device, "eth0");
    assert!(!r.ipv6);

    let mut scoped = route(
        true,
        128,
        vec![
            RouteAttribute::Destination(RouteAddress::Inet6(
                "fd00::1".parse::<Ipv6Addr>().unwrap(),
            )),
            RouteAttribute::PrefSource(RouteAddress::Inet6("fd00::2".parse().unwrap())),
            RouteAttribute::Oif(2),
        ],
    );
    scoped.header.scope = RouteScope::Link;
    let r = route_of(&scoped, &names).unwrap();
    assert_eq!(r.destination.unwrap().to_string(), "fd00::1/128");
    assert_eq!(r.source, Some("fd00::2".parse().unwrap()));
    assert_eq!(r.scope, 253);
    assert!(r.ipv6);
}

#[test]
fn routes_the_guest_makes_itself_or_cannot_use_are_dropped() {
    let names = HashMap::from([(2, "eth0".to_string())]);
    let through = |oif| {
        route(
            false,
            24,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 0))),
                RouteAttribute::Oif(oif),
            ],
        )
    };
    assert!(route_of(&through(2), &names).is_some());
    // Through an interface that is not carried (e.g. lo, or our tap).
    assert!(route_of(&through(1), &names).is_none());
    // Made by the kernel from an address.
    let mut kernel = through(2);
    kernel.header.protocol = RouteProtocol::Kernel;
    assert!(route_of(&kernel, &names).is_none());
    // Another table (local, or policy routing).
    let mut local = through(2);
    local.header.table = 255;
    assert!(route_of(&local, &names).is_none());
    let mut big_table = through(2);
    big_table.attributes.push(RouteAttribute::Table(1000));
    assert!(route_of(&big_table, &names).is_none());
    // Not unicast.
    let mut broadcast = through(2);
    broadcast.header.kind = RouteType::Broadcast;
    assert!(route_of(&broadcast, &names).is_none());
    // Multipath.
    let mut multipath = through(2);
    multipath
        .attributes
        .push(RouteAttribute::MultiPath(vec![RouteNextHop::default()]));
    assert!(route_of(&multipath, &names).is_none());
    // IPv6 link-local destination.
    let link_local = route(
        true,
        64,
        vec![
            RouteAttribute::Destination(RouteAddress::Inet6("fe80::".parse().unwrap())),
            RouteAttribute::Oif(2),
        ],
    );
    assert!(route_of(&link_local, &names).is_none());
}

#[test]
fn link_scope_routes_come_first_and_default_routes_last() {
    let r = |destination: Option<IpNet>, scope| Route {
        destination,
        gateway: None,
        device: "eth0".into(),
        source: None,
        scope,
        ipv6: false,
    };
    let net = |d| {
        Some(IpNet {
            addr: v4(10, d, 0, 0),
            prefix_len: 16,
        })
    };
    let mut routes = vec![r(None, 0), r(net(1), 0), r(net(2), 253), r(net(3), 0)];
    order_routes(&mut routes);
    let order: Vec<_> = routes.iter().map(|r| r.destination).collect();
    assert_eq!(order, vec![net(2), net(1), net(3), None]);
}

#[test]
fn tap_names_fit_and_filters_carry_our_priority() {
    assert_eq!(tap_name(0), "hulltap0");
    assert!(valid_ifname(&tap_name(99_999)));
    assert!(!valid_ifname(""));
    assert!(!valid_ifname("a-name-too-long-for-linux"));
    assert!(!valid_ifname("a/b"));
    assert!(!valid_ifname(".."));
    // Priority in the upper half; ETH_P_ALL (0x0003) in network byte order below.
    assert_eq!(
        filter_info(),
        (u32::from(TC_PRIORITY) << 16) | u32::from(0x0003u16.to_be())
    );
}
