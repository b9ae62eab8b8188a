//! hull-vmm jailed by the shim's jail code (`hull_runtime::sandbox::jail`), seen from the host:
//! the tiny guest runs as an unprivileged uid/gid with no capabilities, `no_new_privs`, its
//! seccomp filters, PID 1 of its own PID namespace and in its own mount/ipc/uts/net namespaces,
//! with a root that holds only the files the plan names (read-only binds, a read-only /dev,
//! no other mount), in the pod cgroup, with the configured rlimits, in a given network
//! namespace when one is named; the host reaches its hybrid-vsock socket and serial log through the sandbox
//! directory's links; the VMM is the spawner's direct child (no process between them), so
//! SIGTERM reaches it and its exit status is its own; the sandbox clean-up removes the pod
//! cgroup and the jail. Needs root and /dev/kvm
//! (fails under CI=1 without them).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{tiny_guest, vmm_bin, Entry};
use hull_runtime::sandbox::cleanup::cleanup_dir;
use hull_runtime::sandbox::jail::cgroup::{self, CgroupLayout, CgroupLimits};
use hull_runtime::sandbox::jail::plan::{
    CONSOLE_IN_JAIL, KERNEL_IN_JAIL, RAM_IN_JAIL, VMM_IN_JAIL, VSOCK_IN_JAIL,
};
use hull_runtime::sandbox::jail::{Jail, JailContents, JailSettings};
use hull_runtime::sandbox::priority::{self, BootPriority};
use hull_runtime::sandbox::SandboxPaths;
use hull_vmm::seccomp::TEST_VIOLATION_ENV;

const TIMEOUT: Duration = Duration::from_secs(60);
const UID: u32 = 4242;
const GID: u32 = 4343;
const NOFILE: u64 = 256;
const MEM_MIB: u64 = 64;
const CGROUP_PARENT: &str = "hull-test-pods";

/// Root and /dev/kvm, or SKIPPED (a failure under CI=1).
fn prerequisites() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the jail test needs root and /dev/kvm (CI=1 is set)"
    );
    eprintln!("SKIPPED: the jail test needs root and /dev/kvm");
    false
}

/// One jailed VMM of sandbox `<run_dir>/<id>`.
struct Jailed {
    run_dir: PathBuf,
    paths: SandboxPaths,
    jail: Jail,
    vmm: Child,
}

