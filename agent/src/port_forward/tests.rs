use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// /proc/net/tcp of an x86 guest: sshd-like on 0.0.0.0:22, a server on 127.0.0.1:8080, one on
/// 10.0.0.5:9000 (not reachable through localhost), one on 127.0.0.2:7000 (neither), an
/// established connection and a TIME_WAIT one.
const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1594 1 00000000d5e77781 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1600 1 0000000000000000 100 0 0 10 0
   2: 0500000A:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1601 1 0000000000000000 100 0 0 10 0
   3: 0200007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1602 1 0000000000000000 100 0 0 10 0
   4: 0100007F:1F90 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 1603 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";

/// /proc/net/tcp6: [::]:22 (again), [::1]:9090, [::ffff:127.0.0.1]:5000 (v4-mapped loopback),
/// [fe80::1]:6000 (not loopback) and an established one.
const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1595 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1596 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1597 1 0000000000000000 100 0 0 10 0
   3: 000080FE000000000000000001000000:1770 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1598 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000001000000:2382 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 1599 1 0000000000000000 20 4 30 10 -1
";

#[cfg(target_endian = "little")]
#[test]
fn listening_ports_on_wildcard_and_loopback_only() {
    assert_eq!(parse_proc_net_tcp(TCP), vec![22, 8080]);
    assert_eq!(parse_proc_net_tcp(TCP6), vec![22, 9090, 5000]);
    assert_eq!(
        merge_ports([parse_proc_net_tcp(TCP), parse_proc_net_tcp(TCP6)]),
        vec![22, 5000, 8080, 9090]
    );
}

#[test]
fn malformed_lines_are_skipped() {
    let text = "header
   0: 00000000:0016 00000000:0000 0A
   1: 00000000:0017 00000000:0000 0a 0 0
   2 00000000:0018 00000000:0000 0A 0 0
   3: 00000000:0019
   4: 00000000:001Z 00000000:0000 0A 0 0
   5: 0000000:001A 00000000:0000 0A 0 0
   6: 00000000:01B 00000000:0000 0A 0 0
   7: 00000000001C 00000000:0000 0A 0 0
   8: 0000000000000000000000000000000:001D 00000000:0000 0A 0 0
   9: 000000000000000000000000000000000:001E 00000000:0000 0A 0 0
  10: 00000000:0000 00000000:0000 0A 0 0
  11: +0000000:001F 00000000:0000 0A 0 0
  12: 00000000:+01F 00000000:0000 0A 0 0
  13: 00000000:0020 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
  14: \u{e9}0000000:0021 00000000:0000 0A 0 0

   ::::
  15: 00000000:0022 00000000:0000 0A 0 0";
    // Only the well-formed lines 0, 13 and 15 (and the unchecked trailing fields of 0).
    assert_eq!(parse_proc_net_tcp(text), vec![0x16, 0x20, 0x22]);
}

#[test]
fn empty_and_header_only_files_have_no_ports() {
    assert!(parse_proc_net_tcp("").is_empty());
    assert!(parse_proc_net_tcp("  sl  local_address rem_address   st\n").is_empty());
    // The first line is always the header, even if it looks like a socket.
    assert!(parse_proc_net_tcp("   0: 00000000:0016 00000000:0000 0A 0 0\n").is_empty());
}

#[test]
fn merged_ports_are_sorted_unique_and_bounded() {
    let many: Vec<u16> = (1..=3000).rev().collect();
    let merged = merge_ports([many.clone(), many]);
    assert_eq!(merged.len(), MAX_LISTENERS);
    assert_eq!(merged[0], 1);
    assert_eq!(merged[MAX_LISTENERS - 1], MAX_LISTENERS as u16);
}

#[test]
fn this_hosts_listeners_can_be_read() {
    // Whatever this netns has: the read must succeed and respect the bound.
    let ports = list_tcp_listeners().unwrap();
    assert!(ports.len() <= MAX_LISTENERS);
    assert!(ports.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "current_thread")]
async fn tcp_line_is_read_without_over_reading() {
    let (mut host, mut guest) = tokio::io::duplex(64);
    host.write_all(b"TCP 8080\nPAYLOAD").await.unwrap();
    assert_eq!(read_tcp_line(&mut guest).await, Some(8080));
    let mut rest = [0u8; 7];
    guest.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"PAYLOAD");
}

#[tokio::test(flavor = "current_thread")]
async fn overlong_or_bad_tcp_lines_are_refused() {
    for input in [
        &b"TCP 0000000000000000080\n"[..],
        b"TCP 0\n",
        b"GET / HTTP/1.1\r\n",
        b"TCP 8",
    ] {
        let (mut host, mut guest) = tokio::io::duplex(64);
        host.write_all(input).await.unwrap();
        drop(host);
        assert_eq!(read_tcp_line(&mut guest).await, None, "{input:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_forward_reaches_a_localhost_server_and_half_closes() {
    let server = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let echo = tokio::spawn(async move {
        let (mut conn, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        conn.write_all(&got).await.unwrap();
        conn.shutdown().await.unwrap();
        got.len()
    });
    let (mut host, guest) = tokio::io::duplex(4096);
    PortForwards::new().spawn(Box::pin(guest));
    host.write_all(format!("TCP {port}\n").as_bytes())
        .await
        .unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(host);
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move {
            wr.write_all(&payload).await.unwrap();
            wr.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::new();
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echo.await.unwrap(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

#[tokio::test(flavor = "current_thread")]
async fn a_forward_to_a_closed_port_is_closed() {
    // Bind, learn the port, close: nothing listens there now.
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut host, guest) = tokio::io::duplex(64);
    PortForwards::new().spawn(Box::pin(guest));
    host.write_all(format!("TCP {port}\n").as_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn forwards_beyond_the_limit_are_closed_at_once() {
    let forwards = PortForwards::with_limit(1);
    let (_held, first) = tokio::io::duplex(64);
    forwards.spawn(Box::pin(first)); // waits for its TCP line, holding the only slot
    let (mut second_host, second) = tokio::io::duplex(64);
    forwards.spawn(Box::pin(second));
    let mut rest = Vec::new();
    second_host.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
