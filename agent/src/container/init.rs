//! The set-up steps inside the new namespaces, all through the [`Syscall`] seam: the rootfs
//! (propagation, rootfs bind, the spec's mounts, /dev, pivot_root, masked and read-only paths,
//! hostname, sysctls) and the process (session, terminal, rlimits, user, capabilities, cwd,
//! no_new_privs, seccomp).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Process, Spec};

use super::caps;
use super::paths::resolve_in_root;
use super::syscall::{CapabilitySets, Syscall, SyscallError};

/// A set-up step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A system call failed.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// A path could not be resolved or created.
    #[error("{0}")]
    Path(String),
    /// The spec asks for something unsupported.
    #[error("{0}")]
    Unsupported(String),
}

fn path_error(what: &str, path: &Path, err: impl std::fmt::Display) -> SetupError {
    SetupError::Path(format!("{what} {}: {err}", path.display()))
}

/// Devices bind-mounted from the agent's /dev when the spec mounts a fresh /dev.
pub const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Mount flags and file system data parsed from OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount itself.
    pub flags: MsFlags,
    /// Propagation flags, applied with a second mount call.
    pub propagation: MsFlags,
    /// Whether it is a bind mount (`bind` / `rbind`).
    pub bind: bool,
    /// Whether the bind is recursive (`rbind`).
    pub recursive: bool,
    /// Options passed to the file system, comma-joined.
    pub data: String,
}

/// Parses OCI mount options (`ro`, `nosuid`, `rbind`, `rprivate`, `mode=755`, ...).
pub fn parse_mount_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        bind: false,
        recursive: false,
        data: String::new(),
    };
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "bind" => {
                parsed.bind = true;
                continue;
            }
            "rbind" => {
                parsed.bind = true;
                parsed.recursive = true;
                continue;
            }
            other => {
                let propagation = match other {
                    "private" => Some(MsFlags::MS_PRIVATE),
                    "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                    "shared" => Some(MsFlags::MS_SHARED),
                    "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
                    "slave" => Some(MsFlags::MS_SLAVE),
                    "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
                    "unbindable" => Some(MsFlags::MS_UNBINDABLE),
                    "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
                    _ => None,
                };
                match propagation {
                    Some(p) => parsed.propagation |= p,
                    None => data.push(other.to_string()),
                }
                continue;
            }
        };
        parsed.flags.insert(set);
        parsed.flags.remove(clear);
    }
    parsed.data = data.join(",");
    parsed
}

/// The clone flag of a namespace type.
pub fn namespace_flag(kind: LinuxNamespaceType) -> nix::sched::CloneFlags {
    use nix::sched::CloneFlags as F;
    match kind {
        LinuxNamespaceType::Mount => F::CLONE_NEWNS,
        LinuxNamespaceType::Pid => F::CLONE_NEWPID,
        LinuxNamespaceType::Uts => F::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => F::CLONE_NEWIPC,
        LinuxNamespaceType::Network => F::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => F::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => F::CLONE_NEWUSER,
        LinuxNamespaceType::Time => F::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Whether the spec asks for a new namespace of `kind`.
pub fn wants_namespace(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| nss.iter().any(|ns| ns.typ() == kind))
}

fn rootfs_propagation(spec: &Spec) -> MsFlags {
    let wanted = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .unwrap_or_default();
    match wanted.as_str() {
        "shared" | "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "private" | "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" | "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    }
}

/// Creates the mount point `dest` (a file when `source_is_file`, else a directory).
fn create_mount_point(dest: &Path, source_is_file: bool) -> Result<(), SetupError> {
    if source_is_file {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| path_error("creating", parent, e))?;
        }
        if !dest.exists() {
            std::fs::File::create(dest).map_err(|e| path_error("creating", dest, e))?;
        }
    } else {
        std::fs::create_dir_all(dest).map_err(|e| path_error("creating", dest, e))?;
    }
    Ok(())
}

/// The flags for remounting a bind mount with the spec's `requested` flags, given the flags
/// the bound mount already has: a remount replaces them all, so without this a `nosuid` bind
/// of a `nodev` share would lose `nodev` (and inside a user namespace, where such flags are
/// locked, the remount would fail). Read-only, nosuid, nodev and noexec are kept; the
/// access-time flags are kept unless the spec names its own.
fn bind_remount_flags(requested: MsFlags, existing: MsFlags) -> MsFlags {
    let kept = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let atime = MsFlags::MS_NOATIME
        | MsFlags::MS_NODIRATIME
        | MsFlags::MS_RELATIME
        | MsFlags::MS_STRICTATIME;
    let mut flags = requested | (existing & kept);
    if !requested.intersects(atime) {
        // statvfs has no flag for strictatime: a mount with none of the others has it.
        flags |= if existing.intersects(atime) {
            existing & atime
        } else {
            MsFlags::MS_STRICTATIME
        };
    }
    flags
}

