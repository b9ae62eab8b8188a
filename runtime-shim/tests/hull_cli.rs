//! The `hull` tool against a real hull-agent on its hybrid-vsock listener (the same protocol as
//! hull-vmm's socket). Needs a built hull-agent next to the test binaries
//! (`cargo build -p hull-agent`); prints SKIPPED otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{hull_with_input, text};

struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent() -> Option<Agent> {
    let bin = Path::new(env!("CARGO_BIN_EXE_hull"))
        .parent()
        .unwrap()
        .join("hull-agent");
    if !bin.exists() {
        eprintln!(
            "SKIPPED: {} missing (cargo build -p hull-agent)",
            bin.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let child = Command::new(bin)
        .arg("--listen")
        .arg(format!("hybrid://{}", socket.display()))
        .arg("--shared-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the agent did not listen");
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(Agent {
        child,
        socket,
        _dir: dir,
    })
}

fn hull(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hull"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn agent_health_and_create_sandbox() {
    let Some(agent) = start_agent() else { return };
    let uds = agent.socket.to_str().unwrap();

    let out = hull(&["agent", "health", "--uds", uds]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SERVING"),
        "{}",
        text(&out)
    );

    // Bad input is refused by the agent with the field named, and the agent stays up.
    let out = hull(&["agent", "create-sandbox", "--uds", uds, "--id", "bad id"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sandbox_id"),
        "{}",
        text(&out)
    );

    let out = hull(&["agent", "create-sandbox", "--uds", uds, "--id", "sb1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sandbox sb1 created\n"
    );

    let out = hull(&["agent", "health", "--uds", uds]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_missing_socket_is_named_in_the_error() {
    let out = hull(&[
        "agent",
        "create-sandbox",
        "--uds",
        "/nonexistent/vsock.sock",
        "--id",
        "sb1",
        "--timeout",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vsock.sock"),
        "{}",
        text(&out)
    );
}

#[test]
fn agent_logs_prints_the_agent_log_from_boot_on() {
    let Some(agent) = start_agent() else {
        return;
    };
    let socket = agent.socket.to_str().unwrap();
    let out = hull(&["agent", "logs", "--uds", socket, "--for", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    // Logged before anybody connected: kept for the first reader.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("serving the agent API"), "{}", text(&out));
}

#[test]
fn agent_console_opens_only_when_create_sandbox_asked_for_it() {
    let Some(agent) = start_agent() else { return };
    let uds = agent.socket.to_str().unwrap();
    let script = b"echo console-$((40+2)); exit\n";

    // Before CreateSandbox with debug_console the port is closed: refused in words.
    let out = hull_with_input(&["agent", "console", "--uds", uds], script);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("debug console"), "{}", text(&out));
    assert!(stderr.contains("did not answer"), "{}", text(&out));

    let out = hull(&[
        "agent",
        "create-sandbox",
        "--uds",
        uds,
        "--id",
        "sb1",
        "--debug-console",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // The shell runs the piped line on a pty (its echo has no "42") and the console closes
    // when it exits.
    let out = hull_with_input(&["agent", "console", "--uds", uds], script);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("console-42"),
        "{}",
        text(&out)
    );
    // Piped stdin without `exit`: its end reaches the shell as end of file.
    let out = hull_with_input(&["agent", "console", "--uds", uds], b"echo eof-$((1+1))\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("eof-2"),
        "{}",
        text(&out)
    );
}

#[test]
fn pool_run_refuses_a_configuration_that_cannot_hold_vms() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // `top` goes before the [sandbox] table, `mode` into it.
    let config = |name: &str, top: &str, mode: &str| {
        let path = dir.path().join(name);
        let text = format!(
            "{top}\n[sandbox]\n{mode}\nrun_dir = \"{}\"\n",
            run_dir.display()
        );
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let host_agent = config("host-agent.toml", "", "mode = \"host-agent\"");
    let no_jail = config("no-jail.toml", "jail = false", "");
    let no_kernel = config("no-kernel.toml", "kernel = \"/nonexistent/vmlinux\"", "");
    let cases = [
        (vec!["--config", &host_agent], "sandbox.mode must be \"vm\""),
        (vec!["--config", &no_jail], "needs the jail"),
        (vec!["--config", &no_kernel], "/nonexistent/vmlinux"),
        (
            vec!["--size", "0", "--config", &host_agent],
            "pool size is 0",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["pool", "run"];
        all.extend(args.iter().copied());
        let out = hull(&all);
        assert!(!out.status.success(), "{all:?} ran: {}", text(&out));
        assert!(text(&out).contains(expected), "{all:?}: {}", text(&out));
    }
    // Nothing was made where no pool could run.
    assert!(!run_dir.join(".pool").join("ready").exists());

    let out = hull(&["pool", "status", "--config", &host_agent]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 ready, 0 booting"), "{}", text(&out));
}
