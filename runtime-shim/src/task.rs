//! The shim's ttrpc Task service: containerd's task API mapped onto the agent API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use hull_proto::agent;
use tokio::sync::{watch, Mutex};
use ttrpc::{Code, Error as TtrpcError};

use crate::config::Config;
use crate::events::TaskEvent;
use crate::exit::{self, ExitRecord, SANDBOX_LOST_EXIT_STATUS};
use crate::mounts::{self, MountSpec};
use crate::sandbox::{call_context, valid_id, Sandbox};
use crate::stdio::{self, ProcessIo, StdioPaths};

/// Largest OCI spec accepted (agent.proto's limit).
const MAX_SPEC_BYTES: usize = 1 << 20;
/// Largest exec process JSON accepted (agent.proto's limit).
const MAX_PROCESS_BYTES: usize = 256 << 10;
/// File in the bundle recording the sandbox directory (read by `delete` after a crash).
pub const BUNDLE_SANDBOX_FILE: &str = "hull-sandbox";

fn status_error(code: Code, message: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// Passes an agent's status through (its code is meaningful); other errors become UNAVAILABLE.
fn agent_error(call: &str, e: TtrpcError) -> TtrpcError {
    match e {
        TtrpcError::RpcStatus(mut s) => {
            s.message = format!("agent {call}: {}", s.message);
            TtrpcError::RpcStatus(s)
        }
        other => status_error(Code::UNAVAILABLE, format!("agent {call}: {other}")),
    }
}

#[derive(Debug, Clone)]
struct ProcessState {
    status: Status,
    exit: Option<ExitRecord>,
}

/// One process (a container's init or an exec).
struct Process {
    container_id: String,
    exec_id: String,
    stdio: StdioPaths,
    state: StdMutex<ProcessState>,
    exited: watch::Sender<bool>,
    io: StdMutex<Option<ProcessIo>>,
}

impl Process {
    fn new(container_id: &str, exec_id: &str, stdio: StdioPaths, io: ProcessIo) -> Arc<Process> {
        Arc::new(Process {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            stdio,
            state: StdMutex::new(ProcessState {
                status: Status::CREATED,
                exit: None,
            }),
            exited: watch::channel(false).0,
            io: StdMutex::new(Some(io)),
        })
    }

    fn state(&self) -> ProcessState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_status(&self, status: Status) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.status != Status::STOPPED {
            state.status = status;
        }
    }

    /// Records the exit once; returns false if it was already recorded.
    fn record_exit(&self, record: ExitRecord) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.exit.is_some() {
            return false;
        }
        state.status = Status::STOPPED;
        state.exit = Some(record);
        drop(state);
        self.exited.send_replace(true);
        true
    }

    fn close_stdin(&self) {
        if let Some(io) = self.io.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            io.close_stdin();
        }
    }

    fn take_outputs(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.io
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(|io| io.take_outputs())
            .unwrap_or_default()
    }
}

struct Container {
    bundle: String,
    rootfs: PathBuf,
    init: Arc<Process>,
    execs: HashMap<String, Arc<Process>>,
}

#[derive(Default)]
struct State {
    sandbox: Option<Arc<Sandbox>>,
    containers: HashMap<String, Container>,
}

/// The Task service of one shim (one sandbox).
#[derive(Clone)]
pub struct HullTask {
    config: Arc<Config>,
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    state: Arc<Mutex<State>>,
    config_error: Option<String>,
}

impl HullTask {
    /// A service for containers in `namespace`, publishing events through `publisher`;
    /// `exit` is signalled when the shim may exit (Shutdown with no container left).
    pub fn new(
        config: Config,
        namespace: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> HullTask {
        HullTask {
            config: Arc::new(config),
            namespace: namespace.to_string(),
            publisher: Arc::new(publisher),
            exit,
            state: Arc::new(Mutex::new(State::default())),
            config_error: None,
        }
    }

    /// Marks the configuration as unusable: every Create fails with `error`.
    pub fn with_config_error(mut self, error: String) -> HullTask {
        self.config_error = Some(error);
        self
    }

    async fn publish(&self, event: TaskEvent) {
        publish(&self.publisher, &self.namespace, event).await;
    }

    async fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, TtrpcError> {
        let state = self.state.lock().await;
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| status_error(Code::NOT_FOUND, format!("container {id} not found")))?;
        if exec_id.is_empty() {
            return Ok(container.init.clone());
        }
        container.execs.get(exec_id).cloned().ok_or_else(|| {
            status_error(
                Code::NOT_FOUND,
                format!("exec {exec_id} of container {id} not found"),
            )
        })
    }

