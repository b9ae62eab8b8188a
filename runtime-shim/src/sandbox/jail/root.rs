//! The jail's file system, entered in the child between fork and exec: new mount (and ipc,
//! uts) namespaces, nothing propagating back to the host, the root directory bound onto
//! itself, the read-only binds, a small private /dev with the device nodes, then pivot_root.
//! Everything here is prepared before the fork ([`RootPlan`]) and only makes system calls
//! (async-signal-safe).

use std::ffi::CString;
use std::path::Path;

use super::child::{cstring, sys, Failure};

/// A device node to make inside the jail.
#[derive(Debug)]
pub struct DeviceNode {
    /// Host path of the node inside the root (`<root>/dev/kvm`).
    pub path: CString,
    /// `st_rdev` of the host's node.
    pub rdev: libc::dev_t,
    /// Permission bits.
    pub mode: libc::mode_t,
}

/// The root, ready to enter.
#[derive(Debug)]
pub struct RootPlan {
    /// `<sandbox-dir>/root`.
    pub root: CString,
    /// (host source, host path of the target inside the root).
    pub binds: Vec<(CString, CString)>,
    /// `<root>/dev`.
    pub dev: CString,
    /// Directories to make on the /dev tmpfs (`<root>/dev/net`).
    pub dev_dirs: Vec<CString>,
    /// Nodes to make on it.
    pub devices: Vec<DeviceNode>,
    /// The guest RAM tmpfs: its mount point (`<root>/ram`) and mount options.
    pub ram: Option<(CString, CString)>,
    /// Owner of the nodes.
    pub uid: libc::uid_t,
    /// Group of the nodes.
    pub gid: libc::gid_t,
}

const DEV_OPTIONS: &[u8] = b"mode=0755,size=64k,nr_inodes=32\0";
const HOSTNAME: &[u8] = b"hull-vmm";

/// Mount options of the guest RAM tmpfs: just the guest's size, a few inodes, only the jail user
/// inside, and huge pages wherever the host has a free one (`huge=always`; hull-vmm does not
/// advise the mapping, so its faults never wait for compaction).
pub fn ram_tmpfs_options(mib: u64, uid: u32, gid: u32) -> String {
    format!("mode=0700,uid={uid},gid={gid},size={mib}m,nr_inodes=4,huge=always")
}

impl RootPlan {
    /// The plan for `root` (host path) with `binds` (source, absolute target in the jail),
    /// device nodes `devices` (absolute paths, copied from the host's nodes) and, for
    /// `ram_mib`, a guest RAM tmpfs of that size at [`super::plan::RAM_IN_JAIL`].
    pub fn new(
        root: &Path,
        binds: &[(&Path, &Path)],
        devices: &[&Path],
        ram_mib: Option<u64>,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<RootPlan> {
        use std::os::unix::fs::FileTypeExt;
        use std::os::unix::fs::MetadataExt;
        let inside = |p: &Path| cstring(&root.join(p.strip_prefix("/").unwrap_or(p)));
        let mut dev_dirs = Vec::new();
        let mut nodes = Vec::new();
        for device in devices {
            let meta = std::fs::metadata(device)?;
            if !meta.file_type().is_char_device() {
                return Err(std::io::Error::other(format!(
                    "{} is not a character device",
                    device.display()
                )));
            }
            if let Some(parent) = device.parent().filter(|p| *p != Path::new("/dev")) {
                dev_dirs.push(inside(parent)?);
            }
            let shared = *device == Path::new("/dev/null");
            nodes.push(DeviceNode {
                path: inside(device)?,
                rdev: meta.rdev(),
                mode: if shared { 0o666 } else { 0o600 },
            });
        }
        Ok(RootPlan {
            root: cstring(root)?,
            binds: binds
                .iter()
                .map(|(source, target)| Ok((cstring(source)?, inside(target)?)))
                .collect::<std::io::Result<_>>()?,
            dev: inside(Path::new("/dev"))?,
            dev_dirs,
            devices: nodes,
            ram: match ram_mib {
                Some(mib) => Some((
                    inside(Path::new(super::plan::RAM_IN_JAIL))?,
                    CString::new(ram_tmpfs_options(mib, uid, gid))?,
                )),
                None => None,
            },
            uid,
            gid,
        })
    }

    /// Enters the jail root (in the child; async-signal-safe).
    pub fn enter(&self) -> Result<(), Failure> {
        // SAFETY: plain system calls on NUL-terminated strings owned by `self`, which lives
        // until exec; nothing allocates.
        unsafe {
            sys(
                libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS),
                "unshare mount/ipc/uts namespaces",
            )?;
            sys(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                "making the mounts private",
            )?;
            sys(
                libc::sethostname(HOSTNAME.as_ptr().cast(), HOSTNAME.len()),
                "sethostname",
            )?;
            bind(&self.root, &self.root, 0, "binding the jail root")?;
            for (source, target) in &self.binds {
                bind(
                    source,
                    target,
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                    "binding a file into the jail",
                )?;
            }
            sys(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.dev.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    DEV_OPTIONS.as_ptr().cast(),
                ),
                "mounting the jail's /dev",
            )?;
            for dir in &self.dev_dirs {
                let rc = libc::mkdir(dir.as_ptr(), 0o755);
                if rc != 0 && *libc::__errno_location() != libc::EEXIST {
                    return Err(Failure::last("mkdir in the jail's /dev"));
                }
            }
            for node in &self.devices {
                sys(
                    libc::mknod(node.path.as_ptr(), libc::S_IFCHR | node.mode, node.rdev),
                    "mknod in the jail's /dev",
                )?;
                sys(
                    libc::chown(node.path.as_ptr(), self.uid, self.gid),
                    "chown of a jail device node",
                )?;
                sys(
                    libc::chmod(node.path.as_ptr(), node.mode),
                    "chmod of a jail device node",
                )?;
            }
            sys(
                libc::mount(
                    std::ptr::null(),
                    self.dev.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
                "making the jail's /dev read-only",
            )?;
            if let Some((target, options)) = &self.ram {
                sys(
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        options.as_ptr().cast(),
                    ),
                    "mounting the jail's guest RAM tmpfs",
                )?;
            }
            sys(
                libc::mount(
                    std::ptr::null(),
                    self.root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
                "remounting the jail root nosuid,nodev,noexec",
            )?;
            sys(libc::chdir(self.root.as_ptr()), "chdir to the jail root")?;
            sys(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
                "pivot_root",
            )?;
            sys(
                libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
                "detaching the old root",
            )?;
            sys(libc::chdir(c"/".as_ptr()), "chdir to /")?;
        }
        Ok(())
    }
}

/// Binds `source` onto `target`, then remounts the bind with `flags` (if any).
///
/// # Safety
/// Plain system calls on valid C strings.
unsafe fn bind(
    source: &CString,
    target: &CString,
    flags: libc::c_ulong,
    step: &'static str,
) -> Result<(), Failure> {
    sys(
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ),
        step,
    )?;
    if flags != 0 {
        sys(
            libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | flags,
                std::ptr::null(),
            ),
            step,
        )?;
    }
    Ok(())
}
