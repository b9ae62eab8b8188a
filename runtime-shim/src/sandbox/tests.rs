use std::path::Path;

use super::cleanup::{mounts_below, unescape_for_test};
use super::processes::{read_pids_file, stop_processes, write_pids_file, ProcessRecord};
use super::*;

#[test]
fn paths_are_under_the_sandbox_dir() {
    let p = SandboxPaths::new(Path::new("/run/hull"), "sb1");
    assert_eq!(p.shared, Path::new("/run/hull/sb1/shared"));
    assert_eq!(p.vsock_socket, Path::new("/run/hull/sb1/vsock.sock"));
    assert_eq!(SandboxPaths::rootfs_rel("c1"), Path::new("c1/rootfs"));
}

#[test]
fn hostnames_are_sanitised() {
    assert_eq!(hostname_for("Pod_1.x"), "pod-1-x");
    assert_eq!(hostname_for("..."), "hull");
    assert_eq!(hostname_for(&"a".repeat(100)).len(), 63);
}

#[test]
fn pids_file_round_trip_skips_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pids");
    let vmm = ProcessRecord {
        pid: 1234,
        start_time: 77,
    };
    let fsd = ProcessRecord {
        pid: 99,
        start_time: 5,
    };
    write_pids_file(&path, &[("hull-vmm", vmm), ("virtiofsd", fsd)]).unwrap();
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap() + "junk\ninit 1 3\nx notanumber 1\nold 55\n",
    )
    .unwrap();
    assert_eq!(
        read_pids_file(&path),
        vec![
            ("hull-vmm".to_string(), vmm),
            ("virtiofsd".to_string(), fsd)
        ]
    );
}

#[test]
fn a_process_is_known_by_pid_and_start_time_not_by_name() {
    let me = ProcessRecord::of(std::process::id()).unwrap();
    assert!(me.is_alive());
    let recycled = ProcessRecord {
        start_time: me.start_time + 1,
        ..me
    };
    assert!(
        !recycled.is_alive(),
        "same pid, other start time: another process"
    );
    assert!(ProcessRecord::of(u32::MAX - 1).is_none());
}

#[tokio::test]
async fn stop_processes_stops_a_process_whatever_its_name() {
    let mut child = tokio::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let record = ProcessRecord::of(child.id().unwrap()).unwrap();
    stop_processes(&[("a-name-that-is-not-sleep", record)]).await;
    let status = child.wait().await.unwrap();
    assert!(!status.success());
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(unescape_for_test("/a\\040b\\134c"), "/a b\\c");
    assert_eq!(unescape_for_test("/plain"), "/plain");
    assert_eq!(unescape_for_test("/trailing\\04"), "/trailing\\04");
    assert!(mounts_below(Path::new("/definitely/not/mounted")).is_empty());
}

#[test]
fn cleanup_unmounts_a_container_moved_deeper_before_removing_anything() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for mount(2)");
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let paths = SandboxPaths::new(run.path(), "sb1");
    let source = run.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("precious"), b"x").unwrap();
    std::fs::create_dir_all(&paths.shared).unwrap();
    let shared = SharedDir::open(&paths.shared).unwrap();
    shared
        .bind(
            &source,
            Path::new("c1/rootfs"),
            crate::shared_dir::TargetKind::Dir,
            false,
        )
        .unwrap();
    // The guest moves the container's directory one level deeper.
    std::fs::create_dir(paths.shared.join("deep")).unwrap();
    std::fs::rename(paths.shared.join("c1"), paths.shared.join("deep/c1")).unwrap();
    cleanup::cleanup_dir(&paths);
    assert!(
        source.join("precious").exists(),
        "the mounted source was emptied"
    );
    assert!(mounts_below(run.path()).is_empty());
    assert!(!paths.dir.exists());
}

#[test]
fn a_seccomp_kill_is_named() {
    use std::os::unix::process::ExitStatusExt;
    let sigsys = std::process::ExitStatus::from_raw(libc::SIGSYS);
    assert!(super::processes::death_reason("hull-vmm", sigsys).contains("seccomp"));
    let exit1 = std::process::ExitStatus::from_raw(1 << 8);
    assert!(super::processes::death_reason("hull-vmm", exit1).contains("exited unexpectedly"));
}

