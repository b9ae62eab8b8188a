//! vCPU threads: one thread per vCPU running `KVM_RUN` and dispatching I/O and MMIO exits to the buses.
//!
//! A vCPU thread ends when the guest resets (i8042, handled by the device through the reset eventfd),
//! when the VMM asks it to stop (the stop flag plus a kick signal that interrupts `KVM_RUN`), or when the
//! vCPU fails (triple fault, failed entry, internal error, an exit we do not handle). A failure is
//! reported through [`VcpuEvent::Failed`] with the exit reason and the registers.
//!
//! Each thread counts its exits by reason and port/address ([`ExitStats`]) and adds them to the
//! VM-wide counts in [`VcpuContext::exit_stats`] when it ends.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use seccompiler::BpfProgram;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::Bus;
use crate::exit_stats::{ExitKind, ExitStats};
use crate::seccomp::{self, SeccompError, ThreadKind};

/// Signal used to kick a vCPU thread out of `KVM_RUN` (its handler does nothing; the EINTR is the point).
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler for [`kick_signal`]. Call once per process before starting vCPUs.
pub fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// What a vCPU thread reports to the VMM when it stops on its own.
#[derive(Debug)]
pub enum VcpuEvent {
    /// The vCPU failed; the VM cannot go on.
    Failed { index: u8, report: VcpuFailure },
    /// KVM reported a guest-requested shutdown or reset (KVM_EXIT_SYSTEM_EVENT).
    SystemEvent { index: u8, kind: u32 },
}

/// Why a vCPU failed, with its registers at the time.
#[derive(Debug)]
pub struct VcpuFailure {
    pub reason: String,
    pub registers: String,
}

impl fmt::Display for VcpuFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.reason, self.registers)
    }
}

/// Everything a vCPU thread needs.
pub struct VcpuContext {
    pub index: u8,
    pub fd: VcpuFd,
    pub pio_bus: Bus,
    pub mmio_bus: Bus,
    pub stop: Arc<AtomicBool>,
    pub events: Sender<VcpuEvent>,
    /// Written after an event is sent, to wake the VMM's event loop.
    pub wake: Arc<EventFd>,
    pub vmm_start: Instant,
    /// The vCPU seccomp filter, installed by the thread before its first `KVM_RUN` (None: off).
    pub seccomp: Option<Arc<BpfProgram>>,
    /// The VM-wide exit counts; the thread adds its own when it ends.
    pub exit_stats: Arc<Mutex<ExitStats>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the vCPU thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("vcpu{0} thread ended before installing its seccomp filter")]
    Vanished(u8),
}

/// Stack size of a vCPU thread: 2 MiB (Rust's default) less a page. glibc writes the new
/// thread's control block at the top of its stack mapping while creating it, before the thread
/// can advise anything; where the host's THP setting is `always`, a 2 MiB stack mapping that
/// lands 2 MiB-aligned then gets a 2 MiB page at once (the nested lab: 2 MiB of every
/// hull-vmm's memory). A shorter mapping cannot hold one. (hull-vmm starts no other threads,
/// so glibc has no larger cached stack to hand out instead.)
pub const VCPU_STACK_SIZE: usize = (2 << 20) - 4096;

/// Spawns the vCPU thread and waits until it has installed its seccomp filter (if any), so a
/// filter that cannot be installed is a set-up error and no guest code runs unconfined.
pub fn spawn(mut ctx: VcpuContext) -> Result<JoinHandle<()>, SpawnError> {
    let index = ctx.index;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .stack_size(VCPU_STACK_SIZE)
        .spawn(move || {
            if let Some(program) = ctx.seccomp.take() {
                let installed = seccomp::install(ThreadKind::Vcpu, &program);
                let failed = installed.is_err();
                let _ = ready_tx.send(installed);
                if failed {
                    return;
                }
            } else {
                let _ = ready_tx.send(Ok(()));
            }
            seccomp::test_violation(ThreadKind::Vcpu);
            run(ctx)
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e.into())
        }
        Err(_) => {
            let _ = handle.join();
            Err(SpawnError::Vanished(index))
        }
    }
}

/// Outcome of handling one exit.
enum Step {
    Continue,
    Stop(Option<VcpuEvent>),
}

