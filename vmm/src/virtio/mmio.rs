//! virtio-mmio transport (version 2).
//!
//! [`MmioTransport`] is the register window of one virtio device (virtio 1.2, section 4.2.2, the
//! "modern" version 2 layout). It runs the driver-side state machine — feature negotiation, queue
//! setup, status — and hands the device its queues once the driver sets DRIVER_OK.
//!
//! Rules enforced here, since everything written by the guest is untrusted:
//! - registers below [`CONFIG_SPACE_OFFSET`] take aligned 32-bit accesses only; the device config
//!   space above it takes any width and is forwarded to the device;
//! - the status moves forward one bit at a time (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK); the
//!   driver may add FAILED at any time and writing 0 resets the device; anything else is ignored;
//! - FEATURES_OK is refused (the bit is not kept) when the driver accepted a feature the device did
//!   not offer or left out VIRTIO_F_VERSION_1;
//! - queue registers are writable only before DRIVER_OK and while the selected queue is not ready;
//! - on DRIVER_OK every ready queue is checked against guest memory before the device is activated;
//!   a bad queue or a failed activation sets DEVICE_NEEDS_RESET and raises a config interrupt.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, error, info, warn};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{ActivateError, IrqTrigger, VirtioDevice, INT_CONFIG, INT_VRING, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;
use crate::memory::GuestMemory;

/// Offset of the QueueNotify register: the VMM registers one ioeventfd per queue at
/// `window base + QUEUE_NOTIFY_OFFSET` with datamatch = queue index.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// Offset where the device-specific configuration space starts.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;

/// "virt" in little-endian: the MagicValue register.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;

/// The register layout version this transport implements.
pub const MMIO_VERSION: u32 = 2;

/// VendorID register: "HULL" in little-endian ASCII.
pub const HULL_VENDOR_ID: u32 = u32::from_le_bytes(*b"HULL");

/// Register offsets of the version 2 layout (virtio 1.2, table 4.1).
mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = super::QUEUE_NOTIFY_OFFSET;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// What the driver wrote into one queue's registers. Turned into a `virtio_queue::Queue` at
/// DRIVER_OK, where it is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueRegisters {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl QueueRegisters {
    /// Registers of a queue of `max_size` entries; a max size of 0 means "not available".
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
        }
    }

    /// A `Queue` for the device: a ready queue carries the driver's size and ring addresses and
    /// must fit in guest memory; a queue the driver did not enable is passed not ready.
    fn to_queue(
        &self,
        index: usize,
        event_idx: bool,
        mem: &GuestMemory,
    ) -> Result<Queue, ActivateError> {
        let bad = |reason: String| ActivateError::BadQueue { index, reason };
        if !self.ready {
            // An unavailable queue (max size 0) is passed as an empty, not-ready queue.
            return Ok(Queue::new(self.max_size).unwrap_or_default());
        }
        let mut queue = Queue::new(self.max_size).map_err(|e| bad(e.to_string()))?;
        queue
            .try_set_size(self.size)
            .map_err(|e| bad(format!("size {}: {e}", self.size)))?;
        queue
            .try_set_desc_table_address(GuestAddress(self.desc_table))
            .map_err(|e| bad(format!("descriptor table {:#x}: {e}", self.desc_table)))?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .map_err(|e| bad(format!("driver area {:#x}: {e}", self.avail_ring)))?;
        queue
            .try_set_used_ring_address(GuestAddress(self.used_ring))
            .map_err(|e| bad(format!("device area {:#x}: {e}", self.used_ring)))?;
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        if !queue.is_valid(mem) {
            return Err(bad(format!(
                "rings (desc {:#x}, driver {:#x}, device {:#x}, size {}) are not in guest memory",
                self.desc_table, self.avail_ring, self.used_ring, self.size
            )));
        }
        Ok(queue)
    }
}

/// Replaces the low or high 32 bits of `value`.
fn set_half(value: &mut u64, high: bool, half: u32) {
    *value = if high {
        (*value & 0xffff_ffff) | (u64::from(half) << 32)
    } else {
        (*value & !0xffff_ffff) | u64::from(half)
    };
}

/// The virtio-mmio register window of one device.
pub struct MmioTransport {
    mem: GuestMemory,
    device: Arc<Mutex<dyn VirtioDevice>>,
    irq: IrqTrigger,
    device_type: u32,
    queues: Vec<QueueRegisters>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    /// Features the driver wrote in DriverFeatures pages 0 and 1.
    driver_features: u64,
    /// The driver set a bit in a DriverFeatures page above 1 (no such feature is ever offered).
    driver_features_beyond_64: bool,
    status: u32,
    config_generation: u32,
    /// The device was activated and not reset since.
    device_activated: bool,
}

