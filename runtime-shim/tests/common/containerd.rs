//! A real containerd (Debian's `containerd` + `runc` packages) started by a test with its own
//! config, root, state and socket in a temp dir, a locally built busybox image, and the hull shim
//! in sandbox mode "host-agent" (hull-agent on the host behind the same hybrid-vsock protocol as
//! in a VM).
//!
//! [`Options::cri`] also sets up what containerd's CRI plugin needs to run pods: Debian's CNI
//! plugins (`/usr/lib/cni`) with a bridge network private to this test (bridge `hullt<pid>`,
//! host-local addresses kept under the temp dir), the runtime handlers `hull` and `runc`, a
//! locally built pause image as `sandbox_image`, and both images in namespace `k8s.io`.
//!
//! Dropping the fixture stops containerd and removes what it and its pods made: processes,
//! mounts, network namespaces, the bridge, CNI's cached results and the test's cgroups.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::text;

/// The busybox image (namespace [`NS`] for `ctr` tests, `k8s.io` for CRI).
pub const IMAGE: &str = "docker.io/library/busybox:hull";
/// The CRI sandbox (pause) image: the busybox image with `sleep` as its command.
pub const PAUSE_IMAGE: &str = "hull.invalid/pause:test";
/// The namespace of the `ctr` tests.
pub const NS: &str = "hulltest";
/// The namespace CRI uses.
pub const CRI_NS: &str = "k8s.io";
/// The hull shim's runtime type.
pub const RUNTIME: &str = "io.containerd.hull.v2";
/// Where Debian's `containernetworking-plugins` puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// libcni's cache of ADD results (containerd 1.6 does not move it).
pub const CNI_CACHE_DIR: &str = "/var/lib/cni/results";

/// What the test needs from containerd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Enable pods: CNI bridge network, runtime handlers `hull` and `runc`, pause image.
    pub cri: bool,
    /// Files the main config `imports` (e.g. a config written by `hull install`).
    pub imports: Vec<PathBuf>,
    /// Directories searched before the fixture's own `bin` (containerd finds shims on $PATH).
    pub bin_dirs: Vec<PathBuf>,
    /// The pod network's bridge gets the gateway address, so this host reaches pod IPs (a
    /// connected route to the test's own /24; nothing else changes).
    pub pod_gateway: bool,
}

impl Options {
    /// Options for the CRI tests.
    pub fn cri() -> Options {
        Options {
            cri: true,
            ..Options::default()
        }
    }
}

/// The running containerd and its temp dir.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    opts: Options,
    /// Pod and container ids created through CRI, for the cgroup clean-up on drop.
    ids: Arc<Mutex<BTreeSet<String>>>,
}

/// The directory of the test binaries (and of `hull-agent` when it was built).
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-hull-v2"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether `name` is on `$PATH`.
pub fn which(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run tests with these options, if it cannot.
pub fn skip_reason(opts: &Options) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for tool in ["containerd", "ctr", "runc", "python3"] {
        if !which(tool) {
            return Some(format!(
                "{tool} not installed (apt-get install -y containerd runc)"
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install -y busybox-static)".into());
    }
    if !target_dir().join("hull-agent").exists() {
        return Some("hull-agent not built (cargo build -p hull-agent)".into());
    }
    if opts.cri {
        for plugin in ["bridge", "host-local", "loopback"] {
            if !Path::new(CNI_BIN_DIR).join(plugin).exists() {
                return Some(format!(
                    "CNI plugin {CNI_BIN_DIR}/{plugin} missing (apt-get install -y containernetworking-plugins)"
                ));
            }
        }
        if !which("ip") {
            return Some("`ip` missing (apt-get install -y iproute2)".into());
        }
        if !which("gcc") {
            return Some("gcc missing (apt-get install -y build-essential)".into());
        }
    }
    None
}

/// Whether a missing prerequisite must fail the test instead of skipping it (CI).
pub fn required() -> bool {
    ["HULL_REQUIRE_CRI", "CI"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Starts the test's containerd, or prints why the test is skipped and returns None. On CI
/// (`CI` or `HULL_REQUIRE_CRI` set) a missing prerequisite fails the test instead.
pub fn containerd_or_skip(what: &str, opts: &Options) -> Option<Containerd> {
    if let Some(reason) = skip_reason(opts) {
        assert!(
            !required(),
            "{what}: cannot run here ({reason}), and CI/HULL_REQUIRE_CRI says it must"
        );
        eprintln!("SKIPPED {what}: {reason}");
        return None;
    }
    Some(Containerd::start_with(opts))
}

/// A small static helper put into the image as `/bin/ipcmk` (busybox has none): `ipcmk -M SIZE`
/// makes a System V shared memory segment, `ipcmk -Q` a message queue, and prints its id as
/// util-linux's ipcmk does. `/proc/sysvipc/{shm,msg}` lists them (the reader's IPC namespace).
const IPCMK_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/shm.h>
int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "-M") == 0) {
        int id = shmget(IPC_PRIVATE, (size_t)atol(argv[2]), IPC_CREAT | 0644);
        if (id < 0) { perror("shmget"); return 1; }
        printf("Shared memory id: %d\n", id);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "-Q") == 0) {
        int id = msgget(IPC_PRIVATE, IPC_CREAT | 0644);
        if (id < 0) { perror("msgget"); return 1; }
        printf("Message queue id: %d\n", id);
        return 0;
    }
    fprintf(stderr, "usage: ipcmk -M SIZE | -Q\n");
    return 2;
}
"#;

