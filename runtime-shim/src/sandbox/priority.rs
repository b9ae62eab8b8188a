//! CPU priority of a sandbox VM. The pool daemon boots its VMs at the lowest CPU weight its pod
//! cgroup can have: a replacement boots right after a shim took a pool VM, and on a machine
//! without an idle core it would otherwise take half the CPU from the very pod start that took
//! the VM (and from every other start then). Each VM has a cgroup of its own, and the kernel
//! shares CPU time between cgroups by their weight, whatever the nice values of the threads
//! inside: so the weight, not nice. At the lowest weight the boot gets the CPU time nothing else
//! wants, and all of it on an idle machine. The shim that claims the VM gives its cgroup the
//! default weight back before the pod uses it.

use std::io;
use std::path::{Path, PathBuf};

/// How a sandbox VM's processes share the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPriority {
    /// A pod waits for this VM: the default weight.
    Normal,
    /// Nobody waits for it yet (a pool VM): the lowest weight.
    Background,
}

/// The file that holds a cgroup's CPU weight, by cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFile {
    /// cgroup v2's `cpu.weight` (1..=10000, default 100).
    CpuWeight,
    /// cgroup v1's `cpu.shares` in the cpu hierarchy (2.., default 1024).
    CpuShares,
}

impl WeightFile {
    /// The file's name in a cgroup directory.
    pub fn name(self) -> &'static str {
        match self {
            WeightFile::CpuWeight => "cpu.weight",
            WeightFile::CpuShares => "cpu.shares",
        }
    }

    /// The value this file holds for a VM of `priority`: the lowest for a background VM, the
    /// kernel's default otherwise.
    pub fn value(self, priority: BootPriority) -> u64 {
        match (self, priority) {
            (WeightFile::CpuWeight, BootPriority::Background) => 1,
            (WeightFile::CpuWeight, BootPriority::Normal) => 100,
            (WeightFile::CpuShares, BootPriority::Background) => 2,
            (WeightFile::CpuShares, BootPriority::Normal) => 1024,
        }
    }

    /// Which weight file the cgroup directory `dir` has; none in v1's memory and pids
    /// hierarchies.
    pub fn in_dir(dir: &Path) -> Option<WeightFile> {
        [WeightFile::CpuWeight, WeightFile::CpuShares]
            .into_iter()
            .find(|file| dir.join(file.name()).exists())
    }

    /// The priority whose value `value` is, if either's.
    pub fn priority_of(self, value: u64) -> Option<BootPriority> {
        [BootPriority::Normal, BootPriority::Background]
            .into_iter()
            .find(|p| self.value(*p) == value)
    }
}

impl BootPriority {
    /// The `(file, value)` to write into a new pod cgroup directory `dir` whose CPU weight is
    /// held in `file`; none for the default weight (a new cgroup has it already).
    pub fn cgroup_write(self, file: WeightFile, dir: &Path) -> Option<(PathBuf, String)> {
        match self {
            BootPriority::Normal => None,
            BootPriority::Background => Some((dir.join(file.name()), file.value(self).to_string())),
        }
    }
}

/// Gives the pod cgroup directories `dirs` (a claimed pool VM's) the default CPU weight back,
/// in whichever weight file each has; directories with none (v1's memory and pids
/// hierarchies) are left alone. Returns how many files were written.
pub fn restore_normal_weight(dirs: &[PathBuf]) -> io::Result<usize> {
    let mut written = 0;
    for dir in dirs {
        let Some(file) = WeightFile::in_dir(dir) else {
            continue;
        };
        let path = dir.join(file.name());
        std::fs::write(&path, file.value(BootPriority::Normal).to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written += 1;
    }
    Ok(written)
}

/// The CPU weight of a pod whose cgroup directories are `dirs`: the weight file of the first
/// directory that has one, and its value; none where no directory has one.
pub fn current_weight(dirs: &[PathBuf]) -> io::Result<Option<(WeightFile, u64)>> {
    let Some((dir, file)) = dirs
        .iter()
        .find_map(|dir| WeightFile::in_dir(dir).map(|file| (dir, file)))
    else {
        return Ok(None);
    };
    let path = dir.join(file.name());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let value = text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?}: {e}", path.display()),
        )
    })?;
    Ok(Some((file, value)))
}
