//! The virtio-vsock device (virtio 1.2, section 5.10): three queues (rx, tx, event), config space
//! holding the guest CID, and the event-loop glue that drives the hybrid [`Backend`].
//!
//! Work happens in [`MutEventSubscriber::process`]: queue kicks, the listener, host streams, the
//! handshake timer, and a wake-up eventfd written by calls that arrive from other threads
//! (activation, reset, transport reset). After every event the device moves as many packets as it
//! can between the queues and the back-end, then applies the back-end's watch-list changes.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{Bytes, Le32};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{Backend, TOKEN_STREAM};
use super::log_limit::GuestLogLimit;
use super::packet::{Header, EVENT_TRANSPORT_RESET, MAX_PACKET_DATA};
use crate::memory::GuestMemory;
use crate::virtio::{
    device_type, pop_chain, read_config_space, ready_queues, warn_config_write, ActivateError,
    IrqTrigger, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1,
};

/// Index of the rx queue (device -> driver packets).
pub const RX_QUEUE: usize = 0;
/// Index of the tx queue (driver -> device packets).
pub const TX_QUEUE: usize = 1;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 2;
/// Size of the rx queue. Linux's driver keeps every rx descriptor filled with a 4 KiB buffer
/// of its own for as long as the device lives, so this many pages of each guest's memory stay
/// taken: 64 (256 KiB) instead of 256 (1 MiB). 64 packets in flight towards the guest are still
/// more than one connection's credit window needs.
pub const RX_QUEUE_SIZE: u16 = 64;
/// Size of the tx and event queues (the driver allocates nothing per descriptor of these).
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [RX_QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE];

/// Default time a host client has to send its CONNECT line, and the guest to answer a request.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

