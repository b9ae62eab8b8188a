//! Container root file systems: containerd's `CreateTaskRequest.rootfs` mounts, parsed for
//! mount(2) (the shim mounts them at `<shared>/<container-id>/rootfs` through
//! [`crate::shared_dir::SharedDir`], where the agent finds them).

use std::path::Path;

use nix::mount::MsFlags;

/// One rootfs mount as containerd sends it (`type`, `source`, `options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// File system type: "overlay", "bind", ...
    pub fs_type: String,
    /// Source: a path for bind, "overlay" for overlay.
    pub source: String,
    /// Options such as "ro", "rbind", "lowerdir=...".
    pub options: Vec<String>,
}

/// A mount ready for mount(2): flags split from file-system data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMount {
    /// Type passed to mount(2) ("none" for bind mounts).
    pub fs_type: String,
    /// Source path.
    pub source: String,
    /// MS_* flags.
    pub flags: MsFlags,
    /// Comma-joined options that are not flags (overlay's lowerdir/upperdir/workdir, ...).
    pub data: String,
}

impl ParsedMount {
    /// True for bind mounts (they need a separate read-only remount).
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// A rootfs that cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// More than one rootfs mount (layered mounts are not supported).
    #[error("{0} rootfs mounts given; Hull supports exactly one (overlay or bind)")]
    TooMany(usize),
    /// A type other than overlay or bind.
    #[error("unsupported rootfs mount type {0:?} (expected overlay or bind)")]
    UnsupportedType(String),
    /// An empty source.
    #[error("rootfs mount of type {0:?} has an empty source")]
    EmptySource(String),
}

/// Maps one option word to (flag, clear?) or `None` if it is file-system data.
fn option_flag(option: &str) -> Option<(MsFlags, bool)> {
    let flag = match option {
        "ro" => (MsFlags::MS_RDONLY, false),
        "rw" => (MsFlags::MS_RDONLY, true),
        "bind" => (MsFlags::MS_BIND, false),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, false),
        "nosuid" => (MsFlags::MS_NOSUID, false),
        "suid" => (MsFlags::MS_NOSUID, true),
        "nodev" => (MsFlags::MS_NODEV, false),
        "dev" => (MsFlags::MS_NODEV, true),
        "noexec" => (MsFlags::MS_NOEXEC, false),
        "exec" => (MsFlags::MS_NOEXEC, true),
        "noatime" => (MsFlags::MS_NOATIME, false),
        "atime" => (MsFlags::MS_NOATIME, true),
        "nodiratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, false),
        "strictatime" => (MsFlags::MS_STRICTATIME, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, false),
        "async" => (MsFlags::MS_SYNCHRONOUS, true),
        "dirsync" => (MsFlags::MS_DIRSYNC, false),
        "remount" => (MsFlags::MS_REMOUNT, false),
        "defaults" => (MsFlags::empty(), false),
        _ => return None,
    };
    Some(flag)
}

/// Parses containerd's rootfs mount into flags and data. Accepts "overlay" and "bind" (a bind
/// mount may also come as any type with a "bind"/"rbind" option).
pub fn parse_mount(spec: &MountSpec) -> Result<ParsedMount, MountError> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in &spec.options {
        match option_flag(option) {
            Some((flag, true)) => flags.remove(flag),
            Some((flag, false)) => flags.insert(flag),
            None => data.push(option.as_str()),
        }
    }
    let fs_type = match spec.fs_type.as_str() {
        "overlay" => "overlay",
        "bind" => {
            flags.insert(MsFlags::MS_BIND);
            "none"
        }
        _ if flags.contains(MsFlags::MS_BIND) => "none",
        other => return Err(MountError::UnsupportedType(other.to_string())),
    };
    if spec.source.is_empty() {
        return Err(MountError::EmptySource(spec.fs_type.clone()));
    }
    Ok(ParsedMount {
        fs_type: fs_type.to_string(),
        source: spec.source.clone(),
        flags,
        data: data.join(","),
    })
}

/// Picks the rootfs: one mount from containerd, or (none given) a bind mount of the spec's
/// `root.path` (absolute as given, as runc takes it; relative to the bundle; default `rootfs`),
/// which the client prepared.
pub fn rootfs_mount(
    specs: &[MountSpec],
    bundle: &Path,
    root_path: Option<&Path>,
) -> Result<ParsedMount, MountError> {
    match specs {
        [] => Ok(ParsedMount {
            fs_type: "none".into(),
            source: bundle
                .join(root_path.unwrap_or(Path::new("rootfs")))
                .to_string_lossy()
                .into_owned(),
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: String::new(),
        }),
        [one] => parse_mount(one),
        many => Err(MountError::TooMany(many.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fs_type: &str, source: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            fs_type: fs_type.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overlay_options_become_data() {
        let m = parse_mount(&spec(
            "overlay",
            "overlay",
            &["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"],
        ))
        .unwrap();
        assert_eq!(m.fs_type, "overlay");
        assert_eq!(m.flags, MsFlags::empty());
        assert_eq!(m.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
        assert!(!m.is_bind());
    }

    #[test]
    fn read_only_overlay_view() {
        let m = parse_mount(&spec("overlay", "overlay", &["ro", "lowerdir=/a:/b"])).unwrap();
        assert_eq!(m.flags, MsFlags::MS_RDONLY);
        assert_eq!(m.data, "lowerdir=/a:/b");
    }

    #[test]
    fn bind_mount_flags() {
        let m = parse_mount(&spec("bind", "/snap/1/fs", &["rbind", "rw"])).unwrap();
        assert_eq!(m.fs_type, "none");
        assert_eq!(m.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(m.data, "");
        let ro = parse_mount(&spec("none", "/x", &["bind", "ro", "nosuid"])).unwrap();
        assert!(ro.is_bind());
        assert!(ro.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let m = parse_mount(&spec("bind", "/x", &["ro", "rw", "noexec", "exec"])).unwrap();
        assert_eq!(m.flags, MsFlags::MS_BIND);
    }

    #[test]
    fn unsupported_and_malformed_mounts_are_rejected() {
        assert!(matches!(
            parse_mount(&spec("ext4", "/dev/vda", &[])),
            Err(MountError::UnsupportedType(t)) if t == "ext4"
        ));
        assert!(matches!(
            parse_mount(&spec("bind", "", &["rbind"])),
            Err(MountError::EmptySource(_))
        ));
        let two = [spec("bind", "/a", &[]), spec("bind", "/b", &[])];
        assert!(matches!(
            rootfs_mount(&two, Path::new("/b"), None),
            Err(MountError::TooMany(2))
        ));
    }

    #[test]
    fn no_mount_binds_the_bundle_rootfs() {
        let m = rootfs_mount(&[], Path::new("/bundle"), None).unwrap();
        assert_eq!(m.source, "/bundle/rootfs");
        assert!(m.is_bind());
        let m = rootfs_mount(&[], Path::new("/bundle"), Some(Path::new("/srv/root"))).unwrap();
        assert_eq!(
            m.source, "/srv/root",
            "an absolute root.path is used as it is"
        );
        let m = rootfs_mount(&[], Path::new("/bundle"), Some(Path::new("fs"))).unwrap();
        assert_eq!(m.source, "/bundle/fs");
    }
}
