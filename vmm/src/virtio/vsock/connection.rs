//! One stream connection between a guest vsock socket and a host Unix stream: its state, credit
//! accounting, shutdown bookkeeping and the packets owed to the guest.
//!
//! Pure: no file descriptors. The back-end reports readiness and I/O results, and passes the host
//! stream in as a `std::io::Write` when guest data must be forwarded.
//!
//! Flow control (virtio 1.2, 5.10.6.3): each side advertises `buf_alloc` (its receive buffer) and
//! `fwd_cnt` (bytes it has consumed). A sender may have at most `peer_buf_alloc - (tx_cnt -
//! peer_fwd_cnt)` bytes in flight. Guest -> host bytes that the Unix stream cannot take right away
//! wait in `pending`, which can never exceed the [`BUF_ALLOC`] we advertise: a guest that sends
//! more than its credit is violating the protocol and the connection is reset.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::packet::{op, op_name, shutdown, Header, HOST_CID, MAX_PACKET_DATA, TYPE_STREAM};

/// Receive buffer we advertise per connection: the bound of guest -> host buffering.
pub const BUF_ALLOC: u32 = 128 * 1024;

/// Once this many forwarded bytes have not been reported to the guest, a CREDIT_UPDATE is owed.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// `(local port, peer port)`: the host-side port and the guest-side port of a connection.
pub type ConnKey = (u32, u32);

/// Connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent (or about to be), waiting for the guest's RESPONSE.
    AwaitingResponse,
    /// Both sides agreed; data may flow.
    Established,
}

/// A guest packet that breaks the protocol for this connection (the connection is then reset).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The operation is not valid in the current state.
    #[error("{op} is not valid in state {state:?}")]
    UnexpectedOp {
        /// Operation name.
        op: &'static str,
        /// State of the connection.
        state: State,
    },
    /// The guest sent more than the buffer space we advertised.
    #[error("guest sent {len} bytes with only {free} bytes of receive buffer free")]
    CreditOverrun {
        /// Payload length.
        len: u32,
        /// Free buffer space.
        free: u32,
    },
    /// RW after the guest shut down its send direction.
    #[error("guest sent data after shutting down its send direction")]
    DataAfterShutdown,
    /// Operation code unknown to virtio-vsock.
    #[error("unknown operation {0}")]
    UnknownOp(u16),
}

/// What the back-end must do on the host side after a guest packet was accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestAction {
    /// Nothing beyond re-evaluating the connection.
    Nothing,
    /// A host-initiated connection was accepted: tell the Unix client `OK <local port>\n`.
    Established,
    /// Forward the packet's payload with [`Connection::forward_guest_data`].
    Data,
    /// The guest will not receive any more: shut down reading on the Unix stream.
    ShutdownHostRead,
}

/// How a finished connection must be closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// The guest reset it: close the host side, send nothing.
    Silent,
    /// Close the host side and send RST to the guest.
    SendRst,
}

/// Credit, shutdown and control-packet state of one connection.
#[derive(Debug)]
pub struct Connection {
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    state: State,
    created: Instant,

    // Guest -> host direction.
    pending: VecDeque<u8>,
    fwd_cnt: u32,
    fwd_cnt_reported: u32,
    guest_shut_send: bool,
    guest_shut_rcv: bool,
    host_write_shut: bool,
    host_writable: bool,

    // Host -> guest direction.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    host_readable: bool,
    host_eof: bool,
    credit_request_sent: bool,

    // Control packets owed to the guest.
    owe_request: bool,
    owe_response: bool,
    owe_credit_update: bool,
    owe_shutdown_send: bool,

    // Termination.
    reset_by_guest: bool,
    broken: bool,
}

impl Connection {
    fn new(guest_cid: u64, local_port: u32, peer_port: u32, state: State, now: Instant) -> Self {
        Connection {
            guest_cid,
            local_port,
            peer_port,
            state,
            created: now,
            pending: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_reported: 0,
            guest_shut_send: false,
            guest_shut_rcv: false,
            host_write_shut: false,
            host_writable: true,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            host_readable: false,
            host_eof: false,
            credit_request_sent: false,
            owe_request: false,
            owe_response: false,
            owe_credit_update: false,
            owe_shutdown_send: false,
            reset_by_guest: false,
            broken: false,
        }
    }

    /// A connection the host asked for: a REQUEST to `peer_port` is owed to the guest.
    pub fn host_initiated(guest_cid: u64, local_port: u32, peer_port: u32, now: Instant) -> Self {
        let mut c = Self::new(
            guest_cid,
            local_port,
            peer_port,
            State::AwaitingResponse,
            now,
        );
        c.owe_request = true;
        c
    }

