//! The syscall seam of container set-up: every privileged step the container init takes goes
//! through [`Syscall`], so unit tests can check the order of the set-up without root
//! ([`RecordingSyscall`]) while the agent uses [`LinuxSyscall`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// A failed system call, with what it was asked to do.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct SyscallError {
    /// The call and its main arguments, e.g. `mount proc on /proc`.
    pub call: String,
    /// The kernel's answer.
    pub errno: Errno,
}

/// Result of one seam call.
pub type SysResult<T = ()> = Result<T, SyscallError>;

fn fail(call: impl Into<String>) -> impl FnOnce(Errno) -> SyscallError {
    let call = call.into();
    move |errno| SyscallError { call, errno }
}

/// Linux capability sets for [`Syscall::set_capabilities`] (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySets {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

/// The privileged operations of container set-up.
pub trait Syscall {
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> SysResult;
    /// setns(2) on the namespace file at `path`.
    fn setns(&self, path: &Path, flags: CloneFlags) -> SysResult;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult;
    /// The flags of the mount `path` is on (statvfs(2)), as mount flags: read-only, nosuid,
    /// nodev, noexec and the access-time ones.
    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> SysResult;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> SysResult;
    /// setrlimit(2) (`resource` is an `RLIMIT_*` number).
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult;
    /// setgroups(2).
    fn setgroups(&self, gids: &[u32]) -> SysResult;
    /// setresgid(2) with all three ids `gid`.
    fn setgid(&self, gid: u32) -> SysResult;
    /// setresuid(2) with all three ids `uid`.
    fn setuid(&self, uid: u32) -> SysResult;
    /// prctl(PR_SET_KEEPCAPS).
    fn set_keep_caps(&self, keep: bool) -> SysResult;
    /// prctl(PR_CAPBSET_DROP) for one capability.
    fn drop_bounding_cap(&self, cap: u32) -> SysResult;
    /// capset(2).
    fn set_capabilities(&self, sets: CapabilitySets) -> SysResult;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE) for one capability.
    fn raise_ambient_cap(&self, cap: u32) -> SysResult;
    /// prctl(PR_SET_NO_NEW_PRIVS, 1).
    fn set_no_new_privs(&self) -> SysResult;
    /// setsid(2).
    fn setsid(&self) -> SysResult;
    /// ioctl(fd, TIOCSCTTY): make the terminal on `fd` the controlling terminal.
    fn set_controlling_terminal(&self, fd: i32) -> SysResult;
    /// fchown(2) of an open descriptor.
    fn chown_fd(&self, fd: i32, uid: u32, gid: u32) -> SysResult;
    /// Writes `value` to a (proc/sys) file.
    fn write_file(&self, path: &Path, value: &str) -> SysResult;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn errno_of(err: std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

fn cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> SysResult {
        nix::sched::unshare(flags).map_err(fail(format!("unshare {flags:?}")))
    }

    fn setns(&self, path: &Path, flags: CloneFlags) -> SysResult {
        let call = format!("setns {}", path.display());
        let file = std::fs::File::open(path).map_err(|e| SyscallError {
            call: call.clone(),
            errno: errno_of(e),
        })?;
        nix::sched::setns(&file, flags).map_err(fail(call))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        nix::mount::mount(source, target, fstype, flags, data).map_err(fail(format!(
            "mount {} on {} (type {}, flags {flags:?})",
            source.map(|s| s.display().to_string()).unwrap_or_default(),
            target.display(),
            fstype.unwrap_or("-")
        )))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult {
        nix::mount::umount2(target, flags).map_err(fail(format!("umount {}", target.display())))
    }
    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let stat = nix::sys::statvfs::statvfs(path)
            .map_err(fail(format!("statvfs {}", path.display())))?;
        let pairs = [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ];
        Ok(pairs
            .iter()
            .filter(|(st, _)| stat.flags().contains(*st))
            .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(fail(format!("pivot_root {}", new_root.display())))
    }

    fn chdir(&self, path: &Path) -> SysResult {
        nix::unistd::chdir(path).map_err(fail(format!("chdir {}", path.display())))
    }

    fn sethostname(&self, name: &str) -> SysResult {
        nix::unistd::sethostname(name).map_err(fail(format!("sethostname {name}")))
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: plain syscall with a valid pointer to a local struct.
        let rc = unsafe { libc::setrlimit(resource as _, &limit) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("setrlimit {resource} {soft}/{hard}")))
    }

    fn setgroups(&self, gids: &[u32]) -> SysResult {
        // SAFETY: the pointer and length describe a live slice.
        let rc = unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("setgroups {gids:?}")))
    }

    fn setgid(&self, gid: u32) -> SysResult {
        // Raw syscall: applies to this thread only, which is all there is here.
        // SAFETY: plain syscall with integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("setresgid {gid}")))
    }

    fn setuid(&self, uid: u32) -> SysResult {
        // SAFETY: plain syscall with integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("setresuid {uid}")))
    }

    fn set_keep_caps(&self, keep: bool) -> SysResult {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, u64::from(keep), 0, 0, 0) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail("prctl PR_SET_KEEPCAPS"))
    }

    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, u64::from(cap), 0, 0, 0) };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::EINVAL) => Ok(()), // EINVAL: the kernel does not know this cap
            Err(errno) => Err(SyscallError {
                call: format!("prctl PR_CAPBSET_DROP {cap}"),
                errno,
            }),
        }
    }

    fn set_capabilities(&self, sets: CapabilitySets) -> SysResult {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let split = |v: u64| [(v & 0xffff_ffff) as u32, (v >> 32) as u32];
        let (e, p, i) = (
            split(sets.effective),
            split(sets.permitted),
            split(sets.inheritable),
        );
        let data = [
            Data {
                effective: e[0],
                permitted: p[0],
                inheritable: i[0],
            },
            Data {
                effective: e[1],
                permitted: p[1],
                inheritable: i[1],
            },
        ];
        // SAFETY: header and the two data structs are live and laid out as the kernel expects.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("capset {sets:x?}")))
    }

    fn raise_ambient_cap(&self, cap: u32) -> SysResult {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as u64,
                u64::from(cap),
                0u64,
                0u64,
            )
        };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("prctl PR_CAP_AMBIENT_RAISE {cap}")))
    }

    fn set_no_new_privs(&self) -> SysResult {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail("prctl PR_SET_NO_NEW_PRIVS"))
    }

    fn setsid(&self) -> SysResult {
        nix::unistd::setsid().map(drop).map_err(fail("setsid"))
    }

    fn chown_fd(&self, fd: i32, uid: u32, gid: u32) -> SysResult {
        // SAFETY: fchown with integer arguments.
        let rc = unsafe { libc::fchown(fd, uid, gid) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("fchown fd {fd} to {uid}:{gid}")))
    }
    fn set_controlling_terminal(&self, fd: i32) -> SysResult {
        // SAFETY: ioctl on a caller-provided fd with an integer argument.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
        Errno::result(rc)
            .map(drop)
            .map_err(fail(format!("ioctl TIOCSCTTY on fd {fd}")))
    }

    fn write_file(&self, path: &Path, value: &str) -> SysResult {
        std::fs::write(path, value).map_err(|e| SyscallError {
            call: format!("writing {value:?} to {}", path.display()),
            errno: errno_of(e),
        })
    }
}

