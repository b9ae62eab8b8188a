//! Unit tests of install, uninstall, the manifest and the containerd plan.

use super::containerd::*;
use super::*;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

#[test]
fn readme_shows_the_runtime_class_and_the_containerd_snippet() {
    let readme = readme();
    assert!(
        readme.contains(RUNTIME_CLASS_YAML),
        "README.md must show RUNTIME_CLASS_YAML"
    );
    let snippet = runtime_snippet(Path::new("/etc/hull/config.toml"));
    assert!(readme.contains(&snippet), "README.md must show:\n{snippet}");
}

#[test]
fn glob_matching() {
    assert!(glob_match("*.toml", "hull.toml"));
    assert!(!glob_match("*.toml", "hull.toml.bak"));
    assert!(glob_match("h?ll*", "hull.toml"));
    assert!(glob_match("*", ""));
    assert!(!glob_match("a*b", "ac"));
    assert!(path_matches(
        Path::new("/etc/containerd/conf.d/*.toml"),
        Path::new("/etc/containerd/conf.d/hull.toml")
    ));
    assert!(path_matches(
        Path::new("/etc/*/conf.d/*"),
        Path::new("/etc/containerd/conf.d/hull.toml")
    ));
    assert!(!path_matches(
        Path::new("/etc/containerd/*.toml"),
        Path::new("/etc/containerd/conf.d/hull.toml")
    ));
}

fn main_file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("/r/etc/containerd/config.toml"), text)
}