impl Drop for Jailed {
    fn drop(&mut self) {
        let _ = self.vmm.kill();
        let _ = self.vmm.wait();
        cleanup_dir(&self.paths);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn start(name: &str, cmdline: &str, env: Option<(&str, &str)>) -> Jailed {
    start_in(name, cmdline, env, None)
}

/// A fresh run directory for test `name`, the sandbox id and its paths (directory made).
fn sandbox_paths(name: &str) -> (PathBuf, String, SandboxPaths) {
    let run_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jail-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    let id = format!("jail-{name}-{}", std::process::id());
    let paths = SandboxPaths::new(&run_dir, &id);
    std::fs::create_dir_all(&paths.dir).unwrap();
    (run_dir, id, paths)
}

/// The test jail's settings: the pod cgroup's CPU weight that of `priority`, guest RAM on the
/// jail's tmpfs if `ram_tmpfs`.
fn settings(priority: BootPriority, ram_tmpfs: bool) -> JailSettings {
    JailSettings {
        uid: UID,
        gid: GID,
        nofile: NOFILE,
        fsize_bytes: MEM_MIB << 20,
        cgroup_parent: CGROUP_PARENT.into(),
        limits: CgroupLimits {
            memory_bytes: (MEM_MIB + 128) << 20,
            cpu_quota_us: 200_000,
            pids: 64,
            priority,
        },
        ram_tmpfs_mib: ram_tmpfs.then_some(MEM_MIB),
    }
}

/// [`start`] in the network namespace `netns` (a new one if `None`).
fn start_in(name: &str, cmdline: &str, env: Option<(&str, &str)>, netns: Option<&Path>) -> Jailed {
    let (run_dir, id, paths) = sandbox_paths(name);
    let settings = settings(BootPriority::Normal, true);
    let contents =
        JailContents::for_vmm(Path::new(vmm_bin()), &tiny_guest(Entry::Pvh), None, false).unwrap();
    let prepare_started = Instant::now();
    let jail = Jail::prepare(&settings, &id, &paths.dir, &contents).unwrap();
    let prepare_us = prepare_started.elapsed().as_micros();
    let mut cmd = Command::new(VMM_IN_JAIL);
    cmd.args(["--kernel", KERNEL_IN_JAIL, "--cmdline", cmdline])
        .args(["--mem-mib", &MEM_MIB.to_string()])
        .args(["--serial-log", CONSOLE_IN_JAIL])
        .args(["--vsock-cid", "3", "--vsock-uds", VSOCK_IN_JAIL])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(paths.dir.join("vmm.log")).unwrap())
        .stderr(std::fs::File::create(paths.dir.join("vmm.log")).unwrap());
    if let Some(ram_dir) = jail.ram_dir() {
        cmd.arg("--mem-dir").arg(ram_dir);
    }
    if let Some((key, value)) = env {
        cmd.env(key, value);
    }
    jail.confine(&mut cmd, netns).unwrap();
    let spawn_started = Instant::now();
    let vmm = jail
        .spawn(|| cmd.spawn())
        .unwrap()
        .expect("spawn the jailed hull-vmm");
    println!(
        "jail {name}: prepare {prepare_us} us (root, binds' placeholders, cgroup), spawn until \
         exec {} us (namespaces, fork, mounts, pivot_root, credentials)",
        spawn_started.elapsed().as_micros()
    );
    Jailed {
        run_dir,
        paths,
        jail,
        vmm,
    }
}

impl Jailed {
    fn log(&self) -> String {
        std::fs::read_to_string(self.paths.dir.join("vmm.log")).unwrap_or_default()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.paths.dir.join("console.log")).unwrap_or_default()
    }

    /// The jailed VMM's pid (the test's own child), once the VM runs.
    fn wait_vmm(&mut self) -> u32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.vmm.try_wait().unwrap() {
                panic!("the jailed VMM ended early: {status:?}\n{}", self.log());
            }
            if self.log().contains("microVM started") {
                return self.vmm.id();
            }
            assert!(started.elapsed() < TIMEOUT, "no VM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.vmm.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("{key} missing from /proc/{pid}/status"))
}

/// Every path below `dir` (relative), directories included.
fn tree(dir: &Path, prefix: &Path, out: &mut BTreeSet<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let rel = prefix.join(entry.file_name());
        out.insert(rel.clone());
        if entry.file_type().unwrap().is_dir() {
            tree(&entry.path(), &rel, out);
        }
    }
}

/// What the root may hold: the plan's binds (and their directories), /dev with its nodes, /run
/// with the VMM's socket, the console log.
fn allowed_tree(jail: &Jail) -> BTreeSet<PathBuf> {
    let mut allowed = BTreeSet::new();
    let plan = jail.plan();
    let inside = |p: &Path| p.strip_prefix("/").unwrap().to_path_buf();
    for path in plan
        .binds
        .iter()
        .map(|b| b.target.as_path())
        .chain(plan.devices.iter().map(PathBuf::as_path))
        .chain([VSOCK_IN_JAIL, CONSOLE_IN_JAIL].map(Path::new))
        .chain(jail.ram_dir())
    {
        for ancestor in path.ancestors().filter(|a| *a != Path::new("/")) {
            allowed.insert(inside(ancestor));
        }
    }
    allowed
}

/// `/proc/<pid>/cgroup` text puts the process in `expected` (for each controller the pod
/// cgroup uses on v1, in the unified hierarchy on v2).
fn assert_in_cgroup(cgroups: &str, expected: &str) {
    match cgroup::host_layout().unwrap() {
        CgroupLayout::V2 { .. } => {
            assert!(
                cgroups.lines().any(|l| l == format!("0::{expected}")),
                "not in {expected}:\n{cgroups}"
            )
        }
        CgroupLayout::V1 { controllers } => {
            for (controller, _) in controllers {
                let line = cgroups
                    .lines()
                    .find(|l| {
                        l.split(':')
                            .nth(1)
                            .is_some_and(|c| c.split(',').any(|c| c == controller.name()))
                    })
                    .unwrap_or_else(|| panic!("no {} line:\n{cgroups}", controller.name()));
                assert!(
                    line.ends_with(&format!(":{expected}")),
                    "not in {expected}: {line}"
                );
            }
        }
    }
}

