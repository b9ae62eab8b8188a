//! The typed agent client: one method per agent RPC the shim makes, each with its deadline,
//! one place that maps ttrpc errors to what containerd should see, and the checks on what the
//! agent replies (the guest is hostile: a reply is bounded and validated before use).

use std::time::Duration;

use hull_proto::agent::{
    CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest, ExecProcessRequest,
    GetOOMEventRequest, GetOOMEventResponse, GuestDetailsRequest, GuestDetailsResponse,
    ListProcessesRequest, ListProcessesResponse, ListTcpListenersRequest, ListTcpListenersResponse,
    PauseContainerRequest, RemoveContainerRequest, RemoveProcessRequest, ResumeContainerRequest,
    SignalProcessRequest, StartContainerRequest, StartExecRequest, StatsContainerRequest,
    StdioPorts, StdioRequest, TtyWinResizeRequest, UpdateContainerRequest, UpdateInterfaceRequest,
    UpdateRoutesRequest, VersionRequest, VersionResponse, WaitProcessRequest,
};
use hull_proto::agent_ttrpc::AgentServiceClient;
use hull_proto::network::{Interface, Route};
use hull_proto::stats::ContainerStats;
use ttrpc::context::Context;
use ttrpc::{Code, Error as TtrpcError};

#[cfg(test)]
mod tests;

/// Deadline of short agent calls.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most process ids taken from one ListProcesses reply.
pub const MAX_LISTED_PROCESSES: usize = 65536;
/// Most ports a ListTcpListeners reply may carry (the agent's own bound).
pub const MAX_TCP_LISTENERS: usize = 1024;
/// Deadline of ListTcpListeners (polled every second by the port forwarder).
pub const LIST_TCP_LISTENERS_TIMEOUT: Duration = Duration::from_secs(5);

/// An agent call that failed.
#[derive(Debug, thiserror::Error)]
#[error("agent {call}: {source}")]
pub struct AgentError {
    /// The RPC.
    pub call: &'static str,
    /// What ttrpc said (an agent status, or a transport error).
    pub source: TtrpcError,
}

impl AgentError {
    /// The error for containerd: the agent's status passes through with its code (the codes are
    /// meaningful: NOT_FOUND, FAILED_PRECONDITION, ...), prefixed with the call; a transport
    /// error becomes UNAVAILABLE.
    pub fn to_status(&self) -> TtrpcError {
        match &self.source {
            TtrpcError::RpcStatus(s) => {
                let mut s = s.clone();
                s.message = format!("agent {}: {}", self.call, s.message);
                TtrpcError::RpcStatus(s)
            }
            other => TtrpcError::RpcStatus(ttrpc::get_status(
                Code::UNAVAILABLE,
                format!("agent {}: {other}", self.call),
            )),
        }
    }

    /// The agent's status code, if it answered with one.
    pub fn code(&self) -> Option<Code> {
        match &self.source {
            TtrpcError::RpcStatus(s) => Some(s.code()),
            _ => None,
        }
    }
}

impl From<AgentError> for TtrpcError {
    fn from(e: AgentError) -> TtrpcError {
        e.to_status()
    }
}

/// A reply the agent must not send.
fn bad_reply(call: &'static str, what: String) -> AgentError {
    AgentError {
        call,
        source: TtrpcError::RpcStatus(ttrpc::get_status(
            Code::INTERNAL,
            format!("bad reply: {what}"),
        )),
    }
}

fn short() -> Context {
    ttrpc::context::with_timeout(AGENT_CALL_TIMEOUT.as_nanos() as i64)
}

fn within(timeout: Duration) -> Context {
    ttrpc::context::with_timeout(timeout.as_nanos() as i64)
}

/// A connection to one sandbox's agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: AgentServiceClient,
}

/// Runs one call and names it in the error.
macro_rules! call {
    ($self:ident, $rpc:literal, $method:ident, $ctx:expr, $req:expr) => {
        $self
            .inner
            .$method($ctx, &$req)
            .await
            .map_err(|source| AgentError { call: $rpc, source })
    };
}

impl AgentClient {
    /// Wraps a ttrpc client connected to the agent's API port.
    pub fn new(inner: AgentServiceClient) -> AgentClient {
        AgentClient { inner }
    }

    /// Version (first call on a connection; the caller checks the API version).
    pub async fn version(&self, timeout: Duration) -> Result<VersionResponse, AgentError> {
        call!(
            self,
            "Version",
            version,
            within(timeout),
            VersionRequest::default()
        )
    }

    /// GetGuestDetails (kernel, memory, CPUs, what the agent implements).
    pub async fn guest_details(&self) -> Result<GuestDetailsResponse, AgentError> {
        call!(
            self,
            "GetGuestDetails",
            get_guest_details,
            short(),
            GuestDetailsRequest::default()
        )
    }

