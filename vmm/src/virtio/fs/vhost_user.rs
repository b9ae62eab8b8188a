//! The vhost-user front-end side of the virtio-fs device: one connection to a back-end (virtiofsd).
//!
//! [`BackendConnection::connect`] does the part of the handshake that needs no guest: SET_OWNER,
//! GET_FEATURES and the protocol feature negotiation. [`BackendConnection::start_queues`] does the
//! part that needs the driver's choices, at activation: SET_FEATURES, SET_MEM_TABLE and, per queue,
//! SET_VRING_NUM / ADDR / BASE / CALL / KICK / ENABLE. [`BackendConnection::stop_queues`] undoes the
//! queue part at a device reset.
//!
//! Every request runs under a socket timeout, so a stuck back-end costs a vCPU at most
//! [`REQUEST_TIMEOUT`] per request instead of hanging it; a failed or timed-out request leaves the
//! connection out of step with the back-end, so the caller must stop using it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info};
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// How long [`BackendConnection::connect`] keeps retrying while the socket does not exist yet,
/// refuses connections (virtiofsd still starting) or is not yet ours to connect to (the shim
/// starts virtiofsd and a jailed hull-vmm together and hands the socket to the jail user once
/// virtiofsd made it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two connection attempts: short, since hull-vmm starts beside virtiofsd and
/// every pause it oversleeps delays the boot.
const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(2);

/// Longest wait for one reply (or one send) on the vhost-user socket.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol features we accept when the back-end offers them: MQ (it tells how many queues it
/// serves) and REPLY_ACK (every request is acknowledged, so a refused request is an error here
/// rather than a silent stall later).
const WANTED_PROTOCOL_FEATURES: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK);

/// Errors of the vhost-user connection. Each names the socket, so a log line says which back-end.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("virtio-fs: bad configuration: {0}")]
    Config(#[from] super::config::FsConfigError),
    #[error("virtio-fs: cannot connect to the vhost-user socket {socket} (tried for {waited:?}): {source}")]
    Connect {
        socket: PathBuf,
        waited: Duration,
        #[source]
        source: io::Error,
    },
    #[error("virtio-fs: cannot set timeouts on the vhost-user socket {socket}: {source}")]
    SocketSetup {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("virtio-fs: cannot create a {what}: {source}")]
    EventFd {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("virtio-fs: vhost-user {request} to {socket} failed: {source}")]
    Request {
        socket: PathBuf,
        request: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("virtio-fs: the back-end at {socket} does not offer {feature}")]
    MissingFeature {
        socket: PathBuf,
        feature: &'static str,
    },
    #[error(
        "virtio-fs: the back-end at {socket} serves {offered} queues, {wanted} are configured"
    )]
    TooFewQueues {
        socket: PathBuf,
        wanted: usize,
        offered: u64,
    },
    #[error("virtio-fs: guest memory region at {address:#x} cannot be shared: {reason}")]
    MemoryRegion { address: u64, reason: String },
    #[error("virtio-fs: queue {index}: {what} address {address:#x} is not in guest memory")]
    RingAddress {
        index: usize,
        what: &'static str,
        address: u64,
    },
    #[error("virtio-fs: queue {index} does not exist (the device has {count})")]
    NoSuchQueue { index: usize, count: usize },
    #[error("virtio-fs: the connection to {socket} is unusable after an earlier failure")]
    Broken { socket: PathBuf },
}

/// Where one ready virtqueue lives in guest memory, as the driver set it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringLayout {
    /// Queue index (0 = hiprio, 1.. = request queues).
    pub index: usize,
    /// Queue size the driver chose.
    pub size: u16,
    /// Queue size the device offered (QueueNumMax).
    pub max_size: u16,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// Guest-physical address of the driver (avail) ring.
    pub avail_ring: u64,
    /// Guest-physical address of the device (used) ring.
    pub used_ring: u64,
}

/// Connects to `socket`, retrying while it is missing, refuses connections or denies us access,
/// for up to `timeout`; the error of the last attempt names the socket and the time waited.
pub fn connect_with_retry(socket: &Path, timeout: Duration) -> Result<UnixStream, FsError> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::PermissionDenied
                ) && start.elapsed() < timeout =>
            {
                std::thread::sleep(CONNECT_RETRY_INTERVAL);
            }
            Err(source) => {
                return Err(FsError::Connect {
                    socket: socket.to_path_buf(),
                    waited: start.elapsed(),
                    source,
                })
            }
        }
    }
}

/// The vhost-user memory table entries for guest RAM: one per region, each with the memfd, the
/// region's offset in it, its guest-physical address, size and address in this process.
pub fn memory_table(mem: &GuestMemory) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    mem.iter()
        .map(|region| {
            let address = region.start_addr().0;
            if region.file_offset().is_none() {
                return Err(FsError::MemoryRegion {
                    address,
                    reason: "it is not backed by a file (guest RAM must be a memfd)".to_string(),
                });
            }
            VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|e| {
                FsError::MemoryRegion {
                    address,
                    reason: e.to_string(),
                }
            })
        })
        .collect()
}

