//! CPU priority of a sandbox VM. The pool daemon boots its VMs in the background: a replacement
//! boots right after a shim took a pool VM, and on a machine without an idle core it would
//! otherwise take CPU from the very pod start that took the VM (and from every other start then).
//!
//! Two limits do that, both on the VM's pod cgroup (the VMM and virtiofsd run in it):
//! - the lowest CPU weight: the kernel shares CPU time between cgroups by their weight, whatever
//!   the nice values of the threads inside (so the weight, not nice). But a weight only counts
//!   against the cgroup's siblings, the other pods under the same parent: while the pod that
//!   took the VM waits on containerd and its shim (which run outside that parent), the parent's
//!   whole share went to the boot, half of the CPU in the lab;
//! - so also a CPU quota of [`BACKGROUND_CPU_QUOTA_US`] per period, which holds against every
//!   other process: the boot takes longer (5x at most) and the pod starts meanwhile keep the
//!   rest of the CPU.
//!
//! The shim that claims the VM gives its cgroup the default weight and the pod's quota back
//! before the pod uses it.

use std::io;
use std::path::{Path, PathBuf};

use super::jail::cgroup::CPU_PERIOD_US;

/// The CPU time a background VM may use per period of [`CPU_PERIOD_US`]: a fifth of one CPU.
pub const BACKGROUND_CPU_QUOTA_US: u64 = CPU_PERIOD_US / 5;

/// How a sandbox VM's processes share the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPriority {
    /// A pod waits for this VM: the default weight, the pod's CPU quota.
    Normal,
    /// Nobody waits for it yet (a pool VM): the lowest weight, at most
    /// [`BACKGROUND_CPU_QUOTA_US`].
    Background,
}

impl BootPriority {
    /// The CPU quota (µs per [`CPU_PERIOD_US`]) of a VM of this priority whose pod has
    /// `pod_quota_us`.
    pub fn cpu_quota_us(self, pod_quota_us: u64) -> u64 {
        match self {
            BootPriority::Normal => pod_quota_us,
            BootPriority::Background => pod_quota_us.min(BACKGROUND_CPU_QUOTA_US),
        }
    }
}

/// The files of a cgroup's CPU controller, by cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuControl {
    /// cgroup v2: `cpu.weight` (1..=10000, default 100) and `cpu.max`.
    V2,
    /// cgroup v1's cpu hierarchy: `cpu.shares` (2.., default 1024) and `cpu.cfs_quota_us`
    /// (its `cpu.cfs_period_us` is written once, with the pod's limits).
    V1,
}

impl CpuControl {
    /// The weight file's name.
    pub fn weight_file(self) -> &'static str {
        match self {
            CpuControl::V2 => "cpu.weight",
            CpuControl::V1 => "cpu.shares",
        }
    }

    /// The weight of a VM of `priority`: the lowest for a background VM, the kernel's default
    /// otherwise.
    pub fn weight(self, priority: BootPriority) -> u64 {
        match (self, priority) {
            (CpuControl::V2, BootPriority::Background) => 1,
            (CpuControl::V2, BootPriority::Normal) => 100,
            (CpuControl::V1, BootPriority::Background) => 2,
            (CpuControl::V1, BootPriority::Normal) => 1024,
        }
    }

    /// The priority whose weight `weight` is, if either's.
    pub fn priority_of(self, weight: u64) -> Option<BootPriority> {
        [BootPriority::Normal, BootPriority::Background]
            .into_iter()
            .find(|p| self.weight(*p) == weight)
    }

    /// Which CPU controller the cgroup directory `dir` has; none in v1's memory and pids
    /// hierarchies.
    pub fn in_dir(dir: &Path) -> Option<CpuControl> {
        [CpuControl::V2, CpuControl::V1]
            .into_iter()
            .find(|c| dir.join(c.weight_file()).exists())
    }

    /// The `(file, value)` that gives the cgroup `dir` a CPU quota of `quota_us` per
    /// [`CPU_PERIOD_US`].
    pub fn quota_write(self, dir: &Path, quota_us: u64) -> (PathBuf, String) {
        match self {
            CpuControl::V2 => (dir.join("cpu.max"), format!("{quota_us} {CPU_PERIOD_US}")),
            CpuControl::V1 => (dir.join("cpu.cfs_quota_us"), quota_us.to_string()),
        }
    }

    /// The `(file, value)` writes that give a new cgroup `dir` the CPU share of `priority`,
    /// its pod having `pod_quota_us`: the quota, then (for a background VM) the weight; a new
    /// cgroup has the default weight already.
    pub fn writes(
        self,
        dir: &Path,
        priority: BootPriority,
        pod_quota_us: u64,
    ) -> Vec<(PathBuf, String)> {
        let mut writes = vec![self.quota_write(dir, priority.cpu_quota_us(pod_quota_us))];
        if priority == BootPriority::Background {
            writes.push((
                dir.join(self.weight_file()),
                self.weight(priority).to_string(),
            ));
        }
        writes
    }
}

