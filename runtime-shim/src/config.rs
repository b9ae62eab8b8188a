//! The shim's configuration file, `/etc/hull/config.toml`.
//!
//! Where it is read from, first match wins: the `ConfigPath` of containerd's runtime options
//! (`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull.options] ConfigPath = ...`),
//! then the `HULL_CONFIG` environment variable, then [`DEFAULT_CONFIG_PATH`]. A missing file at
//! the default path means "all defaults"; a missing file that was named explicitly is an error.
//!
//! Every key is optional. [`DEFAULT_CONFIG_TOML`] lists every key with its default and what it
//! means; `hull install` writes it as `/etc/hull/config.toml` ([`config_file_text`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The configuration file read when nothing else is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hull/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HULL_CONFIG";

/// Every key of the configuration file with its default value and what it means: the reference,
/// and what `hull install` writes (paths moved under its prefix by [`config_file_text`]). A unit
/// test parses it back and checks it equals [`Config::default`] and names every field.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Hull configuration (read by containerd-shim-hull-v2 and `hull`).
# Every key is shown with its default value; change what you need.

# Guest kernel (ELF vmlinux).
kernel = "/usr/share/hull/vmlinux"
# Guest root image (`make guest-image`): a virtio-pmem device the guest mounts read-only with
# DAX, so the agent runs from the host's page cache of this file, one copy shared by every VM,
# instead of from a copy in each VM's RAM. Needs a guest kernel with virtio-pmem and fs-DAX
# (ours has them). Empty: boot from `initramfs` instead.
image = "/usr/share/hull/rootfs.img"
# Guest initramfs (hull-agent is its PID 1), used when `image` is empty.
initramfs = "/usr/share/hull/initramfs.cpio"
# hull-vmm: a path, or a name looked for next to the shim, then on $PATH.
vmm = "hull-vmm"
# The smallest VM: a pod without limits gets this many vCPUs and MiB.
vcpus = 1
mem_mib = 256
# vCPUs added to a pod's CPU limit (quota/period) to size its VM.
pod_vcpu_overhead = 0
# MiB added to a pod's memory limit (guest kernel, agent) to size its VM.
pod_mem_overhead_mib = 128
# Appended to hull-vmm's default kernel command line.
kernel_params = ""
# virtiofsd binary; empty: the shim searches $HULL_VIRTIOFSD, $PATH, ~/.cargo/bin, ...
virtiofsd = ""
# Free page reporting: the guest hands memory it freed back to hull-vmm, which releases it on
# the host (a virtio-balloon device that is never inflated). Lowers an idle pod's host memory.
free_page_reporting = true
# Jailed VMMs keep guest RAM on a tmpfs of their own mounted huge=always, so KVM maps the guest in
# 2 MiB host pages whatever the host's shmem_enabled says: fewer nested page faults, a faster
# boot; free page reporting still hands freed guest memory back (in 256 KiB blocks). false: a
# memfd, whose page size the host's shmem_enabled decides (4 KiB by default).
guest_ram_huge_pages = true
# Debug logs into containerd's log.
debug = false
# Debug console (`hull console <sandbox>`): a root shell in the guest on vsock port 1027, for
# sandboxes started from now on. Needs a debug guest image (`make guest DEBUG_IMAGE=1`); the
# default image has no shell. Never on in production.
debug_console = false
# VM mode: jail hull-vmm (own mount/pid/ipc/uts namespaces, pod netns, a root holding only
# what it needs, an unprivileged uid/gid without capabilities, rlimits, the pod cgroup).
# Turn off only to debug; `hull check` warns when it is off.
jail = true
# The jailed VMM's user and group (not 0); best a pair no other process on the host uses.
jail_uid = 65534
jail_gid = 65534
# The jailed VMM's RLIMIT_NOFILE.
jail_nofile = 4096
# The jailed VMM's RLIMIT_FSIZE in MiB (raised to the VM's memory: guest RAM is a memfd).
jail_fsize_mib = 64
# Parent of the pod cgroups (hull-vmm + virtiofsd), relative to each cgroup hierarchy's root.
pod_cgroup_parent = "hull-pods"

