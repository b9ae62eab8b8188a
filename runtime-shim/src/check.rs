//! `hull check`: what this machine offers for Hull sandboxes.

use std::path::Path;

use crate::config::{resolve_binary, Config};

/// One finding of `hull check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub what: &'static str,
    /// True if it is usable.
    pub ok: bool,
    /// Details.
    pub detail: String,
}

/// Is this host's KVM the PVM flavour (runs only PVM-aware guests, not a stock Linux kernel)?
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Runs every check against `config`.
pub fn run_checks(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let kvm = Path::new("/dev/kvm").exists();
    findings.push(Finding {
        what: "kvm",
        ok: kvm && !kvm_is_pvm(),
        detail: match (kvm, kvm_is_pvm()) {
            (false, _) => "/dev/kvm missing".into(),
            (true, true) => "/dev/kvm is PVM (kvm_pvm): Linux guests do not boot here; use the \
                             nested lab or sandbox.mode = \"host-agent\" for tests"
                .into(),
            (true, false) => "/dev/kvm present".into(),
        },
    });
    for (what, path) in [("kernel", &config.kernel), ("initramfs", &config.initramfs)] {
        findings.push(Finding {
            what,
            ok: path.is_file(),
            detail: path.display().to_string(),
        });
    }
    let vmm = resolve_binary(&config.vmm);
    findings.push(Finding {
        what: "vmm",
        ok: vmm.is_some(),
        detail: vmm.map_or(format!("{:?} not found", config.vmm), |p| {
            p.display().to_string()
        }),
    });
    let virtiofsd = if config.virtiofsd.as_os_str().is_empty() {
        crate::sandbox::virtiofsd::find_virtiofsd()
    } else {
        Some(config.virtiofsd.clone()).filter(|p| p.is_file())
    };
    findings.push(Finding {
        what: "virtiofsd",
        ok: virtiofsd.is_some(),
        detail: virtiofsd.map_or("not found".into(), |p| p.display().to_string()),
    });
    findings
}
