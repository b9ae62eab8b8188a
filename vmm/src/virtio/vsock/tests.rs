//! Device tests: a fake driver builds rx/tx/event descriptor chains in guest memory with
//! virtio-queue's `MockSplitQueue`, and real Unix sockets play the host side. The device runs in
//! a real `event_manager::EventManager` on its own thread, as in the VMM.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::backend::FIRST_HOST_PORT;
use super::connection::BUF_ALLOC;
use super::device::{EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use super::packet::{
    op, shutdown, Header, EVENT_TRANSPORT_RESET, HEADER_SIZE, HOST_CID, TYPE_STREAM,
};
use super::{Vsock, VsockError};
use crate::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

const CID: u64 = 3;
const QSIZE: u16 = 256;
/// Guest buffer space per descriptor (64 KiB payload + room for a header).
const SLOT: u64 = 0x1_1000;
const RX_DATA_LEN: u32 = 4096;
const WAIT: Duration = Duration::from_secs(5);

type Mem = GuestMemoryMmap<()>;

/// Driver side of one split queue, with a fixed buffer per descriptor index.
///
/// Built from virtio-queue's mock parts. `MockSplitQueue` itself is not used for the layout: it
/// places the used ring half-way into the avail ring (it adds the ring's entry count, not its byte
/// size), which corrupts both rings once more than half the entries have been used.
struct DriverQueue {
    desc_table: DescriptorTable<'static, Mem>,
    avail: AvailRing<'static, Mem>,
    used: UsedRing<'static, Mem>,
    addrs: (u64, u64, u64),
    mem: &'static Mem,
    buf_base: u64,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    used_seen: u16,
    /// Ring size: the device's maximum for this queue, as Linux's driver takes it.
    size: u16,
}

impl DriverQueue {
    fn new(mem: &'static Mem, ring_addr: u64, buf_base: u64, size: u16) -> Self {
        assert!(
            size <= QSIZE,
            "the harness lays rings and buffers out for {QSIZE}"
        );
        let (desc, avail, used) = (ring_addr, ring_addr + 0x1000, ring_addr + 0x2000);
        DriverQueue {
            desc_table: DescriptorTable::new(mem, GuestAddress(desc), size),
            avail: AvailRing::new(mem, GuestAddress(avail), size),
            used: UsedRing::new(mem, GuestAddress(used), size),
            addrs: (desc, avail, used),
            mem,
            buf_base,
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            avail_idx: 0,
            used_seen: 0,
            size,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.addrs.0))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.addrs.1))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.addrs.2))
            .unwrap();
        q.set_ready(true);
        q
    }

    fn buf_addr(&self, desc: u16) -> GuestAddress {
        GuestAddress(self.buf_base + u64::from(desc) * SLOT)
    }

    /// Publishes a chain of buffers `(len, device-writable, contents)`. None if out of descriptors.
    fn add_chain(&mut self, parts: &[(u32, bool, &[u8])]) -> Option<Vec<u16>> {
        if self.free.len() < parts.len() {
            return None;
        }
        let idxs: Vec<u16> = (0..parts.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, (len, writable, contents)) in parts.iter().enumerate() {
            let mut flags = if *writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let next = if i + 1 < parts.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                idxs[i + 1]
            } else {
                0
            };
            let addr = self.buf_addr(idxs[i]);
            self.mem.write_slice(contents, addr).unwrap();
            let desc = SplitDescriptor::new(addr.0, *len, flags, next);
            self.desc_table
                .store(idxs[i], RawDescriptor::from(desc))
                .unwrap();
        }
        let slot = usize::from(self.avail_idx % self.size);
        self.avail.ring().ref_at(slot).unwrap().store(idxs[0]);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.avail.idx().store(self.avail_idx);
        self.chains.insert(idxs[0], idxs.clone());
        Some(idxs)
    }

    /// The next chain the device returned: its descriptors and the used length.
    fn pop_used(&mut self) -> Option<(Vec<u16>, u32)> {
        if self.used.idx().load() == self.used_seen {
            return None;
        }
        let elem = self
            .used
            .ring()
            .ref_at(usize::from(self.used_seen % self.size))
            .unwrap()
            .load();
        self.used_seen = self.used_seen.wrapping_add(1);
        let idxs = self
            .chains
            .remove(&(elem.id() as u16))
            .expect("used id is a published head");
        self.free.extend(idxs.iter().copied());
        Some((idxs, elem.len()))
    }
}

