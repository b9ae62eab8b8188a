//! virtio-fs device (virtio 1.2, section 5.11, device id 26) served by a vhost-user back-end.
//!
//! The VMM keeps only the virtio-mmio side of the device: features, the config space (mount tag and
//! number of request queues) and interrupts. The queues themselves are handled by the back-end
//! (virtiofsd), which maps guest RAM through the memfd sent in the vhost-user memory table:
//! - a guest kick goes straight from KVM (ioeventfd on QueueNotify) to the back-end, since the
//!   device's queue eventfds are the ones handed over with SET_VRING_KICK;
//! - the back-end signals used buffers on one "call" eventfd per queue; this device watches them in
//!   the event loop and raises the virtio interrupt (InterruptStatus VRING + irqfd);
//! - the vhost-user socket is watched for hang-up: if the back-end dies, an ERROR names the socket and
//!   interrupts stop being forwarded (in-flight guest requests then never complete, the guest
//!   waits); the device refuses to be activated or reset again, so the transport reports
//!   DEVICE_NEEDS_RESET.
//!
//! Queue 0 is the hiprio queue, queues 1..=N are request queues.
//!
//! Wiring (done by the VMM): `VhostUserFs::new(cfg)?` then `attach_virtio(.., Arc::new(Mutex::new(dev)))`
//! and add the same `Arc` to the event manager as a subscriber.

pub mod config;
pub mod vhost_user;

#[cfg(test)]
pub(crate) mod backend_tests;

use std::io;
use std::path::Path;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::{debug, error, warn};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use config::{FsConfig, FsConfigError};
pub use vhost_user::FsError;

use self::vhost_user::{BackendConnection, VringLayout, CONNECT_TIMEOUT};
use super::{device_type, ActivateError, IrqTrigger, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1};
use crate::memory::GuestMemory;

/// Virtio features this device may offer, if the back-end offers them too. Ring features are
/// implemented by the back-end; anything else (IOMMU, packed rings, notifications) is left out.
const SUPPORTED_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Event data of the vhost-user socket in the event loop (call eventfds use their queue index).
const SOCKET_EVENT: u32 = u32::MAX;

/// The virtio-fs device: a vhost-user front-end plus the virtio-mmio device state.
pub struct VhostUserFs {
    config: FsConfig,
    queue_max_sizes: Vec<u16>,
    avail_features: u64,
    acked_features: u64,
    backend: BackendConnection,
    /// Kick eventfds, one per queue: the VMM makes them ioeventfds, the back-end reads them.
    queue_events: Vec<EventFd>,
    /// Call eventfds, one per queue: the back-end writes them, the event loop forwards them.
    call_events: Vec<EventFd>,
    /// The interrupt line, set while the device is activated.
    irq: Option<IrqTrigger>,
    /// Queues handed to the back-end at activation (to stop at reset).
    started_queues: Vec<usize>,
    /// The back-end hung up: nothing is forwarded or sent any more.
    backend_gone: bool,
}

impl VhostUserFs {
    /// Connects to the vhost-user back-end at `cfg.socket` (retrying for up to 5 s while virtiofsd
    /// starts) and negotiates the vhost-user features. The guest-dependent set-up waits for
    /// activation.
    pub fn new(cfg: FsConfig) -> Result<Self, FsError> {
        Self::with_connect_timeout(cfg, CONNECT_TIMEOUT)
    }

