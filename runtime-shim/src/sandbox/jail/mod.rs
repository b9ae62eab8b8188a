//! The jail of a sandbox VM: hull-vmm runs as PID 1 of its own PID namespace, in new mount,
//! ipc and uts namespaces, in the pod's network namespace, pivot_root'ed into
//! `<sandbox-dir>/root` which holds only what it needs ([`plan`]), as an unprivileged uid/gid
//! without capabilities and with `no_new_privs` and resource limits ([`credentials`]), inside
//! the pod cgroup that also holds virtiofsd ([`cgroup`]). The steps between fork and exec are
//! in [`child`] and [`root`].
//!
//! The host keeps its paths: `<sandbox-dir>/{vsock.sock,virtiofsd.sock,console.log}` are links
//! into the root. [`Jail::prepare`] makes the root and the cgroup, [`Jail::confine`] makes a
//! command run jailed, [`cgroup::remove_recorded`] (from the sandbox clean-up) removes the
//! cgroup; the root goes with the sandbox directory.

pub mod cgroup;
pub mod child;
pub mod credentials;
pub mod plan;
pub mod root;

#[cfg(test)]
mod tests;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cgroup::{CgroupError, CgroupLimits};
use child::ChildPlan;
use credentials::Credentials;
pub use plan::JailContents;
use plan::{JailPlan, PlanError};
use root::RootPlan;

/// Host memory a VM may use beyond its guest memory (VMM, virtiofsd, page cache), MiB.
pub const HOST_OVERHEAD_MIB: u64 = 128;
/// Present when the host kernel has transparent huge pages (for shared memory too).
pub const SHMEM_THP_PATH: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
/// Tasks the pod cgroup may hold (VMM threads, virtiofsd and its threads).
pub const POD_CGROUP_PIDS: u64 = 512;

/// How a VMM is jailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSettings {
    /// User id (not 0).
    pub uid: u32,
    /// Group id (not 0).
    pub gid: u32,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// RLIMIT_FSIZE, bytes.
    pub fsize_bytes: u64,
    /// Parent of the pod cgroups, relative to each hierarchy's root.
    pub cgroup_parent: PathBuf,
    /// Caps of the pod cgroup.
    pub limits: CgroupLimits,
    /// Size of the tmpfs the VMM keeps its guest RAM on ([`plan::RAM_IN_JAIL`], `huge=always`:
    /// 2 MiB host pages whatever the host's `shmem_enabled`), MiB; `None`: no such mount, the
    /// VMM uses a memfd.
    pub ram_tmpfs_mib: Option<u64>,
}

impl JailSettings {
    /// The settings for a VM of `vcpus` and `mem_mib` from the configuration's jail keys. The
    /// file size limit is at least the guest memory: the VMM's guest RAM is a memfd sized with
    /// ftruncate, which RLIMIT_FSIZE also limits.
    pub fn for_vm(config: &crate::config::Config, vcpus: u32, mem_mib: u64) -> JailSettings {
        JailSettings {
            uid: config.jail_uid,
            gid: config.jail_gid,
            nofile: config.jail_nofile,
            fsize_bytes: config.jail_fsize_mib.max(mem_mib) << 20,
            cgroup_parent: config.pod_cgroup_parent.clone(),
            limits: CgroupLimits {
                memory_bytes: (mem_mib + HOST_OVERHEAD_MIB) << 20,
                cpu_quota_us: (u64::from(vcpus) + 1) * cgroup::CPU_PERIOD_US,
                pids: POD_CGROUP_PIDS,
                priority: crate::sandbox::priority::BootPriority::Normal,
            },
            // A kernel without transparent huge pages refuses the huge= mount option.
            ram_tmpfs_mib: (config.guest_ram_huge_pages && Path::new(SHMEM_THP_PATH).exists())
                .then_some(mem_mib),
        }
    }
}

