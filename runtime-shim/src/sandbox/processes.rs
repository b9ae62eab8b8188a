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
    all: Vec<(&'static str, u32)>,
    stopping: Arc<AtomicBool>,
    death: Arc<watch::Sender<Option<String>>>,
) {
    tokio::spawn(async move {
        let status = child.wait().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let reason = match status {
            Ok(s) => format!("{name} exited unexpectedly ({s})"),
            Err(e) => format!("{name} could not be waited for: {e}"),
        };
        tracing::error!(
            reason,
            "sandbox process died: every task of the sandbox exits"
        );
        death.send_replace(Some(reason));
        for (_, pid) in all {
            if pid != 0 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    });
}

/// Writes the `pids` file: one "name pid" line per process.
pub fn write_pids_file(path: &Path, pids: &[(&'static str, u32)]) -> std::io::Result<()> {
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(path, text)
}

/// Reads a pids file written by [`write_pids_file`]; malformed lines are skipped.
pub fn read_pids_file(path: &Path) -> Vec<(String, u32)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .take(16)
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            let pid: u32 = pid.trim().parse().ok()?;
            (pid > 1).then(|| (name.to_string(), pid))
        })
        .collect()
}

/// Is `pid` alive and running the program `name` (checked through /proc/<pid>/comm so that a
/// recycled pid is never killed)?
pub fn process_matches(pid: u32, name: &str) -> bool {
    let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return false;
    };
    let comm = comm.trim();
    // comm is cut at 15 characters.
    !comm.is_empty() && name.starts_with(comm)
}

/// SIGTERM to each live process, SIGKILL to those still there after 2 s.
pub async fn stop_processes<N: AsRef<str>>(pids: &[(N, u32)]) {
    let live: Vec<u32> = pids
        .iter()
        .filter(|(n, p)| *p > 1 && process_matches(*p, n.as_ref()))
        .map(|(_, p)| *p)
        .collect();
    for pid in &live {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if live
            .iter()
            .all(|p| kill(Pid::from_raw(*p as i32), None).is_err() || is_zombie(*p))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for pid in &live {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
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
