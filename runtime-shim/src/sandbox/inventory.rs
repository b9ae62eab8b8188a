//! What an operator sees of the sandboxes on this host (`hull ps`, `hull logs`): read from the
//! run directory alone, so it works whichever shim owns a sandbox, and never trusts what the
//! guest could write (the shared directory is only listed, by name).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::processes::{read_pids_file, ProcessRecord};
use super::SandboxPaths;
use crate::proc_tree::{pss_kib, with_descendants};
use crate::shared_dir::SharedDir;

/// File in the sandbox directory recording how the sandbox was started.
pub const INFO_FILE: &str = "info";
/// The mode name [`write_info`] records for a sandbox whose agent runs on the host.
pub const HOST_AGENT_MODE: &str = "host-agent";

/// One sandbox as `hull ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSummary {
    /// Its id.
    pub id: String,
    /// "vm" or "host-agent".
    pub mode: String,
    /// vCPUs and MiB of its VM (as started).
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// Container ids (the entries of its shared directory).
    pub containers: Vec<String>,
    /// Its host processes that still run, by name.
    pub processes: Vec<(String, u32)>,
    /// PSS of those processes and their descendants, KiB.
    pub pss_kib: u64,
    /// Since the sandbox started.
    pub uptime: Option<Duration>,
}

/// Writes the info file: "mode vcpus mem_mib".
pub fn write_info(dir: &Path, mode: &str, vcpus: u32, mem_mib: u64) -> std::io::Result<()> {
    std::fs::write(dir.join(INFO_FILE), format!("{mode} {vcpus} {mem_mib}\n"))
}

/// The mode recorded in the info file of sandbox directory `dir` ("vm" or
/// [`HOST_AGENT_MODE`]), if there is one.
pub fn recorded_mode(dir: &Path) -> Option<String> {
    let (mode, _, _) = read_info(dir);
    (mode != "?").then_some(mode)
}

/// The guest memory (MiB) recorded in the info file of sandbox directory `dir`, if there is one.
pub fn recorded_mem_mib(dir: &Path) -> Option<u64> {
    let (_, _, mem_mib) = read_info(dir);
    (mem_mib > 0).then_some(mem_mib)
}

fn read_info(dir: &Path) -> (String, u32, u64) {
    let text = std::fs::read_to_string(dir.join(INFO_FILE)).unwrap_or_default();
    let mut f = text.split_whitespace();
    let mode = f.next().unwrap_or("?").to_string();
    let vcpus = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mem = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (mode, vcpus, mem)
}

/// The sandboxes under `run_dir`, sorted by id (directories with a pids file).
pub fn list(run_dir: &Path) -> Vec<SandboxSummary> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut found: Vec<SandboxSummary> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            hull_proto::valid_id(&id).then_some(id)
        })
        .filter_map(|id| summary(run_dir, &id))
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// One sandbox's summary, if `run_dir/id` is a sandbox directory.
pub fn summary(run_dir: &Path, id: &str) -> Option<SandboxSummary> {
    let paths = SandboxPaths::new(run_dir, id);
    if !paths.pids_file.is_file() {
        return None;
    }
    let (mode, vcpus, mem_mib) = read_info(&paths.dir);
    let records = read_pids_file(&paths.pids_file);
    let live: Vec<(String, ProcessRecord)> =
        records.into_iter().filter(|(_, r)| r.is_alive()).collect();
    let mut containers = SharedDir::open(&paths.shared)
        .and_then(|s| s.list(Path::new(".")))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| hull_proto::valid_id(n))
        .collect::<Vec<_>>();
    containers.sort();
    let pss_kib = live
        .iter()
        .flat_map(|(_, r)| with_descendants(r.pid))
        .map(pss_kib)
        .sum();
    let uptime = std::fs::metadata(&paths.pids_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    Some(SandboxSummary {
        id: id.to_string(),
        mode,
        vcpus,
        mem_mib,
        containers,
        processes: live.into_iter().map(|(n, r)| (n, r.pid)).collect(),
        pss_kib,
        uptime,
    })
}

/// The agent log the shim keeps for sandbox `id`.
pub fn agent_log_path(run_dir: &Path, id: &str) -> Option<PathBuf> {
    hull_proto::valid_id(id).then(|| SandboxPaths::new(run_dir, id).dir.join("agent.log"))
}