/// Mounts one spec mount inside `rootfs`.
fn mount_one(sys: &dyn Syscall, rootfs: &Path, mount: &Mount) -> Result<(), SetupError> {
    let options = parse_mount_options(mount.options().as_deref().unwrap_or_default());
    let dest = resolve_in_root(rootfs, mount.destination())
        .map_err(|e| SetupError::Path(e.to_string()))?;
    let typ = mount.typ().clone().unwrap_or_default();
    let bind = options.bind || typ == "bind";
    if bind {
        let source = mount.source().as_ref().ok_or_else(|| {
            SetupError::Path(format!("bind mount on {} has no source", dest.display()))
        })?;
        create_mount_point(&dest, source.is_file())?;
        let mut flags = MsFlags::MS_BIND;
        if options.recursive {
            flags |= MsFlags::MS_REC;
        }
        sys.mount(Some(source), &dest, None, flags, None)?;
        let extra = options.flags - MsFlags::MS_REMOUNT;
        if !extra.is_empty() {
            let existing = sys.mount_flags(&dest)?;
            sys.mount(
                None,
                &dest,
                None,
                bind_remount_flags(extra, existing) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None,
            )?;
        }
    } else {
        create_mount_point(&dest, false)?;
        let fstype = if typ == "cgroup" {
            "cgroup2"
        } else {
            typ.as_str()
        };
        if fstype.is_empty() {
            return Err(SetupError::Unsupported(format!(
                "mount on {} has no type",
                mount.destination().display()
            )));
        }
        let source = mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(fstype));
        let data = (!options.data.is_empty()).then_some(options.data.as_str());
        match sys.mount(Some(&source), &dest, Some(fstype), options.flags, data) {
            Ok(()) => {}
            // sysfs/cgroup2 cannot be mounted without a net/cgroup namespace of our own; a
            // read-only bind of the agent's copy is what runc does in that case.
            Err(err) if matches!(fstype, "sysfs" | "cgroup2") && err.errno == Errno::EPERM => {
                let host = PathBuf::from(if fstype == "sysfs" {
                    "/sys"
                } else {
                    "/sys/fs/cgroup"
                });
                sys.mount(
                    Some(&host),
                    &dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                // The spec's flags (ro, nosuid, ...) still apply to the bind.
                if !options.flags.is_empty() {
                    let existing = sys.mount_flags(&dest)?;
                    sys.mount(
                        None,
                        &dest,
                        None,
                        bind_remount_flags(options.flags - MsFlags::MS_REMOUNT, existing)
                            | MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT,
                        None,
                    )?;
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    if !options.propagation.is_empty() {
        sys.mount(None, &dest, None, options.propagation, None)?;
    }
    Ok(())
}

/// Fills a freshly mounted /dev: the default devices (bind-mounted from the agent's /dev),
/// the spec's devices the same way, and the standard symlinks.
fn populate_dev(sys: &dyn Syscall, rootfs: &Path, spec: &Spec) -> Result<(), SetupError> {
    let dev = rootfs.join("dev");
    let mut devices: Vec<PathBuf> = DEFAULT_DEVICES
        .iter()
        .map(|name| PathBuf::from("/dev").join(name))
        .collect();
    for device in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        if !devices.contains(device.path()) {
            devices.push(device.path().clone());
        }
    }
    for device in devices {
        if !device.starts_with("/dev") || !device.exists() {
            continue;
        }
        let dest = resolve_in_root(rootfs, &device).map_err(|e| SetupError::Path(e.to_string()))?;
        create_mount_point(&dest, true)?;
        sys.mount(Some(&device), &dest, None, MsFlags::MS_BIND, None)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if path.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &path)
                .map_err(|e| path_error("creating symlink", &path, e))?;
        }
    }
    Ok(())
}

/// Switches the root to `rootfs` with pivot_root and detaches the old root, so nothing of the
/// agent's file system stays reachable. There is no chroot fallback: a chroot can be escaped by
/// a process holding CAP_SYS_CHROOT. (In the guest, pivot_root works because PID 1 stands on a
/// bind mount of the initramfs, see `guest_init::leave_the_initramfs_root`.)
fn switch_root(sys: &dyn Syscall, rootfs: &Path) -> Result<(), SetupError> {
    sys.chdir(rootfs)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))?;
    Ok(())
}

fn mask_paths(sys: &dyn Syscall, paths: &[String]) -> Result<(), SetupError> {
    for path in paths {
        let path = Path::new(path);
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => sys.mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Ok(_) => sys.mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => continue,
        }
    }
    Ok(())
}

fn readonly_paths(sys: &dyn Syscall, paths: &[String]) -> Result<(), SetupError> {
    for path in paths {
        let path = Path::new(path);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.mount(
            None,
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None,
        )?;
    }
    Ok(())
}

