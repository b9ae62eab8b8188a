//! The AgentService implementation: Health, Version, GetGuestDetails and PowerOff for real;
//! every other RPC validates its request, then answers UNIMPLEMENTED naming the RPC.

use async_trait::async_trait;
use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentService;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::{Code, Error as TtrpcError};

use crate::guest_info;
use crate::validate::Validate;

/// The RPCs this agent implements; reported in GetGuestDetails capabilities.
pub const IMPLEMENTED_RPCS: [&str; 4] = ["Health", "Version", "GetGuestDetails", "PowerOff"];

/// The API handlers. PowerOff does not stop anything itself: it flips the `power_off` watch,
/// and whoever runs the server (see [`crate::server`]) shuts down after the reply went out.
pub struct AgentApi {
    power_off: watch::Sender<bool>,
}

impl AgentApi {
    /// Creates the handlers and the receiver that observes PowerOff requests.
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (power_off, requested) = watch::channel(false);
        (AgentApi { power_off }, requested)
    }

    fn shutting_down(&self) -> bool {
        *self.power_off.borrow()
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
        not_yet("CreateSandbox", &req)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<DestroySandboxResponse> {
        not_yet("DestroySandbox", &req)
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        not_yet("CreateContainer", &req)
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        not_yet("StartContainer", &req)
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<RemoveContainerResponse> {
        not_yet("RemoveContainer", &req)
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        not_yet("ExecProcess", &req)
    }

    async fn start_exec(
        &self,
        _ctx: &TtrpcContext,
        req: StartExecRequest,
    ) -> ttrpc::Result<StartExecResponse> {
        not_yet("StartExec", &req)
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<SignalProcessResponse> {
        not_yet("SignalProcess", &req)
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        not_yet("WaitProcess", &req)
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        not_yet("ListProcesses", &req)
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        not_yet("StatsContainer", &req)
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<PauseContainerResponse> {
        not_yet("PauseContainer", &req)
    }

    async fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<ResumeContainerResponse> {
        not_yet("ResumeContainer", &req)
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<UpdateContainerResponse> {
        not_yet("UpdateContainer", &req)
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<TtyWinResizeResponse> {
        not_yet("TtyWinResize", &req)
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<CloseStdinResponse> {
        not_yet("CloseStdin", &req)
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        req: GetOOMEventRequest,
    ) -> ttrpc::Result<GetOOMEventResponse> {
        not_yet("GetOOMEvent", &req)
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<UpdateInterfaceResponse> {
        not_yet("UpdateInterface", &req)
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<UpdateRoutesResponse> {
        not_yet("UpdateRoutes", &req)
    }

    async fn list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        req: ListInterfacesRequest,
    ) -> ttrpc::Result<ListInterfacesResponse> {
        not_yet("ListInterfaces", &req)
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
mod tests {
    use super::*;

    #[test]
    fn implemented_rpcs_exist_in_the_api() {
        let declared = hull_proto::agent_service_rpc_names();
        for rpc in IMPLEMENTED_RPCS {
            assert!(
                declared.iter().any(|d| d == rpc),
                "{rpc} not in {declared:?}"
            );
        }
    }

    #[test]
    fn not_yet_validates_first() {
        let bad = StartContainerRequest {
            container_id: "../x".into(),
            ..Default::default()
        };
        match not_yet::<()>("StartContainer", &bad) {
            Err(TtrpcError::RpcStatus(s)) => {
                assert_eq!(s.code(), Code::INVALID_ARGUMENT);
                assert!(s.message.contains("StartContainer"), "{}", s.message);
                assert!(s.message.contains("container_id"), "{}", s.message);
            }
            other => panic!("unexpected {other:?}"),
        }
        let good = StartContainerRequest {
            container_id: "c1".into(),
            ..Default::default()
        };
        match not_yet::<()>("StartContainer", &good) {
            Err(TtrpcError::RpcStatus(s)) => {
                assert_eq!(s.code(), Code::UNIMPLEMENTED);
                assert!(s.message.contains("StartContainer"), "{}", s.message);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn context() -> TtrpcContext {
        TtrpcContext {
            mh: ttrpc::MessageHeader::default(),
            metadata: Default::default(),
            timeout_nano: 0,
            connection_data: Default::default(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn power_off_is_signalled_and_health_reports_it() {
        let (api, requested) = AgentApi::new();
        let serving = api.health(&context(), HealthRequest::new()).await.unwrap();
        assert_eq!(
            serving.status.enum_value(),
            Ok(health_response::ServingStatus::SERVING_STATUS_SERVING)
        );
        assert!(!*requested.borrow());

        api.power_off(&context(), PowerOffRequest::new())
            .await
            .unwrap();
        assert!(*requested.borrow());
        let after = api.health(&context(), HealthRequest::new()).await.unwrap();
        assert_eq!(
            after.status.enum_value(),
            Ok(health_response::ServingStatus::SERVING_STATUS_NOT_SERVING)
        );
    }
}
