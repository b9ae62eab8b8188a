//! PID 1 duty: reap every exited child (orphans are re-parented to us) on SIGCHLD.
//!
//! Later, processes the agent starts itself will have their statuses routed to WaitProcess;
//! [`reap_exited_children`] returns what it reaped so such a registry can claim entries.

use nix::errno::Errno;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, warn};

/// A child that was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapedChild {
    /// Its pid.
    pub pid: i32,
    /// Its exit status as runc reports it: the exit code, or 128 + signal number.
    pub exit_status: i32,
}

/// Reaps every child that has exited, without blocking. Raw waitpid(2): nix's wrapper knows
/// signals 1-31 only and fails, after the kernel has reaped the child, on a real-time one.
pub fn reap_exited_children() -> Vec<ReapedChild> {
    let mut reaped = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            // Nothing more has exited right now.
            return reaped;
        }
        if pid < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => return reaped,
                err => {
                    warn!(%err, "waitpid");
                    return reaped;
                }
            }
        }
        if let Some(exit_status) = exit_status_of(status) {
            reaped.push(ReapedChild { pid, exit_status });
        }
    }
}

/// A wait status as runc reports it: the exit code, or 128 + the signal number (1-64); None for
/// anything that is not an exit.
fn exit_status_of(status: libc::c_int) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Reaps children whenever SIGCHLD arrives and reports each exit to `exits`; runs until the
/// runtime stops.
pub async fn reap_children_forever(exits: crate::exits::ExitRegistry) -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    loop {
        for child in reap_exited_children() {
            debug!(
                pid = child.pid,
                exit_status = child.exit_status,
                "reaped child"
            );
            exits.exited(child.pid, child.exit_status);
        }
        if sigchld.recv().await.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn reap_until(pid: i32) -> ReapedChild {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = reap_exited_children().into_iter().find(|c| c.pid == pid) {
                return child;
            }
            assert!(Instant::now() < deadline, "child {pid} was never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // One test only: waitpid(-1) in parallel tests would steal each other's children.
    // The children are deliberately not waited on through `Child`: the reaper does it.
    #[test]
    #[allow(clippy::zombie_processes)]
    fn exit_codes_and_signals_are_reported_like_runc() {
        let exits = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(reap_until(exits.id() as i32).exit_status, 7);

        let killed = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(killed.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert_eq!(reap_until(killed.id() as i32).exit_status, 128 + 9);

        // A real-time signal: outside nix's Signal, still an exit.
        let realtime = std::process::Command::new("sh")
            .args(["-c", "kill -s 40 $$"])
            .spawn()
            .unwrap();
        assert_eq!(reap_until(realtime.id() as i32).exit_status, 128 + 40);
    }
}
