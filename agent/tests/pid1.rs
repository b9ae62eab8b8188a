//! PID 1 mode's fatal-error path, run safely: the agent is PID 1 of a new user + pid + mount
//! namespace, where devtmpfs cannot be mounted. It must log the essential mount failure and
//! "power off" (reboot(2) from a pid-namespace init makes the kernel kill it with SIGHUP)
//! instead of exiting, and it must never reach the boot marker (/dev/mem).
//! Skipped, with a message, where `unshare` or unprivileged user namespaces are unavailable.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

#[test]
fn essential_mount_failure_powers_off_instead_of_exiting() {
    let probe = Command::new("unshare").args(["-U", "-r", "true"]).output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        eprintln!("SKIPPED: unshare -U -r is not available here ({probe:?})");
        return;
    }
    let out = Command::new("timeout")
        .args([
            "20",
            "unshare",
            "-U",
            "-r",
            "-p",
            "-f",
            "-m",
            "--kill-child",
        ])
        .arg(env!("CARGO_BIN_EXE_hull-agent"))
        .env("RUST_LOG", "info")
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // unshare reports its child's death by SIGHUP as its own (it re-raises the signal).
    let killed_by_hup =
        out.status.signal() == Some(libc::SIGHUP) || out.status.code() == Some(128 + libc::SIGHUP);
    assert!(
        killed_by_hup,
        "expected death by SIGHUP (reboot in a pid namespace), got {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("mounting devtmpfs on /dev") && stderr.contains("essential mount failed"),
        "{stderr}"
    );
    assert!(stderr.contains("rebooting the guest"), "{stderr}");
    assert!(
        !stdout.contains("HULL-AGENT"),
        "banner printed despite the failure: {stdout}"
    );
    assert!(!stderr.contains("boot marker"), "{stderr}");
}
