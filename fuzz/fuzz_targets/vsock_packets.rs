//! hull-vmm's virtio-vsock guest side without host sockets: tx descriptor chains built by a
//! hostile driver are parsed as the device does (`VsockPacket::from_tx_virtq_chain`, then
//! `Header::from_packet`), and the packets drive the per-connection state machine
//! (vmm/src/virtio/vsock/connection.rs) through a small model of the back-end's routing, with
//! an in-memory host stream that takes a fuzz-chosen number of bytes. rx chains are parsed with
//! `from_rx_virtq_chain` and filled with what the connections owe the guest.
//!
//! Properties: no panic; buffered guest data never exceeds BUF_ALLOC per connection; the host
//! never sends more than the guest's credit; every packet for the guest is addressed from the
//! host to the guest as a stream packet and round-trips through the wire format.
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use guest::Input;
use hull_vmm::virtio::vsock::connection::{ConnKey, Connection, Finish, GuestAction, BUF_ALLOC};
use hull_vmm::virtio::vsock::packet::{
    op, Header, HEADER_SIZE, HOST_CID, MAX_PACKET_DATA, TYPE_STREAM,
};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::Bytes;

const GUEST_CID: u64 = 3;
const MAX_CONNS: usize = 4;

/// A host stream that accepts `room` more bytes, then would block.
struct HostStream {
    room: usize,
    written: u64,
}

impl Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Entry {
    conn: Connection,
    stream: HostStream,
}

struct Model {
    conns: BTreeMap<ConnKey, Entry>,
    control: Vec<Header>,
    next_host_port: u32,
    now: Instant,
}

impl Model {
    fn check(&self) {
        for e in self.conns.values() {
            assert!(e.conn.pending_len() <= BUF_ALLOC as usize);
        }
        assert!(self.control.len() <= 4096);
    }

    /// What the back-end does with a parsed guest packet (addresses, routing, state machine).
    fn guest_packet(&mut self, hdr: &Header, payload: &[u8], input: &mut Input) {
        if hdr.src_cid != GUEST_CID {
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            self.rst(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let Some(entry) = self.conns.get_mut(&key) else {
            match hdr.op {
                // The host side "connects" when the input says so and there is room.
                op::REQUEST if self.conns.len() < MAX_CONNS && input.bool() => {
                    let conn = Connection::guest_initiated(GUEST_CID, hdr, self.now);
                    assert_eq!(conn.key(), key);
                    let room = usize::from(input.u16());
                    self.conns.insert(
                        key,
                        Entry {
                            conn,
                            stream: HostStream { room, written: 0 },
                        },
                    );
                }
                op::RST => {}
                _ => self.rst(hdr),
            }
            return;
        };
        let pending_before = entry.conn.pending_len();
        match entry.conn.on_guest_packet(hdr) {
            Ok(GuestAction::Data) => {
                if payload.len() != hdr.len as usize {
                    entry.conn.mark_broken();
                } else {
                    let before = entry.stream.written;
                    if entry
                        .conn
                        .forward_guest_data(&mut entry.stream, payload)
                        .is_err()
                    {
                        entry.conn.mark_broken();
                    }
                    // Every accepted byte is either written or buffered, never lost.
                    let written = (entry.stream.written - before) as usize;
                    assert_eq!(
                        written + entry.conn.pending_len(),
                        pending_before + payload.len()
                    );
                }
            }
            Ok(GuestAction::Established | GuestAction::Nothing | GuestAction::ShutdownHostRead) => {
            }
            Err(_) => entry.conn.mark_broken(),
        }
        self.sync(key);
    }

    fn rst(&mut self, hdr: &Header) {
        if hdr.op != op::RST && self.control.len() < 4096 {
            let mut r = hdr.rst_reply();
            r.src_cid = HOST_CID;
            r.dst_cid = GUEST_CID;
            self.control.push(r);
        }
    }

    fn sync(&mut self, key: ConnKey) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.conn.pending_len() > 0 && entry.conn.host_writable() {
            if entry.conn.flush_pending(&mut entry.stream).is_err() {
                entry.conn.mark_broken();
            }
        }
        if entry.conn.host_write_shutdown_due() {
            entry.conn.mark_host_write_shut();
        }
        if let Some(finish) = entry.conn.finish() {
            let mut entry = self.conns.remove(&key).unwrap();
            if finish == Finish::SendRst && entry.conn.known_to_guest() {
                let rst = entry.conn.rst_packet();
                self.control.push(rst);
            }
        }
    }

    /// Host-side events chosen by the input.
    fn host_event(&mut self, input: &mut Input) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        match input.u8() % 6 {
            0 if self.conns.len() < MAX_CONNS => {
                let conn = Connection::host_initiated(
                    GUEST_CID,
                    self.next_host_port,
                    input.u32(),
                    self.now,
                );
                self.next_host_port += 1;
                let key = conn.key();
                let room = usize::from(input.u16());
                self.conns.insert(
                    key,
                    Entry {
                        conn,
                        stream: HostStream { room, written: 0 },
                    },
                );
            }
            1 | 2 | 3 | 4 if !keys.is_empty() => {
                let key = keys[usize::from(input.u8()) % keys.len()];
                let entry = self.conns.get_mut(&key).unwrap();
                match input.u8() % 5 {
                    0 => {
                        entry.stream.room += usize::from(input.u16());
                        entry.conn.set_host_writable();
                    }
                    1 => entry.conn.set_host_readable(),
                    2 => entry.conn.on_host_eof(),
                    3 => entry.conn.on_host_would_block(),
                    _ => {
                        let _ = entry.conn.response_overdue(
                            self.now + Duration::from_secs(10),
                            Duration::from_secs(5),
                        );
                    }
                }
                self.sync(key);
            }
            _ => {}
        }
    }