[sandbox]
# "vm" (one microVM per pod), or "host-agent" (TESTS ONLY: no isolation at all).
mode = "vm"
# Per-sandbox state: <run_dir>/<sandbox-id>/{shared,vsock.sock,agent.log,...}
run_dir = "/run/hull"
# host-agent mode: the agent binary (a path, or a name like vmm).
agent = "hull-agent"
# Seconds to keep trying to reach the agent while the VM boots (1..=600).
boot_timeout_secs = 30
"#;

/// [`DEFAULT_CONFIG_TOML`] for an installation under `prefix`: the guest image paths
/// (`/usr/share/hull/...`) are moved under it. With prefix `/` the text is unchanged.
pub fn config_file_text(prefix: &Path) -> String {
    let share = prefix.join("usr/share/hull");
    DEFAULT_CONFIG_TOML.replace("\"/usr/share/hull/", &format!("\"{}/", share.display()))
}

/// How a sandbox is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// One microVM per pod: virtiofsd + hull-vmm, the agent inside the guest.
    #[default]
    Vm,
    /// Test-only: `hull-agent` runs on the host. Gives NO isolation.
    HostAgent,
}

/// The `[sandbox]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// VM or host agent.
    pub mode: SandboxMode,
    /// Directory holding one sub-directory per sandbox.
    pub run_dir: PathBuf,
    /// The agent binary for host-agent mode.
    pub agent: PathBuf,
    /// How long to keep trying to reach the agent after starting the sandbox.
    pub boot_timeout_secs: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Vm,
            run_dir: PathBuf::from("/run/hull"),
            agent: PathBuf::from("hull-agent"),
            boot_timeout_secs: 30,
        }
    }
}

impl SandboxConfig {
    /// [`SandboxConfig::boot_timeout_secs`] as a duration.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout_secs)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Guest kernel (ELF vmlinux).
    pub kernel: PathBuf,
    /// Guest initramfs (hull-agent is its PID 1), used when `image` is empty.
    pub initramfs: PathBuf,
    /// Guest root image for virtio-pmem (the default); empty = boot from the initramfs.
    pub image: PathBuf,
    /// hull-vmm binary.
    pub vmm: PathBuf,
    /// vCPUs per sandbox VM.
    pub vcpus: u8,
    /// Guest memory per sandbox VM, MiB.
    pub mem_mib: u64,
    /// vCPUs added to a pod's CPU limit to size its VM.
    pub pod_vcpu_overhead: u8,
    /// MiB added to a pod's memory limit to size its VM.
    pub pod_mem_overhead_mib: u64,
    /// Extra kernel command line parameters.
    pub kernel_params: String,
    /// virtiofsd binary; empty = the shim's search (see `sandbox::virtiofsd`).
    pub virtiofsd: PathBuf,
    /// Free page reporting (hull-vmm `--free-page-reporting`).
    pub free_page_reporting: bool,
    /// Jailed VMMs: guest RAM on a `huge=always` tmpfs in the jail (hull-vmm `--mem-dir`).
    pub guest_ram_huge_pages: bool,
    /// Debug logging.
    pub debug: bool,
    /// Open the guest's debug console (`hull console`) in new sandboxes.
    pub debug_console: bool,
    /// VM mode: jail hull-vmm (see `sandbox::jail`).
    pub jail: bool,
    /// The jailed VMM's uid.
    pub jail_uid: u32,
    /// The jailed VMM's gid.
    pub jail_gid: u32,
    /// The jailed VMM's RLIMIT_NOFILE.
    pub jail_nofile: u64,
    /// The jailed VMM's RLIMIT_FSIZE, MiB (at least the VM's memory is used).
    pub jail_fsize_mib: u64,
    /// Parent of the pod cgroups, relative to each hierarchy's root.
    pub pod_cgroup_parent: PathBuf,
    /// The `[sandbox]` table.
    pub sandbox: SandboxConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kernel: PathBuf::from("/usr/share/hull/vmlinux"),
            initramfs: PathBuf::from("/usr/share/hull/initramfs.cpio"),
            image: PathBuf::from("/usr/share/hull/rootfs.img"),
            vmm: PathBuf::from("hull-vmm"),
            vcpus: 1,
            mem_mib: 256,
            pod_vcpu_overhead: 0,
            pod_mem_overhead_mib: 128,
            kernel_params: String::new(),
            virtiofsd: PathBuf::new(),
            free_page_reporting: true,
            guest_ram_huge_pages: true,
            debug: false,
            debug_console: false,
            jail: true,
            jail_uid: 65534,
            jail_gid: 65534,
            jail_nofile: 4096,
            jail_fsize_mib: 64,
            pod_cgroup_parent: PathBuf::from("hull-pods"),
            sandbox: SandboxConfig::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading hull config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing hull config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("hull config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Something the sandbox needs is not on this machine.
    #[error("hull cannot start a sandbox: {0}")]
    Missing(String),
}

impl Config {
    /// How pod VMs are sized from this configuration.
    pub fn sizing_policy(&self) -> crate::cri::sizing::SizingPolicy {
        crate::cri::sizing::SizingPolicy {
            floor: crate::cri::sizing::VmSize {
                vcpus: self.vcpus as u32,
                mem_mib: self.mem_mib,
            },
            vcpu_overhead: self.pod_vcpu_overhead as u32,
            mem_overhead_mib: self.pod_mem_overhead_mib,
        }
    }