    /// CreateSandbox.
    pub async fn create_sandbox(&self, req: &CreateSandboxRequest) -> Result<(), AgentError> {
        call!(self, "CreateSandbox", create_sandbox, short(), *req).map(drop)
    }

    /// DestroySandbox, with its own (short) deadline.
    pub async fn destroy_sandbox(
        &self,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let req = DestroySandboxRequest {
            sandbox_id: sandbox_id.into(),
            ..Default::default()
        };
        call!(
            self,
            "DestroySandbox",
            destroy_sandbox,
            within(timeout),
            req
        )
        .map(drop)
    }

    /// CreateContainer; returns the stdio ports to connect.
    pub async fn create_container(
        &self,
        container_id: &str,
        oci_spec_json: Vec<u8>,
        rootfs_path: String,
        stdio: StdioRequest,
    ) -> Result<StdioPorts, AgentError> {
        let req = CreateContainerRequest {
            container_id: container_id.into(),
            oci_spec_json,
            rootfs_path,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        let reply = call!(self, "CreateContainer", create_container, short(), req)?;
        Ok(reply.stdio_ports.unwrap_or_default())
    }

    /// StartContainer; returns the init's guest pid.
    pub async fn start_container(&self, container_id: &str) -> Result<u32, AgentError> {
        let req = StartContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        let reply = call!(self, "StartContainer", start_container, short(), req)?;
        check_guest_pid("StartContainer", reply.pid)
    }

    /// RemoveContainer (SIGTERM, then SIGKILL after `stop_timeout_ms` if it still runs).
    pub async fn remove_container(
        &self,
        container_id: &str,
        stop_timeout_ms: u32,
    ) -> Result<(), AgentError> {
        let req = RemoveContainerRequest {
            container_id: container_id.into(),
            stop_timeout_ms,
            ..Default::default()
        };
        call!(self, "RemoveContainer", remove_container, short(), req).map(drop)
    }

    /// ExecProcess; returns the stdio ports to connect.
    pub async fn exec_process(
        &self,
        container_id: &str,
        exec_id: &str,
        oci_process_json: Vec<u8>,
        stdio: StdioRequest,
    ) -> Result<StdioPorts, AgentError> {
        let req = ExecProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            oci_process_json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        let reply = call!(self, "ExecProcess", exec_process, short(), req)?;
        Ok(reply.stdio_ports.unwrap_or_default())
    }

    /// StartExec; returns the exec's guest pid.
    pub async fn start_exec(&self, container_id: &str, exec_id: &str) -> Result<u32, AgentError> {
        let req = StartExecRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let reply = call!(self, "StartExec", start_exec, short(), req)?;
        check_guest_pid("StartExec", reply.pid)
    }

    /// RemoveProcess (forget an exited exec).
    pub async fn remove_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<(), AgentError> {
        let req = RemoveProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        call!(self, "RemoveProcess", remove_process, short(), req).map(drop)
    }

    /// SignalProcess.
    pub async fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentError> {
        let req = SignalProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        };
        call!(self, "SignalProcess", signal_process, short(), req).map(drop)
    }

    /// WaitProcess (no deadline: it returns when the process exited and its output is out).
    /// Returns the exit status and the exit time.
    pub async fn wait_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<crate::exit::ExitRecord, AgentError> {
        let req = WaitProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let reply = call!(self, "WaitProcess", wait_process, Context::default(), req)?;
        Ok(crate::exit::exit_record_from_agent(
            reply.exit_status,
            reply.exited_at.as_ref(),
        ))
    }

    /// ListProcesses: the guest pids (at most [`MAX_LISTED_PROCESSES`]).
    pub async fn list_processes(&self, container_id: &str) -> Result<Vec<u32>, AgentError> {
        let req = ListProcessesRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        let reply = call!(self, "ListProcesses", list_processes, short(), req)?;
        Ok(listed_pids(&reply))
    }

    /// StatsContainer.
    pub async fn stats_container(&self, container_id: &str) -> Result<ContainerStats, AgentError> {
        let req = StatsContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        let reply = call!(self, "StatsContainer", stats_container, short(), req)?;
        Ok(reply.stats.unwrap_or_default())
    }

    /// PauseContainer.
    pub async fn pause_container(&self, container_id: &str) -> Result<(), AgentError> {
        let req = PauseContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        call!(self, "PauseContainer", pause_container, short(), req).map(drop)
    }

    /// ResumeContainer.
    pub async fn resume_container(&self, container_id: &str) -> Result<(), AgentError> {
        let req = ResumeContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        call!(self, "ResumeContainer", resume_container, short(), req).map(drop)
    }

    /// UpdateContainer with an OCI `linux.resources` JSON object.
    pub async fn update_container(
        &self,
        container_id: &str,
        oci_resources_json: Vec<u8>,
    ) -> Result<(), AgentError> {
        let req = UpdateContainerRequest {
            container_id: container_id.into(),
            oci_resources_json,
            ..Default::default()
        };
        call!(self, "UpdateContainer", update_container, short(), req).map(drop)
    }

