//! The virtio-net device (virtio 1.2, section 5.1): one rx and one tx queue, config space with
//! MAC, link status and MTU, and the event-loop glue between the queues and a [`TapIo`].
//!
//! Work happens in [`MutEventSubscriber::process`], on queue kicks, tap readability and a wake-up
//! eventfd written by calls from other threads (activation, reset):
//! - tx: every available chain is gathered into one host buffer and written to the tap as one
//!   frame; at most a queue's worth per event, then the device kicks itself so other devices run;
//! - rx: frames are read from the tap one at a time, only while the guest has rx buffers, and each
//!   is written to the rx queue before the next is read. When the guest has no buffers the tap is
//!   taken out of the epoll set, so the kernel queues (and eventually drops) frames at no cost to
//!   us; the guest's next rx kick puts it back.

use std::io;
use std::sync::atomic::Ordering;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error, warn};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::config::{NetConfig, CONFIG_SPACE_LEN};
use super::frame::{
    check_tx_header, deliver_rx, gather_tx, has_available, RxOutcome, ETH_HLEN, MAX_BUFFER_LEN,
    VNET_HDR_LEN,
};
use super::tap::{offload, Tap, TapError, TapIo};
use crate::memory::GuestMemory;
use crate::virtio::vsock::log_limit::GuestLogLimit;
use crate::virtio::{
    device_type, pop_chain, read_config_space, ready_queues, warn_config_write, ActivateError,
    IrqTrigger, VirtioDevice, INT_VRING,
};

/// Index of the rx queue (device -> driver frames).
pub const RX_QUEUE: usize = 0;
/// Index of the tx queue (driver -> device frames).
pub const TX_QUEUE: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// Frames read from the tap per event before other event sources get a turn.
const RX_BATCH: usize = 64;

const TOKEN_TAP: u32 = 10;
const TOKEN_WAKEUP: u32 = 11;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("cannot create the {what} of the net device: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Frame counters, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames written to the tap.
    pub tx_frames: u64,
    /// Tx chains refused (malformed, offload not negotiated) or frames the tap did not take.
    pub tx_dropped: u64,
    /// Frames written to the guest.
    pub rx_frames: u64,
    /// Frames read from the tap and dropped (bad rx chains, too short).
    pub rx_dropped: u64,
    /// Successful reads from the tap.
    pub tap_reads: u64,
}

struct Active {
    mem: GuestMemory,
    irq: IrqTrigger,
    rx: Queue,
    tx: Queue,
}

/// A virtio-net device over a tap.
pub struct Net {
    avail_features: u64,
    acked_features: u64,
    config_space: [u8; CONFIG_SPACE_LEN],
    queue_events: Vec<EventFd>,
    wakeup: EventFd,
    tap: Box<dyn TapIo>,
    active: Option<Active>,
    /// One frame read from the tap and not yet in the guest (bounded host buffering).
    rx_buf: Box<[u8]>,
    rx_pending: Option<usize>,
    tx_buf: Vec<u8>,
    tx_pending: bool,
    /// The tap should be in the epoll set (the guest has rx buffers and we are not full).
    tap_wanted: bool,
    tap_watched: bool,
    /// The tap reported an error or hang-up: never watched again.
    tap_broken: bool,
    guest_log: GuestLogLimit,
    host_log: GuestLogLimit,
    stats: NetStats,
}

impl Net {
    /// Creates the device for `config`, opening its tap.
    pub fn new(config: &NetConfig) -> Result<Self, NetError> {
        let tap = Tap::from_source(&config.tap)?;
        debug!("net: tap {} opened", tap.name());
        Self::with_tap(config, Box::new(tap))
    }

