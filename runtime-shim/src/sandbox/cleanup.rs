//! Removing a sandbox's directory: every container's mounts under the shared directory (the
//! guest can write there, so through [`SharedDir`] only), then whatever mount is still below
//! the sandbox directory (found in /proc/self/mountinfo), then the directory itself, which is
//! removed only when nothing is mounted below it any more.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use super::{inventory, SandboxPaths};
use crate::cri::spec::MOUNTS_DIR;
use crate::shared_dir::SharedDir;

/// Unmounts and removes the host binds and the rootfs of container `container_id`, then its
/// directory `<shared>/<container-id>`.
pub fn remove_container_dir(shared: &SharedDir, container_id: &str) {
    if let Some(sandbox_dir) = sandbox_dir_of(shared) {
        if is_host_agent(&sandbox_dir) {
            kill_host_container(container_id);
        }
    }
    let dir = Path::new(container_id);
    let mounts = dir.join(MOUNTS_DIR);
    if let Ok(entries) = shared.list(&mounts) {
        for name in entries {
            let rel = mounts.join(name);
            if let Err(e) = shared.unmount(&rel).and_then(|()| shared.remove(&rel)) {
                tracing::warn!(%e, "removing a container's host bind");
            }
        }
    }
    for rel in [mounts, dir.join("rootfs")] {
        if let Err(e) = shared.unmount(&rel).and_then(|()| shared.remove(&rel)) {
            tracing::warn!(%e, "removing a container's directory");
        }
    }
    if let Err(e) = shared.remove(dir) {
        tracing::warn!(%e, "removing a container's directory");
    }
}

#[cfg(test)]
pub(crate) fn unescape_for_test(field: &str) -> String {
    unescape_mountinfo(field)
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo; octal escapes
/// decoded).
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Decodes mountinfo's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Tears down the sandbox directory: container mounts through the shared directory, the pod
/// /dev/shm of a host agent, the shared directory's own mount, any mount left below (lazily,
/// never following a link at its last component), then the directory when nothing is
/// mounted below it.
pub fn cleanup_dir(paths: &SandboxPaths) {
    if is_host_agent(&paths.dir) {
        kill_host_containers(paths);
    }
    super::jail::cgroup::remove_recorded(&paths.dir);
    if let Ok(shared) = SharedDir::open(&paths.shared) {
        if let Ok(entries) = shared.list(Path::new(".")) {
            for name in entries {
                if let Some(id) = name.to_str() {
                    remove_container_dir(&shared, id);
                }
            }
        }
    }
    for mount in mounts_below(&paths.dir) {
        if let Err(e) =
            nix::mount::umount2(&mount, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
        {
            tracing::warn!(%e, mount = %mount.display(), "unmounting below the sandbox directory");
        }
    }
    let left = mounts_below(&paths.dir);
    if !left.is_empty() {
        tracing::error!(dir = %paths.dir.display(), ?left,
            "mounts are left below the sandbox directory; not removing it");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%e, dir = %paths.dir.display(), "removing the sandbox directory");
        }
    }
}

/// Whether the sandbox in `sandbox_dir` was recorded as host-agent mode (its info file).
fn is_host_agent(sandbox_dir: &Path) -> bool {
    inventory::recorded_mode(sandbox_dir).as_deref() == Some(inventory::HOST_AGENT_MODE)
}

/// The sandbox directory holding `shared` (where the shim opened it).
fn sandbox_dir_of(shared: &SharedDir) -> Option<PathBuf> {
    use std::os::fd::AsRawFd as _;
    let fd = shared.open_beneath(Path::new(".")).ok()?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    path.parent().map(Path::to_path_buf)
}

/// Host-agent mode: the host agent runs each container in `<cgroup2 root>/hull/<container-id>`
/// ([`hull_proto::contract::HOST_CGROUP_PARENT`]); when the agent died (killed, or stopped by
/// `delete` after a shim crash) nobody else stops them. Kills every process left in the cgroup
/// of each container of the sandbox (the names in its shared directory, and the sandbox's own
/// id) through `cgroup.kill` and removes those cgroups. Only for a sandbox recorded as
/// host-agent: in a VM the shared directory is the guest's to write, and no host cgroup is its.
fn kill_host_containers(paths: &SandboxPaths) {
    let mut ids: Vec<String> = SharedDir::open(&paths.shared)
        .and_then(|shared| shared.list(Path::new(".")))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| name.into_string().ok())
        .collect();
    if let Some(own) = paths.dir.file_name().and_then(|n| n.to_str()) {
        ids.push(own.to_string());
    }
    for id in ids {
        kill_host_container(&id);
    }
}

/// Kills and removes `<cgroup2 root>/hull/<id>` if it exists (host-agent mode only).
fn kill_host_container(id: &str) {
    let Some(parent) = host_cgroup_parent() else {
        return;
    };
    if !hull_proto::valid_id(id) {
        return;
    }
    let cgroup = parent.join(id);
    if !cgroup.is_dir() {
        return;
    }
    match kill_and_remove_cgroup(&cgroup) {
        Ok(killed) => tracing::info!(
            container = id,
            killed,
            cgroup = %cgroup.display(),
            "host container's cgroup killed and removed"
        ),
        Err(e) => tracing::warn!(%e, cgroup = %cgroup.display(),
            "killing a host container's cgroup"),
    }
}

/// `<cgroup2 root>/hull`: the root is /sys/fs/cgroup when that is cgroup2, else
/// /sys/fs/cgroup/unified (hybrid hosts), as the agent chooses it.
fn host_cgroup_parent() -> Option<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|p| {
            nix::sys::statfs::statfs(*p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        })
        .map(|root| root.join(hull_proto::contract::HOST_CGROUP_PARENT))
}

/// SIGKILLs every process in `cgroup` and below (`cgroup.kill`, else pid by pid, thawed
/// first), waits up to 2 s for them to go, then removes the cgroup leaves first. Returns how
/// many processes were in it.
pub fn kill_and_remove_cgroup(cgroup: &Path) -> std::io::Result<usize> {
    let procs = cgroup_procs(cgroup);
    let _ = std::fs::write(cgroup.join("cgroup.freeze"), "0");
    if std::fs::write(cgroup.join("cgroup.kill"), "1").is_err() {
        for pid in &procs {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match remove_cgroup_tree(cgroup) {
            Ok(()) => return Ok(procs.len()),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

/// The pids in `cgroup` and its descendants.
fn cgroup_procs(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_procs(&entry.path()));
            }
        }
    }
    pids
}

/// Removes `cgroup` and the cgroups below it (rmdir, deepest first).
fn remove_cgroup_tree(cgroup: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    match std::fs::remove_dir(cgroup) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
