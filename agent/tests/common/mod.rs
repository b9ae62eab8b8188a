//! Shared test fixtures: the hull-agent binary running on a Unix socket, and a hybrid-vsock
//! proxy that behaves like hull-vmm's socket (`CONNECT <port>\n` / `OK <n>\n`, then bytes).

#![allow(dead_code)] // each test crate uses its own subset

pub mod busybox;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hull_proto::agent_ttrpc::AgentServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

/// A hull-agent process in host mode, killed on drop if still running.
pub struct AgentProcess {
    child: Child,
    dir: tempfile::TempDir,
    /// The agent's API socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `hull-agent --listen unix://<tmp>/agent.sock` and waits until it accepts.
    pub fn start() -> Self {
        Self::start_under(&[])
    }

    /// Starts the agent inside the network namespace `/run/netns/<netns>` (through
    /// `ip netns exec`, which execs the agent: the child is the agent itself).
    pub fn start_in_netns(netns: &str) -> Self {
        Self::start_under(&["ip", "netns", "exec", netns])
    }

    /// Starts the agent as the last argument of `wrapper` (none: directly).
    fn start_under(wrapper: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let agent = env!("CARGO_BIN_EXE_hull-agent");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(agent);
                command
            }
            None => Command::new(agent),
        };
        let child = command
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawning hull-agent");
        let mut agent = AgentProcess {
            child,
            dir,
            socket,
            log,
        };
        agent.wait_until_accepting();
        agent
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("hull-agent exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "hull-agent did not listen within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A ttrpc client on a fresh direct connection.
    pub async fn client(&self) -> AgentServiceClient {
        let client =
            ttrpc::asynchronous::Client::connect(&format!("unix://{}", self.socket.display()))
                .await
                .expect("connecting to the agent socket");
        AgentServiceClient::new(client)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- hull-agent log ----\n{}", self.log());
        }
    }
}

/// A stand-in for hull-vmm's hybrid-vsock socket in front of the agent's Unix socket:
/// accepts connections, expects `CONNECT <port>\n` for `port`, connects to the agent, answers
/// `OK 1\n` and pipes bytes both ways. A wrong CONNECT line gets the connection closed, as the
/// VMM does when nothing listens on the port.
pub struct HybridProxy {
    /// The proxy's socket (what the shim would connect to).
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HybridProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`HybridProxy`] forwarding guest `port` to `agent_socket`.
pub fn start_hybrid_proxy(agent_socket: &Path, port: u32) -> HybridProxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).expect("binding the proxy socket");
    let agent_socket = agent_socket.to_path_buf();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(proxy_one(conn, agent_socket.clone(), port));
        }
    });
    HybridProxy {
        path,
        _dir: dir,
        task,
    }
}

async fn proxy_one(mut host: UnixStream, agent_socket: PathBuf, port: u32) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match host.read(&mut byte).await {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            _ => return,
        }
    }
    if line != format!("CONNECT {port}\n").as_bytes() {
        return;
    }
    let Ok(mut guest) = UnixStream::connect(&agent_socket).await else {
        return;
    };
    if host.write_all(b"OK 1\n").await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
}

/// The ttrpc status of a failed call (panics on success or a non-status error).
pub fn rpc_status<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> ttrpc::Status {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status,
        other => panic!("expected an RPC status error, got {other:?}"),
    }
}

/// A call context with a 5 s deadline.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(5))
}
