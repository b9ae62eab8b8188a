//! A fake guest driver for the device tests (net, balloon): one split queue in test guest memory (written
//! field by field as the virtio 1.2 split-ring layout says; virtio-queue's mock rings zero the ring
//! indexes whenever they are constructed), with a fixed buffer slot per descriptor index. Raw
//! descriptors can be published too, for the malformed chains a hostile guest would post.

use std::collections::HashMap;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub type Mem = GuestMemoryMmap<()>;

/// Queue size the tests use.
pub const QSIZE: u16 = 256;
/// Guest buffer space per descriptor index (room for the largest frame and header).
pub const SLOT: u64 = 0x1_1000;
/// Test guest memory size: two queues of QSIZE slots plus the rings.
pub const MEM_SIZE: u64 = 0x10_0000 + 2 * SLOT * QSIZE as u64;

/// Guest memory for the tests.
pub fn guest_memory() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// A raw descriptor: (index, addr, len, flags, next).
pub type RawDesc = (u16, u64, u32, u16, u16);

/// One buffer of a chain: (length, device-writable, contents).
pub type Part<'a> = (u32, bool, &'a [u8]);

pub struct DriverQueue {
    desc: u64,
    avail: u64,
    used: u64,
    buf_base: u64,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// Rings at `ring_addr` (three 4 KiB pages), buffers from `buf_base`.
    pub fn new(ring_addr: u64, buf_base: u64) -> Self {
        DriverQueue {
            desc: ring_addr,
            avail: ring_addr + 0x1000,
            used: ring_addr + 0x2000,
            buf_base,
            free: (0..QSIZE).rev().collect(),
            chains: HashMap::new(),
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The device's view of this queue.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    /// Where descriptor `index`'s buffer lives.
    pub fn buf_addr(&self, index: u16) -> u64 {
        self.buf_base + u64::from(index) * SLOT
    }

    /// Publishes a chain of buffers; returns its descriptor indexes.
    pub fn add(&mut self, mem: &Mem, parts: &[Part]) -> Vec<u16> {
        assert!(
            self.free.len() >= parts.len(),
            "test queue out of descriptors"
        );
        let idxs: Vec<u16> = (0..parts.len()).map(|_| self.free.pop().unwrap()).collect();
        let mut raw = Vec::new();
        for (i, (len, writable, contents)) in parts.iter().enumerate() {
            let addr = self.buf_addr(idxs[i]);
            mem.write_slice(contents, GuestAddress(addr)).unwrap();
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
            raw.push((idxs[i], addr, *len, flags, next));
        }
        self.publish(mem, &raw, idxs.clone());
        idxs
    }

    /// Publishes raw descriptors `(index, addr, len, flags, next)`; the first one is the head.
    /// The indexes are taken from the free pool when they are in it.
    pub fn add_raw(&mut self, mem: &Mem, descs: &[RawDesc]) {
        let mut idxs = Vec::new();
        for &(index, ..) in descs {
            if let Some(pos) = self.free.iter().position(|&f| f == index) {
                self.free.remove(pos);
                idxs.push(index);
            }
        }
        self.publish(mem, descs, idxs);
    }

    /// Writes `descs` and makes the first one available; `owned` go back to the pool when used.
    fn publish(&mut self, mem: &Mem, descs: &[RawDesc], owned: Vec<u16>) {
        for &(index, addr, len, flags, next) in descs {
            let at = self.desc + 16 * u64::from(index);
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&raw, GuestAddress(at)).unwrap();
        }
        let head = descs[0].0;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
        self.chains.insert(head, owned);
    }

    /// The next chain the device returned: its descriptor indexes and the used length.
    pub fn pop_used(&mut self, mem: &Mem) -> Option<(Vec<u16>, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        if u16::from_le(idx) == self.used_seen {
            return None;
        }
        let elem = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
        let id: u32 = mem.read_obj(GuestAddress(elem)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(elem + 4)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        let idxs = self
            .chains
            .remove(&(u32::from_le(id) as u16))
            .expect("used id is a published head");
        self.free.extend(idxs.iter().copied());
        Some((idxs, u32::from_le(len)))
    }

    /// Writes the avail ring's index (a hostile driver may write any value).
    pub fn set_avail_idx(&self, mem: &Mem, idx: u16) {
        mem.write_obj(idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Writes the used event (EVENT_IDX: interrupt me once the used index passes it).
    pub fn set_used_event(&self, mem: &Mem, event: u16) {
        let at = self.avail + 4 + 2 * u64::from(QSIZE);
        mem.write_obj(event.to_le(), GuestAddress(at)).unwrap();
    }

    /// The avail event the device wrote (EVENT_IDX: kick once the avail index passes it).
    pub fn avail_event(&self, mem: &Mem) -> u16 {
        let at = self.used + 4 + 8 * u64::from(QSIZE);
        u16::from_le(mem.read_obj(GuestAddress(at)).unwrap())
    }

    /// The driver's avail index.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Reads `len` bytes from descriptor `index`'s buffer.
    pub fn read_buf(&self, mem: &Mem, index: u16, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        mem.read_slice(&mut data, GuestAddress(self.buf_addr(index)))
            .unwrap();
        data
    }
}
