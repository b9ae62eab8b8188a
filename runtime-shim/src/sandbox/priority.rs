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

/// cgroup v2's `cpu.weight` of a background VM (the lowest) and of any other (the default).
pub const V2_BACKGROUND_WEIGHT: u64 = 1;
/// See [`V2_BACKGROUND_WEIGHT`].
pub const V2_NORMAL_WEIGHT: u64 = 100;
/// cgroup v1's `cpu.shares` of a background VM (the lowest) and of any other (the default).
pub const V1_BACKGROUND_SHARES: u64 = 2;
/// See [`V1_BACKGROUND_SHARES`].
pub const V1_NORMAL_SHARES: u64 = 1024;

/// How a sandbox VM's processes share the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPriority {
    /// A pod waits for this VM: the default weight.
    Normal,
    /// Nobody waits for it yet (a pool VM): the lowest weight.
    Background,
}

impl BootPriority {
    /// The `(file, value)` to write into a pod cgroup directory `dir` of the hierarchy of this
    /// version ("v1": the cpu controller's) at its creation; none for the default weight.
    pub fn cgroup_write(self, version: &str, dir: &Path) -> Option<(PathBuf, String)> {
        match (self, version) {
            (BootPriority::Normal, _) => None,
            (BootPriority::Background, "v2") => {
                Some((dir.join("cpu.weight"), V2_BACKGROUND_WEIGHT.to_string()))
            }
            (BootPriority::Background, _) => {
                Some((dir.join("cpu.shares"), V1_BACKGROUND_SHARES.to_string()))
            }
        }
    }
}

/// Gives the pod cgroup directories `dirs` (a claimed pool VM's) the default CPU weight back:
/// `cpu.weight` where a directory has it (v2), `cpu.shares` (v1's cpu hierarchy); directories
/// with neither (v1's memory and pids hierarchies) are left alone. Returns how many files were
/// written.
pub fn restore_normal_weight(dirs: &[PathBuf]) -> io::Result<usize> {
    let mut written = 0;
    for dir in dirs {
        let (v2, v1) = (dir.join("cpu.weight"), dir.join("cpu.shares"));
        let (file, value) = if v2.exists() {
            (v2, V2_NORMAL_WEIGHT)
        } else if v1.exists() {
            (v1, V1_NORMAL_SHARES)
        } else {
            continue;
        };
        std::fs::write(&file, value.to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        written += 1;
    }
    Ok(written)
}