impl MmioTransport {
    /// Creates the transport for `device`, whose interrupts go through `irq`. A queue whose max
    /// size virtio does not allow (0, not a power of two, above 32768) is logged and offered to the
    /// driver as not available (QueueNumMax 0).
    pub fn new(mem: GuestMemory, device: Arc<Mutex<dyn VirtioDevice>>, irq: IrqTrigger) -> Self {
        let (device_type, queues) = {
            let dev = lock(&device);
            let device_type = dev.device_type();
            let queues = dev
                .queue_max_sizes()
                .iter()
                .enumerate()
                .map(|(index, &max_size)| {
                    if Queue::new(max_size).is_ok() {
                        QueueRegisters::new(max_size)
                    } else {
                        error!(
                            device_type,
                            queue = index,
                            max_size,
                            "virtio-mmio: invalid queue max size, queue disabled"
                        );
                        QueueRegisters::new(0)
                    }
                })
                .collect();
            (device_type, queues)
        };
        Self {
            mem,
            device,
            irq,
            device_type,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            driver_features_beyond_64: false,
            status: 0,
            config_generation: 0,
            device_activated: false,
        }
    }

    /// The device status register as the driver sees it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// True once the device was activated (DRIVER_OK accepted) and not reset since.
    pub fn is_activated(&self) -> bool {
        self.device_activated
    }

    fn selected_queue(&self) -> Option<&QueueRegisters> {
        self.queues.get(self.queue_select as usize)
    }

