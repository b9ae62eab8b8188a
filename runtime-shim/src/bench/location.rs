//! Where a bench ran: the kind of KVM of the host, the nested lab, and above all whether hull
//! ran its pods in VMs or behind a host agent (no VM, no isolation), so that a host-agent
//! number is never taken for a VM number.

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, SandboxMode};

/// What every table and the JSON say about a host-agent run.
pub const HOST_AGENT_LABEL: &str = "host-agent mode (no VM)";

/// Where the bench ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// `host-agent`, `vm-real-kvm`, `vm-nested-lab` or `vm-pvm`.
    pub kind: String,
    /// Whether hull's pods were VMs.
    pub vm: bool,
    /// hull's sandbox mode from its config (`host-agent` or `vm`).
    pub hull_mode: String,
    /// The host: "PVM host (/sys/module/kvm_pvm)", "real KVM", "nested lab (L1)", "no /dev/kvm".
    pub host: String,
    /// The words every table carries.
    pub label: String,
}

/// The kind of host, as the bench can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// `/sys/module/kvm_pvm` is there: KVM is PVM (a Linux guest does not run).
    Pvm,
    /// `/dev/kvm` from a hardware KVM module.
    RealKvm,
    /// No `/dev/kvm`.
    NoKvm,
}

impl HostKind {
    /// This machine's kind (from `root`, normally `/`).
    pub fn detect(root: &Path) -> HostKind {
        if root.join("sys/module/kvm_pvm").exists() {
            HostKind::Pvm
        } else if root.join("dev/kvm").exists() {
            HostKind::RealKvm
        } else {
            HostKind::NoKvm
        }
    }
}

/// Works out the location from hull's mode, the host kind and whether the lab said so
/// (`--where lab` or `HULL_BENCH_WHERE=lab`).
pub fn locate(mode: SandboxMode, host: HostKind, in_lab: bool) -> Location {
    let host_words = if in_lab {
        "nested lab (L1: real KVM inside QEMU TCG)"
    } else {
        match host {
            HostKind::Pvm => "PVM host (/sys/module/kvm_pvm)",
            HostKind::RealKvm => "real KVM host",
            HostKind::NoKvm => "host without /dev/kvm",
        }
    };
    match mode {
        SandboxMode::HostAgent => Location {
            kind: "host-agent".into(),
            vm: false,
            hull_mode: "host-agent".into(),
            host: host_words.into(),
            label: format!("{HOST_AGENT_LABEL}, {host_words}"),
        },
        SandboxMode::Vm => {
            let kind = if in_lab {
                "vm-nested-lab"
            } else if host == HostKind::Pvm {
                "vm-pvm"
            } else {
                "vm-real-kvm"
            };
            Location {
                kind: kind.into(),
                vm: true,
                hull_mode: "vm".into(),
                host: host_words.into(),
                label: format!("VM mode, {host_words}"),
            }
        }
    }
}

/// The location of this run: hull's config (`config`), this host, `where_flag`/the lab's env.
pub fn detect(config: &Config, where_flag: Option<&str>) -> Location {
    let env = std::env::var("HULL_BENCH_WHERE").unwrap_or_default();
    let in_lab = where_flag == Some("lab") || env == "lab";
    locate(
        config.sandbox.mode,
        HostKind::detect(Path::new("/")),
        in_lab,
    )
}
