//! The host processes that hold a sandbox (virtiofsd + hull-vmm, or a host hull-agent): started
//! with their output in a log file, watched, stopped, and recorded in the `pids` file so that
//! `delete` after a shim crash can stop them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::SandboxError;

/// The name of virtiofsd in the pids file.
pub const VIRTIOFSD: &str = "virtiofsd";
/// The name of hull-vmm in the pids file.
pub const HULL_VMM: &str = "hull-vmm";

/// Starts `cmd` in its own process group with stdin closed and stdout/stderr in `log`.
pub fn spawn_logged(
    name: &'static str,
    binary: PathBuf,
    mut cmd: tokio::process::Command,
    log: &Path,
) -> Result<(&'static str, tokio::process::Child), SandboxError> {
    let spawn_error = |source| SandboxError::Spawn {
        name,
        binary: binary.clone(),
        source,
    };
    let log_file = std::fs::File::create(log).map_err(spawn_error)?;
    let log_err = log_file.try_clone().map_err(spawn_error)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(false)
        .process_group(0);
    let child = cmd.spawn().map_err(spawn_error)?;
    tracing::info!(name, pid = child.id(), "started sandbox process");
    Ok((name, child))
}

/// Waits for `child`; if it dies while the sandbox is not stopping, reports why on `death` and
/// kills the others (none works without the rest, and every agent connection must close).
pub fn monitor_child(
    name: &'static str,
    mut child: tokio::process::Child,
    all: Vec<(&'static str, ProcessRecord)>,
    stopping: Arc<AtomicBool>,
    death: Arc<watch::Sender<Option<String>>>,
) {
    tokio::spawn(async move {
        let status = child.wait().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let reason = match status {
            Ok(s) => death_reason(name, s),
            Err(e) => format!("{name} could not be waited for: {e}"),
        };
        report_death(reason, &all, &death);
    });
}

/// Reports a sandbox process's death on `death` and kills the other processes of the sandbox
/// (none works without the rest, and every agent connection must close).
fn report_death(
    reason: String,
    all: &[(&'static str, ProcessRecord)],
    death: &watch::Sender<Option<String>>,
) {
    tracing::error!(
        reason,
        "sandbox process died: every task of the sandbox exits"
    );
    death.send_replace(Some(reason));
    for (_, record) in all {
        if record.is_alive() {
            let _ = kill(Pid::from_raw(record.pid as i32), Signal::SIGKILL);
        }
    }
}

/// Watches `record`, a process another started (the pool daemon, whose child it stays), through
/// a pidfd; if it ends while the sandbox is not stopping, reports it on `death` and kills the
/// others, as [`monitor_child`] does. Its exit status is its parent's to see, not ours.
pub fn monitor_adopted(
    name: &'static str,
    record: ProcessRecord,
    all: Vec<(&'static str, ProcessRecord)>,
    stopping: Arc<AtomicBool>,
    death: Arc<watch::Sender<Option<String>>>,
) -> std::io::Result<()> {
    let pidfd = pidfd_open(record.pid)?;
    // Opened after the pid was recorded: make sure it is still that very process.
    if !record.is_alive() {
        return Err(std::io::Error::other(format!(
            "{name} (pid {}) is gone",
            record.pid
        )));
    }
    // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
    let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(async move {
        // A pidfd turns readable when its process has exited.
        let _ = pidfd.readable().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let reason = format!("{name} (pid {}) exited unexpectedly", record.pid);
        report_death(reason, &all, &death);
    });
    Ok(())
}

/// pidfd_open(2).
fn pidfd_open(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// A sandbox process as recorded for clean-up: its pid and the start time the kernel gave
/// it, so a recycled pid is never taken for it, whatever the binary is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRecord {
    /// The pid.
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat (clock ticks after boot).
    pub start_time: u64,
}

impl ProcessRecord {
    /// The record of live process `pid`, if it runs.
    pub fn of(pid: u32) -> Option<ProcessRecord> {
        Some(ProcessRecord {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Is this very process still there (same pid, same start time, not a zombie)?
    pub fn is_alive(&self) -> bool {
        self.pid > 1 && start_time(self.pid) == Some(self.start_time) && !is_zombie(self.pid)
    }
}

/// Start time of `pid` from /proc/<pid>/stat (field 22; the fields after the command name,
/// which may hold spaces and parentheses, are counted from its last `)`).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why a sandbox process ended, in words (a seccomp kill is named as such).
pub fn death_reason(name: &str, status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(libc::SIGSYS) {
        return format!(
            "{name} was killed by its seccomp filter (SIGSYS): it made a system call outside its \
             allowlist (a guest exploiting it, or a missing entry; the kernel's audit log names \
             the call)"
        );
    }
    format!("{name} exited unexpectedly ({status})")
}

/// Writes the `pids` file: one "name pid start-time" line per process.
pub fn write_pids_file(
    path: &Path,
    records: &[(&'static str, ProcessRecord)],
) -> std::io::Result<()> {
    let text: String = records
        .iter()
        .map(|(n, r)| format!("{n} {} {}\n", r.pid, r.start_time))
        .collect();
    std::fs::write(path, text)
}

/// Reads a pids file written by [`write_pids_file`]; malformed lines are skipped.
pub fn read_pids_file(path: &Path) -> Vec<(String, ProcessRecord)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .take(16)
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let name = fields.next()?.to_string();
            let pid: u32 = fields.next()?.trim().parse().ok()?;
            let start_time: u64 = fields.next()?.trim().parse().ok()?;
            (pid > 1).then_some((name, ProcessRecord { pid, start_time }))
        })
        .collect()
}

/// SIGTERM to each recorded process that still runs, SIGKILL to those still there after 2 s.
pub async fn stop_processes<N>(records: &[(N, ProcessRecord)]) {
    let live: Vec<ProcessRecord> = records
        .iter()
        .map(|(_, r)| *r)
        .filter(ProcessRecord::is_alive)
        .collect();
    for r in &live {
        let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !live.iter().any(ProcessRecord::is_alive) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in live.iter().filter(|r| r.is_alive()) {
        let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