    async fn sandbox(&self) -> Result<Arc<Sandbox>, TtrpcError> {
        self.state
            .lock()
            .await
            .sandbox
            .clone()
            .ok_or_else(|| status_error(Code::FAILED_PRECONDITION, "no sandbox in this shim"))
    }

    /// Starts the sandbox if this is the first container.
    async fn ensure_sandbox(
        &self,
        state: &mut State,
        sandbox_id: &str,
    ) -> Result<Arc<Sandbox>, TtrpcError> {
        if let Some(sandbox) = &state.sandbox {
            if sandbox.id != sandbox_id {
                return Err(status_error(
                    Code::INVALID_ARGUMENT,
                    format!("this shim serves sandbox {}, not {sandbox_id}", sandbox.id),
                ));
            }
            return Ok(sandbox.clone());
        }
        let sandbox = Sandbox::start(&self.config, sandbox_id)
            .await
            .map_err(|e| status_error(Code::UNAVAILABLE, e.to_string()))?;
        let sandbox = Arc::new(sandbox);
        state.sandbox = Some(sandbox.clone());
        spawn_oom_watch(
            sandbox.clone(),
            self.publisher.clone(),
            self.namespace.clone(),
        );
        Ok(sandbox)
    }

    /// Opens the stdio streams the agent named and starts the copiers.
    async fn connect_stdio(
        sandbox: &Sandbox,
        paths: &StdioPaths,
        ports: &agent::StdioPorts,
    ) -> Result<ProcessIo, TtrpcError> {
        let mut streams = Vec::with_capacity(3);
        for port in stdio::ports(ports) {
            if port == 0 {
                streams.push(None);
                continue;
            }
            let stream = sandbox
                .open_stream(port)
                .await
                .map_err(|e| status_error(Code::UNAVAILABLE, e.to_string()))?;
            streams.push(Some(stream));
        }
        let mut streams = streams.into_iter();
        let (i, o, e) = (
            streams.next().flatten(),
            streams.next().flatten(),
            streams.next().flatten(),
        );
        Ok(stdio::wire(paths, i, o, e))
    }

    /// Waits for the process in the agent, then for its output, then records and publishes the
    /// exit. If the sandbox dies first, the process exits with [`SANDBOX_LOST_EXIT_STATUS`].
    fn spawn_waiter(&self, sandbox: Arc<Sandbox>, process: Arc<Process>) {
        let publisher = self.publisher.clone();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            let request = agent::WaitProcessRequest {
                container_id: process.container_id.clone(),
                exec_id: process.exec_id.clone(),
                ..Default::default()
            };
            let mut death = sandbox.death_notice();
            let wait = sandbox
                .agent()
                .wait_process(ttrpc::context::Context::default(), &request);
            let record = tokio::select! {
                reply = wait => match reply {
                    Ok(r) => exit::exit_record_from_agent(r.exit_status, r.exited_at.as_ref()),
                    Err(e) => {
                        tracing::error!(container = process.container_id, exec = process.exec_id,
                            %e, "lost the agent while waiting for the process; reporting exit 255");
                        lost_record()
                    }
                },
                reason = death.wait_for(|d| d.is_some()) => {
                    let reason = reason.map(|r| r.clone()).ok().flatten();
                    tracing::error!(container = process.container_id, exec = process.exec_id,
                        ?reason, "sandbox died; reporting exit 255");
                    lost_record()
                }
            };
            for output in process.take_outputs() {
                let _ = output.await;
            }
            if process.record_exit(record.clone()) {
                publish(
                    &publisher,
                    &namespace,
                    TaskEvent::Exit {
                        container_id: process.container_id.clone(),
                        exec_id: process.exec_id.clone(),
                        pid: shim_pid(),
                        exit: record,
                    },
                )
                .await;
            }
        });
    }

    async fn teardown_if_empty(&self) {
        let sandbox = {
            let mut state = self.state.lock().await;
            if !state.containers.is_empty() {
                return;
            }
            state.sandbox.take()
        };
        if let Some(sandbox) = sandbox {
            sandbox.destroy().await;
        }
    }
}

