//! Frames in guest memory: gathering a tx chain into one host buffer, checking its
//! `virtio_net_hdr_v1` against the negotiated offloads, and scattering a received frame over one
//! or more rx chains (mergeable rx buffers). Pure over guest memory and the queue: no file
//! descriptors, so every rule here is unit-tested with in-memory queues.
//!
//! Everything read from a descriptor is untrusted. A chain is malformed when it has no
//! descriptors, does not end (a loop, a next index beyond the queue, more than 4 GiB), points
//! outside guest memory, has a descriptor of the wrong direction, or (tx) holds fewer than a header
//! plus an Ethernet header or more than [`MAX_BUFFER_LEN`] bytes. Lengths are summed and checked
//! before anything is copied, so no allocation ever exceeds [`MAX_BUFFER_LEN`].

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// Size of `struct virtio_net_hdr_v1` (flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers).
pub const VNET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// An Ethernet header: the shortest frame worth handing to the tap.
pub const ETH_HLEN: usize = 14;
/// Largest frame: a 64 KiB GSO packet plus Ethernet and VLAN headers.
pub const MAX_FRAME_LEN: usize = 65550;
/// Largest header + frame a tx chain may carry, and the size of the host rx buffer (65562).
pub const MAX_BUFFER_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

/// Why a descriptor chain (or the frame it carries) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain has no descriptors")]
    Empty,
    #[error(
        "the chain does not end (descriptor loop, next index beyond the queue, or over 4 GiB)"
    )]
    Unterminated,
    #[error("a tx chain has a device-writable descriptor")]
    WritableInTx,
    #[error("an rx chain has a device-readable descriptor")]
    ReadableInRx,
    #[error("descriptor {addr:#x}+{len} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("the tx chain holds more than {MAX_BUFFER_LEN} bytes (header + largest frame)")]
    TooLarge,
    #[error("the tx chain holds {0} bytes: less than the 12-byte header and an Ethernet header")]
    TooShort(usize),
    #[error("tx header asks for an offload that was not negotiated (flags {flags:#x}, gso_type {gso_type:#x})")]
    OffloadNotNegotiated { flags: u8, gso_type: u8 },
    #[error("the rx chain has no writable space")]
    NoSpace,
    #[error("the rx chain holds {capacity} bytes, the frame needs {needed} (mergeable rx buffers were not negotiated)")]
    RxTooSmall { capacity: u64, needed: u64 },
}

/// Copies the tx chain `descs` (header + frame) into `buf`, which is cleared first.
pub fn gather_tx<M: GuestMemory>(
    mem: &M,
    descs: impl Iterator<Item = Descriptor>,
    buf: &mut Vec<u8>,
) -> Result<(), ChainError> {
    buf.clear();
    let mut last = None;
    for desc in descs {
        if desc.is_write_only() {
            return Err(ChainError::WritableInTx);
        }
        let start = buf.len();
        let len = desc.len() as usize;
        if len > MAX_BUFFER_LEN - start {
            return Err(ChainError::TooLarge);
        }
        buf.resize(start + len, 0);
        mem.read_slice(&mut buf[start..], desc.addr())
            .map_err(|_| ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty),
        Some(d) if d.has_next() => Err(ChainError::Unterminated),
        Some(_) if buf.len() < VNET_HDR_LEN + ETH_HLEN => Err(ChainError::TooShort(buf.len())),
        Some(_) => Ok(()),
    }
}