    /// Creates the device over an already opened tap (or a test double).
    pub fn with_tap(config: &NetConfig, tap: Box<dyn TapIo>) -> Result<Self, NetError> {
        let setup = |what| move |source| NetError::Setup { what, source };
        let mut queue_events = Vec::with_capacity(QUEUE_SIZES.len());
        for _ in QUEUE_SIZES {
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK).map_err(setup("queue eventfd"))?);
        }
        Ok(Net {
            avail_features: config.features(),
            acked_features: 0,
            config_space: config.config_space(),
            queue_events,
            wakeup: EventFd::new(libc::EFD_NONBLOCK).map_err(setup("wake-up eventfd"))?,
            tap,
            active: None,
            rx_buf: vec![0u8; MAX_BUFFER_LEN].into_boxed_slice(),
            rx_pending: None,
            tx_buf: Vec::with_capacity(MAX_BUFFER_LEN),
            tx_pending: false,
            tap_wanted: false,
            tap_watched: false,
            tap_broken: false,
            guest_log: GuestLogLimit::default(),
            host_log: GuestLogLimit::default(),
            stats: NetStats::default(),
        })
    }

    /// Frame counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn acked(&self, bit: u32) -> bool {
        self.acked_features & (1u64 << bit) != 0
    }

    fn wake(&self) {
        if let Err(e) = self.wakeup.write(1) {
            error!("net: cannot wake the event loop: {e}");
        }
    }

    /// The tap offloads matching what the guest accepts on rx.
    fn tap_offloads(&self) -> u32 {
        if !self.acked(VIRTIO_NET_F_GUEST_CSUM) {
            return 0;
        }
        let mut flags = offload::CSUM;
        if self.acked(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= offload::TSO4;
        }
        if self.acked(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= offload::TSO6;
        }
        flags
    }

    /// Sends every available tx chain to the tap (at most one queue's worth per call). The
    /// driver's kicks are off while the queue is drained and on again once it is empty (with
    /// EVENT_IDX: the avail event at the next chain); the interrupt follows the driver's used
    /// event (EVENT_IDX) or comes once per batch.
    fn run_tx(&mut self) {
        let Some(q) = self.active.as_mut() else {
            return;
        };
        let mut done: u16 = 0;
        // Only ring flags/events are written here; a ring the guest broke shows in pop_chain.
        let _ = q.tx.disable_notification(&q.mem);
        loop {
            let chain = match pop_chain(&mut q.tx, &q.mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => {
                    // Kicks on again; a chain the driver queued meanwhile is taken now.
                    if matches!(q.tx.enable_notification(&q.mem), Ok(true)) {
                        let _ = q.tx.disable_notification(&q.mem);
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    if self.guest_log.allow() {
                        error!("net: tx queue unusable until the driver resets the device: {e}");
                    }
                    break;
                }
            };
            let head = chain.head_index();
            let checked = gather_tx(&q.mem, chain, &mut self.tx_buf)
                .and_then(|()| check_tx_header(&self.tx_buf, self.acked_features));
            match checked {
                Ok(()) => match self.tap.write_frame(&self.tx_buf) {
                    Ok(_) => self.stats.tx_frames += 1,
                    Err(e) => {
                        self.stats.tx_dropped += 1;
                        if self.host_log.allow() {
                            warn!(
                                "net: the tap refused a {}-byte frame: {e}",
                                self.tx_buf.len()
                            );
                        }
                    }
                },
                Err(e) => {
                    self.stats.tx_dropped += 1;
                    if self.guest_log.allow() {
                        warn!("net: dropping tx chain {head}: {e}");
                    }
                }
            }
            if let Err(e) = q.tx.add_used(&q.mem, head, 0) {
                if self.guest_log.allow() {
                    warn!("net: tx queue: cannot return chain {head}: {e}");
                }
            }
            done += 1;
            if done >= q.tx.size() {
                // Leave the rest for the next round of the event loop.
                self.tx_pending = true;
                let _ = self.queue_events[TX_QUEUE].write(1);
                break;
            }
        }
        if done > 0 && q.tx.needs_notification(&q.mem).unwrap_or(true) {
            if let Err(e) = q.irq.trigger(INT_VRING) {
                error!("net: cannot raise the interrupt: {e}");
            }
        }
    }

    /// Moves frames from the tap to the guest while it has rx buffers; decides whether the tap
    /// stays in the epoll set.
    fn run_rx(&mut self) {
        let Some(q) = self.active.as_mut() else {
            self.tap_wanted = false;
            return;
        };
        let mergeable = self.acked_features & (1u64 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut used = false;
        let mut reads = 0;
        self.tap_wanted = loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None => {
                    if !has_available(&q.rx, &q.mem) && !kick_at_next_rx_buffer(&mut q.rx, &q.mem) {
                        break false;
                    }
                    if reads == RX_BATCH || self.tap_broken {
                        break !self.tap_broken;
                    }
                    reads += 1;
                    match self.tap.read_frame(&mut self.rx_buf) {
                        Ok(0) => {
                            error!("net: the tap was closed; no more frames for the guest");
                            self.tap_broken = true;
                            break false;
                        }
                        Ok(n) if n < VNET_HDR_LEN + ETH_HLEN => {
                            self.stats.tap_reads += 1;
                            self.stats.rx_dropped += 1;
                            if self.host_log.allow() {
                                warn!("net: dropping a {n}-byte frame from the tap");
                            }
                            continue;
                        }
                        Ok(n) => {
                            self.stats.tap_reads += 1;
                            self.rx_pending = Some(n);
                            n
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            if self.host_log.allow() {
                                warn!("net: reading the tap: {e}");
                            }
                            break true;
                        }
                    }
                }
            };
            match deliver_rx(&mut q.rx, &q.mem, &mut self.rx_buf[..len], mergeable) {
                RxOutcome::Delivered(_) => {
                    self.rx_pending = None;
                    self.stats.rx_frames += 1;
                    used = true;
                }
                RxOutcome::NoBuffers => {
                    if kick_at_next_rx_buffer(&mut q.rx, &q.mem) {
                        continue;
                    }
                    break false;
                }
                RxOutcome::Dropped(e) => {
                    self.rx_pending = None;
                    self.stats.rx_dropped += 1;
                    used = true;
                    if self.guest_log.allow() {
                        warn!("net: dropping a {len}-byte rx frame: {e}");
                    }
                }
            }
        };
        if used && q.rx.needs_notification(&q.mem).unwrap_or(true) {
            if let Err(e) = q.irq.trigger(INT_VRING) {
                error!("net: cannot raise the interrupt: {e}");
            }
        }
    }

    /// Puts the tap into, or takes it out of, the epoll set to match `tap_wanted`.
    fn apply_tap_interest(&mut self, ops: &mut EventOps) {
        let want = self.tap_wanted && !self.tap_broken && self.active.is_some();
        if want == self.tap_watched {
            return;
        }
        let events = Events::with_data_raw(self.tap.as_raw_fd(), TOKEN_TAP, EventSet::IN);
        let result = if want {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.tap_watched = want,
            Err(e) => error!("net: cannot change the tap's epoll registration: {e:?}"),
        }
    }
}

