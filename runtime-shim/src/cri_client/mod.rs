//! A small blocking CRI v1 client: the `k8s-cri` crate's gRPC client over containerd's Unix
//! socket, as kubelet talks to it. `hull bench` starts pods through it (its `pod` and `network`
//! groups); the CRI tests and the lab's pod scenario drive containerd with it. Every call has a
//! deadline, so a runtime that hangs gives an error instead of a stall; nothing here panics on
//! what containerd answers.
//!
//! - [`configs`]: pod and container configs as kubelet sends them

pub mod configs;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use configs::{container_config, image, mount, pod_config, short};

/// How long one CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed CRI call: the gRPC code and containerd's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CriError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// containerd's message.
    pub message: String,
}

impl CriError {
    fn new(code: tonic::Code, message: String) -> CriError {
        CriError { code, message }
    }
}

impl From<tonic::Status> for CriError {
    fn from(s: tonic::Status) -> Self {
        CriError::new(s.code(), s.message().to_string())
    }
}

/// The result of a CRI call.
pub type CriResult<T> = Result<T, CriError>;

/// What ExecSync returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The exit code.
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// The client: a tokio runtime of its own and the two CRI services on one channel. Usable from
/// many threads at once.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    ids: Arc<Mutex<BTreeSet<String>>>,
}

