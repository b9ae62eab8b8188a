//! Links and their addresses: UpdateInterface, ListInterfaces, link up.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt as _;
use hull_proto::network::{Interface, IpAddress, IpFamily};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::LinkUnspec;
use tracing::{debug, info};

use super::{errno_of, netlink_error, NetError, Netlink, Netns};

/// Configures one interface in `netns`: finds it by `hw_address` when set (then renames it to
/// `name`, taking it down first as the kernel requires), else by `name`; gives it the MAC
/// `new_hw_address` when that is set and differs (taking it down first too: most drivers,
/// virtio-net among them, refuse a MAC change while the link is up); sets the MTU when
/// non-zero; brings it up; replaces its addresses with the given ones (IPv6 link-local
/// addresses the kernel made are kept unless listed). IPv6 addresses are added without
/// duplicate address detection (the host assigned them), so routes may use them as source at
/// once. Returns the interface as the kernel reports it afterwards (with the new MAC).
///
/// A retried request whose MAC change already happened still finds its link: when no link
/// has `hw_address`, the one that has `new_hw_address` is taken.
pub async fn update_interface(netns: &Netns, wanted: &Interface) -> Result<Interface, NetError> {
    let nl = Netlink::open(netns)?;
    let link = find_link(&nl, wanted).await?;
    let index = link.header.index;
    let current = link_name(&link).unwrap_or_default().to_string();
    let set = |what: String, message: LinkMessage| {
        let request = nl.handle.link().set(message);
        async move { request.execute().await.map_err(netlink_error(what)) }
    };
    let mut up = link.header.flags.contains(LinkFlags::Up);
    if current != wanted.name {
        info!(from = %current, to = %wanted.name, "renaming interface");
        if up {
            let down = LinkUnspec::new_with_index(index).down().build();
            set(format!("taking {current} down to rename it"), down).await?;
            up = false;
        }
        let rename = LinkUnspec::new_with_index(index)
            .name(wanted.name.clone())
            .build();
        set(format!("renaming {current} to {}", wanted.name), rename).await?;
    }
    let name = &wanted.name;
    if let Some(mac) = new_mac(wanted)? {
        if link_mac(&link) != Some(&mac[..]) {
            let from = link_mac(&link).map(format_mac).unwrap_or_default();
            let to = format_mac(&mac);
            info!(interface = %name, %from, %to, "changing MAC address");
            if up {
                let down = LinkUnspec::new_with_index(index).down().build();
                set(format!("taking {name} down to change its MAC"), down).await?;
            }
            let address = LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build();
            set(format!("setting MAC {to} on {name}"), address).await?;
        }
    }
    if wanted.mtu != 0 && link_mtu(&link) != Some(wanted.mtu) {
        let mtu = LinkUnspec::new_with_index(index).mtu(wanted.mtu).build();
        set(format!("setting MTU {} on {name}", wanted.mtu), mtu).await?;
    }
    // Up before the addresses: taking a link down drops its IPv6 addresses.
    let up = LinkUnspec::new_with_index(index).up().build();
    set(format!("bringing {name} up"), up).await?;
    replace_addresses(&nl, index, name, &wanted.addresses).await?;

    let link = link_by_index(&nl, index, name).await?;
    let addresses = addresses(&nl).await?.remove(&index).unwrap_or_default();
    let configured = interface_of(&link, addresses);
    info!(interface = %name, mtu = configured.mtu, addresses = configured.addresses.len(), %netns, "interface configured");
    Ok(configured)
}

/// Every link in `netns` with its name, MAC, MTU and addresses, in index order.
pub async fn list_interfaces(netns: &Netns) -> Result<Vec<Interface>, NetError> {
    let nl = Netlink::open(netns)?;
    let links = links(&nl).await?;
    let mut addresses = addresses(&nl).await?;
    let mut interfaces: Vec<(u32, Interface)> = links
        .iter()
        .map(|link| {
            let index = link.header.index;
            let addresses = addresses.remove(&index).unwrap_or_default();
            (index, interface_of(link, addresses))
        })
        .collect();
    interfaces.sort_by_key(|(index, _)| *index);
    Ok(interfaces.into_iter().map(|(_, i)| i).collect())
}

/// Brings the link `name` in `netns` up (e.g. `lo`).
pub async fn set_link_up(netns: &Netns, name: &str) -> Result<(), NetError> {
    let nl = Netlink::open(netns)?;
    let link = link_by_name(&nl, name).await?;
    let up = LinkUnspec::new_with_index(link.header.index).up().build();
    nl.handle
        .link()
        .set(up)
        .execute()
        .await
        .map_err(netlink_error(format!("bringing {name} up")))
}

/// `new_hw_address` parsed, None when empty.
fn new_mac(wanted: &Interface) -> Result<Option<[u8; 6]>, NetError> {
    if wanted.new_hw_address.is_empty() {
        return Ok(None);
    }
    parse_mac(&wanted.new_hw_address)
        .map(Some)
        .ok_or_else(|| NetError::Invalid {
            what: format!("new MAC {}", wanted.new_hw_address),
            reason: "not a MAC address".into(),
        })
}