/// The rx queue has too few buffers for the next frame (none were taken): asks the driver to
/// kick when it adds the next one, and says whether it added some meanwhile (then the frame is
/// tried again). With EVENT_IDX the avail event is set to the driver's current avail index, not
/// to where the device stopped: buffers already posted but too few for a merged frame must not
/// hide the next addition. Without EVENT_IDX kicks are never turned off on rx.
fn kick_at_next_rx_buffer(rx: &mut Queue, mem: &GuestMemory) -> bool {
    let Ok(avail) = rx.avail_idx(mem, Ordering::Acquire) else {
        return false;
    };
    let stopped_at = rx.next_avail();
    rx.set_next_avail(avail.0);
    let more = matches!(rx.enable_notification(mem), Ok(true));
    rx.set_next_avail(stopped_at);
    more
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.guest_log.allow() {
            warn_config_write("net", offset, data.len());
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
        let [rx, tx] = ready_queues("virtio-net", self.acked_features, &mem, queues)?;
        let offloads = self.tap_offloads();
        self.tap
            .set_offload(offloads)
            .map_err(|e| ActivateError::Backend(format!("TUNSETOFFLOAD {offloads:#x}: {e}")))?;
        self.active = Some(Active { mem, irq, rx, tx });
        // Kicks before activation were ignored: look at what the driver already queued.
        self.tx_pending = true;
        self.rx_pending = None;
        self.wake();
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.rx_pending = None;
        self.tx_pending = false;
        self.tap_wanted = false;
        if let Err(e) = self.tap.set_offload(0) {
            debug!("net: clearing the tap offloads: {e}");
        }
        self.wake();
        true
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, index as u32, EventSet::IN)) {
                error!("net: cannot watch queue {index} notifications: {e:?}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.wakeup, TOKEN_WAKEUP, EventSet::IN)) {
            error!("net: cannot watch the wake-up eventfd: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            token @ (0..=1) => {
                let index = token as usize;
                if let Err(e) = self.queue_events[index].read() {
                    debug!("net: draining queue {index} notification: {e}");
                }
                if index == TX_QUEUE {
                    self.tx_pending = true;
                }
            }
            TOKEN_TAP => {
                if events
                    .event_set()
                    .intersects(EventSet::ERROR | EventSet::HANG_UP)
                {
                    error!(
                        "net: the tap reported an error or hang-up; no more frames for the guest"
                    );
                    self.tap_broken = true;
                }
            }
            TOKEN_WAKEUP => {
                let _ = self.wakeup.read();
            }
            other => warn!("net: event with unknown token {other}"),
        }
        if std::mem::take(&mut self.tx_pending) {
            self.run_tx();
        }
        self.run_rx();
        self.apply_tap_interest(ops);
    }
}
