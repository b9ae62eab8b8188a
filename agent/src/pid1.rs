//! PID 1 mode: bring the guest up, then serve the API on vsock port 1024 forever.
//!
//! PID 1 must never exit (the kernel panics): every fatal error is logged and followed by
//! [`power_off_guest`].

use tracing::{error, info, warn};

use crate::cli::{ListenAddress, VSOCK_CID_ANY};
use crate::guest_init::{self, MountOutcome};
use crate::power::power_off_guest;
use crate::server::{self, StopReason};
use crate::{guest_info, kmsg, logging};

/// Runs the guest agent as init. Never returns.
pub fn run() -> ! {
    // PID 1's own milestones, printed with the kernel log when hull.kmsg=1 asks for it.
    let mut milestones = vec![(kmsg::uptime_us(), "PID 1 started")];
    let root = guest_init::leave_the_initramfs_root();
    let mounts = guest_init::mount_basics();
    milestones.push((kmsg::uptime_us(), "basic mounts made"));
    let console = guest_init::ensure_console_stdio();
    let cmdline = std::fs::read_to_string("/proc/cmdline");
    let console_level = logging::console_level(
        cmdline.as_deref().unwrap_or(""),
        std::env::var_os("RUST_LOG").is_some(),
    );
    logging::init_with_stderr_level(false, console_level);
    milestones.push((kmsg::uptime_us(), "console and logging set up"));
    if let Err(err) = console {
        warn!(%err, "opening /dev/console for stdio");
    }
    if let Err(err) = root {
        error!(%err, "binding the initramfs as the root: containers cannot be created (pivot_root)");
    }
    if !log_mounts(&mounts) {
        error!("an essential mount failed; powering off");
        power_off_guest();
    }

    milestones.push((kmsg::uptime_us(), "mount outcomes logged"));
    let release = guest_info::kernel_release().unwrap_or_else(|err| {
        warn!(%err, "uname");
        "unknown".to_string()
    });
    print_banner(&guest_init::banner_line(&release));

    let order =
        guest_init::page_reporting_order(cmdline.as_deref().unwrap_or("")).unwrap_or_else(|err| {
            warn!(%err, "kernel command line: keeping the default page reporting order");
            guest_init::PAGE_REPORTING_ORDER
        });
    match guest_init::set_page_reporting_order(std::path::Path::new("/sys"), order) {
        Ok(true) => info!("free page reporting in blocks of order {order}"),
        Ok(false) => {}
        Err(err) => warn!(%err, "setting the free page reporting order"),
    }

    if let Err(err) = guest_init::write_boot_marker() {
        warn!(%err, "writing the boot marker");
    }
    milestones.push((kmsg::uptime_us(), "boot marker written"));

    match cmdline {
        Ok(cmdline) => {
            if kmsg::cmdline_requests_kmsg(&cmdline) {
                dump_kernel_log(&milestones);
            }
            if guest_init::cmdline_requests_poweroff(&cmdline) {
                info!(
                    "{} on the kernel command line",
                    guest_init::POWEROFF_CMDLINE_WORD
                );
                power_off_guest();
            }
        }
        Err(err) => warn!(%err, "reading /proc/cmdline"),
    }

    serve_forever()
}

/// Logs each mount outcome; false if an essential mount failed.
fn log_mounts(mounts: &[MountOutcome]) -> bool {
    let mut essential_ok = true;
    for outcome in mounts {
        match &outcome.result {
            Ok(true) => {}
            Ok(false) => info!(target = outcome.spec.target, "already mounted"),
            Err(err) if outcome.spec.essential => {
                error!(%err, "essential mount failed");
                essential_ok = false;
            }
            Err(err) => warn!(%err, "mount failed; continuing without it"),
        }
    }
    essential_ok
}

/// Prints the kernel's log (`hull.kmsg=1`) and the agent's `milestones` after the boot marker,
/// so the boot's figures do not include it.
fn dump_kernel_log(milestones: &[(u64, &str)]) {
    info!("the kernel log follows ({})", kmsg::KMSG_CMDLINE_WORD);
    match kmsg::dump(&mut std::io::stdout().lock(), milestones) {
        Ok(lines) => info!(lines, "end of the kernel log"),
        Err(err) => warn!(%err, "reading /dev/kmsg"),
    }
}

fn print_banner(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        warn!(%err, "printing the banner");
    }
}

fn serve_forever() -> ! {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(%err, "building the tokio runtime; powering off");
            power_off_guest();
        }
    };
    let listen = ListenAddress::Vsock {
        cid: VSOCK_CID_ANY,
        port: hull_proto::AGENT_API_PORT,
    };
    // The server runs the zombie reaper (it routes container exits to WaitProcess).
    let outcome = runtime.block_on(server::serve(&listen, None));
    match outcome {
        Ok(StopReason::PowerOff) => info!("PowerOff: powering off"),
        Ok(StopReason::Signal(signal)) => info!(signal, "powering off"),
        Err(err) => error!(%err, "the API server failed; powering off"),
    }
    power_off_guest()
}
