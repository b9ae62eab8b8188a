//! `hull install` into a temporary root, `hull check` against it, a real containerd loading the
//! installed drop-in and running a container with the installed shim (host-agent mode), then
//! `hull uninstall` leaving the root exactly as it was. Plus the cases where install must not
//! touch the user's files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::containerd::{containerd_or_skip, required, skip_reason, target_dir, Options};
use common::text;

fn hull(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hull"))
        .args(args)
        .output()
        .unwrap()
}

/// A newc cpio with one executable `/init` holding `data`.
fn newc_with_init(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, mode, body) in [("init", 0o100755u32, data), ("TRAILER!!!", 0, &b""[..])] {
        out.extend_from_slice(
            format!(
                "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name.len() + 1, 0
            )
            .as_bytes(),
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(body);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

/// A build directory: the real shim and hull, hull-vmm (the built one, or a stand-in that only
/// answers --version), a small kernel stand-in, and an initramfs whose /init and a pmem root
/// image that carry the agent API marker.
fn fake_build(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    let guest = dir.join("guest");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_containerd-shim-hull-v2"),
        bin.join("containerd-shim-hull-v2"),
    )
    .unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_hull"), bin.join("hull")).unwrap();
    let vmm = target_dir().join("hull-vmm");
    if vmm.exists() {
        std::fs::copy(&vmm, bin.join("hull-vmm")).unwrap();
    } else {
        std::fs::write(
            bin.join("hull-vmm"),
            format!("#!/bin/sh\necho hull-vmm {}\n", env!("CARGO_PKG_VERSION")),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(bin.join("hull-vmm"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(guest.join("vmlinux"), b"\x7fELF stand-in kernel").unwrap();
    let init = format!("hull-agent stand-in {}", hull_proto::AGENT_API_MARKER);
    std::fs::write(
        guest.join("initramfs.cpio"),
        newc_with_init(init.as_bytes()),
    )
    .unwrap();
    let mut image = vec![0u8; 2 << 20];
    image[1 << 20..(1 << 20) + init.len()].copy_from_slice(init.as_bytes());
    std::fs::write(guest.join("rootfs.img"), image).unwrap();
    (bin, guest)
}

/// Every path under `root` with its type, mode and (for files) content checksum.
fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let sum = if meta.is_file() {
                hull_runtime::install::manifest::sha256_file(&path).unwrap()
            } else {
                String::new()
            };
            out.push(format!("{} {:o} {sum}", path.display(), meta.mode()));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `hull check` line of one finding.
fn check_line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().next() == Some(what))
        .unwrap_or_else(|| panic!("no {what} line in:\n{report}"))
}

#[test]
fn install_check_containerd_run_uninstall() {
    if let Some(reason) = skip_reason(&Options::default()) {
        assert!(
            !required(),
            "install: cannot run here ({reason}), and CI says it must"
        );
        eprintln!("SKIPPED install: {reason}");
        return;
    }
    let build = tempfile::tempdir().unwrap();
    let (bin_dir, guest_dir) = fake_build(build.path());
    let root = tempfile::tempdir().unwrap();
    let prefix = root.path();
    std::fs::create_dir_all(prefix.join("etc")).unwrap();
    std::fs::write(prefix.join("etc/hostname"), "unchanged\n").unwrap();
    let before = listing(prefix);

    // Host-agent mode for this machine: the config install takes instead of its defaults.
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("hull");
    let config = build.path().join("hull.toml");
    std::fs::write(
        &config,
        format!(
            "kernel = \"{p}/usr/share/hull/vmlinux\"\nimage = \"{p}/usr/share/hull/rootfs.img\"\n\
             initramfs = \"{p}/usr/share/hull/initramfs.cpio\"\n\
             debug = true\n[sandbox]\nmode = \"host-agent\"\nrun_dir = \"{}\"\nagent = \"{}\"\n",
            run_dir.display(),
            target_dir().join("hull-agent").display(),
            p = prefix.display()
        ),
    )
    .unwrap();
    let p = prefix.to_str().unwrap();
    let out = hull(&[
        "install",
        "--prefix",
        p,
        "--from",
        guest_dir.to_str().unwrap(),
        "--bin-dir",
        bin_dir.to_str().unwrap(),
        "--config-from",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains(hull_runtime::install::RUNTIME_CLASS_YAML),
        "{}",
        text(&out)
    );
    let drop_in = prefix.join("etc/containerd/conf.d/hull.toml");
    assert!(drop_in.is_file(), "{}", text(&out));

    let out = hull(&["check", "--prefix", p]);
    let report = stdout(&out);
    for what in ["shim", "kernel", "image", "agent", "hull-vmm", "runtime"] {
        let line = check_line(&report, what);
        assert!(line.contains(" ok "), "{line}\n{}", text(&out));
    }
    assert!(check_line(&report, "runtime").contains(drop_in.to_str().unwrap()));
    assert!(check_line(&report, "shim").contains(p));

    {
        // A real containerd importing the installed main config (which imports conf.d/*.toml),
        // finding the installed shim first on its $PATH.
        let ctrd = containerd_or_skip(
            "install",
            &Options {
                imports: vec![prefix.join("etc/containerd/config.toml")],
                bin_dirs: vec![prefix.join("usr/local/bin")],
                ..Options::default()
            },
        )
        .unwrap();
        let dump = Command::new("containerd")
            .arg("--config")
            .arg(ctrd.dir().join("config.toml"))
            .args(["config", "dump"])
            .output()
            .unwrap();
        let dump = stdout(&dump);
        let installed_config = prefix.join("etc/hull/config.toml");
        assert!(
            dump.contains(&drop_in.display().to_string())
                && dump.contains(r#"containerd.runtimes.hull]"#)
                && dump.contains(&format!("ConfigPath = \"{}\"", installed_config.display()))
                && dump.contains(r#"containerd.runtimes.runc]"#),
            "containerd did not load the drop-in:\n{dump}"
        );
        let out = ctrd.run(
            "installed",
            &["--runtime-config-path", installed_config.to_str().unwrap()],
            &["echo", "hello from the installed shim"],
        );
        assert!(
            out.status.success() && stdout(&out).contains("hello from the installed shim"),
            "{}\n{}",
            text(&out),
            ctrd.log_tail()
        );
        // The installed config was used (its run_dir); the installed shim comes first on
        // containerd's $PATH.
        assert!(run_dir.is_dir(), "{}", ctrd.log_tail());
    }

    let out = hull(&["uninstall", "--prefix", p]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stdout(&out).contains("kept"), "{}", text(&out));
    assert_eq!(listing(prefix), before, "{}", text(&out));
}

#[test]
fn install_keeps_the_users_config_and_prints_the_snippet_without_imports() {
    let build = tempfile::tempdir().unwrap();
    let (bin_dir, guest_dir) = fake_build(build.path());
    let root = tempfile::tempdir().unwrap();
    let prefix = root.path();
    std::fs::create_dir_all(prefix.join("etc/hull")).unwrap();
    std::fs::create_dir_all(prefix.join("etc/containerd")).unwrap();
    std::fs::write(prefix.join("etc/hull/config.toml"), "mem_mib = 512\n").unwrap();
    let main = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"mine\"\n";
    std::fs::write(prefix.join("etc/containerd/config.toml"), main).unwrap();
    let before = listing(prefix);
    let p = prefix.to_str().unwrap();
    let out = hull(&[
        "install",
        "--prefix",
        p,
        "--from",
        guest_dir.to_str().unwrap(),
        "--bin-dir",
        bin_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    assert!(said.contains("kept the existing"), "{said}");
    assert!(said.contains("no `imports`"), "{said}");
    assert!(
        said.contains(&hull_runtime::install::containerd::runtime_snippet(
            &prefix.join("etc/hull/config.toml")
        )),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/containerd/config.toml")).unwrap(),
        main
    );
    assert!(!prefix.join("etc/containerd/conf.d").exists());
    let out = hull(&["check", "--prefix", p]);
    assert!(
        check_line(&stdout(&out), "runtime").contains("FAIL"),
        "{}",
        text(&out)
    );
    let out = hull(&["uninstall", "--prefix", p]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(listing(prefix), before);
}
