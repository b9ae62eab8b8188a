//! The CRI spec → guest spec rewrite (pure: no I/O, so every case is a unit test).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::PodRole;

/// A spec the guest cannot run as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriSpecError {
    /// A pod asked for one of the host's namespaces (hostNetwork, hostIPC, hostPID).
    #[error(
        "linux.namespaces: the pod asks for the host's {kind} namespace ({pod_field}); a Hull pod \
         runs in its own VM and cannot share the host's namespaces: use a runc RuntimeClass for \
         this pod"
    )]
    HostNamespace {
        /// "network", "ipc" or "pid".
        kind: &'static str,
        /// The Kubernetes pod field that asks for it.
        pod_field: &'static str,
    },
    /// A namespace path the guest cannot join.
    #[error(
        "linux.namespaces: {kind} namespace path {path:?} names a host namespace, which a \
         container in a Hull sandbox cannot join"
    )]
    HostNamespacePath {
        /// The namespace type.
        kind: String,
        /// The host path.
        path: PathBuf,
    },
    /// An app container arrived before its pod's sandbox container started.
    #[error(
        "the sandbox container of pod {sandbox_id} is not running in this shim; an app \
         container joins its namespaces"
    )]
    SandboxNotStarted {
        /// The pod's sandbox id.
        sandbox_id: String,
    },
    /// A bind mount with a relative source.
    #[error("mounts[{index}].source {path:?}: a bind source must be an absolute host path")]
    RelativeBindSource {
        /// Index in `mounts`.
        index: usize,
        /// The source.
        path: PathBuf,
    },
}

/// A host file or directory a container binds: the shim mounts it into the shared directory at
/// [`HostBind::shared_path`], where the guest finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Index of the mount in the spec's `mounts` (names it in errors).
    pub index: usize,
    /// The host path.
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: PathBuf,
    /// The spec asks for a read-only bind: the shim's bind in the shared directory is
    /// read-only too, so the guest cannot write through it whatever it does.
    pub read_only: bool,
}

impl HostBind {
    /// The bind's place relative to the shared directory: `<container-id>/mounts/<index>`.
    pub fn shared_path(&self, container_id: &str) -> PathBuf {
        Path::new(container_id)
            .join(MOUNTS_DIR)
            .join(self.index.to_string())
    }
}

/// The directory under `<shared>/<container-id>/` holding the container's host binds.
pub const MOUNTS_DIR: &str = "mounts";

/// A spec rewritten for the guest, and what the host must prepare for it.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The spec to send to the agent.
    pub spec: Spec,
    /// Host paths to bind into the shared directory before CreateContainer.
    pub binds: Vec<HostBind>,
    /// The sandbox container's host `/dev/shm` source that was replaced by the pod's guest
    /// tmpfs (its size sizes the guest's).
    pub host_shm: Option<PathBuf>,
    /// The host network namespace CNI set up for the pod (sandbox container only).
    pub host_netns: Option<PathBuf>,
}

/// Where the pod's guest namespaces come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestPod {
    /// Guest pid of the pod's sandbox container once it started: app containers join its
    /// namespaces.
    pub sandbox_init_pid: Option<u32>,
    /// A guest network namespace the sandbox container joins (a VM's own, where its NICs
    /// are); `None`: a new, empty one.
    pub sandbox_netns: Option<PathBuf>,
}

/// Rewrites `spec` of container `container_id` for the guest.
pub fn to_guest_spec(
    mut spec: Spec,
    container_id: &str,
    role: &PodRole,
    pod: &GuestPod,
) -> Result<GuestSpec, CriSpecError> {
    let host_netns = rewrite_namespaces(&mut spec, role, pod)?;
    let (binds, host_shm) = rewrite_mounts(&mut spec, container_id, role)?;
    Ok(GuestSpec {
        spec,
        binds,
        host_shm,
        host_netns,
    })
}

