//! The pod cgroup: hull-vmm and virtiofsd of one sandbox run in `<pod_cgroup_parent>/<id>`,
//! so what they use on the host is charged to the pod and capped (memory, CPU, pids). Works on
//! cgroup v2 (one unified hierarchy) and v1 / hybrid (one directory per controller). The
//! directories are recorded in the sandbox directory, so `delete` after a shim crash removes
//! them.

use crate::sandbox::priority::{BootPriority, WeightFile};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File in the sandbox directory listing the pod cgroup directories (one per line).
pub const CGROUPS_FILE: &str = "cgroups";
/// Where cgroup hierarchies are mounted; a recorded directory must be below it.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the CPU cap is expressed in, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A cgroup controller the pod cgroup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// Memory (charged and capped).
    Memory,
    /// CPU bandwidth.
    Cpu,
    /// Number of tasks.
    Pids,
}

impl Controller {
    /// All the pod cgroup uses.
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// How this host's cgroups are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2: one hierarchy.
    V2 {
        /// Its mount point.
        mount: PathBuf,
    },
    /// cgroup v1 (or hybrid: the controllers are on v1 hierarchies).
    V1 {
        /// The mount point of each controller found.
        controllers: Vec<(Controller, PathBuf)>,
    },
}

/// The caps of a pod cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`], microseconds.
    pub cpu_quota_us: u64,
    /// Tasks.
    pub pids: u64,
    /// CPU weight: the default, or the lowest for a VM nobody waits for yet.
    pub priority: BootPriority,
}

/// A pod cgroup that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup hierarchy with the needed controllers is mounted.
    #[error("no cgroup hierarchy with the memory, cpu and pids controllers is mounted under /sys/fs/cgroup")]
    NoHierarchy,
    /// A cgroup file could not be written or a directory made.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Reads the layout from /proc/self/mountinfo text: a cgroup2 mount at /sys/fs/cgroup is v2;
