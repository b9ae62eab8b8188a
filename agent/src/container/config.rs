//! What the agent tells the set-up helper (`hull-agent __container-setup`) and what the helper
//! and the container process answer, as JSON lines over the control socket (fd 3).

use std::path::PathBuf;

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Serialize};

/// The control socket's fd number in the helper.
pub const CONTROL_FD: i32 = 3;
/// The argument that makes hull-agent run as the set-up helper.
pub const SETUP_HELPER_ARG: &str = "__container-setup";
/// Longest control line accepted (an OCI spec is at most 1 MiB; JSON escaping can grow it).
pub const MAX_CONTROL_LINE: usize = 8 * 1024 * 1024;

/// Create a container: namespaces, rootfs, then wait for [`AgentMessage::Start`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// Container id (for messages).
    pub container_id: String,
    /// Absolute, canonical rootfs directory.
    pub rootfs: PathBuf,
    /// The validated OCI spec; bind sources are already canonical and checked.
    pub spec: Spec,
    /// Whether the process has a terminal on fds 0-2.
    pub terminal: bool,
    /// The terminal's first window size (rows, columns), from the spec's `consoleSize`.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

/// Run an extra process in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    /// Container id (for messages).
    pub container_id: String,
    /// Pid of the container's init process (its namespaces are joined).
    pub init_pid: i32,
    /// The process to run.
    pub process: Process,
    /// Whether the process has a terminal on fds 0-2.
    pub terminal: bool,
    /// The terminal's first window size (rows, columns), from the process's `consoleSize`.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// The container's seccomp profile, applied to the exec as well.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// The first line the agent sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupRequest {
    /// Create a container.
    Init(Box<InitConfig>),
    /// Exec into one.
    Exec(Box<ExecConfig>),
}

/// Agent -> helper/container messages after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// The uid/gid maps of the new user namespace are written.
    IdMapsDone,
    /// Run the container process.
    Start,
    /// The agent has its copy of the pty master ([`SetupMessage::PtyMaster`]).
    PtyTaken,
}

/// Helper/container -> agent messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupMessage {
    /// The helper unshared a user namespace; the agent must write its uid/gid maps.
    NeedIdMaps,
    /// The container process exists, with this pid (in the agent's pid namespace).
    Pid(i32),
    /// The container is set up and waits for Start.
    Ready,
    /// The process opened its terminal in the container's own devpts (so that the container
    /// sees its tty), with the master at this fd number in the process; the agent takes a copy
    /// (pidfd_getfd) and answers [`AgentMessage::PtyTaken`].
    PtyMaster(i32),
    /// Set-up failed; the process exits.
    Error(String),
}
