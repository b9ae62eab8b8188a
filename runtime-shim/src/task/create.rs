//! Create: the spec turned into the guest's (see [`crate::cri`]), the sandbox started if this
//! is its first container, the rootfs and host binds mounted under the shared directory,
//! CreateContainer, then the stdio streams connected. Nothing here holds the state lock.

use std::path::Path;

use containerd_shim_protos::api;
use oci_spec::runtime::Spec;
use ttrpc::{Code, Error as TtrpcError};

use super::{record_sandbox_dir, status_error, Container, HullTask, Process};
use crate::config::SandboxMode;
use crate::cri::spec::{to_guest_spec, GuestPod, GuestSpec};
use crate::cri::{sizing, PodRole};
use crate::mounts::{self, MountSpec, ParsedMount};
use crate::sandbox::cleanup::remove_container_dir;
use crate::sandbox::{
    hostname_for, SandboxPaths, SandboxRequest, DEFAULT_POD_SHM_BYTES, GUEST_ROOT_NETNS,
};
use crate::shared_dir::{SharedDir, TargetKind};
use crate::stdio::StdioPaths;

/// What a Create needs once the request is checked and the id reserved.
pub(super) struct Prepared {
    pub id: String,
    pub sandbox_id: String,
    pub role: PodRole,
    pub spec: Spec,
    pub rootfs: ParsedMount,
    pub stdio: StdioPaths,
}

