//! Device tests: a fake driver builds rx/tx chains in guest memory, the device runs in a real
//! `event_manager::EventManager` (driven from the test thread), and a Unix datagram socketpair
//! stands in for the tap behind the [`TapIo`] seam (one datagram = one frame, as on a tap).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::device::{RX_QUEUE, TX_QUEUE};
use super::frame::{ChainError, MAX_BUFFER_LEN, VNET_HDR_LEN};
use super::tap::{offload, TapIo};
use super::{Net, NetConfig};
use crate::virtio::test_driver::{guest_memory, DriverQueue, Mem, RawDesc, MEM_SIZE, QSIZE, SLOT};
use crate::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

const F_MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
const F_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x10_0000 + SLOT * QSIZE as u64;

/// The tap double: a datagram socket, counting reads and remembering the offloads set.
struct SocketTap {
    sock: UnixDatagram,
    reads: Arc<AtomicU64>,
    offload: Arc<AtomicU32>,
}

impl AsRawFd for SocketTap {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl TapIo for SocketTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.recv(buf)?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offload.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

/// An Ethernet frame of `len` bytes (local experimental ethertype, numbered payload).
pub(super) fn eth_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    f
}

/// A plain header (no offloads) followed by `frame`.
pub(super) fn with_hdr(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; VNET_HDR_LEN];
    v.extend_from_slice(frame);
    v
}

struct Harness {
    mem: Mem,
    dev: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    rx: DriverQueue,
    tx: DriverQueue,
    kicks: Vec<EventFd>,
    host: UnixDatagram,
    reads: Arc<AtomicU64>,
    offload: Arc<AtomicU32>,
    irq: IrqTrigger,
}

impl Harness {
    /// An activated device whose driver accepted `features` (VERSION_1 is added).
    fn new(features: u64) -> Self {
        Self::with_config("tap=test,mac=02:00:00:00:00:09", features)
    }

    fn with_config(cfg: &str, features: u64) -> Self {
        let (sock, host) = UnixDatagram::pair().unwrap();
        sock.set_nonblocking(true).unwrap();
        host.set_nonblocking(true).unwrap();
        let reads = Arc::new(AtomicU64::new(0));
        let offload = Arc::new(AtomicU32::new(u32::MAX));
        let tap = SocketTap {
            sock,
            reads: reads.clone(),
            offload: offload.clone(),
        };
        let cfg: NetConfig = cfg.parse().unwrap();
        let mut dev = Net::with_tap(&cfg, Box::new(tap)).unwrap();
        let kicks = dev
            .queue_events()
            .iter()
            .map(|e| e.try_clone().unwrap())
            .collect();
        let mem = guest_memory();
        let rx = DriverQueue::new(0x0, RX_BUFS);
        let tx = DriverQueue::new(0x1_0000, TX_BUFS);
        let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        dev.set_acked_features(VIRTIO_F_VERSION_1 | features);
        // As the transport does: EVENT_IDX, when negotiated, is a property of the queues.
        let queues = [rx.queue(), tx.queue()].map(|mut q| {
            q.set_event_idx(features & F_EVENT_IDX != 0);
            q
        });
        dev.activate(mem.clone(), irq.clone(), Vec::from(queues))
            .unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(dev.clone());
        let mut h = Harness {
            mem,
            dev,
            em,
            rx,
            tx,
            kicks,
            host,
            reads,
            offload,
            irq,
        };
        h.settle();
        h
    }

    /// Runs the event loop until it has nothing left to do; returns the events handled.
    fn settle(&mut self) -> usize {
        let mut total = 0;
        loop {
            let n = self.em.run_with_timeout(20).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
            assert!(total < 10_000, "the device keeps the event loop busy");
        }
    }

    fn kick(&mut self, queue: usize) {
        self.kicks[queue].write(1).unwrap();
        self.settle();
    }

    fn send_tx(&mut self, parts: &[(u32, bool, &[u8])]) {
        self.tx.add(&self.mem, parts);
        self.kick(TX_QUEUE);
    }