    /// The selected queue if its registers may be written now.
    fn writable_queue(&mut self, register: u64) -> Option<&mut QueueRegisters> {
        if self.status & DRIVER_OK != 0 {
            warn!(
                device_type = self.device_type,
                register, "virtio-mmio: queue register written after DRIVER_OK, ignored"
            );
            return None;
        }
        let select = self.queue_select;
        let Some(queue) = self
            .queues
            .get_mut(select as usize)
            .filter(|q| q.max_size != 0)
        else {
            debug!(
                device_type = self.device_type,
                queue = select,
                "virtio-mmio: queue register written for a queue that is not available"
            );
            return None;
        };
        if queue.ready && register != reg::QUEUE_READY {
            warn!(
                device_type = self.device_type,
                queue = select,
                register,
                "virtio-mmio: queue register written while the queue is ready, ignored"
            );
            return None;
        }
        Some(queue)
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => HULL_VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = lock(&self.device).avail_features();
                match self.device_features_select {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.irq.status(),
            reg::STATUS => self.status,
            // No shared memory regions: a non-existent region reads a length (and base) of -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!(
                    device_type = self.device_type,
                    offset, "virtio-mmio: read of an unknown or write-only register"
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_select = value,
            reg::QUEUE_NUM => self.write_queue_size(value),
            reg::QUEUE_READY => self.write_queue_ready(value),
            reg::QUEUE_NOTIFY => self.notify_queue(value),
            reg::INTERRUPT_ACK => self.irq.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                if let Some(q) = self.writable_queue(offset) {
                    set_half(&mut q.desc_table, offset == reg::QUEUE_DESC_HIGH, value);
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.writable_queue(offset) {
                    set_half(&mut q.avail_ring, offset == reg::QUEUE_DRIVER_HIGH, value);
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.writable_queue(offset) {
                    set_half(&mut q.used_ring, offset == reg::QUEUE_DEVICE_HIGH, value);
                }
            }
            reg::SHM_SEL => {}
            _ => debug!(
                device_type = self.device_type,
                offset, value, "virtio-mmio: write to an unknown or read-only register"
            ),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status != ACKNOWLEDGE | DRIVER {
            warn!(
                device_type = self.device_type,
                status = self.status,
                "virtio-mmio: DriverFeatures written outside feature negotiation, ignored"
            );
            return;
        }
        match self.driver_features_select {
            0 => set_half(&mut self.driver_features, false, value),
            1 => set_half(&mut self.driver_features, true, value),
            page if value != 0 => {
                warn!(
                    device_type = self.device_type,
                    page, value, "virtio-mmio: driver accepted features beyond bit 63"
                );
                self.driver_features_beyond_64 = true;
            }
            _ => {}
        }
    }

    fn write_queue_size(&mut self, value: u32) {
        let device_type = self.device_type;
        let Some(queue) = self.writable_queue(reg::QUEUE_NUM) else {
            return;
        };
        match u16::try_from(value) {
            Ok(size) if size != 0 && size <= queue.max_size && size.is_power_of_two() => {
                queue.size = size;
            }
            _ => warn!(
                device_type,
                size = value,
                max = queue.max_size,
                "virtio-mmio: invalid queue size rejected (must be a power of two up to QueueNumMax)"
            ),
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let Some(queue) = self.writable_queue(reg::QUEUE_READY) else {
            return;
        };
        match value {
            0 => queue.ready = false,
            1 => queue.ready = true,
            _ => debug!(value, "virtio-mmio: QueueReady takes 0 or 1, ignored"),
        }
    }

    fn notify_queue(&self, index: u32) {
        if !self.device_activated {
            debug!(
                device_type = self.device_type,
                queue = index,
                "virtio-mmio: queue notified before activation, ignored"
            );
            return;
        }
        let device = lock(&self.device);
        match device.queue_events().get(index as usize) {
            Some(event) => {
                if let Err(e) = event.write(1) {
                    warn!(
                        device_type = self.device_type,
                        queue = index,
                        "virtio-mmio: cannot signal queue event: {e}"
                    );
                }
            }
            None => warn!(
                device_type = self.device_type,
                queue = index,
                "virtio-mmio: notification for a queue that does not exist"
            ),
        }
    }

    /// The status a forward step from `current` may write: the next bit of the init sequence.
    fn next_status(current: u32) -> Option<u32> {
        match current {
            0 => Some(ACKNOWLEDGE),
            ACKNOWLEDGE => Some(ACKNOWLEDGE | DRIVER),
            s if s == ACKNOWLEDGE | DRIVER => Some(s | FEATURES_OK),
            s if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => Some(s | DRIVER_OK),
            _ => None,
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value == self.status {
            return;
        }
        if value == self.status | FAILED {
            warn!(
                device_type = self.device_type,
                "virtio-mmio: driver marked the device FAILED"
            );
            self.status = value;
            return;
        }
        if self.status & (FAILED | DEVICE_NEEDS_RESET) != 0 {
            warn!(
                device_type = self.device_type,
                status = self.status,
                value,
                "virtio-mmio: status write ignored, the device must be reset first"
            );
            return;
        }
        if Self::next_status(self.status) != Some(value) {
            warn!(
                device_type = self.device_type,
                status = self.status,
                value,
                "virtio-mmio: out-of-order status write ignored"
            );
            return;
        }
        match value & !self.status {
            FEATURES_OK => self.accept_features(value),
            DRIVER_OK => self.activate(value),
            _ => self.status = value,
        }
    }

    /// FEATURES_OK: keeps the bit only if the driver's feature set is acceptable.
    fn accept_features(&mut self, value: u32) {
        let offered = lock(&self.device).avail_features();
        let not_offered = self.driver_features & !offered;
        if not_offered != 0 || self.driver_features_beyond_64 {
            warn!(
                device_type = self.device_type,
                not_offered = format_args!("{not_offered:#x}"),
                beyond_64 = self.driver_features_beyond_64,
                "virtio-mmio: FEATURES_OK refused, the driver accepted features the device does not offer"
            );
            return;
        }
        if self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            warn!(
                device_type = self.device_type,
                "virtio-mmio: FEATURES_OK refused, the driver did not accept VIRTIO_F_VERSION_1"
            );
            return;
        }
        lock(&self.device).set_acked_features(self.driver_features);
        self.status = value;
    }

    /// DRIVER_OK: validates the queues and starts the device.
    fn activate(&mut self, value: u32) {
        match self.try_activate() {
            Ok(()) => {
                info!(
                    device_type = self.device_type,
                    "virtio-mmio: device activated"
                );
                self.device_activated = true;
                self.status = value;
            }
            Err(e) => {
                error!(
                    device_type = self.device_type,
                    "virtio-mmio: activation failed: {e}"
                );
                self.status = value | DEVICE_NEEDS_RESET;
                if let Err(e) = self.irq.trigger(INT_CONFIG) {
                    error!(
                        device_type = self.device_type,
                        "virtio-mmio: cannot raise config interrupt: {e}"
                    );
                }
            }
        }
    }

    fn try_activate(&mut self) -> Result<(), ActivateError> {
        if self.device_activated {
            return Err(ActivateError::Backend(
                "the device is still active: its last reset failed".to_string(),
            ));
        }
        let event_idx = self.driver_features & (1u64 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(index, regs)| regs.to_queue(index, event_idx, &self.mem))
            .collect::<Result<Vec<_>, _>>()?;
        lock(&self.device).activate(self.mem.clone(), self.irq.clone(), queues)
    }

    /// Status 0: back to the initial state; the device drops its queues.
    fn reset(&mut self) {
        let device_reset = lock(&self.device).reset();
        for queue in &mut self.queues {
            *queue = QueueRegisters::new(queue.max_size);
        }
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.driver_features_beyond_64 = false;
        self.irq.ack(INT_VRING | INT_CONFIG);
        if device_reset {
            debug!(device_type = self.device_type, "virtio-mmio: device reset");
            self.device_activated = false;
            self.status = 0;
        } else {
            error!(
                device_type = self.device_type,
                "virtio-mmio: the device could not be reset"
            );
            self.status = DEVICE_NEEDS_RESET;
        }
    }
}

/// Locks the device; a panic in another holder does not take the transport down.
fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(bytes) if offset % 4 == 0 => *bytes = self.read_register(offset).to_le_bytes(),
            _ => {
                debug!(
                    device_type = self.device_type,
                    offset,
                    len = data.len(),
                    "virtio-mmio: register read that is not an aligned 32-bit access, ignored"
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset % 4 == 0 => self.write_register(offset, u32::from_le_bytes(bytes)),
            _ => debug!(
                device_type = self.device_type,
                offset,
                len = data.len(),
                "virtio-mmio: register write that is not an aligned 32-bit access, ignored"
            ),
        }
    }
}