impl Cri {
    /// Connects to the CRI socket `sock` (containerd's own socket serves CRI too).
    pub fn connect(sock: &Path) -> CriResult<Cri> {
        let unavailable = |what: String| CriError::new(tonic::Code::Unavailable, what);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("starting the CRI client's runtime: {e}")))?;
        let path = sock.to_path_buf();
        let channel = rt
            .block_on(
                // The URI is required by the API but unused: the connector dials the socket.
                Endpoint::from_static("http://[::1]:50051")
                    .timeout(CALL_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    })),
            )
            .map_err(|e| unavailable(format!("connecting to CRI at {}: {e}", sock.display())))?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            ids: Arc::default(),
        })
    }

    /// Records the ids of the pods and containers this client creates into `ids` as well.
    pub fn tracking(mut self, ids: Arc<Mutex<BTreeSet<String>>>) -> Cri {
        self.ids = ids;
        self
    }

    fn call<T, F>(&self, what: &str, fut: F) -> CriResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), fut).await {
                Ok(r) => r.map(tonic::Response::into_inner).map_err(CriError::from),
                Err(_) => Err(CriError::new(
                    tonic::Code::DeadlineExceeded,
                    format!("{what}: no answer in {CALL_TIMEOUT:?}"),
                )),
            }
        })
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn record(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// The runtime's name and version (`Version`).
    pub fn version(&self) -> CriResult<api::VersionResponse> {
        self.call(
            "Version",
            self.rs().version(api::VersionRequest {
                version: "v1".into(),
            }),
        )
    }

    /// Whether the runtime says its network is ready (`Status`).
    pub fn network_ready(&self) -> CriResult<bool> {
        let status = self.call(
            "Status",
            self.rs().status(api::StatusRequest { verbose: false }),
        )?;
        Ok(status.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        }))
    }

    /// Whether CRI knows the image `reference`.
    pub fn image_present(&self, reference: &str) -> CriResult<bool> {
        let resp = self.call(
            "ImageStatus",
            self.images.clone().image_status(api::ImageStatusRequest {
                image: Some(image(reference)),
                verbose: false,
            }),
        )?;
        Ok(resp.image.is_some())
    }

    /// RunPodSandbox with this runtime handler; the pod's id.
    pub fn run_pod(&self, config: &api::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let resp = self.call(
            "RunPodSandbox",
            self.rs().run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            }),
        )?;
        self.record(&resp.pod_sandbox_id);
        Ok(resp.pod_sandbox_id)
    }

    /// PortForward: the URL of containerd's streaming server for the pod's `ports`.
    pub fn port_forward(&self, pod: &str, ports: &[i32]) -> CriResult<String> {
        let resp = self.call(
            "PortForward",
            self.rs().port_forward(api::PortForwardRequest {
                pod_sandbox_id: pod.to_string(),
                port: ports.to_vec(),
            }),
        )?;
        Ok(resp.url)
    }

    /// PodSandboxStatus.
    pub fn pod_status(&self, id: &str) -> CriResult<api::PodSandboxStatus> {
        let resp = self.call(
            "PodSandboxStatus",
            self.rs().pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            }),
        )?;
        resp.status.ok_or_else(|| {
            CriError::new(
                tonic::Code::Internal,
                format!("PodSandboxStatus of {} came without a status", short(id)),
            )
        })
    }

    /// The pod's IPv4 address (PodSandboxStatus), if the network gave it one.
    pub fn pod_ipv4(&self, id: &str) -> CriResult<Option<String>> {
        let network = self.pod_status(id)?.network;
        let ips = network
            .map(|n| {
                std::iter::once(n.ip)
                    .chain(n.additional_ips.into_iter().map(|i| i.ip))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok(ips.into_iter().find(|ip| ip.contains('.')))
    }

    /// StopPodSandbox.
    pub fn stop_pod(&self, id: &str) -> CriResult<()> {
        self.call(
            "StopPodSandbox",
            self.rs().stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    /// RemovePodSandbox.
    pub fn remove_pod(&self, id: &str) -> CriResult<()> {
        self.call(
            "RemovePodSandbox",
            self.rs().remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    /// The ids of all pods.
    pub fn list_pods(&self) -> CriResult<Vec<String>> {
        let resp = self.call(
            "ListPodSandbox",
            self.rs()
                .list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
        )?;
        Ok(resp.items.into_iter().map(|p| p.id).collect())
    }

    /// CreateContainer in pod `pod` (whose config was `pod_config`); the container's id. A
    /// container config without namespace options gets the pod's, as kubelet sends them.
    pub fn create_container(
        &self,
        pod: &str,
        config: &api::ContainerConfig,
        pod_config: &api::PodSandboxConfig,
    ) -> CriResult<String> {
        let mut config = config.clone();
        let pod_ns = pod_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let security = config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        if security.namespace_options.is_none() {
            security.namespace_options = pod_ns;
        }
        let resp = self.call(
            "CreateContainer",
            self.rs().create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            }),
        )?;
        self.record(&resp.container_id);
        Ok(resp.container_id)
    }

    /// StartContainer.
    pub fn start(&self, id: &str) -> CriResult<()> {
        self.call(
            "StartContainer",
            self.rs().start_container(api::StartContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    /// CreateContainer then StartContainer; the container's id.
    pub fn create_and_start(
        &self,
        pod: &str,
        config: &api::ContainerConfig,
        pod_config: &api::PodSandboxConfig,
    ) -> CriResult<String> {
        let id = self.create_container(pod, config, pod_config)?;
        self.start(&id)?;
        Ok(id)
    }

    /// StopContainer with a grace period of `timeout_secs` (then SIGKILL).
    pub fn stop(&self, id: &str, timeout_secs: i64) -> CriResult<()> {
        self.call(
            "StopContainer",
            self.rs().stop_container(api::StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_secs,
            }),
        )
        .map(drop)
    }

    /// RemoveContainer.
    pub fn remove(&self, id: &str) -> CriResult<()> {
        self.call(
            "RemoveContainer",
            self.rs().remove_container(api::RemoveContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    /// ContainerStatus.
    pub fn status(&self, id: &str) -> CriResult<api::ContainerStatus> {
        Ok(self.status_verbose(id, false)?.0)
    }

    /// ContainerStatus with containerd's verbose info (JSON, includes the OCI spec it sent).
    pub fn status_verbose(
        &self,
        id: &str,
        verbose: bool,
    ) -> CriResult<(api::ContainerStatus, HashMap<String, String>)> {
        let resp = self.call(
            "ContainerStatus",
            self.rs().container_status(api::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose,
            }),
        )?;
        let status = resp.status.ok_or_else(|| {
            CriError::new(
                tonic::Code::Internal,
                format!("ContainerStatus of {} came without a status", short(id)),
            )
        })?;
        Ok((status, resp.info))
    }

    /// The ids of all containers.
    pub fn list_containers(&self) -> CriResult<Vec<String>> {
        let resp = self.call(
            "ListContainers",
            self.rs()
                .list_containers(api::ListContainersRequest { filter: None }),
        )?;
        Ok(resp.containers.into_iter().map(|c| c.id).collect())
    }

    /// ExecSync of `cmd` in container `id` with a timeout (0: none).
    pub fn exec_sync_timeout(&self, id: &str, cmd: &[&str], timeout_secs: i64) -> CriResult<Exec> {
        let resp = self.call(
            "ExecSync",
            self.rs().exec_sync(api::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_secs,
            }),
        )?;
        Ok(Exec {
            code: resp.exit_code,
            stdout: String::from_utf8_lossy(&resp.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&resp.stderr).into_owned(),
        })
    }

    /// ExecSync with a 30 s timeout.
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> CriResult<Exec> {
        self.exec_sync_timeout(id, cmd, 30)
    }

    /// ReopenContainerLog.
    pub fn reopen_log(&self, id: &str) -> CriResult<()> {
        self.call(
            "ReopenContainerLog",
            self.rs()
                .reopen_container_log(api::ReopenContainerLogRequest {
                    container_id: id.to_string(),
                }),
        )
        .map(drop)
    }

    /// Stops and removes pod `pod` with everything in it (StopPodSandbox, RemovePodSandbox).
    pub fn stop_remove_pod(&self, pod: &str) -> CriResult<()> {
        self.stop_pod(pod)?;
        self.remove_pod(pod)
    }

    /// Stops and removes every pod and container (what a run left after a failure).
    pub fn remove_everything(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for id in self.list_containers().unwrap_or_default() {
            if let Err(e) = self.remove(&id) {
                errors.push(format!("RemoveContainer {}: {e}", short(&id)));
            }
        }
        for id in self.list_pods().unwrap_or_default() {
            if let Err(e) = self.stop_pod(&id) {
                errors.push(format!("StopPodSandbox {}: {e}", short(&id)));
            }
            if let Err(e) = self.remove_pod(&id) {
                errors.push(format!("RemovePodSandbox {}: {e}", short(&id)));
            }
        }
        errors
    }
}