    /// What the device wrote to the tap, if anything.
    fn host_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_BUFFER_LEN + 100];
        match self.host.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("host recv: {e}"),
        }
    }

    fn host_send(&mut self, frame: &[u8]) {
        self.host.send(&with_hdr(frame)).unwrap();
        self.settle();
    }

    /// Posts `n` rx chains of one writable buffer of `len` bytes each.
    fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            self.rx.add(&self.mem, &[(len, true, &[])]);
        }
        self.kick(RX_QUEUE);
    }

    /// The chains returned on the rx queue: (first descriptor of each chain, used length).
    fn rx_used(&mut self) -> Vec<(u16, u32)> {
        std::iter::from_fn(|| self.rx.pop_used(&self.mem))
            .map(|(idxs, len)| (idxs[0], len))
            .collect()
    }

    fn tx_used(&mut self) -> Vec<u32> {
        std::iter::from_fn(|| self.tx.pop_used(&self.mem))
            .map(|(_, len)| len)
            .collect()
    }

    fn stats(&self) -> super::NetStats {
        self.dev.lock().unwrap().stats()
    }
}

#[test]
fn tx_frame_across_several_descriptors_reaches_the_tap() {
    let mut h = Harness::new(0);
    let frame = eth_frame(1400, 7);
    let hdr = [0u8; VNET_HDR_LEN];
    h.send_tx(&[
        (VNET_HDR_LEN as u32, false, &hdr),
        (100, false, &frame[..100]),
        (1000, false, &frame[100..1100]),
        (300, false, &frame[1100..]),
    ]);
    assert_eq!(h.host_recv(), Some(with_hdr(&frame)));
    assert_eq!(h.host_recv(), None);
    assert_eq!(h.tx_used(), vec![0]);
    assert_eq!(h.stats().tx_frames, 1);
    assert_ne!(h.irq.status() & crate::virtio::INT_VRING, 0);
    // Header and frame in one descriptor, as Linux sends small frames.
    let bytes = with_hdr(&eth_frame(60, 1));
    h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
    assert_eq!(h.host_recv(), Some(bytes));
}

