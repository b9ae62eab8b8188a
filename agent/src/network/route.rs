//! UpdateRoutes: the main routing table of the interfaces a request names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use hull_proto::network::{IpFamily, Route};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use tracing::{debug, info};

use super::link::{link_by_name, links};
use super::{errno_of, netlink_error, NetError, Netlink, Netns};

/// Replaces the routes of the interfaces named in `routes` (their `device`s) in the main
/// table of `netns` with `routes`, and returns the routes of those interfaces as installed.
///
/// - Routes the kernel derived from addresses (protocol `kernel`, e.g. the subnet route of
///   10.88.0.5/16 or IPv6 fe80::/64) are kept; a requested route with the same destination
///   replaces one. Every other main-table route on those interfaces is deleted first.
/// - Routes without a gateway go in before routes with one, so a gateway is reachable
///   through its link-scope route whatever order the request used; the request's order is
///   kept otherwise.
/// - Scope 0 means link scope for a route without a gateway (as `ip route` does), universe
///   for one with a gateway.
/// - A route without a device (gateway only) is added where the kernel resolves it; it does
///   not cause any deletion.
///
/// An empty list changes nothing. A device that does not exist fails with NOT_FOUND before
/// anything is changed.
pub async fn update_routes(netns: &Netns, routes: &[Route]) -> Result<Vec<Route>, NetError> {
    let nl = Netlink::open(netns)?;
    let mut devices: BTreeMap<&str, u32> = BTreeMap::new();
    for route in routes.iter().filter(|r| !r.device.is_empty()) {
        if devices.contains_key(route.device.as_str()) {
            continue;
        }
        let link = link_by_name(&nl, &route.device)
            .await
            .map_err(|e| match e {
                NetError::NotFound { what } => NetError::NotFound {
                    what: format!("{what} (device of route {})", describe(route)),
                },
                other => other,
            })?;
        devices.insert(&route.device, link.header.index);
    }
    let affected: BTreeSet<u32> = devices.values().copied().collect();

    for old in main_routes(&nl).await? {
        if old.header.protocol == RouteProtocol::Kernel
            || !oif_of(&old).is_some_and(|i| affected.contains(&i))
        {
            continue;
        }
        debug!(route = %describe_message(&old), "deleting route");
        match nl.handle.route().del(deletion_of(&old)).execute().await {
            Err(e) if errno_of(&e) == Some(libc::ESRCH) => {} // gone already
            other => other.map_err(netlink_error(format!(
                "deleting the old route {}",
                describe_message(&old)
            )))?,
        }
    }

    let (direct, via_gateway): (Vec<_>, Vec<_>) = routes
        .iter()
        .enumerate()
        .partition(|(_, route)| route.gateway.is_empty());
    for (i, route) in direct.into_iter().chain(via_gateway) {
        let what = format!("routes[{i}] ({})", describe(route));
        let oif = devices.get(route.device.as_str()).copied();
        let message = message_of(route, oif).map_err(|reason| NetError::Invalid {
            what: what.clone(),
            reason,
        })?;
        debug!(route = %describe(route), "adding route");
        nl.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(netlink_error(format!("adding {what}")))?;
    }

    // Read back: the non-kernel routes on the named interfaces, plus what the device-less
    // requested routes resolved to.
    let names: BTreeMap<u32, String> = links(&nl)
        .await?
        .iter()
        .filter_map(|link| {
            let name = link.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            Some((link.header.index, name))
        })
        .collect();
    let deviceless: Vec<&Route> = routes.iter().filter(|r| r.device.is_empty()).collect();
    let installed: Vec<Route> = main_routes(&nl)
        .await?
        .iter()
        .filter(|m| m.header.protocol != RouteProtocol::Kernel)
        .map(|m| route_of(m, &names))
        .filter(|r| {
            devices.contains_key(r.device.as_str())
                || deviceless
                    .iter()
                    .any(|d| d.destination == r.destination && d.family == r.family)
        })
        .collect();
    info!(requested = routes.len(), installed = installed.len(), %netns, "routes updated");
    Ok(installed)
}

