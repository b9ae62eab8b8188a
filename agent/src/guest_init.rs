//! Guest bring-up done by PID 1 before serving the API: basic mounts, console stdio, the
//! banner line, the boot marker, and the `hull.poweroff=1` cmdline switch.

use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Guest-physical address of the boot marker page watched by hull-vmm.
pub const BOOT_MARKER_ADDR: u64 = 0xd000_0000;
/// The byte written at [`BOOT_MARKER_ADDR`] to say "the agent is up".
pub const BOOT_MARKER_VALUE: u8 = 123;
/// Kernel command-line word asking the agent to power off right after boot (boot tests).
pub const POWEROFF_CMDLINE_WORD: &str = "hull.poweroff=1";

/// One mount PID 1 makes.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// Mount source (the file system name for virtual file systems).
    pub source: &'static str,
    /// Mount point, created if missing.
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// File system options.
    pub data: &'static str,
    /// Whether the agent cannot work without it.
    pub essential: bool,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// The mounts of a Hull guest, in order (each later one may live inside an earlier one).
/// /proc is essential (cmdline, meminfo, processes) and so is /dev (console, /dev/mem).
pub const BASIC_MOUNTS: [MountSpec; 9] = [
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: true,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: false,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
        essential: true,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0620,ptmxmode=0666",
        essential: false,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=1777",
        essential: false,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=0755",
        essential: false,
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=1777",
        essential: false,
    },
    // The guest's own /etc (resolv.conf from CreateSandbox): writable on the read-only pmem
    // root too.
    MountSpec {
        source: "tmpfs",
        target: "/etc",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=0755",
        essential: false,
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: false,
    },
];

/// What happened to one of [`BASIC_MOUNTS`].
#[derive(Debug)]
pub struct MountOutcome {
    /// The mount.
    pub spec: MountSpec,
    /// `Ok(true)` mounted, `Ok(false)` something was already mounted there (EBUSY).
    pub result: Result<bool, MountError>,
}

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point could not be created.
    #[error("creating mount point {target}: {source}")]
    MountPoint {
        /// The mount point.
        target: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// mount(2) failed.
    #[error("mounting {fstype} on {target}: {source}")]
    Mount {
        /// The file system type.
        fstype: &'static str,
        /// The mount point.
        target: &'static str,
        /// The errno.
        source: Errno,
    },
}

/// Where PID 1 binds the initramfs before standing on it.
const INITRAMFS_BIND: &str = "/.hull-root";

/// Makes PID 1's root a bind mount of the initramfs instead of the initramfs itself. The
/// initramfs is the root of the mount tree, and pivot_root(2) refuses to move away from a root
/// without a parent mount; containers would be left with chroot, which a process holding
/// CAP_SYS_CHROOT escapes. On the bind (whose parent is the initramfs) pivot_root works, and
/// nothing is copied. Run first, before any other mount.
///
/// A guest whose root is a file system the kernel mounted (the pmem image: `root=/dev/pmem0`)
/// already stands on a mount with a parent (the kernel's initial rootfs under it); nothing is done
/// there, and the root stays read-only.
pub fn leave_the_initramfs_root() -> Result<(), Errno> {
    if !root_is_initramfs()? {
        return Ok(());
    }
    let bind = Path::new(INITRAMFS_BIND);
    if !bind.is_dir() {
        std::fs::create_dir(bind).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    }
    mount(
        Some("/"),
        bind,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    nix::unistd::chdir(bind)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")
}

/// Whether `/` is the kernel's initial RAM file system (ramfs, or tmpfs when the kernel uses
/// it for the rootfs), as opposed to a file system mounted from a device.
fn root_is_initramfs() -> Result<bool, Errno> {
    let fs = nix::sys::statfs::statfs("/")?;
    Ok(is_initramfs_type(fs.filesystem_type()))
}

/// ramfs's f_type (linux/magic.h), which neither nix nor libc names.
const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);

/// The file system types the kernel's initial root can have.
fn is_initramfs_type(kind: nix::sys::statfs::FsType) -> bool {
    kind == RAMFS_MAGIC || kind == nix::sys::statfs::TMPFS_MAGIC
}

/// Makes one mount, creating its mount point first.
pub fn mount_one(spec: &MountSpec) -> Result<bool, MountError> {
    if !Path::new(spec.target).is_dir() {
        std::fs::create_dir_all(spec.target).map_err(|source| MountError::MountPoint {
            target: spec.target,
            source,
        })?;
    }
    let data = (!spec.data.is_empty()).then_some(spec.data);
    match mount(
        Some(spec.source),
        spec.target,
        Some(spec.fstype),
        spec.flags,
        data,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EBUSY) => Ok(false),
        Err(source) => Err(MountError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source,
        }),
    }
}

