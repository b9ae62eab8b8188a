//! Building and running one microVM: the flow from a [`VmConfig`] to a [`VmExit`].
//!
//! open KVM → guest RAM (memfd) → VM (irqchip, PIT, memslots) → kernel + initrd → devices on the I/O
//! and MMIO buses → command line and boot structures → vCPUs → event loop until the VM ends → stop the
//! vCPU threads.

use std::fs::File;
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryBackend as _;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, BootConfig};
use crate::cmdline::{build_cmdline, CmdlineError, MmioDeviceSlot};
use crate::control::{Control, VmExit};
use crate::devices::boot_marker::BootMarker;
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::i8042::I8042Device;
use crate::devices::serial::SerialDevice;
use crate::exit_stats::ExitStats;
use crate::kvm_host::{self, KvmHostError};
use crate::kvm_stats::{KvmStatsError, KvmStatsFile};
use crate::layout::*;
use crate::memory::{self, MemoryError};
use crate::seccomp::{self, SeccompError, ThreadKind};
use crate::vcpu::{self, VcpuContext};
use crate::virtio::balloon::{Balloon, BalloonError};
use crate::virtio::fs::{FsConfig, VhostUserFs};
use crate::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::virtio::net::{Net, NetConfig, NetError};
use crate::virtio::pmem::{Pmem, PmemError, PmemImage, PmemImageError};
use crate::virtio::vsock::Vsock;
use crate::virtio::{IrqTrigger, VirtioDevice};
use crate::vm::{self, VmError};

/// Largest vCPU count we configure (MP table and APIC IDs stay simple below this).
pub use crate::boot::MAX_VCPUS;

/// Where the guest's serial console goes.
#[derive(Debug, Clone)]
pub enum SerialOutput {
    Stdout,
    File(PathBuf),
}

/// The hybrid vsock device.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