/// The main-table routes of both families.
async fn main_routes(nl: &Netlink) -> Result<Vec<RouteMessage>, NetError> {
    let mut all = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let family = query.header.address_family;
        let routes: Vec<RouteMessage> = nl
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(netlink_error(format!("listing {family:?} routes")))?;
        all.extend(
            routes
                .into_iter()
                .filter(|r| table_of(r) == u32::from(RouteHeader::RT_TABLE_MAIN)),
        );
    }
    Ok(all)
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(route.header.table.into())
}

fn oif_of(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

/// What identifies a dumped route for RTM_DELROUTE (without its cache info and metrics).
fn deletion_of(route: &RouteMessage) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header = route.header.clone();
    message.attributes = route
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
            )
        })
        .cloned()
        .collect();
    message
}

/// The RTM_NEWROUTE message for a (validated) route.
fn message_of(route: &Route, oif: Option<u32>) -> Result<RouteMessage, String> {
    let v4 = route.family.enum_value() == Ok(IpFamily::IP_FAMILY_V4);
    let parse = |field: &str, text: &str| -> Result<IpAddr, String> {
        text.parse()
            .map_err(|_| format!("{field} {text:?} is not an IP address"))
    };
    let (destination, prefix) = if route.destination == "default" {
        let any = if v4 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        (any, 0)
    } else {
        let (ip, prefix) = route
            .destination
            .split_once('/')
            .ok_or("destination has no prefix length")?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| "bad prefix length".to_string())?;
        (parse("destination", ip)?, prefix)
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination, prefix)
        .map_err(|e| e.to_string())?;
    if !route.gateway.is_empty() {
        builder = builder
            .gateway(parse("gateway", &route.gateway)?)
            .map_err(|e| e.to_string())?;
    }
    if !route.source.is_empty() {
        builder = builder
            .pref_source(parse("source", &route.source)?)
            .map_err(|e| e.to_string())?;
    }
    if let Some(oif) = oif {
        builder = builder.output_interface(oif);
    }
    let scope = match (route.scope, route.gateway.is_empty()) {
        (0, true) => RouteScope::Link,
        (0, false) => RouteScope::Universe,
        (scope, _) => RouteScope::from(scope as u8),
    };
    Ok(builder.scope(scope).build())
}

/// A dumped route in the API's terms.
fn route_of(message: &RouteMessage, names: &BTreeMap<u32, String>) -> Route {
    let ip_of = |address: &RouteAddress| match address {
        RouteAddress::Inet(ip) => ip.to_string(),
        RouteAddress::Inet6(ip) => ip.to_string(),
        _ => String::new(),
    };
    let mut route = Route {
        family: if message.header.address_family == AddressFamily::Inet6 {
            IpFamily::IP_FAMILY_V6
        } else {
            IpFamily::IP_FAMILY_V4
        }
        .into(),
        destination: "default".into(),
        scope: u8::from(message.header.scope).into(),
        ..Default::default()
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(ip) if message.header.destination_prefix_length > 0 => {
                route.destination =
                    format!("{}/{}", ip_of(ip), message.header.destination_prefix_length);
            }
            RouteAttribute::Gateway(ip) => route.gateway = ip_of(ip),
            RouteAttribute::PrefSource(ip) => route.source = ip_of(ip),
            RouteAttribute::Oif(index) => {
                route.device = names.get(index).cloned().unwrap_or_default();
            }
            _ => {}
        }
    }
    route
}

/// A route as `ip route` would print it, for messages and logs.
pub(super) fn describe(route: &Route) -> String {
    let mut text = route.destination.clone();
    for (word, value) in [
        ("via", &route.gateway),
        ("dev", &route.device),
        ("src", &route.source),
    ] {
        if !value.is_empty() {
            text.push_str(&format!(" {word} {value}"));
        }
    }
    text
}

fn describe_message(message: &RouteMessage) -> String {
    let route = route_of(message, &BTreeMap::new());
    match oif_of(message) {
        Some(index) => format!("{} (interface index {index})", describe(&route)),
        None => describe(&route),
    }
}