/// A fake guest driver plus the device running in an event loop thread.
struct Harness {
    dev: Arc<Mutex<Vsock>>,
    mem: &'static Mem,
    rx: DriverQueue,
    tx: DriverQueue,
    event: DriverQueue,
    kicks: Vec<EventFd>,
    inbox: VecDeque<(Header, Vec<u8>)>,
    refill_rx: bool,
    uds: PathBuf,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    event_loop: Option<JoinHandle<()>>,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hull-vsock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Harness {
    fn new(name: &str) -> Self {
        Self::with_device(name, |d| d, true)
    }

    fn with_device(name: &str, configure: impl FnOnce(Vsock) -> Vsock, activate: bool) -> Self {
        let dir = temp_dir(name);
        let uds = dir.join("v.sock");
        let dev = configure(Vsock::new(CID, uds.clone()).unwrap());
        let sizes = dev.queue_max_sizes().to_vec();
        let kicks = dev
            .queue_events()
            .iter()
            .map(|e| e.try_clone().unwrap())
            .collect();
        let dev = Arc::new(Mutex::new(dev));
        let mem: &'static Mem = Box::leak(Box::new(
            Mem::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap(),
        ));
        let mut h = Harness {
            dev: dev.clone(),
            mem,
            rx: DriverQueue::new(mem, 0x0, 0x10_0000, sizes[RX_QUEUE]),
            tx: DriverQueue::new(
                mem,
                0x1_0000,
                0x10_0000 + SLOT * u64::from(QSIZE),
                sizes[TX_QUEUE],
            ),
            event: DriverQueue::new(
                mem,
                0x2_0000,
                0x10_0000 + 2 * SLOT * u64::from(QSIZE),
                sizes[EVENT_QUEUE],
            ),
            kicks,
            inbox: VecDeque::new(),
            refill_rx: true,
            uds,
            dir,
            stop: Arc::new(AtomicBool::new(false)),
            event_loop: None,
        };
        let stop = h.stop.clone();
        h.event_loop = Some(std::thread::spawn(move || {
            let mut em = EventManager::<Arc<Mutex<Vsock>>>::new().unwrap();
            em.add_subscriber(dev);
            while !stop.load(Ordering::Relaxed) {
                em.run_with_timeout(20).unwrap();
            }
        }));
        if activate {
            h.activate();
        }
        h
    }

    fn activate(&mut self) {
        let queues = vec![self.rx.queue(), self.tx.queue(), self.event.queue()];
        let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut dev = self.dev.lock().unwrap();
        dev.set_acked_features(VIRTIO_F_VERSION_1);
        dev.activate(self.mem.clone(), irq, queues).unwrap();
    }

    fn kick(&self, queue: usize) {
        self.kicks[queue].write(1).unwrap();
    }

    fn post_rx_buffers(&mut self, n: usize) {
        for _ in 0..n {
            if self
                .rx
                .add_chain(&[(HEADER_SIZE as u32, true, &[]), (RX_DATA_LEN, true, &[])])
                .is_none()
            {
                break;
            }
        }
        self.kick(RX_QUEUE);
    }

    /// A packet from the guest with our default credit (64 KiB, nothing consumed).
    fn pkt(&self, op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 64 * 1024,
            ..Header::default()
        }
    }

    fn send(&mut self, mut hdr: Header, data: &[u8]) {
        hdr.len = data.len() as u32;
        let bytes = hdr.to_bytes();
        let deadline = Instant::now() + WAIT;
        loop {
            self.collect();
            let added = if data.is_empty() {
                self.tx.add_chain(&[(HEADER_SIZE as u32, false, &bytes)])
            } else {
                self.tx
                    .add_chain(&[(HEADER_SIZE as u32, false, &bytes), (hdr.len, false, data)])
            };
            if added.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "tx queue stayed full");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.kick(TX_QUEUE);
    }

    /// Reads what the device returned: rx packets into the inbox, tx buffers back to the pool.
    fn collect(&mut self) {
        while self.tx.pop_used().is_some() {}
        let mut refilled = false;
        while let Some((idxs, len)) = self.rx.pop_used() {
            assert!(
                len as usize >= HEADER_SIZE,
                "rx buffer returned with {len} bytes"
            );
            let mut raw = [0u8; HEADER_SIZE];
            self.mem
                .read_slice(&mut raw, self.rx.buf_addr(idxs[0]))
                .unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(hdr.len as usize, len as usize - HEADER_SIZE);
            let mut data = vec![0u8; hdr.len as usize];
            if hdr.len > 0 {
                self.mem
                    .read_slice(&mut data, self.rx.buf_addr(idxs[1]))
                    .unwrap();
            }
            self.inbox.push_back((hdr, data));
            if self.refill_rx {
                self.rx
                    .add_chain(&[(HEADER_SIZE as u32, true, &[]), (RX_DATA_LEN, true, &[])])
                    .unwrap();
                refilled = true;
            }
        }
        if refilled {
            self.kick(RX_QUEUE);
        }
    }

    /// Waits for the first packet matching `pred` (other packets stay in the inbox).
    fn try_wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Header) -> bool,
    ) -> Option<(Header, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            self.collect();
            if let Some(pos) = self.inbox.iter().position(|(h, _)| pred(h)) {
                return self.inbox.remove(pos);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&Header) -> bool) -> (Header, Vec<u8>) {
        match self.try_wait_for(WAIT, pred) {
            Some(p) => p,
            None => panic!("no {what} from the device; inbox: {:?}", self.inbox),
        }
    }

    /// Waits for a packet `op` on connection (host port `local`, guest port `peer`).
    fn wait_op(&mut self, op_code: u16, local: u32, peer: u32) -> (Header, Vec<u8>) {
        self.wait_for(super::packet::op_name(op_code), |h| {
            h.op == op_code && h.src_port == local && h.dst_port == peer
        })
    }

    /// Host client connects through the hybrid socket to guest port `port`; the guest accepts.
    /// Returns the client and the host port.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(&self.uds).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let (req, _) = self.wait_for("REQUEST", |h| h.op == op::REQUEST && h.dst_port == port);
        self.send(self.pkt(op::RESPONSE, port, req.src_port), &[]);
        let line = read_line(&mut client);
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (client, req.src_port)
    }

    fn device<R>(&self, f: impl FnOnce(&mut Vsock) -> R) -> R {
        f(&mut self.dev.lock().unwrap())
    }

    fn wait_until(&mut self, what: &str, cond: impl Fn(&Vsock) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !self.device(|d| cond(d)) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            self.collect();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.event_loop.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one line byte by byte (as a real hybrid-vsock client must, to not over-read).
fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(s.read(&mut b).unwrap(), 1, "stream closed after {line:?}");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Asserts the stream reaches end-of-file (the device closed it).
fn assert_closed(s: &mut UnixStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, read {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

fn listen(path: &Path) -> UnixListener {
    UnixListener::bind(path).unwrap()
}

#[test]
fn new_rejects_reserved_cids_and_existing_paths() {
    let dir = temp_dir("new");
    let path = dir.join("v.sock");
    assert!(matches!(
        Vsock::new(2, path.clone()),
        Err(VsockError::InvalidCid(2))
    ));
    assert!(matches!(
        Vsock::new(u64::from(u32::MAX), path.clone()),
        Err(VsockError::InvalidCid(_))
    ));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        Vsock::new(3, path.clone()),
        Err(VsockError::PathExists(_))
    ));
    std::fs::remove_file(&path).unwrap();
    let missing_dir = dir.join("no/such/dir/v.sock");
    assert!(matches!(
        Vsock::new(3, missing_dir),
        Err(VsockError::Bind { .. })
    ));
    // A device removes its socket when dropped, so the path can be reused.
    drop(Vsock::new(3, path.clone()).unwrap());
    assert!(!path.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_space_and_features() {
    let dir = temp_dir("config");
    let dev = Vsock::new(7, dir.join("v.sock")).unwrap();
    assert_eq!(dev.device_type(), 19);
    // rx: what the driver fills with a buffer each and keeps for good; tx and event: 256.
    assert_eq!(dev.queue_max_sizes(), &[64, 256, 256]);
    assert_eq!(dev.avail_features(), VIRTIO_F_VERSION_1);
    let mut cid = [0xffu8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 7);
    let mut tail = [0xffu8; 8];
    dev.read_config(4, &mut tail);
    assert_eq!(tail, [0; 8]);
    dev.read_config(u64::MAX, &mut tail);
    assert_eq!(tail, [0; 8]);
    drop(dev);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_initiated_connection_carries_data_both_ways() {
    let mut h = Harness::new("host-conn");
    h.post_rx_buffers(16);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"CONNECT 1024\n").unwrap();
    let (req, _) = h.wait_for("REQUEST", |x| x.op == op::REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port, req.type_),
        (HOST_CID, CID, 1024, TYPE_STREAM)
    );
    assert!(req.src_port >= FIRST_HOST_PORT);
    assert_eq!(req.buf_alloc, BUF_ALLOC);
    let host_port = req.src_port;

    h.send(h.pkt(op::RESPONSE, 1024, host_port), &[]);
    assert_eq!(read_line(&mut client), format!("OK {host_port}\n"));

    client.write_all(b"ping from host").unwrap();
    let (rw, data) = h.wait_op(op::RW, host_port, 1024);
    assert_eq!(data, b"ping from host");
    assert_eq!(rw.len, 14);

    h.send(h.pkt(op::RW, 1024, host_port), b"pong from guest");
    let mut buf = [0u8; 15];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong from guest");
    assert_eq!(h.device(|d| d.connection_count()), 1);
}

#[test]
fn host_initiated_connection_refused_by_guest_closes_client() {
    let mut h = Harness::new("host-refused");
    h.post_rx_buffers(4);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 7777\n").unwrap();
    let (req, _) = h.wait_for("REQUEST", |x| x.op == op::REQUEST && x.dst_port == 7777);
    h.send(h.pkt(op::RST, 7777, req.src_port), &[]);
    assert_closed(&mut client);
    h.wait_until("the connection is gone", |d| d.connection_count() == 0);
}

#[test]
fn guest_response_timeout_resets_and_closes_client() {
    let mut h = Harness::with_device(
        "host-timeout",
        |d| d.with_handshake_timeout(Duration::from_millis(200)),
        true,
    );
    h.post_rx_buffers(4);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 80\n").unwrap();
    let (req, _) = h.wait_for("REQUEST", |x| x.op == op::REQUEST);
    // The guest never answers.
    h.wait_op(op::RST, req.src_port, 80);
    assert_closed(&mut client);
}

#[test]
fn host_client_times_out_quietly_when_guest_takes_no_packets() {
    let mut h = Harness::with_device(
        "no-rx-timeout",
        |d| d.with_handshake_timeout(Duration::from_millis(200)),
        true,
    );
    // No rx buffers: the REQUEST cannot reach the guest, and the client is dropped on timeout.
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 1024\n").unwrap();
    assert_closed(&mut client);
    h.wait_until("the connection is gone", |d| d.connection_count() == 0);
    // The guest never heard of it: no REQUEST and no RST once buffers arrive.
    h.post_rx_buffers(4);
    assert!(h
        .try_wait_for(Duration::from_millis(200), |_| true)
        .is_none());
}

#[test]
fn guest_initiated_connection_to_listener_and_to_missing_port() {
    let mut h = Harness::new("guest-conn");
    h.post_rx_buffers(16);
    let listener = listen(&PathBuf::from(format!("{}_5000", h.uds.display())));

    h.send(h.pkt(op::REQUEST, 40000, 5000), &[]);
    let (resp, _) = h.wait_op(op::RESPONSE, 5000, 40000);
    assert_eq!((resp.src_cid, resp.dst_cid), (HOST_CID, CID));
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();

    h.send(h.pkt(op::RW, 40000, 5000), b"hello host");
    let mut buf = [0u8; 10];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello host");
    server.write_all(b"hello guest").unwrap();
    let (_, data) = h.wait_op(op::RW, 5000, 40000);
    assert_eq!(data, b"hello guest");

    // Nothing listens on port 5001.
    h.send(h.pkt(op::REQUEST, 40001, 5001), &[]);
    let (rst, _) = h.wait_op(op::RST, 5001, 40001);
    assert_eq!(rst.dst_cid, CID);
    assert_eq!(h.device(|d| d.connection_count()), 1);
}

#[test]
fn host_respects_guest_credit_and_resumes_after_credit_update() {
    let mut h = Harness::new("credit");
    h.post_rx_buffers(64);
    let listener = listen(&PathBuf::from(format!("{}_6000", h.uds.display())));
    let mut req = h.pkt(op::REQUEST, 41000, 6000);
    req.buf_alloc = 10_000;
    h.send(req, &[]);
    h.wait_op(op::RESPONSE, 6000, 41000);
    let (mut server, _) = listener.accept().unwrap();
    let payload: Vec<u8> = (0..25_000u32).map(|i| (i % 251) as u8).collect();
    server.write_all(&payload).unwrap();

    let mut received = Vec::new();
    let mut fwd_cnt = 0u32;
    while received.len() < payload.len() {
        // Take everything the device sends now; it must stop at the credit limit.
        let credit_end = fwd_cnt as usize + 10_000;
        while let Some((hdr, data)) = h.try_wait_for(Duration::from_millis(300), |x| {
            x.dst_port == 41000 && matches!(x.op, op::RW | op::CREDIT_REQUEST)
        }) {
            if hdr.op == op::RW {
                received.extend_from_slice(&data);
                assert!(
                    received.len() <= credit_end,
                    "device sent beyond the guest's credit"
                );
            }
        }
        assert!(
            received.len() == credit_end.min(payload.len()),
            "device stopped at {} bytes, credit allowed {credit_end}",
            received.len()
        );
        // The guest application consumed everything: tell the device.
        fwd_cnt = received.len() as u32;
        let mut upd = h.pkt(op::CREDIT_UPDATE, 41000, 6000);
        upd.buf_alloc = 10_000;
        upd.fwd_cnt = fwd_cnt;
        h.send(upd, &[]);
    }
    assert_eq!(received, payload);
}

#[test]
fn credit_request_gets_credit_update() {
    let mut h = Harness::new("credit-req");
    h.post_rx_buffers(8);
    let _listener = listen(&PathBuf::from(format!("{}_6001", h.uds.display())));
    h.send(h.pkt(op::REQUEST, 41001, 6001), &[]);
    h.wait_op(op::RESPONSE, 6001, 41001);
    h.send(h.pkt(op::RW, 41001, 6001), b"12345");
    h.send(h.pkt(op::CREDIT_REQUEST, 41001, 6001), &[]);
    let (upd, _) = h.wait_op(op::CREDIT_UPDATE, 6001, 41001);
    assert_eq!((upd.buf_alloc, upd.fwd_cnt), (BUF_ALLOC, 5));
}

#[test]
fn guest_rst_closes_the_host_stream() {
    let mut h = Harness::new("guest-rst");
    h.post_rx_buffers(8);
    let (mut client, port) = h.host_connect(1024);
    h.send(h.pkt(op::RST, 1024, port), &[]);
    assert_closed(&mut client);
    h.wait_until("the connection is gone", |d| d.connection_count() == 0);
    // Later packets for the closed connection are answered with RST.
    h.send(h.pkt(op::RW, 1024, port), b"late");
    h.wait_op(op::RST, port, 1024);
}

#[test]
fn half_close_in_both_directions() {
    let mut h = Harness::new("half-close");
    h.post_rx_buffers(16);
    let (mut client, port) = h.host_connect(1024);

    // Host closes its sending side: the guest sees SHUTDOWN(SEND) and can still send.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (shut, _) = h.wait_op(op::SHUTDOWN, port, 1024);
    assert_eq!(shut.flags, shutdown::SEND);
    h.send(h.pkt(op::RW, 1024, port), b"still open");
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still open");

    // The guest closes too: the device finishes the connection with RST and closes the client.
    let mut s = h.pkt(op::SHUTDOWN, 1024, port);
    s.flags = shutdown::BOTH;
    h.send(s, &[]);
    h.wait_op(op::RST, port, 1024);
    assert_closed(&mut client);
    h.wait_until("the connection is gone", |d| d.connection_count() == 0);
}

#[test]
fn guest_shutdown_send_gives_host_eof_but_keeps_host_to_guest_open() {
    let mut h = Harness::new("guest-shut");
    h.post_rx_buffers(16);
    let (mut client, port) = h.host_connect(2048);
    h.send(h.pkt(op::RW, 2048, port), b"last words");
    let mut s = h.pkt(op::SHUTDOWN, 2048, port);
    s.flags = shutdown::SEND;
    h.send(s, &[]);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    client.write_all(b"reply after eof").unwrap();
    let (_, data) = h.wait_op(op::RW, port, 2048);
    assert_eq!(data, b"reply after eof");
    // Host closes as well: both directions are done, the device resets the connection.
    drop(client);
    h.wait_op(op::RST, port, 2048);
    h.wait_until("the connection is gone", |d| d.connection_count() == 0);
}

#[test]
fn bad_packets_are_dropped_or_reset() {
    let mut h = Harness::new("bad-pkts");
    h.post_rx_buffers(16);
    // Data for a connection that does not exist.
    h.send(h.pkt(op::RW, 50000, 1234), b"nobody");
    let (rst, _) = h.wait_op(op::RST, 1234, 50000);
    assert_eq!(rst.dst_cid, CID);
    // Wrong destination CID and wrong socket type: RST.
    let mut to_cid1 = h.pkt(op::REQUEST, 50001, 1234);
    to_cid1.dst_cid = 1;
    h.send(to_cid1, &[]);
    h.wait_op(op::RST, 1234, 50001);
    let mut seqpacket = h.pkt(op::REQUEST, 50002, 1234);
    seqpacket.type_ = 2;
    h.send(seqpacket, &[]);
    h.wait_op(op::RST, 1234, 50002);
    // Spoofed source CID: dropped without reply. An unknown op after it proves ordering.
    let mut spoofed = h.pkt(op::REQUEST, 50003, 1234);
    spoofed.src_cid = 99;
    h.send(spoofed, &[]);
    h.send(h.pkt(42, 50004, 1234), &[]);
    h.wait_op(op::RST, 1234, 50004);
    h.collect();
    assert!(
        h.inbox.iter().all(|(x, _)| x.dst_port != 50003),
        "spoofed packet got a reply"
    );
    // A payload larger than the device accepts is dropped as malformed.
    let big = vec![0u8; 64 * 1024 + 1];
    h.send(h.pkt(op::RW, 50005, 1234), &big);
    h.send(h.pkt(op::RW, 50006, 1234), b"x");
    h.wait_op(op::RST, 1234, 50006);
    h.collect();
    assert!(h.inbox.iter().all(|(x, _)| x.dst_port != 50005));
    assert_eq!(h.device(|d| d.connection_count()), 0);
}

#[test]
fn protocol_violations_reset_the_connection() {
    let mut h = Harness::new("violations");
    h.post_rx_buffers(16);
    let (mut client, port) = h.host_connect(1024);
    // A second REQUEST on an established connection.
    h.send(h.pkt(op::REQUEST, 1024, port), &[]);
    h.wait_op(op::RST, port, 1024);
    assert_closed(&mut client);
}

#[test]
fn malformed_or_missing_connect_lines_are_closed() {
    let mut h = Harness::with_device(
        "bad-connect",
        |d| d.with_handshake_timeout(Duration::from_millis(300)),
        true,
    );
    h.post_rx_buffers(8);
    let cases: [&[u8]; 5] = [
        b"HELLO\n",
        b"CONNECT\n",
        b"CONNECT 99999999999\n",
        b"CONNECT 12x\n",
        &[b'C'; 40],
    ];
    for case in cases {
        let mut c = UnixStream::connect(&h.uds).unwrap();
        c.write_all(case).unwrap();
        assert_closed(&mut c);
    }
    // Sends nothing, or half a line: closed after the handshake timeout.
    let started = Instant::now();
    let mut silent = UnixStream::connect(&h.uds).unwrap();
    let mut partial = UnixStream::connect(&h.uds).unwrap();
    partial.write_all(b"CONNECT 10").unwrap();
    assert_closed(&mut silent);
    assert_closed(&mut partial);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // None of them reached the guest.
    h.collect();
    assert!(h.inbox.is_empty(), "unexpected packets: {:?}", h.inbox);
    // The socket still serves well-formed clients.
    let (_c, _) = h.host_connect(1024);
}

#[test]
fn three_hundred_concurrent_connections() {
    const N: usize = 300;
    let mut h = Harness::new("many");
    h.post_rx_buffers(128);
    let listener = listen(&PathBuf::from(format!("{}_7000", h.uds.display())));
    // 150 host-initiated and 150 guest-initiated connections, all open at once.
    let mut clients = Vec::new();
    for _ in 0..N / 2 {
        let mut c = UnixStream::connect(&h.uds).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(b"CONNECT 1024\n").unwrap();
        clients.push(c);
    }
    let mut host_ports = Vec::new();
    while host_ports.len() < N / 2 {
        let (req, _) = h.wait_for("REQUEST", |x| x.op == op::REQUEST && x.dst_port == 1024);
        host_ports.push(req.src_port);
        h.send(h.pkt(op::RESPONSE, 1024, req.src_port), &[]);
    }
    let mut unique = host_ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), N / 2, "host ports must be distinct");
    let mut client_ports = Vec::new();
    for c in &mut clients {
        let line = read_line(c);
        client_ports.push(
            line.trim_end()
                .strip_prefix("OK ")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    let mut servers = Vec::new();
    for i in 0..N / 2 {
        h.send(h.pkt(op::REQUEST, 20000 + i as u32, 7000), &[]);
        h.wait_op(op::RESPONSE, 7000, 20000 + i as u32);
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        servers.push(s);
    }
    assert_eq!(h.device(|d| d.connection_count()), N);

    // Every host stream sends its own message; the guest sees each on the right connection.
    for (c, port) in clients.iter_mut().zip(&client_ports) {
        c.write_all(format!("client {port}").as_bytes()).unwrap();
    }
    for port in &client_ports {
        let (_, data) = h.wait_op(op::RW, *port, 1024);
        assert_eq!(data, format!("client {port}").as_bytes());
    }
    // The guest answers every connection; each host stream gets only its own answer.
    for port in &client_ports {
        h.send(
            h.pkt(op::RW, 1024, *port),
            format!("guest to {port}").as_bytes(),
        );
    }
    for i in 0..N / 2 {
        h.send(
            h.pkt(op::RW, 20000 + i as u32, 7000),
            format!("guest conn {i:03}").as_bytes(),
        );
    }
    for (c, port) in clients.iter_mut().zip(&client_ports) {
        let expect = format!("guest to {port}");
        let mut buf = vec![0u8; expect.len()];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, expect.as_bytes());
    }
    for (i, s) in servers.iter_mut().enumerate() {
        let mut buf = [0u8; 14];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, format!("guest conn {i:03}").as_bytes());
    }
    // Host streams close: every connection sends SHUTDOWN.
    drop(clients);
    for port in &client_ports {
        h.wait_op(op::SHUTDOWN, *port, 1024);
    }
}

