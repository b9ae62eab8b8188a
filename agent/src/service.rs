//! The AgentService implementation: the RPC handlers. RPCs not implemented yet validate their
//! request, then answer UNIMPLEMENTED naming the RPC.

use async_trait::async_trait;
use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentService;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::{Code, Error as TtrpcError};

use std::sync::Arc;

use crate::guest_info;
use crate::network::{NetError, Netns};
use crate::runtime::{Failure, Runtime};
use crate::validate::Validate;

/// The RPCs this agent implements; reported in GetGuestDetails capabilities.
pub const IMPLEMENTED_RPCS: [&str; 26] = [
    "Health",
    "Version",
    "GetGuestDetails",
    "PowerOff",
    "CreateContainer",
    "StartContainer",
    "RemoveContainer",
    "ExecProcess",
    "StartExec",
    "RemoveProcess",
    "SignalProcess",
    "WaitProcess",
    "ListProcesses",
    "StatsContainer",
    "PauseContainer",
    "ResumeContainer",
    "UpdateContainer",
    "TtyWinResize",
    "CloseStdin",
    "CreateSandbox",
    "DestroySandbox",
    "GetOOMEvent",
    "UpdateInterface",
    "UpdateRoutes",
    "ListInterfaces",
    "ListTcpListeners",
];

/// The API handlers. PowerOff does not stop anything itself: it flips the `power_off` watch,
/// and whoever runs the server (see [`crate::server`]) shuts down after the reply went out.
pub struct AgentApi {
    power_off: watch::Sender<bool>,
    runtime: Arc<Runtime>,
    console: Arc<crate::console::DebugConsole>,
}

impl AgentApi {
    /// Creates the handlers (without a shared directory) and the receiver that observes
    /// PowerOff requests.
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let runtime = Runtime::new(
            None,
            crate::stdio::StreamHub::new(false),
            crate::exits::ExitRegistry::new(),
        );
        Self::with_runtime(Arc::new(runtime))
    }

    /// Creates the handlers over `runtime`.
    pub fn with_runtime(runtime: Arc<Runtime>) -> (Self, watch::Receiver<bool>) {
        let (power_off, requested) = watch::channel(false);
        let console = crate::console::DebugConsole::new(false);
        let api = AgentApi {
            power_off,
            runtime,
            console,
        };
        (api, requested)
    }

    /// The debug console that CreateSandbox opens when it asks for one.
    pub fn with_debug_console(self, console: Arc<crate::console::DebugConsole>) -> Self {
        AgentApi { console, ..self }
    }

    fn shutting_down(&self) -> bool {
        *self.power_off.borrow()
    }

    /// Ends the long polls (GetOOMEvent) as PowerOff does, when sent `true`: the server sends it
    /// when a signal stops the agent, so no pending call holds a connection open.
    pub fn long_poll_stopper(&self) -> watch::Sender<bool> {
        self.power_off.clone()
    }
}

/// Maps a runtime failure to an RPC status naming the RPC.
fn failed<T>(rpc: &str, result: Result<T, Failure>) -> ttrpc::Result<T> {
    result.map_err(|(code, message)| {
        warn!(rpc, %message, "RPC failed");
        status(code, format!("{rpc}: {message}"))
    })
}

/// Maps a network failure to an RPC status naming the RPC.
fn net_failed<T>(rpc: &str, result: Result<T, NetError>) -> ttrpc::Result<T> {
    failed(rpc, result.map_err(|e| (e.code(), e.to_string())))
}

fn timestamp(at: std::time::SystemTime) -> protobuf::well_known_types::timestamp::Timestamp {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    protobuf::well_known_types::timestamp::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

fn status(code: Code, message: String) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, message))
}

/// Validates `request`, then refuses it as not implemented yet.
fn not_yet<T>(rpc: &str, request: &impl Validate) -> ttrpc::Result<T> {
    check(rpc, request)?;
    debug!(rpc, "RPC not implemented yet");
    Err(status(
        Code::UNIMPLEMENTED,
        format!(
            "{rpc} is not implemented by hull-agent {}",
            crate::AGENT_VERSION
        ),
    ))
}

/// Turns a validation failure into INVALID_ARGUMENT naming the RPC and the field.
/// Runs blocking cgroup work (freezer waits, limit writes) off the agent's only thread; its
/// error becomes a `code` status named after `rpc`.
async fn off_thread<E: std::fmt::Display + Send + 'static>(
    rpc: &str,
    code: Code,
    work: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> ttrpc::Result<()> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| status(Code::INTERNAL, format!("{rpc}: {e}")))?
        .map_err(|e| status(code, format!("{rpc}: {e}")))
}

fn check(rpc: &str, request: &impl Validate) -> ttrpc::Result<()> {
    request.validate().map_err(|err| {
        warn!(rpc, %err, "refusing invalid request");
        status(Code::INVALID_ARGUMENT, format!("{rpc}: {err}"))
    })
}

