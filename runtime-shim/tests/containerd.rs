//! Tier 1: containerd-shim-hull-v2 under a REAL containerd (Debian's `containerd` + `runc`
//! packages), started by the test with its own config, root, state and socket in a temp dir,
//! a locally built busybox image, and the shim in sandbox mode "host-agent" (hull-agent on the
//! host behind the same hybrid-vsock protocol as in a VM).
//!
//! Needs root, containerd, ctr, runc, busybox-static, python3 and a built hull-agent next to the
//! test binaries (`cargo build -p hull-agent`). A missing piece prints SKIPPED with the reason.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test containerd -- --nocapture --test-threads=1`
//! Benchmark: `... --test containerd -- --ignored bench --nocapture`

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;

const IMAGE: &str = "docker.io/library/busybox:hull";
const NS: &str = "hulltest";
const RUNTIME: &str = "io.containerd.hull.v2";

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // Shims and host agents this test's containerd started (their command lines name our
        // temp dir), by pid.
        if let Ok(out) = Command::new("pgrep")
            .arg("-f")
            .arg(self.dir.path())
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        // Leave nothing mounted under the temp dir.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-hull-v2"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the tests, if it cannot.
fn skip_reason() -> Option<String> {
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
    None
}

impl Containerd {
    fn start() -> Containerd {
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
        std::fs::write(
            d.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/run/containerd.sock"
[debug]
  address = "{d}/run/debug.sock"
  level = "debug"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_tcp_service = true
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
                d = d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("logs/containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    d.join("bin").display()
                ),
            )
            .env("HULL_CONFIG", d.join("hull.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ctrd = Containerd { dir, child };
        let started = Instant::now();
        while !ctrd.sock().exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ctrd.build_image();
        ctrd
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("run/containerd.sock")
    }

    fn build_image(&self) {
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
        let tar = self.dir.path().join("img/busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/shim/mk_oci_image.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&rootfs)
            .arg(&tar)
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = self.ctr(&["image", "import", tar.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", text(&out));
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_stdin(args, Stdio::null())
    }

    fn ctr_with_stdin(&self, args: &[&str], stdin: Stdio) -> Output {
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

    fn run(&self, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// Nothing of sandbox `id` is left: no sandbox dir, no mounts, no hull-agent for it.
    fn assert_clean(&self, id: &str) {
        let sandbox = self.dir.path().join("hull").join(id);
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

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("logs/containerd.log"))
            .unwrap_or_default();
        let lines: Vec<_> = log
            .lines()
            .filter(|l| l.contains("hull") || l.contains("shim"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn wait_for_status(c: &Containerd, id: &str, want: &str) {
    let started = Instant::now();
    loop {
        let out = c.ctr(&["task", "ls"]);
        let ls = String::from_utf8_lossy(&out.stdout).into_owned();
        if ls.lines().any(|l| l.starts_with(id) && l.contains(want)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{id} never {want}: {ls}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_detached(c: &Containerd, id: &str, cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--runtime", RUNTIME, IMAGE, id];
    args.extend_from_slice(cmd);
    let out = c.ctr(&args);
    assert!(
        out.status.success(),
        "run -d {id}: {}\n{}",
        text(&out),
        c.log_tail()
    );
    wait_for_status(c, id, "RUNNING");
}

fn remove(c: &Containerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let started = Instant::now();
    while !c.ctr(&["task", "rm", id]).status.success()
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.ctr(&["container", "rm", id]);
}

fn scenario_echo(c: &Containerd) {
    let out = c.run("echo1", &[], &["echo", "hi"]);
    assert!(out.status.success(), "{}\n{}", text(&out), c.log_tail());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    c.assert_clean("echo1");
    // The shim exited after Shutdown.
    std::thread::sleep(Duration::from_millis(300));
    let ps = Command::new("pgrep")
        .args(["-f", "containerd-shim-hull-v2.*-id echo1 "])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "shim still running: {}", text(&ps));
}

fn scenario_exit_codes(c: &Containerd) {
    let out = c.run("exit3", &[], &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    c.assert_clean("exit3");
    // Killed from outside (PID 1 of the container ignores signals it has no handler for, so
    // the kill comes through containerd): `ctr run` reports 128 + 9.
    let sock = c.sock();
    let runner = std::thread::spawn(move || {
        Command::new("ctr")
            .args([
                "-a",
                sock.to_str().unwrap(),
                "-n",
                NS,
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                IMAGE,
                "killed",
                "sleep",
                "1000",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    wait_for_status(c, "killed", "RUNNING");
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "killed"]);
    assert!(out.status.success(), "kill: {}", text(&out));
    let out = runner.join().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    c.assert_clean("killed");
}

fn scenario_stdin(c: &Containerd) {
    let mut child = Command::new("ctr")
        .args([
            "-a",
            c.sock().to_str().unwrap(),
            "-n",
            NS,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "stdin1",
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
}

fn scenario_tty(c: &Containerd) {
    tty_run(c, RUNTIME);
}

/// `ctr run -t` under `script` (ctr needs a terminal on its side). Checks, as for runc, that stdin
/// and stdout are the container's pty and that the window size ctr sends reaches that pty.
///
/// Two properties of ctr, the same for runc (run this with `io.containerd.runc.v2` to see):
/// - on Linux ctr sends the window size only with ResizePty *after* Start, so the process waits
///   until its pty has a size instead of racing that call;
/// - `script` whose stdin reaches EOF types an EOF character into ctr's terminal, which ctr
///   forwards to the container (it shows up as `^@`): stdin is kept open instead.
fn tty_run(c: &Containerd, runtime: &str) {
    use std::io::Read as _;
    if !which("script") {
        eprintln!("SKIPPED tty: `script` (bsdutils) missing");
        return;
    }
    let container = "readlink /proc/self/fd/0; readlink /proc/self/fd/1; i=0; \
        while [ -z \"$(stty size 2>/dev/null)\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
        stty size";
    // script's own pty takes its size from script's stdin, which is not a terminal: set it.
    let cmd = format!(
        "stty rows 24 cols 80; ctr -a {} -n {NS} run --rm -t --runtime {runtime} {IMAGE} tty1 sh -c '{container}'",
        c.sock().display()
    );
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin_kept_open = child.stdin.take();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    drop(stdin_kept_open);
    let out = child.wait_with_output().unwrap();
    let report = format!("{}\nstdout: {stdout:?}", text(&out));
    assert!(out.status.success(), "{report}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    // Like runc: stdin and stdout are the same pty, then the size ctr set on its terminal.
    assert_eq!(lines.len(), 3, "{report}");
    assert!(lines[0].starts_with("/dev/pts/"), "{report}");
    assert_eq!(lines[1], lines[0], "{report}");
    assert_eq!(lines[2], "24 80", "{report}");
}

fn scenario_exec_kill_metrics_pause(c: &Containerd) {
    start_detached(c, "long1", &["sleep", "1000"]);
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "long1",
        "sh",
        "-c",
        "echo from-exec; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-exec\n");

    let out = c.ctr(&["task", "metrics", "long1"]);
    assert!(out.status.success(), "metrics: {}", text(&out));

    let out = c.ctr(&["task", "ps", "long1"]);
    assert!(out.status.success(), "ps: {}", text(&out));

    assert!(c.ctr(&["task", "pause", "long1"]).status.success());
    wait_for_status(c, "long1", "PAUSED");
    assert!(c.ctr(&["task", "resume", "long1"]).status.success());
    wait_for_status(c, "long1", "RUNNING");

    // PID 1 (sleep) has no SIGTERM handler, so as with runc only SIGKILL stops it.
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "long1"]);
    assert!(out.status.success(), "kill: {}", text(&out));
    wait_for_status(c, "long1", "STOPPED");
    remove(c, "long1");
    c.assert_clean("long1");
}

fn scenario_crash_cleanup(c: &Containerd) {
    start_detached(c, "crash1", &["sleep", "1000"]);
    let sandbox = c.dir.path().join("hull/crash1");
    assert!(sandbox.join("shared/crash1/rootfs/bin/busybox").exists());
    // The shim's pid: the process whose cmdline has `-id crash1` without `start`.
    let ps = Command::new("pgrep")
        .args(["-f", "containerd-shim-hull-v2.*-id crash1"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(!pids.trim().is_empty(), "no shim process found");
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = c.ctr(&["task", "rm", "-f", "crash1"]);
    let _ = c.ctr(&["container", "rm", "crash1"]);
    c.assert_clean("crash1");
}

/// Starts the test's containerd, or prints why the test is skipped and returns None.
fn containerd_or_skip(what: &str) -> Option<Containerd> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED {what}: {reason}");
        return None;
    }
    Some(Containerd::start())
}

#[test]
fn containerd_scenarios() {
    let Some(c) = containerd_or_skip("containerd scenarios") else {
        return;
    };
    type Scenario = fn(&Containerd);
    let scenarios: [(&str, Scenario); 6] = [
        ("echo", scenario_echo),
        ("tty", scenario_tty),
        ("exit codes", scenario_exit_codes),
        ("stdin", scenario_stdin),
        ("exec/kill/metrics/pause", scenario_exec_kill_metrics_pause),
        ("crash cleanup", scenario_crash_cleanup),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&c)));
        match result {
            Ok(()) => eprintln!("scenario {name}: ok"),
            Err(_) => {
                eprintln!("scenario {name}: FAILED");
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failed scenarios: {failed:?}\ncontainerd log (hull lines):\n{}",
        c.log_tail()
    );
}

/// Prints `ctr run --rm IMG true` latency with hull (host-agent mode) and runc, median and ratio.
#[test]
#[ignore]
fn bench_ctr_run_true() {
    let Some(c) = containerd_or_skip("bench") else {
        return;
    };
    let n = 15;
    let median = |runtime: &str| {
        let mut times = Vec::new();
        for i in 0..n {
            let id = format!("b-{}-{i}", runtime.replace('.', "-"));
            let started = Instant::now();
            let out = c.ctr(&["run", "--rm", "--runtime", runtime, IMAGE, &id, "true"]);
            times.push(started.elapsed());
            assert!(out.status.success(), "{runtime}: {}", text(&out));
        }
        times.sort();
        times[n / 2]
    };
    let hull = median(RUNTIME);
    let runc = median("io.containerd.runc.v2");
    println!(
        "ctr run --rm IMG true (PVM host, hull in host-agent mode, n={n}): hull median {:?}, runc median {:?}, ratio {:.2}",
        hull,
        runc,
        hull.as_secs_f64() / runc.as_secs_f64()
    );
}