/// Sets up the container's file system view and UTS/sysctl state. Runs in the new mount
/// namespace (and the others) before the process is started.
pub fn prepare_rootfs(sys: &dyn Syscall, rootfs: &Path, spec: &Spec) -> Result<(), SetupError> {
    sys.mount(None, Path::new("/"), None, rootfs_propagation(spec), None)?;
    sys.mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut dev_mounted = false;
    for mount in spec.mounts().iter().flatten() {
        mount_one(sys, rootfs, mount)?;
        dev_mounted |= mount.destination() == Path::new("/dev");
    }
    if dev_mounted {
        populate_dev(sys, rootfs, spec)?;
    }
    switch_root(sys, rootfs)?;
    let linux = spec.linux().as_ref();
    // Hostname and sysctls first, as runc does: the spec's readonlyPaths usually include
    // /proc/sys (containerd's sandbox spec always does).
    if wants_namespace(spec, LinuxNamespaceType::Uts) {
        if let Some(hostname) = spec.hostname() {
            sys.sethostname(hostname)?;
        }
    }
    if let Some(sysctls) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<_> = sysctls.keys().collect();
        keys.sort();
        for key in keys {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            sys.write_file(&path, &sysctls[key])?;
        }
    }
    if let Some(linux) = linux {
        mask_paths(sys, linux.masked_paths().as_deref().unwrap_or_default())?;
        readonly_paths(sys, linux.readonly_paths().as_deref().unwrap_or_default())?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn rlimit_number(kind: PosixRlimitType) -> u32 {
    use PosixRlimitType as R;
    match kind {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Sets up the process itself: session and terminal, oom score, rlimits, user and groups,
/// capabilities and cwd. `early_seccomp` is installed first (used when no_new_privs is off, so
/// the filter can still be loaded with CAP_SYS_ADMIN).
pub fn prepare_process(
    sys: &dyn Syscall,
    process: &Process,
    terminal: bool,
    early_seccomp: &[seccompiler::BpfProgram],
    install_seccomp: &dyn Fn(&seccompiler::BpfProgram) -> Result<(), SetupError>,
) -> Result<(), SetupError> {
    sys.setsid()?;
    if terminal {
        sys.set_controlling_terminal(0)?;
        // The process's own tty, as runc gives it: a non-root user can reopen it by name.
        let user = process.user();
        sys.chown_fd(0, user.uid(), user.gid())?;
    }
    if let Some(score) = process.oom_score_adj() {
        sys.write_file(Path::new("/proc/self/oom_score_adj"), &score.to_string())?;
    }
    for rlimit in process.rlimits().iter().flatten() {
        sys.setrlimit(rlimit_number(rlimit.typ()), rlimit.soft(), rlimit.hard())?;
    }
    for program in early_seccomp {
        install_seccomp(program)?;
    }
    let user = process.user();
    let caps = process.capabilities().as_ref();
    if let Some(caps) = caps {
        let bounding = caps::mask_of(caps.bounding().as_ref());
        for cap in 0..=caps::LAST_CAP {
            if bounding & (1 << cap) == 0 {
                sys.drop_bounding_cap(cap)?;
            }
        }
        sys.set_keep_caps(true)?;
    }
    sys.setgroups(user.additional_gids().as_deref().unwrap_or_default())?;
    sys.setgid(user.gid())?;
    sys.setuid(user.uid())?;
    if let Some(caps) = caps {
        sys.set_keep_caps(false)?;
        sys.set_capabilities(CapabilitySets {
            effective: caps::mask_of(caps.effective().as_ref()),
            permitted: caps::mask_of(caps.permitted().as_ref()),
            inheritable: caps::mask_of(caps.inheritable().as_ref()),
        })?;
        let ambient = caps::mask_of(caps.ambient().as_ref());
        for cap in (0..=caps::LAST_CAP).filter(|c| ambient & (1 << c) != 0) {
            sys.raise_ambient_cap(cap)?;
        }
    }
    let cwd = if process.cwd().as_os_str().is_empty() {
        Path::new("/")
    } else {
        process.cwd().as_path()
    };
    sys.chdir(cwd)?;
    Ok(())
}

/// The last steps before execve: no_new_privs, then the seccomp filters (`late_seccomp`).
pub fn finish_process(
    sys: &dyn Syscall,
    process: &Process,
    late_seccomp: &[seccompiler::BpfProgram],
    install_seccomp: &dyn Fn(&seccompiler::BpfProgram) -> Result<(), SetupError>,
) -> Result<(), SetupError> {
    if process.no_new_privileges().unwrap_or(false) {
        sys.set_no_new_privs()?;
    }
    for program in late_seccomp {
        install_seccomp(program)?;
    }
    Ok(())
}

/// Finds the program to run: `arg0` itself when it contains a `/`, else the first executable
/// file of that name in the PATH of `env` (or a default PATH). Runs after the root switch.
pub fn find_executable(arg0: &str, env: &[String]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(arg0))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests;