    /// A connection the guest asked for with `request`, whose host side is already connected:
    /// a RESPONSE is owed to the guest.
    pub fn guest_initiated(guest_cid: u64, request: &Header, now: Instant) -> Self {
        let mut c = Self::new(
            guest_cid,
            request.dst_port,
            request.src_port,
            State::Established,
            now,
        );
        c.update_peer_credit(request.buf_alloc, request.fwd_cnt);
        c.owe_response = true;
        c
    }

    /// `(local port, peer port)`.
    pub fn key(&self) -> ConnKey {
        (self.local_port, self.peer_port)
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes of guest data waiting for the Unix stream.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Credit the guest gave us: bytes we may still send it.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_request_sent = false;
        }
    }

    /// Applies a packet the guest sent on this connection (addresses already matched).
    pub fn on_guest_packet(&mut self, hdr: &Header) -> Result<GuestAction, ProtocolError> {
        self.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let unexpected = ProtocolError::UnexpectedOp {
            op: op_name(hdr.op),
            state: self.state,
        };
        if self.state == State::AwaitingResponse && !matches!(hdr.op, op::RESPONSE | op::RST) {
            return Err(unexpected);
        }
        match hdr.op {
            op::RST => {
                self.reset_by_guest = true;
                Ok(GuestAction::Nothing)
            }
            op::RESPONSE if self.state == State::AwaitingResponse => {
                self.state = State::Established;
                Ok(GuestAction::Established)
            }
            op::REQUEST | op::RESPONSE => Err(unexpected),
            op::SHUTDOWN => {
                let newly_rcv = hdr.flags & shutdown::RCV != 0 && !self.guest_shut_rcv;
                self.guest_shut_rcv |= hdr.flags & shutdown::RCV != 0;
                self.guest_shut_send |= hdr.flags & shutdown::SEND != 0;
                Ok(if newly_rcv {
                    GuestAction::ShutdownHostRead
                } else {
                    GuestAction::Nothing
                })
            }
            op::RW => {
                if self.guest_shut_send {
                    return Err(ProtocolError::DataAfterShutdown);
                }
                let free = BUF_ALLOC.saturating_sub(self.pending.len() as u32);
                if hdr.len > free {
                    return Err(ProtocolError::CreditOverrun { len: hdr.len, free });
                }
                Ok(GuestAction::Data)
            }
            op::CREDIT_UPDATE => Ok(GuestAction::Nothing),
            op::CREDIT_REQUEST => {
                self.owe_credit_update = true;
                Ok(GuestAction::Nothing)
            }
            other => Err(ProtocolError::UnknownOp(other)),
        }
    }

    /// Forwards an accepted RW payload to the host stream. What the stream cannot take now is kept
    /// in the pending buffer (bounded by [`BUF_ALLOC`], checked by [`Self::on_guest_packet`]).
    pub fn forward_guest_data<W: Write>(&mut self, stream: &mut W, data: &[u8]) -> io::Result<()> {
        let mut written = 0;
        if self.pending.is_empty() {
            written = self.write_some(stream, data)?;
        }
        let rest = &data[written..];
        let room = (BUF_ALLOC as usize).saturating_sub(self.pending.len());
        // on_guest_packet guarantees the payload fits; never grow past the bound regardless.
        self.pending.extend(&rest[..rest.len().min(room)]);
        Ok(())
    }

    /// Writes as much of the pending buffer as the host stream takes.
    pub fn flush_pending<W: Write>(&mut self, stream: &mut W) -> io::Result<()> {
        while !self.pending.is_empty() && self.host_writable {
            let (front, _) = self.pending.as_slices();
            let (n, blocked) = write_nonblocking(stream, front)?;
            self.pending.drain(..n);
            self.record_forwarded(n as u32);
            self.host_writable = !blocked;
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            // Give the memory back once a slow reader has caught up.
            self.pending = VecDeque::new();
        }
        Ok(())
    }

    /// Writes until done or the stream would block; counts what was written as forwarded.
    fn write_some<W: Write>(&mut self, stream: &mut W, data: &[u8]) -> io::Result<usize> {
        if !self.host_writable {
            return Ok(0);
        }
        let (n, blocked) = write_nonblocking(stream, data)?;
        self.host_writable = !blocked;
        self.record_forwarded(n as u32);
        Ok(n)
    }

    fn record_forwarded(&mut self, n: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_reported) >= CREDIT_UPDATE_THRESHOLD {
            self.owe_credit_update = true;
        }
    }

    /// The host stream became writable (EPOLLOUT).
    pub fn set_host_writable(&mut self) {
        self.host_writable = true;
    }

    /// Whether the host stream is believed writable.
    pub fn host_writable(&self) -> bool {
        self.host_writable
    }

    /// The host stream became readable (EPOLLIN / hang-up).
    pub fn set_host_readable(&mut self) {
        self.host_readable = true;
    }

    /// A read from the host stream would block.
    pub fn on_host_would_block(&mut self) {
        self.host_readable = false;
    }

    /// The host stream reached end of file: the guest is owed SHUTDOWN(SEND).
    pub fn on_host_eof(&mut self) {
        self.host_readable = false;
        if !self.host_eof {
            self.host_eof = true;
            self.owe_shutdown_send = true;
        }
    }

    /// The guest is done sending and everything was forwarded: shut down writing on the stream.
    pub fn host_write_shutdown_due(&self) -> bool {
        self.guest_shut_send && self.pending.is_empty() && !self.host_write_shut
    }

    /// Records that the host stream's write side was shut down.
    pub fn mark_host_write_shut(&mut self) {
        self.host_write_shut = true;
    }

    /// A host I/O error or a protocol violation: the connection must be reset.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// How many bytes may be read from the host stream into a guest buffer of `buf_len` bytes
    /// (0 when no data may be sent now).
    pub fn data_budget(&self, buf_len: usize) -> usize {
        if !self.can_send_data() {
            return 0;
        }
        buf_len
            .min(self.peer_credit() as usize)
            .min(MAX_PACKET_DATA as usize)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.guest_shut_rcv
            && !self.broken
            && !self.reset_by_guest
            && !self.owe_response
            && self.peer_credit() > 0
    }

    fn wants_credit_request(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.guest_shut_rcv
            && !self.credit_request_sent
            && self.peer_credit() == 0
    }

    /// Whether the connection has a packet for the guest (control, or data it may send).
    pub fn has_rx_work(&self) -> bool {
        self.finish().is_none()
            && (self.owe_request
                || self.owe_response
                || self.owe_credit_update
                || self.owe_shutdown_send
                || self.wants_credit_request()
                || self.can_send_data())
    }

    /// Takes the next owed control packet, if any.
    pub fn next_control_packet(&mut self) -> Option<Header> {
        if self.finish().is_some() {
            return None;
        }
        if self.owe_request {
            self.owe_request = false;
            return Some(self.header(op::REQUEST, 0, 0));
        }
        if self.owe_response {
            self.owe_response = false;
            return Some(self.header(op::RESPONSE, 0, 0));
        }
        if self.wants_credit_request() {
            self.credit_request_sent = true;
            return Some(self.header(op::CREDIT_REQUEST, 0, 0));
        }
        if self.owe_credit_update {
            return Some(self.header(op::CREDIT_UPDATE, 0, 0));
        }
        if self.owe_shutdown_send {
            self.owe_shutdown_send = false;
            return Some(self.header(op::SHUTDOWN, 0, shutdown::SEND));
        }
        None
    }

    /// Header of a data packet carrying `len` bytes just read from the host stream.
    pub fn data_packet(&mut self, len: u32) -> Header {
        self.tx_cnt = self.tx_cnt.wrapping_add(len);
        self.header(op::RW, len, 0)
    }

    /// The RST that closes this connection.
    pub fn rst_packet(&mut self) -> Header {
        self.header(op::RST, 0, 0)
    }

    /// Builds a packet for the guest; every packet carries our credit information.
    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.fwd_cnt_reported = self.fwd_cnt;
        self.owe_credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Whether the connection is over, and how to close it.
    pub fn finish(&self) -> Option<Finish> {
        if self.reset_by_guest {
            return Some(Finish::Silent);
        }
        if self.broken {
            return Some(Finish::SendRst);
        }
        let flushed = self.pending.is_empty();
        let guest_closed = self.guest_shut_send && self.guest_shut_rcv;
        let both_done = self.guest_shut_send && self.host_eof;
        (flushed && (guest_closed || both_done)).then_some(Finish::SendRst)
    }

    /// Whether the guest has heard of this connection (a host-initiated one is unknown to it until
    /// its REQUEST went out).
    pub fn known_to_guest(&self) -> bool {
        !self.owe_request
    }

    /// A host-initiated connection the guest has not answered within `timeout`.
    pub fn response_overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.state == State::AwaitingResponse
            && now.saturating_duration_since(self.created) >= timeout
    }
}