/// The pod's namespaces as each role needs them; returns the sandbox's host netns path.
fn rewrite_namespaces(
    spec: &mut Spec,
    role: &PodRole,
    pod: &GuestPod,
) -> Result<Option<PathBuf>, CriSpecError> {
    let Some(linux) = spec.linux_mut() else {
        return Ok(None);
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if *role != PodRole::Standalone {
        for (kind, name, pod_field) in [
            (LinuxNamespaceType::Network, "network", "hostNetwork"),
            (LinuxNamespaceType::Ipc, "ipc", "hostIPC"),
            (LinuxNamespaceType::Pid, "pid", "hostPID"),
        ] {
            if !namespaces.iter().any(|ns| ns.typ() == kind) {
                return Err(CriSpecError::HostNamespace {
                    kind: name,
                    pod_field,
                });
            }
        }
    }
    let mut host_netns = None;
    for ns in namespaces.iter_mut() {
        let Some(path) = ns.path().clone() else {
            continue;
        };
        let host_path = || CriSpecError::HostNamespacePath {
            kind: format!("{:?}", ns.typ()).to_lowercase(),
            path: path.clone(),
        };
        match role {
            PodRole::Standalone => return Err(host_path()),
            // The pod's namespaces are the guest's; CNI's netns stays on the host (the
            // network is carried into the VM from there).
            PodRole::Sandbox if ns.typ() == LinuxNamespaceType::Network => {
                host_netns = Some(path.clone());
                ns.set_path(pod.sandbox_netns.clone());
            }
            PodRole::Sandbox => return Err(host_path()),
            PodRole::Container { sandbox_id } => {
                let Some(name) = proc_ns_name(ns.typ()) else {
                    return Err(host_path());
                };
                let pid = pod
                    .sandbox_init_pid
                    .ok_or_else(|| CriSpecError::SandboxNotStarted {
                        sandbox_id: sandbox_id.clone(),
                    })?;
                ns.set_path(Some(PathBuf::from(format!("/proc/{pid}/ns/{name}"))));
            }
        }
    }
    linux.set_namespaces(Some(namespaces));
    Ok(host_netns)
}

/// The `/proc/<pid>/ns/` name of the namespaces a pod shares.
fn proc_ns_name(kind: LinuxNamespaceType) -> Option<&'static str> {
    match kind {
        LinuxNamespaceType::Network => Some("net"),
        LinuxNamespaceType::Ipc => Some("ipc"),
        LinuxNamespaceType::Uts => Some("uts"),
        LinuxNamespaceType::Pid => Some("pid"),
        _ => None,
    }
}

/// Host binds become binds of the shared directory; a pod's `/dev/shm` becomes the pod's
/// guest tmpfs.
fn rewrite_mounts(
    spec: &mut Spec,
    container_id: &str,
    role: &PodRole,
) -> Result<(Vec<HostBind>, Option<PathBuf>), CriSpecError> {
    let mut binds = Vec::new();
    let mut host_shm = None;
    let Some(mounts) = spec.mounts_mut() else {
        return Ok((binds, host_shm));
    };
    for (index, mount) in mounts.iter_mut().enumerate() {
        let options = mount.options().clone().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            continue;
        }
        let Some(source) = mount.source().clone() else {
            continue; // the agent names the missing source
        };
        if !source.is_absolute() {
            return Err(CriSpecError::RelativeBindSource {
                index,
                path: source,
            });
        }
        if *role != PodRole::Standalone && mount.destination() == Path::new("/dev/shm") {
            if *role == PodRole::Sandbox {
                host_shm = Some(source);
            }
            mount.set_source(Some(PathBuf::from(hull_proto::POD_SHM_SOURCE)));
            continue;
        }
        let bind = HostBind {
            index,
            source,
            destination: mount.destination().clone(),
            read_only: options.iter().any(|o| o == "ro"),
        };
        mount.set_source(Some(bind.shared_path(container_id)));
        binds.push(bind);
    }
    Ok((binds, host_shm))
}
