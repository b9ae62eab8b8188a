//! The hybrid-vsock handshake lines: `CONNECT <port>\n` (hull-proto's one rule, used by the
//! agent's host-mode listener and, through hull-vmm's byte-by-byte reader, by the VMM), `OK
//! <port>\n` and `TCP <port>\n`.
//!
//! Properties: no panic; a parsed port round-trips through the line builders; the typed parser
//! (`parse_connect_line`, the VMM's) and `parse_connect` accept the same lines and agree on the port.
#![no_main]

use hull_proto::handshake::{
    connect_line, ok_line, parse_connect, parse_ok, parse_tcp, tcp_line, MAX_CONNECT_LINE,
    MAX_OK_LINE, MAX_TCP_LINE,
};
use hull_vmm::virtio::vsock::connect_line::{parse_connect_line, LineBuffer, LineProgress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Builders: any number round-trips and fits the readers' bounds.
    if data.len() >= 4 {
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let line = connect_line(n);
        assert!(line.len() <= MAX_CONNECT_LINE);
        assert_eq!(parse_connect(line.as_bytes()), Some(n));
        assert_eq!(parse_connect_line(line.as_bytes()), Ok(n));
        let line = ok_line(n);
        assert!(line.len() <= MAX_OK_LINE);
        assert_eq!(parse_ok(line.as_bytes()), Some(n));
        let port = n as u16;
        let line = tcp_line(port);
        assert!(line.len() <= MAX_TCP_LINE);
        assert_eq!(parse_tcp(line.as_bytes()), (port != 0).then_some(port));
    }

    // Parsers on the raw input.
    let proto_port = parse_connect(data);
    if let Some(p) = proto_port {
        assert_eq!(parse_connect(connect_line(p).as_bytes()), Some(p));
    }
    if let Some(p) = parse_ok(data) {
        assert_eq!(parse_ok(ok_line(p).as_bytes()), Some(p));
    }
    if let Some(p) = parse_tcp(data) {
        assert_ne!(p, 0);
        assert!(data.len() <= MAX_TCP_LINE);
        assert_eq!(parse_tcp(tcp_line(p).as_bytes()), Some(p));
    }
    assert_eq!(
        parse_connect_line(data).ok(),
        proto_port,
        "the two CONNECT parsers disagree"
    );

    // The VMM's reader: bytes arrive one at a time; it stops at the newline or the bound.
    let mut buf = LineBuffer::default();
    for (i, &b) in data.iter().enumerate() {
        match buf.push(b) {
            Ok(LineProgress::Incomplete) => assert_eq!(buf.as_bytes().len(), i + 1),
            Ok(LineProgress::Complete) => {
                let line = buf.as_bytes();
                assert_eq!(line, &data[..=i]);
                assert_eq!(line.last(), Some(&b'\n'));
                if let Ok(p) = parse_connect_line(line) {
                    assert_eq!(parse_connect(line), Some(p));
                }
                break;
            }
            Err(_) => {
                assert!(
                    buf.as_bytes().len() <= hull_vmm::virtio::vsock::connect_line::MAX_LINE_LEN
                );
                break;
            }
        }
    }
});
