//! One pod's sandbox: the processes that hold it (virtiofsd + hull-vmm, or a host hull-agent in
//! test mode), the agent connection, and its directory `<run_dir>/<sandbox-id>/`:
//!
//! - `shared/`        shared with the guest (virtio-fs tag [`SHARED_FS_TAG`]); each
//!   container's rootfs is mounted at `shared/<container-id>/rootfs`
//! - `vsock.sock`     hull-vmm's hybrid-vsock socket (or the host agent's hybrid listener)
//! - `virtiofsd.sock` virtiofsd's vhost-user socket
//! - `pids`           "name pid" lines of the sandbox processes, for `delete` after a shim crash
//! - `*.log`          stdout/stderr of those processes

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_proto::agent::{CreateSandboxRequest, DestroySandboxRequest, SharedFs, VersionRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::config::{resolve_binary, Config, SandboxMode};

/// virtio-fs tag of the shared directory.
pub const SHARED_FS_TAG: &str = "hullfs";
/// Where the guest agent mounts the shared directory.
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";
/// Guest CID given to every sandbox VM (each VM has its own vsock device; the CID is local).
pub const GUEST_CID: u64 = 3;
/// Deadline of short agent calls.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A sandbox that could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The configuration does not allow a sandbox on this machine.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A file system operation on the sandbox directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A process of the sandbox could not be started.
    #[error("starting {name} ({binary}): {source}")]
    Spawn {
        /// "virtiofsd", "hull-vmm" or "hull-agent".
        name: &'static str,
        /// The binary.
        binary: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The agent did not answer in time.
    #[error("the agent of sandbox {sandbox_id} did not answer within {timeout:?}: {last_error}")]
    AgentUnreachable {
        /// The sandbox.
        sandbox_id: String,
        /// The boot timeout.
        timeout: Duration,
        /// The last connection error.
        last_error: String,
    },
    /// The agent refused a call.
    #[error("agent {call}: {source}")]
    Agent {
        /// The RPC.
        call: &'static str,
        /// The ttrpc error.
        source: ttrpc::Error,
    },
    /// A sandbox process died while starting.
    #[error("sandbox process died during start-up: {0}")]
    Died(String),
}

/// The paths of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// `<run_dir>/<sandbox-id>`.
    pub dir: PathBuf,
    /// Shared directory.
    pub shared: PathBuf,
    /// Hybrid-vsock socket.
    pub vsock_socket: PathBuf,
    /// virtiofsd socket.
    pub virtiofsd_socket: PathBuf,
    /// Pid file for crash clean-up.
    pub pids_file: PathBuf,
}

impl SandboxPaths {
    /// The paths of sandbox `sandbox_id` under `run_dir`.
    pub fn new(run_dir: &Path, sandbox_id: &str) -> SandboxPaths {
        let dir = run_dir.join(sandbox_id);
        SandboxPaths {
            shared: dir.join("shared"),
            vsock_socket: dir.join("vsock.sock"),
            virtiofsd_socket: dir.join("virtiofsd.sock"),
            pids_file: dir.join("pids"),
            dir,
        }
    }

    /// Where the rootfs of `container_id` is mounted on the host.
    pub fn rootfs(&self, container_id: &str) -> PathBuf {
        self.shared.join(container_id).join("rootfs")
    }
}

/// Container and sandbox ids: 1..=128 of [A-Za-z0-9_.-], not "." or ".." (agent.proto's rule;
/// also keeps them safe as path components).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A running sandbox.
pub struct Sandbox {
    /// Sandbox id (the pod's, or the container's for a plain `ctr run`).
    pub id: String,
    /// Its paths.
    pub paths: SandboxPaths,
    mode: SandboxMode,
    agent: AgentServiceClient,
    pids: Vec<(&'static str, u32)>,
    stopping: Arc<AtomicBool>,
    death: watch::Receiver<Option<String>>,
}

impl Sandbox {
    /// Starts the sandbox processes for `sandbox_id`, waits for the agent, checks its API
    /// version and sends CreateSandbox.
    pub async fn start(config: &Config, sandbox_id: &str) -> Result<Sandbox, SandboxError> {
        config.check_sandbox_prerequisites()?;
        let paths = SandboxPaths::new(&config.sandbox.run_dir, sandbox_id);
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&paths.shared).map_err(io("creating", &paths.shared))?;
        let _ = std::fs::remove_file(&paths.vsock_socket);
        let _ = std::fs::remove_file(&paths.virtiofsd_socket);