// Event-loop tokens. Host streams use `TOKEN_STREAM`.
const TOKEN_LISTENER: u32 = 10;
const TOKEN_TIMER: u32 = 11;
const TOKEN_WAKEUP: u32 = 12;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0-2 are reserved, and `u32::MAX` means "any".
    #[error("guest CID {0} is invalid: it must be between 3 and 4294967294")]
    InvalidCid(u64),
    /// Something already exists at the socket path.
    #[error("vsock socket path {0} already exists; remove it or choose another path")]
    PathExists(PathBuf),
    /// Binding the socket failed.
    #[error("cannot bind the vsock socket at {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating an eventfd, timer or socket option failed.
    #[error("cannot set up the vsock device ({what}): {source}")]
    Setup {
        /// What was being created.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

struct ActiveQueues {
    mem: GuestMemory,
    irq: IrqTrigger,
    rx: Queue,
    tx: Queue,
    event: Queue,
}

/// virtio-vsock device with a hybrid Unix-socket back-end.
pub struct Vsock {
    guest_cid: u64,
    acked_features: u64,
    queue_events: Vec<EventFd>,
    wakeup: EventFd,
    active: Option<ActiveQueues>,
    backend: Backend,
    /// Guest tx packets may be waiting (a kick arrived, or tx paused on a full backlog).
    tx_pending: bool,
    /// A transport-reset event waits for an event-queue buffer.
    transport_reset_pending: bool,
    /// Queues the driver broke (avail index run ahead, ring outside memory): its own log limit, so
    /// that earlier guest mistakes do not hide this one.
    broken_queue_log: GuestLogLimit,
}

impl Vsock {
    /// Creates the device for guest CID `guest_cid` and binds the hybrid socket at `uds_path`.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        if uds_path.symlink_metadata().is_ok() {
            return Err(VsockError::PathExists(uds_path));
        }
        let setup = |what| move |source| VsockError::Setup { what, source };
        let mut queue_events = Vec::with_capacity(QUEUE_SIZES.len());
        for _ in QUEUE_SIZES {
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK).map_err(setup("queue eventfd"))?);
        }
        let wakeup = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("wake-up eventfd"))?;
        let listener = UnixListener::bind(&uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        let backend = match Backend::new(
            guest_cid,
            uds_path.clone(),
            listener,
            DEFAULT_HANDSHAKE_TIMEOUT,
        ) {
            Ok(b) => b,
            Err(source) => {
                let _ = std::fs::remove_file(&uds_path);
                return Err(VsockError::Setup {
                    what: "back-end",
                    source,
                });
            }
        };
        Ok(Vsock {
            guest_cid,
            acked_features: 0,
            queue_events,
            wakeup,
            active: None,
            backend,
            tx_pending: false,
            transport_reset_pending: false,
            broken_queue_log: GuestLogLimit::default(),
        })
    }

    /// Changes how long a host client may take to send `CONNECT <port>\n` (and the guest to
    /// answer the resulting request). The default is [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.backend.set_handshake_timeout(timeout);
        self
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The hybrid socket path.
    pub fn uds_path(&self) -> &Path {
        self.backend.uds_path()
    }

    /// Number of live guest connections.
    pub fn connection_count(&self) -> usize {
        self.backend.connection_count()
    }

    /// Bytes of guest data buffered because host readers are slow, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.backend.buffered_bytes()
    }

    /// Tells the driver that all connections are gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET) and
    /// drops the host side of every connection the guest knew of. The event is written as soon
    /// as the driver has an event buffer available.
    pub fn send_transport_reset(&mut self) {
        self.backend.reset_connections();
        if self.active.is_some() {
            self.transport_reset_pending = true;
            self.deliver_transport_reset();
        }
        self.wake();
    }

    fn wake(&self) {
        if let Err(e) = self.wakeup.write(1) {
            error!("vsock: cannot wake the event loop: {e}");
        }
    }

    fn deliver_transport_reset(&mut self) {
        let Some(q) = self.active.as_mut() else {
            return;
        };
        if !self.transport_reset_pending {
            return;
        }
        let chain = match pop_chain(&mut q.event, &q.mem) {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                debug!("vsock: transport reset waits for an event buffer");
                return;
            }
            Err(e) => {
                if self.broken_queue_log.allow() {
                    error!("vsock: event queue unusable until the driver resets the device: {e}");
                }
                return;
            }
        };
        let head = chain.head_index();
        let mut used_len = 0;
        match chain.writable().next() {
            Some(desc) if desc.len() >= 4 => {
                match q
                    .mem
                    .write_obj(Le32::from(EVENT_TRANSPORT_RESET), desc.addr())
                {
                    Ok(()) => used_len = 4,
                    Err(e) => warn!("vsock: cannot write the transport reset event: {e}"),
                }
            }
            _ if self.backend.note_guest_error() => {
                warn!("vsock: event buffer is not a writable buffer of at least 4 bytes")
            }
            _ => {}
        }
        if let Err(e) = q.event.add_used(&q.mem, head, used_len) {
            if self.backend.note_guest_error() {
                warn!("vsock: event queue: cannot return chain {head}: {e}");
            }
        }
        if used_len > 0 {
            self.transport_reset_pending = false;
        }
        if let Err(e) = q.irq.trigger(INT_VRING) {
            error!("vsock: cannot raise the interrupt: {e}");
        }
    }

    /// Moves packets between the queues and the back-end until neither side can progress.
    fn run_queues(&mut self) {
        let Some(q) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        loop {
            if self.tx_pending {
                let (progress, stalled) =
                    process_tx(q, &mut self.backend, &mut self.broken_queue_log);
                self.tx_pending = stalled;
                used |= progress;
            }
            let rx_progress = process_rx(q, &mut self.backend, &mut self.broken_queue_log);
            used |= rx_progress;
            // Only a tx queue paused on a full reply backlog gains from another round.
            if !rx_progress || !self.tx_pending {
                break;
            }
        }
        if used {
            if let Err(e) = q.irq.trigger(INT_VRING) {
                error!("vsock: cannot raise the interrupt: {e}");
            }
        }
        self.deliver_transport_reset();
    }
}

/// Handles guest tx packets. Returns (whether any descriptor was used, whether tx stopped early
/// because replies are backed up).
fn process_tx(
    q: &mut ActiveQueues,
    backend: &mut Backend,
    broken_queue_log: &mut GuestLogLimit,
) -> (bool, bool) {
    let mut used = false;
    loop {
        if backend.backlog_full() {
            return (used, true);
        }
        let mut chain = match pop_chain(&mut q.tx, &q.mem) {
            Ok(Some(chain)) => chain,
            Ok(None) => return (used, false),
            Err(e) => {
                if broken_queue_log.allow() {
                    error!("vsock: tx queue unusable until the driver resets the device: {e}");
                }
                return (used, false);
            }
        };
        let head = chain.head_index();
        match VsockPacket::from_tx_virtq_chain(&q.mem, &mut chain, MAX_PACKET_DATA) {
            Ok(pkt) => backend.handle_guest_packet(&Header::from_packet(&pkt), pkt.data_slice()),
            Err(e) => {
                if backend.note_guest_error() {
                    warn!("vsock: dropping malformed tx descriptor chain: {e}");
                }
            }
        }
        if let Err(e) = q.tx.add_used(&q.mem, head, 0) {
            if backend.note_guest_error() {
                warn!("vsock: tx queue: cannot return chain {head}: {e}");
            }
        }
        used = true;
    }
}