fn namespace(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

#[test]
fn jailed_vmm_is_confined_and_its_guest_runs() {
    if !prerequisites() {
        return;
    }
    let mut jailed = start("main", "console=ttyS0 vsock-listen=6000", None);
    let pid = jailed.wait_vmm();

    // Credentials.
    assert_eq!(status_field(pid, "Name:"), "hull-vmm");
    assert_eq!(
        status_field(pid, "Uid:"),
        format!("{UID} {UID} {UID} {UID}")
    );
    assert_eq!(
        status_field(pid, "Gid:"),
        format!("{GID} {GID} {GID} {GID}")
    );
    assert_eq!(status_field(pid, "Groups:"), "");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "Seccomp:"), "2");
    // PID 1 of its own PID namespace and the test's direct child: nothing in between.
    assert_eq!(status_field(pid, "NSpid:"), format!("{pid} 1"));
    assert_eq!(status_field(pid, "PPid:"), std::process::id().to_string());
    for kind in ["mnt", "pid", "ipc", "uts", "net"] {
        assert_ne!(
            namespace(&pid.to_string(), kind),
            namespace("self", kind),
            "{kind} namespace"
        );
    }

    // Its root holds what the plan names, nothing else.
    let mut seen = BTreeSet::new();
    tree(
        Path::new(&format!("/proc/{pid}/root")),
        Path::new(""),
        &mut seen,
    );
    assert_eq!(seen, allowed_tree(&jailed.jail), "the jail root's tree");
    for absent in ["etc", "proc", "sys", "shared", "tmp", "usr"] {
        assert!(!seen.contains(Path::new(absent)), "{absent} in the jail");
    }
    // Its mounts: the root (nosuid, nodev, noexec), the read-only binds, a read-only /dev;
    // nothing else (no /proc, no /sys).
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mounts: Vec<(&str, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((*f.get(4)?, f.get(5)?.split(',').collect()))
        })
        .collect();
    let mut points: Vec<&str> = mounts.iter().map(|(m, _)| *m).collect();
    points.sort_unstable();
    let mut want: Vec<String> = jailed
        .jail
        .plan()
        .binds
        .iter()
        .map(|b| b.target.display().to_string())
        .chain(["/".to_string(), "/dev".to_string(), RAM_IN_JAIL.to_string()])
        .collect();
    want.sort_unstable();
    assert_eq!(points, want, "mount points of the jailed VMM:\n{mountinfo}");
    for (point, options) in &mounts {
        let need: &[&str] = match *point {
            "/" => &["rw", "nosuid", "nodev", "noexec"],
            "/dev" => &["ro", "nosuid", "noexec"],
            RAM_IN_JAIL => &["rw", "nosuid", "nodev", "noexec"],
            _ => &["ro", "nosuid", "nodev"],
        };
        for option in need {
            assert!(
                options.contains(option),
                "{point} lacks {option}: {options:?}"
            );
        }
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, Path::new("/"));
    // Its guest RAM: an unlinked file on the jail's tmpfs (huge=always, only the jail user),
    // mapped in 2 MiB pages once written although the host's shmem_enabled is `never` here.
    let ram_tmpfs = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(RAM_IN_JAIL))
        .unwrap();
    for option in [
        "huge=always",
        "mode=700",
        &format!("uid={UID}"),
        &format!("size={}k", MEM_MIB << 10),
    ] {
        assert!(ram_tmpfs.contains(option), "{option} not in {ram_tmpfs}");
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let ram_vma: Vec<&str> = smaps
        .lines()
        .skip_while(|l| !(l.contains(" /ram/") && l.ends_with("(deleted)")))
        .take_while(|l| !l.starts_with("VmFlags:"))
        .collect();
    assert!(
        !ram_vma.is_empty(),
        "no guest RAM mapping from /ram in the VMM:\n{smaps}"
    );
    let pmd_kib: u64 = ram_vma
        .iter()
        .find_map(|l| l.strip_prefix("ShmemPmdMapped:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(pmd_kib >= 2048, "guest RAM not in 2 MiB pages: {ram_vma:?}");

    // The pod cgroup.
    let dirs = jailed.jail.cgroup_dirs().to_vec();
    let id = jailed
        .paths
        .dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let expected = format!("/{CGROUP_PARENT}/{id}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_in_cgroup(&cgroups, &expected);
    for dir in &dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        let procs: Vec<&str> = procs.lines().collect();
        assert!(procs.contains(&pid.to_string().as_str()), "{procs:?}");
    }

    // Limits.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap()
    };
    assert_eq!(limit("Max open files"), format!("{NOFILE} {NOFILE}"));
    let fsize = (MEM_MIB << 20).to_string();
    assert_eq!(limit("Max file size"), format!("{fsize} {fsize}"));
    assert_eq!(limit("Max core file size"), "0 0");

    // The host reaches the guest through the sandbox directory's link to the VMM's socket.
    let stream = UnixStream::connect(&jailed.paths.vsock_socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&stream).write_all(b"CONNECT 6000\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "handshake reply {ok:?}");
    (&stream)
        .write_all(b"ping from outside the jail\n")
        .unwrap();
    let mut echo = String::new();
    reader.read_line(&mut echo).unwrap();
    assert_eq!(echo, "PING FROM OUTSIDE THE JAIL\n");
    stream.shutdown(std::net::Shutdown::Both).unwrap();

    // The guest ran and ended; its status is the VMM's own.
    let status = jailed.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", jailed.log());
    let console = jailed.console();
    for line in [
        "tiny-guest: entry=pvh",
        "tiny-guest: vsock accepted",
        "tiny-guest: vsock received: ping from outside the jail|",
        "tiny-guest: done, resetting",
    ] {
        assert!(console.contains(line), "{line} missing from:\n{console}");
    }

    // The sandbox clean-up removes the pod cgroup and the jail.
    cleanup_dir(&jailed.paths);
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!jailed.paths.dir.exists(), "sandbox directory left behind");
    println!(
        "jailed hull-vmm pid {pid}: uid {UID} gid {GID}, caps 0, nnp 1, \
         seccomp 2, NSpid '{pid} 1', root {} entries, cgroups {dirs:?}: ok",
        seen.len()
    );
}

#[test]
fn sigterm_ends_the_jailed_vmm_cleanly_and_sigkill_ends_it_in_a_given_netns() {
    if !prerequisites() {
        return;
    }
    // In a given network namespace (the pod's; here the test's own).
    let mut jailed = start_in(
        "term",
        "console=ttyS0 spin",
        None,
        Some(Path::new("/proc/self/ns/net")),
    );
    let pid = jailed.wait_vmm();
    assert_eq!(namespace(&pid.to_string(), "net"), namespace("self", "net"));
    assert_ne!(namespace(&pid.to_string(), "mnt"), namespace("self", "mnt"));
    // SAFETY: kill(2) of our own child. PID 1 of its namespace, it gets a signal from this
    // (the parent) namespace only if it handles it: hull-vmm handles SIGTERM.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = jailed.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the VM cleanly: {status:?}"
    );

    let mut jailed = start("kill", "console=ttyS0 spin", None);
    let pid = jailed.wait_vmm();
    jailed.vmm.kill().unwrap();
    let status = jailed.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM is still there after its exit status was collected"
    );
    let dirs = jailed.jail.cgroup_dirs().to_vec();
    cleanup_dir(&jailed.paths);
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// What a watcher saw of a sandbox while its VM ran.
#[derive(Debug, Default)]
struct Seen {
    vmm_log: String,
    /// (name, /proc status fields, /proc cgroup) of every process of the sandbox.
    processes: Vec<(String, String, String)>,
    cgroup_dirs: Vec<PathBuf>,
}