/// A jail that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// What goes into the jail could not be worked out.
    #[error("jail: {0}")]
    Plan(#[from] PlanError),
    /// The pod cgroup.
    #[error("jail: pod cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    /// A file system operation on the jail.
    #[error("jail: {action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The settings are unusable.
    #[error("jail: {0}")]
    Settings(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Io {
        action,
        path,
        source,
    }
}

impl JailContents {
    /// The contents for `vmm` (its libraries from `ldd` when it is dynamically linked; a
    /// static VMM needs none, and no `ldd`), `kernel` and the guest root file (initramfs or
    /// pmem image).
    pub fn for_vmm(
        vmm: &Path,
        kernel: &Path,
        guest_root: Option<&Path>,
        needs_tun: bool,
    ) -> Result<JailContents, JailError> {
        use std::io::Read;
        let mut head = Vec::with_capacity(4096);
        std::fs::File::open(vmm)
            .and_then(|f| f.take(4096).read_to_end(&mut head))
            .map_err(io_err("reading", vmm))?;
        let ldd_output = match plan::elf_has_interpreter(&head) {
            Some(false) => String::new(),
            _ => {
                let output = std::process::Command::new("ldd")
                    .arg(vmm)
                    .output()
                    .map_err(io_err("running ldd on", vmm))?;
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        Ok(JailContents {
            vmm: vmm.to_path_buf(),
            ldd_output,
            kernel: kernel.to_path_buf(),
            guest_root: guest_root.map(Path::to_path_buf),
            needs_tun,
        })
    }
}

/// A prepared jail: its root exists and its cgroup is made.
#[derive(Debug)]
pub struct Jail {
    plan: JailPlan,
    settings: JailSettings,
    cgroup_dirs: Vec<PathBuf>,
}

impl Jail {
    /// Makes the root of sandbox `id` in `sandbox_dir` (placeholders for the binds, /dev and
    /// /run, the console log, the host-side links) and its pod cgroup.
    pub fn prepare(
        settings: &JailSettings,
        id: &str,
        sandbox_dir: &Path,
        contents: &JailContents,
    ) -> Result<Jail, JailError> {
        if settings.uid == 0 || settings.gid == 0 {
            return Err(JailError::Settings(
                "jail_uid and jail_gid must not be 0".into(),
            ));
        }
        let plan = JailPlan::new(sandbox_dir, contents)?;
        for (i, bind) in plan.binds.iter().enumerate() {
            // The VMM binary (first) is executed; the rest is read (libraries are mapped).
            let need = if i == 0 { 0o1 } else { 0o4 };
            check_access(&bind.source, settings, need)?;
        }
        make_dir(&plan.root, 0o755)?;
        for dir in plan.directories() {
            make_dir(&dir, 0o755)?;
        }
        for bind in &plan.binds {
            let placeholder = plan.host_path(&bind.target);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o444)
                .open(&placeholder)
                .map_err(io_err("creating", &placeholder))?;
        }
        let run = plan.host_path(Path::new(plan::RUN_IN_JAIL));
        make_dir(&run, 0o700)?;
        chown(&run, settings)?;
        if settings.ram_tmpfs_mib.is_some() {
            // The mount point; the child mounts the tmpfs (owned by the jail user) over it.
            make_dir(&plan.host_path(Path::new(plan::RAM_IN_JAIL)), 0o700)?;
        }
        let console = plan.host_path(Path::new(plan::CONSOLE_IN_JAIL));
        std::fs::File::create(&console).map_err(io_err("creating", &console))?;
        std::fs::set_permissions(&console, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", &console))?;
        chown(&console, settings)?;
        for (link, target) in &plan.host_links {
            let _ = std::fs::remove_file(link);
            if target.starts_with(&run) {
                let _ = std::fs::remove_file(target);
            }
            let relative = target.strip_prefix(sandbox_dir).unwrap_or(target);
            std::os::unix::fs::symlink(relative, link).map_err(io_err("linking", link))?;
        }
        let layout = cgroup::host_layout()?;
        let cgroup_dirs = cgroup::create(
            &layout,
            &settings.cgroup_parent,
            id,
            &settings.limits,
            sandbox_dir,
        )?;
        Ok(Jail {
            plan,
            settings: settings.clone(),
            cgroup_dirs,
        })
    }

    /// The plan it was made from.
    pub fn plan(&self) -> &JailPlan {
        &self.plan
    }

    /// The guest RAM tmpfs inside the jail, when the settings ask for one (for `--mem-dir`).
    pub fn ram_dir(&self) -> Option<&'static Path> {
        self.settings
            .ram_tmpfs_mib
            .map(|_| Path::new(plan::RAM_IN_JAIL))
    }

    /// The pod cgroup directories.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroup_dirs
    }

    /// Where the host sees `inside` (an absolute path in the jail).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        self.plan.host_path(inside)
    }

    /// Makes `cmd` (whose program must be [`plan::VMM_IN_JAIL`] and whose paths are jail
    /// paths) run jailed, in the network namespace `netns` (a new, empty one if `None`). Spawn
    /// it inside [`Jail::spawn`], which gives it its PID namespace.
    pub fn confine(
        &self,
        cmd: &mut std::process::Command,
        netns: Option<&Path>,
    ) -> Result<(), JailError> {
        use std::os::unix::process::CommandExt;
        let binds: Vec<(&Path, &Path)> = self
            .plan
            .binds
            .iter()
            .map(|b| (b.source.as_path(), b.target.as_path()))
            .collect();
        let devices: Vec<&Path> = self.plan.devices.iter().map(PathBuf::as_path).collect();
        let root = RootPlan::new(
            &self.plan.root,
            &binds,
            &devices,
            self.settings.ram_tmpfs_mib,
            self.settings.uid,
            self.settings.gid,
        )
        .map_err(io_err("preparing the root", &self.plan.root))?;
        let netns = match netns {
            Some(path) => Some(OwnedFd::from(
                std::fs::File::open(path).map_err(io_err("opening", path))?,
            )),
            None => None,
        };
        let plan = ChildPlan {
            cgroup_procs: self.open_procs()?,
            netns,
            root,
            credentials: Credentials {
                uid: self.settings.uid,
                gid: self.settings.gid,
                nofile: self.settings.nofile,
                fsize: self.settings.fsize_bytes,
                last_cap: credentials::last_cap(),
            },
        };
        // SAFETY: the hook only makes async-signal-safe system calls on data prepared here
        // (see `child`).
        unsafe {
            cmd.pre_exec(move || plan.run());
        }
        Ok(())
    }

    /// Runs `spawn` (which spawns a command [`Jail::confine`] made) so that the process it
    /// starts is PID 1 of a new PID namespace and still this process's direct child.
    pub fn spawn<T: Send>(&self, spawn: impl FnOnce() -> T + Send) -> Result<T, JailError> {
        child::spawn_as_pid_namespace_init(spawn).map_err(io_err(
            "a new PID namespace for the VMM of",
            &self.plan.root,
        ))
    }

    /// Makes `cmd` start in the pod cgroup (virtiofsd: it keeps its own sandbox).
    pub fn join_cgroup(&self, cmd: &mut std::process::Command) -> Result<(), JailError> {
        use std::os::unix::process::CommandExt;
        let procs = self.open_procs()?;
        // SAFETY: write(2) to descriptors opened here.
        unsafe {
            cmd.pre_exec(move || {
                child::join_cgroups(&procs).map_err(|f| std::io::Error::from_raw_os_error(f.errno))
            });
        }
        Ok(())
    }

    /// Gives a socket another process made in the jail (virtiofsd's) to the jail user, so the
    /// VMM can connect to it.
    pub fn grant(&self, path: &Path) -> Result<(), JailError> {
        chown(path, &self.settings)
    }

    fn open_procs(&self) -> Result<Vec<OwnedFd>, JailError> {
        cgroup::procs_files(&self.cgroup_dirs)
            .iter()
            .map(|file| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(file)
                    .map(OwnedFd::from)
                    .map_err(io_err("opening", file))
            })
            .collect()
    }
}

/// Whether the jail user may access `path` with permission bits `need` (0o4 read, 0o1
/// execute) through its owner, group or other bits: a clear error before the VMM would fail
/// with EACCES inside the jail.
fn check_access(path: &Path, settings: &JailSettings, need: u32) -> Result<(), JailError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(io_err("reading", path))?;
    let mode = meta.mode();
    let granted = if meta.uid() == settings.uid {
        mode >> 6
    } else if meta.gid() == settings.gid {
        mode >> 3
    } else {
        mode
    };
    if granted & need == need {
        return Ok(());
    }
    Err(JailError::Settings(format!(
        "{} (mode {:o}, owner {}:{}) cannot be {} by the jail user {}:{}",
        path.display(),
        mode & 0o7777,
        meta.uid(),
        meta.gid(),
        if need == 0o1 { "executed" } else { "read" },
        settings.uid,
        settings.gid
    )))
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), JailError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating", dir)(e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", dir))
}

fn chown(path: &Path, settings: &JailSettings) -> Result<(), JailError> {
    std::os::unix::fs::lchown(path, Some(settings.uid), Some(settings.gid))
        .map_err(io_err("chown", path))
}
