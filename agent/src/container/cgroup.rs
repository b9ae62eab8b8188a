//! Container cgroups (v2) under `<root>/hull/<id>`: creation, limits, freeze, stats, removal.
//!
//! The root is /sys/fs/cgroup when that is cgroup2 (the guest), else /sys/fs/cgroup/unified
//! (hybrid hosts, where v2 usually has no controllers: limits that need one fail clearly,
//! weights are skipped with a warning).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use tracing::warn;

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy found (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")]
    NoHierarchy,
    /// A limit needs a controller this hierarchy does not have.
    #[error("cgroup controller {controller} is not available in {root}, cannot set {what}")]
    MissingController {
        /// e.g. "memory".
        controller: &'static str,
        /// The cgroup root.
        root: String,
        /// The limit asked for.
        what: &'static str,
    },
    /// The device program could not be set.
    #[error("device access control: {0}")]
    Devices(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
}

/// The cgroup v2 mount to use.
pub fn find_root() -> Result<PathBuf, CgroupError> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
        .ok_or(CgroupError::NoHierarchy)
}

/// The controllers available in the cgroup at `dir`.
pub fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: PathBuf,
    dir: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/hull/<id>`, enabling every available controller on the way down.
    pub fn create(root: &Path, id: &str) -> Result<Cgroup, CgroupError> {
        let hull = root.join("hull");
        std::fs::create_dir_all(&hull).map_err(io(&hull))?;
        for parent in [root, hull.as_path()] {
            for controller in controllers(parent) {
                if ["cpu", "memory", "pids", "io"].contains(&controller.as_str()) {
                    let file = parent.join("cgroup.subtree_control");
                    if let Err(err) = std::fs::write(&file, format!("+{controller}")) {
                        warn!(%err, file = %file.display(), controller, "enabling a cgroup controller");
                    }
                }
            }
        }
        let dir = hull.join(id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Cgroup {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn has(&self, controller: &str) -> bool {
        controllers(&self.dir).iter().any(|c| c == controller)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(io(&path))
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    /// Moves `pid` into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn need(&self, controller: &'static str, what: &'static str) -> Result<(), CgroupError> {
        if self.has(controller) {
            Ok(())
        } else {
            Err(CgroupError::MissingController {
                controller,
                root: self.root.display().to_string(),
                what,
            })
        }
    }

    /// Applies the OCI resources: memory limit/swap, pids limit, cpu quota/period (limits, a
    /// missing controller is an error), cpu shares (a weight, skipped with a warning).
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(memory) = resources.memory() {
            if let Some(limit) = memory.limit() {
                self.need("memory", "memory.limit")?;
                self.write("memory.max", &limit_value(limit))?;
            }
            if let (Some(swap), Some(limit)) = (memory.swap(), memory.limit()) {
                self.need("memory", "memory.swap")?;
                // OCI swap is memory+swap; v2 memory.swap.max is swap alone.
                let value = if swap < 0 {
                    "max".to_string()
                } else {
                    (swap - limit).max(0).to_string()
                };
                if let Err(err) = self.write("memory.swap.max", &value) {
                    warn!(%err, "setting memory.swap.max");
                }
            }
        }
        if let Some(pids) = resources.pids() {
            self.need("pids", "pids.limit")?;
            self.write("pids.max", &limit_value(pids.limit()))?;
        }
        if let Some(cpu) = resources.cpu() {
            if cpu.quota().is_some() || cpu.period().is_some() {
                self.need("cpu", "cpu.quota")?;
                let quota = cpu.quota().map(limit_value).unwrap_or_else(|| "max".into());
                let period = cpu.period().unwrap_or(100_000);
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(shares) = cpu.shares() {
                if self.has("cpu") {
                    self.write("cpu.weight", &shares_to_weight(shares).to_string())?;
                } else {
                    warn!(shares, "no cpu controller: cpu shares not applied");
                }
            }
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws the cgroup and waits (up to 5 s) until it is done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .read("cgroup.events")
                .is_some_and(|e| e.lines().any(|l| l == want))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        warn!(cgroup = %self.dir.display(), frozen, "cgroup did not reach the freezer state in 5 s");
        Ok(())
    }

    /// SIGKILLs every process in the cgroup: through `cgroup.kill` (which also catches
    /// processes forking meanwhile) where the kernel has it, else pid by pid. A frozen cgroup
    /// is thawed first so that the processes run to their death.
    pub fn kill_all(&self) {
        if self.is_frozen() {
            if let Err(err) = self.write("cgroup.freeze", "0") {
                warn!(%err, "thawing before kill");
            }
        }
        if self.dir.join("cgroup.kill").exists() && self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            // SAFETY: kill(2) with integer arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        self.read("cgroup.freeze").is_some_and(|v| v.trim() == "1")
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The value of `key` in a flat-keyed file (`key value` lines), if any.
    pub fn keyed(&self, file: &str, key: &str) -> Option<u64> {
        parse_keyed(&self.read(file)?, key)
    }

    /// A single-number file; `max` is 0.
    pub fn single(&self, file: &str) -> Option<u64> {
        let text = self.read(file)?;
        let text = text.trim();
        if text == "max" {
            Some(0)
        } else {
            text.parse().ok()
        }
    }

    /// io.stat summed over devices: (rbytes, wbytes, rios, wios).
    pub fn io_totals(&self) -> (u64, u64, u64, u64) {
        let mut totals = (0, 0, 0, 0);
        for line in self.read("io.stat").unwrap_or_default().lines() {
            for field in line.split_whitespace().skip(1) {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                let value: u64 = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => totals.0 += value,
                    "wbytes" => totals.1 += value,
                    "rios" => totals.2 += value,
                    "wios" => totals.3 += value,
                    _ => {}
                }
            }
        }
        totals
    }

    /// Kills every process in the cgroup (after thawing it: up to 5 s) and removes it (up to 2 s
    /// more). Blocking: call it off the async runtime.
    pub fn kill_and_remove(&self) -> Result<(), CgroupError> {
        if self.is_frozen() {
            let _ = self.set_frozen(false);
        }
        self.kill_all();
        self.remove()
    }

    /// Removes the cgroup (waits up to 2 s for its processes to be gone).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(err) if Instant::now() >= deadline => return Err(io(&self.dir)(err)),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// An OCI limit as a cgroup v2 value: negative = "max".
fn limit_value(limit: i64) -> String {
    if limit < 0 {
        "max".into()
    } else {
        limit.to_string()
    }
}

/// cpu shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The value of `key` in `key value` lines.
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_parsing() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(limit_value(-1), "max");
        assert_eq!(limit_value(4096), "4096");
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(parse_keyed(stat, "user_usec"), Some(1000));
        assert_eq!(parse_keyed(stat, "nr_periods"), None);
    }
}
