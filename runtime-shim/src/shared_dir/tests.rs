//! Planted links and swapped directories: a "guest" prepares the shared directory, the shim's
//! operations must fail or stay inside, and a victim directory outside proves nothing there
//! was touched.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

struct Scene {
    _dir: tempfile::TempDir,
    shared: PathBuf,
    victim: PathBuf,
    source: PathBuf,
}

fn scene() -> Option<Scene> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for mount(2)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let victim = dir.path().join("victim");
    let source = dir.path().join("source");
    for d in [&shared, &victim, &source] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(victim.join("keep"), b"victim").unwrap();
    std::fs::write(source.join("data"), b"host data").unwrap();
    Some(Scene {
        _dir: dir,
        shared,
        victim,
        source,
    })
}

fn mounted_under(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(path.to_str().unwrap())
}

fn victim_untouched(s: &Scene) {
    let entries: Vec<_> = std::fs::read_dir(&s.victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("keep")]);
    assert_eq!(std::fs::read(s.victim.join("keep")).unwrap(), b"victim");
    assert!(!mounted_under(&s.victim), "a mount landed in the victim");
}

#[test]
fn bind_read_only_and_back() {
    let Some(s) = scene() else { return };
    let shared = SharedDir::open(&s.shared).unwrap();
    let rel = Path::new("c1/mounts/0");
    shared.bind(&s.source, rel, TargetKind::Dir, true).unwrap();
    assert_eq!(
        std::fs::read(s.shared.join("c1/mounts/0/data")).unwrap(),
        b"host data"
    );
    let err = std::fs::write(s.shared.join("c1/mounts/0/new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // A file bind.
    let file_rel = Path::new("c1/mounts/1");
    shared
        .bind(&s.source.join("data"), file_rel, TargetKind::File, false)
        .unwrap();
    std::fs::write(s.shared.join(file_rel), b"written from the guest").unwrap();
    assert_eq!(
        std::fs::read(s.source.join("data")).unwrap(),
        b"written from the guest"
    );
    shared.unmount(rel).unwrap();
    shared.unmount(file_rel).unwrap();
    shared.remove(rel).unwrap();
    shared.remove(file_rel).unwrap();
    assert!(!mounted_under(&s.shared));
    assert!(!s.shared.join(rel).exists());
    // Twice is fine.
    shared.unmount(rel).unwrap();
    shared.remove(rel).unwrap();
}

#[test]
fn planted_links_are_never_followed() {
    let Some(s) = scene() else { return };
    let shared = SharedDir::open(&s.shared).unwrap();
    // A link in place of the container's directory.
    symlink(&s.victim, s.shared.join("c1")).unwrap();
    let err = shared
        .bind(&s.source, Path::new("c1/mounts/0"), TargetKind::Dir, false)
        .unwrap_err();
    assert!(
        matches!(err.errno, Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR),
        "{err}"
    );
    // A link at the last component.
    std::fs::create_dir_all(s.shared.join("c2/mounts")).unwrap();
    symlink(&s.victim, s.shared.join("c2/mounts/0")).unwrap();
    assert!(shared
        .bind(&s.source, Path::new("c2/mounts/0"), TargetKind::Dir, false)
        .is_err());
    symlink(s.victim.join("keep"), s.shared.join("c2/mounts/1")).unwrap();
    assert!(shared
        .bind(
            &s.source.join("data"),
            Path::new("c2/mounts/1"),
            TargetKind::File,
            false
        )
        .is_err());
    // A relative link that climbs out.
    symlink("../../victim", s.shared.join("c3")).unwrap();
    assert!(shared
        .bind(&s.source, Path::new("c3/x"), TargetKind::Dir, false)
        .is_err());
    // Teardown through planted links: unmount and remove touch only the links.
    shared.unmount(Path::new("c1/mounts/0")).unwrap_err();
    shared.unmount(Path::new("c2/mounts/0")).unwrap();
    shared.remove(Path::new("c2/mounts/0")).unwrap();
    shared.remove(Path::new("c1")).unwrap();
    assert!(std::fs::symlink_metadata(s.shared.join("c1")).is_err());
    assert!(shared.create_dirs(Path::new("../victim/x")).is_err());
    victim_untouched(&s);
}

#[test]
fn unmount_through_a_link_leaves_the_victims_mount_alone() {
    let Some(s) = scene() else { return };
    let shared = SharedDir::open(&s.shared).unwrap();
    // The victim has a mount of its own; the guest links to it from the shared dir.
    std::fs::create_dir(s.victim.join("m")).unwrap();
    nix::mount::mount(
        Some(&s.source),
        &s.victim.join("m"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    std::fs::create_dir(s.shared.join("evil")).unwrap();
    symlink(s.victim.join("m"), s.shared.join("evil/rootfs")).unwrap();
    shared.unmount(Path::new("evil/rootfs")).unwrap();
    shared.remove(Path::new("evil/rootfs")).unwrap();
    let still = mounted_under(&s.victim.join("m"));
    nix::mount::umount2(&s.victim.join("m"), MntFlags::MNT_DETACH).unwrap();
    assert!(
        still,
        "the victim's mount was unmounted through a planted link"
    );
    assert!(s.source.join("data").exists());
}