/// Watches `dir` until its VMM runs, then reads its processes (the recorded ones and their
/// children).
fn watch_sandbox(dir: PathBuf) -> Seen {
    let started = Instant::now();
    let log = || std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
    while !log().contains("microVM started") {
        if started.elapsed() > TIMEOUT {
            return Seen::default();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut seen = Seen {
        vmm_log: log(),
        ..Seen::default()
    };
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.split(' ').nth(1)) {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for p in std::iter::once(pid).chain(children.split_whitespace()) {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let name = status_field(p.parse().unwrap(), "Name:");
            let cgroup = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
            seen.processes.push((name, status, cgroup));
        }
    }
    seen.cgroup_dirs = std::fs::read_to_string(dir.join(cgroup::CGROUPS_FILE))
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .collect();
    seen
}

#[test]
fn shim_vm_mode_jails_the_vmm_and_charges_virtiofsd_to_the_pod_cgroup() {
    use hull_runtime::config::{Config, SandboxMode};
    use hull_runtime::cri::sizing::VmSize;
    use hull_runtime::sandbox::virtiofsd::find_virtiofsd;
    use hull_runtime::sandbox::{Sandbox, SandboxRequest};
    if !prerequisites() {
        return;
    }
    let Some(virtiofsd) = find_virtiofsd() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "virtiofsd is not installed (CI=1 is set)"
        );
        eprintln!("SKIPPED: virtiofsd is not installed");
        return;
    };
    let run_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jail-shim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).unwrap();
    // The default guest root, a pmem image (the tiny guest ignores it; the jail binds it and
    // the VMM maps it).
    let image = run_dir.join("rootfs.img");
    std::fs::write(&image, vec![0u8; 2 << 20]).unwrap();
    let config = Config {
        kernel: tiny_guest(Entry::Pvh),
        image,
        vmm: vmm_bin().into(),
        virtiofsd,
        kernel_params: "spin".into(),
        sandbox: hull_runtime::config::SandboxConfig {
            mode: SandboxMode::Vm,
            run_dir: run_dir.clone(),
            boot_timeout_secs: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(config.jail, "the jail is on by default");
    let id = format!("jail-shim-{}", std::process::id());
    let dir = run_dir.join(&id);
    let watcher = std::thread::spawn(move || watch_sandbox(dir));
    let request = SandboxRequest {
        size: VmSize {
            vcpus: 1,
            mem_mib: 128,
        },
        shm_size_bytes: 0,
        hostname: "jail".into(),
        host_netns: None,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The tiny guest has no agent: the start fails after the boot timeout and cleans up.
    let result = runtime.block_on(Sandbox::start(&config, &id, request));
    let err = result
        .err()
        .expect("no agent in the tiny guest")
        .to_string();
    assert!(err.contains("did not answer"), "{err}");
    let seen = watcher.join().unwrap();
    assert!(
        seen.vmm_log
            .contains("pmem image /guest-root (2 MiB) at 0x100000000"),
        "the jailed VMM maps the image bound at /guest-root:\n{}",
        seen.vmm_log
    );
    assert!(
        seen.vmm_log
            .contains("vhost-user back-end connected socket=/run/virtiofsd.sock"),
        "the jailed VMM reaches virtiofsd through the jail's /run:\n{}",
        seen.vmm_log
    );
    let names: Vec<&str> = seen.processes.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "hull-vmm").count(),
        1,
        "{names:?}"
    );
    assert!(
        names.contains(&"virtiofsd") && !names.contains(&"hull-jail"),
        "{names:?}"
    );
    let expected = format!("/hull-pods/{id}");
    for (name, status, cgroups) in &seen.processes {
        assert_in_cgroup(cgroups, &expected);
        if name == "hull-vmm" {
            assert!(
                status.contains("Uid:\t65534\t65534\t65534\t65534"),
                "{status}"
            );
            assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
            assert!(status.contains("Seccomp:\t2"), "{status}");
        }
    }
    assert!(!seen.cgroup_dirs.is_empty());
    for dir in &seen.cgroup_dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!run_dir.join(&id).exists(), "sandbox directory left behind");
    let _ = std::fs::remove_dir_all(&run_dir);
}

