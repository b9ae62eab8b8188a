//! The agent's containers and processes: create/start/exec/signal/wait/remove, pause/resume
//! and stats, on top of [`crate::container`] and [`crate::stdio`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hull_proto::agent::{StdioPorts, StdioRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use tokio::sync::watch;
use ttrpc::Code;

use crate::container::cgroup::{self, Cgroup};
use crate::container::config::{ExecConfig, InitConfig, SetupRequest};
use crate::container::init::wants_namespace;
use crate::container::launch::{self, Control, IdMaps};
use crate::container::paths::canonical_inside;
use crate::exits::{ExitInfo, ExitRegistry};
use crate::oom::OomMonitor;
use crate::stdio::{ConnectedStreams, Forwarding, ProcessStdio, StreamHub};
use hull_proto::POD_SHM_SOURCE;

/// Most exec processes a container keeps; beyond it the oldest exited ones are forgotten.
pub const MAX_EXECS_PER_CONTAINER: usize = 256;

/// Forgets the exited exec processes that exited first, down to half of
/// [`MAX_EXECS_PER_CONTAINER`] (running and not yet started ones stay).
fn forget_oldest_exited(execs: &mut HashMap<String, Arc<ProcessEntry>>) {
    let mut exited: Vec<(std::time::SystemTime, String)> = execs
        .iter()
        .filter_map(|(exec_id, p)| p.exit.borrow().map(|e| (e.at, exec_id.clone())))
        .collect();
    exited.sort();
    let excess = execs.len().saturating_sub(MAX_EXECS_PER_CONTAINER / 2);
    for (_, exec_id) in exited.into_iter().take(excess) {
        execs.remove(&exec_id);
    }
}

/// The exit status WaitProcess reports for an exec that could not be started.
pub const NOT_STARTED_STATUS: i32 = 255;

/// An RPC failure: status code and message.
pub type Failure = (Code, String);
type Result<T> = std::result::Result<T, Failure>;

fn invalid(msg: impl Into<String>) -> Failure {
    (Code::INVALID_ARGUMENT, msg.into())
}
fn precondition(msg: impl Into<String>) -> Failure {
    (Code::FAILED_PRECONDITION, msg.into())
}
fn internal(msg: impl Into<String>) -> Failure {
    (Code::INTERNAL, msg.into())
}

/// One process (a container's init or an exec).
pub struct ProcessEntry {
    exec_id: String,
    spec: Process,
    terminal: bool,
    stdio: tokio::sync::Mutex<Option<ProcessStdio>>,
    pid: Mutex<Option<i32>>,
    exit: watch::Sender<Option<ExitInfo>>,
    forwarding: Mutex<Option<Arc<Forwarding>>>,
    /// The pty master (terminal mode), once the process opened its pty.
    pty: Mutex<Option<Arc<std::os::fd::OwnedFd>>>,
    /// A StartExec is under way (RemoveProcess must wait for its outcome).
    starting: std::sync::atomic::AtomicBool,
}

