//! One pod's sandbox: the processes that hold it (virtiofsd + hull-vmm, or a host hull-agent in
//! test mode), the agent connection, and its directory `<run_dir>/<sandbox-id>/`:
//!
//! - `shared/`        shared with the guest (virtio-fs tag [`SHARED_FS_TAG`]); each container
//!   has `shared/<container-id>/rootfs` and its host binds in `shared/<container-id>/mounts/<n>`
//! - `pod-shm/`       host-agent mode only: the pod's /dev/shm tmpfs (the agent mounts it)
//! - `vsock.sock`     hull-vmm's hybrid-vsock socket (or the host agent's hybrid listener)
//! - `virtiofsd.sock` virtiofsd's vhost-user socket
//! - `pids`           "name pid" lines of the sandbox processes, for `delete` after a shim crash
//! - `root/`          VM mode with the jail: hull-vmm's root ([`jail`]); `vsock.sock`,
//!   `virtiofsd.sock` and `console.log` are then links into it
//! - `cgroups`        the pod cgroup directories (hull-vmm + virtiofsd), for clean-up
//! - `*.log`          stdout/stderr of those processes

pub mod cleanup;
mod from_pool;
pub mod inventory;
pub mod jail;
pub mod launch;
pub mod pod_network;
pub mod priority;
pub mod processes;
pub mod ready;
pub mod virtiofsd;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_proto::agent::{CreateSandboxRequest, SharedFs};
use hull_proto::agent_ttrpc::AgentServiceClient;
use tokio::net::UnixStream;
use tokio::sync::watch;

pub use hull_proto::valid_id;

use crate::agent_client::{AgentClient, AgentError};
use crate::bench::stages::{self, Stage};
use crate::config::{Config, SandboxMode};
use crate::cri::sizing::VmSize;
use crate::port_forward::PortForwarder;
use crate::shared_dir::SharedDir;
use pod_network::PodNetwork;
use processes::{monitor_child, spawn_logged, stop_processes, write_pids_file, ProcessRecord};
use ready::ReadySignal;

/// virtio-fs tag of the shared directory.
pub const SHARED_FS_TAG: &str = "hullfs";
/// Where the guest agent mounts the shared directory.
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";
/// Guest CID given to every sandbox VM (each VM has its own vsock device; the CID is local).
pub const GUEST_CID: u64 = 3;
/// The guest network namespace a VM pod's containers use: the guest's own (its agent is PID 1),
/// where hull-vmm's NICs are.
pub const GUEST_ROOT_NETNS: &str = "/proc/1/ns/net";
/// The pod /dev/shm size when the host's gives none.
pub const DEFAULT_POD_SHM_BYTES: u64 = 64 << 20;

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
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The pod's network could not be carried into the VM.
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    /// The VMM's jail could not be made.
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    /// The id names a directory of the run directory that is not a sandbox's.
    #[error("sandbox id {0:?} is reserved (the VM pool's directory)")]
    ReservedId(String),
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

    /// Where the rootfs of `container_id` is mounted, relative to the shared directory (the
    /// agent's `rootfs_path`).
    pub fn rootfs_rel(container_id: &str) -> PathBuf {
        Path::new(container_id).join("rootfs")
    }
}

/// What the pod asks of its sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRequest {
    /// VM size (from the pod's resources and the configuration).
    pub size: VmSize,
    /// The pod's /dev/shm in bytes; 0 = none (a plain container keeps its own tmpfs).
    pub shm_size_bytes: u64,
    /// The guest's hostname (the pod's, else one made from the sandbox id).
    pub hostname: String,
    /// The pod's network namespace on the host, where CNI put its interfaces (VM mode carries
    /// them into the guest; host-agent mode has no pod network).
    pub host_netns: Option<PathBuf>,
}