        let mut children = Vec::new();
        match config.sandbox.mode {
            SandboxMode::HostAgent => {
                tracing::warn!(
                    sandbox = sandbox_id,
                    "SANDBOX MODE host-agent: containers run on the HOST through hull-agent with NO \
                     isolation (test-only mode, never use it in production)"
                );
                let agent = resolve_binary(&config.sandbox.agent).unwrap_or_default();
                let mut cmd = tokio::process::Command::new(&agent);
                cmd.arg("--listen")
                    .arg(format!("hybrid://{}", paths.vsock_socket.display()))
                    .arg("--shared-dir")
                    .arg(&paths.shared);
                children.push(spawn_logged(
                    "hull-agent",
                    agent,
                    cmd,
                    &paths.dir.join("agent.log"),
                )?);
            }
            SandboxMode::Vm => {
                make_shared_mount(&paths.shared)?;
                let virtiofsd = if config.virtiofsd.as_os_str().is_empty() {
                    None
                } else {
                    Some(config.virtiofsd.clone())
                };
                let mut std_cmd =
                    hull_vmm::virtio::fs::virtiofsd_command(&paths.shared, &paths.virtiofsd_socket);
                if let Some(binary) = &virtiofsd {
                    let args: Vec<_> = std_cmd.get_args().map(|a| a.to_owned()).collect();
                    std_cmd = std::process::Command::new(binary);
                    std_cmd.args(args);
                }
                let binary = PathBuf::from(std_cmd.get_program());
                children.push(spawn_logged(
                    "virtiofsd",
                    binary,
                    tokio::process::Command::from(std_cmd),
                    &paths.dir.join("virtiofsd.log"),
                )?);
                wait_for_socket(&paths.virtiofsd_socket, Duration::from_secs(5)).await;
                let vmm = resolve_binary(&config.vmm).unwrap_or_default();
                let mut cmdline = hull_vmm::cmdline::DEFAULT_CMDLINE.to_string();
                if !config.debug {
                    cmdline.push_str(" quiet");
                }
                if !config.kernel_params.is_empty() {
                    cmdline.push(' ');
                    cmdline.push_str(&config.kernel_params);
                }
                let mut cmd = tokio::process::Command::new(&vmm);
                cmd.arg("--kernel")
                    .arg(&config.kernel)
                    .arg("--initrd")
                    .arg(&config.initramfs)
                    .arg("--cmdline")
                    .arg(cmdline)
                    .arg("--mem-mib")
                    .arg(config.mem_mib.to_string())
                    .arg("--vcpus")
                    .arg(config.vcpus.to_string())
                    .arg("--serial-log")
                    .arg(paths.dir.join("console.log"))
                    .arg("--vsock-cid")
                    .arg(GUEST_CID.to_string())
                    .arg("--vsock-uds")
                    .arg(&paths.vsock_socket)
                    .arg("--fs")
                    .arg(format!(
                        "tag={SHARED_FS_TAG},socket={}",
                        paths.virtiofsd_socket.display()
                    ));
                children.push(spawn_logged(
                    "hull-vmm",
                    vmm,
                    cmd,
                    &paths.dir.join("vmm.log"),
                )?);
            }
        }
        let pids: Vec<(&'static str, u32)> = children
            .iter()
            .map(|(name, child)| (*name, child.id().unwrap_or(0)))
            .collect();
        write_pids_file(&paths.pids_file, &pids).map_err(io("writing", &paths.pids_file))?;

        let stopping = Arc::new(AtomicBool::new(false));
        let (death_tx, death) = watch::channel(None);
        let death_tx = Arc::new(death_tx);
        for (name, child) in children {
            monitor_child(
                name,
                child,
                pids.clone(),
                stopping.clone(),
                death_tx.clone(),
            );
        }

        let agent =
            match connect_agent(&paths, sandbox_id, &death, config.sandbox.boot_timeout()).await {
                Ok(agent) => agent,
                Err(e) => {
                    stopping.store(true, Ordering::SeqCst);
                    stop_processes(&pids).await;
                    cleanup_dir(&paths);
                    return Err(e);
                }
            };
        if config.sandbox.mode == SandboxMode::Vm {
            follow_agent_log(&paths, sandbox_id).await;
        }
        let sandbox = Sandbox {
            id: sandbox_id.to_string(),
            paths,
            mode: config.sandbox.mode,
            agent,
            pids,
            stopping,
            death,
        };
        let request = CreateSandboxRequest {
            sandbox_id: sandbox_id.to_string(),
            hostname: hostname_for(sandbox_id),
            shared_fs: match sandbox.mode {
                SandboxMode::Vm => Some(SharedFs {
                    tag: SHARED_FS_TAG.into(),
                    mount_point: GUEST_SHARED_DIR.into(),
                    ..Default::default()
                })
                .into(),
                SandboxMode::HostAgent => None.into(),
            },
            ..Default::default()
        };
        if let Err(source) = sandbox.agent.create_sandbox(call_context(), &request).await {
            sandbox.destroy().await;
            return Err(SandboxError::Agent {
                call: "CreateSandbox",
                source,
            });
        }
        tracing::info!(sandbox = sandbox_id, mode = ?sandbox.mode, "sandbox ready");
        Ok(sandbox)
    }