impl ProcessEntry {
    fn pid(&self) -> Option<i32> {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One container.
pub struct ContainerEntry {
    id: String,
    spec: Spec,
    /// The canonical rootfs directory (mounts below it are torn down by DestroySandbox).
    rootfs: PathBuf,
    cgroup: Option<Cgroup>,
    init: Arc<ProcessEntry>,
    control: tokio::sync::Mutex<Option<Control>>,
    execs: Mutex<HashMap<String, Arc<ProcessEntry>>>,
}

/// All containers of this agent.
pub struct Runtime {
    shared_dir: Mutex<Option<PathBuf>>,
    /// The shared directory when CreateSandbox mounted it (DestroySandbox unmounts it).
    shared_mount: Mutex<Option<PathBuf>>,
    /// The pod's /dev/shm tmpfs when CreateSandbox mounted one.
    pod_shm: Mutex<Option<PathBuf>>,
    hub: Arc<StreamHub>,
    exits: ExitRegistry,
    containers: Mutex<HashMap<String, Arc<ContainerEntry>>>,
    /// Ids whose CreateContainer is under way (not yet in `containers`).
    creating: Mutex<std::collections::HashSet<String>>,
    oom: Arc<OomMonitor>,
}

/// Holds an id in [`Runtime::creating`] for the duration of one CreateContainer.
struct CreatingId<'a> {
    ids: &'a Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl Drop for CreatingId<'_> {
    fn drop(&mut self) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(field: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("{field}: not valid OCI JSON: {e}")))
}

/// Entry points for the fuzz targets in `fuzz/` (not an API): the checks CreateContainer and
/// UpdateContainer make on their JSON payloads before anything touches the file system.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// CreateContainer's `oci_spec_json`: parse, spec rules, device cgroup rules.
    pub fn check_oci_spec(json: &[u8]) -> std::result::Result<(), String> {
        let spec: Spec = parse_json("oci_spec_json", json).map_err(|(_, why)| why)?;
        check_spec_rules(&spec).map_err(|(_, why)| why)?;
        let devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref())
            .unwrap_or_default();
        crate::container::devices::rules_for(devices).map(drop)
    }

    /// UpdateContainer's `oci_resources_json`: parse and device cgroup rules.
    pub fn check_oci_resources(json: &[u8]) -> std::result::Result<(), String> {
        let resources: oci_spec::runtime::LinuxResources =
            parse_json("oci_resources_json", json).map_err(|(_, why)| why)?;
        resources
            .devices()
            .as_deref()
            .map(crate::container::devices::rules_for)
            .transpose()
            .map(drop)
    }

    /// ExecProcess's `oci_process_json`: parse.
    pub fn check_oci_process(json: &[u8]) -> std::result::Result<(), String> {
        parse_json::<Process>("oci_process_json", json)
            .map(drop)
            .map_err(|(_, why)| why)
    }
}

impl Runtime {
    /// A runtime whose containers live under `shared_dir` (None until CreateSandbox mounts it).
    pub fn new(shared_dir: Option<PathBuf>, hub: Arc<StreamHub>, exits: ExitRegistry) -> Self {
        Runtime {
            shared_dir: Mutex::new(shared_dir),
            shared_mount: Mutex::new(None),
            pod_shm: Mutex::new(None),
            hub,
            exits,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(std::collections::HashSet::new()),
            oom: OomMonitor::new(),
        }
    }

    /// The OOM event source (GetOOMEvent); its task is run by [`crate::server`].
    pub fn oom(&self) -> &Arc<OomMonitor> {
        &self.oom
    }

    /// Reports OOM kills of `cgroup` as events for container `id` (if it has a memory
    /// controller, i.e. a `memory.events` file).
    fn watch_oom(&self, id: &str, cgroup: &Cgroup) {
        let file = cgroup.dir().join("memory.events");
        if !file.exists() {
            tracing::debug!(id, "no memory.events (no memory controller): no OOM events");
            return;
        }
        let baseline = crate::oom::read_oom_kills(&file).unwrap_or(0);
        if let Err(err) = self.oom.watch(id, &file, baseline) {
            tracing::warn!(id, %err, "OOM kills of this container will not be reported");
        }
    }

    /// Sets the shared directory (CreateSandbox).
    pub fn set_shared_dir(&self, dir: PathBuf) {
        *self.shared_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
    }