/// A running sandbox.
pub struct Sandbox {
    /// Sandbox id (the pod's, or the container's for a plain `ctr run`).
    pub id: String,
    /// Its paths.
    pub paths: SandboxPaths,
    /// What it was started with.
    pub request: SandboxRequest,
    mode: SandboxMode,
    agent: AgentClient,
    network: std::sync::Mutex<Option<PodNetwork>>,
    port_forward: std::sync::Mutex<Option<PortForwarder>>,
    pids: Vec<(&'static str, ProcessRecord)>,
    stopping: Arc<AtomicBool>,
    death: watch::Receiver<Option<String>>,
}

impl Sandbox {
    /// Starts the sandbox processes for `sandbox_id`, waits for the agent, checks its API
    /// version and sends CreateSandbox.
    pub async fn start(
        config: &Config,
        sandbox_id: &str,
        request: SandboxRequest,
    ) -> Result<Sandbox, SandboxError> {
        if sandbox_id == crate::pool::POOL_DIR {
            return Err(SandboxError::ReservedId(sandbox_id.to_string()));
        }
        config.check_sandbox_prerequisites()?;
        if config.sandbox.mode == SandboxMode::Vm {
            if let Some(sandbox) = Sandbox::start_from_pool(config, sandbox_id, &request).await {
                return Ok(sandbox);
            }
        }
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
        let mut network: Option<PodNetwork> = None;
        let ready;
        match config.sandbox.mode {
            SandboxMode::HostAgent => {
                tracing::warn!(
                    sandbox = sandbox_id,
                    "SANDBOX MODE host-agent: containers run on the HOST through hull-agent with NO \
                     isolation (test-only mode, never use it in production)"
                );
                ready = Some(ReadySignal::bind(&paths.vsock_socket)?);
                let (agent, cmd) = launch::host_agent_command(config, &paths);
                children.push(spawn_logged(
                    "hull-agent",
                    agent,
                    cmd,
                    &paths.dir.join("agent.log"),
                )?);
            }
            SandboxMode::Vm => {
                if let Some(netns) = &request.host_netns {
                    match PodNetwork::wire(netns, &paths.dir).await {
                        Ok(net) => network = Some(net),
                        Err(e) => {
                            cleanup::cleanup_dir(&paths);
                            return Err(e.into());
                        }
                    }
                }
                let nets = network
                    .as_ref()
                    .map(PodNetwork::vmm_nets)
                    .unwrap_or_default();
                match launch::start_vm(
                    config,
                    sandbox_id,
                    &paths,
                    request.size,
                    &nets,
                    request.host_netns.as_deref(),
                    priority::BootPriority::Normal,
                )
                .await
                {
                    Ok((started, signal)) => {
                        children.extend(started);
                        ready = Some(signal);
                    }
                    Err(e) => {
                        if let Some(net) = network {
                            net.unwire().await;
                        }
                        cleanup::cleanup_dir(&paths);
                        return Err(e);
                    }
                }
            }
        }
        let pids: Vec<(&'static str, ProcessRecord)> = children
            .iter()
            .filter_map(|(name, child)| Some((*name, ProcessRecord::of(child.id()?)?)))
            .collect();
        write_pids_file(&paths.pids_file, &pids).map_err(io("writing", &paths.pids_file))?;
        let mode_name = match config.sandbox.mode {
            SandboxMode::Vm => "vm",
            SandboxMode::HostAgent => "host-agent",
        };
        let _ = inventory::write_info(
            &paths.dir,
            mode_name,
            request.size.vcpus,
            request.size.mem_mib,
        );

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
        let started = Started {
            paths,
            network,
            pids,
            stopping,
            death,
            from_pool: false,
            ready,
        };
        started.finish(config, sandbox_id, request).await
    }

    /// Configures the guest's NICs and routes as CNI configured the pod's host interfaces.
    async fn configure_guest_network(&self) -> Result<(), AgentError> {
        let network = self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(network) = network else {
            return Ok(());
        };
        let result = network.configure_guest(&self.agent).await;
        *self.network.lock().unwrap_or_else(|p| p.into_inner()) = Some(network);
        result
    }

    /// The agent client.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// The shared directory, opened for link-proof operations.
    pub fn shared_dir(&self) -> Result<SharedDir, crate::shared_dir::SharedDirError> {
        SharedDir::open(&self.paths.shared)
    }

    /// A receiver that turns `Some(reason)` when a sandbox process dies unexpectedly.
    pub fn death_notice(&self) -> watch::Receiver<Option<String>> {
        self.death.clone()
    }

    /// True once a sandbox process died.
    pub fn is_dead(&self) -> bool {
        self.death.borrow().is_some()
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
        if !self.is_dead() {
            if let Err(e) = self
                .agent
                .destroy_sandbox(&self.id, Duration::from_secs(3))
                .await
            {
                tracing::debug!(%e, "DestroySandbox");
            }
        }
        let forwarder = self
            .port_forward
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(forwarder) = forwarder {
            forwarder.stop().await;
        }
        stop_processes(&self.pids).await;
        let network = self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(network) = network {
            network.unwire().await;
        }
        cleanup::cleanup_dir(&self.paths);
        stages::mark(Stage::TeardownDone, &self.id);
        tracing::info!(sandbox = self.id, "sandbox destroyed");
    }
}

/// A sandbox whose processes run (booted here, or claimed from the pool), before its agent
/// answered.
struct Started {
    paths: SandboxPaths,
    network: Option<PodNetwork>,
    pids: Vec<(&'static str, ProcessRecord)>,
    stopping: Arc<AtomicBool>,
    death: watch::Receiver<Option<String>>,
    /// Claimed from the pool: booted long before this pod, so no vmm-main or kernel-entry stage.
    from_pool: bool,
    /// The listener for the agent's ready signal (none for a pool VM: its agent already serves).
    ready: Option<ReadySignal>,
}

impl Started {
    /// Connects to the agent and sets the sandbox up (CreateSandbox, the guest's network, the
    /// port forwarder); on failure everything of the sandbox is stopped and removed.
    async fn finish(
        self,
        config: &Config,
        sandbox_id: &str,
        request: SandboxRequest,
    ) -> Result<Sandbox, SandboxError> {
        let Started {
            paths,
            network,
            pids,
            stopping,
            death,
            from_pool,
            ready,
        } = self;
        let timeout = config.sandbox.boot_timeout();
        let agent = match connect_agent(&paths, sandbox_id, &death, timeout, ready).await {
            Ok(agent) => agent,
            Err(e) => {
                stopping.store(true, Ordering::SeqCst);
                stop_processes(&pids).await;
                if let Some(net) = network {
                    net.unwire().await;
                }
                cleanup::cleanup_dir(&paths);
                return Err(e);
            }
        };
        stages::mark(Stage::AgentReady, sandbox_id);
        if config.sandbox.mode == SandboxMode::Vm {
            if !from_pool {
                stages::mark_vmm_stages(sandbox_id, &paths.dir.join("vmm.log"));
            }
            follow_agent_log(&paths, sandbox_id).await;
        }
        let sandbox = Sandbox {
            id: sandbox_id.to_string(),
            paths,
            request,
            mode: config.sandbox.mode,
            agent,
            network: std::sync::Mutex::new(network),
            port_forward: std::sync::Mutex::new(None),
            pids,
            stopping,
            death,
        };
        let create = CreateSandboxRequest {
            sandbox_id: sandbox_id.to_string(),
            hostname: sandbox.request.hostname.clone(),
            shared_fs: match sandbox.mode {
                SandboxMode::Vm => Some(SharedFs {
                    tag: SHARED_FS_TAG.into(),
                    mount_point: GUEST_SHARED_DIR.into(),
                    ..Default::default()
                })
                .into(),
                SandboxMode::HostAgent => None.into(),
            },
            shm_size_bytes: sandbox.request.shm_size_bytes,
            debug_console: config.debug_console,
            ..Default::default()
        };
        if let Err(e) = sandbox.agent.create_sandbox(&create).await {
            sandbox.destroy().await;
            return Err(e.into());
        }
        if config.debug_console {
            tracing::warn!(
                sandbox = sandbox_id,
                "debug console open (`hull console {sandbox_id}`): a root shell in the guest"
            );
            if let Err(e) = crate::console::mark_enabled(&sandbox.paths.dir) {
                tracing::warn!(%e, "recording the debug console for `hull console`");
            }
        }
        if let Err(e) = sandbox.configure_guest_network().await {
            sandbox.destroy().await;
            return Err(e.into());
        }
        // CRI PortForward dials localhost in the pod's host netns: mirror the guest's TCP
        // listeners there (VM mode only: a host agent would report the host's own ports).
        if sandbox.mode == SandboxMode::Vm {
            if let Some(netns) = sandbox.request.host_netns.clone() {
                let forwarder = PortForwarder::start(
                    netns,
                    sandbox.paths.vsock_socket.clone(),
                    sandbox.agent.clone(),
                );
                *sandbox
                    .port_forward
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(forwarder);
            }
        }
        stages::mark(Stage::SandboxReady, sandbox_id);
        tracing::info!(sandbox = sandbox_id, mode = ?sandbox.mode, "sandbox ready");
        Ok(sandbox)
    }
}

/// Between two connection attempts without a ready signal, or after it came.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// Longest wait for the ready signal before an attempt is made anyway (a lost signal costs at
/// most this).
const READY_SIGNAL_WAIT: Duration = Duration::from_millis(250);

/// Connects to the agent through the hybrid-vsock socket, retrying while the sandbox boots
/// (the VMM closes a host connection the guest does not answer within 5 s), then checks the
/// agent's API version. With `ready` (see [`ready`]) each attempt waits for the agent's ready
/// signal first, at most [`READY_SIGNAL_WAIT`]; the listener is closed on return.
pub(crate) async fn connect_agent(
    paths: &SandboxPaths,
    sandbox_id: &str,
    death: &watch::Receiver<Option<String>>,
    timeout: Duration,
    mut ready: Option<ReadySignal>,
) -> Result<AgentClient, SandboxError> {
    let started = Instant::now();
    let mut last_error = String::from("no attempt");
    let mut first = true;
    while started.elapsed() < timeout {
        if let Some(reason) = death.borrow().clone() {
            return Err(SandboxError::Died(reason));
        }
        match ready.as_mut() {
            Some(signal) if !signal.seen() => {
                signal.wait(READY_SIGNAL_WAIT).await;
            }
            _ if first => {}
            _ => tokio::time::sleep(CONNECT_RETRY).await,
        }
        first = false;
        match hull_proto::client::connect_hybrid_vsock(
            &paths.vsock_socket,
            hull_proto::AGENT_API_PORT,
        )
        .await
        {
            Ok(client) => {
                let agent = AgentClient::new(AgentServiceClient::new(client));
                match agent.version(Duration::from_secs(5)).await {
                    Ok(reply) => {
                        hull_proto::check_api_version(&reply).map_err(|e| {
                            SandboxError::AgentUnreachable {
                                sandbox_id: sandbox_id.to_string(),
                                timeout,
                                last_error: e.to_string(),
                            }
                        })?;
                        tracing::info!(
                            sandbox = sandbox_id,
                            agent_version = reply.agent_version,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            ready_signal = ready.as_ref().map(ReadySignal::seen),
                            "agent answered"
                        );
                        return Ok(agent);
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(SandboxError::AgentUnreachable {
        sandbox_id: sandbox_id.to_string(),
        timeout,
        last_error,
    })
}

/// A hostname from an id or a pod's name: at most 63 characters of [a-z0-9-].
pub fn hostname_for(name: &str) -> String {
    let name: String = name
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

/// Clean-up after a crashed shim: stops the recorded sandbox processes (only if they still run
/// the recorded program), unmounts every container's mounts and the shared directory, removes
/// the directory.
pub async fn cleanup_after_crash(paths: &SandboxPaths) {
    let pids = processes::read_pids_file(&paths.pids_file);
    stop_processes(&pids).await;
    pod_network::unwire_recorded(&paths.dir).await;
    cleanup::cleanup_dir(paths);
}
