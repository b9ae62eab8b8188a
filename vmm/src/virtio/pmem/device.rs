//! The virtio-pmem device: config space `start` (le64, guest-physical address of the window)
//! and `size` (le64), one request queue. Each request is a device-readable `u32 type` followed by
//! a device-writable `u32 ret`; [`serve_request`] reads one from guest memory.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error, info, warn};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{VIRTIO_PMEM_REQ_TYPE_FLUSH, VIRTIO_PMEM_RESP_TYPE_EIO, VIRTIO_PMEM_RESP_TYPE_OK};
use crate::memory::GuestMemory;
use crate::virtio::vsock::log_limit::GuestLogLimit;
use crate::virtio::{
    device_type, read_config_space, ready_queues, serve_queue, warn_config_write, ActivateError,
    IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Queue size (the Linux driver sends one flush at a time per caller).
pub const QUEUE_SIZE: u16 = 64;
const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];
/// Config space: `start` then `size`, both le64.
const CONFIG_SPACE_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PmemError {
    #[error("cannot create the eventfd of the pmem device: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Why a request chain was refused (nothing was written back).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the chain has no device-readable request of 4 bytes first")]
    NoRequest,
    #[error("the chain has no device-writable response of 4 bytes after the request")]
    NoResponse,
    #[error("the chain's buffers are outside guest memory")]
    OutsideMemory,
}

/// What the device did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PmemStats {
    /// Flush requests answered OK.
    pub flushes: u64,
    /// Requests of another type, answered EIO.
    pub unknown: u64,
    /// Chains refused as malformed (returned with nothing written).
    pub bad_chains: u64,
}

/// Reads the request of `chain` and writes its response; returns the response's status.
pub fn serve_request<M>(mem: &GuestMemory, chain: DescriptorChain<M>) -> Result<u32, RequestError>
where
    M: std::ops::Deref<Target = GuestMemory>,
{
    let mut descs = chain;
    let request = descs
        .next()
        .filter(|d| !d.is_write_only() && d.len() >= 4)
        .ok_or(RequestError::NoRequest)?;
    let response = descs
        .next()
        .filter(|d| d.is_write_only() && d.len() >= 4)
        .ok_or(RequestError::NoResponse)?;
    let kind: u32 = read_le32(mem, request.addr())?;
    let status = if kind == VIRTIO_PMEM_REQ_TYPE_FLUSH {
        VIRTIO_PMEM_RESP_TYPE_OK
    } else {
        VIRTIO_PMEM_RESP_TYPE_EIO
    };
    mem.write_obj(status.to_le(), response.addr())
        .map_err(|_| RequestError::OutsideMemory)?;
    Ok(status)
}

fn read_le32(mem: &GuestMemory, at: GuestAddress) -> Result<u32, RequestError> {
    mem.read_obj::<u32>(at)
        .map(u32::from_le)
        .map_err(|_| RequestError::OutsideMemory)
}

struct Active {
    mem: GuestMemory,
    irq: IrqTrigger,
    queue: Queue,
}

/// A virtio-pmem device over a window of `size` bytes at guest-physical `start` (the VMM maps
/// the image there).
pub struct Pmem {
    start: u64,
    size: u64,
    acked_features: u64,
    queue_events: Vec<EventFd>,
    active: Option<Active>,
    guest_log: GuestLogLimit,
    stats: PmemStats,
}

impl Pmem {
    pub fn new(start: u64, size: u64) -> Result<Self, PmemError> {
        Ok(Pmem {
            start,
            size,
            acked_features: 0,
            queue_events: vec![EventFd::new(libc::EFD_NONBLOCK).map_err(PmemError::EventFd)?],
            active: None,
            guest_log: GuestLogLimit::default(),
            stats: PmemStats::default(),
        })
    }

    /// What the device did so far.
    pub fn stats(&self) -> PmemStats {
        self.stats
    }

    /// Serves every available request (at most a queue's worth per call).
    pub fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let stats = &mut self.stats;
        serve_queue(
            "pmem",
            &mut active.queue,
            mem,
            &self.queue_events[0],
            &active.irq,
            &mut self.guest_log,
            |chain, log| {
                let head = chain.head_index();
                match serve_request(mem, chain) {
                    Ok(VIRTIO_PMEM_RESP_TYPE_OK) => {
                        stats.flushes += 1;
                        4
                    }
                    Ok(_) => {
                        stats.unknown += 1;
                        if log.allow() {
                            warn!("pmem: request {head} has an unknown type; answered EIO");
                        }
                        4
                    }
                    Err(e) => {
                        stats.bad_chains += 1;
                        if log.allow() {
                            warn!("pmem: refusing request {head}: {e}");
                        }
                        0
                    }
                }
            },
        );
    }
}

impl Drop for Pmem {
    fn drop(&mut self) {
        let s = self.stats;
        if s.unknown + s.bad_chains > 0 {
            info!(
                "pmem: {} flushes, {} unknown requests, {} malformed chains",
                s.flushes, s.unknown, s.bad_chains
            );
        }
    }
}

impl VirtioDevice for Pmem {
    fn device_type(&self) -> u32 {
        device_type::PMEM
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        space[..8].copy_from_slice(&self.start.to_le_bytes());
        space[8..].copy_from_slice(&self.size.to_le_bytes());
        read_config_space(&space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.guest_log.allow() {
            warn_config_write("pmem", offset, data.len());
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        irq: IrqTrigger,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        let [queue] = ready_queues::<1>("virtio-pmem", self.acked_features, &mem, queues)?;
        debug!("pmem: activated");
        // A kick before activation was ignored: have the event loop look at the queue.
        if let Err(e) = self.queue_events[0].write(1) {
            error!("pmem: cannot wake the event loop: {e}");
        }
        self.active = Some(Active { mem, irq, queue });
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        true
    }
}

impl MutEventSubscriber for Pmem {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.queue_events[0], 0, EventSet::IN)) {
            error!("pmem: cannot watch queue notifications: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if let Err(e) = self.queue_events[0].read() {
            debug!("pmem: draining the queue notification: {e}");
        }
        self.process_queue();
    }
}