    /// Records that CreateSandbox mounted the shared directory at `dir` and uses it.
    pub fn set_shared_mount(&self, dir: PathBuf) {
        *self.shared_mount.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.clone());
        self.set_shared_dir(dir);
    }

    /// Forgets the shared directory CreateSandbox mounted and returns it (to unmount it).
    pub fn take_shared_mount(&self) -> Option<PathBuf> {
        let mount = self
            .shared_mount
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if mount.is_some() {
            *self.shared_dir.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        mount
    }

    /// Records the pod's /dev/shm tmpfs (CreateSandbox).
    pub fn set_pod_shm(&self, dir: PathBuf) {
        *self.pod_shm.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
    }

    /// Forgets the pod's /dev/shm and returns it (to unmount it).
    pub fn take_pod_shm(&self) -> Option<PathBuf> {
        self.pod_shm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The shared directory given on the command line or by CreateSandbox, if any.
    pub fn configured_shared_dir(&self) -> Option<PathBuf> {
        self.shared_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn pod_shm(&self) -> Option<PathBuf> {
        self.pod_shm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn shared_dir(&self) -> Result<PathBuf> {
        let dir = self
            .shared_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let dir =
            dir.ok_or_else(|| precondition("no shared directory (call CreateSandbox first)"))?;
        std::fs::canonicalize(&dir)
            .map_err(|e| internal(format!("shared dir {}: {e}", dir.display())))
    }

    fn container(&self, id: &str) -> Result<Arc<ContainerEntry>> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| (Code::NOT_FOUND, format!("container {id:?} does not exist")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<ContainerEntry>, Arc<ProcessEntry>)> {
        let container = self.container(id)?;
        if exec_id.is_empty() {
            let init = Arc::clone(&container.init);
            return Ok((container, init));
        }
        let process = container
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                (
                    Code::NOT_FOUND,
                    format!("exec {exec_id:?} of container {id:?} does not exist"),
                )
            })?;
        Ok((container, process))
    }

    fn new_process(
        &self,
        exec_id: &str,
        spec: Process,
        stdio_req: &StdioRequest,
    ) -> Result<Arc<ProcessEntry>> {
        let stdio = ProcessStdio::new(&self.hub, stdio_req)
            .map_err(|e| internal(format!("creating stdio: {e}")))?;
        Ok(Arc::new(ProcessEntry {
            exec_id: exec_id.to_string(),
            terminal: stdio_req.terminal,
            pty: Mutex::new(None),
            starting: std::sync::atomic::AtomicBool::new(false),
            spec,
            stdio: tokio::sync::Mutex::new(Some(stdio)),
            pid: Mutex::new(None),
            exit: watch::channel(None).0,
            forwarding: Mutex::new(None),
        }))
    }

    /// CreateContainer.
    pub async fn create(
        &self,
        id: &str,
        spec_json: &[u8],
        rootfs_path: &str,
        stdio_req: &StdioRequest,
    ) -> Result<StdioPorts> {
        let _creating = self.reserve_id(id)?;
        let mut spec: Spec = parse_json("oci_spec_json", spec_json)?;
        let shared = self.shared_dir()?;
        let rootfs = canonical_inside(&shared.join(rootfs_path), &[&shared])
            .map_err(|e| invalid(format!("rootfs_path: {e}")))?;
        if !rootfs.is_dir() {
            return Err(invalid(format!(
                "rootfs_path: {} is not a directory",
                rootfs.display()
            )));
        }
        if rootfs == shared {
            return Err(invalid(
                "rootfs_path: names the shared directory itself (it holds every container's \
                 files); give the container's own directory below it",
            ));
        }
        validate_spec(&mut spec, &shared, &rootfs, self.pod_shm().as_deref())?;
        let process_spec = spec
            .process()
            .clone()
            .ok_or_else(|| invalid("oci_spec_json: no process"))?;
        let device_rules = crate::container::devices::rules_for(
            spec.linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.devices().as_deref())
                .unwrap_or_default(),
        )
        .map_err(|e| invalid(format!("oci_spec_json: {e}")))?;
        let init = self.new_process("", process_spec, stdio_req)?;

        let cgroup = match cgroup::find_root() {
            Ok(root) => {
                let cg = Cgroup::create(&root, id).map_err(|e| internal(e.to_string()))?;
                if let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref())
                {
                    if let Err(err) = cg.apply(resources) {
                        let _ = cg.remove();
                        return Err(precondition(err.to_string()));
                    }
                }
                if let Err(err) = crate::container::devices::attach(cg.dir(), &device_rules) {
                    let _ = cg.remove();
                    return Err(internal(format!(
                        "container {id:?}: device access control: {err}"
                    )));
                }
                self.watch_oom(id, &cg);
                Some(cg)
            }
            Err(err) => {
                tracing::warn!(%err, "containers run without a cgroup");
                None
            }
        };
        let id_maps = id_maps_of(&spec);
        let request = SetupRequest::Init(Box::new(InitConfig {
            container_id: id.to_string(),
            rootfs: rootfs.clone(),
            spec: spec.clone(),
            terminal: stdio_req.terminal,
            console_size: spec.process().as_ref().and_then(console_size),
        }));
        let child_fds = init
            .stdio
            .lock()
            .await
            .as_mut()
            .and_then(|s| s.take_child_fds());
        let child_fds = child_fds.ok_or_else(|| internal("stdio already used"))?;
        let launched =
            launch::launch(&request, child_fds, cgroup.as_ref(), &id_maps, &self.exits).await;
        let launch::Launched {
            pid,
            control,
            pty_master,
        } = match launched {
            Ok(ok) => ok,
            Err(err) => {
                self.oom.unwatch(id);
                if let Some(cg) = cgroup {
                    // rmdir waits for the failed process to be gone: off the runtime's thread.
                    let _ = tokio::task::spawn_blocking(move || cg.kill_and_remove()).await;
                }
                return Err(precondition(format!("creating container {id:?}: {err}")));
            }
        };
        *init.pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
        self.watch_exit(&init, pid);
        if let Some(master) = pty_master {
            if let Some(stdio) = init.stdio.lock().await.as_mut() {
                *init.pty.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(stdio.set_pty_master(master));
            }
        }
        let ports = init
            .stdio
            .lock()
            .await
            .as_ref()
            .map(|s| s.ports.clone())
            .unwrap_or_default();
        let entry = Arc::new(ContainerEntry {
            id: id.to_string(),
            spec,
            rootfs,
            cgroup,
            init,
            control: tokio::sync::Mutex::new(control),
            execs: Mutex::new(HashMap::new()),
        });
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), entry);
        Ok(ports)
    }

    /// Claims `id` for a CreateContainer: ALREADY_EXISTS if a container has it or another
    /// CreateContainer is making one with it right now.
    fn reserve_id(&self, id: &str) -> Result<CreatingId<'_>> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if containers.contains_key(id) || !creating.insert(id.to_string()) {
            return Err((
                Code::ALREADY_EXISTS,
                format!("container {id:?} already exists"),
            ));
        }
        Ok(CreatingId {
            ids: &self.creating,
            id: id.to_string(),
        })
    }

    fn watch_exit(&self, process: &Arc<ProcessEntry>, pid: i32) {
        let rx = self.exits.watch(pid);
        let process = Arc::clone(process);
        tokio::spawn(async move {
            if let Ok(info) = rx.await {
                process.exit.send_replace(Some(info));
            }
        });
    }

    /// Waits for the host's stdio connections; returns them and the child's ends of the stdio
    /// if they were still there (an exec's: its helper gets them next). If a stream is late,
    /// nothing is consumed and Start can be called again.
    async fn connect(
        process: &Arc<ProcessEntry>,
    ) -> Result<(ConnectedStreams, Option<[std::os::fd::OwnedFd; 3]>)> {
        let mut guard = process.stdio.lock().await;
        let stdio = guard
            .as_mut()
            .ok_or_else(|| precondition("the process was already started"))?;
        let streams = stdio.wait_connected().await.map_err(precondition)?;
        Ok((streams, stdio.take_child_fds()))
    }

    /// Starts forwarding `streams` (with the pty master the process opened, if it has one).
    async fn forward(
        process: &Arc<ProcessEntry>,
        streams: ConnectedStreams,
        pty_master: Option<std::os::fd::OwnedFd>,
    ) -> Result<()> {
        let mut guard = process.stdio.lock().await;
        let stdio = guard
            .as_mut()
            .ok_or_else(|| precondition("the process was already started"))?;
        if let Some(master) = pty_master {
            *process.pty.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(stdio.set_pty_master(master));
        }
        let (exited_tx, exited_rx) = watch::channel(false);
        let mut exit_rx = process.exit.subscribe();
        tokio::spawn(async move {
            let _ = exit_rx.wait_for(|e| e.is_some()).await;
            let _ = exited_tx.send(true);
        });
        let forwarding = stdio
            .start_forwarding(streams, exited_rx)
            .map_err(|e| internal(e.to_string()))?;
        *process.forwarding.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(forwarding));
        *guard = None;
        Ok(())
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<u32> {
        let container = self.container(id)?;
        let mut control = container.control.lock().await;
        if control.is_none() {
            return Err(precondition(format!(
                "container {id:?} was already started"
            )));
        }
        // The init's stdio ends went to its helper at create (and its pty master came back).
        let (streams, _) = Self::connect(&container.init).await?;
        Self::forward(&container.init, streams, None).await?;
        let control = control
            .take()
            .ok_or_else(|| precondition("already started"))?;
        control
            .start()
            .await
            .map_err(|e| precondition(format!("starting container {id:?}: {e}")))?;
        Ok(container.init.pid().unwrap_or(0) as u32)
    }

    /// ExecProcess.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
        stdio_req: &StdioRequest,
    ) -> Result<StdioPorts> {
        let container = self.container(id)?;
        let spec: Process = parse_json("oci_process_json", process_json)?;
        if spec.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(invalid("oci_process_json: args must not be empty"));
        }
        let mut execs = container.execs.lock().unwrap_or_else(|p| p.into_inner());
        if execs.contains_key(exec_id) {
            return Err((
                Code::ALREADY_EXISTS,
                format!("exec {exec_id:?} already exists"),
            ));
        }
        if execs.len() >= MAX_EXECS_PER_CONTAINER {
            forget_oldest_exited(&mut execs);
        }
        if execs.len() >= MAX_EXECS_PER_CONTAINER {
            return Err((
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "container {id:?} has {MAX_EXECS_PER_CONTAINER} exec processes that have not \
                     exited; remove some first"
                ),
            ));
        }
        let process = self.new_process(exec_id, spec, stdio_req)?;
        let ports = process
            .stdio
            .try_lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.ports.clone()))
            .unwrap_or_default();
        execs.insert(exec_id.to_string(), process);
        Ok(ports)
    }

    /// RemoveProcess: forgets an exec that has exited or never started.
    pub fn remove_process(&self, id: &str, exec_id: &str) -> Result<()> {
        let (container, process) = self.process(id, exec_id)?;
        let starting = process.starting.load(std::sync::atomic::Ordering::SeqCst);
        if starting || (process.pid().is_some() && process.exit.borrow().is_none()) {
            return Err(precondition(format!("exec {exec_id:?} is still running")));
        }
        container
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        Ok(())
    }

    /// StartExec.
    pub async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
        let (container, process) = self.process(id, exec_id)?;
        let init_pid = container
            .init
            .pid()
            .filter(|_| container.init.exit.borrow().is_none());
        let init_pid =
            init_pid.ok_or_else(|| precondition(format!("container {id:?} is not running")))?;
        if container.control.lock().await.is_some() {
            return Err(precondition(format!("container {id:?} is not started")));
        }
        if container.cgroup.as_ref().is_some_and(|c| c.is_frozen()) {
            // The set-up helper would freeze on joining the cgroup.
            return Err(precondition(format!(
                "container {id:?} is paused: resume it before exec"
            )));
        }
        if process
            .starting
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(precondition(format!("exec {exec_id:?} is being started")));
        }
        let started = self
            .start_exec_process(id, exec_id, &container, &process, init_pid)
            .await;
        process
            .starting
            .store(false, std::sync::atomic::Ordering::SeqCst);
        started
    }

    async fn start_exec_process(
        &self,
        id: &str,
        exec_id: &str,
        container: &Arc<ContainerEntry>,
        process: &Arc<ProcessEntry>,
        init_pid: i32,
    ) -> Result<u32> {
        let request = SetupRequest::Exec(Box::new(ExecConfig {
            container_id: id.to_string(),
            init_pid,
            process: process.spec.clone(),
            terminal: process.terminal,
            console_size: console_size(&process.spec),
            seccomp: container
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone()),
        }));
        let (streams, child_fds) = Self::connect(process).await?;
        let child_fds = child_fds.ok_or_else(|| precondition("the exec was already started"))?;
        let launched = launch::launch(
            &request,
            child_fds,
            container.cgroup.as_ref(),
            &IdMaps::default(),
            &self.exits,
        )
        .await;
        let launch::Launched {
            pid, pty_master, ..
        } = match launched {
            Ok(launched) => launched,
            Err(err) => {
                // It will never run: WaitProcess (and the output streams) end with 255.
                process.exit.send_replace(Some(ExitInfo {
                    status: NOT_STARTED_STATUS,
                    at: std::time::SystemTime::now(),
                }));
                return Err(precondition(format!("exec {exec_id:?}: {err}")));
            }
        };
        *process.pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
        self.watch_exit(process, pid);
        Self::forward(process, streams, pty_master).await?;
        Ok(pid as u32)
    }

    /// SignalProcess.
    pub fn signal(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (container, process) = self.process(id, exec_id)?;
        let pids = if all {
            container
                .cgroup
                .as_ref()
                .map(|c| c.pids())
                .unwrap_or_default()
        } else {
            if process.exit.borrow().is_some() {
                // As runc's shim answers: containerd takes NotFound as "nothing left to signal".
                return Err((Code::NOT_FOUND, "process already finished".into()));
            }
            vec![process
                .pid()
                .ok_or_else(|| precondition("the process has not been started"))?]
        };
        for pid in pids {
            // SAFETY: kill(2) with a checked signal number (validated 1..=64).
            let rc = unsafe { libc::kill(pid, signal as i32) };
            if rc != 0 && !all {
                return Err(internal(format!(
                    "kill {pid}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }

    /// WaitProcess: exit status once the output streams are drained.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let (_container, process) = self.process(id, exec_id)?;
        let mut rx = process.exit.subscribe();
        let info = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| internal("process state lost"))?
            .ok_or_else(|| internal("no exit"))?;
        let forwarding = process
            .forwarding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(forwarding) = forwarding {
            forwarding.outputs_done().await;
        }
        Ok(info)
    }

    /// ListProcesses: (pid, exec id).
    pub fn list(&self, id: &str) -> Result<Vec<(u32, String)>> {
        let container = self.container(id)?;
        let execs = container.execs.lock().unwrap_or_else(|p| p.into_inner());
        let exec_of = |pid: i32| {
            execs
                .values()
                .find(|p| p.pid() == Some(pid))
                .map(|p| p.exec_id.clone())
                .unwrap_or_default()
        };
        let mut pids = container
            .cgroup
            .as_ref()
            .map(|c| c.pids())
            .unwrap_or_default();
        if pids.is_empty() {
            pids.extend(
                container
                    .init
                    .pid()
                    .filter(|_| container.init.exit.borrow().is_none()),
            );
        }
        Ok(pids
            .into_iter()
            .map(|pid| (pid as u32, exec_of(pid)))
            .collect())
    }

    /// The container's cgroup (Pause/Resume/Stats/Update).
    pub fn cgroup(&self, id: &str) -> Result<Cgroup> {
        self.container(id)?
            .cgroup
            .clone()
            .ok_or_else(|| precondition(format!("container {id:?} has no cgroup")))
    }

    /// TtyWinResize.
    pub fn resize(&self, id: &str, exec_id: &str, rows: u16, columns: u16) -> Result<()> {
        let (_c, process) = self.process(id, exec_id)?;
        let pty = process
            .pty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| precondition("the process has no terminal (or it is not started)"))?;
        crate::stdio::resize_pty(&pty, rows, columns)
            .map_err(|e| internal(format!("resizing the pty: {e}")))
    }

    /// CloseStdin.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let (_c, process) = self.process(id, exec_id)?;
        let forwarding = process
            .forwarding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        forwarding
            .ok_or_else(|| precondition("the process is not started"))?
            .close_stdin();
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove(&self, id: &str, stop_timeout_ms: u32) -> Result<()> {
        let container = self.container(id)?;
        let running = |c: &ContainerEntry| c.init.exit.borrow().is_none();
        if running(&container) {
            if stop_timeout_ms == 0 && container.control.lock().await.is_none() {
                return Err(precondition(format!("container {id:?} is running")));
            }
            if let Some(pid) = container.init.pid() {
                let mut rx = container.init.exit.subscribe();
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                let timeout = std::time::Duration::from_millis(u64::from(stop_timeout_ms.max(1)));
                if tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some()))
                    .await
                    .is_err()
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        rx.wait_for(|e| e.is_some()),
                    )
                    .await;
                }
            }
        }
        self.oom.unwatch(&container.id);
        if let Some(cg) = container.cgroup.clone() {
            // Thawing and rmdir wait for the kernel (up to 5 s and 2 s): off the agent's only
            // thread, so the reaper and other calls go on meanwhile.
            let removed = tokio::task::spawn_blocking(move || cg.kill_and_remove())
                .await
                .map_err(|e| internal(format!("removing the cgroup: {e}")))?;
            removed.map_err(|e| internal(format!("removing the cgroup: {e}")))?;
        }
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&container.id);
        Ok(())
    }
}