/// Writes `data` until it is all written or the stream would block.
/// Returns the bytes written and whether the stream blocked.
fn write_nonblocking<W: Write>(stream: &mut W, data: &[u8]) -> io::Result<(usize, bool)> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((written, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: u64 = 3;

    fn guest(op: u16, len: u32, flags: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1024,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn established(buf_alloc: u32) -> Connection {
        let req = guest(op::REQUEST, 0, 0, buf_alloc, 0);
        let mut c = Connection::guest_initiated(CID, &req, Instant::now());
        assert_eq!(c.next_control_packet().map(|h| h.op), Some(op::RESPONSE));
        c
    }

    /// A writer that accepts at most `room` bytes and then reports WouldBlock.
    struct SlowWriter {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for SlowWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn host_initiated_handshake() {
        let mut c = Connection::host_initiated(CID, 1 << 30, 1024, Instant::now());
        assert!(!c.known_to_guest());
        let req = c.next_control_packet().unwrap();
        assert!(c.known_to_guest());
        assert_eq!(
            (req.op, req.src_cid, req.dst_cid),
            (op::REQUEST, HOST_CID, CID)
        );
        assert_eq!(
            (req.src_port, req.dst_port, req.buf_alloc),
            (1 << 30, 1024, BUF_ALLOC)
        );
        assert_eq!(c.next_control_packet(), None);
        let mut resp = guest(op::RESPONSE, 0, 0, 4096, 0);
        resp.src_port = 1024;
        resp.dst_port = 1 << 30;
        assert_eq!(c.on_guest_packet(&resp), Ok(GuestAction::Established));
        assert_eq!(c.state(), State::Established);
        assert_eq!(c.peer_credit(), 4096);
        // A second RESPONSE is a protocol error.
        assert!(c.on_guest_packet(&resp).is_err());
    }

    #[test]
    fn awaiting_response_rejects_data_and_times_out() {
        let t0 = Instant::now();
        let mut c = Connection::host_initiated(CID, 7, 1024, t0);
        assert!(matches!(
            c.on_guest_packet(&guest(op::RW, 1, 0, 0, 0)),
            Err(ProtocolError::UnexpectedOp { .. })
        ));
        assert!(!c.response_overdue(t0 + Duration::from_secs(1), Duration::from_secs(2)));
        assert!(c.response_overdue(t0 + Duration::from_secs(2), Duration::from_secs(2)));
    }

    #[test]
    fn sends_only_within_guest_credit() {
        let mut c = established(1000);
        c.set_host_readable();
        assert_eq!(c.data_budget(4096), 1000);
        let h = c.data_packet(600);
        assert_eq!((h.op, h.len), (op::RW, 600));
        assert_eq!(c.data_budget(4096), 400);
        c.data_packet(400);
        assert_eq!(c.data_budget(4096), 0);
        // Out of credit while readable: one CREDIT_REQUEST, not more.
        assert!(c.has_rx_work());
        assert_eq!(
            c.next_control_packet().map(|h| h.op),
            Some(op::CREDIT_REQUEST)
        );
        assert!(!c.has_rx_work());
        assert_eq!(c.next_control_packet(), None);
        // The guest consumed 700 bytes.
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, 0, 1000, 700))
            .unwrap();
        assert_eq!(c.data_budget(4096), 700);
        assert_eq!(c.data_budget(100), 100);
    }

    #[test]
    fn credit_arithmetic_wraps_and_resists_lies() {
        let mut c = established(1000);
        c.tx_cnt = u32::MAX - 10;
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, 0, 1000, u32::MAX - 10))
            .unwrap();
        c.set_host_readable();
        assert_eq!(c.data_budget(4096), 1000);
        c.data_packet(500); // tx_cnt wraps past zero
        assert_eq!(c.data_budget(4096), 500);
        // A guest claiming to have consumed more than we sent gets no extra credit.
        c.on_guest_packet(&guest(op::CREDIT_UPDATE, 0, 0, 1000, 12345))
            .unwrap();
        assert_eq!(c.data_budget(4096), 0);
    }

    #[test]
    fn guest_data_beyond_advertised_buffer_is_rejected() {
        let mut c = established(0);
        let mut w = SlowWriter {
            room: 0,
            got: vec![],
        };
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 64 * 1024, 0, 0, 0)),
            Ok(GuestAction::Data)
        );
        c.forward_guest_data(&mut w, &[1u8; 64 * 1024]).unwrap();
        c.on_guest_packet(&guest(op::RW, 64 * 1024, 0, 0, 0))
            .unwrap();
        c.forward_guest_data(&mut w, &[2u8; 64 * 1024]).unwrap();
        assert_eq!(c.pending_len(), BUF_ALLOC as usize);
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 1, 0, 0, 0)),
            Err(ProtocolError::CreditOverrun { len: 1, free: 0 })
        );
    }

    #[test]
    fn slow_writer_buffers_then_flushes_and_reports_credit() {
        let mut c = established(0);
        let mut w = SlowWriter {
            room: 10,
            got: vec![],
        };
        let data: Vec<u8> = (0..CREDIT_UPDATE_THRESHOLD + 100)
            .map(|i| i as u8)
            .collect();
        c.on_guest_packet(&guest(op::RW, data.len() as u32, 0, 0, 0))
            .unwrap();
        c.forward_guest_data(&mut w, &data).unwrap();
        assert_eq!(w.got.len(), 10);
        assert_eq!(c.pending_len(), data.len() - 10);
        assert!(!c.host_writable());
        assert!(!c.has_rx_work());
        // The reader catches up.
        w.room = usize::MAX;
        c.set_host_writable();
        c.flush_pending(&mut w).unwrap();
        assert_eq!(w.got, data);
        assert_eq!(c.pending_len(), 0);
        // More than the threshold was forwarded: a CREDIT_UPDATE is owed and reports it all.
        let upd = c.next_control_packet().unwrap();
        assert_eq!(
            (upd.op, upd.fwd_cnt),
            (op::CREDIT_UPDATE, data.len() as u32)
        );
        assert_eq!(c.next_control_packet(), None);
    }

    #[test]
    fn credit_request_is_answered() {
        let mut c = established(0);
        c.on_guest_packet(&guest(op::CREDIT_REQUEST, 0, 0, 0, 0))
            .unwrap();
        let upd = c.next_control_packet().unwrap();
        assert_eq!((upd.op, upd.buf_alloc), (op::CREDIT_UPDATE, BUF_ALLOC));
    }

    #[test]
    fn half_close_from_guest_then_host_eof_finishes() {
        let mut c = established(1000);
        let shut = guest(op::SHUTDOWN, 0, shutdown::SEND, 1000, 0);
        assert_eq!(c.on_guest_packet(&shut), Ok(GuestAction::Nothing));
        assert!(c.host_write_shutdown_due());
        c.mark_host_write_shut();
        assert!(!c.host_write_shutdown_due());
        assert_eq!(c.finish(), None);
        // Data after SHUTDOWN(SEND) is a violation.
        assert_eq!(
            c.on_guest_packet(&guest(op::RW, 1, 0, 1000, 0)),
            Err(ProtocolError::DataAfterShutdown)
        );
        c.on_host_eof();
        assert_eq!(c.finish(), Some(Finish::SendRst));
    }

    #[test]
    fn host_eof_sends_shutdown_and_stops_data() {
        let mut c = established(1000);
        c.set_host_readable();
        c.on_host_eof();
        assert_eq!(c.data_budget(4096), 0);
        let s = c.next_control_packet().unwrap();
        assert_eq!((s.op, s.flags), (op::SHUTDOWN, shutdown::SEND));
        assert_eq!(c.finish(), None);
        assert!(!c.has_rx_work());
    }

    #[test]
    fn guest_full_shutdown_waits_for_pending_data() {
        let mut c = established(1000);
        let mut w = SlowWriter {
            room: 2,
            got: vec![],
        };
        c.on_guest_packet(&guest(op::RW, 5, 0, 1000, 0)).unwrap();
        c.forward_guest_data(&mut w, b"hello").unwrap();
        let shut = guest(op::SHUTDOWN, 0, shutdown::BOTH, 1000, 0);
        assert_eq!(c.on_guest_packet(&shut), Ok(GuestAction::ShutdownHostRead));
        assert_eq!(c.finish(), None, "pending data must reach the host first");
        w.room = 10;
        c.set_host_writable();
        c.flush_pending(&mut w).unwrap();
        assert_eq!(w.got, b"hello");
        assert_eq!(c.finish(), Some(Finish::SendRst));
        assert_eq!(c.rst_packet().op, op::RST);
    }

    #[test]
    fn guest_rst_finishes_silently_and_unknown_ops_are_errors() {
        let mut c = established(1000);
        assert_eq!(
            c.on_guest_packet(&guest(99, 0, 0, 0, 0)),
            Err(ProtocolError::UnknownOp(99))
        );
        assert!(c.on_guest_packet(&guest(op::REQUEST, 0, 0, 0, 0)).is_err());
        c.on_guest_packet(&guest(op::RST, 0, 0, 0, 0)).unwrap();
        assert_eq!(c.finish(), Some(Finish::Silent));
        assert!(!c.has_rx_work());
    }
}
