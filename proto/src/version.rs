//! The API version, well-known ports and the check a host makes on the agent's Version reply.

use crate::agent::VersionResponse;

/// The agent API version this crate describes (see "Versioning" in `protos/agent.proto`).
/// Bumped only on breaking changes.
pub const API_VERSION: u32 = 1;

/// [`API_VERSION`] as a literal the agent binary carries (its `--version` prints it), so that
/// `hull check` can tell which API the agent in a guest image serves without running it: it
/// looks for `(agent API <n>)` in the image's `/init`.
pub const AGENT_API_MARKER: &str = "(agent API 1)";

/// The vsock port the agent serves the ttrpc API on.
pub const AGENT_API_PORT: u32 = 1024;

/// The vsock port on which the agent sends its own log lines to the host (to every connected
/// reader, a few at most; lines logged while nobody reads wait, bounded).
pub const AGENT_LOG_PORT: u32 = 1025;

/// The vsock port on which the agent accepts TCP forwards into the guest: each connection
/// starts with `TCP <port>\n` ([`crate::handshake::tcp_line`]), then carries the bytes of one
/// TCP connection to localhost:<port> in the guest (see "Port forwarding" in
/// `protos/agent.proto`).
pub const PORT_FORWARD_PORT: u32 = 1026;

/// The vsock port of the guest's debug console (`hull console`): open only when the sandbox was
/// created with `CreateSandboxRequest.debug_console`; each connection is a shell on a pty in
/// the guest (the guest image must carry `/bin/sh`), its bytes spliced both ways. No header:
/// the stream is the terminal from the first byte.
pub const DEBUG_CONSOLE_PORT: u32 = 1027;

/// The host vsock port (CID 2) the agent connects to once it serves the API: the connection is
/// the whole message (nothing is sent on it), so a host that listens there learns when to call
/// Version instead of polling the API port while the guest boots. A hint, never trusted: the
/// host still checks the Version reply, and any guest process could connect there too.
pub const AGENT_READY_PORT: u32 = 1028;

/// Most debug console sessions the agent runs at once; one beyond that gets a one-line error
/// and is closed.
pub const MAX_DEBUG_CONSOLES: usize = 4;

/// The first vsock port the agent hands out for process stdio streams.
pub const STDIO_PORT_BASE: u32 = 0x1_0000;

/// Why a host must not talk to an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiVersionError {
    /// The reply has no API version: not a Hull agent, or a broken one.
    #[error("agent {agent_version:?} reported no API version (this host speaks API {host_api})")]
    Missing {
        /// The agent's build version as reported.
        agent_version: String,
        /// [`API_VERSION`].
        host_api: u32,
    },
    /// The agent serves another API version.
    #[error(
        "agent {agent_version} serves API version {agent_api}, this host speaks API {host_api}"
    )]
    Mismatch {
        /// The agent's build version as reported.
        agent_version: String,
        /// The API version the agent serves.
        agent_api: u32,
        /// [`API_VERSION`].
        host_api: u32,
    },
}

/// Checks that the agent that sent `reply` serves exactly this crate's [`API_VERSION`].
pub fn check_api_version(reply: &VersionResponse) -> Result<(), ApiVersionError> {
    match reply.api_version {
        API_VERSION => Ok(()),
        0 => Err(ApiVersionError::Missing {
            agent_version: reply.agent_version.clone(),
            host_api: API_VERSION,
        }),
        other => Err(ApiVersionError::Mismatch {
            agent_version: reply.agent_version.clone(),
            agent_api: other,
            host_api: API_VERSION,
        }),
    }
}

/// The names of every RPC of `AgentService` as declared in `protos/agent.proto` (e.g. "Health").
pub fn agent_service_rpc_names() -> Vec<String> {
    let descriptor = crate::agent::file_descriptor().proto();
    descriptor
        .service
        .iter()
        .filter(|service| service.name() == "AgentService")
        .flat_map(|service| {
            service
                .method
                .iter()
                .map(|method| method.name().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;

    fn reply(api_version: u32) -> VersionResponse {
        VersionResponse {
            agent_version: "9.9.9".to_string(),
            api_version,
            ..Default::default()
        }
    }

    #[test]
    fn the_marker_names_the_api_version() {
        assert_eq!(AGENT_API_MARKER, format!("(agent API {API_VERSION})"));
    }

    #[test]
    fn same_api_version_is_accepted() {
        assert_eq!(check_api_version(&reply(API_VERSION)), Ok(()));
    }

    #[test]
    fn other_api_version_is_refused_with_both_versions_named() {
        let err = check_api_version(&reply(API_VERSION + 1)).unwrap_err();
        assert_eq!(
            err,
            ApiVersionError::Mismatch {
                agent_version: "9.9.9".to_string(),
                agent_api: API_VERSION + 1,
                host_api: API_VERSION
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("API version {}", API_VERSION + 1)),
            "{text}"
        );
    }

    #[test]
    fn missing_api_version_is_refused() {
        assert!(matches!(
            check_api_version(&reply(0)),
            Err(ApiVersionError::Missing { .. })
        ));
    }

    #[test]
    fn version_reply_round_trips_through_the_wire_format() {
        let bytes = reply(API_VERSION).write_to_bytes().unwrap();
        let decoded = VersionResponse::parse_from_bytes(&bytes).unwrap();
        assert_eq!(decoded, reply(API_VERSION));
    }

    #[test]
    fn service_declares_the_whole_product_api() {
        let names = agent_service_rpc_names();
        for expected in [
            "Health",
            "Version",
            "GetGuestDetails",
            "CreateSandbox",
            "CreateContainer",
            "StartContainer",
            "ExecProcess",
            "StartExec",
            "WaitProcess",
            "GetOOMEvent",
            "UpdateRoutes",
            "ListTcpListeners",
            "PowerOff",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
