//! virtio-vsock packet header: constants and a plain copy of the header fields.
//!
//! The wire header (`struct virtio_vsock_hdr`, virtio 1.2 section 5.10.6) is 44 little-endian bytes.
//! [`Header`] is a plain Rust copy of it: packets from the guest are read once into a `Header`
//! (so later checks never re-read guest memory), and packets to the guest are built as a `Header`
//! and written out in one go with [`Header::to_bytes`].

use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};

/// The CID of the host, the only destination guest packets may address.
pub const HOST_CID: u64 = 2;

/// Socket type: stream (the only one this device offers; no SEQPACKET).
pub const TYPE_STREAM: u16 = 1;

/// Operation codes (`enum virtio_vsock_op`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset / refused.
    pub const RST: u16 = 3;
    /// One or both directions closed (see [`super::shutdown`]).
    pub const SHUTDOWN: u16 = 4;
    /// Stream data.
    pub const RW: u16 = 5;
    /// Unsolicited credit information.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer to send its credit information.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Flags of an [`op::SHUTDOWN`] packet.
pub mod shutdown {
    /// The sender will not receive any more data.
    pub const RCV: u32 = 1;
    /// The sender will not send any more data.
    pub const SEND: u32 = 2;
    /// Both directions.
    pub const BOTH: u32 = RCV | SEND;
}

/// Event id of `struct virtio_vsock_event` telling the driver that all connections are gone.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// Size of the wire header.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;

/// Largest payload accepted in one guest packet and written into one guest buffer
/// (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PACKET_DATA: u32 = 64 * 1024;

/// A decoded packet header. All fields are plain host-endian values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags ([`shutdown`] for SHUTDOWN).
    pub flags: u32,
    /// Receive buffer space of the sender.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// Copies the header fields out of a parsed packet.
    pub fn from_packet<B: vm_memory::bitmap::BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Header {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// Encodes the header in wire format (little endian, packed).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Decodes a header from wire format.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or([0; 2]));
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The RST answering this packet: addresses swapped, no payload, no credit information.
    pub fn rst_reply(&self) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }
}

/// Name of an operation for log lines.
pub fn op_name(code: u16) -> &'static str {
    match code {
        op::REQUEST => "REQUEST",
        op::RESPONSE => "RESPONSE",
        op::RST => "RST",
        op::SHUTDOWN => "SHUTDOWN",
        op::RW => "RW",
        op::CREDIT_UPDATE => "CREDIT_UPDATE",
        op::CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            src_cid: 0x1122_3344_5566_7788,
            dst_cid: 2,
            src_port: 0xdead_beef,
            dst_port: 1024,
            len: 17,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: shutdown::BOTH,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0xffff_fff0,
        }
    }

    #[test]
    fn header_round_trips_through_wire_format() {
        let h = sample();
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn wire_layout_matches_virtio_spec_offsets() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[24..28], &17u32.to_le_bytes());
        assert_eq!(&b[28..30], &1u16.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(&b[40..44], &0xffff_fff0u32.to_le_bytes());
        assert_eq!(HEADER_SIZE, 44);
    }

    #[test]
    fn rst_reply_swaps_addresses_and_carries_no_data() {
        let r = sample().rst_reply();
        assert_eq!((r.src_cid, r.dst_cid), (2, 0x1122_3344_5566_7788));
        assert_eq!((r.src_port, r.dst_port), (1024, 0xdead_beef));
        assert_eq!(
            (r.op, r.type_, r.len, r.flags),
            (op::RST, TYPE_STREAM, 0, 0)
        );
    }
}