/// Everything needed to start a microVM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u64,
    pub vcpus: u8,
    pub serial: SerialOutput,
    pub vsock: Option<VsockConfig>,
    /// virtio-fs devices backed by vhost-user file-system daemons (virtiofsd).
    pub fs: Vec<FsConfig>,
    /// virtio-net devices, each over a tap.
    pub net: Vec<NetConfig>,
    /// A virtio-pmem device over this image file (read-only; mapped above RAM).
    pub pmem: Option<PathBuf>,
    /// Guest RAM as an unlinked file on this tmpfs directory instead of a memfd (the mount's
    /// `huge=` option then sets its host page size).
    pub mem_dir: Option<PathBuf>,
    /// A virtio-balloon device for free page reporting: the guest hands freed memory back and
    /// the VMM releases its host pages.
    pub free_page_reporting: bool,
    /// Per-thread seccomp filters (see [`crate::seccomp`]). `false` is for debugging only.
    pub seccomp: bool,
    /// Log the guest's exit counts when the VM ends (the VMM's own by reason and port/address,
    /// and KVM's per-vCPU and per-VM counters). Also done when debug logging is on.
    pub exit_stats: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("--vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    VcpuCount(u8),
    #[error("cannot open the {what} {path}: {source}")]
    OpenImage {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the serial log {path}: {source}")]
    SerialLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kvm(#[from] KvmHostError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("cannot place a device on the bus: {0}")]
    Bus(#[from] BusError),
    #[error("too many virtio devices: only {0} IRQ lines are available")]
    TooManyDevices(u32),
    #[error("cannot create the virtio-fs device for tag {tag:?}: {source}")]
    Fs {
        tag: String,
        #[source]
        source: crate::virtio::fs::FsError,
    },
    #[error("cannot create net device {index}: {source}")]
    Net {
        index: usize,
        #[source]
        source: NetError,
    },
    #[error(transparent)]
    Balloon(#[from] BalloonError),
    #[error(transparent)]
    PmemImage(#[from] PmemImageError),
    #[error(transparent)]
    Pmem(#[from] PmemError),
    #[error("cannot create the vsock device: {0}")]
    Vsock(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    VcpuSpawn(#[from] vcpu::SpawnError),
    #[error("event loop failed: {0:?}")]
    EventLoop(event_manager::Error),
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Io { what, source }
}

fn open_image(what: &'static str, path: &Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::OpenImage {
        what,
        path: path.to_path_buf(),
        source,
    })
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A virtio device attached to the VM: its slot and the subscriber the event loop drives.
struct AttachedVirtio {
    slot: MmioDeviceSlot,
    subscriber: Subscriber,
}

/// Puts `device` in the next free virtio-mmio window (transport on the MMIO bus, irqfd, one
/// ioeventfd per queue) and records it in `attached`.
fn attach_virtio<D>(
    vm_fd: &kvm_ioctls::VmFd,
    mmio_bus: &mut Bus,
    memory: &memory::GuestMemory,
    attached: &mut Vec<AttachedVirtio>,
    device: D,
) -> Result<(), VmmError>
where
    D: VirtioDevice + MutEventSubscriber + Send + 'static,
{
    let device = Arc::new(Mutex::new(device));
    let index = attached.len() as u32;
    let irq = VIRTIO_IRQ_BASE + index;
    if irq > VIRTIO_IRQ_MAX {
        return Err(VmmError::TooManyDevices(
            VIRTIO_IRQ_MAX - VIRTIO_IRQ_BASE + 1,
        ));
    }
    let base = VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE;
    let irq_trigger = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("irqfd"))?);
    vm::register_irqfd(vm_fd, irq_trigger.irqfd(), irq)?;
    {
        let dev = device.lock().expect("device lock");
        for (queue, evt) in dev.queue_events().iter().enumerate() {
            vm::register_mmio_ioeventfd(vm_fd, evt, base + QUEUE_NOTIFY_OFFSET, queue as u32)?;
        }
    }
    let as_virtio: Arc<Mutex<dyn VirtioDevice>> = device.clone();
    let transport = MmioTransport::new(memory.clone(), as_virtio, irq_trigger);
    mmio_bus.insert(Arc::new(Mutex::new(transport)), base, VIRTIO_MMIO_SIZE)?;
    attached.push(AttachedVirtio {
        slot: MmioDeviceSlot {
            base,
            size: VIRTIO_MMIO_SIZE,
            irq,
        },
        subscriber: device,
    });
    Ok(())
}

/// Maps `image` into the guest as the memory slot after RAM's, at [`pmem_window_start`];
/// returns the window's guest-physical start.
fn attach_pmem(
    vm_fd: &kvm_ioctls::VmFd,
    ram: &memory::GuestRam,
    image: &PmemImage,
) -> Result<u64, VmmError> {
    let start = pmem_window_start(ram.memory.last_addr().0 + 1);
    let slot = ram.memory.num_regions() as u32;
    // SAFETY: `image` owns the mapping and lives until `run` returns, after the vCPUs stopped;
    // the window lies above RAM and the MMIO gap.
    unsafe { vm::map_slot(vm_fd, slot, start, image.len(), image.host_addr()) }?;
    tracing::info!(
        "pmem image {} ({} MiB) at {start:#x}",
        image.path().display(),
        image.len() >> 20
    );
    Ok(start)
}

/// Builds the VM from `config`, runs it until it ends, and returns why it ended.
pub fn run(config: &VmConfig, vmm_start: Instant) -> Result<VmExit, VmmError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(VmmError::VcpuCount(config.vcpus));
    }
    // Compiled before anything else, so a filter that cannot be built stops us early.
    let filters_start = Instant::now();
    let filters = if config.seccomp {
        let kick = vcpu::kick_signal();
        Some((
            seccomp::build(ThreadKind::Vmm, kick)?,
            Arc::new(seccomp::build(ThreadKind::Vcpu, kick)?),
        ))
    } else {
        tracing::warn!(
            "SECCOMP IS OFF (--seccomp=off): hull-vmm runs with every syscall allowed; a guest that \
             takes over the VMM reaches the whole host kernel API. For debugging only, never in production"
        );
        None
    };
    tracing::debug!(
        "set-up: seccomp filters compiled in {} us",
        filters_start.elapsed().as_micros()
    );
    let mut kernel_file = open_image("kernel", &config.kernel)?;
    let mut initrd_file = config
        .initrd
        .as_deref()
        .map(|p| open_image("initrd", p))
        .transpose()?;
    let pmem_image = config.pmem.as_deref().map(PmemImage::open).transpose()?;
    let serial_out: Box<dyn Write + Send> = match &config.serial {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::File(path) => {
            Box::new(File::create(path).map_err(|source| VmmError::SerialLog {
                path: path.clone(),
                source,
            })?)
        }
    };

    let stage = |name: &str| {
        tracing::debug!(
            "set-up: {name} done at {} us",
            vmm_start.elapsed().as_micros()
        )
    };
    stage("config and images opened");
    let kvm = kvm_host::open_kvm()?;
    stage("KVM opened");
    if kvm_host::is_pvm_host() {
        tracing::warn!("{}", kvm_host::PVM_WARNING);
    }
    let ram = memory::create_guest_ram_in(config.mem_mib, config.mem_dir.as_deref())?;
    stage("guest memory created");
    let vm_fd = vm::create_vm(&kvm, &ram.memory)?;
    stage("VM created");

    let kernel = boot::load_kernel(&ram.memory, &mut kernel_file)?;
    tracing::info!(
        "kernel {} loaded: entry {:#x} ({:?} boot)",
        config.kernel.display(),
        kernel.entry.0,
        kernel.protocol
    );
    let initrd = match initrd_file.as_mut() {
        Some(f) => Some(boot::load_initrd(
            &ram.memory,
            ram.size_bytes,
            f,
            kernel.kernel_end,
        )?),
        None => None,
    };

    stage("kernel and initrd loaded");
    // Legacy devices.
    let mut pio_bus = Bus::new();
    let mut mmio_bus = Bus::new();
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("serial irqfd"))?;
    vm::register_irqfd(&vm_fd, &serial_irq, SERIAL_COM1_IRQ)?;
    let serial: Arc<Mutex<dyn BusDevice>> =
        Arc::new(Mutex::new(SerialDevice::new(serial_irq, serial_out)));
    pio_bus.insert(serial, u64::from(SERIAL_COM1_PORT), 8)?;
    let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("reset eventfd"))?;
    let i8042 = I8042Device::new(reset_evt.try_clone().map_err(io_err("reset eventfd"))?);
    pio_bus.insert(Arc::new(Mutex::new(i8042)), u64::from(I8042_DATA_PORT), 5)?;
    mmio_bus.insert(
        Arc::new(Mutex::new(BootMarker::new(vmm_start))),
        BOOT_MARKER_ADDR,
        BOOT_MARKER_SIZE,
    )?;

    // Virtio devices.
    let mut virtio: Vec<AttachedVirtio> = Vec::new();
    if let Some(vsock) = &config.vsock {
        let dev = Vsock::new(vsock.guest_cid, vsock.uds_path.clone())
            .map_err(|e| VmmError::Vsock(e.to_string()))?;
        attach_virtio(&vm_fd, &mut mmio_bus, &ram.memory, &mut virtio, dev)?;
    }

    for fs in &config.fs {
        let dev = VhostUserFs::new(fs.clone()).map_err(|source| VmmError::Fs {
            tag: fs.tag.clone(),
            source,
        })?;
        attach_virtio(&vm_fd, &mut mmio_bus, &ram.memory, &mut virtio, dev)?;
    }

    for (index, net) in config.net.iter().enumerate() {
        let dev = Net::new(net).map_err(|source| VmmError::Net { index, source })?;
        attach_virtio(&vm_fd, &mut mmio_bus, &ram.memory, &mut virtio, dev)?;
    }

    if let Some(image) = &pmem_image {
        let start = attach_pmem(&vm_fd, &ram, image)?;
        let dev = Pmem::new(start, image.len())?;
        attach_virtio(&vm_fd, &mut mmio_bus, &ram.memory, &mut virtio, dev)?;
    }

    if config.free_page_reporting {
        attach_virtio(
            &vm_fd,
            &mut mmio_bus,
            &ram.memory,
            &mut virtio,
            Balloon::new()?,
        )?;
    }

    let slots: Vec<_> = virtio.iter().map(|v| v.slot).collect();
    let cmdline = build_cmdline(&config.cmdline, &slots)?;
    tracing::debug!("kernel command line: {:?}", cmdline.as_cstring().ok());
    boot::configure_system(
        &ram.memory,
        &BootConfig {
            mem_bytes: ram.size_bytes,
            cmdline: &cmdline,
            initrd,
            num_cpus: config.vcpus,
            kernel: &kernel,
        },
    )?;

    stage("devices and boot structures ready");
    // vCPUs.
    let mut vcpu_fds = Vec::new();
    let want_exit_stats = config.exit_stats || tracing::enabled!(tracing::Level::DEBUG);
    let mut kvm_stats = Vec::new();
    // Read now: the seccomp filter installed below allows no open().
    let host_thp = want_exit_stats.then(memory::describe_host_thp);
    if want_exit_stats {
        kvm_stats.push(("vm".to_string(), KvmStatsFile::open(&vm_fd)));
    }
    for index in 0..config.vcpus {
        let fd = vm_fd
            .create_vcpu(u64::from(index))
            .map_err(|source| VmError::CreateVcpu { index, source })?;
        boot::setup_vcpu(&kvm, &fd, index, config.vcpus, &kernel)?;
        if want_exit_stats {
            kvm_stats.push((format!("vcpu{index}"), KvmStatsFile::open(&fd)));
        }
        vcpu_fds.push(fd);
    }
    let exit_stats = Arc::new(Mutex::new(ExitStats::default()));

    stage("vCPUs configured");
    // Event loop subscribers.
    let (event_tx, event_rx) = mpsc::channel();
    let vcpu_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("vcpu eventfd"))?);
    let control = Arc::new(Mutex::new(
        Control::new(reset_evt, vcpu_wake.clone(), event_rx).map_err(io_err("signal handlers"))?,
    ));
    let mut event_manager: EventManager<Subscriber> =
        EventManager::new().map_err(VmmError::EventLoop)?;
    event_manager.add_subscriber(control.clone());
    for dev in &virtio {
        event_manager.add_subscriber(dev.subscriber.clone());
    }

    vcpu::install_kick_handler().map_err(io_err("vCPU kick signal handler"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (index, fd) in vcpu_fds.into_iter().enumerate() {
        let ctx = VcpuContext {
            index: index as u8,
            fd,
            pio_bus: pio_bus.clone(),
            mmio_bus: mmio_bus.clone(),
            stop: stop.clone(),
            events: event_tx.clone(),
            wake: vcpu_wake.clone(),
            vmm_start,
            seccomp: filters.as_ref().map(|(_, vcpu)| vcpu.clone()),
            exit_stats: exit_stats.clone(),
        };
        match vcpu::spawn(ctx) {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop_vcpus(&stop, threads);
                return Err(e.into());
            }
        }
    }
    // From here on this thread only serves the event loop (guest-driven) and stops the vCPUs.
    if let Some((program, _)) = &filters {
        if let Err(e) = seccomp::install(ThreadKind::Vmm, program) {
            stop_vcpus(&stop, threads);
            return Err(e.into());
        }
    }
    seccomp::test_violation(ThreadKind::Vmm);
    tracing::info!(
        "microVM started: {} vCPU(s), {} MiB, {} virtio device(s), set-up took {} us",
        config.vcpus,
        config.mem_mib,
        virtio.len(),
        vmm_start.elapsed().as_micros()
    );

    let exit = loop {
        if let Some(exit) = control.lock().expect("control lock").take_exit() {
            break exit;
        }
        event_manager.run().map_err(VmmError::EventLoop)?;
    };
    stop_vcpus(&stop, threads);
    if want_exit_stats {
        log_exit_stats(&exit_stats, kvm_stats, host_thp, vmm_start);
    }
    Ok(exit)
}

