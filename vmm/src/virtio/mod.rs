//! Virtio devices over the virtio-mmio transport (virtio 1.2, section 4.2, version 2 layout).
//!
//! A device implements [`VirtioDevice`] (its device-specific half: features, config space, queue
//! processing) and `event_manager::MutEventSubscriber` (its reaction to queue kicks and to any host
//! file descriptors it owns). The [`mmio::MmioTransport`] owns the register state machine and hands the
//! device its queues once the driver sets DRIVER_OK.
//!
//! Queue notifications: each device creates one `EventFd` per queue at construction. The VMM registers
//! them with KVM as ioeventfds on the transport's QueueNotify register (datamatch = queue index), so a
//! guest kick never leaves the kernel except to wake the event loop; a transport that sees a QueueNotify
//! write itself (no ioeventfd) writes the same eventfd.

pub mod balloon;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod pmem;
#[cfg(test)]
pub mod test_driver;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;
use crate::virtio::vsock::log_limit::GuestLogLimit;

/// Virtio device IDs (virtio 1.2, section 5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const BALLOON: u32 = 5;
    pub const VSOCK: u32 = 19;
    pub const FS: u32 = 26;
    pub const PMEM: u32 = 27;
}

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Interrupt status bits of the MMIO transport (InterruptStatus register).
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Feature bit every virtio 1.x device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// The interrupt line of one virtio-mmio device: an irqfd registered with KVM plus the transport's
/// InterruptStatus register, which the guest reads and acknowledges.
#[derive(Clone)]
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
}

impl IrqTrigger {
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            irqfd: Arc::new(irqfd),
        }
    }

    /// Sets `kind` (INT_VRING or INT_CONFIG) in InterruptStatus and raises the interrupt.
    pub fn trigger(&self, kind: u32) -> std::io::Result<()> {
        self.status.fetch_or(kind, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// Current InterruptStatus value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the given bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd to register with KVM (KVM_IRQFD).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// The next available chain of `queue`, like `Queue::pop_descriptor_chain`, but an error says why
/// the ring cannot be read: the driver moved its avail index more than the queue size ahead, or
/// the ring left guest memory. The queue stays unusable until the driver resets the device; the
/// caller logs that (through its guest log limit) instead of silently seeing "no buffers".
pub fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
) -> Result<Option<DescriptorChain<&'m GuestMemory>>, virtio_queue::Error> {
    Ok(queue.iter(mem)?.next())
}

/// Serves the available chains of a request queue (one whose every chain goes back to the driver
/// at once), at most a queue's worth per call: `serve` handles each chain and says how many
/// bytes it wrote into it. Each chain is returned; when a queue's worth was served, `kick` is
/// written so the event loop comes back for the rest; when any was, the interrupt is raised.
/// `device` names the device in the logs, which go through `log` (the guest causes them).
pub fn serve_queue<'m>(
    device: &str,
    queue: &mut Queue,
    mem: &'m GuestMemory,
    kick: &EventFd,
    irq: &IrqTrigger,
    log: &mut GuestLogLimit,
    mut serve: impl FnMut(DescriptorChain<&'m GuestMemory>, &mut GuestLogLimit) -> u32,
) {
    let mut returned = 0u16;
    while returned < queue.size() {
        let chain = match pop_chain(queue, mem) {
            Ok(Some(chain)) => chain,
            Ok(None) => break,
            Err(e) => {
                if log.allow() {
                    tracing::error!(
                        "{device}: queue unusable until the driver resets the device: {e}"
                    );
                }
                break;
            }
        };
        let head = chain.head_index();
        let used_len = serve(chain, log);
        if let Err(e) = queue.add_used(mem, head, used_len) {
            if log.allow() {
                tracing::warn!("{device}: cannot return chain {head}: {e}");
            }
        }
        returned += 1;
    }
    if returned == queue.size() {
        // Leave the rest for the next round of the event loop.
        let _ = kick.write(1);
    }
    if returned > 0 {
        if let Err(e) = irq.trigger(INT_VRING) {
            tracing::error!("{device}: cannot raise the interrupt: {e}");
        }
    }
}

/// Logs a driver's write of `len` bytes at `offset` into a read-only config space (the write
/// is ignored); the caller checks its guest log limit first.
pub fn warn_config_write(device: &str, offset: u64, len: usize) {
    tracing::warn!("{device}: ignoring a write of {len} bytes to read-only config at {offset:#x}");
}

/// Copies the config space bytes at `offset` into `data`; bytes past the end read as zero.
pub fn read_config_space(space: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = offset
            .checked_add(i as u64)
            .and_then(|at| space.get(usize::try_from(at).ok()?))
            .copied()
            .unwrap_or(0);
    }
}

/// The checks every device's `activate` starts with: the driver accepted VIRTIO_F_VERSION_1 and
/// set up exactly `N` queues, each ready and inside guest memory. `device` names the device in
/// the error.
pub fn ready_queues<const N: usize>(
    device: &str,
    acked_features: u64,
    mem: &GuestMemory,
    queues: Vec<Queue>,
) -> Result<[Queue; N], ActivateError> {
    if acked_features & VIRTIO_F_VERSION_1 == 0 {
        return Err(ActivateError::MissingFeature("VIRTIO_F_VERSION_1"));
    }
    let count = queues.len();
    let queues: [Queue; N] = queues.try_into().map_err(|_| ActivateError::BadQueue {
        index: count.min(N),
        reason: format!("{device} needs {N} queues, got {count}"),
    })?;
    for (index, q) in queues.iter().enumerate() {
        if !q.ready() || !q.is_valid(mem) {
            return Err(ActivateError::BadQueue {
                index,
                reason: "not ready or not inside guest memory".to_string(),
            });
        }
    }
    Ok(queues)
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {index} is not valid: {reason}")]
    BadQueue { index: usize, reason: String },
    #[error("the driver did not accept a feature this device requires: {0}")]
    MissingFeature(&'static str),
    #[error("device back-end failed to start: {0}")]
    Backend(String),
}

/// The device-specific half of a virtio device.
pub trait VirtioDevice: Send {
    /// Virtio device ID (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (including VIRTIO_F_VERSION_1).
    fn avail_features(&self) -> u64;
    /// Features the driver accepted (a subset of `avail_features`, checked by the transport).
    fn set_acked_features(&mut self, features: u64);
    /// Reads the device config space at `offset`; bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device config space; devices with read-only config ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// One eventfd per queue, written when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];
    /// Starts the device with the queues the driver set up. Called once DRIVER_OK is set.
    fn activate(
        &mut self,
        mem: GuestMemory,
        irq: IrqTrigger,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;
    /// Device reset (driver wrote 0 to Status): drop queues and connections, go back to the
    /// not-activated state. Returns false if the device cannot be reset (it then needs DEVICE_NEEDS_RESET).
    fn reset(&mut self) -> bool;
}