    /// TtyWinResize.
    pub async fn tty_win_resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), AgentError> {
        let req = TtyWinResizeRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            rows,
            columns,
            ..Default::default()
        };
        call!(self, "TtyWinResize", tty_win_resize, short(), req).map(drop)
    }

    /// UpdateInterface: configures the guest NIC with `interface.hw_address` as `interface`.
    pub async fn update_interface(&self, interface: Interface) -> Result<Interface, AgentError> {
        let req = UpdateInterfaceRequest {
            interface: Some(interface).into(),
            ..Default::default()
        };
        let reply = call!(self, "UpdateInterface", update_interface, short(), req)?;
        Ok(reply.interface.unwrap_or_default())
    }

    /// UpdateRoutes: the routes of the interfaces they name.
    pub async fn update_routes(&self, routes: Vec<Route>) -> Result<(), AgentError> {
        let req = UpdateRoutesRequest {
            routes,
            ..Default::default()
        };
        call!(self, "UpdateRoutes", update_routes, short(), req).map(drop)
    }

    /// ListTcpListeners: the guest's TCP ports listening on a wildcard or loopback address,
    /// ascending and unique. A reply with more than [`MAX_TCP_LISTENERS`] ports or a port
    /// outside 1..=65535 is refused.
    pub async fn list_tcp_listeners(&self) -> Result<Vec<u16>, AgentError> {
        let reply = call!(
            self,
            "ListTcpListeners",
            list_tcp_listeners,
            within(LIST_TCP_LISTENERS_TIMEOUT),
            ListTcpListenersRequest::default()
        )?;
        check_listener_ports(&reply.ports)
    }

    /// GetOOMEvent (long poll, no deadline): the id of the next OOM-killed container.
    pub async fn get_oom_event(&self) -> Result<String, AgentError> {
        let reply = call!(
            self,
            "GetOOMEvent",
            get_oom_event,
            Context::default(),
            GetOOMEventRequest::default()
        )?;
        check_oom_event(reply)
    }
}

/// The pids of a ListProcesses reply (at most [`MAX_LISTED_PROCESSES`]).
fn listed_pids(reply: &ListProcessesResponse) -> Vec<u32> {
    reply
        .processes
        .iter()
        .take(MAX_LISTED_PROCESSES)
        .map(|p| p.pid)
        .collect()
}

/// The container id of a GetOOMEvent reply, which must be a valid id.
fn check_oom_event(reply: GetOOMEventResponse) -> Result<String, AgentError> {
    if !hull_proto::valid_id(&reply.container_id) {
        return Err(bad_reply(
            "GetOOMEvent",
            format!("container id {:?}", truncated(&reply.container_id)),
        ));
    }
    Ok(reply.container_id)
}

/// Entry points for the fuzz targets in `fuzz/` (not an API): the checks applied to agent
/// replies, callable without a connection.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use hull_proto::agent::{StartContainerResponse, StartExecResponse};

    pub fn start_container(reply: &StartContainerResponse) -> Result<u32, AgentError> {
        check_guest_pid("StartContainer", reply.pid)
    }

    pub fn start_exec(reply: &StartExecResponse) -> Result<u32, AgentError> {
        check_guest_pid("StartExec", reply.pid)
    }

    pub fn list_processes(reply: &ListProcessesResponse) -> Vec<u32> {
        listed_pids(reply)
    }

    pub fn list_tcp_listeners(reply: &ListTcpListenersResponse) -> Result<Vec<u16>, AgentError> {
        check_listener_ports(&reply.ports)
    }

    pub fn get_oom_event(reply: GetOOMEventResponse) -> Result<String, AgentError> {
        check_oom_event(reply)
    }
}

/// The ports of a ListTcpListeners reply: at most [`MAX_TCP_LISTENERS`], each 1..=65535;
/// returned sorted and deduplicated.
fn check_listener_ports(ports: &[u32]) -> Result<Vec<u16>, AgentError> {
    const CALL: &str = "ListTcpListeners";
    if ports.len() > MAX_TCP_LISTENERS {
        return Err(bad_reply(CALL, format!("{} ports", ports.len())));
    }
    let mut checked = ports
        .iter()
        .map(|&port| match u16::try_from(port) {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(bad_reply(CALL, format!("port {port}"))),
        })
        .collect::<Result<Vec<u16>, AgentError>>()?;
    checked.sort_unstable();
    checked.dedup();
    Ok(checked)
}

/// A guest pid must be a pid (1..=4194304, Linux's PID_MAX_LIMIT).
fn check_guest_pid(call: &'static str, pid: u32) -> Result<u32, AgentError> {
    if (1..=4_194_304).contains(&pid) {
        Ok(pid)
    } else {
        Err(bad_reply(call, format!("pid {pid}")))
    }
}

/// The first 64 characters of a hostile string, for a log line.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}