/// Checks the request and reads the bundle: the container id, its sandbox, its spec and rootfs.
pub(super) fn prepare(req: &api::CreateTaskRequest) -> Result<Prepared, TtrpcError> {
    let id = req.id.clone();
    if !hull_proto::valid_id(&id) {
        return Err(status_error(
            Code::INVALID_ARGUMENT,
            format!("bad container id {id:?}"),
        ));
    }
    if !req.checkpoint.is_empty() {
        return Err(status_error(
            Code::UNIMPLEMENTED,
            "checkpoint/restore is not supported",
        ));
    }
    let bundle = Path::new(&req.bundle);
    let spec = super::read_bundle_spec(bundle)?;
    let role = PodRole::from_annotations(spec.annotations().as_ref());
    let sandbox_id = role.sandbox_id(&id);
    if !hull_proto::valid_id(&sandbox_id) {
        return Err(status_error(
            Code::INVALID_ARGUMENT,
            format!("bad sandbox id {sandbox_id:?}"),
        ));
    }
    let specs: Vec<MountSpec> = req
        .rootfs
        .iter()
        .map(|m| MountSpec {
            fs_type: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect();
    let root_path = spec.root().as_ref().map(|r| r.path().clone());
    let rootfs = mounts::rootfs_mount(&specs, bundle, root_path.as_deref())
        .map_err(|e| status_error(Code::INVALID_ARGUMENT, e.to_string()))?;
    Ok(Prepared {
        id,
        sandbox_id,
        role,
        spec,
        rootfs,
        stdio: StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        },
    })
}

/// The sandbox a pod's first container asks for: the VM sized from the pod, the pod's
/// /dev/shm sized as the host's, the pod's hostname.
fn sandbox_request(hull: &HullTask, prepared: &Prepared, guest: &GuestSpec) -> SandboxRequest {
    let policy = hull.config.sizing_policy();
    let size = match prepared.role {
        PodRole::Sandbox => sizing::vm_size(&policy, prepared.spec.annotations().as_ref()),
        _ => policy.floor,
    };
    let shm_size_bytes = match &guest.host_shm {
        Some(host) => host_tmpfs_size(host).unwrap_or(DEFAULT_POD_SHM_BYTES),
        None if prepared.role == PodRole::Standalone => 0,
        None => DEFAULT_POD_SHM_BYTES,
    };
    let hostname = prepared
        .spec
        .hostname()
        .clone()
        .filter(|h| !h.is_empty() && hostname_for(h) == *h)
        .unwrap_or_else(|| hostname_for(&prepared.sandbox_id));
    SandboxRequest {
        size,
        shm_size_bytes,
        hostname,
        host_netns: guest.host_netns.clone(),
    }
}

/// The size of the tmpfs at `path` (containerd mounts each pod's shm with its size).
fn host_tmpfs_size(path: &Path) -> Option<u64> {
    let fs = nix::sys::statfs::statfs(path).ok()?;
    let size = (fs.blocks() as u64).saturating_mul(fs.block_size() as u64);
    (size > 0).then_some(size)
}

impl HullTask {
    /// Creates the reserved container `prepared.id`: returns it ready to insert.
    pub(super) async fn create_reserved(
        &self,
        prepared: Prepared,
        bundle: &str,
        sandbox_init_pid: Option<u32>,
    ) -> Result<Container, TtrpcError> {
        let pod = GuestPod {
            sandbox_init_pid,
            sandbox_netns: (self.config.sandbox.mode == SandboxMode::Vm)
                .then(|| GUEST_ROOT_NETNS.into()),
        };
        let guest = to_guest_spec(prepared.spec.clone(), &prepared.id, &prepared.role, &pod)
            .map_err(|e| status_error(Code::INVALID_ARGUMENT, e.to_string()))?;
        let request = sandbox_request(self, &prepared, &guest);
        let sandbox = self.ensure_sandbox(&prepared.sandbox_id, request).await?;
        record_sandbox_dir(Path::new(bundle), &sandbox.paths.dir);
        let shared = sandbox
            .shared_dir()
            .map_err(|e| status_error(Code::INTERNAL, e.to_string()))?;
        let id = &prepared.id;
        let created = async {
            mount_container_files(&shared, id, &prepared.rootfs, &guest)?;
            let spec_json = serde_json::to_vec(&guest.spec)
                .map_err(|e| status_error(Code::INTERNAL, format!("encoding the spec: {e}")))?;
            if spec_json.len() > hull_proto::contract::MAX_OCI_SPEC_BYTES {
                return Err(status_error(
                    Code::INVALID_ARGUMENT,
                    "the container spec is larger than 1 MiB",
                ));
            }
            let rootfs_path = SandboxPaths::rootfs_rel(id).to_string_lossy().into_owned();
            let ports = sandbox
                .agent()
                .create_container(id, spec_json, rootfs_path, prepared.stdio.request())
                .await?;
            Self::connect_stdio(&sandbox, &prepared.stdio, &ports).await
        }
        .await;
        match created {
            Ok(io) => Ok(Container {
                bundle: bundle.to_string(),
                role: prepared.role.clone(),
                init: Process::new(id, "", prepared.stdio.clone(), io),
                execs: Default::default(),
            }),
            Err(e) => {
                if !sandbox.is_dead() {
                    // The agent may have created it before the stdio failed.
                    let _ = sandbox.agent().remove_container(id, 0).await;
                }
                remove_container_dir(&shared, id);
                Err(e)
            }
        }
    }
}

/// Mounts the rootfs at `<id>/rootfs` and each host bind at `<id>/mounts/<n>` of the shared
/// directory. A bind source that does not exist is INVALID_ARGUMENT naming the mount.
fn mount_container_files(
    shared: &SharedDir,
    id: &str,
    rootfs: &ParsedMount,
    guest: &GuestSpec,
) -> Result<(), TtrpcError> {
    shared
        .mount(rootfs, &SandboxPaths::rootfs_rel(id), TargetKind::Dir)
        .map_err(|e| status_error(Code::INTERNAL, format!("mounting the rootfs: {e}")))?;
    for bind in &guest.binds {
        let kind = match std::fs::metadata(&bind.source) {
            Ok(m) if m.is_dir() => TargetKind::Dir,
            Ok(_) => TargetKind::File,
            Err(e) => {
                return Err(status_error(
                    Code::INVALID_ARGUMENT,
                    format!(
                        "mounts[{}] ({}): source {}: {e}",
                        bind.index,
                        bind.destination.display(),
                        bind.source.display()
                    ),
                ))
            }
        };
        shared
            .bind(&bind.source, &bind.shared_path(id), kind, bind.read_only)
            .map_err(|e| {
                status_error(
                    Code::INTERNAL,
                    format!(
                        "mounts[{}] ({}): {e}",
                        bind.index,
                        bind.destination.display()
                    ),
                )
            })?;
    }
    Ok(())
}
