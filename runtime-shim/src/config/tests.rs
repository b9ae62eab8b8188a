//! Unit tests of the configuration file.

use super::*;

#[test]
fn empty_file_gives_documented_defaults() {
    let config = Config::parse("", Path::new("t.toml")).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.sandbox.mode, SandboxMode::Vm);
    assert_eq!(config.vcpus, 1);
    assert_eq!(config.mem_mib, 256);
    assert_eq!(config.sandbox.run_dir, Path::new("/run/hull"));
}

#[test]
fn full_file_is_read() {
    let text = r#"
        kernel = "/k/vmlinux"
        initramfs = "/k/initramfs.cpio"
        vmm = "/bin/hull-vmm"
        vcpus = 2
        mem_mib = 512
        kernel_params = "quiet"
        virtiofsd = "/usr/libexec/virtiofsd"
        debug = true
        [sandbox]
        mode = "host-agent"
        run_dir = "/tmp/hull"
        agent = "/bin/hull-agent"
        boot_timeout_secs = 7
    "#;
    let config = Config::parse(text, Path::new("t.toml")).unwrap();
    assert_eq!(config.kernel, Path::new("/k/vmlinux"));
    assert_eq!(config.vcpus, 2);
    assert_eq!(config.mem_mib, 512);
    assert!(config.debug);
    assert_eq!(config.sandbox.mode, SandboxMode::HostAgent);
    assert_eq!(config.sandbox.run_dir, Path::new("/tmp/hull"));
    assert_eq!(config.sandbox.boot_timeout(), Duration::from_secs(7));
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_with_the_key_named() {
    let err = Config::parse("vcpu = 2", Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("vcpu"), "{err}");
    let err = Config::parse("[sandbox]\nmode = \"container\"", Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("container"), "{err}");
    let err = Config::parse("vcpus = 0", Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("vcpus = 0"), "{err}");
    let err = Config::parse("mem_mib = 1", Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("mem_mib"), "{err}");
    let err = Config::parse("[sandbox]\nrun_dir = \"rel\"", Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn explicit_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(Some(&dir.path().join("absent.toml"))).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn explicit_file_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "mem_mib = 1024\n").unwrap();
    assert_eq!(Config::load(Some(&path)).unwrap().mem_mib, 1024);
}

#[test]
fn missing_guest_image_is_named() {
    let config = Config {
        kernel: PathBuf::from("/nonexistent/vmlinux"),
        ..Config::default()
    };
    let err = config.check_sandbox_prerequisites().unwrap_err();
    let text = err.to_string();
    // Either KVM is missing on this machine, or the kernel is named.
    assert!(
        text.contains("/dev/kvm") || text.contains("/nonexistent/vmlinux"),
        "{text}"
    );
}

#[test]
fn binaries_resolve_by_path_and_name() {
    assert_eq!(
        resolve_binary(Path::new("/bin/sh")),
        Some(PathBuf::from("/bin/sh"))
    );
    assert_eq!(resolve_binary(Path::new("/nonexistent/x")), None);
    assert!(resolve_binary(Path::new("sh")).is_some());
    assert_eq!(resolve_binary(Path::new("")), None);
}

/// The key paths (`a`, `sandbox.b`) of a JSON object, recursively.
fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, inner) in map {
            let path = format!("{prefix}{key}");
            out.push(path.clone());
            key_paths(inner, &format!("{path}."), out);
        }
    }
}

#[test]
fn default_config_text_is_the_default_config_with_every_key() {
    let parsed = Config::parse(DEFAULT_CONFIG_TOML, Path::new("default.toml")).unwrap();
    assert_eq!(parsed, Config::default());
    let mut want = Vec::new();
    key_paths(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut want,
    );
    let table: toml::Value = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    let mut have = Vec::new();
    key_paths(&serde_json::to_value(table).unwrap(), "", &mut have);
    want.sort();
    have.sort();
    assert_eq!(have, want, "DEFAULT_CONFIG_TOML must name every key");
    // Every key line has a comment line above it (or belongs to a commented group).
    assert!(
        DEFAULT_CONFIG_TOML
            .lines()
            .filter(|l| l.starts_with('#'))
            .count()
            >= 12
    );
}

#[test]
fn config_text_for_a_prefix_moves_the_guest_image() {
    assert_eq!(config_file_text(Path::new("/")), DEFAULT_CONFIG_TOML);
    let text = config_file_text(Path::new("/tmp/root"));
    let config = Config::parse(&text, Path::new("c.toml")).unwrap();
    assert_eq!(config.kernel, Path::new("/tmp/root/usr/share/hull/vmlinux"));
    assert_eq!(
        config.initramfs,
        Path::new("/tmp/root/usr/share/hull/initramfs.cpio")
    );
    assert_eq!(
        config.image,
        Path::new("/tmp/root/usr/share/hull/rootfs.img")
    );
    assert_eq!(
        Config {
            kernel: Config::default().kernel,
            initramfs: Config::default().initramfs,
            image: Config::default().image,
            ..config
        },
        Config::default()
    );
}

#[test]
fn jail_keys_are_checked() {
    let t = Path::new("t.toml");
    let config = Config::parse(
        "jail = false\njail_uid = 4242\npod_cgroup_parent = \"kubepods/hull\"",
        t,
    )
    .unwrap();
    assert!(!config.jail);
    assert_eq!(config.jail_uid, 4242);
    assert_eq!(config.pod_cgroup_parent, Path::new("kubepods/hull"));
    for (text, named) in [
        ("jail_uid = 0", "jail_uid = 0"),
        ("jail_gid = 0", "jail_gid = 0"),
        ("jail_nofile = 3", "jail_nofile = 3"),
        ("jail_fsize_mib = 0", "jail_fsize_mib = 0"),
        ("pod_cgroup_parent = \"/abs\"", "pod_cgroup_parent"),
        ("pod_cgroup_parent = \"a/../b\"", "pod_cgroup_parent"),
        ("pod_cgroup_parent = \"\"", "pod_cgroup_parent"),
    ] {
        let err = Config::parse(text, t).unwrap_err();
        assert!(err.to_string().contains(named), "{text}: {err}");
    }
}