    /// [`VhostUserFs::new`] with another connection retry limit.
    pub fn with_connect_timeout(
        cfg: FsConfig,
        connect_timeout: std::time::Duration,
    ) -> Result<Self, FsError> {
        cfg.validate()?;
        let num_queues = cfg.num_queues();
        let backend = BackendConnection::connect(&cfg.socket, num_queues, connect_timeout)?;
        let new_eventfds = |what: &'static str| {
            (0..num_queues)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK))
                .collect::<io::Result<Vec<_>>>()
                .map_err(|source| FsError::EventFd { what, source })
        };
        let queue_events = new_eventfds("kick eventfd")?;
        let call_events = new_eventfds("call eventfd")?;
        let avail_features = backend.backend_features() & SUPPORTED_FEATURES;
        Ok(Self {
            queue_max_sizes: vec![cfg.queue_size; num_queues],
            config: cfg,
            avail_features,
            acked_features: 0,
            backend,
            queue_events,
            call_events,
            irq: None,
            started_queues: Vec::new(),
            backend_gone: false,
        })
    }

    /// The vhost-user socket this device talks to.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// True once the back-end hung up.
    pub fn backend_gone(&self) -> bool {
        self.backend_gone
    }

    /// Why the back-end cannot be used, if it cannot.
    fn backend_unusable(&self) -> Option<String> {
        if self.backend_gone {
            Some(format!(
                "the vhost-user back-end at {} hung up",
                self.config.socket.display()
            ))
        } else if self.backend.is_broken() {
            Some(format!(
                "the vhost-user connection to {} failed earlier",
                self.config.socket.display()
            ))
        } else {
            None
        }
    }

    /// The layout of every ready queue.
    fn ready_rings(&self, queues: &[Queue]) -> Result<Vec<VringLayout>, ActivateError> {
        if queues.len() != self.queue_max_sizes.len() {
            return Err(ActivateError::BadQueue {
                index: queues.len(),
                reason: format!(
                    "the transport passed {} queues, the device has {}",
                    queues.len(),
                    self.queue_max_sizes.len()
                ),
            });
        }
        Ok(queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready())
            .map(|(index, q)| VringLayout {
                index,
                size: q.size(),
                max_size: q.max_size(),
                desc_table: q.desc_table(),
                avail_ring: q.avail_ring(),
                used_ring: q.used_ring(),
            })
            .collect())
    }

    /// A signal from the back-end on queue `index`'s call eventfd: raise the vring interrupt.
    fn forward_call(&mut self, index: usize) {
        let Some(call) = self.call_events.get(index) else {
            warn!(
                index,
                "virtio-fs: event for an unknown call eventfd, ignored"
            );
            return;
        };
        match call.read() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                error!(
                    queue = index,
                    "virtio-fs: cannot read the call eventfd: {e}"
                );
                return;
            }
        }
        if self.backend_gone {
            return;
        }
        match &self.irq {
            Some(irq) => {
                if let Err(e) = irq.trigger(INT_VRING) {
                    error!(queue = index, "virtio-fs: cannot raise the interrupt: {e}");
                }
            }
            None => debug!(
                queue = index,
                "virtio-fs: back-end signalled a queue while not activated"
            ),
        }
    }

    /// The vhost-user socket hung up or failed: the back-end is gone.
    fn backend_hung_up(&mut self, events: Events, ops: &mut EventOps) {
        error!(
            socket = %self.config.socket.display(),
            event_set = ?events.event_set(),
            "virtio-fs: the vhost-user back-end (virtiofsd) hung up; the shared directory is gone \
             for the guest and its pending requests will not complete"
        );
        self.backend_gone = true;
        if let Err(e) = ops.remove(socket_events(self.backend.socket_fd())) {
            warn!("virtio-fs: cannot stop watching the vhost-user socket: {e:?}");
        }
    }
}

/// How the vhost-user socket is registered: no readable interest (replies are read synchronously
/// by the requests), only hang-up and error, which epoll always reports.
fn socket_events(fd: std::os::fd::RawFd) -> Events {
    Events::with_data_raw(fd, SOCKET_EVENT, EventSet::empty())
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_space(&self.config.config_space(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            offset,
            len = data.len(),
            "virtio-fs: config space is read-only, write ignored"
        );
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
        if let Some(reason) = self.backend_unusable() {
            return Err(ActivateError::Backend(reason));
        }
        let rings = self.ready_rings(&queues)?;
        // Drop any stale signal from an earlier activation.
        for call in &self.call_events {
            let _ = call.read();
        }
        let result = self.backend.start_queues(
            &mem,
            self.acked_features,
            &rings,
            &self.queue_events,
            &self.call_events,
        );
        let indices: Vec<usize> = rings.iter().map(|r| r.index).collect();
        match result {
            Ok(()) => {
                debug!(
                    socket = %self.config.socket.display(),
                    queues = ?indices,
                    "virtio-fs: back-end started"
                );
                self.irq = Some(irq);
                self.started_queues = indices;
                Ok(())
            }
            Err(e) => {
                // Rings set up before the failure must not run on a device the guest sees failed.
                if !self.backend.is_broken() {
                    if let Err(stop) = self.backend.stop_queues(&indices) {
                        warn!("virtio-fs: cannot stop rings after a failed activation: {stop}");
                    }
                }
                Err(ActivateError::Backend(e.to_string()))
            }
        }
    }

    fn reset(&mut self) -> bool {
        self.irq = None;
        self.acked_features = 0;
        if let Some(reason) = self.backend_unusable() {
            error!("virtio-fs: cannot reset the device: {reason}");
            return false;
        }
        let started = std::mem::take(&mut self.started_queues);
        match self.backend.stop_queues(&started) {
            Ok(()) => true,
            Err(e) => {
                error!("virtio-fs: device reset failed: {e}");
                false
            }
        }
    }
}

impl MutEventSubscriber for VhostUserFs {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, call) in self.call_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(call, index as u32, EventSet::IN)) {
                error!(
                    queue = index,
                    "virtio-fs: cannot watch the call eventfd: {e:?}"
                );
            }
        }
        if let Err(e) = ops.add(socket_events(self.backend.socket_fd())) {
            error!(
                socket = %self.config.socket.display(),
                "virtio-fs: cannot watch the vhost-user socket: {e:?}"
            );
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() == SOCKET_EVENT {
            self.backend_hung_up(events, ops);
        } else {
            self.forward_call(events.data() as usize);
        }
    }
}