/// Translates a ring's guest addresses into addresses in this process, as SET_VRING_ADDR wants.
pub fn vring_config(mem: &GuestMemory, ring: &VringLayout) -> Result<VringConfigData, FsError> {
    let host = |what: &'static str, address: u64| {
        mem.get_host_address(GuestAddress(address))
            .map(|p| p as u64)
            .map_err(|_| FsError::RingAddress {
                index: ring.index,
                what,
                address,
            })
    };
    Ok(VringConfigData {
        queue_max_size: ring.max_size,
        queue_size: ring.size,
        flags: 0,
        desc_table_addr: host("descriptor table", ring.desc_table)?,
        used_ring_addr: host("used ring", ring.used_ring)?,
        avail_ring_addr: host("available ring", ring.avail_ring)?,
        log_addr: None,
    })
}

/// An open, negotiated vhost-user connection.
pub struct BackendConnection {
    socket: PathBuf,
    frontend: Frontend,
    socket_fd: RawFd,
    /// Virtio features the back-end offered (GET_FEATURES).
    backend_features: u64,
    /// Protocol features both sides agreed on.
    protocol_features: VhostUserProtocolFeatures,
    num_queues: usize,
    /// A request failed: the stream may be out of step, nothing more is sent.
    broken: bool,
}

impl BackendConnection {
    /// Connects to the back-end at `socket` (retrying up to `connect_timeout`) and negotiates:
    /// SET_OWNER, GET_FEATURES (VIRTIO_F_VERSION_1 is required), GET/SET_PROTOCOL_FEATURES and, with
    /// MQ, GET_QUEUE_NUM (the back-end must serve `num_queues`).
    pub fn connect(
        socket: &Path,
        num_queues: usize,
        connect_timeout: Duration,
    ) -> Result<Self, FsError> {
        let stream = connect_with_retry(socket, connect_timeout)?;
        let setup_err = |source| FsError::SocketSetup {
            socket: socket.to_path_buf(),
            source,
        };
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(setup_err)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(setup_err)?;
        let socket_fd = stream.as_raw_fd();
        let mut conn = Self {
            socket: socket.to_path_buf(),
            frontend: Frontend::from_stream(stream, num_queues as u64),
            socket_fd,
            backend_features: 0,
            protocol_features: VhostUserProtocolFeatures::empty(),
            num_queues,
            broken: false,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<(), FsError> {
        self.request("SET_OWNER", |f| f.set_owner())?;
        self.backend_features = self.request("GET_FEATURES", |f| f.get_features())?;
        if self.backend_features & super::VIRTIO_F_VERSION_1 == 0 {
            return Err(self.missing("VIRTIO_F_VERSION_1"));
        }
        if self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = self.request("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())?;
            let accepted = offered & WANTED_PROTOCOL_FEATURES;
            self.request("SET_PROTOCOL_FEATURES", |f| {
                f.set_protocol_features(accepted)
            })?;
            self.protocol_features = accepted;
            if accepted.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // From now on every request asks for an acknowledgement.
                self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if accepted.contains(VhostUserProtocolFeatures::MQ) {
                let offered = self.request("GET_QUEUE_NUM", |f| f.get_queue_num())?;
                if offered < self.num_queues as u64 {
                    return Err(FsError::TooFewQueues {
                        socket: self.socket.clone(),
                        wanted: self.num_queues,
                        offered,
                    });
                }
            }
        }
        info!(
            socket = %self.socket.display(),
            features = format_args!("{:#x}", self.backend_features),
            protocol_features = format_args!("{:#x}", self.protocol_features.bits()),
            "virtio-fs: vhost-user back-end connected"
        );
        Ok(())
    }

    /// Virtio features the back-end offered.
    pub fn backend_features(&self) -> u64 {
        self.backend_features
    }

    /// Protocol features agreed with the back-end.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    /// The socket path (for log lines).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The connected socket's descriptor, to watch for the back-end hanging up.
    pub fn socket_fd(&self) -> RawFd {
        self.socket_fd
    }

    /// True once a request failed; the connection is then never used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// True when rings must be enabled and disabled explicitly (SET_VRING_ENABLE): the back-end
    /// offered VHOST_USER_F_PROTOCOL_FEATURES, which we always acknowledge back.
    fn uses_vring_enable(&self) -> bool {
        self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }

    /// Starts the back-end on the driver's queues: SET_FEATURES (the driver's features plus
    /// VHOST_USER_F_PROTOCOL_FEATURES when offered), SET_MEM_TABLE, then per ring SET_VRING_NUM,
    /// SET_VRING_ADDR, SET_VRING_BASE 0, SET_VRING_CALL (`calls[index]`), SET_VRING_KICK
    /// (`kicks[index]`) and SET_VRING_ENABLE.
    pub fn start_queues(
        &mut self,
        mem: &GuestMemory,
        driver_features: u64,
        rings: &[VringLayout],
        kicks: &[EventFd],
        calls: &[EventFd],
    ) -> Result<(), FsError> {
        let protocol_bit =
            self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let features = (driver_features & self.backend_features) | protocol_bit;
        self.request("SET_FEATURES", |f| f.set_features(features))?;
        let table = memory_table(mem)?;
        self.request("SET_MEM_TABLE", |f| f.set_mem_table(&table).map(|_| ()))?;
        for ring in rings {
            let (Some(kick), Some(call)) = (kicks.get(ring.index), calls.get(ring.index)) else {
                return Err(FsError::NoSuchQueue {
                    index: ring.index,
                    count: kicks.len().min(calls.len()),
                });
            };
            let config = vring_config(mem, ring)?;
            let index = ring.index;
            self.request("SET_VRING_NUM", |f| f.set_vring_num(index, ring.size))?;
            self.request("SET_VRING_ADDR", |f| f.set_vring_addr(index, &config))?;
            self.request("SET_VRING_BASE", |f| f.set_vring_base(index, 0))?;
            self.request("SET_VRING_CALL", |f| f.set_vring_call(index, call))?;
            self.request("SET_VRING_KICK", |f| f.set_vring_kick(index, kick))?;
            if self.uses_vring_enable() {
                self.request("SET_VRING_ENABLE", |f| f.set_vring_enable(index, true))?;
            }
            debug!(socket = %self.socket.display(), queue = index, size = ring.size, "virtio-fs: vring started");
        }
        Ok(())
    }

    /// Stops the given rings: SET_VRING_ENABLE 0 (when rings are enabled explicitly), then
    /// GET_VRING_BASE, which the vhost-user spec defines as "stop the ring".
    pub fn stop_queues(&mut self, indices: &[usize]) -> Result<(), FsError> {
        for &index in indices {
            if self.uses_vring_enable() {
                self.request("SET_VRING_ENABLE", |f| f.set_vring_enable(index, false))?;
            }
            self.request("GET_VRING_BASE", |f| f.get_vring_base(index))?;
        }
        Ok(())
    }

    /// Runs one request; a failure marks the connection broken.
    fn request<T>(
        &mut self,
        request: &'static str,
        op: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, FsError> {
        if self.broken {
            return Err(FsError::Broken {
                socket: self.socket.clone(),
            });
        }
        op(&mut self.frontend).map_err(|source| {
            self.broken = true;
            FsError::Request {
                socket: self.socket.clone(),
                request,
                source,
            }
        })
    }

    fn missing(&self, feature: &'static str) -> FsError {
        FsError::MissingFeature {
            socket: self.socket.clone(),
            feature,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use vm_memory::{Bytes, GuestMemoryMmap};

    use super::*;
    use crate::memory::create_guest_ram;

    #[test]
    fn memory_table_carries_memfd_offsets_and_host_addresses() {
        let ram = create_guest_ram(64).unwrap();
        let table = memory_table(&ram.memory).unwrap();
        assert_eq!(table.len(), 1);
        let region = &table[0];
        assert_eq!(region.guest_phys_addr, 0);
        assert_eq!(region.memory_size, 64 << 20);
        assert_eq!(region.mmap_offset, 0);
        assert_eq!(region.mmap_handle, ram.memfd.as_raw_fd());
        // The userspace address is where this process sees guest address 0.
        ram.memory
            .write_obj(0x1234_5678u32, GuestAddress(0x40))
            .unwrap();
        // SAFETY: the region is mapped for 64 MiB at userspace_addr and stays mapped (ram is alive).
        let seen = unsafe { std::ptr::read_volatile((region.userspace_addr + 0x40) as *const u32) };
        assert_eq!(seen, 0x1234_5678);
    }

    #[test]
    fn anonymous_memory_cannot_be_shared() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert!(matches!(
            memory_table(&mem),
            Err(FsError::MemoryRegion { address: 0, .. })
        ));
    }

    #[test]
    fn vring_addresses_are_translated_and_checked() {
        let ram = create_guest_ram(64).unwrap();
        let base = ram.memory.get_host_address(GuestAddress(0)).unwrap() as u64;
        let ring = VringLayout {
            index: 1,
            size: 256,
            max_size: 1024,
            desc_table: 0x10_0000,
            avail_ring: 0x10_1000,
            used_ring: 0x10_2000,
        };
        let config = vring_config(&ram.memory, &ring).unwrap();
        assert_eq!(config.desc_table_addr, base + 0x10_0000);
        assert_eq!(config.avail_ring_addr, base + 0x10_1000);
        assert_eq!(config.used_ring_addr, base + 0x10_2000);
        assert_eq!(
            (config.queue_size, config.queue_max_size, config.flags),
            (256, 1024, 0)
        );

        let outside = VringLayout {
            used_ring: 64 << 20,
            ..ring
        };
        match vring_config(&ram.memory, &outside) {
            Err(FsError::RingAddress {
                index: 1,
                what: "used ring",
                address,
            }) => {
                assert_eq!(address, 64 << 20)
            }
            Err(other) => panic!("expected a ring address error, got {other}"),
            Ok(_) => panic!("a used ring past the end of guest memory was accepted"),
        }
    }
}
