//! Tier 1: containerd-shim-hull-v2 under a REAL containerd (Debian's `containerd` + `runc`
//! packages), started by the test with its own config, root, state and socket in a temp dir,
//! a locally built busybox image, and the shim in sandbox mode "host-agent" (hull-agent on the
//! host behind the same hybrid-vsock protocol as in a VM).
//!
//! Needs root, containerd, ctr, runc, busybox-static, python3 and a built hull-agent next to the
//! test binaries (`cargo build -p hull-agent`). A missing piece prints SKIPPED with the reason,
//! or fails the test when `CI` or `HULL_REQUIRE_CRI` is set. The fixture: `common/containerd.rs`.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test containerd -- --nocapture --test-threads=1`
//! Benchmark: `... --test containerd -- --ignored bench --nocapture`

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containerd::{containerd_or_skip, which, Containerd, Options, IMAGE, NS, RUNTIME};
use common::text;

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
    c.wait_for_status("killed", "RUNNING");
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
    c.run_detached("long1", RUNTIME, &["sleep", "1000"]);
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

    // The operator's view: `hull ps` lists the sandbox with its container and memory,
    // `hull logs` prints its agent log.
    let hull = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hull"))
            .args(args)
            .arg("--config")
            .arg(c.dir().join("hull.toml"))
            .output()
            .unwrap()
    };
    let out = hull(&["ps"]);
    assert!(out.status.success(), "hull ps: {}", text(&out));
    let ps = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = ps
        .lines()
        .find(|l| l.starts_with("long1 "))
        .unwrap_or_else(|| panic!("long1 not in hull ps:\n{ps}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "host-agent", "{row}");
    assert!(
        cols[4].parse::<f64>().unwrap() > 0.0,
        "PSS of the sandbox: {row}"
    );
    assert_eq!(cols[6], "long1", "its container: {row}");
    let out = hull(&["logs", "long1"]);
    assert!(out.status.success(), "hull logs: {}", text(&out));
    assert!(!out.stdout.is_empty(), "empty agent log");
    let out = hull(&["logs", "no-such-sandbox"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-sandbox"),
        "{}",
        text(&out)
    );

    assert!(c.ctr(&["task", "pause", "long1"]).status.success());
    c.wait_for_status("long1", "PAUSED");
    assert!(c.ctr(&["task", "resume", "long1"]).status.success());
    c.wait_for_status("long1", "RUNNING");

    // PID 1 (sleep) has no SIGTERM handler, so as with runc only SIGKILL stops it.
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "long1"]);
    assert!(out.status.success(), "kill: {}", text(&out));
    c.wait_for_status("long1", "STOPPED");
    c.kill_and_remove("long1");
    c.assert_clean("long1");
}

/// The pid the sandbox's `pids` file records for `name` (e.g. "hull-agent").
fn sandbox_pid(c: &Containerd, sandbox: &str, name: &str) -> u32 {
    let pids = std::fs::read_to_string(c.hull_run_dir().join(sandbox).join("pids")).unwrap();
    pids.lines()
        .find_map(|l| {
            let mut f = l.split(' ');
            (f.next()? == name)
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in the pids file: {pids}"))
}

/// Nothing of container `id`'s processes is left on the host: no process in its hull cgroup
/// or running its `sleep 1000`, and no hull cgroup of it (the host agent that ran it is dead).
fn assert_container_gone(c: &Containerd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let procs: Vec<(u32, String)> = c
            .processes()
            .into_iter()
            .filter(|(pid, cmd)| {
                cmd.starts_with("sleep 1000")
                    || std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                        .is_ok_and(|cg| cg.contains(&format!("/hull/{id}")))
            })
            .collect();
        let cgroups: Vec<_> = c
            .cgroups()
            .into_iter()
            .filter(|p| p.ends_with(format!("hull/{id}")))
            .collect();
        if procs.is_empty() && cgroups.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by {id}: processes {procs:?}, cgroups {cgroups:?}\n{}",
            c.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shim and its host agent killed with SIGKILL while the container runs: containerd's
/// `delete` through the shim binary stops what is left, the container's processes and cgroup
/// included.
fn scenario_crash_cleanup(c: &Containerd) {
    c.run_detached("crash1", RUNTIME, &["sleep", "1000"]);
    let sandbox = c.hull_run_dir().join("crash1");
    assert!(sandbox.join("shared/crash1/rootfs/bin/busybox").exists());
    let agent = sandbox_pid(c, "crash1", "hull-agent");
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
    let _ = Command::new("kill")
        .args(["-9", &agent.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let _ = c.ctr(&["task", "rm", "-f", "crash1"]);
    let _ = c.ctr(&["container", "rm", "crash1"]);
    c.assert_clean("crash1");
    assert_container_gone(c, "crash1");
}

/// The host agent killed with SIGKILL under a live shim: the task exits (containerd sees it
/// stopped, not hung), and deleting it leaves no container process or cgroup.
fn scenario_agent_killed(c: &Containerd) {
    c.run_detached("agentkill1", RUNTIME, &["sleep", "1000"]);
    let agent = sandbox_pid(c, "agentkill1", "hull-agent");
    let _ = Command::new("kill")
        .args(["-9", &agent.to_string()])
        .status();
    c.wait_for_status("agentkill1", "STOPPED");
    c.kill_and_remove("agentkill1");
    c.assert_clean("agentkill1");
    assert_container_gone(c, "agentkill1");
}

#[test]
fn containerd_scenarios() {
    let Some(c) = containerd_or_skip("containerd scenarios", &Options::default()) else {
        return;
    };
    type Scenario = fn(&Containerd);
    let scenarios: [(&str, Scenario); 7] = [
        ("echo", scenario_echo),
        ("tty", scenario_tty),
        ("exit codes", scenario_exit_codes),
        ("stdin", scenario_stdin),
        ("exec/kill/metrics/pause", scenario_exec_kill_metrics_pause),
        ("crash cleanup", scenario_crash_cleanup),
        ("agent killed", scenario_agent_killed),
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
    let Some(c) = containerd_or_skip("bench", &Options::default()) else {
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