/// Fills guest rx buffers with packets from the back-end. Returns whether any buffer was used.
fn process_rx(
    q: &mut ActiveQueues,
    backend: &mut Backend,
    broken_queue_log: &mut GuestLogLimit,
) -> bool {
    let mut used = false;
    while backend.has_rx_work() {
        let mut chain = match pop_chain(&mut q.rx, &q.mem) {
            Ok(Some(chain)) => chain,
            Ok(None) => break,
            Err(e) => {
                if broken_queue_log.allow() {
                    error!("vsock: rx queue unusable until the driver resets the device: {e}");
                }
                break;
            }
        };
        let head = chain.head_index();
        let len = match VsockPacket::from_rx_virtq_chain(&q.mem, &mut chain, MAX_PACKET_DATA) {
            Ok(pkt) => match backend.fill_rx_packet(pkt.header_slice(), pkt.data_slice()) {
                Some(len) => len,
                None => {
                    // Nothing to send after all: leave the buffer for later.
                    q.rx.go_to_previous_position();
                    break;
                }
            },
            Err(e) => {
                if backend.note_guest_error() {
                    warn!("vsock: skipping malformed rx descriptor chain: {e}");
                }
                0
            }
        };
        if let Err(e) = q.rx.add_used(&q.mem, head, len) {
            if backend.note_guest_error() {
                warn!("vsock: rx queue: cannot return chain {head}: {e}");
            }
        }
        used = true;
    }
    used
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
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
        read_config_space(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.backend.note_guest_error() {
            warn_config_write("vsock", offset, data.len());
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
        let [rx, tx, event] = ready_queues("virtio-vsock", self.acked_features, &mem, queues)?;
        // Kicks before activation were ignored: look at what the driver already queued.
        self.tx_pending = true;
        self.active = Some(ActiveQueues {
            mem,
            irq,
            rx,
            tx,
            event,
        });
        self.wake();
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.active = None;
        self.acked_features = 0;
        self.tx_pending = false;
        self.transport_reset_pending = false;
        self.backend.reset_connections();
        self.wake();
        true
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, index as u32, EventSet::IN)) {
                error!("vsock: cannot watch queue {index} notifications: {e}");
            }
        }
        let fixed = [
            (
                self.backend.listener().as_raw_fd(),
                TOKEN_LISTENER,
                "listener",
            ),
            (self.backend.timer().as_raw_fd(), TOKEN_TIMER, "timer"),
            (self.wakeup.as_raw_fd(), TOKEN_WAKEUP, "wake-up eventfd"),
        ];
        for (fd, token, what) in fixed {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                error!("vsock: cannot watch the {what}: {e}");
            }
        }
        self.backend.apply_fd_changes(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            token @ (0..=2) => {
                let index = token as usize;
                if let Err(e) = self.queue_events[index].read() {
                    debug!("vsock: draining queue {index} notification: {e}");
                }
                if self.active.is_some() {
                    match index {
                        TX_QUEUE => self.tx_pending = true,
                        EVENT_QUEUE => self.deliver_transport_reset(),
                        _ => {}
                    }
                }
            }
            TOKEN_LISTENER => self.backend.accept_clients(),
            TOKEN_TIMER => self.backend.handle_timer(),
            TOKEN_WAKEUP => {
                let _ = self.wakeup.read();
            }
            TOKEN_STREAM => self
                .backend
                .handle_stream_event(events.fd(), events.event_set()),
            other => warn!("vsock: event with unknown token {other}"),
        }
        self.run_queues();
        self.backend.apply_fd_changes(ops);
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.backend.close_all();
        if let Err(e) = std::fs::remove_file(self.backend.uds_path()) {
            debug!("vsock: removing {}: {e}", self.backend.uds_path().display());
        }
    }
}
