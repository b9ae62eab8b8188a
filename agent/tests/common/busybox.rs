//! A hull-agent on the host serving its hybrid-vsock listener, with a busybox rootfs under its
//! shared directory (`c/rootfs`), and helpers that drive containers through it. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentServiceClient;
use tokio::io::AsyncReadExt as _;
use tokio::net::UnixStream;

/// Where the suite finds an agent that is already running (the lab's microVM): the hull-vmm
/// hybrid-vsock socket, and the directory (in this machine) that the VM shares with the agent
/// through virtio-fs, holding the busybox rootfs at `c/rootfs`. The agent must have been given
/// that share with CreateSandbox already (`hull agent create-sandbox`).
const REMOTE_SOCKET_ENV: &str = "HULL_TEST_AGENT_SOCKET";
const REMOTE_SHARED_ENV: &str = "HULL_TEST_AGENT_SHARED_DIR";

/// The agent under test: a process started here (killed on drop, its log printed if the test
/// panicked), or a remote agent named by the environment (see [`REMOTE_SOCKET_ENV`]).
pub struct BusyboxAgent {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    shared: PathBuf,
    /// The hybrid-vsock socket.
    pub socket: PathBuf,
}

impl Drop for BusyboxAgent {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

impl BusyboxAgent {
    /// Starts the agent, or uses the remote one; None (after printing SKIPPED) when not root.
    pub fn start() -> Option<BusyboxAgent> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: container tests need root");
            return None;
        }
        if let Some(remote) = Self::remote() {
            return Some(remote);
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        busybox_rootfs(&shared.join("c/rootfs"));
        let socket = dir.path().join("agent.sock");
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("hybrid://{}", socket.display()))
            .arg("--shared-dir")
            .arg(&shared)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // Until it accepts: the socket file exists from bind(), before listen() (a connection
        // that says nothing is dropped by the agent's hybrid listener).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(BusyboxAgent {
            child: Some(child),
            dir: Some(dir),
            shared,
            socket,
        })
    }

    fn remote() -> Option<BusyboxAgent> {
        let socket = PathBuf::from(std::env::var_os(REMOTE_SOCKET_ENV)?);
        let shared = std::env::var_os(REMOTE_SHARED_ENV).map(PathBuf::from);
        let shared = shared.unwrap_or_else(|| {
            panic!("{REMOTE_SOCKET_ENV} is set: {REMOTE_SHARED_ENV} must name the shared directory")
        });
        assert!(
            shared.join("c/rootfs/bin/busybox").is_file(),
            "{}: no busybox rootfs at c/rootfs",
            shared.display()
        );
        Some(BusyboxAgent {
            child: None,
            dir: None,
            shared,
            socket,
        })
    }

    /// Whether the agent runs elsewhere (a microVM) rather than as a child of this test.
    pub fn is_remote(&self) -> bool {
        self.child.is_none()
    }

    /// The agent's pid on the host (a local agent only).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a remote agent has no local pid")
            .id()
    }

    /// The shared directory (the rootfs is `c/rootfs` in it).
    pub fn shared_dir(&self) -> PathBuf {
        self.shared.clone()
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        match &self.dir {
            Some(dir) => std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default(),
            None => "(remote agent: its log is on the microVM's console)".to_string(),
        }
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
    let stdio = StdioRequest {
        stdout: true,
        ..Default::default()
    };
    exec_with(c, agent, id, exec_id, &process, stdio).await
}

/// ExecProcess of an OCI `process` with `stdio` (which must ask for stdout), then StartExec;
/// returns the pid and the task collecting stdout.
pub async fn exec_with(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    exec_id: &str,
    process: &serde_json::Value,
    stdio: StdioRequest,
) -> (u32, tokio::task::JoinHandle<Vec<u8>>) {
    let req = ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        oci_process_json: process.to_string().into_bytes(),
        stdio: Some(stdio).into(),
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
    wait_within(c, id, exec_id, Duration::from_secs(30)).await
}

/// [`wait`] allowing the process `deadline` to exit.
pub async fn wait_within(
    c: &AgentServiceClient,
    id: &str,
    exec_id: &str,
    deadline: Duration,
) -> i32 {
    let r = c
        .wait_process(
            ttrpc::context::with_duration(deadline),
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

/// Whether the agent's machine has the cgroup v2 `controllers` the test needs. A remote agent (the
/// lab's microVM) always should: its kernel and PID 1 set them up, so nothing is skipped there.
/// Locally it prints SKIPPED with the reason and returns false when one is missing (this host
/// keeps memory/pids/cpu on cgroup v1).
pub fn has_cgroup_controllers(agent: &BusyboxAgent, needed: &[&str]) -> bool {
    if agent.is_remote() {
        return true;
    }
    let root = match hull_agent::container::cgroup::find_root() {
        Ok(root) => root,
        Err(err) => {
            println!("SKIPPED (no cgroup v2 hierarchy: {err}; covered in the lab)");
            return false;
        }
    };
    let available = hull_agent::container::cgroup::controllers(&root);
    let missing: Vec<_> = needed
        .iter()
        .filter(|c| !available.iter().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        println!(
            "SKIPPED (cgroup v2 at {} lacks {missing:?} (has {available:?}): they are on cgroup v1 \
             here; covered in the lab)",
            root.display()
        );
        return false;
    }
    true
}
