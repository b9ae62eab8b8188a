//! `hull check`: will a pod run here, and if not, why. Each finding is a pure function of what
//! was read (`check/findings.rs`); this module only reads the machine and the installation
//! under a prefix (`/` by default).

pub mod findings;
pub mod image;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Config, GuestRoot};
use crate::install::{containerd, Layout};

/// How a finding affects the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Usable.
    Ok,
    /// Worth knowing; does not stop a pod.
    Warn,
    /// A pod will not run until this is fixed.
    Fail,
}

impl Status {
    /// The word shown.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding of `hull check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub what: &'static str,
    /// The verdict.
    pub status: Status,
    /// Details, and what to do.
    pub detail: String,
}

impl Finding {
    /// A finding.
    pub fn new(what: &'static str, status: Status, detail: impl Into<String>) -> Finding {
        Finding {
            what,
            status,
            detail: detail.into(),
        }
    }

    /// Whether it does not stop a pod.
    pub fn ok(&self) -> bool {
        self.status != Status::Fail
    }
}

/// The findings as one screen of text.
pub fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("{:<11} {:<4} {}\n", f.what, f.status.label(), f.detail))
        .collect()
}

/// Is this host's KVM the PVM flavour (runs only PVM-aware guests, not a stock Linux kernel)?
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The hull config `hull check` reads: `explicit`, else the installed one under `prefix` (when
/// `prefix` is not `/` or that file exists), else the usual search ([`Config::load`]).
pub fn load_config(
    explicit: Option<&Path>,
    prefix: &Path,
) -> Result<Config, crate::config::ConfigError> {
    let installed = Layout::new(prefix).config();
    match explicit {
        Some(path) => Config::load(Some(path)),
        None if installed.exists() => Config::load(Some(&installed)),
        None => Config::load(None),
    }
}

/// Finds a binary named in the config as the installed shim would: a path is used as is; a
/// bare name is looked for next to the shim (`<prefix>/usr/local/bin`), then on `$PATH`.
fn resolve(name: &Path, bin_dir: &Path) -> Option<PathBuf> {
    if name.components().count() == 1 && !name.is_absolute() {
        let beside = bin_dir.join(name);
        if beside.is_file() {
            return Some(beside);
        }
    }
    crate::config::resolve_binary(name)
}

fn version_output(path: &Path) -> Result<String, String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("--version exited with {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every check for `config` and the installation under `prefix`.
pub fn run_checks(config: &Config, prefix: &Path) -> Vec<Finding> {
    let layout = Layout::new(prefix);
    let mut out = Vec::new();

    let dev_kvm = Path::new("/dev/kvm");
    let kind = findings::kvm_kind(
        dev_kvm.exists(),
        kvm_is_pvm(),
        &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
    );
    let access = nix::unistd::access(
        dev_kvm,
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .map_err(|e| e.desc().to_string());
    let perms = std::fs::metadata(dev_kvm).ok().map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        (m.mode(), m.uid(), m.gid())
    });
    out.push(findings::kvm(kind, config.sandbox.mode, access, perms));

    let shim = resolve(Path::new("containerd-shim-hull-v2"), &layout.bin_dir());
    out.push(match &shim {
        Some(p) => Finding::new("shim", Status::Ok, p.display().to_string()),
        None => Finding::new(
            "shim",
            Status::Fail,
            "containerd-shim-hull-v2 not found (containerd looks for it on its $PATH): `hull install`",
        ),
    });
    out.push(findings::image_file(
        "kernel",
        &config.kernel,
        config.kernel.is_file(),
    ));
    let root = config.guest_root();
    out.push(findings::image_file(
        root.key(),
        root.path(),
        root.path().is_file(),
    ));
    let bytes = std::fs::read(root.path()).map_err(|e| e.to_string());
    let bytes = bytes.as_deref().map_err(Clone::clone);
    out.push(match root {
        GuestRoot::Initramfs(_) => findings::agent_in_image(bytes, hull_proto::API_VERSION),
        GuestRoot::PmemImage(_) => findings::agent_in_pmem_image(bytes, hull_proto::API_VERSION),
    });

    let vmm = resolve(&config.vmm, &layout.bin_dir());
    out.push(findings::binary_version(
        "hull-vmm",
        vmm.as_deref(),
        vmm.as_deref()
            .map_or(Err("not found".into()), version_output),
        Some(env!("CARGO_PKG_VERSION")),
    ));
    let virtiofsd = if config.virtiofsd.as_os_str().is_empty() {
        crate::sandbox::virtiofsd::find_virtiofsd()
    } else {
        Some(config.virtiofsd.clone()).filter(|p| p.is_file())
    };
    out.push(findings::binary_version(
        "virtiofsd",
        virtiofsd.as_deref(),
        virtiofsd
            .as_deref()
            .map_or(Err("not found".into()), version_output),
        None,
    ));

    let devices: Vec<(&str, bool)> = ["/dev/net/tun", "/dev/vhost-vsock", "/dev/vhost-net"]
        .iter()
        .map(|d| (*d, Path::new(d).exists()))
        .collect();
    out.push(findings::devices(&devices));
    out.push(findings::cgroup(
        &std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(),
    ));

    out.push(findings::guest_ram_pages(
        std::fs::read_to_string(crate::sandbox::jail::SHMEM_THP_PATH)
            .ok()
            .as_deref(),
        config.jail && config.guest_ram_huge_pages,
    ));

    let cgroup_layout = crate::sandbox::jail::cgroup::host_layout().ok();
    out.push(findings::jail(
        config.sandbox.mode,
        config.jail,
        config.jail_uid,
        config.jail_gid,
        &config.pod_cgroup_parent,
        cgroup_layout.as_ref().map(|l| l.version()),
    ));

    out.push(findings::containerd_version(version_output(Path::new(
        "containerd",
    ))));
    let main = layout.containerd_main();
    let files = containerd::load_configs(&main);
    out.push(findings::runtime_configured(
        &main,
        &files,
        &layout.config(),
    ));

    out.push(findings::memory(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        config.mem_mib,
    ));
    out
}

#[cfg(test)]
mod tests;