#[test]
fn a_seccomp_kill_of_the_jailed_vmm_reaches_the_shim_as_sigsys() {
    if !prerequisites() {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the {TEST_VIOLATION_ENV} hook exists in debug builds only");
        return;
    }
    let mut jailed = start(
        "sigsys",
        "console=ttyS0 spin",
        Some((TEST_VIOLATION_ENV, "vcpu")),
    );
    let status = jailed.wait_exit();
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "{status:?}\n{}",
        jailed.log()
    );
    let reason = hull_runtime::sandbox::processes::death_reason("hull-vmm", status);
    assert!(reason.contains("seccomp"), "{reason}");
}

#[test]
fn a_vmm_the_jail_user_cannot_execute_is_refused_by_name() {
    if !prerequisites() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jail-perm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sb")).unwrap();
    let vmm = dir.join("hull-vmm");
    std::fs::copy(vmm_bin(), &vmm).unwrap();
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o700)).unwrap();
    let settings = JailSettings {
        uid: UID,
        gid: GID,
        nofile: NOFILE,
        fsize_bytes: MEM_MIB << 20,
        cgroup_parent: CGROUP_PARENT.into(),
        limits: CgroupLimits {
            memory_bytes: 256 << 20,
            cpu_quota_us: 100_000,
            pids: 64,
            priority: BootPriority::Normal,
        },
        ram_tmpfs_mib: None,
    };
    let contents = JailContents::for_vmm(&vmm, &tiny_guest(Entry::Pvh), None, false).unwrap();
    let err = Jail::prepare(&settings, "sb", &dir.join("sb"), &contents).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot be executed by the jail user 4242:4343"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_after_a_shim_crash_stops_the_jailed_vmm_and_removes_the_jail() {
    use hull_runtime::sandbox::processes::{write_pids_file, ProcessRecord};
    if !prerequisites() {
        return;
    }
    // The shim "crashed" after recording its processes: `delete` has only the sandbox directory.
    let mut jailed = start("crash", "console=ttyS0 spin", None);
    let pid = jailed.wait_vmm();
    let record = ProcessRecord::of(jailed.vmm.id()).unwrap();
    write_pids_file(&jailed.paths.pids_file, &[("hull-vmm", record)]).unwrap();
    let dirs = jailed.jail.cgroup_dirs().to_vec();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(hull_runtime::sandbox::cleanup_after_crash(&jailed.paths));
    assert!(
        !Path::new(&format!("/proc/{pid}/status")).exists()
            || status_field(pid, "State:").starts_with('Z'),
        "the jailed VMM still runs"
    );
    assert_eq!(
        jailed.wait_exit().code(),
        Some(0),
        "SIGTERM reached the VMM"
    );
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!jailed.paths.dir.exists(), "sandbox directory left behind");
}

#[test]
fn a_background_jail_gets_the_lowest_cpu_weight_until_given_the_default_back() {
    if !prerequisites() {
        return;
    }
    let (run_dir, id, paths) = sandbox_paths("weight");
    let settings = settings(BootPriority::Background, false);
    let contents =
        JailContents::for_vmm(Path::new(vmm_bin()), &tiny_guest(Entry::Pvh), None, false).unwrap();
    let jail = Jail::prepare(&settings, &id, &paths.dir, &contents).unwrap();
    let assert_weight_of = |want: BootPriority| {
        let (file, value) = priority::current_weight(jail.cgroup_dirs())
            .unwrap()
            .unwrap_or_else(|| panic!("no CPU weight in {:?}", jail.cgroup_dirs()));
        assert_eq!(
            file.priority_of(value),
            Some(want),
            "{} {value}",
            file.name()
        );
    };
    assert_weight_of(BootPriority::Background);
    priority::restore_normal_weight(jail.cgroup_dirs()).unwrap();
    assert_weight_of(BootPriority::Normal);
    cleanup_dir(&paths);
    let _ = std::fs::remove_dir_all(&run_dir);
}