#[test]
fn vmm_is_asked_for_free_page_reporting_as_the_config_says() {
    let paths = SandboxPaths::new(Path::new("/run/hull"), "sb1");
    let size = crate::cri::sizing::VmSize {
        vcpus: 1,
        mem_mib: 256,
    };
    let args_with = |free_page_reporting| {
        let config = crate::config::Config {
            free_page_reporting,
            ..Default::default()
        };
        let (_, cmd) = launch::vmm_command(&config, &paths, size, &[], None).unwrap();
        cmd.as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert!(args_with(true).contains(&"--free-page-reporting".to_string()));
    assert!(!args_with(false).contains(&"--free-page-reporting".to_string()));
}

#[test]
fn vmm_boots_the_pmem_image_by_default_and_the_initramfs_without_one() {
    let paths = SandboxPaths::new(Path::new("/run/hull"), "sb1");
    let size = crate::cri::sizing::VmSize {
        vcpus: 1,
        mem_mib: 256,
    };
    let args_of = |config: &crate::config::Config| {
        let (_, cmd) = launch::vmm_command(config, &paths, size, &[], None).unwrap();
        cmd.as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let after = |args: &[String], flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).cloned()
    };
    let initramfs = args_of(&crate::config::Config {
        image: "".into(),
        ..Default::default()
    });
    assert_eq!(
        after(&initramfs, "--initrd").as_deref(),
        Some("/usr/share/hull/initramfs.cpio")
    );
    assert!(!initramfs.contains(&"--pmem".to_string()));
    assert!(!after(&initramfs, "--cmdline").unwrap().contains("root="));

    let pmem = args_of(&crate::config::Config::default());
    assert_eq!(
        after(&pmem, "--pmem").as_deref(),
        Some("/usr/share/hull/rootfs.img")
    );
    assert!(!pmem.contains(&"--initrd".to_string()));
    let cmdline = after(&pmem, "--cmdline").unwrap();
    assert!(
        cmdline.contains(crate::config::PMEM_ROOT_PARAMS),
        "{cmdline}"
    );
}

#[tokio::test]
async fn the_pool_directory_is_no_sandbox_id() {
    let run = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.sandbox.run_dir = run.path().to_path_buf();
    let request = SandboxRequest {
        size: VmSize {
            vcpus: 1,
            mem_mib: 256,
        },
        shm_size_bytes: 0,
        hostname: "h".into(),
        host_netns: None,
    };
    match Sandbox::start(&config, crate::pool::POOL_DIR, request).await {
        Err(SandboxError::ReservedId(id)) => assert_eq!(id, ".pool"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a sandbox started as the pool's directory"),
    }
}

#[tokio::test]
async fn an_adopted_process_that_dies_is_reported_unless_stopping() {
    use processes::monitor_adopted;
    for stopping in [false, true] {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let record = ProcessRecord::of(child.id()).unwrap();
        let flag = Arc::new(AtomicBool::new(stopping));
        let (tx, mut death) = watch::channel(None);
        let all = vec![("hull-vmm", record)];
        monitor_adopted("hull-vmm", record, all, flag, Arc::new(tx)).unwrap();
        assert!(death.borrow().is_none());
        child.kill().unwrap();
        let wait = Duration::from_secs(if stopping { 1 } else { 5 });
        let reported = tokio::time::timeout(wait, death.changed()).await;
        child.wait().unwrap();
        if stopping {
            assert!(death.borrow().is_none(), "{reported:?}");
        } else {
            reported.expect("no death report").unwrap();
            let reason = death.borrow().clone().unwrap();
            assert!(
                reason.contains("hull-vmm") && reason.contains(&record.pid.to_string()),
                "{reason}"
            );
        }
    }
    // A record whose process is gone cannot be adopted.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let record = ProcessRecord::of(child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (tx, _death) = watch::channel(None);
    let flag = Arc::new(AtomicBool::new(false));
    assert!(monitor_adopted("virtiofsd", record, vec![], flag, Arc::new(tx)).is_err());
}

/// The field `key` (e.g. "PPid:") of `/proc/<pid>/status` (`pid`: a number or "self"), its
/// words joined by single spaces.
pub(crate) fn proc_status_field(pid: &str, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// `THP_enabled` of `pid` from /proc.
fn thp_enabled(pid: &str) -> String {
    proc_status_field(pid, "THP_enabled:")
}

#[test]
fn the_shim_keeps_huge_pages_off_for_itself_and_its_children_but_the_vmm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for hull-vmm that writes its own THP_enabled.
    let vmm = dir.path().join("fake-vmm");
    let out = dir.path().join("fake-vmm.out");
    std::fs::write(
        &vmm,
        format!(
            "#!/bin/sh\ngrep THP_enabled /proc/self/status > {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = crate::config::Config {
        vmm: vmm.clone(),
        ..Default::default()
    };
    let paths = SandboxPaths::new(dir.path(), "sb1");
    let size = crate::cri::sizing::VmSize {
        vcpus: 1,
        mem_mib: 256,
    };
    let (_, mut cmd) = launch::vmm_command(&config, &paths, size, &[], None).unwrap();

    crate::threads::no_huge_pages().unwrap();
    assert_eq!(thp_enabled("self"), "0");
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let status = cmd.as_std_mut().status().unwrap();
    crate::threads::allow_huge_pages().unwrap();

    assert!(status.success(), "{status:?}");
    // Other children (virtiofsd) inherit the setting; hull-vmm gets huge pages back.
    assert_eq!(thp_enabled(&other.id().to_string()), "0");
    let vmm_thp = std::fs::read_to_string(&out).unwrap();
    assert_eq!(vmm_thp.split_whitespace().last(), Some("1"), "{vmm_thp}");
    other.kill().unwrap();
    other.wait().unwrap();
}

#[tokio::test]
async fn the_ready_signal_listens_beside_the_vsock_socket_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let vsock = dir.path().join("vsock.sock");
    let mut signal = ready::ReadySignal::bind(&vsock).unwrap();
    let path = dir.path().join("vsock.sock_1028");
    assert_eq!(signal.path(), path);
    // Nobody connected: the wait ends unseen.
    assert!(!signal.wait(Duration::from_millis(20)).await);
    // A connection is the signal, whatever it carries.
    let _guest = tokio::net::UnixStream::connect(&path).await.unwrap();
    assert!(signal.wait(Duration::from_secs(10)).await);
    assert!(signal.seen());
    drop(signal);
    assert!(!path.exists(), "the listener's socket file outlived it");
}

#[tokio::test]
async fn connect_agent_waits_for_the_ready_signal_before_its_first_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SandboxPaths::new(dir.path(), "s");
    std::fs::create_dir_all(&paths.dir).unwrap();
    let signal = ready::ReadySignal::bind(&paths.vsock_socket).unwrap();
    let signal_path = signal.path().to_path_buf();
    // Stands in for the VMM: counts the connection attempts on the hybrid socket (and closes
    // them, as the VMM does when nothing in the guest listens).
    let hybrid = tokio::net::UnixListener::bind(&paths.vsock_socket).unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = hybrid.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let (_died, death) = watch::channel(None);
    let connecting = tokio::spawn(async move {
        connect_agent(&paths, "s", &death, Duration::from_secs(4), Some(signal)).await
    });
    // Before the signal the shim tries at most once per READY_SIGNAL_WAIT (2 s: 8 attempts);
    // without it, every 20 ms (100).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_signal = attempts.load(Ordering::SeqCst);
    assert!(
        before_signal <= 9,
        "{before_signal} attempts in 2 s while the agent had not signalled"
    );
    tokio::net::UnixStream::connect(&signal_path).await.unwrap();
    let Err(err) = connecting.await.unwrap() else {
        panic!("connected although nothing serves the API");
    };
    assert!(
        matches!(err, SandboxError::AgentUnreachable { .. }),
        "{err}"
    );
    // After the signal, 20 ms retries until the timeout (about 2 s of them).
    assert!(
        attempts.load(Ordering::SeqCst) > before_signal + 5,
        "no retries after the signal"
    );
    assert!(
        !signal_path.exists(),
        "the ready listener outlived connect_agent"
    );
}

