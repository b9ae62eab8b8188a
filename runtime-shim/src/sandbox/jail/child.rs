//! The jail's start, run in the shim's child between fork and exec (`CommandExt::pre_exec`):
//! join the pod cgroup, enter the pod's network namespace (or an empty one), unshare a PID
//! namespace and fork, so the VMM is PID 1 of its own. The forked VMM enters the jail root,
//! drops to the jail user and returns to exec hull-vmm; the first child stays as a small
//! supervisor (`hull-jail`) that forwards termination signals to it and ends with its exit
//! status or signal, so the shim's view of "the VMM process" is unchanged. If the supervisor is
//! killed, the VMM gets SIGKILL (parent-death signal).
//!
//! Everything is prepared before the fork ([`ChildPlan`]); the child only makes system calls,
//! all async-signal-safe. A failed step is written to the process's stderr (the sandbox's
//! vmm.log) by name, and its errno is what the shim's spawn returns.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

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
    /// exec; the supervisor never returns.
    pub fn run(&self) -> std::io::Result<()> {
        self.steps().map_err(|failure| {
            failure.report();
            std::io::Error::from_raw_os_error(failure.errno)
        })
    }

    fn steps(&self) -> Result<(), Failure> {
        join_cgroups(&self.cgroup_procs)?;
        // SAFETY: system calls on descriptors owned by `self`; fork in the single-threaded
        // child of a spawn; the supervisor only makes async-signal-safe calls.
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
            sys(libc::unshare(libc::CLONE_NEWPID), "unshare pid namespace")?;
            // Until the supervisor forwards them and the VMM dies with it, a termination
            // signal must not end one without the other: blocked across the fork.
            let forwarded = forwarded_set();
            libc::sigprocmask(libc::SIG_BLOCK, &forwarded, std::ptr::null_mut());
            let pid = libc::fork();
            if pid == -1 {
                return Err(Failure::last("fork into the pid namespace"));
            }
            if pid > 0 {
                supervise(pid);
            }
            sys(
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ),
                "PR_SET_PDEATHSIG",
            )?;
            libc::sigprocmask(libc::SIG_UNBLOCK, &forwarded, std::ptr::null_mut());
        }
        self.root.enter()?;
        self.credentials.apply()
    }
}

/// The VMM's pid (in the supervisor's namespace), for the signal handler.
static JAILED: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = JAILED.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Signals the supervisor passes on to the VMM.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The set of [`FORWARDED`] signals.
///
/// # Safety
/// sigemptyset/sigaddset on a local.
unsafe fn forwarded_set() -> libc::sigset_t {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for signal in FORWARDED {
        libc::sigaddset(&mut set, signal);
    }
    set
}

/// The supervisor: closes what it inherited (so the shim's spawn sees the exec through the VMM
/// alone), forwards signals, waits for the VMM and ends as it did.
///
/// # Safety
/// Only in the forked child; async-signal-safe calls only.
unsafe fn supervise(pid: libc::pid_t) -> ! {
    JAILED.store(pid, Ordering::Relaxed);
    libc::prctl(
        libc::PR_SET_NAME,
        c"hull-jail".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
        for fd in 3..4096 {
            libc::close(fd);
        }
    }
    let mut action: libc::sigaction = std::mem::zeroed();
    action.sa_sigaction = forward_signal as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    libc::sigemptyset(&mut action.sa_mask);
    for signal in FORWARDED {
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
    let forwarded = forwarded_set();
    libc::sigprocmask(libc::SIG_UNBLOCK, &forwarded, std::ptr::null_mut());
    let mut default: libc::sigaction = std::mem::zeroed();
    default.sa_sigaction = libc::SIG_DFL;
    libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut());
    let mut status = 0;
    loop {
        let r = libc::waitpid(pid, &mut status, 0);
        if r == pid {
            break;
        }
        if r == -1 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(125);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::sigaction(signal, &default, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal);
    }
    libc::_exit(125)
}