/// Makes `path` usable as a C string for callers outside the seam.
pub fn path_cstring(path: &Path) -> Result<CString, Errno> {
    cstring(path)
}

/// A test double that records each call as a line and succeeds (or fails the call whose line
/// starts with `fail_on`).
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: Mutex<Vec<String>>,
    fail_on: Option<String>,
}

impl RecordingSyscall {
    /// A recorder whose calls all succeed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder whose first call whose record starts with `prefix` fails with EPERM.
    pub fn failing_on(prefix: &str) -> Self {
        RecordingSyscall {
            calls: Mutex::new(Vec::new()),
            fail_on: Some(prefix.to_string()),
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) -> SysResult {
        let fails = self
            .fail_on
            .as_deref()
            .is_some_and(|prefix| line.starts_with(prefix));
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(line.clone());
        }
        if fails {
            return Err(SyscallError {
                call: line,
                errno: Errno::EPERM,
            });
        }
        Ok(())
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

impl Syscall for RecordingSyscall {
    fn unshare(&self, flags: CloneFlags) -> SysResult {
        self.record(format!("unshare {:#x}", flags.bits()))
    }
    fn setns(&self, path: &Path, _flags: CloneFlags) -> SysResult {
        self.record(format!("setns {}", show(path)))
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.record(format!(
            "mount {} {} {} {:#x} {}",
            source.map(show).unwrap_or_else(|| "-".into()),
            show(target),
            fstype.unwrap_or("-"),
            flags.bits(),
            data.unwrap_or("-")
        ))
    }
    fn umount2(&self, target: &Path, _flags: MntFlags) -> SysResult {
        self.record(format!("umount {}", show(target)))
    }
    fn mount_flags(&self, _path: &Path) -> SysResult<MsFlags> {
        Ok(MsFlags::empty())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.record(format!("pivot_root {} {}", show(new_root), show(put_old)))
    }
    fn chdir(&self, path: &Path) -> SysResult {
        self.record(format!("chdir {}", show(path)))
    }
    fn sethostname(&self, name: &str) -> SysResult {
        self.record(format!("sethostname {name}"))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> SysResult {
        self.record(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn setgroups(&self, gids: &[u32]) -> SysResult {
        self.record(format!("setgroups {gids:?}"))
    }
    fn setgid(&self, gid: u32) -> SysResult {
        self.record(format!("setgid {gid}"))
    }
    fn setuid(&self, uid: u32) -> SysResult {
        self.record(format!("setuid {uid}"))
    }
    fn set_keep_caps(&self, keep: bool) -> SysResult {
        self.record(format!("keepcaps {keep}"))
    }
    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        self.record(format!("capbset_drop {cap}"))
    }
    fn set_capabilities(&self, sets: CapabilitySets) -> SysResult {
        self.record(format!(
            "capset e={:#x} p={:#x} i={:#x}",
            sets.effective, sets.permitted, sets.inheritable
        ))
    }
    fn raise_ambient_cap(&self, cap: u32) -> SysResult {
        self.record(format!("ambient_raise {cap}"))
    }
    fn set_no_new_privs(&self) -> SysResult {
        self.record("no_new_privs".to_string())
    }
    fn setsid(&self) -> SysResult {
        self.record("setsid".to_string())
    }
    fn set_controlling_terminal(&self, fd: i32) -> SysResult {
        self.record(format!("tiocsctty {fd}"))
    }
    fn chown_fd(&self, fd: i32, uid: u32, gid: u32) -> SysResult {
        self.record(format!("fchown {fd} {uid}:{gid}"))
    }
    fn write_file(&self, path: &Path, value: &str) -> SysResult {
        self.record(format!("write {} {value}", show(path)))
    }
}

/// Joins `path` (absolute inside the container) onto `root`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    root.join(relative)
}