/// Makes all [`BASIC_MOUNTS`], continuing after failures; the caller logs the outcomes (the
/// console may not be usable before /dev is mounted) and decides what is fatal.
pub fn mount_basics() -> Vec<MountOutcome> {
    BASIC_MOUNTS
        .iter()
        .map(|spec| MountOutcome {
            spec: *spec,
            result: mount_one(spec),
        })
        .collect()
}

/// If the kernel could not give PID 1 stdin/stdout/stderr (no /dev/console in the initramfs),
/// opens /dev/console (available after devtmpfs is mounted) for the missing ones.
pub fn ensure_console_stdio() -> std::io::Result<()> {
    let missing: Vec<i32> = (0..3)
        .filter(|&fd| {
            nix::fcntl::fcntl(
                // SAFETY: only probes whether the descriptor number is open.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_GETFD,
            ) == Err(Errno::EBADF)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")?;
    for fd in missing {
        // SAFETY: dup2 onto a descriptor number that is not open; `console` stays valid.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // `console` may itself have landed on 0..2; keep it open in that case.
    if console.as_raw_fd() < 3 {
        std::mem::forget(console);
    }
    Ok(())
}

/// The one line the lab greps for on the console.
pub fn banner_line(kernel_release: &str) -> String {
    format!(
        "HULL-AGENT version={} api={} kernel={}",
        crate::AGENT_VERSION,
        hull_proto::API_VERSION,
        kernel_release
    )
}

/// Whether the kernel command line `cmdline` has `word` as one of its words (exactly).
pub fn cmdline_has_word(cmdline: &str, word: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == word)
}

/// Whether the kernel command line asks for power-off right after boot.
pub fn cmdline_requests_poweroff(cmdline: &str) -> bool {
    cmdline_has_word(cmdline, POWEROFF_CMDLINE_WORD)
}

/// Writing the boot marker failed.
#[derive(Debug, thiserror::Error)]
pub enum BootMarkerError {
    /// The memory device could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The device (normally /dev/mem).
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The page could not be mapped.
    #[error("mapping {path} at {offset:#x}: {source}")]
    Map {
        /// The device.
        path: String,
        /// The offset (guest-physical address).
        offset: u64,
        /// The errno.
        source: Errno,
    },
}

/// Writes [`BOOT_MARKER_VALUE`] at guest-physical [`BOOT_MARKER_ADDR`] through /dev/mem;
/// hull-vmm sees the write and records the boot time.
pub fn write_boot_marker() -> Result<(), BootMarkerError> {
    write_marker_byte(Path::new("/dev/mem"), BOOT_MARKER_ADDR)
}

/// Maps the page at `offset` of `path` shared and writes [`BOOT_MARKER_VALUE`] at its start.
/// `offset` must be page aligned.
pub fn write_marker_byte(path: &Path, offset: u64) -> Result<(), BootMarkerError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(path)
        .map_err(|source| BootMarkerError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let map_error = |source| BootMarkerError::Map {
        path: path.display().to_string(),
        offset,
        source,
    };
    let offset_arg = libc::off_t::try_from(offset).map_err(|_| map_error(Errno::EOVERFLOW))?;
    let length = NonZeroUsize::new(4096).expect("4096 is not zero");
    // SAFETY: a fresh shared mapping of one page of `file`; nothing else refers to it, it is
    // written once through a volatile store and unmapped right after.
    unsafe {
        let page = mmap(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &file,
            offset_arg,
        )
        .map_err(map_error)?;
        std::ptr::write_volatile(page.as_ptr().cast::<u8>(), BOOT_MARKER_VALUE);
        munmap(page, length.get()).map_err(map_error)?;
    }
    Ok(())
}

/// Where the kernel's free page reporting takes its block order (a built-in module parameter).
pub const PAGE_REPORTING_ORDER_PARAM: &str =
    "module/page_reporting/parameters/page_reporting_order";
/// The order of the blocks the guest reports free: 6 = 256 KiB. Linux 6.1 sets it to its
/// pageblock order when the balloon registers (4 MiB in our kernel, which has no hugetlbfs);
/// reporting also waits until a zone has 32 such blocks free above its low watermark. Freed
/// memory a guest touched at boot is scattered in pieces smaller than 2 MiB: in the lab, order 6
/// instead of 9 (2 MiB) took an idle pod's hull-vmm from 39.5 to 37.2 MiB (1 pod) and 37.4 to
/// 35.2 MiB (5 pods). The price: a page reported and then reused costs the host a fresh zeroed
/// page, which a busy guest pays more often in smaller blocks.
pub const PAGE_REPORTING_ORDER: u32 = 6;
/// A kernel command line word with this prefix asks for another order (`kernel_params`, e.g.
/// to weigh smaller blocks): Linux 6.1 ignores its own `page_reporting.page_reporting_order=`
/// (the balloon's registration overwrites it), so the agent takes the order from here.
pub const PAGE_REPORTING_ORDER_CMDLINE: &str = "hull.page_reporting_order=";
/// Orders the kernel's free lists have (MAX_ORDER 11 in 6.1: 0..=10).
const MAX_PAGE_REPORTING_ORDER: u32 = 10;

/// The order `cmdline` asks for, or [`PAGE_REPORTING_ORDER`]; an order that is not a number in
/// 0..=10 is an error naming the word.
pub fn page_reporting_order(cmdline: &str) -> Result<u32, String> {
    let Some(value) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(PAGE_REPORTING_ORDER_CMDLINE))
    else {
        return Ok(PAGE_REPORTING_ORDER);
    };
    match value.parse::<u32>() {
        Ok(order) if order <= MAX_PAGE_REPORTING_ORDER => Ok(order),
        _ => Err(format!(
            "{PAGE_REPORTING_ORDER_CMDLINE}{value}: not an order in 0..={MAX_PAGE_REPORTING_ORDER}"
        )),
    }
}

/// Sets `order` under the sysfs mounted at `sys`. `Ok(false)` when the kernel has no free page
/// reporting (no virtio-balloon, or a kernel without it).
pub fn set_page_reporting_order(sys: &Path, order: u32) -> std::io::Result<bool> {
    let param = sys.join(PAGE_REPORTING_ORDER_PARAM);
    if !param.exists() {
        return Ok(false);
    }
    std::fs::write(&param, format!("{order}\n"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_root_is_ramfs_or_tmpfs_not_a_disk_file_system() {
        use nix::sys::statfs::{EXT4_SUPER_MAGIC, TMPFS_MAGIC};
        assert!(is_initramfs_type(RAMFS_MAGIC));
        assert!(is_initramfs_type(TMPFS_MAGIC));
        assert!(!is_initramfs_type(EXT4_SUPER_MAGIC));
    }

    #[test]
    fn banner_has_the_exact_lab_format() {
        assert_eq!(
            banner_line("6.1.0-hull"),
            format!(
                "HULL-AGENT version={} api={} kernel=6.1.0-hull",
                env!("CARGO_PKG_VERSION"),
                hull_proto::API_VERSION
            )
        );
    }

    #[test]
    fn poweroff_word_must_match_exactly() {
        assert!(cmdline_requests_poweroff(
            "console=ttyS0 reboot=k hull.poweroff=1 quiet\n"
        ));
        assert!(cmdline_requests_poweroff("hull.poweroff=1"));
        assert!(!cmdline_requests_poweroff("console=ttyS0 reboot=k"));
        assert!(!cmdline_requests_poweroff("hull.poweroff=10"));
        assert!(!cmdline_requests_poweroff("xhull.poweroff=1"));
        assert!(!cmdline_requests_poweroff("hull.poweroff=0"));
    }

    #[test]
    fn marker_byte_lands_at_the_mapped_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        std::fs::write(&path, vec![0u8; 3 * 4096]).unwrap();
        write_marker_byte(&path, 4096).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[4096], BOOT_MARKER_VALUE);
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), 1);
    }

    #[test]
    fn marker_errors_name_the_device() {
        let err = write_marker_byte(Path::new("/nonexistent/mem"), 0).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        std::fs::write(&path, [0u8; 10]).unwrap();
        let err = write_marker_byte(&path, 100).unwrap_err();
        assert!(
            matches!(err, BootMarkerError::Map { offset: 100, .. }),
            "{err}"
        );
    }

    #[test]
    fn basic_mounts_come_parent_first() {
        for (i, m) in BASIC_MOUNTS.iter().enumerate() {
            for later in &BASIC_MOUNTS[i + 1..] {
                assert!(
                    !m.target.starts_with(&format!("{}/", later.target)),
                    "{} is mounted before its parent {}",
                    m.target,
                    later.target
                );
            }
        }
    }

    #[test]
    fn page_reporting_order_is_set_where_the_kernel_has_it() {
        let sys = tempfile::tempdir().unwrap();
        assert!(!set_page_reporting_order(sys.path(), 6).unwrap());
        let param = sys.path().join(PAGE_REPORTING_ORDER_PARAM);
        std::fs::create_dir_all(param.parent().unwrap()).unwrap();
        std::fs::write(&param, "10\n").unwrap();
        assert!(set_page_reporting_order(sys.path(), 6).unwrap());
        assert_eq!(std::fs::read_to_string(&param).unwrap(), "6\n");
    }

    #[test]
    fn the_command_line_may_ask_for_another_page_reporting_order() {
        assert_eq!(page_reporting_order("quiet"), Ok(PAGE_REPORTING_ORDER));
        assert_eq!(
            page_reporting_order("quiet hull.page_reporting_order=4 ro"),
            Ok(4)
        );
        for bad in ["11", "-1", "four", ""] {
            let err =
                page_reporting_order(&format!("hull.page_reporting_order={bad}")).unwrap_err();
            assert!(
                err.contains(&format!("hull.page_reporting_order={bad}:")),
                "{err}"
            );
        }
    }
}
