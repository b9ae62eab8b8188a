//! Removing a sandbox's directory: every container's mounts under the shared directory (the
//! guest can write there, so through [`SharedDir`] only), then whatever mount is still below
//! the sandbox directory (found in /proc/self/mountinfo), then the directory itself, which is
//! removed only when nothing is mounted below it any more.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use super::SandboxPaths;
use crate::cri::spec::MOUNTS_DIR;
use crate::shared_dir::SharedDir;

/// Unmounts and removes the host binds and the rootfs of container `container_id`, then its
/// directory `<shared>/<container-id>`.
pub fn remove_container_dir(shared: &SharedDir, container_id: &str) {
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