/// How long DestroySandbox waits for killed processes to be reaped.
const DESTROY_REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Runtime {
    /// DestroySandbox, containers part: SIGKILLs every container's processes (inits, execs
    /// and whatever else is in their cgroups), waits until the reaper collected the ones the
    /// agent started, removes the cgroups and detaches every mount at or below each rootfs in
    /// the agent's mount namespace. Returns once all that is done; failures of single steps
    /// are collected and reported together, the rest still runs.
    pub async fn destroy_all(&self) -> Result<()> {
        let containers: Vec<Arc<ContainerEntry>> = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        let mut problems = Vec::new();
        let mut exits = Vec::new();
        for container in &containers {
            self.oom.unwatch(&container.id);
            let mut processes = vec![Arc::clone(&container.init)];
            processes.extend(
                container
                    .execs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned(),
            );
            if let Some(cg) = &container.cgroup {
                cg.kill_all();
            }
            for process in processes {
                let Some(pid) = process.pid() else { continue };
                if process.exit.borrow().is_some() {
                    continue;
                }
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                exits.push((container.id.clone(), pid, process.exit.subscribe()));
            }
        }
        let deadline = tokio::time::Instant::now() + DESTROY_REAP_TIMEOUT;
        for (id, pid, mut rx) in exits {
            let reaped = tokio::time::timeout_at(deadline, rx.wait_for(|e| e.is_some())).await;
            if !matches!(reaped, Ok(Ok(_))) {
                problems.push(format!("container {id:?}: pid {pid} was not reaped"));
            }
        }
        for container in &containers {
            if let Some(cg) = container.cgroup.clone() {
                let removed = tokio::task::spawn_blocking(move || cg.remove()).await;
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => problems.push(format!("container {:?}: {err}", container.id)),
                    Err(err) => problems.push(format!("container {:?}: {err}", container.id)),
                }
            }
            match crate::mounts::unmount_all_under(&container.rootfs) {
                Ok(0) => {}
                Ok(n) => tracing::info!(id = %container.id, n, "unmounted container mounts"),
                Err(err) => problems.push(format!("container {:?}: {err}", container.id)),
            }
        }
        tracing::info!(containers = containers.len(), "destroyed every container");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(internal(problems.join("; ")))
        }
    }
}

