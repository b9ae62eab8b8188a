//! Hull's agent API: protobuf messages and async ttrpc bindings generated from `protos/`
//! (package `hull.agent.v1`, service `AgentService`), the API version check, and the host-side
//! hybrid-vsock client the shim uses to reach the agent through hull-vmm.
//!
//! Read `protos/agent.proto` for the contract: versioning, errors, identifiers and the design
//! of process stdio streams.

/// The generated modules (`agent`, `network`, `stats`, `agent_ttrpc`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/api_modules.rs"));
}

pub mod client;
pub mod contract;
pub mod handshake;
mod version;

pub use contract::{valid_id, POD_SHM_SOURCE};
pub use generated::{agent, agent_ttrpc, network, stats};
pub use version::{
    agent_service_rpc_names, check_api_version, ApiVersionError, AGENT_API_MARKER, AGENT_API_PORT,
    AGENT_LOG_PORT, AGENT_READY_PORT, API_VERSION, DEBUG_CONSOLE_PORT, MAX_DEBUG_CONSOLES,
    PORT_FORWARD_PORT, STDIO_PORT_BASE,
};
