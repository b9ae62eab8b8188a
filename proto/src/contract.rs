//! The agent API's contract facts that both ends check: the identifier rule, the size limits of
//! request fields, and the guest paths with a fixed meaning. The shim checks what it sends
//! against these, the agent checks what it receives; neither keeps its own copy.

/// Longest sandbox, container or exec id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Largest `CreateContainerRequest.oci_spec_json`.
pub const MAX_OCI_SPEC_BYTES: usize = 1024 * 1024;
/// Largest `ExecProcessRequest.oci_process_json`.
pub const MAX_OCI_PROCESS_BYTES: usize = 256 * 1024;
/// Largest `UpdateContainerRequest.oci_resources_json`.
pub const MAX_OCI_RESOURCES_BYTES: usize = 64 * 1024;

/// Most host connections on the API port the agent serves at once, in every listen mode (in
/// hybrid mode counted after the CONNECT/OK handshake). The shim keeps one for a sandbox's
/// life, `hull` tools open a few more; one beyond the cap is closed at once (hybrid: without an
/// `OK` line).
pub const MAX_API_CONNECTIONS: usize = 32;
/// Most connections whose CONNECT line has not arrived yet; one beyond that is closed at once.
pub const MAX_HANDSHAKING_CONNECTIONS: usize = 64;
/// How long a connection may take to send its CONNECT line.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 5;
/// How long an API connection may stay silent after the handshake (hybrid) or its accept
/// (unix, vsock) before its first request.
/// Once it sent one it stays open for as long as the host keeps it (the shim's connection
/// lives as long as the sandbox).
pub const API_FIRST_REQUEST_TIMEOUT_SECS: u64 = 10;
/// Most readers of the agent's log port at once; one beyond that is closed at once (hybrid:
/// without an `OK` line), so a flood cannot push out the shim's reader. A reader that closes
/// or sends anything (readers only read) frees its place.
pub const MAX_LOG_READERS: usize = 4;
/// Most port forwards running at once; one beyond that is closed at once.
pub const MAX_PORT_FORWARDS: usize = 256;
/// The cgroup (v2) directory under which a host-mode agent puts each container's cgroup
/// (`<cgroup2 root>/hull/<container-id>`); the shim's clean-up after a dead host agent kills
/// what is left there.
pub const HOST_CGROUP_PARENT: &str = "hull";

/// A bind-mount source in a container spec that names the pod's shared `/dev/shm`: a tmpfs the
/// agent mounts at CreateSandbox (`CreateSandboxRequest.shm_size_bytes` > 0) and binds into
/// every container of the pod that asks for it. It is not a path the host knows.
pub const POD_SHM_SOURCE: &str = "/run/hull/pod/shm";

/// The first character of an id that breaks the rule, if any (see [`valid_id`]).
pub fn invalid_id_char(id: &str) -> Option<char> {
    id.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
}

/// Sandbox, container and exec ids: 1..=[`MAX_ID_LEN`] bytes of `[A-Za-z0-9_.-]`, not `.` or
/// `..` (so an id is also safe as one path component).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && invalid_id_char(id).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        assert!(valid_id("c1"));
        assert!(valid_id("a.b_c-D9"));
        assert!(valid_id(&"x".repeat(MAX_ID_LEN)));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert_eq!(invalid_id_char("ab/c"), Some('/'));
    }
}
