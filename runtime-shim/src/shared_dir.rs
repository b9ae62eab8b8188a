//! Host-side operations under a sandbox's shared directory, which the guest can write: every
//! path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the shared
//! directory's descriptor, mounts target `/proc/self/fd/<n>` of a descriptor opened that way,
//! and unmounts use `UMOUNT_NOFOLLOW`. A link the guest planted makes an operation fail; it
//! never redirects it onto a host path.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::mounts::ParsedMount;

/// A failed operation under the shared directory.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path} (under the shared directory {shared}): {errno}")]
pub struct SharedDirError {
    /// What was done.
    pub action: &'static str,
    /// The path relative to the shared directory.
    pub path: PathBuf,
    /// The shared directory.
    pub shared: PathBuf,
    /// The error (ELOOP/EXDEV for a planted link).
    pub errno: Errno,
}

/// What to create at a bind target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A directory (for a directory source).
    Dir,
    /// An empty file (for a file source).
    File,
}

/// The shared directory of one sandbox.
pub struct SharedDir {
    root: PathBuf,
    fd: OwnedFd,
}

fn beneath() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

fn proc_fd(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `rel` split into its normal components; anything else (absolute, `..`) is refused.
fn components(rel: &Path) -> Result<Vec<&OsStr>, Errno> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Errno::EINVAL),
        })
        .collect()
}

impl SharedDir {
    /// Opens the shared directory `root` (itself trusted: the shim made it).
    pub fn open(root: &Path) -> Result<SharedDir, SharedDirError> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| SharedDirError {
            action: "opening",
            path: PathBuf::new(),
            shared: root.to_path_buf(),
            errno,
        })?;
        Ok(SharedDir {
            root: root.to_path_buf(),
            fd,
        })
    }

    fn error(&self, action: &'static str, path: &Path, errno: Errno) -> SharedDirError {
        SharedDirError {
            action,
            path: path.to_path_buf(),
            shared: self.root.clone(),
            errno,
        }
    }

    /// Opens `rel` (O_PATH) without following any link and without leaving the directory.
    pub fn open_beneath(&self, rel: &Path) -> Result<OwnedFd, SharedDirError> {
        openat2(self.fd.as_fd(), rel, beneath()).map_err(|e| self.error("opening", rel, e))
    }

    /// Creates the directories of `rel` (mode 0755) one by one, each resolved beneath the
    /// shared directory; existing directories are fine, links are not.
    pub fn create_dirs(&self, rel: &Path) -> Result<OwnedFd, SharedDirError> {
        let names = components(rel).map_err(|e| self.error("creating", rel, e))?;
        let mut done = PathBuf::new();
        let mut dir = self.open_beneath(Path::new("."))?;
        for name in names {
            done.push(name);
            match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.error("creating", &done, e)),
            }
            dir = openat2(
                dir.as_fd(),
                name,
                beneath().flags(
                    OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
                ),
            )
            .map_err(|e| self.error("opening", &done, e))?;
        }
        Ok(dir)
    }

    /// Binds host path `source` at `rel` (created as `kind`), read-only if asked.
    pub fn bind(
        &self,
        source: &Path,
        rel: &Path,
        kind: TargetKind,
        read_only: bool,
    ) -> Result<(), SharedDirError> {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let mount = ParsedMount {
            fs_type: "none".into(),
            source: source.to_string_lossy().into_owned(),
            flags,
            data: String::new(),
        };
        self.mount(&mount, rel, kind)
    }

    /// Mounts `mount` at `rel` (created as `kind`): the mount is made on a descriptor of the
    /// target; a read-only bind is then remounted read-only through a descriptor of the new
    /// mount (mount(2) ignores MS_RDONLY on the first bind).
    pub fn mount(
        &self,
        mount: &ParsedMount,
        rel: &Path,
        kind: TargetKind,
    ) -> Result<(), SharedDirError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel
            .file_name()
            .ok_or_else(|| self.error("mounting onto", rel, Errno::EINVAL))?;
        let dir = self.create_dirs(parent)?;
        match kind {
            TargetKind::Dir => {
                match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(self.error("creating", rel, e)),
                }
            }
            TargetKind::File => {
                let how = OpenHow::new()
                    .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                    .mode(Mode::from_bits_truncate(0o644))
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
                drop(openat2(dir.as_fd(), name, how).map_err(|e| self.error("creating", rel, e))?);
            }
        }
        let target =
            openat2(dir.as_fd(), name, beneath()).map_err(|e| self.error("opening", rel, e))?;
        let data = (!mount.data.is_empty()).then_some(mount.data.as_str());
        nix::mount::mount(
            Some(mount.source.as_str()),
            &proc_fd(&target),
            Some(mount.fs_type.as_str()),
            mount.flags,
            data,
        )
        .map_err(|e| self.error("mounting onto", rel, e))?;
        if mount.is_bind() && mount.flags.contains(MsFlags::MS_RDONLY) {
            let remount = || -> Result<(), Errno> {
                let mounted = openat2(dir.as_fd(), name, beneath())?;
                nix::mount::mount(
                    None::<&str>,
                    &proc_fd(&mounted),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
            };
            if let Err(e) = remount() {
                let _ = self.unmount(rel);
                return Err(self.error("remounting read-only", rel, e));
            }
        }
        Ok(())
    }

    /// Unmounts everything at `rel` (lazily, without following a link at its last component,
    /// its parents resolved beneath the shared directory). Nothing mounted or absent is fine.
    pub fn unmount(&self, rel: &Path) -> Result<(), SharedDirError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Some(name) = rel.file_name() else {
            return Err(self.error("unmounting", rel, Errno::EINVAL));
        };
        let dir = match self.open_beneath(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }) {
            Ok(dir) => dir,
            Err(e) if e.errno == Errno::ENOENT => return Ok(()),
            Err(e) => return Err(e),
        };
        let target = proc_fd(&dir).join(name);
        loop {
            match nix::mount::umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => continue,
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(self.error("unmounting", rel, e)),
            }
        }
    }

    /// The names in directory `rel` (resolved beneath, no links). Absent: empty.
    pub fn list(&self, rel: &Path) -> Result<Vec<std::ffi::OsString>, SharedDirError> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(self.error("listing", rel, e)),
        };
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| self.error("listing", rel, e))?;
        Ok(dir
            .iter()
            .filter_map(|entry| entry.ok())
            .map(|entry| {
                use std::os::unix::ffi::OsStrExt;
                OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string()
            })
            .filter(|name| name != "." && name != "..")
            .collect())
    }

    /// Removes the file or empty directory `rel` (its parents resolved beneath the shared
    /// directory; a link is removed, never followed). Absent is fine.
    pub fn remove(&self, rel: &Path) -> Result<(), SharedDirError> {
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let Some(name) = rel.file_name() else {
            return Err(self.error("removing", rel, Errno::EINVAL));
        };
        let dir = match self.open_beneath(parent.unwrap_or(Path::new("."))) {
            Ok(dir) => dir,
            Err(e) if e.errno == Errno::ENOENT => return Ok(()),
            Err(e) => return Err(e),
        };
        let result =
            nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir)
                .or_else(|e| match e {
                    Errno::ENOTDIR => nix::unistd::unlinkat(
                        dir.as_fd(),
                        name,
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    ),
                    other => Err(other),
                });
        match result {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.error("removing", rel, e)),
        }
    }
}

#[cfg(test)]
mod tests;
