//! Unit tests of `hull check`'s findings, over made-up inputs.

use std::path::Path;

use super::findings::*;
use super::image::*;
use super::Status;
use crate::config::SandboxMode;
use crate::install::containerd::{drop_in_text, ConfigFile};

/// A newc archive of `(name, mode, data)` entries.
fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |name: &str, mode: u32, data: &[u8]| {
        let header = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (name, mode, data) in entries {
        push(name, *mode, data);
    }
    push("TRAILER!!!", 0, b"");
    out
}

#[test]
fn cpio_entries_are_found_by_name() {
    let archive = newc(&[
        ("dev", 0o40755, b""),
        ("init", 0o100755, b"agent (agent API 1) x"),
        ("sbin/tool", 0o100755, b"abc"),
    ]);
    assert_eq!(
        cpio_file(&archive, "/init").unwrap(),
        Some(&b"agent (agent API 1) x"[..])
    );
    assert_eq!(cpio_file(&archive, "sbin/tool").unwrap(), Some(&b"abc"[..]));
    assert_eq!(cpio_file(&archive, "dev").unwrap(), None);
    assert_eq!(cpio_file(&archive, "nope").unwrap(), None);
    assert!(cpio_file(b"not a cpio", "init").is_err());
    assert!(cpio_file(&archive[..archive.len() - 200], "nope").is_err());
}

#[test]
fn agent_api_markers_are_read() {
    assert_eq!(
        agent_api_versions(b"..(agent API 1)..(agent API 1)"),
        vec![1]
    );
    assert_eq!(
        agent_api_versions(b"(agent API 12)(agent API 3)"),
        vec![3, 12]
    );
    assert!(agent_api_versions(b"(agent API x) (agent API 2").is_empty());
    assert_eq!(
        hull_proto::AGENT_API_MARKER,
        format!("(agent API {})", hull_proto::API_VERSION)
    );
}

#[test]
fn agent_in_image_compares_the_api_version() {
    let good = newc(&[("init", 0o100755, hull_proto::AGENT_API_MARKER.as_bytes())]);
    let f = agent_in_image(Ok(&good), hull_proto::API_VERSION);
    assert_eq!(f.status, Status::Ok, "{f:?}");
    let other = newc(&[("init", 0o100755, b"(agent API 99)")]);
    let f = agent_in_image(Ok(&other), hull_proto::API_VERSION);
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("[99]"), "{f:?}");
    let none = newc(&[("init", 0o100755, b"busybox")]);
    assert!(agent_in_image(Ok(&none), 1)
        .detail
        .contains("no agent API marker"));
    let no_init = newc(&[("etc", 0o40755, b"")]);
    assert!(agent_in_image(Ok(&no_init), 1).detail.contains("no /init"));
    assert_eq!(agent_in_image(Err("gone".into()), 1).status, Status::Fail);
}

#[test]
fn agent_in_pmem_image_finds_the_marker_anywhere_in_the_image() {
    let mut image = vec![0u8; 8192];
    let marker = format!("(agent API {})", hull_proto::API_VERSION);
    image[5000..5000 + marker.len()].copy_from_slice(marker.as_bytes());
    assert_eq!(
        agent_in_pmem_image(Ok(&image), hull_proto::API_VERSION).status,
        Status::Ok
    );
    let f = agent_in_pmem_image(Ok(&image), hull_proto::API_VERSION + 1);
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("rebuild"), "{}", f.detail);
    assert_eq!(agent_in_pmem_image(Ok(&[0u8; 64]), 1).status, Status::Fail);
    let gone = agent_in_pmem_image(Err("gone".into()), 1);
    assert!(
        gone.detail.contains("image not read: gone"),
        "{}",
        gone.detail
    );
}

#[test]
fn kvm_kinds_and_permissions() {
    let svm = "processor : 0\nflags : fpu svm sse\n";
    let plain = "flags : fpu sse\n";
    assert_eq!(kvm_kind(true, false, svm), KvmKind::Real);
    assert_eq!(kvm_kind(true, true, svm), KvmKind::Pvm);
    assert_eq!(kvm_kind(true, false, plain), KvmKind::Pvm);
    assert_eq!(kvm_kind(false, false, svm), KvmKind::Missing);
    let perms = Some((0o20660, 0, 106));
    let f = kvm(KvmKind::Real, SandboxMode::Vm, Ok(()), perms);
    assert_eq!(f.status, Status::Ok);
    assert!(f.detail.contains("660"), "{f:?}");
    let f = kvm(KvmKind::Real, SandboxMode::Vm, Err("EACCES".into()), perms);
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("EACCES"));
    let f = kvm(KvmKind::Pvm, SandboxMode::Vm, Ok(()), perms);
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("PVM"));
    assert_eq!(
        kvm(KvmKind::Pvm, SandboxMode::HostAgent, Ok(()), perms).status,
        Status::Warn
    );
    assert_eq!(
        kvm(KvmKind::Missing, SandboxMode::Vm, Ok(()), None).status,
        Status::Fail
    );
}

