//! Who the jailed VMM is: resource limits (open files, file size, no core dumps), an empty
//! capability bounding set, the unprivileged uid/gid with no supplementary groups, no
//! capabilities left in any set, and `no_new_privs`. Applied in the child after it entered
//! the jail root, before exec; only system calls (async-signal-safe).

use super::child::{sys, Failure};

/// The credentials and limits of the jailed VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// User id (not 0).
    pub uid: libc::uid_t,
    /// Group id (not 0).
    pub gid: libc::gid_t,
    /// RLIMIT_NOFILE (soft and hard).
    pub nofile: u64,
    /// RLIMIT_FSIZE in bytes (soft and hard).
    pub fsize: u64,
    /// The highest capability number of this kernel (/proc/sys/kernel/cap_last_cap).
    pub last_cap: u32,
}

/// This kernel's highest capability number (63 if it cannot be read: dropping unknown ones
/// fails with EINVAL, which is ignored).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl Credentials {
    /// Applies the limits and drops to the jail user for good (in the child).
    pub fn apply(&self) -> Result<(), Failure> {
        // SAFETY: plain system calls with pointers to locals.
        unsafe {
            for (resource, value, step) in [
                (libc::RLIMIT_NOFILE, self.nofile, "setrlimit NOFILE"),
                (libc::RLIMIT_FSIZE, self.fsize, "setrlimit FSIZE"),
                (libc::RLIMIT_CORE, 0, "setrlimit CORE"),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                sys(libc::setrlimit(resource, &limit), step)?;
            }
            for cap in 0..=self.last_cap {
                let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                if rc != 0 && *libc::__errno_location() != libc::EINVAL {
                    return Err(Failure::last("dropping the capability bounding set"));
                }
            }
            sys(libc::setgroups(0, std::ptr::null()), "setgroups")?;
            sys(libc::setresgid(self.gid, self.gid, self.gid), "setresgid")?;
            sys(libc::setresuid(self.uid, self.uid, self.uid), "setresuid")?;
            let mut header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            sys(
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int,
                "capset",
            )?;
            let rc = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            if rc != 0 && *libc::__errno_location() != libc::EINVAL {
                return Err(Failure::last("clearing ambient capabilities"));
            }
            sys(
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                "no_new_privs",
            )?;
            // No parent-death signal: the VMM's parent is the shim thread that spawned it,
            // which ends right after the spawn (the signal follows the thread, not the
            // process). After a shim crash `delete` stops the VMM through the pids file.
        }
        Ok(())
    }
}