fn run(mut ctx: VcpuContext) {
    let mut first_exit_logged = false;
    let mut stats = ExitStats::default();
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            break;
        }
        let step = match ctx.fd.run() {
            Ok(exit) => {
                if !first_exit_logged && ctx.index == 0 {
                    first_exit_logged = true;
                    let us = ctx.vmm_start.elapsed().as_micros();
                    tracing::info!("first guest exit: vmm_to_first_exit_us={us}");
                }
                handle_exit(ctx.index, exit, &ctx.pio_bus, &ctx.mmio_bus, &mut stats)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                stats.record(ExitKind::Interrupted, 0);
                // Kicked (stop request) or spurious; the stop flag decides.
                ctx.fd.set_kvm_immediate_exit(0);
                Step::Continue
            }
            Err(e) => Step::Stop(Some(VcpuEvent::Failed {
                index: ctx.index,
                report: VcpuFailure {
                    reason: format!("KVM_RUN failed: {e}"),
                    registers: String::new(),
                },
            })),
        };
        if let Step::Stop(event) = step {
            if let Some(event) = event {
                let event = with_registers(&mut ctx.fd, event);
                let _ = ctx.events.send(event);
                let _ = ctx.wake.write(1);
            }
            break;
        }
    }
    tracing::debug!("vcpu{} thread exiting", ctx.index);
    if let Ok(mut all) = ctx.exit_stats.lock() {
        all.merge(&stats);
    }
}

fn handle_exit(
    index: u8,
    exit: VcpuExit<'_>,
    pio: &Bus,
    mmio: &Bus,
    stats: &mut ExitStats,
) -> Step {
    let fail = |reason: String| {
        Step::Stop(Some(VcpuEvent::Failed {
            index,
            report: VcpuFailure {
                reason,
                registers: String::new(),
            },
        }))
    };
    match exit {
        VcpuExit::IoIn(port, data) => {
            stats.record(ExitKind::IoIn, u64::from(port));
            pio.read(u64::from(port), data);
            Step::Continue
        }
        VcpuExit::IoOut(port, data) => {
            stats.record(ExitKind::IoOut, u64::from(port));
            pio.write(u64::from(port), data);
            Step::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            stats.record(ExitKind::MmioRead, addr);
            if !mmio.read(addr, data) {
                tracing::debug!("vcpu{index}: MMIO read of {} bytes at {addr:#x} hits no device", data.len());
            }
            Step::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            stats.record(ExitKind::MmioWrite, addr);
            if !mmio.write(addr, data) {
                tracing::debug!("vcpu{index}: MMIO write of {} bytes at {addr:#x} hits no device", data.len());
            }
            Step::Continue
        }
        VcpuExit::SystemEvent(kind, _) => {
            stats.record(ExitKind::SystemEvent, 0);
            Step::Stop(Some(VcpuEvent::SystemEvent { index, kind }))
        }
        VcpuExit::Shutdown => fail("guest triple fault (KVM_EXIT_SHUTDOWN)".into()),
        VcpuExit::Hlt => fail("guest halted with no in-kernel irqchip to wake it (KVM_EXIT_HLT)".into()),
        VcpuExit::FailEntry(reason, cpu) => fail(format!(
            "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware_entry_failure_reason={reason:#x}, cpu={cpu})"
        )),
        VcpuExit::InternalError => fail("KVM internal error (KVM_EXIT_INTERNAL_ERROR)".into()),
        other => {
            stats.record(ExitKind::Other, 0);
            fail(format!("unhandled KVM exit: {other:?}"))
        }
    }
}

/// Fills in the register dump of a failure (and the internal error sub-code when there is one).
fn with_registers(fd: &mut VcpuFd, event: VcpuEvent) -> VcpuEvent {
    match event {
        VcpuEvent::Failed { index, mut report } => {
            let run = fd.get_kvm_run();
            if run.exit_reason == kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
                // SAFETY: exit_reason says the `internal` member of the union is the valid one.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                report.reason.push_str(&format!(
                    " suberror={} ({})",
                    internal.suberror,
                    internal_error_name(internal.suberror)
                ));
            }
            report.registers = describe_registers(fd);
            VcpuEvent::Failed { index, report }
        }
        other => other,
    }
}

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "unknown",
    }
}

/// A one-line register dump for failure reports.
pub fn describe_registers(fd: &VcpuFd) -> String {
    let mut out = String::new();
    match fd.get_regs() {
        Ok(r) => out.push_str(&format!(
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
        )),
        Err(e) => out.push_str(&format!("registers unavailable ({e})")),
    }
    match fd.get_sregs() {
        Ok(s) => out.push_str(&format!(
            " cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}(l={},db={}) idt.limit={:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.l, s.cs.db, s.idt.limit
        )),
        Err(e) => out.push_str(&format!(" sregs unavailable ({e})")),
    }
    out
}