/// otherwise v1 controllers (the first mount of each) if any; otherwise any cgroup2 mount.
pub fn layout_from_mountinfo(text: &str) -> Option<CgroupLayout> {
    let mut v2 = None;
    let mut controllers: Vec<(Controller, PathBuf)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let super_options = right.nth(1).unwrap_or("");
        let mount = PathBuf::from(mount);
        match fstype {
            "cgroup2" if mount == Path::new(CGROUP_ROOT) || v2.is_none() => v2 = Some(mount),
            "cgroup" => {
                for controller in Controller::ALL {
                    let has = super_options.split(',').any(|o| o == controller.name());
                    if has && !controllers.iter().any(|(c, _)| *c == controller) {
                        controllers.push((controller, mount.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    match v2 {
        Some(mount) if mount == Path::new(CGROUP_ROOT) => Some(CgroupLayout::V2 { mount }),
        _ if !controllers.is_empty() => Some(CgroupLayout::V1 { controllers }),
        Some(mount) => Some(CgroupLayout::V2 { mount }),
        None => None,
    }
}

/// This host's layout.
pub fn host_layout() -> Result<CgroupLayout, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    layout_from_mountinfo(&text).ok_or(CgroupError::NoHierarchy)
}

impl CgroupLayout {
    /// "v1" or "v2".
    pub fn version(&self) -> &'static str {
        match self {
            CgroupLayout::V2 { .. } => "v2",
            CgroupLayout::V1 { .. } => "v1",
        }
    }

    /// The pod cgroup directories of sandbox `id` under `parent` (relative to each hierarchy's
    /// root).
    pub fn pod_dirs(&self, parent: &Path, id: &str) -> Vec<PathBuf> {
        match self {
            CgroupLayout::V2 { mount } => vec![mount.join(parent).join(id)],
            CgroupLayout::V1 { controllers } => controllers
                .iter()
                .map(|(_, mount)| mount.join(parent).join(id))
                .collect(),
        }
    }

    /// The files to write to cap the pod cgroup (in order), with their contents.
    pub fn limit_writes(
        &self,
        parent: &Path,
        id: &str,
        limits: &CgroupLimits,
    ) -> Vec<(PathBuf, String)> {
        match self {
            CgroupLayout::V2 { mount } => {
                let dir = mount.join(parent).join(id);
                let mut writes = vec![
                    (dir.join("memory.max"), limits.memory_bytes.to_string()),
                    (
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
                    ),
                    (dir.join("pids.max"), limits.pids.to_string()),
                ];
                writes.extend(limits.priority.cgroup_write(WeightFile::CpuWeight, &dir));
                writes
            }
            CgroupLayout::V1 { controllers } => controllers
                .iter()
                .flat_map(|(controller, mount)| {
                    let dir = mount.join(parent).join(id);
                    match controller {
                        Controller::Memory => vec![(
                            dir.join("memory.limit_in_bytes"),
                            limits.memory_bytes.to_string(),
                        )],
                        Controller::Cpu => {
                            let mut writes = vec![
                                (dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()),
                                (
                                    dir.join("cpu.cfs_quota_us"),
                                    limits.cpu_quota_us.to_string(),
                                ),
                            ];
                            writes
                                .extend(limits.priority.cgroup_write(WeightFile::CpuShares, &dir));
                            writes
                        }
                        Controller::Pids => {
                            vec![(dir.join("pids.max"), limits.pids.to_string())]
                        }
                    }
                })
                .collect(),
        }
    }

    /// v2 only: the `cgroup.subtree_control` files from the hierarchy root down to `parent`,
    /// each of which must enable the controllers for the pod cgroup to have them.
    pub fn subtree_controls(&self, parent: &Path) -> Vec<PathBuf> {
        let CgroupLayout::V2 { mount } = self else {
            return Vec::new();
        };
        let mut dir = mount.clone();
        let mut files = vec![dir.join("cgroup.subtree_control")];
        for component in parent.components() {
            dir.push(component);
            files.push(dir.join("cgroup.subtree_control"));
        }
        files
    }
}

/// Creates the pod cgroup of `id` under `parent`, caps it (a cap that cannot be written is
/// logged) and records it in `sandbox_dir`; returns its directories.
pub fn create(
    layout: &CgroupLayout,
    parent: &Path,
    id: &str,
    limits: &CgroupLimits,
    sandbox_dir: &Path,
) -> Result<Vec<PathBuf>, CgroupError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| CgroupError::Io {
            action,
            path,
            source,
        }
    };
    let dirs = layout.pod_dirs(parent, id);
    let record: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    let record_path = sandbox_dir.join(CGROUPS_FILE);
    std::fs::write(&record_path, record).map_err(io("writing", &record_path))?;
    let controls = layout.subtree_controls(parent);
    for (i, control) in controls.iter().enumerate() {
        if let Some(dir) = control.parent() {
            if i > 0 {
                let _ = std::fs::create_dir(dir);
            }
        }
        for controller in Controller::ALL {
            // Already enabled, or enabled by whoever manages the root: not an error here; a
            // missing controller shows when the limit files are written.
            let _ = std::fs::write(control, format!("+{}", controller.name()));
        }
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(io("creating cgroup", dir))?;
    }
    for (file, value) in layout.limit_writes(parent, id, limits) {
        // A controller this kernel lacks (or a v2 parent that does not pass it down) leaves
        // the pod uncapped for it: worth a warning, not a pod that cannot start.
        if let Err(e) = std::fs::write(&file, &value) {
            tracing::warn!(%e, file = %file.display(), value, "capping the pod cgroup");
        }
    }
    Ok(dirs)
}

/// The pod cgroup directories recorded in `sandbox_dir` (lines that are not a directory
/// below /sys/fs/cgroup named after the sandbox, or after the pool VM it was, are ignored).
pub fn recorded(sandbox_dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(sandbox_dir.join(CGROUPS_FILE)) else {
        return Vec::new();
    };
    let id = sandbox_dir.file_name();
    // A VM claimed from the pool keeps the cgroup it booted in, named after its slot (cgroup v2
    // cannot rename a cgroup).
    let slot = crate::pool::recorded_slot(sandbox_dir);
    let named_ours = |p: &Path| {
        p.file_name() == id || (slot.is_some() && p.file_name() == slot.as_deref().map(OsStr::new))
    };
    text.lines()
        .take(16)
        .map(PathBuf::from)
        .filter(|p| {
            super::plan::is_plain_absolute(p)
                && p.starts_with(CGROUP_ROOT)
                && named_ours(p)
                && p.components().count() > 5
        })
        .collect()
}

/// Removes the pod cgroups recorded in `sandbox_dir` (after its processes are gone; a cgroup
/// whose last task is still exiting is retried for up to 2 s) and the record.
pub fn remove_recorded(sandbox_dir: &Path) {
    for dir in recorded(sandbox_dir) {
        remove_dir(&dir);
    }
    let _ = std::fs::remove_file(sandbox_dir.join(CGROUPS_FILE));
}

fn remove_dir(dir: &Path) {
    let started = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if started.elapsed() > Duration::from_secs(2) => {
                tracing::warn!(%e, dir = %dir.display(), "removing the pod cgroup");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The `cgroup.procs` files of `dirs`.
pub fn procs_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.join("cgroup.procs")).collect()
}