#[test]
fn tx_offload_headers_follow_negotiation() {
    let mut h = Harness::new((1 << VIRTIO_NET_F_CSUM) | (1 << VIRTIO_NET_F_HOST_TSO4));
    let mut bytes = with_hdr(&eth_frame(1500, 3));
    bytes[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    bytes[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
    assert_eq!(h.host_recv(), Some(bytes.clone()));
    // Without HOST_TSO4 the same frame is refused.
    let mut h = Harness::new(1 << VIRTIO_NET_F_CSUM);
    h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
    assert_eq!(h.host_recv(), None);
    assert_eq!(h.tx_used(), vec![0]);
    assert_eq!(h.stats().tx_dropped, 1);
}

#[test]
fn malformed_tx_chains_are_dropped_and_the_queue_goes_on() {
    let mut h = Harness::new(0);
    let good = with_hdr(&eth_frame(200, 9));
    let next = VRING_DESC_F_NEXT as u16;
    let write = VRING_DESC_F_WRITE as u16;
    let buf = |i: u16| TX_BUFS + u64::from(i) * SLOT;
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        ("loop", vec![(0, buf(0), 100, next, 0)]),
        (
            "two-descriptor loop",
            vec![(0, buf(0), 100, next, 1), (1, buf(1), 100, next, 0)],
        ),
        ("next beyond the queue", vec![(0, buf(0), 100, next, QSIZE)]),
        ("outside guest memory", vec![(0, MEM_SIZE - 10, 100, 0, 0)]),
        ("address wraps", vec![(0, u64::MAX - 5, 100, 0, 0)]),
        ("length near 4 GiB", vec![(0, buf(0), u32::MAX - 15, 0, 0)]),
        (
            "two huge lengths",
            vec![
                (0, buf(0), 0x8000_0000, next, 1),
                (1, buf(1), 0x8000_0000, 0, 0),
            ],
        ),
        ("write-only", vec![(0, buf(0), 100, write, 0)]),
        (
            "write-only after a readable one",
            vec![(0, buf(0), 12, next, 1), (1, buf(1), 100, write, 0)],
        ),
        (
            "frame over 65562 bytes",
            vec![(0, buf(0), 40_000, next, 1), (1, buf(1), 25_563, 0, 0)],
        ),
        ("header shorter than 12 bytes", vec![(0, buf(0), 8, 0, 0)]),
        ("header without a frame", vec![(0, buf(0), 12, 0, 0)]),
        ("zero-length descriptor", vec![(0, buf(0), 0, 0, 0)]),
    ];
    for (i, (name, descs)) in cases.iter().enumerate() {
        h.tx.add_raw(&h.mem, descs);
        h.kick(TX_QUEUE);
        assert_eq!(h.tx_used(), vec![0], "{name}");
        assert_eq!(h.host_recv(), None, "{name}: nothing reaches the tap");
        assert_eq!(h.stats().tx_dropped, i as u64 + 1, "{name}");
        // The queue still works after each bad chain.
        h.send_tx(&[(good.len() as u32, false, &good)]);
        assert_eq!(h.host_recv(), Some(good.clone()), "after {name}");
        assert_eq!(h.tx_used(), vec![0]);
    }
    // A frame of exactly the largest size passes.
    let largest = with_hdr(&eth_frame(MAX_BUFFER_LEN - VNET_HDR_LEN, 5));
    h.send_tx(&[(largest.len() as u32, false, &largest)]);
    assert_eq!(h.host_recv(), Some(largest));
}

#[test]
fn rx_without_mergeable_buffers_uses_one_chain_per_frame() {
    let mut h = Harness::new(0);
    h.rx.add(
        &h.mem,
        &[(VNET_HDR_LEN as u32, true, &[]), (1514, true, &[])],
    );
    h.kick(RX_QUEUE);
    let frame = eth_frame(1000, 4);
    h.host_send(&frame);
    let (idxs, len) = h.rx.pop_used(&h.mem).unwrap();
    assert!(h.rx.pop_used(&h.mem).is_none());
    assert_eq!(len as usize, VNET_HDR_LEN + frame.len());
    let hdr = h.rx.read_buf(&h.mem, idxs[0], VNET_HDR_LEN);
    assert_eq!(&hdr[10..12], &1u16.to_le_bytes(), "num_buffers is 1");
    assert_eq!(h.rx.read_buf(&h.mem, idxs[1], frame.len()), frame);
    assert_eq!(h.stats().rx_frames, 1);

    // A chain too small for the frame: the frame is dropped, the chain returned empty, and the
    // next frame lands in the next (big enough) chain.
    h.post_rx(1, 100);
    h.post_rx(1, 2048);
    h.host_send(&eth_frame(500, 1));
    assert_eq!(h.rx_used().iter().map(|u| u.1).collect::<Vec<_>>(), vec![0]);
    assert_eq!(h.stats().rx_dropped, 1);
    h.host_send(&eth_frame(500, 2));
    assert_eq!(
        h.rx_used().iter().map(|u| u.1).collect::<Vec<_>>(),
        vec![512]
    );
}

#[test]
fn rx_with_mergeable_buffers_spreads_a_frame_over_chains() {
    let mut h = Harness::new(F_MRG);
    h.post_rx(8, 512);
    let frame = eth_frame(1500, 6);
    h.host_send(&frame);
    let used = h.rx_used();
    let lens: Vec<u32> = used.iter().map(|u| u.1).collect();
    assert_eq!(
        lens,
        vec![512, 512, 488],
        "12 + 1500 bytes over 512-byte buffers"
    );
    let mut got = Vec::new();
    for (i, &(head, len)) in used.iter().enumerate() {
        got.extend(h.rx.read_buf(&h.mem, head, len as usize));
        assert!(i < 3);
    }
    assert_eq!(&got[10..12], &3u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &frame[..]);

    // Not enough buffers for the next frame: nothing is used until more arrive, and the tap is
    // not read again meanwhile.
    let big = eth_frame(4000, 8);
    h.host_send(&big);
    assert!(h.rx_used().is_empty());
    let reads = h.reads.load(Ordering::SeqCst);
    h.host_send(&eth_frame(100, 0));
    assert_eq!(h.reads.load(Ordering::SeqCst), reads);
    h.post_rx(8, 512);
    let used = h.rx_used();
    assert_eq!(
        used.len(),
        8 + 1,
        "4012 bytes in 8 buffers, then the 112-byte frame"
    );
    assert_eq!(h.stats().rx_frames, 3);
}

#[test]
fn no_rx_buffers_means_the_tap_is_not_read() {
    let mut h = Harness::new(F_MRG);
    for i in 0..5 {
        h.host.send(&with_hdr(&eth_frame(100, i))).unwrap();
    }
    h.settle();
    // The tap is readable, but the device neither reads it nor keeps the event loop busy.
    assert_eq!(h.em.run_with_timeout(50).unwrap(), 0);
    assert_eq!(h.reads.load(Ordering::SeqCst), 0);
    assert_eq!(h.stats().tap_reads, 0);
    // Buffers arrive: all five frames are delivered, in order.
    h.post_rx(16, 2048);
    let used = h.rx_used();
    assert_eq!(used.len(), 5);
    for (i, (head, len)) in used.into_iter().enumerate() {
        let got = h.rx.read_buf(&h.mem, head, len as usize);
        assert_eq!(&got[VNET_HDR_LEN..], &eth_frame(100, i as u8)[..]);
    }
    assert_eq!(h.reads.load(Ordering::SeqCst), 5);
}

#[test]
fn malformed_rx_chains_drop_the_frame_not_the_device() {
    let mut h = Harness::new(F_MRG);
    let next = VRING_DESC_F_NEXT as u16;
    let write = VRING_DESC_F_WRITE as u16;
    let buf = |i: u16| RX_BUFS + u64::from(i) * SLOT;
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        ("read-only", vec![(0, buf(0), 2048, 0, 0)]),
        ("loop", vec![(0, buf(0), 2048, write | next, 0)]),
        (
            "outside guest memory",
            vec![(0, MEM_SIZE - 100, 2048, write, 0)],
        ),
        ("length near 4 GiB", vec![(0, buf(0), u32::MAX, write, 0)]),
        ("no space", vec![(0, buf(0), 0, write, 0)]),
    ];
    for (i, (name, descs)) in cases.iter().enumerate() {
        h.rx.add_raw(&h.mem, descs);
        h.kick(RX_QUEUE);
        h.host_send(&eth_frame(300, 1));
        assert_eq!(h.rx_used(), vec![(0, 0)], "{name}");
        assert_eq!(h.stats().rx_dropped, i as u64 + 1, "{name}");
    }
    h.post_rx(1, 2048);
    h.host_send(&eth_frame(300, 2));
    assert_eq!(h.rx_used().len(), 1);
    assert_eq!(h.stats().rx_frames, 1);
}

