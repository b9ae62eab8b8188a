//! The hybrid-vsock handshake, both sides: a host client connects to the Unix socket, writes
//! `CONNECT <port>\n` and reads `OK <host-port>\n` (one byte at a time: what follows the line
//! is the stream). The client ([`crate::client`]) and the agent's host-mode listener use these;
//! hull-vmm's device speaks the same lines.
//!
//! A guest connection to host port P is forwarded to the Unix socket `<uds>_P` beside the
//! hybrid socket `<uds>` ([`guest_connection_path`]).
//!
//! Also the first line of a port-forward connection to [`crate::PORT_FORWARD_PORT`]:
//! `TCP <port>\n` names the guest TCP port the stream is forwarded to.

/// `<uds>_<port>`: where a guest connection to host `port` goes when the hybrid-vsock socket is
/// `uds`.
pub fn guest_connection_path(uds: &std::path::Path, port: u32) -> std::path::PathBuf {
    let mut path = std::ffi::OsString::from(uds.as_os_str());
    path.push(format!("_{port}"));
    path.into()
}

/// Longest `CONNECT <port>\n` line a listener reads.
pub const MAX_CONNECT_LINE: usize = 32;
/// Longest `OK <port>\n` reply a client reads.
pub const MAX_OK_LINE: usize = 32;

/// Longest `TCP <port>\n` line the agent reads on the port-forward port.
pub const MAX_TCP_LINE: usize = 16;

/// Most digits a port may have in any handshake line (`4294967295` has 10; leading zeros count).
pub const MAX_PORT_DIGITS: usize = 10;

/// Why a `CONNECT <port>\n` line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    /// Longer than [`MAX_CONNECT_LINE`] bytes, or no newline within them.
    #[error("no newline within the first {MAX_CONNECT_LINE} bytes")]
    TooLong,
    /// The line does not start with `CONNECT `.
    #[error("line does not start with \"CONNECT \"")]
    NotConnect,
    /// The port is missing, not decimal, longer than 10 digits or larger than u32, or the line
    /// does not end right after it with a newline.
    #[error("port is not 1 to 10 decimal digits between 0 and 4294967295 followed by a newline")]
    BadPort,
}

/// The line a client sends to reach guest `port`.
pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The line a listener answers a CONNECT with.
pub fn ok_line(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

/// Parses `CONNECT <port>\n`: the one rule for this line, used by the agent's host-mode listener
/// and by hull-vmm's vsock device. At most [`MAX_CONNECT_LINE`] bytes: the word `CONNECT`, one
/// space, 1 to [`MAX_PORT_DIGITS`] decimal digits forming a u32, and a newline.
pub fn parse_connect_line(line: &[u8]) -> Result<u32, ConnectLineError> {
    if line.len() > MAX_CONNECT_LINE {
        return Err(ConnectLineError::TooLong);
    }
    let rest = line
        .strip_prefix(b"CONNECT ")
        .ok_or(ConnectLineError::NotConnect)?;
    let digits = rest.strip_suffix(b"\n").ok_or(ConnectLineError::BadPort)?;
    parse_port_digits(digits).ok_or(ConnectLineError::BadPort)
}

/// [`parse_connect_line`] without the reason.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    parse_connect_line(line).ok()
}

/// Parses `OK <host-port>\n` and returns the host port.
pub fn parse_ok(line: &[u8]) -> Option<u32> {
    parse_number_line(line, "OK ")
}

/// The first line of a port-forward connection to guest TCP `port`.
pub fn tcp_line(port: u16) -> String {
    format!("TCP {port}\n")
}

/// Parses `TCP <port>\n` (decimal digits only, 1..=65535, at most [`MAX_TCP_LINE`] bytes).
pub fn parse_tcp(line: &[u8]) -> Option<u16> {
    if line.len() > MAX_TCP_LINE {
        return None;
    }
    let port = parse_number_line(line, "TCP ")?;
    u16::try_from(port).ok().filter(|&p| p != 0)
}

fn parse_number_line(line: &[u8], prefix: &str) -> Option<u32> {
    let digits = line.strip_prefix(prefix.as_bytes())?.strip_suffix(b"\n")?;
    parse_port_digits(digits)
}

