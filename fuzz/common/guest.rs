//! Shared by the device fuzz targets: a byte reader over the fuzz input, and a split virtqueue
//! written into guest memory exactly as a hostile driver could lay it out (descriptor table,
//! avail ring and buffer contents all come from the input).
#![allow(dead_code)]

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub type Mem = GuestMemoryMmap<()>;

/// Guest RAM: 64 KiB at 0 and 4 KiB at 1 MiB, so there is a hole and an end to point past.
pub const RAM: [(u64, usize); 2] = [(0, 0x1_0000), (0x10_0000, 0x1000)];
/// Buffers live here (the rings sit below).
pub const DATA_BASE: u64 = 0x4000;
pub const DATA_LEN: u64 = 0x1_0000 - DATA_BASE;

/// Reads the fuzz input front to back; past the end every read is 0.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
}

pub fn new_mem() -> Mem {
    let ranges: Vec<(GuestAddress, usize)> =
        RAM.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
}

/// Writes up to 8 input chunks (offset, length, bytes) into the buffer area.
pub fn fill_data(mem: &Mem, input: &mut Input) {
    for _ in 0..input.u8() % 8 {
        let at = DATA_BASE + u64::from(input.u16()) % DATA_LEN;
        let n = usize::from(input.u8());
        let bytes = input.bytes(n);
        let room = (DATA_BASE + DATA_LEN - at) as usize;
        mem.write_slice(&bytes[..bytes.len().min(room)], GuestAddress(at))
            .unwrap();
    }
}

/// A guest-chosen buffer address: mostly inside the buffer area, sometimes anywhere
/// (rings, the hole, the second region, past the end, near 2^64).
fn addr(input: &mut Input) -> u64 {
    match input.u8() % 8 {
        0 => input.u64(),
        1 => 0x10_0000 + u64::from(input.u16() & 0x1fff),
        2 => u64::from(input.u16()),
        _ => DATA_BASE + u64::from(input.u16()) % DATA_LEN,
    }
}

/// A guest-chosen buffer length: mostly small, sometimes huge (up to 4 GiB - 1).
fn len(input: &mut Input) -> u32 {
    match input.u8() % 8 {
        0 => input.u32(),
        1 => 0,
        2 => u32::from(input.u16()),
        _ => u32::from(input.u8()) * 4 + u32::from(input.u8() & 3),
    }
}

/// Writes one queue (descriptor table, avail ring, used ring) at `ring_base` from the input and
/// returns it ready, as the transport would hand it to the device. `writable` biases the
/// descriptor direction (rx queues mostly device-writable, tx mostly readable); the input can
/// still flip any flag, including INDIRECT.
pub fn build_queue(mem: &Mem, input: &mut Input, ring_base: u64, writable: bool) -> Queue {
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;
    let size: u16 = 1 << (input.u8() % 5); // 1..=16
    let (desc, avail, used) = (ring_base, ring_base + 0x400, ring_base + 0x800);
    for i in 0..size {
        let a = addr(input);
        let l = len(input);
        let f = input.u8();
        let mut flags = 0u16;
        if f & 0x3 != 0 {
            flags |= NEXT; // most descriptors chain on
        }
        if (f & 0x4 != 0) == !writable {
            flags |= WRITE;
        }
        if f & 0xf8 == 0xf8 {
            flags |= INDIRECT;
        }
        if f == 0xff {
            flags = input.u16();
        }
        let next = if f & 0x20 != 0 {
            u16::from(input.u8())
        } else {
            (i + 1) % size
        };
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&a.to_le_bytes());
        raw[8..12].copy_from_slice(&l.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(desc + 16 * u64::from(i)))
            .unwrap();
    }
    // Avail ring: flags, idx, ring[size], used_event.
    let published = u16::from(input.u8() % 20);
    let idx = if input.u8() == 0xff {
        input.u16()
    } else {
        published
    };
    mem.write_obj(0u16, GuestAddress(avail)).unwrap();
    mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    for i in 0..size {
        let head = match input.u8() {
            0xff => input.u16(),
            b => u16::from(b) % size,
        };
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(i)))
            .unwrap();
    }
    mem.write_obj(input.u16(), GuestAddress(avail + 4 + 2 * u64::from(size)))
        .unwrap();
    mem.write_obj(0u16, GuestAddress(used)).unwrap();
    mem.write_obj(0u16, GuestAddress(used + 2)).unwrap();

    let mut q = Queue::new(16).unwrap();
    q.set_size(size);
    q.try_set_desc_table_address(GuestAddress(desc)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(avail)).unwrap();
    q.try_set_used_ring_address(GuestAddress(used)).unwrap();
    q.set_event_idx(input.bool());
    q.set_ready(true);
    assert!(q.is_valid(mem));
    q
}