    /// Fills one guest rx buffer (header, and data room of `data_room` bytes). Returns the header.
    fn fill_rx(&mut self, data_room: usize, input: &mut Input) -> Option<(Header, usize)> {
        if let Some(h) = self.control.pop() {
            return Some((h, 0));
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            let entry = self.conns.get_mut(&key).unwrap();
            if !entry.conn.has_rx_work() {
                continue;
            }
            if let Some(h) = entry.conn.next_control_packet() {
                self.sync(key);
                return Some((h, 0));
            }
            let credit = entry.conn.peer_credit() as usize;
            let budget = entry.conn.data_budget(data_room);
            assert!(budget <= data_room && budget <= credit && budget <= MAX_PACKET_DATA as usize);
            if budget > 0 {
                // The host stream has `read` bytes ready (0 = EOF).
                let read = usize::from(input.u16()) % (budget + 1);
                if read == 0 {
                    entry.conn.on_host_eof();
                    self.sync(key);
                    continue;
                }
                let h = entry.conn.data_packet(read as u32);
                assert!(entry.conn.peer_credit() as usize == credit - read);
                self.sync(key);
                return Some((h, read));
            }
        }
        None
    }
}

fn check_outgoing(h: &Header) {
    assert_eq!(
        (h.src_cid, h.dst_cid, h.type_),
        (HOST_CID, GUEST_CID, TYPE_STREAM)
    );
    assert!(h.len <= MAX_PACKET_DATA);
    assert_eq!(Header::from_bytes(&h.to_bytes()), *h);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let mut rx = guest::build_queue(&mem, &mut input, 0x0, true);
    let mut tx = guest::build_queue(&mem, &mut input, 0x1000, false);
    guest::fill_data(&mem, &mut input);
    let mut model = Model {
        conns: BTreeMap::new(),
        control: Vec::new(),
        next_host_port: 1 << 30,
        now: Instant::now(),
    };
    let mut scratch = vec![0u8; MAX_PACKET_DATA as usize];

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 4 {
            // Guest tx: the next chain on the tx queue.
            0 | 1 => {
                let Some(mut chain) = tx.pop_descriptor_chain(&mem) else {
                    continue;
                };
                let head = chain.head_index();
                if let Ok(pkt) = VsockPacket::from_tx_virtq_chain(&mem, &mut chain, MAX_PACKET_DATA)
                {
                    let hdr = Header::from_packet(&pkt);
                    let len = pkt.data_slice().map_or(0, |d| d.copy_to(&mut scratch[..]));
                    assert!(len <= MAX_PACKET_DATA as usize);
                    model.guest_packet(&hdr, &scratch[..len], &mut input);
                }
                let _ = tx.add_used(&mem, head, 0);
            }
            // Guest rx: the next chain on the rx queue gets what is owed.
            2 => {
                let Some(mut chain) = rx.pop_descriptor_chain(&mem) else {
                    continue;
                };
                let head = chain.head_index();
                let used = match VsockPacket::from_rx_virtq_chain(&mem, &mut chain, MAX_PACKET_DATA)
                {
                    Ok(pkt) => {
                        let room = pkt.data_slice().map_or(0, |d| d.len());
                        match model.fill_rx(room, &mut input) {
                            Some((h, n)) => {
                                check_outgoing(&h);
                                assert_eq!(h.len as usize, n);
                                pkt.header_slice().copy_from(&h.to_bytes());
                                if let Some(d) = pkt.data_slice() {
                                    d.write_slice(&vec![0x5a; n], 0).unwrap();
                                }
                                (HEADER_SIZE + n) as u32
                            }
                            None => {
                                rx.go_to_previous_position();
                                continue;
                            }
                        }
                    }
                    Err(_) => 0,
                };
                let _ = rx.add_used(&mem, head, used);
            }
            _ => model.host_event(&mut input),
        }
        model.check();
    }
});
