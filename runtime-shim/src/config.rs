//! The shim's configuration file, `/etc/hull/config.toml`.
//!
//! Where it is read from, first match wins: the `ConfigPath` of containerd's runtime options
//! (`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull.options] ConfigPath = ...`),
//! then the `HULL_CONFIG` environment variable, then [`DEFAULT_CONFIG_PATH`]. A missing file at
//! the default path means "all defaults"; a missing file that was named explicitly is an error.
//!
//! Every key is optional. The defaults:
//!
//! ```toml
//! kernel = "/usr/share/hull/vmlinux"          # guest kernel (ELF vmlinux)
//! initramfs = "/usr/share/hull/initramfs.cpio" # guest initramfs with hull-agent as PID 1
//! vmm = "hull-vmm"                             # path, or a name searched next to the shim, then $PATH
//! vcpus = 1                                    # the smallest VM: a pod without limits gets this
//! mem_mib = 256
//! pod_vcpu_overhead = 0                        # vCPUs added to a pod's CPU limit (quota/period)
//! pod_mem_overhead_mib = 128                   # MiB added to a pod's memory limit (guest kernel, agent)
//! kernel_params = ""                           # appended to hull-vmm's default command line
//! virtiofsd = ""                               # empty: the shim's search ($HULL_VIRTIOFSD, $PATH, ~/.cargo/bin, ...)
//! debug = false                                # debug logs into containerd's log
//!
//! [sandbox]
//! mode = "vm"                 # "vm", or "host-agent" (TESTS ONLY: no isolation at all)
//! run_dir = "/run/hull"       # per-sandbox state: <run_dir>/<sandbox-id>/{shared,vsock.sock,...}
//! agent = "hull-agent"        # host-agent mode: the agent binary (path or name, like vmm)
//! boot_timeout_secs = 30      # how long to retry reaching the agent while the VM boots
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration file read when nothing else is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hull/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HULL_CONFIG";

/// How a sandbox is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// One microVM per pod: virtiofsd + hull-vmm, the agent inside the guest.
    #[default]
    Vm,
    /// Test-only: `hull-agent` runs on the host. Gives NO isolation.
    HostAgent,
}

/// The `[sandbox]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Guest kernel (ELF vmlinux).
    pub kernel: PathBuf,
    /// Guest initramfs (hull-agent is its PID 1).
    pub initramfs: PathBuf,
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
    /// Debug logging.
    pub debug: bool,
    /// The `[sandbox]` table.
    pub sandbox: SandboxConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kernel: PathBuf::from("/usr/share/hull/vmlinux"),
            initramfs: PathBuf::from("/usr/share/hull/initramfs.cpio"),
            vmm: PathBuf::from("hull-vmm"),
            vcpus: 1,
            mem_mib: 256,
            pod_vcpu_overhead: 0,
            pod_mem_overhead_mib: 128,
            kernel_params: String::new(),
            virtiofsd: PathBuf::new(),
            debug: false,
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
                for (what, path) in [("kernel", &self.kernel), ("initramfs", &self.initramfs)] {
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
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.sandbox.mode, SandboxMode::Vm);
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.mem_mib, 256);
        assert_eq!(config.sandbox.run_dir, Path::new("/run/hull"));
    }

    #[test]
    fn full_file_is_read() {
        let text = r#"
            kernel = "/k/vmlinux"
            initramfs = "/k/initramfs.cpio"
            vmm = "/bin/hull-vmm"
            vcpus = 2
            mem_mib = 512
            kernel_params = "quiet"
            virtiofsd = "/usr/libexec/virtiofsd"
            debug = true
            [sandbox]
            mode = "host-agent"
            run_dir = "/tmp/hull"
            agent = "/bin/hull-agent"
            boot_timeout_secs = 7
        "#;
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(config.kernel, Path::new("/k/vmlinux"));
        assert_eq!(config.vcpus, 2);
        assert_eq!(config.mem_mib, 512);
        assert!(config.debug);
        assert_eq!(config.sandbox.mode, SandboxMode::HostAgent);
        assert_eq!(config.sandbox.run_dir, Path::new("/tmp/hull"));
        assert_eq!(config.sandbox.boot_timeout(), Duration::from_secs(7));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_key_named() {
        let err = Config::parse("vcpu = 2", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("vcpu"), "{err}");
        let err =
            Config::parse("[sandbox]\nmode = \"container\"", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("container"), "{err}");
        let err = Config::parse("vcpus = 0", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("vcpus = 0"), "{err}");
        let err = Config::parse("mem_mib = 1", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("mem_mib"), "{err}");
        let err = Config::parse("[sandbox]\nrun_dir = \"rel\"", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(Some(&dir.path().join("absent.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn explicit_file_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "mem_mib = 1024\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().mem_mib, 1024);
    }

    #[test]
    fn missing_guest_image_is_named() {
        let config = Config {
            kernel: PathBuf::from("/nonexistent/vmlinux"),
            ..Config::default()
        };
        let err = config.check_sandbox_prerequisites().unwrap_err();
        let text = err.to_string();
        // Either KVM is missing on this machine, or the kernel is named.
        assert!(
            text.contains("/dev/kvm") || text.contains("/nonexistent/vmlinux"),
            "{text}"
        );
    }

    #[test]
    fn binaries_resolve_by_path_and_name() {
        assert_eq!(
            resolve_binary(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve_binary(Path::new("/nonexistent/x")), None);
        assert!(resolve_binary(Path::new("sh")).is_some());
        assert_eq!(resolve_binary(Path::new("")), None);
    }
}
