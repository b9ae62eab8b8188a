//! The shim's ttrpc Task service: containerd's task API mapped onto the agent API.
//!
//! One shim serves one sandbox (a pod, or a plain container). Its state lock is held only to
//! read or change the maps below, never across a VM boot or an agent call: a container being
//! created is *reserved* (its id in `creating`), the sandbox boot is serialised by its own
//! `boot` lock, and everything slow runs with no lock held, so a pod's containers are created,
//! started, exec'd and stopped concurrently.

mod create;
mod process;
mod service;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use hull_proto::agent;
use tokio::sync::Mutex;
use ttrpc::{Code, Error as TtrpcError};

use crate::config::Config;
use crate::cri::PodRole;
use crate::events::TaskEvent;
use crate::exit::{self, ExitRecord, SANDBOX_LOST_EXIT_STATUS};
use crate::publisher::EventPublisher;
use crate::sandbox::{Sandbox, SandboxRequest};
use crate::stdio::{self, ProcessIo, StdioPaths};
use process::Process;

/// File in the bundle recording the sandbox directory (read by `delete` after a crash).
pub const BUNDLE_SANDBOX_FILE: &str = "hull-sandbox";

fn status_error(code: Code, message: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, message.into()))
}

struct Container {
    bundle: String,
    role: PodRole,
    init: Arc<Process>,
    execs: HashMap<String, Arc<Process>>,
}

#[derive(Default)]
struct State {
    sandbox: Option<Arc<Sandbox>>,
    containers: HashMap<String, Container>,
    /// Containers whose Create is under way (reserved ids).
    creating: HashSet<String>,
    /// (container, exec) pairs whose Exec is under way.
    pending_execs: HashSet<(String, String)>,
    /// Guest pid of the pod's sandbox container once it started: app containers join its
    /// namespaces in the guest.
    sandbox_init_pid: Option<u32>,
}

/// The Task service of one shim (one sandbox).
#[derive(Clone)]
pub struct HullTask {
    config: Arc<Config>,
    namespace: String,
    publisher: EventPublisher,
    exit: Arc<ExitSignal>,
    state: Arc<Mutex<State>>,
    /// Serialises starting the sandbox (only Creates wait on it).
    boot: Arc<Mutex<()>>,
    config_error: Option<String>,
}

impl HullTask {
    /// A service for containers in `namespace`, publishing events through `publisher`;
    /// `exit` is signalled when the shim may exit (Shutdown with no container left).
    pub fn new(
        config: Config,
        namespace: &str,
        publisher: EventPublisher,
        exit: Arc<ExitSignal>,
    ) -> HullTask {
        HullTask {
            config: Arc::new(config),
            namespace: namespace.to_string(),
            publisher,
            exit,
            state: Arc::new(Mutex::new(State::default())),
            boot: Arc::new(Mutex::new(())),
            config_error: None,
        }
    }

    /// Marks the configuration as unusable: every Create fails with `error`.
    pub fn with_config_error(mut self, error: String) -> HullTask {
        self.config_error = Some(error);
        self
    }

    /// Queues `event` for containerd (never blocks; see [`EventPublisher`]).
    fn publish(&self, event: TaskEvent) {
        self.publisher.publish_task_event(&self.namespace, &event);
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

    /// The running sandbox, or a new one started with `request`. Only concurrent Creates wait
    /// for a boot; the state lock is not held while it runs.
    async fn ensure_sandbox(
        &self,
        sandbox_id: &str,
        request: SandboxRequest,
    ) -> Result<Arc<Sandbox>, TtrpcError> {
        let _boot = self.boot.lock().await;
        if let Some(sandbox) = self.state.lock().await.sandbox.clone() {
            if sandbox.id != sandbox_id {
                return Err(status_error(
                    Code::INVALID_ARGUMENT,
                    format!("this shim serves sandbox {}, not {sandbox_id}", sandbox.id),
                ));
            }
            return Ok(sandbox);
        }
        let sandbox = Sandbox::start(&self.config, sandbox_id, request)
            .await
            .map_err(|e| status_error(Code::UNAVAILABLE, e.to_string()))?;
        let sandbox = Arc::new(sandbox);
        self.state.lock().await.sandbox = Some(sandbox.clone());
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
            let mut death = sandbox.death_notice();
            let wait = sandbox
                .agent()
                .wait_process(&process.container_id, &process.exec_id);
            let record = tokio::select! {
                reply = wait => reply.unwrap_or_else(|e| {
                    tracing::error!(container = process.container_id, exec = process.exec_id,
                        %e, "lost the agent while waiting for the process; reporting exit 255");
                    lost_record()
                }),
                reason = death.wait_for(|d| d.is_some()) => {
                    let reason = reason.map(|r| r.clone()).ok().flatten();
                    tracing::error!(container = process.container_id, exec = process.exec_id,
                        ?reason, "sandbox died; reporting exit 255");
                    lost_record()
                }
            };
            if process.exec_id.is_empty() {
                crate::bench::stages::mark(
                    crate::bench::stages::Stage::ExitSeen,
                    &process.container_id,
                );
            }
            for output in process.take_outputs() {
                let _ = output.await;
            }
            if process.record_exit(record.clone()) {
                publisher.publish_task_event(
                    &namespace,
                    &TaskEvent::Exit {
                        container_id: process.container_id.clone(),
                        exec_id: process.exec_id.clone(),
                        pid: shim_pid(),
                        exit: record,
                    },
                );
            }
        });
    }

    /// Destroys the sandbox when no container is left or being created.
    async fn teardown_if_empty(&self) {
        let sandbox = {
            let mut state = self.state.lock().await;
            if !state.containers.is_empty() || !state.creating.is_empty() {
                return;
            }
            state.sandbox_init_pid = None;
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

/// Long-polls GetOOMEvent and publishes TaskOOM until the agent goes away.
fn spawn_oom_watch(sandbox: Arc<Sandbox>, publisher: EventPublisher, namespace: String) {
    tokio::spawn(async move {
        loop {
            match sandbox.agent().get_oom_event().await {
                Ok(container_id) => {
                    publisher.publish_task_event(&namespace, &TaskEvent::Oom { container_id });
                }
                Err(e) if e.code() == Some(Code::INTERNAL) => {
                    tracing::warn!(%e, "ignoring a bad OOM event");
                }
                Err(e) => {
                    tracing::debug!(%e, "OOM event watch stopped");
                    return;
                }
            }
        }
    });
}

/// Reads and parses the bundle's config.json (at most the agent's spec limit).
fn read_bundle_spec(bundle: &Path) -> Result<oci_spec::runtime::Spec, TtrpcError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        status_error(
            Code::INVALID_ARGUMENT,
            format!("reading {}: {e}", path.display()),
        )
    })?;
    if bytes.len() > hull_proto::contract::MAX_OCI_SPEC_BYTES {
        return Err(status_error(
            Code::INVALID_ARGUMENT,
            format!("{} is larger than 1 MiB", path.display()),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        status_error(
            Code::INVALID_ARGUMENT,
            format!("parsing {}: {e}", path.display()),
        )
    })
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

/// The bundle directory recorded for `delete` after a crash.
fn record_sandbox_dir(bundle: &Path, sandbox_dir: &Path) {
    let _ = std::fs::write(
        bundle.join(BUNDLE_SANDBOX_FILE),
        sandbox_dir.as_os_str().as_encoded_bytes(),
    );
}
