//! The agent's own mount table (`/proc/self/mountinfo`): finding and unmounting what is
//! mounted at or below a directory (DestroySandbox tears down container mounts this way).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use tracing::{debug, warn};

/// Longest mountinfo read (a guest has a few dozen mounts; this is a guard, not a limit).
const MAX_MOUNTINFO: u64 = 4 * 1024 * 1024;
/// Unmount passes before giving up (stacked mounts need one pass per layer).
const MAX_PASSES: usize = 8;

/// Unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// /proc/self/mountinfo could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    /// Mounts were still there after every pass.
    #[error("still mounted after {MAX_PASSES} passes: {0:?}")]
    StillMounted(Vec<PathBuf>),
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mount points in mountinfo `text` at or below `dir`, in the order to unmount them:
/// deepest first, and of mounts on the same point the most recent first.
pub fn mounts_under(text: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = text
        .lines()
        .enumerate()
        .filter_map(|(order, line)| Some((order, unescape(line.split(' ').nth(4)?))))
        .filter(|(_, point)| point.starts_with(dir))
        .collect();
    found.sort_by(|(order_a, a), (order_b, b)| {
        let depth = |p: &Path| p.components().count();
        depth(b).cmp(&depth(a)).then(order_b.cmp(order_a))
    });
    found.into_iter().map(|(_, point)| point).collect()
}

fn read_mountinfo() -> Result<String, MountError> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open("/proc/self/mountinfo")
        .and_then(|f| f.take(MAX_MOUNTINFO).read_to_string(&mut text))
        .map_err(MountError::MountInfo)?;
    Ok(text)
}

/// Detaches every mount at or below `dir` in the agent's mount namespace. Returns how many
/// unmount calls succeeded.
pub fn unmount_all_under(dir: &Path) -> Result<usize, MountError> {
    let mut unmounted = 0;
    for _ in 0..MAX_PASSES {
        let points = mounts_under(&read_mountinfo()?, dir);
        if points.is_empty() {
            return Ok(unmounted);
        }
        for point in points {
            match umount2(&point, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    debug!(mount = %point.display(), "unmounted");
                    unmounted += 1;
                }
                // Already gone with a parent that was detached first.
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(err) => warn!(mount = %point.display(), %err, "unmounting"),
            }
        }
    }
    let left = mounts_under(&read_mountinfo()?, dir);
    if left.is_empty() {
        Ok(unmounted)
    } else {
        Err(MountError::StillMounted(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
40 27 0:30 / /run/shared rw - virtiofs shared rw
41 40 0:31 / /run/shared/c1/rootfs rw - overlay overlay rw
42 41 0:32 / /run/shared/c1/rootfs/dev rw - tmpfs tmpfs rw
43 42 0:33 / /run/shared/c1/rootfs/dev/pts rw - devpts devpts rw
44 41 0:34 / /run/shared/c1/rootfs/with\\040space rw - tmpfs tmpfs rw
45 41 0:35 / /run/shared/c1/rootfs/dev rw - tmpfs tmpfs rw
46 40 0:36 / /run/shared/c10/rootfs rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_below_a_directory_come_deepest_and_newest_first() {
        let points = mounts_under(MOUNTINFO, Path::new("/run/shared/c1/rootfs"));
        let expected: Vec<PathBuf> = [
            "/run/shared/c1/rootfs/dev/pts",
            "/run/shared/c1/rootfs/dev", // id 45, stacked on 42
            "/run/shared/c1/rootfs/with space",
            "/run/shared/c1/rootfs/dev", // id 42
            "/run/shared/c1/rootfs",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        // Same depth: newer first; c10 is not below c1.
        assert_eq!(points, expected);
        assert!(mounts_under(MOUNTINFO, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn escapes_are_decoded_and_odd_input_is_kept() {
        assert_eq!(unescape("/a\\040b\\011c"), PathBuf::from("/a b\tc"));
        assert_eq!(unescape("/trailing\\04"), PathBuf::from("/trailing\\04"));
        assert_eq!(unescape("/x\\999"), PathBuf::from("/x\\999"));
        // Lines without a mount point field are skipped.
        assert!(mounts_under("garbage\n\n1 2", Path::new("/")).is_empty());
    }

    #[test]
    fn unmounting_a_tmpfs_tree_really_detaches_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir(&top).unwrap();
        let mount = |target: &Path| {
            nix::mount::mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap()
        };
        mount(&top);
        std::fs::create_dir(top.join("inner")).unwrap();
        mount(&top.join("inner"));
        mount(&top.join("inner")); // stacked
        assert_eq!(mounts_under(&read_mountinfo().unwrap(), &top).len(), 3);
        let n = unmount_all_under(&top).unwrap();
        assert!(n >= 1);
        assert!(mounts_under(&read_mountinfo().unwrap(), &top).is_empty());
        assert_eq!(unmount_all_under(&top).unwrap(), 0);
    }
}