/// Checks the guest's tx header: checksum and segmentation offloads only as negotiated
/// (CSUM, HOST_TSO4, HOST_TSO6; no ECN, no UFO).
pub fn check_tx_header(frame: &[u8], acked: u64) -> Result<(), ChainError> {
    let (flags, gso_type) = (frame[0], frame[1]);
    let has = |bit: u32| acked & (1u64 << bit) != 0;
    let flags_ok = match u32::from(flags) {
        0 => true,
        VIRTIO_NET_HDR_F_NEEDS_CSUM => has(VIRTIO_NET_F_CSUM),
        _ => false,
    };
    let gso_ok = match u32::from(gso_type) {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(VIRTIO_NET_F_HOST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(VIRTIO_NET_F_HOST_TSO6),
        _ => false,
    };
    if flags_ok && gso_ok {
        Ok(())
    } else {
        Err(ChainError::OffloadNotNegotiated { flags, gso_type })
    }
}

/// A validated rx chain: its head and the writable regions, all inside guest memory.
#[derive(Debug)]
pub struct RxChain {
    pub head: u16,
    regions: Vec<(GuestAddress, u32)>,
    capacity: u64,
}

impl RxChain {
    /// Validates the rx chain `descs` whose head is `head`.
    pub fn parse<M: GuestMemory>(
        mem: &M,
        head: u16,
        descs: impl Iterator<Item = Descriptor>,
    ) -> Result<RxChain, ChainError> {
        let mut regions = Vec::new();
        let mut capacity = 0u64;
        let mut last = None;
        for desc in descs {
            if !desc.is_write_only() {
                return Err(ChainError::ReadableInRx);
            }
            if !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write) {
                return Err(ChainError::OutsideMemory {
                    addr: desc.addr().0,
                    len: desc.len(),
                });
            }
            if desc.len() > 0 {
                regions.push((desc.addr(), desc.len()));
                capacity += u64::from(desc.len());
            }
            last = Some(desc);
        }
        match last {
            None => Err(ChainError::Empty),
            Some(d) if d.has_next() => Err(ChainError::Unterminated),
            Some(_) if capacity == 0 => Err(ChainError::NoSpace),
            Some(_) => Ok(RxChain {
                head,
                regions,
                capacity,
            }),
        }
    }

    /// Bytes the chain can hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Writes the start of `data` into the chain; returns the bytes written.
    fn write<M: GuestMemory>(&self, mem: &M, data: &[u8]) -> Result<usize, ChainError> {
        let mut done = 0;
        for &(addr, len) in &self.regions {
            if done == data.len() {
                break;
            }
            let n = (len as usize).min(data.len() - done);
            mem.write_slice(&data[done..done + n], addr)
                .map_err(|_| ChainError::OutsideMemory { addr: addr.0, len })?;
            done += n;
        }
        Ok(done)
    }
}

/// What happened to a frame offered to the rx queue.
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into this many chains.
    Delivered(u16),
    /// Not enough rx buffers: nothing was taken from the queue; try again after the next kick.
    NoBuffers,
    /// The frame was dropped; the chains it would have used went back with length 0.
    Dropped(ChainError),
}

/// True when the driver has made rx buffers available that we did not take yet. A corrupt avail
/// index (more entries than the queue holds) counts as none.
pub fn has_available<M: GuestMemory>(queue: &Queue, mem: &M) -> bool {
    match queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
        Ok(avail) => {
            let pending = avail.0.wrapping_sub(queue.next_avail());
            pending != 0 && pending <= queue.size()
        }
        Err(_) => false,
    }
}

/// Returns `chains` to the used ring with length 0.
fn return_unused<M: GuestMemory>(queue: &mut Queue, mem: &M, chains: &[u16]) {
    for &head in chains {
        if let Err(e) = queue.add_used(mem, head, 0) {
            tracing::debug!("net: rx queue: {e}");
        }
    }
}

/// Delivers `frame` (vnet header + Ethernet frame; `num_buffers` is filled in here) into the rx
/// queue: one chain, or with `mergeable` as many chains as it needs. A malformed chain, or (without
/// `mergeable`) a chain too small for the frame, drops the frame and returns every chain it took
/// with length 0.
pub fn deliver_rx<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    frame: &mut [u8],
    mergeable: bool,
) -> RxOutcome {
    let start = queue.next_avail();
    let needed = frame.len() as u64;
    let mut chains: Vec<RxChain> = Vec::new();
    let mut capacity = 0u64;
    while capacity < needed {
        if !mergeable && !chains.is_empty() {
            let heads: Vec<u16> = chains.iter().map(|c| c.head).collect();
            return_unused(queue, mem, &heads);
            return RxOutcome::Dropped(ChainError::RxTooSmall { capacity, needed });
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            queue.set_next_avail(start);
            return RxOutcome::NoBuffers;
        };
        let head = chain.head_index();
        match RxChain::parse(mem, head, chain) {
            Ok(c) => {
                capacity += c.capacity();
                chains.push(c);
            }
            Err(e) => {
                let mut heads: Vec<u16> = chains.iter().map(|c| c.head).collect();
                heads.push(head);
                return_unused(queue, mem, &heads);
                return RxOutcome::Dropped(e);
            }
        }
    }
    let count = chains.len() as u16;
    frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&count.to_le_bytes());
    let mut offset = 0;
    for (i, chain) in chains.iter().enumerate() {
        match chain.write(mem, &frame[offset..]) {
            Ok(n) => {
                offset += n;
                if let Err(e) = queue.add_used(mem, chain.head, n as u32) {
                    tracing::debug!("net: rx queue: {e}");
                }
            }
            Err(e) => {
                let heads: Vec<u16> = chains[i..].iter().map(|c| c.head).collect();
                return_unused(queue, mem, &heads);
                return RxOutcome::Dropped(e);
            }
        }
    }
    RxOutcome::Delivered(count)
}
