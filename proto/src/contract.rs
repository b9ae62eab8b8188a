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