/// Gives the pod cgroup directories `dirs` (a claimed pool VM's) the default CPU weight and the
/// pod's quota `pod_quota_us` back, in whichever CPU controller each has; directories with none
/// (v1's memory and pids hierarchies) are left alone. Returns how many directories were set.
pub fn restore_normal(dirs: &[PathBuf], pod_quota_us: u64) -> io::Result<usize> {
    let mut set = 0;
    for dir in dirs {
        let Some(cpu) = CpuControl::in_dir(dir) else {
            continue;
        };
        let weight = (
            dir.join(cpu.weight_file()),
            cpu.weight(BootPriority::Normal).to_string(),
        );
        for (path, value) in [weight, cpu.quota_write(dir, pod_quota_us)] {
            std::fs::write(&path, &value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        set += 1;
    }
    Ok(set)
}

/// The CPU share of a pod whose cgroup directories are `dirs`: the controller of the first
/// directory that has one, its weight and its quota (µs per period; `None`: no quota).
pub fn current_share(dirs: &[PathBuf]) -> io::Result<Option<CpuShare>> {
    let Some((dir, cpu)) = dirs
        .iter()
        .find_map(|dir| CpuControl::in_dir(dir).map(|cpu| (dir, cpu)))
    else {
        return Ok(None);
    };
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .map(|text| text.trim().to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let bad = |file: &str, text: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?} is no CPU figure", dir.join(file).display()),
        )
    };
    let weight_text = read(cpu.weight_file())?;
    let weight = weight_text
        .parse()
        .map_err(|_| bad(cpu.weight_file(), &weight_text))?;
    let (quota_file, quota_text) = match cpu {
        CpuControl::V2 => {
            let text = read("cpu.max")?;
            ("cpu.max", text.split(' ').next().unwrap_or("").to_string())
        }
        CpuControl::V1 => ("cpu.cfs_quota_us", read("cpu.cfs_quota_us")?),
    };
    let quota_us = match quota_text.as_str() {
        "max" | "-1" => None,
        text => Some(text.parse().map_err(|_| bad(quota_file, text))?),
    };
    Ok(Some(CpuShare {
        cpu,
        weight,
        quota_us,
    }))
}

/// What [`current_share`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuShare {
    /// The controller's version.
    pub cpu: CpuControl,
    /// Its weight.
    pub weight: u64,
    /// Its quota per period, µs; `None`: unlimited.
    pub quota_us: Option<u64>,
}

impl CpuShare {
    /// The priority this share is that of, for a pod whose quota is `pod_quota_us`: weight and
    /// quota must both match.
    pub fn priority(&self, pod_quota_us: u64) -> Option<BootPriority> {
        let priority = self.cpu.priority_of(self.weight)?;
        (self.quota_us == Some(priority.cpu_quota_us(pod_quota_us))).then_some(priority)
    }
}
