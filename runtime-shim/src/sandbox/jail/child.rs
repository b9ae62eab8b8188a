//! The jail's start, run in the shim's child between fork and exec (`CommandExt::pre_exec`):
//! join the pod cgroup, enter the pod's network namespace (or an empty one), enter the jail
//! root and drop to the jail user, then exec hull-vmm. The fork itself happens on a thread
//! that made a new PID namespace for its children ([`spawn_as_pid_namespace_init`]), so the
//! VMM is PID 1 of its own namespace and the shim's direct child: the shim signals and waits
//! for it as for any child.
//!
//! Everything is prepared before the fork ([`ChildPlan`]); the child only makes system calls,
//! all async-signal-safe. A failed step is written to the process's stderr (the sandbox's
//! vmm.log) by name, and its errno is what the shim's spawn returns.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::credentials::Credentials;
use super::root::RootPlan;

/// A step of the jail's start that failed, with the errno it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What was being done.
    pub step: &'static str,
    /// errno.
    pub errno: i32,
}

impl Failure {
    /// The failure of `step` with the current errno.
    pub fn last(step: &'static str) -> Failure {
        // SAFETY: reads the calling thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        Failure { step, errno }
    }

    /// Writes "hull jail: <step> failed: errno <n>" to stderr without allocating.
    fn report(&self) {
        let mut buf = [0u8; 160];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            for &b in bytes {
                if len < buf.len() {
                    buf[len] = b;
                    len += 1;
                }
            }
        };
        push(b"hull jail: ");
        push(self.step.as_bytes());
        push(b" failed: errno ");
        let mut digits = [0u8; 10];
        let mut n = self.errno.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        push(&digits[i..]);
        push(b"\n");
        // SAFETY: write(2) of a stack buffer.
        unsafe {
            libc::write(2, buf.as_ptr().cast(), len);
        }
    }
}

/// `Err(Failure)` when a system call returned -1.
pub fn sys(rc: libc::c_int, step: &'static str) -> Result<(), Failure> {
    if rc == -1 {
        Err(Failure::last(step))
    } else {
        Ok(())
    }
}

/// `path` as a C string.
pub fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("{} holds a NUL byte", path.display())))
}

/// Writes "0" (the writing process) to each pre-opened `cgroup.procs` file.
pub fn join_cgroups(procs: &[OwnedFd]) -> Result<(), Failure> {
    for fd in procs {
        // SAFETY: write(2) of a static byte to an open descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(Failure::last("joining the pod cgroup"));
        }
    }
    Ok(())
}

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub struct ChildPlan {
    /// The pod cgroup's `cgroup.procs` files, open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The pod's network namespace; `None`: a new, empty one.
    pub netns: Option<OwnedFd>,
    /// The root to enter.
    pub root: RootPlan,
    /// Who to become.
    pub credentials: Credentials,
}

impl ChildPlan {
    /// Runs in the child (the pre-exec hook): returns in the jailed VMM process, ready for
    /// exec.
    pub fn run(&self) -> std::io::Result<()> {
        self.steps().map_err(|failure| {
            failure.report();
            std::io::Error::from_raw_os_error(failure.errno)
        })
    }

    fn steps(&self) -> Result<(), Failure> {
        join_cgroups(&self.cgroup_procs)?;
        // SAFETY: system calls on descriptors owned by `self`.
        unsafe {
            match &self.netns {
                Some(fd) => sys(
                    libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET),
                    "joining the pod's network namespace",
                )?,
                None => sys(
                    libc::unshare(libc::CLONE_NEWNET),
                    "unshare network namespace",
                )?,
            }
        }
        self.root.enter()?;
        self.credentials.apply()
    }
}

/// Runs `spawn` on a thread of its own whose children start in a new PID namespace, so the
/// process it forks (the jailed VMM) is PID 1 there and still the caller's direct child: no
/// process stays between the shim and the VMM (a forked supervisor used to, one more process
/// per pod). The namespace is the thread's
/// (`unshare(CLONE_NEWPID)` applies to the calling thread's future children only), and the
/// thread ends after the spawn, so no other child of the shim lands in it. The thread runs in
/// the caller's tokio runtime, if any, so `spawn` may start a tokio child process.
///
/// No parent-death signal is set in the child: it would fire when this thread ends.
pub fn spawn_as_pid_namespace_init<T: Send>(
    spawn: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("hull-jail-spawn".into())
            .spawn_scoped(scope, move || {
                let _entered = runtime.as_ref().map(|r| r.enter());
                // SAFETY: unshare(2) of the calling thread's PID namespace for its children.
                if unsafe { libc::unshare(libc::CLONE_NEWPID) } == -1 {
                    let e = std::io::Error::last_os_error();
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("unshare pid namespace: {e}"),
                    ));
                }
                Ok(spawn())
            })?
            .join()
            .map_err(|_| std::io::Error::other("the jail's spawn thread panicked"))?
    })
}
