//! The guest's listening TCP ports, read from `/proc/net/tcp` and `/proc/net/tcp6` (those of
//! the agent's own network namespace: the guest's root one).
//!
//! A line of those files looks like
//! `0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1234 ...`:
//! the local address is hex (IPv4: one 32-bit word, IPv6: four, each printed as the kernel's
//! native-endian integer), the port is hex, state `0A` is LISTEN. Anything that does not parse
//! is skipped: the files are the kernel's, but a parser must never panic or loop on them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most ports one ListTcpListeners reply carries (the lowest ones).
pub const MAX_LISTENERS: usize = 1024;
/// Most bytes read from one /proc file (a guest with a huge connection table is cut short).
const MAX_PROC_FILE: u64 = 16 << 20;
/// The `st` column of a listening socket.
const TCP_LISTEN: &str = "0A";

/// Ports listening on an address that `localhost` reaches (wildcard or loopback) in one
/// `/proc/net/tcp{,6}` text, in file order, possibly repeated.
pub fn parse_proc_net_tcp(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1) // the header
        .filter_map(listening_port)
        .collect()
}

/// The port of one line if it is a LISTEN socket on a wildcard or loopback address.
fn listening_port(line: &str) -> Option<u16> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != TCP_LISTEN {
        return None;
    }
    let (address, port) = local.split_once(':')?;
    let port = parse_hex_u16(port)?;
    let address = parse_address(address)?;
    (port != 0 && reachable_from_localhost(address)).then_some(port)
}

fn parse_hex_u16(text: &str) -> Option<u16> {
    if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(text, 16).ok()
}

/// A hex address of 8 (IPv4) or 32 (IPv6) digits, words in native byte order.
fn parse_address(text: &str) -> Option<IpAddr> {
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |i: usize| -> Option<[u8; 4]> {
        let digits = text.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(digits, 16).ok()?.to_ne_bytes())
    };
    match text.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a connection to 127.0.0.1 or ::1 reaches a listener bound to `address`.
fn reachable_from_localhost(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_unspecified() || v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reachable_from_localhost(IpAddr::V4(v4)),
            None => v6.is_unspecified() || v6.is_loopback(),
        },
    }
}

/// Merges the ports of several files: ascending, deduplicated, at most [`MAX_LISTENERS`].
pub fn merge_ports(lists: impl IntoIterator<Item = Vec<u16>>) -> Vec<u16> {
    let mut ports: Vec<u16> = lists.into_iter().flatten().collect();
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(MAX_LISTENERS);
    ports
}

/// Reads one proc file, at most [`MAX_PROC_FILE`] bytes; a missing file (no IPv6) is empty.
fn read_proc_file(path: &str) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(err) => return Err(err),
    };
    let mut bytes = Vec::new();
    file.take(MAX_PROC_FILE).read_to_end(&mut bytes)?;
    // A cut-off last line fails to parse and is skipped.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The listening ports of this process's network namespace (blocking: reads /proc).
pub fn list_tcp_listeners() -> std::io::Result<Vec<u16>> {
    let v4 = parse_proc_net_tcp(&read_proc_file("/proc/net/tcp")?);
    let v6 = parse_proc_net_tcp(&read_proc_file("/proc/net/tcp6")?);
    Ok(merge_ports([v4, v6]))
}