#[test]
fn a_claimed_pool_vm_gets_the_default_cpu_weight_back() {
    let dir = tempfile::tempdir().unwrap();
    let [v2, v1_cpu, v1_memory] = ["v2", "cpu", "memory"].map(|d| dir.path().join(d));
    for d in [&v2, &v1_cpu, &v1_memory] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(v2.join("cpu.weight"), "1").unwrap();
    std::fs::write(v1_cpu.join("cpu.shares"), "2").unwrap();
    std::fs::write(v1_memory.join("memory.limit_in_bytes"), "1").unwrap();
    let dirs = [v2.clone(), v1_cpu.clone(), v1_memory.clone()];
    assert_eq!(priority::restore_normal_weight(&dirs).unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(v2.join("cpu.weight")).unwrap(),
        "100"
    );
    assert_eq!(
        std::fs::read_to_string(v1_cpu.join("cpu.shares")).unwrap(),
        "1024"
    );
    assert!(!v1_memory.join("cpu.shares").exists());
    assert!(!v1_memory.join("cpu.weight").exists());
}

#[test]
fn a_pods_cpu_weight_is_read_from_the_directory_that_has_one() {
    use priority::{BootPriority, WeightFile};
    let dir = tempfile::tempdir().unwrap();
    let [memory, cpu] = ["memory", "cpu"].map(|d| dir.path().join(d));
    for d in [&memory, &cpu] {
        std::fs::create_dir(d).unwrap();
    }
    let dirs = [memory.clone(), cpu.clone()];
    assert!(priority::current_weight(&dirs).unwrap().is_none());
    std::fs::write(cpu.join("cpu.shares"), "2\n").unwrap();
    let (file, value) = priority::current_weight(&dirs).unwrap().unwrap();
    assert_eq!((file, value), (WeightFile::CpuShares, 2));
    assert_eq!(file.priority_of(value), Some(BootPriority::Background));
    assert_eq!(file.priority_of(512), None);
    std::fs::write(cpu.join("cpu.shares"), "lots").unwrap();
    let err = priority::current_weight(&dirs).unwrap_err().to_string();
    assert!(err.contains("cpu.shares") && err.contains("lots"), "{err}");
}
