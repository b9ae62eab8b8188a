//! Path handling that never leaves a given root: resolving container paths inside the rootfs
//! (symlinks are followed as if the rootfs were `/`) and checking host-side paths (rootfs,
//! bind-mount sources) stay inside the shared directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (as the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// A path that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Too many symlinks (a loop).
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path being resolved.
        path: PathBuf,
    },
    /// The path (after resolving symlinks) is outside the allowed directory.
    #[error("{path} resolves to {resolved}, outside {allowed}")]
    Escapes {
        /// The path as given.
        path: PathBuf,
        /// Where it really points.
        resolved: PathBuf,
        /// The directory it must stay in.
        allowed: String,
    },
    /// Reading the path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Resolves `path` as the container would see it, inside `root`: `..` stops at `root` and
/// symlinks (absolute or relative) are resolved relative to `root`. Components that do not
/// exist yet are appended as they are. The result is `root` joined with the resolved path.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let mut pending: VecDeque<OsString> = components_of(path);
    let mut resolved = PathBuf::new();
    let mut symlinks = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let on_disk = root.join(&candidate);
        match std::fs::symlink_metadata(&on_disk) {
            Ok(meta) if meta.file_type().is_symlink() => {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(PathError::SymlinkLoop {
                        path: path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(&on_disk).map_err(|source| PathError::Io {
                    path: on_disk.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for (i, part) in components_of(&target).into_iter().enumerate() {
                    pending.insert(i, part);
                }
            }
            Ok(_) => resolved = candidate,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => resolved = candidate,
            Err(source) => {
                return Err(PathError::Io {
                    path: on_disk,
                    source,
                })
            }
        }
    }
    Ok(root.join(resolved))
}

/// The normal and `..` components of `path` (root and `.` dropped).
fn components_of(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Canonicalizes `path` (which must exist) and checks it lies in one of `allowed` (canonical
/// directories). Returns the canonical path.
pub fn canonical_inside(path: &Path, allowed: &[&Path]) -> Result<PathBuf, PathError> {
    let resolved = std::fs::canonicalize(path).map_err(|source| PathError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if allowed.iter().any(|dir| resolved.starts_with(dir)) {
        Ok(resolved)
    } else {
        Err(PathError::Escapes {
            path: path.to_path_buf(),
            resolved,
            allowed: allowed
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dotdot_and_symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../..", root.join("etc/sub/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        assert_eq!(
            resolve_in_root(root, Path::new("/../../etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/sub")).unwrap(),
            root.join("etc/sub")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/sub/up/passwd")).unwrap(),
            root.join("passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/new/dir")).unwrap(),
            root.join("new/dir")
        );
        assert!(matches!(
            resolve_in_root(root, Path::new("/loop1")),
            Err(PathError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn canonical_inside_rejects_symlink_escapes() {
        let shared = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let shared_path = std::fs::canonicalize(shared.path()).unwrap();
        std::fs::create_dir(shared.path().join("ok")).unwrap();
        symlink(outside.path(), shared.path().join("evil")).unwrap();

        let ok = canonical_inside(&shared.path().join("ok"), &[&shared_path]).unwrap();
        assert_eq!(ok, shared_path.join("ok"));
        let err = canonical_inside(&shared.path().join("evil"), &[&shared_path]).unwrap_err();
        assert!(matches!(err, PathError::Escapes { .. }), "{err}");
        assert!(err.to_string().contains("outside"), "{err}");
        let missing = canonical_inside(&shared.path().join("nope"), &[&shared_path]);
        assert!(matches!(missing, Err(PathError::Io { .. })));
    }
}
