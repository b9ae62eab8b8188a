//! `hull console <sandbox>` against sandboxes a REAL containerd started through the shim
//! (host-agent mode: the agent's hybrid-vsock listener speaks the protocol hull-vmm's socket
//! does, and the agent is asked for the console by the same CreateSandbox field as in a VM).
//! With the default config the console is refused in words; with `debug_console = true` a
//! piped script runs in the agent's shell on a pty.
//!
//! Needs what `tests/containerd.rs` needs (root, containerd, ctr, runc, busybox-static, a built
//! hull-agent); prints SKIPPED without it, fails on CI.
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test console -- --nocapture`

mod common;

use std::ffi::OsStr;
use std::process::Output;

use common::containerd::{containerd_or_skip, Containerd, Options, RUNTIME};
use common::{hull_with_input, text};

/// Runs `hull console <id>` with `input` piped to it; fails the test after 20 s.
fn hull_console(c: &Containerd, id: &str, input: &[u8]) -> Output {
    let config = c.dir().join("hull.toml");
    hull_with_input(
        &[
            OsStr::new("console"),
            OsStr::new(id),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        input,
    )
}

/// Sets `debug_console` in the test's hull config (read by each new shim).
fn set_debug_console(c: &Containerd, on: bool) {
    let path = c.dir().join("hull.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("debug_console"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("debug_console = {on}\n{kept}")).unwrap();
}

#[test]
fn hull_console_runs_a_shell_only_where_the_config_enabled_it() {
    let Some(c) = containerd_or_skip("hull console", &Options::default()) else {
        return;
    };
    let script = b"echo hello-from-console-$((40+2)); exit\n";

    // Default config: no console, and `hull console` says why.
    c.run_detached("plain1", RUNTIME, &["sleep", "1000"]);
    let out = hull_console(&c, "plain1", script);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sandbox plain1 has no debug console")
            && stderr.contains("debug_console = true"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    c.kill_and_remove("plain1");
    c.assert_clean("plain1");

    // debug_console = true: the piped script runs in the sandbox's shell (the pty echoes the
    // input line too, but only the shell prints "42").
    set_debug_console(&c, true);
    c.run_detached("console1", RUNTIME, &["sleep", "1000"]);
    let out = hull_console(&c, "console1", script);
    assert!(out.status.success(), "{}\n{}", text(&out), c.log_tail());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-from-console-42"),
        "{}",
        text(&out)
    );
    // The container is untouched by the console.
    let out = c.ctr(&["task", "ls"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("console1") && l.contains("RUNNING")),
        "{}",
        text(&out)
    );
    // An unknown sandbox is named.
    let out = hull_console(&c, "no-such-sandbox", b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sandbox no-such-sandbox"),
        "{}",
        text(&out)
    );
    c.kill_and_remove("console1");
    c.assert_clean("console1");
    set_debug_console(&c, false);
}