fn lost_record() -> ExitRecord {
    ExitRecord {
        status: SANDBOX_LOST_EXIT_STATUS,
        exited_at: exit::now(),
    }
}

/// The pid reported to containerd for every process: the shim's own (guest pids mean nothing
/// on the host; runtimes with VMs do the same).
fn shim_pid() -> u32 {
    std::process::id()
}

async fn publish(publisher: &RemotePublisher, namespace: &str, event: TaskEvent) {
    let topic = event.topic();
    if let Err(e) = publisher
        .publish(
            ttrpc::context::Context::default(),
            topic,
            namespace,
            event.to_message(),
        )
        .await
    {
        tracing::warn!(topic, %e, "publishing event");
    }
}

/// Long-polls GetOOMEvent and publishes TaskOOM until the agent goes away (or lacks the RPC).
fn spawn_oom_watch(sandbox: Arc<Sandbox>, publisher: Arc<RemotePublisher>, namespace: String) {
    tokio::spawn(async move {
        loop {
            let reply = sandbox
                .agent()
                .get_oom_event(
                    ttrpc::context::Context::default(),
                    &agent::GetOOMEventRequest::default(),
                )
                .await;
            match reply {
                Ok(r) if valid_id(&r.container_id) => {
                    publish(
                        &publisher,
                        &namespace,
                        TaskEvent::Oom {
                            container_id: r.container_id,
                        },
                    )
                    .await;
                }
                Ok(r) => tracing::warn!(id = ?r.container_id, "agent sent a bad OOM container id"),
                Err(e) => {
                    tracing::debug!(%e, "OOM event watch stopped");
                    return;
                }
            }
        }
    });
}

fn read_bundle_spec(bundle: &Path) -> Result<(Vec<u8>, oci_spec::runtime::Spec), TtrpcError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        status_error(
            Code::INVALID_ARGUMENT,
            format!("reading {}: {e}", path.display()),
        )
    })?;
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(status_error(
            Code::INVALID_ARGUMENT,
            format!("{} is larger than 1 MiB", path.display()),
        ));
    }
    let spec = serde_json::from_slice(&bytes).map_err(|e| {
        status_error(
            Code::INVALID_ARGUMENT,
            format!("parsing {}: {e}", path.display()),
        )
    })?;
    Ok((bytes, spec))
}

fn state_response(id: &str, bundle: &str, process: &Process) -> api::StateResponse {
    let state = process.state();
    api::StateResponse {
        id: id.to_string(),
        bundle: bundle.to_string(),
        pid: shim_pid(),
        status: state.status.into(),
        stdin: process.stdio.stdin.clone(),
        stdout: process.stdio.stdout.clone(),
        stderr: process.stdio.stderr.clone(),
        terminal: process.stdio.terminal,
        exit_status: state.exit.as_ref().map_or(0, |e| e.status),
        exited_at: state.exit.map(|e| e.exited_at).into(),
        exec_id: process.exec_id.clone(),
        ..Default::default()
    }
}