#[test]
fn a_corrupt_avail_index_is_no_buffers() {
    let mut h = Harness::new(F_MRG);
    // The driver claims far more buffers than the queue holds.
    h.rx.set_avail_idx(&h.mem, QSIZE + 7);
    h.kick(RX_QUEUE);
    h.host.send(&with_hdr(&eth_frame(100, 0))).unwrap();
    assert_eq!(h.settle(), 0);
    assert_eq!(h.reads.load(Ordering::SeqCst), 0);
}

#[test]
fn tap_offloads_follow_the_guest_features() {
    let h = Harness::new((1 << VIRTIO_NET_F_GUEST_CSUM) | (1 << VIRTIO_NET_F_GUEST_TSO4) | F_MRG);
    assert_eq!(
        h.offload.load(Ordering::SeqCst),
        offload::CSUM | offload::TSO4
    );
    assert!(h.dev.lock().unwrap().reset());
    assert_eq!(h.offload.load(Ordering::SeqCst), 0);
    // TSO without GUEST_CSUM is not enabled on the tap.
    let h = Harness::new(1 << VIRTIO_NET_F_GUEST_TSO4);
    assert_eq!(h.offload.load(Ordering::SeqCst), 0);
}

#[test]
fn config_space_and_features() {
    let h = Harness::with_config("tap=t,mac=02:00:00:00:00:09,mtu=1400", 0);
    let dev = h.dev.lock().unwrap();
    assert_eq!(dev.device_type(), crate::virtio::device_type::NET);
    assert_ne!(dev.avail_features() & (1 << VIRTIO_NET_F_MAC), 0);
    let mut mac = [0u8; 6];
    dev.read_config(0, &mut mac);
    assert_eq!(mac, [2, 0, 0, 0, 0, 9]);
    let mut mtu = [0u8; 2];
    dev.read_config(10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1400);
    let mut past = [0xffu8; 4];
    dev.read_config(u64::MAX - 1, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn reset_stops_the_device_and_it_can_start_again() {
    let mut h = Harness::new(F_MRG);
    h.dev.lock().unwrap().reset();
    h.settle();
    h.host.send(&with_hdr(&eth_frame(100, 0))).unwrap();
    assert_eq!(h.settle(), 0, "a reset device does not watch the tap");
    let (rx, tx) = (
        DriverQueue::new(0x2_0000, RX_BUFS),
        DriverQueue::new(0x3_0000, TX_BUFS),
    );
    {
        let mut dev = h.dev.lock().unwrap();
        dev.set_acked_features(VIRTIO_F_VERSION_1 | F_MRG);
        dev.activate(h.mem.clone(), h.irq.clone(), vec![rx.queue(), tx.queue()])
            .unwrap();
    }
    h.rx = rx;
    h.tx = tx;
    h.settle();
    h.post_rx(1, 2048);
    assert_eq!(
        h.rx_used().len(),
        1,
        "the frame queued on the tap arrives after reactivation"
    );
}

#[test]
fn frame_errors_are_typed() {
    // The pure helpers, without the device.
    let mem = guest_memory();
    let mut buf = Vec::new();
    let descs = std::iter::empty::<virtio_queue::desc::split::Descriptor>();
    assert_eq!(
        super::frame::gather_tx(&mem, descs, &mut buf),
        Err(ChainError::Empty)
    );
    let short = [0u8; 20];
    assert_eq!(
        super::frame::check_tx_header(&short, 0),
        Ok(()),
        "no offloads asked"
    );
    let mut ecn = short;
    ecn[1] = 0x81;
    assert!(super::frame::check_tx_header(&ecn, u64::MAX).is_err());
}

#[test]
fn event_idx_tx_interrupts_at_the_used_event_and_asks_for_the_next_kick() {
    let mut h = Harness::new(F_EVENT_IDX);
    // The driver wants an interrupt only once the used index passes 3.
    h.tx.set_used_event(&h.mem, 3);
    for seed in 0..3u8 {
        let bytes = with_hdr(&eth_frame(100, seed));
        h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
        assert_eq!(h.host_recv(), Some(bytes));
        assert_eq!(
            h.irq.status() & crate::virtio::INT_VRING,
            0,
            "interrupt before the used event (frame {seed})"
        );
        // Drained: the next chain the driver queues must kick.
        assert_eq!(h.tx.avail_event(&h.mem), h.tx.avail_idx());
    }
    let bytes = with_hdr(&eth_frame(100, 9));
    h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
    assert_eq!(h.host_recv(), Some(bytes));
    assert_ne!(h.irq.status() & crate::virtio::INT_VRING, 0);
    assert_eq!(h.tx_used(), vec![0; 4]);
}

#[test]
fn event_idx_rx_out_of_buffers_asks_for_a_kick_at_the_next_buffer() {
    let mut h = Harness::new(F_EVENT_IDX | F_MRG);
    // No buffers at all: the frame waits and the driver's first buffer must kick.
    let big = eth_frame(3000, 4);
    h.host_send(&big);
    assert!(h.rx_used().is_empty());
    assert_eq!(h.rx.avail_event(&h.mem), h.rx.avail_idx());
    // Too few for the merged frame (two 1 KiB buffers for ~3 KiB): still waiting, and the avail
    // event is past the two buffers already there, not where the device stopped.
    for _ in 0..2 {
        h.rx.add(&h.mem, &[(1024, true, &[])]);
    }
    h.kick(RX_QUEUE);
    assert!(h.rx_used().is_empty());
    assert_eq!(h.rx.avail_event(&h.mem), 2);
    // Two more: the frame is delivered across the buffers.
    h.post_rx(2, 1024);
    let used = h.rx_used();
    assert!(!used.is_empty(), "frame not delivered");
    assert_eq!(h.stats().rx_frames, 1);
}

#[test]
fn without_event_idx_tx_kicks_are_back_on_after_the_drain() {
    let mut h = Harness::new(0);
    let bytes = with_hdr(&eth_frame(100, 1));
    h.send_tx(&[(bytes.len() as u32, false, &bytes)]);
    assert_eq!(h.host_recv(), Some(bytes));
    // The used ring's flags: NO_NOTIFY is not left set once the queue is empty.
    let flags: u16 = h.mem.read_obj(GuestAddress(0x1_2000)).unwrap();
    assert_eq!(u16::from_le(flags) & VRING_USED_F_NO_NOTIFY as u16, 0);
}