/// The spec's `process.consoleSize` as (rows, columns), when both are set and fit a winsize.
fn console_size(process: &Process) -> Option<(u16, u16)> {
    let size = process.console_size()?;
    let rows = u16::try_from(size.height()).ok()?;
    let columns = u16::try_from(size.width()).ok()?;
    (rows > 0 && columns > 0).then_some((rows, columns))
}

fn id_maps_of(spec: &Spec) -> IdMaps {
    let render = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let linux = spec.linux().as_ref();
    IdMaps {
        uid_map: render(linux.and_then(|l| l.uid_mappings().as_ref())),
        gid_map: render(linux.and_then(|l| l.gid_mappings().as_ref())),
    }
}

/// A container may set only sysctls its own namespaces isolate (as runc allows): the IPC ones
/// with an IPC namespace, `net.*` with a network namespace, the host and domain name with a
/// UTS namespace. Any other would change the whole guest, other containers included.
fn check_container_sysctl(spec: &Spec, key: &str) -> std::result::Result<(), String> {
    if !crate::validate::is_sysctl_name(key) || key.starts_with('/') {
        return Err("not a sysctl name of [a-z0-9_.-/]".into());
    }
    let name = key.replace('/', ".");
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if IPC.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if name.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err("not isolated by a namespace: it would change the whole guest".into());
    };
    if !wants_namespace(spec, needs) {
        return Err(format!(
            "needs the container's own {needs:?} namespace, which the spec does not ask for"
        ));
    }
    Ok(())
}