impl Containerd {
    /// containerd for `ctr` tests (no pods).
    pub fn start() -> Containerd {
        Containerd::start_with(&Options::default())
    }

    /// containerd with `opts`; images built and imported.
    pub fn start_with(opts: &Options) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("hull-ctrd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in [
            "bin",
            "root",
            "state",
            "run",
            "hull",
            "img/rootfs/bin",
            "logs",
            "cni/net.d",
            "cni/ipam",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_containerd-shim-hull-v2"),
            d.join("bin/containerd-shim-hull-v2"),
        )
        .unwrap();
        std::fs::write(
            d.join("hull.toml"),
            format!(
                "debug = true\n[sandbox]\nmode = \"host-agent\"\nrun_dir = \"{}\"\nagent = \"{}\"\n",
                d.join("hull").display(),
                target_dir().join("hull-agent").display()
            ),
        )
        .unwrap();
        let imports: Vec<String> = opts
            .imports
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let mut config = format!(
            r#"version = 2
imports = [{imports}]
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/run/containerd.sock"
[debug]
  address = "{d}/run/debug.sock"
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_tcp_service = true
"#,
            d = d.display(),
            imports = imports.join(", ")
        );
        if opts.cri {
            config.push_str(&Self::cri_config(d));
            std::fs::write(
                d.join("cni/net.d/10-hull-test.conflist"),
                Self::cni_conflist(d, opts.pod_gateway),
            )
            .unwrap();
        }
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = Self::spawn(d, opts);
        let ctrd = Containerd {
            dir,
            child,
            opts: opts.clone(),
            ids: Arc::default(),
        };
        ctrd.wait_ready();
        ctrd.build_images();
        ctrd
    }

    /// Starts containerd on the config in `d` (its log appended to `d/logs/containerd.log`).
    fn spawn(d: &Path, opts: &Options) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("logs/containerd.log"))
            .unwrap();
        Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env(
                "PATH",
                format!(
                    "{}{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    opts.bin_dirs
                        .iter()
                        .map(|b| format!("{}:", b.display()))
                        .collect::<String>(),
                    d.join("bin").display()
                ),
            )
            .env("HULL_CONFIG", d.join("hull.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits until containerd accepts connections on its socket.
    fn wait_ready(&self) {
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.sock()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills containerd with SIGKILL, as a crash would (its shims and containers live on),
    /// and starts it again on the same config, root and state.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), &self.opts);
        self.wait_ready();
    }

    /// The CRI plugin's settings: CNI, runtime handlers, pause image.
    fn cri_config(d: &Path) -> String {
        format!(
            r#"  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
      runtime_type = "{RUNTIME}"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull.options]
        ConfigPath = "{d}/hull.toml"
"#,
            d = d.display()
        )
    }

    /// A bridge network private to this test, no masquerading; without `gateway` no address
    /// on the bridge either, so the host's own routes are untouched.
    fn cni_conflist(d: &Path, gateway: bool) -> String {
        let name = Self::bridge_name();
        let pid = std::process::id();
        format!(
            r#"{{
  "cniVersion": "0.4.0",
  "name": "{name}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{name}",
      "isGateway": {gateway},
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "10.213.{}.0/24" }}]],
        "dataDir": "{}"
      }}
    }}
  ]
}}
"#,
            pid % 250,
            d.join("cni/ipam").display()
        )
    }

    /// The CNI network's and its bridge's name (unique to this test process).
    pub fn bridge_name() -> String {
        format!("hullt{}", std::process::id())
    }

    /// The cgroup parent to give pods (`LinuxPodSandboxConfig.cgroup_parent`); removed on drop.
    pub fn cgroup_parent() -> String {
        format!("/hulltest{}", std::process::id())
    }

    /// The temp dir holding everything of this containerd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket (also the CRI socket).
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("run/containerd.sock")
    }

    /// hull's run dir (`[sandbox] run_dir`): one entry per live hull sandbox.
    pub fn hull_run_dir(&self) -> PathBuf {
        self.dir.path().join("hull")
    }

    /// Where CRI mounts the pods' network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.grpc.v1.cri/netns")
    }

    /// host-local's address reservations for the test network.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("cni/ipam").join(Self::bridge_name())
    }

    /// The set CRI clients record pod and container ids in (cgroup clean-up on drop).
    pub fn ids(&self) -> Arc<Mutex<BTreeSet<String>>> {
        self.ids.clone()
    }

    fn build_images(&self) {
        let rootfs = self.dir.path().join("img/rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.contains('/') {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        for sub in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        if self.opts.cri {
            let src = self.dir.path().join("img/ipcmk.c");
            std::fs::write(&src, IPCMK_C).unwrap();
            let out = Command::new("gcc")
                .args(["-static", "-O1", "-o"])
                .arg(rootfs.join("bin/ipcmk"))
                .arg(&src)
                .output()
                .unwrap();
            assert!(out.status.success(), "gcc ipcmk: {}", text(&out));
        }
        let busybox = self.image_tar(IMAGE, "busybox.tar", None);
        let namespaces: &[&str] = if self.opts.cri { &[NS, CRI_NS] } else { &[NS] };
        for ns in namespaces {
            self.import(ns, &busybox);
        }
        if self.opts.cri {
            // CRI kills the sandbox container with SIGKILL: sleeping is all a pause needs here.
            let pause = self.image_tar(
                PAUSE_IMAGE,
                "pause.tar",
                Some(r#"["/bin/sleep","2147483647"]"#),
            );
            self.import(CRI_NS, &pause);
        }
    }

    fn image_tar(&self, reference: &str, file: &str, cmd: Option<&str>) -> PathBuf {
        let tar = self.dir.path().join("img").join(file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/shim/mk_oci_image.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(self.dir.path().join("img/rootfs"))
            .arg(&tar)
            .arg(reference)
            .args(cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "mk_oci_image: {}", text(&out));
        tar
    }

    fn import(&self, ns: &str, tar: &Path) {
        let out = self.ctr_in(ns, &["image", "import", tar.to_str().unwrap()]);
        assert!(out.status.success(), "import into {ns}: {}", text(&out));
    }

    /// `ctr` in namespace [`NS`].
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_stdin(args, Stdio::null())
    }

    /// `ctr` in namespace `ns`.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg("ctr")
            .arg("-a")
            .arg(self.sock())
            .arg("-n")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ctr` in namespace [`NS`] with this stdin.
    pub fn ctr_with_stdin(&self, args: &[&str], stdin: Stdio) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg("ctr")
            .arg("-a")
            .arg(self.sock())
            .arg("-n")
            .arg(NS)
            .args(args)
            .stdin(stdin)
            .output()
            .unwrap()
    }

    /// `ctr run --rm` of the busybox image with the hull runtime.
    pub fn run(&self, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
        self.track(id);
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// `ctr run -d` of the busybox image with `runtime` running `cmd`; waits until RUNNING.
    pub fn run_detached(&self, id: &str, runtime: &str, cmd: &[&str]) {
        self.track(id);
        let mut args = vec!["run", "-d", "--runtime", runtime, IMAGE, id];
        args.extend_from_slice(cmd);
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "run -d {id} ({runtime}): {}\n{}",
            text(&out),
            self.log_tail()
        );
        self.wait_for_status(id, "RUNNING");
    }

    /// What an operator does to get rid of `id`: SIGKILL its task, remove the task (retried for
    /// 10 s while it stops), remove the container.
    pub fn kill_and_remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let started = Instant::now();
        while !self.ctr(&["task", "rm", id]).status.success()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.ctr(&["container", "rm", id]);
    }

    /// Nothing of sandbox `id` is left: no sandbox dir, no mounts, no hull-agent for it.
    pub fn assert_clean(&self, id: &str) {
        let sandbox = self.hull_run_dir().join(id);
        assert!(!sandbox.exists(), "{} left behind", sandbox.display());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(
            !mounts.contains(sandbox.to_str().unwrap()),
            "mount under {} left behind",
            sandbox.display()
        );
        let ps = Command::new("pgrep")
            .arg("-f")
            .arg(sandbox.to_str().unwrap())
            .output()
            .unwrap();
        assert!(ps.stdout.is_empty(), "processes left: {}", text(&ps));
    }

    /// The last 30 lines of containerd's log that mention hull or a shim.
    /// Waits until `ctr task ls` shows task `id` with status `want` (20 s at most).
    pub fn wait_for_status(&self, id: &str, want: &str) {
        let started = Instant::now();
        loop {
            let out = self.ctr(&["task", "ls"]);
            let ls = String::from_utf8_lossy(&out.stdout).into_owned();
            if ls.lines().any(|l| l.starts_with(id) && l.contains(want)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{id} never {want}: {ls}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        self.log_lines(|l| l.contains("hull") || l.contains("shim"), 30)
    }

    /// The last `n` lines of containerd's log that `keep` accepts.
    pub fn log_lines(&self, keep: impl Fn(&str) -> bool, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("logs/containerd.log"))
            .unwrap_or_default();
        let lines: Vec<_> = log.lines().filter(|l| keep(l)).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Mount points under the temp dir, deepest first.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.dir.path().display());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .map(unescape_mount_path)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by(|a, b| b.cmp(a));
        points
    }

    /// Records a container or sandbox id (ctr's container name, or a CRI id): the clean-up on
    /// drop also stops processes left in its hull cgroup and removes that cgroup.
    pub fn track(&self, id: &str) {
        self.ids.lock().unwrap().insert(id.to_string());
    }

    /// Whether a process with this `/proc/<pid>/cgroup` content is in one of our cgroups: under
    /// the test's cgroup parent (runc, CRI) or in hull's cgroup of a recorded id.
    fn in_our_cgroup(&self, cgroup: &str) -> bool {
        let parent = format!("{}/", Self::cgroup_parent());
        let ids = self.ids.lock().unwrap();
        cgroup
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| {
                path.starts_with(&parent)
                    || ids.iter().any(|id| {
                        path.strip_prefix("/hull/")
                            .is_some_and(|rest| rest == id || rest.starts_with(&format!("{id}/")))
                    })
            })
    }

    /// Processes that belong to this containerd's world, except containerd itself: their
    /// command line names the temp dir (shims, host agents), their root is in it (runc's
    /// containers), or they are in one of our cgroups (containers a host agent started: they
    /// live in the agent's mount namespace, so their root does not show the temp dir).
    pub fn processes(&self) -> Vec<(u32, String)> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let me = std::process::id();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == self.child.id() || pid == me {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let root = std::fs::read_link(entry.path().join("root"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cmdline.contains(&dir) || root.starts_with(&dir) || self.in_our_cgroup(&cgroup) {
                found.push((pid, format!("{} (root {root})", cmdline.trim())));
            }
        }
        found
    }

    /// Cgroup directories left under the test's cgroup parent, and hull agent cgroups named after
    /// recorded ids.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        let parent = Self::cgroup_parent();
        for hierarchy in cgroup_hierarchies() {
            let base = hierarchy.join(parent.trim_start_matches('/'));
            if let Ok(entries) = std::fs::read_dir(&base) {
                left.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.path()),
                );
            }
            for id in self.ids.lock().unwrap().iter() {
                let hull = hierarchy.join("hull").join(id);
                if hull.exists() {
                    left.push(hull);
                }
            }
        }
        left
    }

    /// libcni's cached results of this test's pods: `<network>-<pod id>-eth0` for the bridge
    /// network and `cni-loopback-<pod id>-lo` for the loopback that containerd adds.
    pub fn cni_cache_files(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", Self::bridge_name());
        let ids = self.ids.lock().unwrap();
        std::fs::read_dir(CNI_CACHE_DIR)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.starts_with(&prefix) || ids.iter().any(|id| name.contains(id.as_str()))
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cleanup(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // Shims, host agents and containers this containerd started, by pid.
        for _ in 0..3 {
            let procs = self.processes();
            if procs.is_empty() {
                break;
            }
            for (pid, _) in procs {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Leave nothing mounted under the temp dir (netns and shm mounts, rootfs overlays).
        for point in self.mounts() {
            let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if self.opts.cri {
            let bridge = Self::bridge_name();
            if Path::new("/sys/class/net").join(&bridge).exists() {
                let _ = Command::new("ip")
                    .args(["link", "del", &bridge])
                    .stderr(Stdio::null())
                    .status();
            }
            for file in self.cni_cache_files() {
                let _ = std::fs::remove_file(file);
            }
        }
        for dir in self.cgroups() {
            remove_cgroup(&dir);
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup(&hierarchy.join(Self::cgroup_parent().trim_start_matches('/')));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&code, 8) {
                out.push(byte as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// Every mounted cgroup hierarchy (v1 controllers and the v2 one).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let point = f.nth(1)?;
            let fstype = f.next()?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Removes a cgroup directory and its children (cgroup dirs are removed with rmdir, leaves first).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup(&entry.path());
            }
        }
    }
    // A cgroup whose last process was just killed stays busy for a moment.
    for _ in 0..20 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
