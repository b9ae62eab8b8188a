//! The virtio-balloon device: inflate, deflate and (when the driver accepts
//! VIRTIO_BALLOON_F_REPORTING) the free page reporting queue; config space `num_pages` (always 0)
//! and `actual` (written by the driver). Work happens on queue kicks in the event loop.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error, info, warn};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::report::{free_ranges, release_all, Discard, PunchHole};
use super::VIRTIO_BALLOON_F_REPORTING;
use crate::memory::GuestMemory;
use crate::virtio::vsock::log_limit::GuestLogLimit;
use crate::virtio::{
    device_type, read_config_space, ready_queues, serve_queue, ActivateError, IrqTrigger,
    VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Queue indexes as the driver numbers them when it accepts free page reporting (Linux gives
/// indexes only to the queues it uses: inflate, deflate, then reporting).
pub const INFLATE_QUEUE: usize = 0;
pub const DEFLATE_QUEUE: usize = 1;
pub const REPORTING_QUEUE: usize = 2;
/// Queue size; the Linux driver needs at least 32 entries on the reporting queue.
pub const QUEUE_SIZE: u16 = 128;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Config space: `num_pages` (le32, the pages the device wants; always 0) then `actual` (le32,
/// written by the driver).
const CONFIG_SPACE_LEN: usize = 8;
const ACTUAL_OFFSET: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    #[error("cannot create the eventfds of the balloon device: {0}")]
    EventFd(#[source] std::io::Error),
}

/// What the device did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BalloonStats {
    /// Reports whose ranges were all released.
    pub reports: u64,
    /// Bytes of guest memory released on the host.
    pub released_bytes: u64,
    /// Reports refused as malformed, or whose release failed.
    pub bad_reports: u64,
    /// Chains on the inflate/deflate queues, returned untouched.
    pub ignored_chains: u64,
}

struct Active {
    mem: GuestMemory,
    irq: IrqTrigger,
    /// Inflate, deflate and, when negotiated, reporting.
    queues: Vec<Queue>,
}

/// A virtio-balloon device that serves free page reporting.
pub struct Balloon {
    acked_features: u64,
    actual_pages: u32,
    queue_events: Vec<EventFd>,
    active: Option<Active>,
    discard: Box<dyn Discard>,
    guest_log: GuestLogLimit,
    stats: BalloonStats,
}

impl Balloon {
    /// A device that releases reported pages by punching holes in the guest RAM memfd.
    pub fn new() -> Result<Self, BalloonError> {
        Self::with_discard(Box::new(PunchHole))
    }

    /// A device over another way of releasing pages (tests).
    pub fn with_discard(discard: Box<dyn Discard>) -> Result<Self, BalloonError> {
        let queue_events = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<_, _>>()
            .map_err(BalloonError::EventFd)?;
        Ok(Balloon {
            acked_features: 0,
            actual_pages: 0,
            queue_events,
            active: None,
            discard,
            guest_log: GuestLogLimit::default(),
            stats: BalloonStats::default(),
        })
    }

    /// What the device did so far.
    pub fn stats(&self) -> BalloonStats {
        self.stats
    }

    fn reporting_acked(&self) -> bool {
        self.acked_features & (1u64 << VIRTIO_BALLOON_F_REPORTING) != 0
    }

    /// Serves every available chain of queue `index` (at most a queue's worth per call).
    pub fn process_queue(&mut self, index: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(index) else {
            return;
        };
        let mem = &active.mem;
        let stats = &mut self.stats;
        let discard = self.discard.as_mut();
        serve_queue(
            "balloon",
            queue,
            mem,
            &self.queue_events[index],
            &active.irq,
            &mut self.guest_log,
            |chain, log| {
                let head = chain.head_index();
                if index != REPORTING_QUEUE {
                    stats.ignored_chains += 1;
                    if log.allow() {
                        warn!("balloon: the balloon is never inflated; returning chain {head} of queue {index} untouched");
                    }
                    return 0;
                }
                match free_ranges(mem, chain) {
                    Ok(ranges) => {
                        let released = release_all(discard, mem, ranges);
                        stats.released_bytes += released.bytes;
                        debug!(
                            "balloon: released {} KiB reported free",
                            released.bytes >> 10
                        );
                        match released.failed {
                            None => stats.reports += 1,
                            Some((range, e)) => {
                                stats.bad_reports += 1;
                                if log.allow() {
                                    warn!("balloon: cannot release {range:?}: {e}");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        stats.bad_reports += 1;
                        if log.allow() {
                            warn!("balloon: refusing free page report {head}: {e}");
                        }
                    }
                }
                // Every chain goes back, so the driver never waits for an answer.
                0
            },
        );
    }
}

impl Drop for Balloon {
    fn drop(&mut self) {
        let s = self.stats;
        if s.reports + s.bad_reports + s.ignored_chains > 0 {
            info!(
                "balloon: {} free page reports released {} MiB on the host ({} refused, {} inflate/deflate chains ignored)",
                s.reports,
                s.released_bytes >> 20,
                s.bad_reports,
                s.ignored_chains
            );
        }
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1u64 << VIRTIO_BALLOON_F_REPORTING)
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        space[ACTUAL_OFFSET as usize..].copy_from_slice(&self.actual_pages.to_le_bytes());
        read_config_space(&space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (ACTUAL_OFFSET, Ok(bytes)) => self.actual_pages = u32::from_le_bytes(bytes),
            _ => {
                if self.guest_log.allow() {
                    warn!(
                        "balloon: ignoring a write of {} bytes to config at {offset:#x} (only `actual` is writable)",
                        data.len()
                    );
                }
            }
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        irq: IrqTrigger,
        mut queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        let reporting = self.reporting_acked();
        let acked = self.acked_features;
        let queues = if reporting {
            Vec::from(ready_queues::<3>("virtio-balloon", acked, &mem, queues)?)
        } else {
            // The driver numbers only the queues it uses: inflate and deflate.
            queues.truncate(2);
            Vec::from(ready_queues::<2>("virtio-balloon", acked, &mem, queues)?)
        };
        debug!(
            "balloon: activated, free page reporting {}",
            if reporting {
                "on"
            } else {
                "off (the driver declined it)"
            }
        );
        // Kicks before activation were ignored: have the event loop (not this vCPU thread) look
        // at what the driver already queued.
        for evt in &self.queue_events[..queues.len()] {
            if let Err(e) = evt.write(1) {
                error!("balloon: cannot wake the event loop: {e}");
            }
        }
        self.active = Some(Active { mem, irq, queues });
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.actual_pages = 0;
        true
    }
}

impl MutEventSubscriber for Balloon {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, index as u32, EventSet::IN)) {
                error!("balloon: cannot watch queue {index} notifications: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let index = events.data() as usize;
        match self.queue_events.get(index) {
            Some(evt) => {
                if let Err(e) = evt.read() {
                    debug!("balloon: draining queue {index} notification: {e}");
                }
                self.process_queue(index);
            }
            None => warn!("balloon: event with unknown token {index}"),
        }
    }
}