#[test]
fn plan_follows_imports_and_refuses_to_lose_settings() {
    let drop_in = Path::new("/r/etc/containerd/conf.d/hull.toml");
    assert_eq!(plan(&[], drop_in), ContainerdPlan::WriteMainAndDropIn);
    let good = main_file("version = 2\nimports = [\"/r/etc/containerd/conf.d/*.toml\"]\n");
    assert_eq!(
        plan(std::slice::from_ref(&good), drop_in),
        ContainerdPlan::WriteDropIn
    );
    // Relative imports are relative to the main config's directory.
    let relative = main_file("version = 2\nimports = [\"conf.d/*.toml\"]\n");
    assert_eq!(plan(&[relative], drop_in), ContainerdPlan::WriteDropIn);
    let reason = |p| match p {
        ContainerdPlan::PrintSnippet(r) => r,
        other => panic!("{other:?}"),
    };
    let no_imports = main_file("version = 2\nroot = \"/var/lib/containerd\"\n");
    assert!(reason(plan(&[no_imports], drop_in)).contains("no `imports`"));
    let v1 = main_file("imports = [\"/r/etc/containerd/conf.d/*.toml\"]\n");
    assert!(reason(plan(&[v1], drop_in)).contains("version 1"));
    let broken = main_file("version = = 2");
    assert!(reason(plan(&[broken], drop_in)).contains("cannot be parsed"));
    let with_cri = main_file(
        "version = 2\nimports = [\"conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n",
    );
    assert!(reason(plan(&[with_cri], drop_in)).contains("replace it whole"));
    let other_drop_in = ConfigFile::parse(
        Path::new("/r/etc/containerd/conf.d/10-cri.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/x\"\n",
    );
    assert!(reason(plan(&[good, other_drop_in], drop_in)).contains("10-cri.toml"));
}

#[test]
fn the_cri_table_in_effect_is_the_last_one_loaded() {
    let main = main_file(&format!(
        "version = 2\nimports = [\"conf.d/*.toml\"]\n{}",
        runtime_snippet(Path::new("/etc/hull/config.toml"))
    ));
    let found = hull_runtime(std::slice::from_ref(&main)).unwrap();
    assert_eq!(found.config_path.as_deref(), Some("/etc/hull/config.toml"));
    assert_eq!(found.file, Path::new("/r/etc/containerd/config.toml"));
    let drop_in = ConfigFile::parse(
        Path::new("/r/etc/containerd/conf.d/hull.toml"),
        &drop_in_text(Path::new("/r/etc/hull/config.toml")),
    );
    let found = hull_runtime(&[main.clone(), drop_in]).unwrap();
    assert_eq!(
        found.config_path.as_deref(),
        Some("/r/etc/hull/config.toml")
    );
    // A later CRI table without hull hides the main config's hull runtime.
    let later = ConfigFile::parse(
        Path::new("/r/etc/containerd/conf.d/z.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n",
    );
    assert_eq!(hull_runtime(&[main, later]), None);
    assert_eq!(hull_runtime(&[main_file("version = 2\n")]), None);
}

#[test]
fn manifest_round_trips_and_rejects_damage() {
    let entries = vec![
        Entry::Dir(PathBuf::from("/r/usr")),
        Entry::File {
            path: PathBuf::from("/r/usr/a file"),
            sha256: "ab".repeat(32),
        },
    ];
    assert_eq!(
        manifest::parse(&manifest::render(&entries)).unwrap(),
        entries
    );
    assert!(manifest::parse("file abc /x\n").is_err());
    assert!(manifest::parse("dir relative\n").is_err());
    assert!(manifest::parse("rm -rf /\n").is_err());
}

/// A fake build: three "binaries" and a guest image.
fn fake_build(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    let guest = dir.join("guest");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&guest).unwrap();
    for b in BINARIES {
        std::fs::write(bin.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
    }
    for g in GUEST_FILES {
        std::fs::write(guest.join(g), g).unwrap();
    }
    (bin, guest)
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(format!("{}/", p.display()));
                stack.push(p);
            } else {
                out.push(format!(
                    "{} {}",
                    p.display(),
                    manifest::sha256_file(&p).unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_then_uninstall_leaves_the_prefix_as_it_was() {
    let build = tempfile::tempdir().unwrap();
    let (bin_dir, guest_dir) = fake_build(build.path());
    let root = tempfile::tempdir().unwrap();
    let prefix = root.path();
    std::fs::create_dir_all(prefix.join("usr/local")).unwrap();
    std::fs::write(prefix.join("usr/local/keep"), "x").unwrap();
    let before = listing(prefix);
    let opts = InstallOptions {
        prefix: prefix.to_path_buf(),
        guest_dir,
        bin_dir,
        config_from: None,
    };
    let report = install(&opts).unwrap();
    assert!(report.snippet.is_none(), "{:?}", report.notes);
    let layout = Layout::new(prefix);
    let config = crate::config::Config::load(Some(&layout.config())).unwrap();
    assert_eq!(config.kernel, layout.share_dir().join("vmlinux"));
    let files = load_configs(&layout.containerd_main());
    assert_eq!(files.len(), 2, "{files:?}");
    let found = hull_runtime(&files).unwrap();
    assert_eq!(
        found.config_path.as_deref(),
        Some(layout.config().to_str().unwrap())
    );
    // A second install refuses.
    assert!(matches!(install(&opts), Err(InstallError::Conflict(_))));
    // A changed file is kept and reported.
    std::fs::write(layout.config(), "mem_mib = 512\n").unwrap();
    let report = uninstall(prefix).unwrap();
    assert_eq!(report.kept, vec![layout.config()]);
    assert_eq!(
        report.kept_dirs,
        vec![
            layout.config().parent().unwrap().to_path_buf(),
            prefix.join("etc")
        ]
    );
    std::fs::remove_dir_all(prefix.join("etc")).unwrap();
    assert_eq!(listing(prefix), before);
    assert!(matches!(uninstall(prefix), Err(InstallError::Missing(_))));
}

#[test]
fn install_keeps_user_files_and_undoes_a_failed_install() {
    let build = tempfile::tempdir().unwrap();
    let (bin_dir, guest_dir) = fake_build(build.path());
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::new(root.path());
    std::fs::create_dir_all(layout.config().parent().unwrap()).unwrap();
    std::fs::write(layout.config(), "vcpus = 2\n").unwrap();
    std::fs::create_dir_all(layout.conf_d()).unwrap();
    let main = "version = 2\nroot = \"/x\"\n";
    std::fs::write(layout.containerd_main(), main).unwrap();
    let before = listing(root.path());
    let opts = InstallOptions {
        prefix: root.path().to_path_buf(),
        guest_dir: guest_dir.clone(),
        bin_dir: bin_dir.clone(),
        config_from: None,
    };
    let report = install(&opts).unwrap();
    assert!(report.notes.iter().any(|n| n.contains("kept the existing")));
    assert!(report.snippet.as_ref().unwrap().contains("ConfigPath"));
    assert_eq!(
        std::fs::read_to_string(layout.containerd_main()).unwrap(),
        main
    );
    assert!(!layout.drop_in().exists());
    uninstall(root.path()).unwrap();
    assert_eq!(listing(root.path()), before);
    // A missing source file: nothing is created.
    std::fs::remove_file(guest_dir.join("vmlinux")).unwrap();
    assert!(matches!(install(&opts), Err(InstallError::Missing(_))));
    assert_eq!(listing(root.path()), before);
    // A bad --config-from is refused before anything is written.
    std::fs::write(guest_dir.join("vmlinux"), "k").unwrap();
    let bad = build.path().join("bad.toml");
    std::fs::write(&bad, "vcpus = 0\n").unwrap();
    let bad_opts = InstallOptions {
        config_from: Some(bad),
        ..opts.clone()
    };
    assert!(matches!(install(&bad_opts), Err(InstallError::Config(_))));
    assert_eq!(listing(root.path()), before);
    // A failure half-way (etc/hull is a file): what was copied already is removed again.
    std::fs::remove_dir_all(root.path().join("etc/hull")).unwrap();
    std::fs::write(root.path().join("etc/hull"), "not a dir").unwrap();
    assert!(matches!(install(&opts), Err(InstallError::Io { .. })));
    assert!(!layout.bin_dir().exists());
    assert!(!root.path().join("usr").exists());
}
