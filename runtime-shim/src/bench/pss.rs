//! Host memory of one container: the PSS (/proc/<pid>/smaps_rollup) of its shim and every
//! process below it — for hull the VMM (with the guest memory it touched), virtiofsd, or the
//! host agent and its containers; for runc the container.

use std::collections::BTreeMap;

pub use crate::proc_tree::{parse_pss_kib, with_descendants};

/// The PSS of a container's processes, in KiB, by component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMemory {
    /// KiB by component: shim, hull-vmm, virtiofsd, hull-agent, container.
    pub by_component: BTreeMap<&'static str, u64>,
}

impl PodMemory {
    /// The sum over components.
    pub fn total_kib(&self) -> u64 {
        self.by_component.values().sum()
    }
}

/// The shim daemon serving container `id` in `namespace`: a `containerd-shim-*` process whose
/// arguments hold `-namespace <namespace>` and `-id <id>` and no action (`start`, `delete`).
pub fn find_shim(namespace: &str, id: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if is_shim_of(&args, namespace, id) {
            return Some(pid);
        }
    }
    None
}

/// Whether `args` are a shim daemon's for `id` in `namespace`.
pub fn is_shim_of(args: &[String], namespace: &str, id: &str) -> bool {
    let Some(program) = args.first() else {
        return false;
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    if !name.starts_with("containerd-shim-") {
        return false;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let action = args.last().map(String::as_str);
    value("-id") == Some(id)
        && value("-namespace") == Some(namespace)
        && !matches!(action, Some("start" | "delete"))
}

/// The component a process of a pod is, from its command name.
pub fn component(comm: &str) -> &'static str {
    match comm.trim() {
        c if c.starts_with("containerd-shim") => "shim",
        "hull-vmm" => "hull-vmm",
        c if c.starts_with("virtiofsd") => "virtiofsd",
        "hull-agent" => "hull-agent",
        _ => "container",
    }
}

/// The PSS of the shim `shim_pid` and everything below it, by component.
pub fn pod_memory(shim_pid: u32) -> PodMemory {
    let mut memory = PodMemory::default();
    for pid in with_descendants(shim_pid) {
        let pss = crate::proc_tree::pss_kib(pid);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        *memory.by_component.entry(component(&comm)).or_default() += pss;
    }
    memory
}