    /// The agent client.
    pub fn agent(&self) -> &AgentServiceClient {
        &self.agent
    }

    /// A receiver that turns `Some(reason)` when a sandbox process dies unexpectedly.
    pub fn death_notice(&self) -> watch::Receiver<Option<String>> {
        self.death.clone()
    }

    /// Opens a stdio stream to guest vsock `port` (a port the agent named).
    pub async fn open_stream(&self, port: u32) -> Result<UnixStream, SandboxError> {
        hull_proto::client::open_hybrid_vsock_stream(
            &self.paths.vsock_socket,
            port,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| SandboxError::Io {
            action: "opening stdio stream through",
            path: self.paths.vsock_socket.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Tears the sandbox down: DestroySandbox (best effort, short), stop the processes, unmount
    /// and remove the sandbox directory.
    pub async fn destroy(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.death.borrow().is_none() {
            let ctx = ttrpc::context::with_timeout(Duration::from_secs(3).as_nanos() as i64);
            let request = DestroySandboxRequest {
                sandbox_id: self.id.clone(),
                ..Default::default()
            };
            if let Err(e) = self.agent.destroy_sandbox(ctx, &request).await {
                tracing::debug!(%e, "DestroySandbox");
            }
        }
        stop_processes(&self.pids).await;
        cleanup_dir(&self.paths);
        tracing::info!(sandbox = self.id, "sandbox destroyed");
    }
}

/// Connects to the agent through the hybrid-vsock socket, retrying while the sandbox boots
/// (the VMM closes a host connection the guest does not answer within 5 s), then checks the
/// agent's API version.
async fn connect_agent(
    paths: &SandboxPaths,
    sandbox_id: &str,
    death: &watch::Receiver<Option<String>>,
    timeout: Duration,
) -> Result<AgentServiceClient, SandboxError> {
    let started = Instant::now();
    let mut last_error = String::from("no attempt");
    while started.elapsed() < timeout {
        if let Some(reason) = death.borrow().clone() {
            return Err(SandboxError::Died(reason));
        }
        match hull_proto::client::connect_hybrid_vsock(
            &paths.vsock_socket,
            hull_proto::AGENT_API_PORT,
        )
        .await
        {
            Ok(client) => {
                let agent = AgentServiceClient::new(client);
                let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
                match agent.version(ctx, &VersionRequest::default()).await {
                    Ok(reply) => {
                        hull_proto::check_api_version(&reply).map_err(|e| {
                            SandboxError::AgentUnreachable {
                                sandbox_id: sandbox_id.to_string(),
                                timeout,
                                last_error: e.to_string(),
                            }
                        })?;
                        tracing::info!(
                            agent_version = reply.agent_version,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "agent answered"
                        );
                        return Ok(agent);
                    }
                    Err(e) => last_error = format!("Version: {e}"),
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(SandboxError::AgentUnreachable {
        sandbox_id: sandbox_id.to_string(),
        timeout,
        last_error,
    })
}

/// The context of a short agent call.
pub fn call_context() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(AGENT_CALL_TIMEOUT.as_nanos() as i64)
}

/// A pod hostname from its id: at most 63 characters of [a-z0-9-].
fn hostname_for(sandbox_id: &str) -> String {
    let name: String = sandbox_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "hull".into()
    } else {
        name
    }
}

fn spawn_logged(
    name: &'static str,
    binary: PathBuf,
    mut cmd: tokio::process::Command,
    log: &Path,
) -> Result<(&'static str, tokio::process::Child), SandboxError> {
    let spawn_error = |source| SandboxError::Spawn {
        name,
        binary: binary.clone(),
        source,
    };
    let log_file = std::fs::File::create(log).map_err(spawn_error)?;
    let log_err = log_file.try_clone().map_err(spawn_error)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(false)
        .process_group(0);
    let child = cmd.spawn().map_err(spawn_error)?;
    tracing::info!(name, pid = child.id(), "started sandbox process");
    Ok((name, child))
}

/// Starts copying the agent's log port into `agent.log` of the sandbox directory (and its
/// warnings into the shim's log); the copy ends with the VM.
async fn follow_agent_log(paths: &SandboxPaths, sandbox_id: &str) {
    let stream = hull_proto::client::open_hybrid_vsock_stream(
        &paths.vsock_socket,
        hull_proto::AGENT_LOG_PORT,
        Duration::from_secs(5),
    )
    .await;
    match stream {
        Ok(stream) => {
            let file = paths.dir.join("agent.log");
            let sandbox_id = sandbox_id.to_string();
            tokio::spawn(async move {
                crate::agent_log::follow_agent_log(stream, &file, &sandbox_id).await;
            });
        }
        Err(err) => {
            tracing::warn!(sandbox = sandbox_id, %err, "connecting to the agent's log port")
        }
    }
}

fn monitor_child(
    name: &'static str,
    mut child: tokio::process::Child,
    all: Vec<(&'static str, u32)>,
    stopping: Arc<AtomicBool>,
    death: Arc<watch::Sender<Option<String>>>,
) {
    tokio::spawn(async move {
        let status = child.wait().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let reason = match status {
            Ok(s) => format!("{name} exited unexpectedly ({s})"),
            Err(e) => format!("{name} could not be waited for: {e}"),
        };
        tracing::error!(
            reason,
            "sandbox process died: every task of the sandbox exits"
        );
        death.send_replace(Some(reason));
        // The others cannot work without it: stop them so every agent connection closes.
        for (_, pid) in all {
            if pid != 0 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    });
}

async fn wait_for_socket(path: &Path, timeout: Duration) {
    let started = Instant::now();
    while !path.exists() && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes `shared` a mount point with shared propagation, so the rootfs mounts made under it
/// after virtiofsd started also appear in virtiofsd's (slave) mount namespace.
fn make_shared_mount(shared: &Path) -> Result<(), SandboxError> {
    use nix::mount::{mount, MsFlags};
    let err = |source: nix::errno::Errno| SandboxError::Io {
        action: "making a shared mount of",
        path: shared.to_path_buf(),
        source: source.into(),
    };
    mount(
        Some(shared),
        shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    mount(
        None::<&str>,
        shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(err)
}

fn write_pids_file(path: &Path, pids: &[(&'static str, u32)]) -> std::io::Result<()> {
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(path, text)
}

/// Reads a pids file written by [`Sandbox::start`]; malformed lines are skipped.
pub fn read_pids_file(path: &Path) -> Vec<(String, u32)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .take(16)
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            let pid: u32 = pid.trim().parse().ok()?;
            (pid > 1).then(|| (name.to_string(), pid))
        })
        .collect()
}

/// Is `pid` alive and running the program `name` (checked through /proc/<pid>/comm so that a
/// recycled pid is never killed)?
fn process_matches(pid: u32, name: &str) -> bool {
    let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return false;
    };
    let comm = comm.trim();
    // comm is cut at 15 characters.
    !comm.is_empty() && name.starts_with(comm)
}

async fn stop_processes<N: AsRef<str>>(pids: &[(N, u32)]) {
    let live: Vec<u32> = pids
        .iter()
        .filter(|(n, p)| *p > 1 && process_matches(*p, n.as_ref()))
        .map(|(_, p)| *p)
        .collect();
    for pid in &live {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if live
            .iter()
            .all(|p| kill(Pid::from_raw(*p as i32), None).is_err() || is_zombie(*p))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for pid in &live {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn cleanup_dir(paths: &SandboxPaths) {
    if let Ok(entries) = std::fs::read_dir(&paths.shared) {
        for entry in entries.flatten() {
            let rootfs = entry.path().join("rootfs");
            if let Err(e) = crate::mounts::unmount_and_remove(&rootfs) {
                tracing::warn!(%e, "cleaning up a container rootfs");
            }
        }
    }
    if let Err(e) = crate::mounts::unmount_and_remove(&paths.shared) {
        tracing::debug!(%e, "unmounting the shared directory");
    }
    if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%e, dir = %paths.dir.display(), "removing the sandbox directory");
        }
    }
}

/// Clean-up after a crashed shim: stops the recorded sandbox processes (only if they still run
/// the recorded program), unmounts every rootfs and the shared directory, removes the directory.
pub async fn cleanup_after_crash(paths: &SandboxPaths) {
    let pids = read_pids_file(&paths.pids_file);
    stop_processes(&pids).await;
    cleanup_dir(paths);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("c1"));
        assert!(valid_id("a.b_c-D9"));
        assert!(valid_id(&"x".repeat(128)));
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_under_the_sandbox_dir() {
        let p = SandboxPaths::new(Path::new("/run/hull"), "sb1");
        assert_eq!(p.shared, Path::new("/run/hull/sb1/shared"));
        assert_eq!(p.vsock_socket, Path::new("/run/hull/sb1/vsock.sock"));
        assert_eq!(p.rootfs("c1"), Path::new("/run/hull/sb1/shared/c1/rootfs"));
    }

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(hostname_for("Pod_1.x"), "pod-1-x");
        assert_eq!(hostname_for("..."), "hull");
        assert_eq!(hostname_for(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn pids_file_round_trip_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pids");
        write_pids_file(&path, &[("hull-vmm", 1234), ("virtiofsd", 99)]).unwrap();
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "junk\ninit 1\nx notanumber\n",
        )
        .unwrap();
        assert_eq!(
            read_pids_file(&path),
            vec![
                ("hull-vmm".to_string(), 1234),
                ("virtiofsd".to_string(), 99)
            ]
        );
    }

    #[test]
    fn only_matching_live_processes_are_recognised() {
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert!(process_matches(me, comm.trim()));
        assert!(!process_matches(me, "definitely-not-this"));
        assert!(!process_matches(u32::MAX - 1, "x"));
    }
}