/// How many of the busiest ports/addresses the exit summary names.
const EXIT_STATS_TOP_PLACES: usize = 12;

/// Logs the VMM's exit counts (all vCPUs that stopped) and KVM's counters.
fn log_exit_stats(
    exits: &Mutex<ExitStats>,
    kvm_stats: Vec<(String, Result<KvmStatsFile, KvmStatsError>)>,
    host_thp: Option<String>,
    vmm_start: Instant,
) {
    let ms = vmm_start.elapsed().as_millis();
    if let Ok(exits) = exits.lock() {
        tracing::info!(
            "exit stats: VMM exits after {ms} ms: {}",
            exits.describe(EXIT_STATS_TOP_PLACES)
        );
    }
    if let Some(thp) = host_thp {
        tracing::info!("exit stats: guest RAM in {thp}");
    }
    for (what, file) in kvm_stats {
        match file.and_then(KvmStatsFile::read_stats) {
            Ok(stats) => tracing::info!(
                "exit stats: KVM {what}: {}",
                crate::kvm_stats::describe_nonzero(&stats)
            ),
            Err(e) => tracing::info!("exit stats: KVM {what}: unavailable ({e})"),
        }
    }
}

/// Asks every vCPU thread to stop and waits for them (kicking them out of KVM_RUN with a signal,
/// repeatedly, since a kick that lands before KVM_RUN is entered is lost).
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(2);
    for handle in threads {
        while !handle.is_finished() && Instant::now() < deadline {
            // SAFETY: the pthread handle is valid while the JoinHandle is alive (not yet joined).
            unsafe { libc::pthread_kill(handle.as_pthread_t(), vcpu::kick_signal()) };
            std::thread::sleep(Duration::from_millis(1));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::warn!("a vCPU thread did not stop within 2 s; exiting anyway");
        }
    }
}