/// The link the request means: by MAC when given (a link that has the requested name wins
/// when several share the MAC), else by name. When no link has `hw_address` but one has
/// `new_hw_address`, that one: the request was carried out before (a retry).
async fn find_link(nl: &Netlink, wanted: &Interface) -> Result<LinkMessage, NetError> {
    if wanted.hw_address.is_empty() {
        return link_by_name(nl, &wanted.name).await;
    }
    let what = format!("interface with MAC {}", wanted.hw_address);
    let mac = parse_mac(&wanted.hw_address).ok_or_else(|| NetError::Invalid {
        what: what.clone(),
        reason: "not a MAC address".into(),
    })?;
    let all = links(nl).await?;
    let with_mac = |mac: &[u8]| -> Vec<LinkMessage> {
        all.iter()
            .filter(|link| link_mac(link) == Some(mac))
            .cloned()
            .collect()
    };
    let mut matching = with_mac(&mac);
    if matching.is_empty() {
        if let Some(new) = new_mac(wanted)? {
            matching = with_mac(&new);
        }
    }
    if let Some(i) = matching
        .iter()
        .position(|link| link_name(link) == Some(wanted.name.as_str()))
    {
        return Ok(matching.swap_remove(i));
    }
    match matching.len() {
        0 => Err(NetError::NotFound { what }),
        1 => Ok(matching.remove(0)),
        _ => Err(NetError::Invalid {
            what,
            reason: format!(
                "several links have it ({}) and none is named {}",
                matching
                    .iter()
                    .filter_map(link_name)
                    .collect::<Vec<_>>()
                    .join(", "),
                wanted.name
            ),
        }),
    }
}

pub(super) async fn link_by_name(nl: &Netlink, name: &str) -> Result<LinkMessage, NetError> {
    let what = format!("interface {name}");
    let mut found = nl
        .handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    match found.try_next().await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(NetError::NotFound { what }),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Err(NetError::NotFound { what }),
        Err(e) => Err(netlink_error(format!("looking up {what}"))(e)),
    }
}

async fn link_by_index(nl: &Netlink, index: u32, name: &str) -> Result<LinkMessage, NetError> {
    let what = format!("interface {name} (index {index})");
    let mut found = nl.handle.link().get().match_index(index).execute();
    match found.try_next().await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(NetError::NotFound { what }),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Err(NetError::NotFound { what }),
        Err(e) => Err(netlink_error(format!("reading back {what}"))(e)),
    }
}

pub(super) async fn links(nl: &Netlink) -> Result<Vec<LinkMessage>, NetError> {
    nl.handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_error("listing links"))
}

/// Every address (both families), by link index.
async fn addresses(nl: &Netlink) -> Result<BTreeMap<u32, Vec<AddressMessage>>, NetError> {
    let all: Vec<AddressMessage> = nl
        .handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_error("listing addresses"))?;
    let mut by_link: BTreeMap<u32, Vec<AddressMessage>> = BTreeMap::new();
    for address in all {
        by_link
            .entry(address.header.index)
            .or_default()
            .push(address);
    }
    Ok(by_link)
}

/// Makes the addresses of link `index` exactly `wanted`, keeping IPv6 link-local ones. Old
/// addresses go first (deleting a primary IPv4 address also deletes its secondaries, which
/// are then added again), then every wanted one is added or replaced.
async fn replace_addresses(
    nl: &Netlink,
    index: u32,
    name: &str,
    wanted: &[IpAddress],
) -> Result<(), NetError> {
    let wanted: Vec<(IpAddr, u8)> = wanted
        .iter()
        .map(|a| {
            let ip: IpAddr = a.address.parse().map_err(|_| NetError::Invalid {
                what: format!("address {:?}", a.address),
                reason: "not an IP address".into(),
            })?;
            Ok((ip, a.prefix_length as u8))
        })
        .collect::<Result<_, NetError>>()?;
    let current = addresses(nl).await?.remove(&index).unwrap_or_default();
    for address in current {
        let Some(ip) = address_ip(&address) else {
            continue;
        };
        let prefix = address.header.prefix_len;
        let keep = wanted.contains(&(ip, prefix))
            || (address.header.family == AddressFamily::Inet6
                && address.header.scope == AddressScope::Link);
        if keep {
            continue;
        }
        debug!(%ip, prefix, interface = name, "deleting address");
        match nl.handle.address().del(address).execute().await {
            // Gone already: a deleted primary took its secondaries with it.
            Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => {}
            other => other.map_err(netlink_error(format!(
                "deleting address {ip}/{prefix} from {name}"
            )))?,
        }
    }
    for &(ip, prefix) in &wanted {
        debug!(%ip, prefix, interface = name, "adding address");
        let mut add = nl.handle.address().add(index, ip, prefix).replace();
        if ip.is_ipv6() {
            let message = add.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        add.execute().await.map_err(netlink_error(format!(
            "adding address {ip}/{prefix} to {name}"
        )))?;
    }
    Ok(())
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn link_mac(link: &LinkMessage) -> Option<&[u8]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.as_slice()),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// The interface's own address: IFA_LOCAL (IPv4; IFA_ADDRESS is the peer on point-to-point
/// links), else IFA_ADDRESS.
fn address_ip(address: &AddressMessage) -> Option<IpAddr> {
    let local = address.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        address.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn interface_of(link: &LinkMessage, addresses: Vec<AddressMessage>) -> Interface {
    Interface {
        name: link_name(link).unwrap_or_default().to_string(),
        hw_address: link_mac(link).map(format_mac).unwrap_or_default(),
        mtu: link_mtu(link).unwrap_or_default(),
        addresses: addresses
            .iter()
            .filter_map(|a| {
                let ip = address_ip(a)?;
                Some(IpAddress {
                    family: match ip {
                        IpAddr::V4(_) => IpFamily::IP_FAMILY_V4,
                        IpAddr::V6(_) => IpFamily::IP_FAMILY_V6,
                    }
                    .into(),
                    address: ip.to_string(),
                    prefix_length: a.header.prefix_len.into(),
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// "aa:bb:cc:dd:ee:ff" (lower case) for any hardware address length.
pub(super) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses "aa:bb:cc:dd:ee:ff" (either case).
pub(super) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
