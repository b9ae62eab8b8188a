//! Starts the console's shell on the slave end of a pty: a new session whose controlling
//! terminal is the pty, working directory `/`, a small fixed environment ([`SHELL_ENV`]), and
//! otherwise the agent's own view of the guest (its root, namespaces and privileges: the
//! console is for looking at the guest itself, not into one container).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment of the console's shell (nothing of the agent's own is passed on).
pub const SHELL_ENV: [(&str, &str); 4] = [
    ("PATH", "/bin:/sbin:/usr/bin:/usr/sbin"),
    ("HOME", "/"),
    ("TERM", "xterm"),
    ("HULL_DEBUG_CONSOLE", "1"),
];

/// Runs `shell` with `slave` as its stdin, stdout, stderr and controlling terminal. Returns
/// its pid (the agent's reaper collects it when it exits).
pub fn spawn(shell: &Path, slave: &OwnedFd) -> std::io::Result<u32> {
    let mut command = Command::new(shell);
    command
        .env_clear()
        .envs(SHELL_ENV)
        .current_dir("/")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: the closure runs in the child between fork and exec, after std set up fds 0-2,
    // and only makes async-signal-safe calls (setsid, ioctl).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Not waited for here: the agent's reaper reaps every child.
    Ok(child.id())
}
