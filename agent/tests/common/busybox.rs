//! A hull-agent on the host serving its hybrid-vsock listener, with a busybox rootfs under its
//! shared directory (`c/rootfs`), and helpers that drive containers through it. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentServiceClient;
use tokio::io::AsyncReadExt as _;
use tokio::net::UnixStream;

/// The agent process; killed on drop (its log is printed if the test panicked).
pub struct BusyboxAgent {
    child: Child,
    dir: tempfile::TempDir,
    /// The hybrid-vsock socket.
    pub socket: PathBuf,
}

impl Drop for BusyboxAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

impl BusyboxAgent {
    /// Starts the agent; None (after printing SKIPPED) when not root.
    pub fn start() -> Option<BusyboxAgent> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: container tests need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("shared/c/rootfs"));
        let socket = dir.path().join("agent.sock");
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("hybrid://{}", socket.display()))
            .arg("--shared-dir")
            .arg(dir.path().join("shared"))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(BusyboxAgent { child, dir, socket })
    }

    /// The agent's pid on the host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The shared directory (the rootfs is `c/rootfs` in it).
    pub fn shared_dir(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// A ttrpc client through the hybrid socket.
    pub async fn client(&self) -> AgentServiceClient {
        let c = hull_proto::client::connect_hybrid_vsock(&self.socket, hull_proto::AGENT_API_PORT)
            .await
            .unwrap();
        AgentServiceClient::new(c)
    }

    /// Connects to a stdio port through the hybrid socket.
    pub async fn open_stream(&self, port: u32) -> UnixStream {
        hull_proto::client::open_hybrid_vsock_stream(&self.socket, port, Duration::from_secs(5))
            .await
            .unwrap()
    }
}

/// A busybox rootfs (static /bin/busybox and its applet links) at `rootfs`.
pub fn busybox_rootfs(rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "tmp", "etc", "mnt"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
}

/// A 30 s call context.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(30))
}

/// An OCI spec running `args` in mount/pid/uts/ipc namespaces with proc, /dev and devpts.
pub fn spec(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "hull-test",
        "process": {
            "terminal": false,
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
        ],
        "linux": {"namespaces": [
            {"type": "mount"}, {"type": "pid"}, {"type": "uts"}, {"type": "ipc"}
        ]}
    })
}

/// Reads a stream to its end.
pub async fn read_all(mut s: UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

/// Creates container `id` from `spec` with a stdout stream only; returns the task collecting
/// its output.
pub async fn create(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    spec: &serde_json::Value,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let req = CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec.to_string().into_bytes(),
        rootfs_path: "c/rootfs".into(),
        stdio: Some(StdioRequest {
            stdout: true,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let ports = c
        .create_container(ctx(), &req)
        .await
        .unwrap()
        .stdio_ports
        .unwrap();
    let out = agent.open_stream(ports.stdout_port).await;
    tokio::spawn(read_all(out))
}

/// StartContainer; returns the init pid.
pub async fn start(c: &AgentServiceClient, id: &str) -> u32 {
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .pid
}

/// ExecProcess + StartExec of `args` (stdout only); returns the pid and the output task.
pub async fn exec(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    exec_id: &str,
    args: &[&str],
) -> (u32, tokio::task::JoinHandle<Vec<u8>>) {
    let process = serde_json::json!({
        "args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}
    });
    let req = ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        oci_process_json: process.to_string().into_bytes(),
        stdio: Some(StdioRequest {
            stdout: true,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let ports = c
        .exec_process(ctx(), &req)
        .await
        .unwrap()
        .stdio_ports
        .unwrap();
    let out = tokio::spawn(read_all(agent.open_stream(ports.stdout_port).await));
    let pid = c
        .start_exec(
            ctx(),
            &StartExecRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .pid;
    (pid, out)
}

/// WaitProcess; returns the exit status.
pub async fn wait(c: &AgentServiceClient, id: &str, exec_id: &str) -> i32 {
    let r = c
        .wait_process(
            ctx(),
            &WaitProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.exited_at.seconds > 0);
    r.exit_status
}

/// RemoveContainer with a 1 s stop timeout.
pub async fn remove(c: &AgentServiceClient, id: &str) {
    c.remove_container(
        ctx(),
        &RemoveContainerRequest {
            container_id: id.into(),
            stop_timeout_ms: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}
