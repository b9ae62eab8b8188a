use std::path::{Path, PathBuf};

use super::cgroup::{layout_from_mountinfo, recorded, CgroupLayout, CgroupLimits, Controller};
use super::plan::{
    elf_has_interpreter, libraries_from_ldd, Bind, JailContents, JailPlan, PlanError,
};
use super::JailSettings;
use crate::sandbox::priority::BootPriority;
use crate::sandbox::tests::proc_status_field;

const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd6a9f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1a7c0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1a5df000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1a8b5000)
";

fn contents(needs_tun: bool) -> JailContents {
    JailContents {
        vmm: "/usr/bin/hull-vmm".into(),
        ldd_output: LDD.into(),
        kernel: "/usr/share/hull/vmlinux".into(),
        guest_root: Some("/usr/share/hull/initramfs.cpio".into()),
        needs_tun,
    }
}

#[test]
fn ldd_output_gives_the_library_files() {
    assert_eq!(
        libraries_from_ldd(LDD).unwrap(),
        vec![
            PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
        ]
    );
    assert_eq!(
        libraries_from_ldd("\tstatically linked\n").unwrap(),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        libraries_from_ldd("\tlibfoo.so.1 => not found\n"),
        Err(PlanError::LibraryNotFound("libfoo.so.1".into()))
    );
    assert_eq!(
        libraries_from_ldd("\tlibc.so.6 => /lib/../etc/shadow (0x1)\n"),
        Err(PlanError::BadPath("/lib/../etc/shadow".into()))
    );
}

#[test]
fn the_root_holds_the_vmm_its_libraries_and_the_guest_image_only() {
    let plan = JailPlan::new(Path::new("/run/hull/sb1"), &contents(false)).unwrap();
    assert_eq!(plan.root, Path::new("/run/hull/sb1/root"));
    let targets: Vec<&Path> = plan.binds.iter().map(|b| b.target.as_path()).collect();
    assert_eq!(
        targets,
        [
            "/hull-vmm",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
            "/kernel",
            "/guest-root"
        ]
        .map(Path::new)
    );
    assert_eq!(
        plan.binds[0],
        Bind {
            source: "/usr/bin/hull-vmm".into(),
            target: "/hull-vmm".into()
        }
    );
    assert_eq!(plan.binds[4].source, Path::new("/usr/share/hull/vmlinux"));
    assert_eq!(plan.devices, ["/dev/kvm", "/dev/null"].map(PathBuf::from));
    let with_tun = JailPlan::new(Path::new("/run/hull/sb1"), &contents(true)).unwrap();
    assert_eq!(with_tun.devices.last().unwrap(), Path::new("/dev/net/tun"));
    assert_eq!(
        plan.directories(),
        [
            "/run/hull/sb1/root/lib",
            "/run/hull/sb1/root/lib/x86_64-linux-gnu",
            "/run/hull/sb1/root/lib64",
            "/run/hull/sb1/root/dev"
        ]
        .map(PathBuf::from)
    );
}

#[test]
fn the_host_keeps_its_socket_paths_through_links_into_the_root() {
    let plan = JailPlan::new(Path::new("/run/hull/sb1"), &contents(false)).unwrap();
    assert_eq!(
        plan.host_links,
        [
            (
                "/run/hull/sb1/vsock.sock",
                "/run/hull/sb1/root/run/vsock.sock"
            ),
            (
                "/run/hull/sb1/virtiofsd.sock",
                "/run/hull/sb1/root/run/virtiofsd.sock"
            ),
            (
                "/run/hull/sb1/console.log",
                "/run/hull/sb1/root/console.log"
            ),
        ]
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
    );
}

const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
32 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
";
const UNIFIED: &str = "\
28 22 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_bytes: 384 << 20,
        cpu_quota_us: 200_000,
        pids: 512,
        priority: BootPriority::Normal,
    }
}

#[test]
fn a_background_vm_gets_the_lowest_cpu_weight_in_either_cgroup_version() {
    let background = CgroupLimits {
        priority: BootPriority::Background,
        ..limits()
    };
    let parent = Path::new("hull-pods");
    let hybrid = layout_from_mountinfo(HYBRID).unwrap();
    let writes = hybrid.limit_writes(parent, "sb1", &background);
    assert_eq!(
        writes.len(),
        hybrid.limit_writes(parent, "sb1", &limits()).len() + 1
    );
    assert!(writes.contains(&(
        PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/hull-pods/sb1/cpu.shares"),
        "2".to_string()
    )));
    let unified = layout_from_mountinfo(UNIFIED).unwrap();
    let writes = unified.limit_writes(parent, "sb1", &background);
    assert_eq!(writes.len(), 4);
    assert!(writes.contains(&(
        PathBuf::from("/sys/fs/cgroup/hull-pods/sb1/cpu.weight"),
        "1".to_string()
    )));
}