/// 1 to [`MAX_PORT_DIGITS`] ASCII decimal digits whose value fits a u32.
fn parse_port_digits(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > MAX_PORT_DIGITS || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_connections_go_to_the_socket_path_with_the_port_appended() {
        assert_eq!(
            guest_connection_path(std::path::Path::new("/run/v.sock"), 1028),
            std::path::PathBuf::from("/run/v.sock_1028")
        );
    }

    #[test]
    fn lines_round_trip() {
        assert_eq!(parse_connect(connect_line(1024).as_bytes()), Some(1024));
        assert_eq!(parse_ok(ok_line(77).as_bytes()), Some(77));
        assert_eq!(parse_connect(b"CONNECT 1024\n"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 65536\n"), Some(65536));
        assert_eq!(parse_ok(b"OK 1\n"), Some(1));
        assert_eq!(parse_ok(b"OK 4294967295\n"), Some(u32::MAX));
    }

    #[test]
    fn connect_ports_have_at_most_ten_digits() {
        // Leading zeros count: ten digits are accepted, eleven are not, whatever their value.
        assert_eq!(parse_connect_line(b"CONNECT 0000000052\n"), Ok(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\n"), Ok(u32::MAX));
        for bad in [
            &b"CONNECT 00000000052\n"[..],
            b"CONNECT 00000000001024\n",
            b"CONNECT 000000000000000000001\n",
        ] {
            assert_eq!(
                parse_connect_line(bad),
                Err(ConnectLineError::BadPort),
                "{bad:?}"
            );
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
        assert_eq!(parse_ok(b"OK 00000000001\n"), None);
        assert_eq!(parse_ok(b"OK 0000000001\n"), Some(1));
    }

    #[test]
    fn connect_line_errors_name_the_problem() {
        use ConnectLineError::*;
        assert_eq!(parse_connect_line(b"connect 1024\n"), Err(NotConnect));
        assert_eq!(parse_connect_line(b"CONNECT1024\n"), Err(NotConnect));
        assert_eq!(parse_connect_line(b"CONNECT \n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 4294967296\n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 1024"), Err(BadPort));
        let mut long = b"CONNECT ".to_vec();
        long.resize(MAX_CONNECT_LINE, b'1');
        long.push(b'\n');
        assert_eq!(parse_connect_line(&long), Err(TooLong));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b"CONNECT\n"[..],
            b"CONNECT 1",
            b"CONNECT -1\n",
            b"CONNECT +1\n",
            b"CONNECT 99999999999\n",
            b"connect 1\n",
            b"CONNECT 1 \n",
            b"\xffCONNECT 1\n",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
        for bad in [
            &b"OK\n"[..],
            b"OK \n",
            b"OK 1",
            b"ok 1\n",
            b"OK -1\n",
            b"OK +1\n",
            b"OK 4294967296\n",
            b"OK 1 2\n",
            b"ERR 1\n",
            b"ERR no listener\n",
            b"OK 1\r\n",
        ] {
            assert_eq!(parse_ok(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tcp_lines_round_trip_over_the_whole_port_range() {
        for port in [1u16, 80, 8080, 65535] {
            let line = tcp_line(port);
            assert!(line.len() <= MAX_TCP_LINE, "{line:?}");
            assert_eq!(parse_tcp(line.as_bytes()), Some(port));
        }
    }

    #[test]
    fn malformed_tcp_lines_are_refused() {
        for bad in [
            &b"TCP 0\n"[..],
            b"TCP 65536\n",
            b"TCP 99999999999\n",
            b"TCP\n",
            b"TCP \n",
            b"TCP 80",
            b"TCP 80\r\n",
            b"TCP  80\n",
            b"TCP -80\n",
            b"TCP +80\n",
            b"TCP 0x50\n",
            b"tcp 80\n",
            b"UDP 80\n",
            b"CONNECT 80\n",
            b"TCP 80\nTCP 81\n",
            b"TCP 000000000000080\n",
            b"\xffTCP 80\n",
            b"",
        ] {
            assert_eq!(parse_tcp(bad), None, "{bad:?}");
        }
    }
}