/// Checks what the agent needs from a spec and makes bind sources canonical, refusing any
/// that leave the shared directory or the rootfs. The source [`POD_SHM_SOURCE`] names the pod's
/// /dev/shm (`pod_shm`, if CreateSandbox made one).
fn validate_spec(
    spec: &mut Spec,
    shared: &Path,
    rootfs: &Path,
    pod_shm: Option<&Path>,
) -> Result<()> {
    check_spec_rules(spec)?;
    resolve_bind_sources(spec, shared, rootfs, pod_shm)
}

/// The checks on a CreateContainer spec that need no file system: process, namespaces, user
/// namespace mappings, sysctls and mount destinations.
fn check_spec_rules(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("oci_spec_json: process is required"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(invalid("oci_spec_json: process.args must not be empty"));
    }
    if !wants_namespace(spec, LinuxNamespaceType::Mount) {
        return Err(invalid(
            "oci_spec_json: linux.namespaces must include a mount namespace",
        ));
    }
    if wants_namespace(spec, LinuxNamespaceType::User) {
        let linux = spec.linux().as_ref();
        if linux
            .and_then(|l| l.uid_mappings().as_ref())
            .is_none_or(|m| m.is_empty())
        {
            return Err(invalid(
                "oci_spec_json: a user namespace needs linux.uidMappings",
            ));
        }
    }
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for key in sysctls.keys() {
            check_container_sysctl(spec, key)
                .map_err(|why| invalid(format!("oci_spec_json: linux.sysctl {key:?}: {why}")))?;
        }
    }
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        if !mount.destination().is_absolute() {
            return Err(invalid(format!(
                "oci_spec_json: mounts[{i}].destination must be absolute"
            )));
        }
    }
    Ok(())
}