#[test]
fn hybrid_hosts_use_the_v1_controllers() {
    let layout = layout_from_mountinfo(HYBRID).unwrap();
    assert_eq!(
        layout,
        CgroupLayout::V1 {
            controllers: vec![
                (Controller::Cpu, "/sys/fs/cgroup/cpu,cpuacct".into()),
                (Controller::Memory, "/sys/fs/cgroup/memory".into()),
                (Controller::Pids, "/sys/fs/cgroup/pids".into()),
            ]
        }
    );
    let parent = Path::new("hull-pods");
    assert_eq!(
        layout.pod_dirs(parent, "sb1"),
        [
            "/sys/fs/cgroup/cpu,cpuacct/hull-pods/sb1",
            "/sys/fs/cgroup/memory/hull-pods/sb1",
            "/sys/fs/cgroup/pids/hull-pods/sb1"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(
        layout.limit_writes(parent, "sb1", &limits()),
        [
            (
                "/sys/fs/cgroup/cpu,cpuacct/hull-pods/sb1/cpu.cfs_period_us",
                "100000"
            ),
            (
                "/sys/fs/cgroup/cpu,cpuacct/hull-pods/sb1/cpu.cfs_quota_us",
                "200000"
            ),
            (
                "/sys/fs/cgroup/memory/hull-pods/sb1/memory.limit_in_bytes",
                "402653184"
            ),
            ("/sys/fs/cgroup/pids/hull-pods/sb1/pids.max", "512"),
        ]
        .map(|(f, v)| (PathBuf::from(f), v.to_string()))
    );
    assert!(layout.subtree_controls(parent).is_empty());
}

#[test]
fn unified_hosts_use_one_v2_cgroup_with_the_controllers_enabled_above_it() {
    let layout = layout_from_mountinfo(UNIFIED).unwrap();
    assert_eq!(
        layout,
        CgroupLayout::V2 {
            mount: "/sys/fs/cgroup".into()
        }
    );
    let parent = Path::new("kubepods/hull-pods");
    assert_eq!(
        layout.pod_dirs(parent, "sb1"),
        vec![PathBuf::from("/sys/fs/cgroup/kubepods/hull-pods/sb1")]
    );
    let dir = "/sys/fs/cgroup/kubepods/hull-pods/sb1";
    assert_eq!(
        layout.limit_writes(parent, "sb1", &limits()),
        [
            (format!("{dir}/memory.max"), "402653184"),
            (format!("{dir}/cpu.max"), "200000 100000"),
            (format!("{dir}/pids.max"), "512"),
        ]
        .map(|(f, v)| (PathBuf::from(f), v.to_string()))
    );
    assert_eq!(
        layout.subtree_controls(parent),
        [
            "/sys/fs/cgroup/cgroup.subtree_control",
            "/sys/fs/cgroup/kubepods/cgroup.subtree_control",
            "/sys/fs/cgroup/kubepods/hull-pods/cgroup.subtree_control"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(
        layout_from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n"),
        None
    );
}

#[test]
fn only_pod_cgroups_named_after_the_sandbox_are_taken_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sb1");
    std::fs::create_dir(&sandbox).unwrap();
    std::fs::write(
        sandbox.join(super::cgroup::CGROUPS_FILE),
        "/sys/fs/cgroup/memory/hull-pods/sb1\n/sys/fs/cgroup/memory/hull-pods/other\n\
         /etc/sb1\n/sys/fs/cgroup/memory/../../../etc/sb1\n/sys/fs/cgroup/sb1\n\
         /sys/fs/cgroup/hull-pods/sb1\n",
    )
    .unwrap();
    assert_eq!(
        recorded(&sandbox),
        [
            "/sys/fs/cgroup/memory/hull-pods/sb1",
            "/sys/fs/cgroup/hull-pods/sb1"
        ]
        .map(PathBuf::from)
    );
}

#[test]
fn a_sandbox_from_the_pool_also_owns_the_cgroups_named_after_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sb1");
    std::fs::create_dir(&sandbox).unwrap();
    std::fs::write(
        sandbox.join(super::cgroup::CGROUPS_FILE),
        "/sys/fs/cgroup/memory/hull-pods/pool-7-1\n/sys/fs/cgroup/cpu/hull-pods/pool-7-1\n\
         /sys/fs/cgroup/memory/hull-pods/pool-7-2\n",
    )
    .unwrap();
    // Not a pool VM: none of them is its.
    assert!(recorded(&sandbox).is_empty());
    std::fs::write(sandbox.join(crate::pool::SLOT_FILE), "pool-7-1\n").unwrap();
    assert_eq!(
        recorded(&sandbox),
        [
            "/sys/fs/cgroup/memory/hull-pods/pool-7-1",
            "/sys/fs/cgroup/cpu/hull-pods/pool-7-1"
        ]
        .map(PathBuf::from)
    );
    // A slot file naming no valid id names nothing.
    std::fs::write(sandbox.join(crate::pool::SLOT_FILE), "../x\n").unwrap();
    assert!(recorded(&sandbox).is_empty());
}

#[test]
fn settings_cap_the_pod_and_let_the_guest_memory_fit_the_file_size_limit() {
    let config = crate::config::Config::default();
    let small = JailSettings::for_vm(&config, 2, 32);
    assert_eq!(small.fsize_bytes, 64 << 20);
    let big = JailSettings::for_vm(&config, 2, 512);
    assert_eq!(big.fsize_bytes, 512 << 20);
    assert_eq!(
        big.limits.memory_bytes,
        (512 + super::HOST_OVERHEAD_MIB) << 20
    );
    assert_eq!(big.limits.cpu_quota_us, 300_000);
    assert_eq!((big.uid, big.gid, big.nofile), (65534, 65534, 4096));
    assert_eq!(big.cgroup_parent, Path::new("hull-pods"));
}

#[test]
fn a_static_vmm_needs_no_libraries() {
    let head = |path: &str| {
        let bytes = std::fs::read(path).unwrap();
        bytes[..bytes.len().min(4096)].to_vec()
    };
    // The test binary itself is dynamically linked (glibc, default target).
    let me = std::env::current_exe().unwrap();
    assert_eq!(elf_has_interpreter(&head(me.to_str().unwrap())), Some(true));
    // A minimal static ELF: header only, one PT_LOAD program header.
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(elf_has_interpreter(&elf), Some(false));
    elf[64..68].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(elf_has_interpreter(&elf), Some(true));
    assert_eq!(elf_has_interpreter(b"#!/bin/sh\n"), None);
    elf[0x38..0x3a].copy_from_slice(&500u16.to_le_bytes());
    assert_eq!(elf_has_interpreter(&elf[..64 + 56]), Some(true));
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(elf_has_interpreter(&elf[..64 + 56]), None);
}

/// `(NSpid, PPid)` of `pid` from /proc.
fn ns_pid_and_parent(pid: u32) -> (String, String) {
    let pid = pid.to_string();
    (
        proc_status_field(&pid, "NSpid:"),
        proc_status_field(&pid, "PPid:"),
    )
}

#[test]
fn a_jail_spawn_makes_pid_1_of_a_new_namespace_and_leaves_later_children_alone() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "a new PID namespace needs root (CI=1 is set)"
        );
        eprintln!("SKIPPED: a new PID namespace needs root");
        return;
    }
    let me = std::process::id().to_string();
    let mut jailed = super::child::spawn_as_pid_namespace_init(|| {
        std::process::Command::new("sleep").arg("30").spawn()
    })
    .unwrap()
    .unwrap();
    let pid = jailed.id();
    // PID 1 of its own namespace, and this process's direct child: nothing in between.
    assert_eq!(ns_pid_and_parent(pid), (format!("{pid} 1"), me.clone()));
    // A child spawned afterwards, from this thread, stays in this process's namespace.
    let mut plain = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let plain_pid = plain.id();
    assert_eq!(ns_pid_and_parent(plain_pid), (plain_pid.to_string(), me));
    // The spawning thread is gone and no parent-death signal came with it.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        jailed.try_wait().unwrap(),
        None,
        "pid 1 died with its thread"
    );
    for child in [&mut jailed, &mut plain] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