    /// Parses and validates the TOML text of a configuration file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !(1..=32).contains(&self.vcpus) {
            return Err(invalid(format!("vcpus = {} (must be 1..=32)", self.vcpus)));
        }
        if !(64..=65536).contains(&self.mem_mib) {
            return Err(invalid(format!(
                "mem_mib = {} (must be 64..=65536)",
                self.mem_mib
            )));
        }
        if self.pod_vcpu_overhead > 32 || self.pod_mem_overhead_mib > 65536 {
            return Err(invalid(format!(
                "pod_vcpu_overhead = {} / pod_mem_overhead_mib = {} (at most 32 / 65536)",
                self.pod_vcpu_overhead, self.pod_mem_overhead_mib
            )));
        }
        if !self.sandbox.run_dir.is_absolute() {
            return Err(invalid(format!(
                "sandbox.run_dir = {:?} (must be an absolute path)",
                self.sandbox.run_dir
            )));
        }
        if self.jail_uid == 0 || self.jail_gid == 0 {
            return Err(invalid(format!(
                "jail_uid = {} / jail_gid = {} (must not be 0: the jailed VMM runs unprivileged)",
                self.jail_uid, self.jail_gid
            )));
        }
        if !(64..=1 << 20).contains(&self.jail_nofile)
            || !(1..=1 << 20).contains(&self.jail_fsize_mib)
        {
            return Err(invalid(format!(
                "jail_nofile = {} / jail_fsize_mib = {} (must be 64..=1048576 / 1..=1048576)",
                self.jail_nofile, self.jail_fsize_mib
            )));
        }
        let plain = |c: std::path::Component| match c {
            std::path::Component::Normal(name) => name.to_str().is_some_and(|n| {
                n.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            }),
            _ => false,
        };
        if self.pod_cgroup_parent.as_os_str().is_empty()
            || !self.pod_cgroup_parent.components().all(plain)
        {
            return Err(invalid(format!(
                "pod_cgroup_parent = {:?} (must be a relative path of [A-Za-z0-9._-] names)",
                self.pod_cgroup_parent
            )));
        }
        if self.sandbox.boot_timeout_secs == 0 || self.sandbox.boot_timeout_secs > 600 {
            return Err(invalid(format!(
                "sandbox.boot_timeout_secs = {} (must be 1..=600)",
                self.sandbox.boot_timeout_secs
            )));
        }
        Ok(())
    }

    /// Loads the configuration: `explicit_path` (runtime options' ConfigPath) if given and not
    /// empty, else `$HULL_CONFIG`, else [`DEFAULT_CONFIG_PATH`] (defaults if that file is absent).
    pub fn load(explicit_path: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        let (path, must_exist) = match (
            explicit_path.filter(|p| !p.as_os_str().is_empty()),
            from_env,
        ) {
            (Some(path), _) => (path.to_path_buf(), true),
            (None, Some(env)) => (PathBuf::from(env), true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Checks that what this mode needs exists: for VM mode `/dev/kvm`, the kernel, the
    /// initramfs and the VMM binary; for host-agent mode the agent binary.
    pub fn check_sandbox_prerequisites(&self) -> Result<(), ConfigError> {
        match self.sandbox.mode {
            SandboxMode::HostAgent => {
                resolve_binary(&self.sandbox.agent).ok_or_else(|| {
                    ConfigError::Missing(format!(
                        "host-agent mode: agent binary {:?} not found (set sandbox.agent)",
                        self.sandbox.agent
                    ))
                })?;
            }
            SandboxMode::Vm => {
                if !Path::new("/dev/kvm").exists() {
                    return Err(ConfigError::Missing(
                        "/dev/kvm does not exist (load kvm_intel/kvm_amd or run on a host with KVM)"
                            .into(),
                    ));
                }
                let root = self.guest_root();
                for (what, path) in [("kernel", self.kernel.as_path()), (root.key(), root.path())] {
                    if !path.is_file() {
                        return Err(ConfigError::Missing(format!(
                            "guest {what} {} not found (build it with `make guest` and set `{what}` \
                             in the hull config)",
                            path.display()
                        )));
                    }
                }
                resolve_binary(&self.vmm).ok_or_else(|| {
                    ConfigError::Missing(format!("VMM binary {:?} not found (set vmm)", self.vmm))
                })?;
            }
        }
        Ok(())
    }
}

/// What the guest's root file system is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRoot<'a> {
    /// An initramfs the kernel unpacks into RAM (`--initrd`).
    Initramfs(&'a Path),
    /// A read-only image on a virtio-pmem device, mounted with DAX (`--pmem`).
    PmemImage(&'a Path),
}

/// How the guest mounts a pmem image as its root: ext4 with DAX, read-only, the agent as init.
pub const PMEM_ROOT_PARAMS: &str = "root=/dev/pmem0 rootfstype=ext4 rootflags=dax ro init=/init";

impl<'a> GuestRoot<'a> {
    /// The file.
    pub fn path(&self) -> &'a Path {
        match self {
            GuestRoot::Initramfs(p) | GuestRoot::PmemImage(p) => p,
        }
    }

    /// The config key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            GuestRoot::Initramfs(_) => "initramfs",
            GuestRoot::PmemImage(_) => "image",
        }
    }

    /// hull-vmm's flag that takes it.
    pub fn vmm_flag(&self) -> &'static str {
        match self {
            GuestRoot::Initramfs(_) => "--initrd",
            GuestRoot::PmemImage(_) => "--pmem",
        }
    }

    /// What the kernel command line needs to boot from it.
    pub fn kernel_params(&self) -> Option<&'static str> {
        match self {
            GuestRoot::Initramfs(_) => None,
            GuestRoot::PmemImage(_) => Some(PMEM_ROOT_PARAMS),
        }
    }
}

impl Config {
    /// The guest root this configuration boots: the pmem image when `image` is set, else the
    /// initramfs.
    pub fn guest_root(&self) -> GuestRoot<'_> {
        if self.image.as_os_str().is_empty() {
            GuestRoot::Initramfs(&self.initramfs)
        } else {
            GuestRoot::PmemImage(&self.image)
        }
    }
}

/// Resolves a binary named in the config: a path containing `/` is used as is (if it is a file);
/// a bare name is looked for next to the running executable, then on `$PATH`.
pub fn resolve_binary(name: &Path) -> Option<PathBuf> {
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.components().count() > 1 || name.is_absolute() {
        return name.is_file().then(|| name.to_path_buf());
    }
    let beside_self = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside_self.into_iter().chain(on_path).find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