#[async_trait]
impl AgentService for AgentApi {
    async fn health(
        &self,
        _ctx: &TtrpcContext,
        req: HealthRequest,
    ) -> ttrpc::Result<HealthResponse> {
        check("Health", &req)?;
        let status = if self.shutting_down() {
            health_response::ServingStatus::SERVING_STATUS_NOT_SERVING
        } else {
            health_response::ServingStatus::SERVING_STATUS_SERVING
        };
        Ok(HealthResponse {
            status: status.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        req: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        check("Version", &req)?;
        Ok(VersionResponse {
            agent_version: crate::AGENT_VERSION.to_string(),
            api_version: hull_proto::API_VERSION,
            ..Default::default()
        })
    }

    async fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        check("GetGuestDetails", &req)?;
        guest_info::read_guest_details(&IMPLEMENTED_RPCS).map_err(|err| {
            warn!(%err, "GetGuestDetails failed");
            status(Code::INTERNAL, format!("GetGuestDetails: {err}"))
        })
    }

    async fn power_off(
        &self,
        _ctx: &TtrpcContext,
        req: PowerOffRequest,
    ) -> ttrpc::Result<PowerOffResponse> {
        check("PowerOff", &req)?;
        info!("PowerOff requested");
        self.power_off.send_replace(true);
        Ok(PowerOffResponse::default())
    }

    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<CreateSandboxResponse> {
        check("CreateSandbox", &req)?;
        let result = crate::sandbox::create(&req, &self.runtime).await;
        failed("CreateSandbox", result)?;
        if req.debug_console {
            self.console.enable();
        }
        Ok(CreateSandboxResponse::default())
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<DestroySandboxResponse> {
        check("DestroySandbox", &req)?;
        info!(sandbox_id = %req.sandbox_id, "DestroySandbox");
        failed(
            "DestroySandbox",
            crate::sandbox::destroy(&self.runtime).await,
        )?;
        Ok(DestroySandboxResponse::default())
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        check("CreateContainer", &req)?;
        let stdio = req.stdio.clone().unwrap_or_default();
        let result = self
            .runtime
            .create(
                &req.container_id,
                &req.oci_spec_json,
                &req.rootfs_path,
                &stdio,
            )
            .await;
        let ports = failed("CreateContainer", result)?;
        Ok(CreateContainerResponse {
            stdio_ports: Some(ports).into(),
            ..Default::default()
        })
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        check("StartContainer", &req)?;
        let pid = failed(
            "StartContainer",
            self.runtime.start(&req.container_id).await,
        )?;
        Ok(StartContainerResponse {
            pid,
            ..Default::default()
        })
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<RemoveContainerResponse> {
        check("RemoveContainer", &req)?;
        let result = self
            .runtime
            .remove(&req.container_id, req.stop_timeout_ms)
            .await;
        failed("RemoveContainer", result)?;
        Ok(RemoveContainerResponse::default())
    }

    async fn remove_process(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveProcessRequest,
    ) -> ttrpc::Result<RemoveProcessResponse> {
        check("RemoveProcess", &req)?;
        let result = self.runtime.remove_process(&req.container_id, &req.exec_id);
        failed("RemoveProcess", result)?;
        Ok(RemoveProcessResponse::default())
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        check("ExecProcess", &req)?;
        let stdio = req.stdio.clone().unwrap_or_default();
        let result = self.runtime.exec(
            &req.container_id,
            &req.exec_id,
            &req.oci_process_json,
            &stdio,
        );
        let ports = failed("ExecProcess", result)?;
        Ok(ExecProcessResponse {
            stdio_ports: Some(ports).into(),
            ..Default::default()
        })
    }

    async fn start_exec(
        &self,
        _ctx: &TtrpcContext,
        req: StartExecRequest,
    ) -> ttrpc::Result<StartExecResponse> {
        check("StartExec", &req)?;
        let result = self
            .runtime
            .start_exec(&req.container_id, &req.exec_id)
            .await;
        let pid = failed("StartExec", result)?;
        Ok(StartExecResponse {
            pid,
            ..Default::default()
        })
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<SignalProcessResponse> {
        check("SignalProcess", &req)?;
        let result = self
            .runtime
            .signal(&req.container_id, &req.exec_id, req.signal, req.all);
        failed("SignalProcess", result)?;
        Ok(SignalProcessResponse::default())
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        check("WaitProcess", &req)?;
        let result = self.runtime.wait(&req.container_id, &req.exec_id).await;
        let exit = failed("WaitProcess", result)?;
        Ok(WaitProcessResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        check("ListProcesses", &req)?;
        let list = failed("ListProcesses", self.runtime.list(&req.container_id))?;
        Ok(ListProcessesResponse {
            processes: list
                .into_iter()
                .map(|(pid, exec_id)| ProcessInfo {
                    pid,
                    exec_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        check("StatsContainer", &req)?;
        let cgroup = failed("StatsContainer", self.runtime.cgroup(&req.container_id))?;
        Ok(StatsContainerResponse {
            stats: Some(crate::stats::read_stats(&cgroup)).into(),
            ..Default::default()
        })
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<PauseContainerResponse> {
        check("PauseContainer", &req)?;
        let cgroup = failed("PauseContainer", self.runtime.cgroup(&req.container_id))?;
        // The freezer may take a while (up to 5 s) to settle.
        off_thread("PauseContainer", Code::INTERNAL, move || {
            cgroup.set_frozen(true)
        })
        .await?;
        Ok(PauseContainerResponse::default())
    }

    async fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<ResumeContainerResponse> {
        check("ResumeContainer", &req)?;
        let cgroup = failed("ResumeContainer", self.runtime.cgroup(&req.container_id))?;
        // The freezer may take a while (up to 5 s) to settle.
        off_thread("ResumeContainer", Code::INTERNAL, move || {
            cgroup.set_frozen(false)
        })
        .await?;
        Ok(ResumeContainerResponse::default())
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<UpdateContainerResponse> {
        check("UpdateContainer", &req)?;
        let bad_resources = |e: String| {
            status(
                Code::INVALID_ARGUMENT,
                format!("UpdateContainer: oci_resources_json: {e}"),
            )
        };
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&req.oci_resources_json)
                .map_err(|e| bad_resources(e.to_string()))?;
        let cgroup = failed("UpdateContainer", self.runtime.cgroup(&req.container_id))?;
        let device_rules = resources
            .devices()
            .as_deref()
            .map(crate::container::devices::rules_for)
            .transpose()
            .map_err(bad_resources)?;
        // Lowering memory.max makes the kernel reclaim inside the write.
        off_thread("UpdateContainer", Code::FAILED_PRECONDITION, move || {
            cgroup.apply(&resources)?;
            if let Some(rules) = device_rules {
                // Replaces the container's device program.
                crate::container::devices::attach(cgroup.dir(), &rules)
                    .map_err(crate::container::cgroup::CgroupError::Devices)?;
            }
            Ok::<(), crate::container::cgroup::CgroupError>(())
        })
        .await?;
        Ok(UpdateContainerResponse::default())
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<TtyWinResizeResponse> {
        check("TtyWinResize", &req)?;
        let result = self.runtime.resize(
            &req.container_id,
            &req.exec_id,
            req.rows as u16,
            req.columns as u16,
        );
        failed("TtyWinResize", result)?;
        Ok(TtyWinResizeResponse::default())
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<CloseStdinResponse> {
        check("CloseStdin", &req)?;
        failed(
            "CloseStdin",
            self.runtime.close_stdin(&req.container_id, &req.exec_id),
        )?;
        Ok(CloseStdinResponse::default())
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        req: GetOOMEventRequest,
    ) -> ttrpc::Result<GetOOMEventResponse> {
        check("GetOOMEvent", &req)?;
        let event = self
            .runtime
            .oom()
            .next_event(self.power_off.subscribe())
            .await;
        let container_id = event.ok_or_else(|| {
            status(
                Code::UNAVAILABLE,
                "GetOOMEvent: the agent is powering off".to_string(),
            )
        })?;
        Ok(GetOOMEventResponse {
            container_id,
            ..Default::default()
        })
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<UpdateInterfaceResponse> {
        check("UpdateInterface", &req)?;
        let wanted = req.interface.as_ref().cloned().unwrap_or_default();
        let configured = crate::network::update_interface(&Netns::Current, &wanted).await;
        let interface = Some(net_failed("UpdateInterface", configured)?).into();
        Ok(UpdateInterfaceResponse {
            interface,
            ..Default::default()
        })
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<UpdateRoutesResponse> {
        check("UpdateRoutes", &req)?;
        let installed = crate::network::update_routes(&Netns::Current, &req.routes).await;
        Ok(UpdateRoutesResponse {
            routes: net_failed("UpdateRoutes", installed)?,
            ..Default::default()
        })
    }

    async fn list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        req: ListInterfacesRequest,
    ) -> ttrpc::Result<ListInterfacesResponse> {
        check("ListInterfaces", &req)?;
        let interfaces = crate::network::list_interfaces(&Netns::Current).await;
        Ok(ListInterfacesResponse {
            interfaces: net_failed("ListInterfaces", interfaces)?,
            ..Default::default()
        })
    }

    async fn list_tcp_listeners(
        &self,
        _ctx: &TtrpcContext,
        req: ListTcpListenersRequest,
    ) -> ttrpc::Result<ListTcpListenersResponse> {
        check("ListTcpListeners", &req)?;
        let ports = tokio::task::spawn_blocking(crate::port_forward::list_tcp_listeners)
            .await
            .map_err(|e| status(Code::INTERNAL, format!("ListTcpListeners: {e}")))?
            .map_err(|err| {
                warn!(%err, "ListTcpListeners failed");
                status(Code::INTERNAL, format!("ListTcpListeners: {err}"))
            })?;
        Ok(ListTcpListenersResponse {
            ports: ports.into_iter().map(u32::from).collect(),
            ..Default::default()
        })
    }

    async fn set_guest_date_time(
        &self,
        _ctx: &TtrpcContext,
        req: SetGuestDateTimeRequest,
    ) -> ttrpc::Result<SetGuestDateTimeResponse> {
        not_yet("SetGuestDateTime", &req)
    }
}

#[cfg(test)]
mod tests;
