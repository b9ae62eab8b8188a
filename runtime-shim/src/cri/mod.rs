//! What containerd's CRI plugin sends for a Kubernetes pod, turned into what the guest can run.
//!
//! CRI creates one task per container: first the pod's sandbox ("pause") container, then each
//! app container, all with annotations that say which pod they belong to. Their specs name
//! host things that mean nothing inside a VM: namespace paths of host processes, the host's
//! CNI network namespace, the pod's `/dev/shm` on the host, and host files and volumes to bind.
//! [`spec::to_guest_spec`] rewrites a spec so that the guest creates the pod's namespaces with
//! the sandbox container and joins them for app containers, gives the pod one `/dev/shm` tmpfs in
//! the guest, and reaches host files through the shared directory.

pub mod sizing;
pub mod spec;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

/// Annotation naming the kind of container: `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Annotation naming the pod's sandbox id (the sandbox container's id).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a container is in its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// Not a CRI container (`ctr run`): a sandbox of its own.
    Standalone,
    /// The pod's sandbox (pause) container: it creates the VM and the pod's namespaces.
    Sandbox,
    /// An app container of the pod whose sandbox id is given.
    Container {
        /// The pod's sandbox id.
        sandbox_id: String,
    },
}

impl PodRole {
    /// The role the CRI annotations give (an app container without a sandbox id stands alone).
    pub fn from_annotations(annotations: Option<&HashMap<String, String>>) -> PodRole {
        let Some(a) = annotations else {
            return PodRole::Standalone;
        };
        match a.get(CONTAINER_TYPE).map(String::as_str) {
            Some("sandbox") => PodRole::Sandbox,
            Some("container") => match a.get(SANDBOX_ID).filter(|s| !s.is_empty()) {
                Some(id) => PodRole::Container {
                    sandbox_id: id.clone(),
                },
                None => PodRole::Standalone,
            },
            _ => PodRole::Standalone,
        }
    }

    /// The sandbox (shim, VM) that container `container_id` runs in.
    pub fn sandbox_id(&self, container_id: &str) -> String {
        match self {
            PodRole::Container { sandbox_id } => sandbox_id.clone(),
            PodRole::Standalone | PodRole::Sandbox => container_id.to_string(),
        }
    }
}

/// The sandbox id for a container from its spec annotations (see [`PodRole::sandbox_id`]).
pub fn sandbox_id_for(container_id: &str, annotations: Option<&HashMap<String, String>>) -> String {
    PodRole::from_annotations(annotations).sandbox_id(container_id)
}