#[test]
fn versions_devices_cgroup_memory() {
    let p = Some(Path::new("/b/hull-vmm"));
    let f = binary_version("hull-vmm", p, Ok("hull-vmm 0.1.0\n".into()), Some("0.1.0"));
    assert_eq!(f.status, Status::Ok);
    let f = binary_version("hull-vmm", p, Ok("hull-vmm 0.0.9\n".into()), Some("0.1.0"));
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        binary_version("virtiofsd", None, Err("x".into()), None).status,
        Status::Fail
    );
    let f = binary_version("virtiofsd", p, Ok("virtiofsd 1.14.0\n".into()), None);
    assert!(f.detail.starts_with("1.14.0"), "{f:?}");

    assert_eq!(
        devices(&[("/dev/net/tun", true), ("/dev/vhost-net", true)]).status,
        Status::Ok
    );
    assert_eq!(
        devices(&[("/dev/net/tun", true), ("/dev/vhost-net", false)]).status,
        Status::Warn
    );
    assert_eq!(devices(&[("/dev/net/tun", false)]).status, Status::Fail);

    assert_eq!(
        cgroup("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n").status,
        Status::Ok
    );
    let hybrid =
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    assert_eq!(cgroup(hybrid).status, Status::Warn);
    assert!(cgroup(hybrid).detail.contains("/sys/fs/cgroup/unified"));
    assert_eq!(
        cgroup("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n").status,
        Status::Warn
    );

    let meminfo = "MemTotal: 4000000 kB\nMemAvailable:  1048576 kB\n";
    assert_eq!(memory(meminfo, 256).status, Status::Ok);
    assert_eq!(memory(meminfo, 4096).status, Status::Fail);
    assert_eq!(memory("", 256).status, Status::Warn);

    let f = containerd_version(Ok(
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1\n".into(),
    ));
    assert_eq!((f.status, f.detail.as_str()), (Status::Ok, "1.6.20~ds1"));
    assert_eq!(
        containerd_version(Ok(
            "containerd github.com/containerd/containerd v2.0.0 x".into()
        ))
        .status,
        Status::Warn
    );
    assert_eq!(
        containerd_version(Err("not found".into())).status,
        Status::Fail
    );
}

#[test]
fn runtime_configured_reads_the_effective_cri_table() {
    let main = Path::new("/r/etc/containerd/config.toml");
    let config = Path::new("/r/etc/hull/config.toml");
    assert_eq!(runtime_configured(main, &[], config).status, Status::Fail);
    let main_file = ConfigFile::parse(main, "version = 2\nimports = [\"conf.d/*.toml\"]\n");
    assert_eq!(
        runtime_configured(main, std::slice::from_ref(&main_file), config).status,
        Status::Fail
    );
    let drop_in = ConfigFile::parse(
        Path::new("/r/etc/containerd/conf.d/hull.toml"),
        &drop_in_text(config),
    );
    let f = runtime_configured(main, &[main_file.clone(), drop_in.clone()], config);
    assert_eq!(f.status, Status::Ok, "{f:?}");
    assert!(f.detail.contains("conf.d/hull.toml"));
    let f = runtime_configured(
        main,
        &[main_file, drop_in],
        Path::new("/etc/hull/config.toml"),
    );
    assert_eq!(f.status, Status::Warn, "{f:?}");
}

#[test]
fn jail_off_is_a_warning_and_no_cgroup_hierarchy_a_failure() {
    let parent = Path::new("hull-pods");
    let off = jail(SandboxMode::Vm, false, 65534, 65534, parent, Some("v1"));
    assert_eq!(off.status, Status::Warn);
    assert!(off.detail.contains("jail = false"), "{}", off.detail);
    let on = jail(SandboxMode::Vm, true, 4242, 4343, parent, Some("v2"));
    assert_eq!(on.status, Status::Ok);
    assert!(on.detail.contains("4242:4343") && on.detail.contains("hull-pods"));
    let no_cgroups = jail(SandboxMode::Vm, true, 4242, 4343, parent, None);
    assert_eq!(no_cgroups.status, Status::Fail);
    let host_agent = jail(SandboxMode::HostAgent, false, 1, 1, parent, None);
    assert_eq!(host_agent.status, Status::Ok);
}

#[test]
fn shared_memory_huge_pages_off_is_a_warning_that_says_how() {
    let on = guest_ram_pages(
        Some("always within_size [advise] never deny force\n"),
        false,
    );
    assert_eq!(on.status, Status::Ok, "{on:?}");
    let off = guest_ram_pages(
        Some("always within_size advise [never] deny force\n"),
        false,
    );
    assert_eq!(off.status, Status::Warn);
    assert!(off.detail.contains("echo advise"), "{off:?}");
    assert_eq!(guest_ram_pages(None, false).status, Status::Warn);
}

#[test]
fn the_jails_own_tmpfs_needs_only_that_huge_pages_are_not_denied() {
    let never = guest_ram_pages(Some("always within_size advise [never] deny force\n"), true);
    assert_eq!(never.status, Status::Ok, "{never:?}");
    assert!(never.detail.contains("huge=always tmpfs"), "{never:?}");
    assert_eq!(guest_ram_pages(None, true).status, Status::Warn);
    let deny = guest_ram_pages(Some("always within_size advise never [deny] force\n"), true);
    assert_eq!(deny.status, Status::Warn);
    assert!(deny.detail.contains("'deny'"), "{deny:?}");
}
