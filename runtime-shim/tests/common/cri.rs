//! The CRI client of the tests: the library's ([`hull_runtime::cri_client`]) with what only
//! tests want on top — calls that fail the test instead of returning an error, and the CRI log
//! file's parser.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Each test crate uses its own part of these.
#[allow(unused_imports)]
pub use hull_runtime::cri_client::{
    api, container_config, mount, short, Cri, CriError, CriResult, Exec,
};

/// The Kubernetes namespace of the tests' pods.
pub const K8S_NAMESPACE: &str = "hull-test";

/// Connects to CRI at `sock`, recording created pod and container ids in `ids`; fails the test
/// when it cannot.
pub fn connect(sock: &Path, ids: Arc<Mutex<BTreeSet<String>>>) -> Cri {
    Cri::connect(sock)
        .unwrap_or_else(|e| panic!("{e}"))
        .tracking(ids)
}

/// A pod config as kubelet sends it, in namespace [`K8S_NAMESPACE`].
pub fn pod_config(name: &str, log_dir: &Path, cgroup_parent: &str) -> api::PodSandboxConfig {
    hull_runtime::cri_client::pod_config(name, K8S_NAMESPACE, log_dir, cgroup_parent)
}

/// Test-only calls on the client: they fail the test instead of returning an error.
pub trait CriTestExt {
    /// Waits until CRI lists the images and its network is ready (both follow containerd's
    /// start and image import asynchronously).
    fn wait_ready(&self, images: &[&str]);
    /// `sh -c script` through ExecSync; fails unless it exits 0, returns its stdout.
    fn sh(&self, id: &str, script: &str) -> String;
    /// Polls ContainerStatus until the container has exited; its last status.
    fn wait_exited(&self, id: &str, timeout: Duration) -> api::ContainerStatus;
}

impl CriTestExt for Cri {
    fn wait_ready(&self, images: &[&str]) {
        let started = Instant::now();
        loop {
            let missing: Vec<&str> = images
                .iter()
                .copied()
                .filter(|i| !self.image_present(i).unwrap_or(false))
                .collect();
            let net = self.network_ready().unwrap_or(false);
            if missing.is_empty() && net {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "CRI not ready: images missing {missing:?}, network ready {net}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sh(&self, id: &str, script: &str) -> String {
        let exec = self
            .exec_sync(id, &["sh", "-c", script])
            .unwrap_or_else(|e| panic!("exec `{script}` in {}: {e}", short(id)));
        assert_eq!(exec.code, 0, "exec `{script}` in {}: {exec:?}", short(id));
        exec.stdout
    }

    fn wait_exited(&self, id: &str, timeout: Duration) -> api::ContainerStatus {
        let started = Instant::now();
        loop {
            let status = self
                .status(id)
                .unwrap_or_else(|e| panic!("status of {}: {e}", short(id)));
            if status.state == api::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not exit in {timeout:?}: {status:?}",
                short(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One line of a CRI container log: `<RFC 3339 time> <stream> <P|F> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `F` (full line) or `P` (partial).
    pub tag: String,
    /// The text, without the newline.
    pub text: String,
}

/// Parses a CRI log file; panics on a line not in CRI's format.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    content
        .lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (f.next(), f.next(), f.next()) else {
                panic!("{}: not a CRI log line: {line:?}", path.display());
            };
            assert!(
                time.len() > 20 && time.contains('T'),
                "{}: bad time in {line:?}",
                path.display()
            );
            LogLine {
                stream: stream.to_string(),
                tag: tag.to_string(),
                text: f.next().unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// The log file of container `name` in a pod whose log directory is `log_dir`.
pub fn log_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("{name}.log"))
}