#[test]
fn slow_host_reader_bounds_buffering_to_buf_alloc() {
    let mut h = Harness::new("slow-reader");
    h.post_rx_buffers(64);
    let listener = listen(&PathBuf::from(format!("{}_8000", h.uds.display())));
    h.send(h.pkt(op::REQUEST, 42000, 8000), &[]);
    let (resp, _) = h.wait_op(op::RESPONSE, 8000, 42000);
    let (mut server, _) = listener.accept().unwrap();
    let mut peer_buf_alloc = resp.buf_alloc;
    let mut peer_fwd_cnt = resp.fwd_cnt;

    // The guest sends as fast as the device's credit allows; the host reader reads nothing.
    let chunk = vec![0x5au8; 32 * 1024];
    let mut sent: u64 = 0;
    let mut stalled_rounds = 0;
    while stalled_rounds < 20 {
        h.collect();
        while let Some(pos) = h.inbox.iter().position(|(x, _)| x.dst_port == 42000) {
            let (x, _) = h.inbox.remove(pos).unwrap();
            peer_buf_alloc = x.buf_alloc;
            peer_fwd_cnt = x.fwd_cnt;
        }
        let credit = u64::from(peer_buf_alloc) - (sent - u64::from(peer_fwd_cnt));
        if credit >= chunk.len() as u64 {
            h.send(h.pkt(op::RW, 42000, 8000), &chunk);
            sent += chunk.len() as u64;
            stalled_rounds = 0;
        } else {
            stalled_rounds += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        let buffered = h.device(|d| d.buffered_bytes());
        assert!(buffered <= BUF_ALLOC as usize, "buffered {buffered} bytes");
        assert!(sent < 64 << 20, "credit never ran out");
    }
    let buffered = h.device(|d| d.buffered_bytes());
    assert!(
        buffered > 0,
        "the Unix socket should be full and the device buffering"
    );
    assert!(buffered <= BUF_ALLOC as usize);

    // The reader catches up: every byte arrives, and the device hands the credit back.
    server.set_read_timeout(Some(WAIT)).unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while total < sent {
        let n = server.read(&mut buf).unwrap();
        assert!(n > 0);
        assert!(buf[..n].iter().all(|&b| b == 0x5a));
        total += n as u64;
    }
    h.wait_until("the buffer drains", |d| d.buffered_bytes() == 0);
    // Credit updates give the guest its window back without being asked...
    h.wait_for("credit update", |x| {
        x.dst_port == 42000 && x.buf_alloc - (sent as u32).wrapping_sub(x.fwd_cnt) >= BUF_ALLOC / 2
    });
    // ...and an explicit request reports every byte as forwarded.
    h.send(h.pkt(op::CREDIT_REQUEST, 42000, 8000), &[]);
    let (upd, _) = h.wait_for("credit update", |x| {
        x.dst_port == 42000 && x.op == op::CREDIT_UPDATE && x.fwd_cnt == sent as u32
    });
    assert_eq!((upd.src_port, upd.buf_alloc), (8000, BUF_ALLOC));
}

#[test]
fn guest_exceeding_credit_is_reset() {
    let mut h = Harness::new("overrun");
    h.post_rx_buffers(16);
    let listener = listen(&PathBuf::from(format!("{}_8001", h.uds.display())));
    h.send(h.pkt(op::REQUEST, 42001, 8001), &[]);
    h.wait_op(op::RESPONSE, 8001, 42001);
    let (_server, _) = listener.accept().unwrap();
    // Ignore credit entirely: the device must reset the connection rather than buffer.
    let chunk = vec![1u8; 64 * 1024];
    let mut reset = None;
    for _ in 0..64 {
        h.send(h.pkt(op::RW, 42001, 8001), &chunk);
        reset = h.try_wait_for(Duration::from_millis(5), |x| {
            x.op == op::RST && x.dst_port == 42001
        });
        if reset.is_some() {
            break;
        }
        assert!(h.device(|d| d.buffered_bytes()) <= BUF_ALLOC as usize);
    }
    assert!(
        reset.is_some(),
        "device never reset a guest that ignores credit"
    );
}

#[test]
fn no_rx_buffers_means_no_host_reads() {
    let mut h = Harness::new("no-rx");
    h.refill_rx = false;
    h.post_rx_buffers(2);
    // The REQUEST takes one buffer; one is left, and the data goes into it.
    let (mut client, port) = h.host_connect(1024);
    client.write_all(b"waiting for buffers").unwrap();
    let (_, data) = h.wait_op(op::RW, port, 1024);
    assert_eq!(data, b"waiting for buffers");
    // No buffer left: the device must leave the stream unread.
    client.write_all(b"more").unwrap();
    assert!(h
        .try_wait_for(Duration::from_millis(200), |x| x.op == op::RW)
        .is_none());
    // New buffers: the pending data flows.
    h.post_rx_buffers(1);
    let (_, data) = h.wait_op(op::RW, port, 1024);
    assert_eq!(data, b"more");
}

#[test]
fn transport_reset_event_and_connections_dropped() {
    let mut h = Harness::new("transport-reset");
    h.post_rx_buffers(8);
    let (mut client, _) = h.host_connect(1024);
    // No event buffer yet: the event waits.
    h.device(|d| d.send_transport_reset());
    assert_closed(&mut client);
    assert_eq!(h.device(|d| d.connection_count()), 0);
    assert!(h.event.pop_used().is_none());
    // The driver posts an event buffer: the reset event is written into it.
    let idxs = h.event.add_chain(&[(4, true, &[0xff; 4])]).unwrap();
    h.kick(EVENT_QUEUE);
    let deadline = Instant::now() + WAIT;
    let (used, len) = loop {
        if let Some(u) = h.event.pop_used() {
            break u;
        }
        assert!(Instant::now() < deadline, "no transport reset event");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((used[0], len), (idxs[0], 4));
    let id: u32 = h.mem.read_obj(h.event.buf_addr(idxs[0])).unwrap();
    assert_eq!(id, EVENT_TRANSPORT_RESET);
    // With a buffer already available, the event is delivered at once.
    let idxs = h.event.add_chain(&[(4, true, &[0xff; 4])]).unwrap();
    h.kick(EVENT_QUEUE);
    std::thread::sleep(Duration::from_millis(50));
    h.device(|d| d.send_transport_reset());
    let (used, len) = h.event.pop_used().expect("event delivered synchronously");
    assert_eq!((used[0], len), (idxs[0], 4));
}

#[test]
fn kicks_before_activation_are_ignored_and_queued_work_runs_on_activation() {
    let mut h = Harness::with_device("pre-activate", |d| d, false);
    h.post_rx_buffers(4);
    h.send(h.pkt(op::REQUEST, 43000, 9999), &[]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        h.tx.pop_used().is_none(),
        "device used a queue before activation"
    );
    h.activate();
    h.wait_op(op::RST, 9999, 43000);
}

#[test]
fn host_client_connecting_before_the_driver_is_up_survives_its_reset() {
    let mut h = Harness::with_device("early-client", |d| d, false);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"CONNECT 1024\n").unwrap();
    h.wait_until("the CONNECT line is parsed", |d| d.connection_count() == 1);
    // The driver resets the device, then sets it up.
    assert!(h.device(|d| d.reset()));
    h.activate();
    h.post_rx_buffers(4);
    let (req, _) = h.wait_for("REQUEST", |x| x.op == op::REQUEST && x.dst_port == 1024);
    h.send(h.pkt(op::RESPONSE, 1024, req.src_port), &[]);
    assert_eq!(read_line(&mut client), format!("OK {}\n", req.src_port));
}

#[test]
fn device_reset_drops_connections() {
    let mut h = Harness::new("reset");
    h.post_rx_buffers(8);
    let (mut client, _) = h.host_connect(1024);
    assert!(h.device(|d| d.reset()));
    assert_closed(&mut client);
    assert_eq!(h.device(|d| d.connection_count()), 0);
}
