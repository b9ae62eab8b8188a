//! The VMM's own event subscriber: decides when the VM ends and why.
//!
//! It watches the i8042 reset eventfd (guest reboot/power-off), the eventfd that vCPU threads write
//! after reporting a [`VcpuEvent`], and the eventfd written by the SIGTERM/SIGINT handler.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::{VcpuEvent, VcpuFailure};

/// Why the VM ended.
#[derive(Debug)]
pub enum VmExit {
    /// The guest rebooted or powered off (i8042 reset line or a KVM system event).
    GuestReset,
    /// The VMM was asked to stop by a signal (SIGTERM/SIGINT).
    Signal(i32),
    /// A vCPU failed.
    VcpuFailed { index: u8, report: VcpuFailure },
}

impl VmExit {
    /// Process exit code of hull-vmm for this outcome: 0 for a guest power-off/reboot and for a
    /// requested stop, 2 for a vCPU failure (1 is used for set-up errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::GuestReset | VmExit::Signal(_) => 0,
            VmExit::VcpuFailed { .. } => 2,
        }
    }
}

static TERM_EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static TERM_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn term_handler(signum: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    TERM_SIGNAL.store(signum, Ordering::SeqCst);
    let fd = TERM_EVENT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; fd is an eventfd kept open for the process lifetime.
        unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Owns the eventfds and the vCPU event channel.
pub struct Control {
    reset_evt: EventFd,
    vcpu_wake: Arc<EventFd>,
    term_evt: EventFd,
    vcpu_events: Receiver<VcpuEvent>,
    exit: Option<VmExit>,
}

impl Control {
    /// Creates the control subscriber and installs the SIGTERM/SIGINT handlers.
    pub fn new(
        reset_evt: EventFd,
        vcpu_wake: Arc<EventFd>,
        vcpu_events: Receiver<VcpuEvent>,
    ) -> std::io::Result<Self> {
        let term_evt = EventFd::new(libc::EFD_NONBLOCK)?;
        // The eventfd stays open for the rest of the process (the handler may run at any time).
        let term_fd = term_evt.try_clone()?;
        TERM_EVENT_FD.store(std::os::fd::AsRawFd::as_raw_fd(&term_fd), Ordering::SeqCst);
        std::mem::forget(term_fd);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            vmm_sys_util::signal::register_signal_handler(sig, term_handler)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(Self {
            reset_evt,
            vcpu_wake,
            term_evt,
            vcpu_events,
            exit: None,
        })
    }

    /// The outcome, once the VM has ended (taken once).
    pub fn take_exit(&mut self) -> Option<VmExit> {
        self.exit.take()
    }

    fn set_exit(&mut self, exit: VmExit) {
        // The first reason wins: a failure seen after a reset request is a consequence, not the cause.
        if self.exit.is_none() {
            self.exit = Some(exit);
        }
    }

    fn drain_vcpu_events(&mut self) {
        while let Ok(event) = self.vcpu_events.try_recv() {
            match event {
                VcpuEvent::Failed { index, report } => {
                    tracing::error!("vcpu{index} failed: {report}");
                    self.set_exit(VmExit::VcpuFailed { index, report });
                }
                VcpuEvent::SystemEvent { index, kind } => {
                    tracing::info!(
                        "vcpu{index}: guest requested system event {kind} (shutdown/reset)"
                    );
                    self.set_exit(VmExit::GuestReset);
                }
            }
        }
    }
}

impl MutEventSubscriber for Control {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == std::os::fd::AsRawFd::as_raw_fd(&self.reset_evt) {
            let _ = self.reset_evt.read();
            tracing::info!("guest reset through the i8042 controller: stopping the VM");
            self.set_exit(VmExit::GuestReset);
        } else if fd == std::os::fd::AsRawFd::as_raw_fd(self.vcpu_wake.as_ref()) {
            let _ = self.vcpu_wake.read();
            self.drain_vcpu_events();
        } else if fd == std::os::fd::AsRawFd::as_raw_fd(&self.term_evt) {
            let _ = self.term_evt.read();
            let sig = TERM_SIGNAL.load(Ordering::SeqCst);
            tracing::info!("received signal {sig}: stopping the VM");
            self.set_exit(VmExit::Signal(sig));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [&self.reset_evt, self.vcpu_wake.as_ref(), &self.term_evt] {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                tracing::error!("cannot watch a control eventfd: {e:?}");
            }
        }
    }
}
