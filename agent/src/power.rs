//! Powering the guest off.
//!
//! Hull's microVMs have no ACPI, so a real power-off has nothing to act on. Instead the agent
//! syncs and calls `reboot(RB_AUTOBOOT)`; the guest kernel runs with `reboot=k`, so it resets the
//! machine through the i8042 keyboard controller (command 0xFE on port 0x64). hull-vmm treats
//! that reset as the guest's end and exits with status 0.

use nix::sys::reboot::{reboot, RebootMode};
use tracing::{error, info};

/// Syncs file systems and resets the guest. Never returns: if the reboot call fails, PID 1 must
/// still not exit (that would panic the kernel), so it sleeps forever.
pub fn power_off_guest() -> ! {
    info!("syncing and rebooting the guest (reboot=k: i8042 reset, hull-vmm exits 0)");
    nix::unistd::sync();
    let err = match reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(err) => err,
    };
    error!(%err, "reboot(RB_AUTOBOOT) failed; halting here");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