#[async_trait]
impl Task for HullTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        if let Some(error) = &self.config_error {
            return Err(status_error(Code::FAILED_PRECONDITION, error.clone()));
        }
        let id = req.id.clone();
        if !valid_id(&id) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad container id {id:?}"),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(status_error(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported",
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let (spec_bytes, spec) = read_bundle_spec(&bundle)?;
        let sandbox_id = crate::cri::sandbox_id_for(&id, spec.annotations().as_ref());
        if !valid_id(&sandbox_id) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad sandbox id {sandbox_id:?}"),
            ));
        }
        let specs: Vec<MountSpec> = req
            .rootfs
            .iter()
            .map(|m| MountSpec {
                fs_type: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let rootfs_mount = mounts::rootfs_mount(&specs, &bundle)
            .map_err(|e| status_error(Code::INVALID_ARGUMENT, e.to_string()))?;

        let mut state = self.state.lock().await;
        if state.containers.contains_key(&id) {
            return Err(status_error(
                Code::ALREADY_EXISTS,
                format!("container {id} exists"),
            ));
        }
        let sandbox = self.ensure_sandbox(&mut state, &sandbox_id).await?;
        let _ = std::fs::write(
            bundle.join(BUNDLE_SANDBOX_FILE),
            sandbox.paths.dir.as_os_str().as_encoded_bytes(),
        );
        let rootfs = sandbox.paths.rootfs(&id);
        mounts::mount_at(&rootfs_mount, &rootfs)
            .map_err(|e| status_error(Code::INTERNAL, e.to_string()))?;

        let stdio_paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let request = agent::CreateContainerRequest {
            container_id: id.clone(),
            oci_spec_json: spec_bytes,
            rootfs_path: format!("{id}/rootfs"),
            stdio: Some(stdio_paths.request()).into(),
            ..Default::default()
        };
        let created = sandbox
            .agent()
            .create_container(call_context(), &request)
            .await
            .map_err(|e| agent_error("CreateContainer", e));
        let io = match created {
            Ok(reply) => Self::connect_stdio(&sandbox, &stdio_paths, &reply.stdio_ports).await,
            Err(e) => Err(e),
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                let _ = mounts::unmount_and_remove(&rootfs);
                let _ = std::fs::remove_dir(rootfs.parent().unwrap_or(&rootfs));
                if state.containers.is_empty() {
                    if let Some(sandbox) = state.sandbox.take() {
                        sandbox.destroy().await;
                    }
                }
                return Err(e);
            }
        };
        let init = Process::new(&id, "", stdio_paths.clone(), io);
        state.containers.insert(
            id.clone(),
            Container {
                bundle: req.bundle.clone(),
                rootfs,
                init,
                execs: HashMap::new(),
            },
        );
        drop(state);
        self.publish(TaskEvent::Create {
            container_id: id,
            bundle: req.bundle,
            stdin: stdio_paths.stdin,
            stdout: stdio_paths.stdout,
            stderr: stdio_paths.stderr,
            terminal: stdio_paths.terminal,
            pid: shim_pid(),
        })
        .await;
        Ok(api::CreateTaskResponse {
            pid: shim_pid(),
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if process.state().status != Status::CREATED {
            return Err(status_error(
                Code::FAILED_PRECONDITION,
                "process already started",
            ));
        }
        let sandbox = self.sandbox().await?;
        let started = if req.exec_id.is_empty() {
            let request = agent::StartContainerRequest {
                container_id: req.id.clone(),
                ..Default::default()
            };
            sandbox
                .agent()
                .start_container(call_context(), &request)
                .await
                .map(drop)
                .map_err(|e| agent_error("StartContainer", e))
        } else {
            let request = agent::StartExecRequest {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            };
            sandbox
                .agent()
                .start_exec(call_context(), &request)
                .await
                .map(drop)
                .map_err(|e| agent_error("StartExec", e))
        };
        if let Err(err) = started {
            // It will not run: a Wait already pending (containerd waits before it starts an
            // exec) returns 255 instead of hanging, and Delete finds it stopped. containerd does
            // not retry a Start, so refusals the agent would let pass (late streams, a paused
            // container) end the process here too.
            process.record_exit(ExitRecord {
                status: exit::NOT_STARTED_EXIT_STATUS,
                exited_at: exit::now(),
            });
            return Err(err);
        }
        process.set_status(Status::RUNNING);
        self.spawn_waiter(sandbox, process.clone());
        let event = if req.exec_id.is_empty() {
            TaskEvent::Start {
                container_id: req.id.clone(),
                pid: shim_pid(),
            }
        } else {
            TaskEvent::ExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: shim_pid(),
            }
        };
        self.publish(event).await;
        Ok(api::StartResponse {
            pid: shim_pid(),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        if !valid_id(&req.exec_id) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad exec id {:?}", req.exec_id),
            ));
        }
        let process_json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if process_json.is_empty() || process_json.len() > MAX_PROCESS_BYTES {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                "exec process spec missing or larger than 256 KiB",
            ));
        }
        let sandbox = self.sandbox().await?;
        let mut state = self.state.lock().await;
        let container = state.containers.get_mut(&req.id).ok_or_else(|| {
            status_error(Code::NOT_FOUND, format!("container {} not found", req.id))
        })?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(status_error(
                Code::ALREADY_EXISTS,
                format!("exec {} exists", req.exec_id),
            ));
        }
        let stdio_paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let request = agent::ExecProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            oci_process_json: process_json,
            stdio: Some(stdio_paths.request()).into(),
            ..Default::default()
        };
        let reply = sandbox
            .agent()
            .exec_process(call_context(), &request)
            .await
            .map_err(|e| agent_error("ExecProcess", e))?;
        let io = Self::connect_stdio(&sandbox, &stdio_paths, &reply.stdio_ports).await?;
        container.execs.insert(
            req.exec_id.clone(),
            Process::new(&req.id, &req.exec_id, stdio_paths, io),
        );
        drop(state);
        self.publish(TaskEvent::ExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
        })
        .await;
        Ok(Empty::new())
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let bundle = self
            .state
            .lock()
            .await
            .containers
            .get(&req.id)
            .map(|c| c.bundle.clone())
            .unwrap_or_default();
        Ok(state_response(&req.id, &bundle, &process))
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        self.process(&req.id, "").await?;
        let sandbox = self.sandbox().await?;
        let request = agent::ListProcessesRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        let reply = sandbox
            .agent()
            .list_processes(call_context(), &request)
            .await
            .map_err(|e| agent_error("ListProcesses", e))?;
        let processes = reply
            .processes
            .iter()
            .take(65536)
            .map(|p| api::ProcessInfo {
                pid: p.pid,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if !(1..=64).contains(&req.signal) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad signal {}", req.signal),
            ));
        }
        let state = process.state();
        if state.status == Status::STOPPED {
            return Err(status_error(Code::NOT_FOUND, "process already finished"));
        }
        let sandbox = self.sandbox().await?;
        let request = agent::SignalProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            all: req.all,
            ..Default::default()
        };
        sandbox
            .agent()
            .signal_process(call_context(), &request)
            .await
            .map_err(|e| agent_error("SignalProcess", e))?;
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let mut exited = process.exited.subscribe();
        exited
            .wait_for(|e| *e)
            .await
            .map_err(|_| status_error(Code::INTERNAL, "process state lost"))?;
        let state = process.state();
        let record = state.exit.unwrap_or_else(lost_record);
        Ok(api::WaitResponse {
            exit_status: record.status,
            exited_at: Some(record.exited_at).into(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, "").await?;
        let sandbox = self.sandbox().await?;
        let request = agent::PauseContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        sandbox
            .agent()
            .pause_container(call_context(), &request)
            .await
            .map_err(|e| agent_error("PauseContainer", e))?;
        process.set_status(Status::PAUSED);
        self.publish(TaskEvent::Paused {
            container_id: req.id,
        })
        .await;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, "").await?;
        let sandbox = self.sandbox().await?;
        let request = agent::ResumeContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        sandbox
            .agent()
            .resume_container(call_context(), &request)
            .await
            .map_err(|e| agent_error("ResumeContainer", e))?;
        process.set_status(Status::RUNNING);
        self.publish(TaskEvent::Resumed {
            container_id: req.id,
        })
        .await;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        self.process(&req.id, "").await?;
        let sandbox = self.sandbox().await?;
        let request = agent::StatsContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        let reply = sandbox
            .agent()
            .stats_container(call_context(), &request)
            .await
            .map_err(|e| agent_error("StatsContainer", e))?;
        let metrics = crate::convert::metrics_from_agent(reply.stats.get_or_default());
        let any = crate::convert::metrics_any(&metrics)
            .map_err(|e| status_error(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<Empty> {
        self.process(&req.id, "").await?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if resources.len() > 64 << 10 {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                "resources larger than 64 KiB",
            ));
        }
        let sandbox = self.sandbox().await?;
        let request = agent::UpdateContainerRequest {
            container_id: req.id.clone(),
            oci_resources_json: resources,
            ..Default::default()
        };
        sandbox
            .agent()
            .update_container(call_context(), &request)
            .await
            .map_err(|e| agent_error("UpdateContainer", e))?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        self.process(&req.id, &req.exec_id).await?;
        let sandbox = self.sandbox().await?;
        let clamp = |v: u32| v.clamp(1, 65535);
        let request = agent::TtyWinResizeRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            rows: clamp(req.height),
            columns: clamp(req.width),
            ..Default::default()
        };
        sandbox
            .agent()
            .tty_win_resize(call_context(), &request)
            .await
            .map_err(|e| agent_error("TtyWinResize", e))?;
        Ok(Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            process.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let state = process.state();
        if matches!(state.status, Status::RUNNING | Status::PAUSED) {
            return Err(status_error(
                Code::FAILED_PRECONDITION,
                "cannot delete a running process",
            ));
        }
        if !req.exec_id.is_empty() {
            // The agent forgets it too (best effort: it also bounds what it keeps).
            if let Ok(sandbox) = self.sandbox().await {
                let request = agent::RemoveProcessRequest {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                };
                if let Err(e) = sandbox
                    .agent()
                    .remove_process(call_context(), &request)
                    .await
                {
                    tracing::warn!(container = req.id, exec = req.exec_id, %e, "agent RemoveProcess");
                }
            }
            let mut all = self.state.lock().await;
            if let Some(c) = all.containers.get_mut(&req.id) {
                c.execs.remove(&req.exec_id);
            }
            let record = state.exit.unwrap_or_else(lost_record);
            return Ok(api::DeleteResponse {
                pid: shim_pid(),
                exit_status: record.status,
                exited_at: Some(record.exited_at).into(),
                ..Default::default()
            });
        }
        // Init: remove the container from the agent, unmount its rootfs.
        let sandbox = self.sandbox().await?;
        if sandbox.death_notice().borrow().is_none() {
            let request = agent::RemoveContainerRequest {
                container_id: req.id.clone(),
                stop_timeout_ms: 1000,
                ..Default::default()
            };
            if let Err(e) = sandbox
                .agent()
                .remove_container(call_context(), &request)
                .await
            {
                tracing::warn!(container = req.id, %e, "agent RemoveContainer");
            }
        }
        let record = match state.exit {
            Some(r) => r,
            None => {
                // Created but never started: it is gone now.
                let r = ExitRecord {
                    status: crate::exit::KILLED_EXIT_STATUS,
                    exited_at: exit::now(),
                };
                process.record_exit(r.clone());
                r
            }
        };
        let container = self.state.lock().await.containers.remove(&req.id);
        if let Some(container) = container {
            if let Err(e) = mounts::unmount_and_remove(&container.rootfs) {
                tracing::warn!(%e, "unmounting container rootfs");
            }
            if let Some(dir) = container.rootfs.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        self.publish(TaskEvent::Delete {
            container_id: req.id.clone(),
            pid: shim_pid(),
            exit: record.clone(),
        })
        .await;
        self.teardown_if_empty().await;
        Ok(api::DeleteResponse {
            pid: shim_pid(),
            exit_status: record.status,
            exited_at: Some(record.exited_at).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: shim_pid(),
            task_pid: shim_pid(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> ttrpc::Result<Empty> {
        if !self.state.lock().await.containers.is_empty() {
            return Ok(Empty::new());
        }
        self.teardown_if_empty().await;
        self.exit.signal();
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_is_recorded_once_and_wakes_waiters() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let io = stdio::wire(&StdioPaths::default(), None, None, None);
        drop(a);
        let p = Process::new("c1", "", StdioPaths::default(), io);
        p.set_status(Status::RUNNING);
        let mut rx = p.exited.subscribe();
        let waiter = tokio::spawn(async move { rx.wait_for(|e| *e).await.is_ok() });
        let first = ExitRecord {
            status: 3,
            exited_at: exit::now(),
        };
        assert!(p.record_exit(first.clone()));
        assert!(!p.record_exit(lost_record()));
        assert!(waiter.await.unwrap());
        let s = p.state();
        assert_eq!(s.status, Status::STOPPED);
        assert_eq!(s.exit, Some(first));
        p.set_status(Status::RUNNING);
        assert_eq!(
            p.state().status,
            Status::STOPPED,
            "a stopped process stays stopped"
        );
        let resp = state_response("c1", "/b", &p);
        assert_eq!(resp.exit_status, 3);
        assert_eq!(resp.status.enum_value(), Ok(Status::STOPPED));
    }

    #[test]
    fn agent_status_codes_pass_through() {
        let e = agent_error(
            "StartContainer",
            status_error(Code::FAILED_PRECONDITION, "stdio not connected"),
        );
        match e {
            TtrpcError::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert!(s.message.contains("StartContainer"));
            }
            other => panic!("{other:?}"),
        }
        match agent_error("Wait", TtrpcError::RemoteClosed) {
            TtrpcError::RpcStatus(s) => assert_eq!(s.code(), Code::UNAVAILABLE),
            other => panic!("{other:?}"),
        }
    }
}
