//! Scratch network namespaces for the tests that put a tap in one (never the host's own).

use std::path::Path;
use std::process::Command;

/// Whether this machine can run a network test (root, /dev/net/tun, `ip`). When CI or
/// HULL_REQUIRE_NET is set it must: a missing piece fails `test` instead of skipping it.
pub fn net_allowed(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tun = Path::new("/dev/net/tun").exists();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && tun && ip {
        return true;
    }
    let why = format!("needs root ({root}), /dev/net/tun ({tun}) and `ip` ({ip})");
    if std::env::var_os("HULL_REQUIRE_NET").is_some() || std::env::var_os("CI").is_some() {
        panic!("the {test} test {why}");
    }
    eprintln!("SKIPPED: the {test} test {why}");
    false
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted on drop.
pub struct NetNs(pub String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
