use super::*;
use crate::container::syscall::RecordingSyscall;

fn spec(rootfs_extra: &str) -> Spec {
    let json = format!(
        r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs","readonly":true}},
        "hostname":"box",
        "process":{{"args":["sh"],"cwd":"/work","user":{{"uid":1000,"gid":1000,"additionalGids":[10]}},
          "rlimits":[{{"type":"RLIMIT_NOFILE","soft":100,"hard":200}}],
          "noNewPrivileges":true,
          "capabilities":{{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}}}},
        "mounts":[
          {{"destination":"/proc","type":"proc","source":"proc"}},
          {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}},
          {{"destination":"/data","type":"bind","source":"{rootfs_extra}","options":["rbind","ro","rprivate"]}}
        ],
        "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"uts"}}],
          "maskedPaths":["/no/such/masked"],"sysctl":{{"net.ipv4.ip_forward":"1"}}}}}}"#
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn rootfs_set_up_order() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let sys = RecordingSyscall::new();
    prepare_rootfs(&sys, &rootfs, &spec(&data.display().to_string())).unwrap();
    let calls = sys.calls();
    let r = rootfs.display().to_string();
    let rec_slave = (MsFlags::MS_SLAVE | MsFlags::MS_REC).bits();
    let expected_prefix = [
        format!("mount - / - {rec_slave:#x} -"),
        format!(
            "mount {r} {r} - {:#x} -",
            (MsFlags::MS_BIND | MsFlags::MS_REC).bits()
        ),
        format!("mount proc {r}/proc proc 0x0 -"),
        format!(
            "mount tmpfs {r}/dev tmpfs {:#x} mode=755",
            MsFlags::MS_NOSUID.bits()
        ),
        format!(
            "mount {} {r}/data - {:#x} -",
            data.display(),
            (MsFlags::MS_BIND | MsFlags::MS_REC).bits()
        ),
        format!(
            "mount - {r}/data - {:#x} -",
            // The recorder reports no flags for the source: a strictatime mount, kept so.
            (MsFlags::MS_RDONLY | MsFlags::MS_STRICTATIME | MsFlags::MS_BIND | MsFlags::MS_REMOUNT)
                .bits()
        ),
        format!(
            "mount - {r}/data - {:#x} -",
            (MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()
        ),
    ];
    assert_eq!(
        &calls[..expected_prefix.len()],
        &expected_prefix[..],
        "{calls:#?}"
    );
    // the default devices are bind-mounted into the fresh /dev before the root switch
    let null_bind = calls
        .iter()
        .position(|c| c.starts_with(&format!("mount /dev/null {r}/dev/null")))
        .expect("/dev/null bind");
    let pivot = calls
        .iter()
        .position(|c| c == "pivot_root . .")
        .expect("pivot_root");
    assert!(null_bind < pivot);
    assert_eq!(calls[pivot - 1], format!("chdir {r}"));
    assert_eq!(calls[pivot + 1], "umount .");
    assert_eq!(calls[pivot + 2], "chdir /");
    let tail: Vec<&str> = calls[pivot + 3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        // Hostname and sysctls before any read-only remount (runc's order: containerd's
        // sandbox spec makes /proc/sys read-only and carries the pod's sysctls).
        [
            "sethostname box",
            "write /proc/sys/net/ipv4/ip_forward 1",
            format!(
                "mount - / - {:#x} -",
                (MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY).bits()
            )
            .as_str(),
        ]
    );
    assert!(rootfs.join("dev/ptmx").symlink_metadata().is_ok());
}

#[test]
fn a_failing_mount_stops_the_set_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let sys = RecordingSyscall::failing_on("mount proc");
    let err = prepare_rootfs(&sys, dir.path(), &spec("/nonexistent")).unwrap_err();
    assert!(err.to_string().contains("mount proc"), "{err}");
    assert!(!sys.calls().iter().any(|c| c.starts_with("pivot_root")));
}

#[test]
fn process_set_up_order_drops_privileges_before_no_new_privs() {
    let spec = spec("/x");
    let process = spec.process().as_ref().unwrap();
    let sys = RecordingSyscall::new();
    let no_seccomp = |_: &seccompiler::BpfProgram| -> Result<(), SetupError> { Ok(()) };
    prepare_process(&sys, process, true, &[], &no_seccomp).unwrap();
    finish_process(&sys, process, &[], &no_seccomp).unwrap();
    let calls = sys.calls();
    let kill = 1u64 << 5;
    let mut expected = vec![
        "setsid".to_string(),
        "tiocsctty 0".to_string(),
        "fchown 0 1000:1000".to_string(),
        format!("setrlimit {} 100 200", libc::RLIMIT_NOFILE),
    ];
    expected.extend(
        (0..=caps::LAST_CAP)
            .filter(|c| *c != 5)
            .map(|c| format!("capbset_drop {c}")),
    );
    expected.extend([
        "keepcaps true".to_string(),
        "setgroups [10]".to_string(),
        "setgid 1000".to_string(),
        "setuid 1000".to_string(),
        "keepcaps false".to_string(),
        format!("capset e={kill:#x} p={kill:#x} i=0x0"),
        "chdir /work".to_string(),
        "no_new_privs".to_string(),
    ]);
    assert_eq!(calls, expected);
}

#[test]
fn mount_options_parse() {
    let opts: Vec<String> = [
        "nosuid", "ro", "rw", "rslave", "mode=755", "size=64k", "bind",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let parsed = parse_mount_options(&opts);
    assert_eq!(parsed.flags, MsFlags::MS_NOSUID);
    assert_eq!(parsed.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
    assert!(parsed.bind && !parsed.recursive);
    assert_eq!(parsed.data, "mode=755,size=64k");
}

#[test]
fn bind_remounts_keep_the_restrictions_of_the_bound_mount() {
    let share = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME;
    // `rbind,nosuid` of a nodev share stays nodev and keeps its atime behaviour.
    assert_eq!(
        bind_remount_flags(MsFlags::MS_NOSUID, share),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME
    );
    // A read-only source stays read-only; the spec's own atime flag wins.
    assert_eq!(
        bind_remount_flags(
            MsFlags::MS_NOATIME,
            MsFlags::MS_RDONLY | MsFlags::MS_RELATIME
        ),
        MsFlags::MS_NOATIME | MsFlags::MS_RDONLY
    );
    // A strictatime source (no atime flag in statvfs) stays strictatime.
    assert_eq!(
        bind_remount_flags(MsFlags::MS_RDONLY, MsFlags::empty()),
        MsFlags::MS_RDONLY | MsFlags::MS_STRICTATIME
    );
}