/// Bind mounts: the pod /dev/shm placeholder becomes the pod's shm directory, and every other
/// source must resolve inside the shared directory or the rootfs (canonicalised in place).
fn resolve_bind_sources(
    spec: &mut Spec,
    shared: &Path,
    rootfs: &Path,
    pod_shm: Option<&Path>,
) -> Result<()> {
    if let Some(mounts) = spec.mounts_mut() {
        for (i, mount) in mounts.iter_mut().enumerate() {
            let options = mount.options().clone().unwrap_or_default();
            let is_bind = mount.typ().as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            if !is_bind {
                continue;
            }
            let source = mount
                .source()
                .clone()
                .ok_or_else(|| invalid(format!("oci_spec_json: mounts[{i}] bind has no source")))?;
            if source == Path::new(POD_SHM_SOURCE) {
                let dir = pod_shm.ok_or_else(|| {
                    invalid(format!(
                        "oci_spec_json: mounts[{i}].source {POD_SHM_SOURCE}: the sandbox has no \
                         pod /dev/shm (CreateSandbox had shm_size_bytes = 0)"
                    ))
                })?;
                mount.set_source(Some(dir.to_path_buf()));
                continue;
            }
            let source = if source.is_absolute() {
                source
            } else {
                shared.join(source)
            };
            let canonical = canonical_inside(&source, &[shared, rootfs])
                .map_err(|e| invalid(format!("oci_spec_json: mounts[{i}].source: {e}")))?;
            mount.set_source(Some(canonical));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fuzzing::{check_oci_process, check_oci_resources, check_oci_spec};

    #[test]
    fn spec_rules_without_the_file_system() {
        let ok = br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "root":{"path":"rootfs"},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}],
            "linux":{"namespaces":[{"type":"mount"},{"type":"uts"}],"sysctl":{"kernel.hostname":"x"}}}"#;
        assert_eq!(check_oci_spec(ok), Ok(()));
        let no_mount_ns =
            br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}]}}"#;
        assert!(check_oci_spec(no_mount_ns)
            .unwrap_err()
            .contains("mount namespace"));
        let relative =
            br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "root":{"path":"rootfs"},"mounts":[{"destination":"proc","type":"proc"}],
            "linux":{"namespaces":[{"type":"mount"}]}}"#;
        assert!(check_oci_spec(relative)
            .unwrap_err()
            .contains("must be absolute"));
        assert!(check_oci_spec(b"{").is_err());
        assert!(
            check_oci_process(br#"{"args":["ls"],"cwd":"/","user":{"uid":0,"gid":0}}"#).is_ok()
        );
        assert!(check_oci_resources(br#"{"pids":{"limit":5}}"#).is_ok());
        assert!(check_oci_resources(b"5").is_err());
    }
}
