//! A small blocking CRI v1 client (the `k8s-cri` crate's gRPC client over containerd's Unix
//! socket, as kubelet talks to it), with builders for the pod and container configs the tests
//! use. Every call has a deadline, so a runtime that hangs fails the test instead of stalling it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed CRI call: the gRPC code and containerd's message.
#[derive(Debug, Clone)]
pub struct CriError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// containerd's message.
    pub message: String,
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<tonic::Status> for CriError {
    fn from(s: tonic::Status) -> Self {
        CriError {
            code: s.code(),
            message: s.message().to_string(),
        }
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
    /// Connects to the CRI socket `sock`; pod and container ids created go into `ids`.
    pub fn connect(sock: &Path, ids: Arc<Mutex<BTreeSet<String>>>) -> Cri {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
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
            .unwrap_or_else(|e| panic!("connecting to CRI at {}: {e}", sock.display()));
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            ids,
        }
    }

    fn call<T, F>(&self, what: &str, fut: F) -> CriResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), fut).await {
                Ok(r) => r.map(tonic::Response::into_inner).map_err(CriError::from),
                Err(_) => Err(CriError {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("{what}: no answer in {CALL_TIMEOUT:?}"),
                }),
            }
        })
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn record(&self, id: &str) {
        self.ids.lock().unwrap().insert(id.to_string());
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

    /// Waits until CRI lists the images and its network is ready (both follow containerd's
    /// start and image import asynchronously).
    pub fn wait_ready(&self, images: &[&str]) {
        let started = Instant::now();
        loop {
            let missing: Vec<&str> = images
                .iter()
                .copied()
                .filter(|i| !self.image_present(i).unwrap_or(false))
                .collect();
            let net = self.network_ready().unwrap_or(false);
            if missing.is_empty() && net {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "CRI not ready: images missing {missing:?}, network ready {net}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
        Ok(resp.status.expect("PodSandboxStatus without a status"))
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
        Ok((
            resp.status.expect("ContainerStatus without a status"),
            resp.info,
        ))
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

    /// `sh -c script` through ExecSync; panics unless it exits 0, returns its stdout.
    pub fn sh(&self, id: &str, script: &str) -> String {
        let exec = self
            .exec_sync(id, &["sh", "-c", script])
            .unwrap_or_else(|e| panic!("exec `{script}` in {}: {e}", short(id)));
        assert_eq!(exec.code, 0, "exec `{script}` in {}: {exec:?}", short(id));
        exec.stdout
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

    /// Polls ContainerStatus until the container has exited; its last status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> api::ContainerStatus {
        let started = Instant::now();
        loop {
            let status = self
                .status(id)
                .unwrap_or_else(|e| panic!("status of {}: {e}", short(id)));
            if status.state == api::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not exit in {timeout:?}: {status:?}",
                short(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and removes every pod and container (what a test left after a failure).
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

/// The first 12 characters of an id, for messages.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// An image spec for `reference`.
pub fn image(reference: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: reference.to_string(),
        ..Default::default()
    }
}

/// A pod config as kubelet sends it: metadata, hostname, log directory, cgroup parent, pod
/// namespaces for network and IPC and a namespace of its own for each container's processes.
pub fn pod_config(name: &str, log_dir: &Path, cgroup_parent: &str) -> api::PodSandboxConfig {
    let uid = format!("uid-{name}-{}", std::process::id());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_string(),
            uid,
            namespace: "hull-test".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Pod as i32,
                    pid: api::NamespaceMode::Container as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `command` from `image_ref`, its log at `<pod log dir>/<name>.log`.
pub fn container_config(name: &str, image_ref: &str, command: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image(image_ref)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                masked_paths: KUBELET_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
                readonly_paths: KUBELET_READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The paths kubelet masks in every container (procMount Default).
pub const KUBELET_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// The paths kubelet makes read-only in every container (procMount Default).
pub const KUBELET_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A volume: `host_path` bound at `container_path`.
pub fn mount(host_path: &Path, container_path: &str, readonly: bool) -> api::Mount {
    api::Mount {
        container_path: container_path.to_string(),
        host_path: host_path.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

/// One line of a CRI container log: `<RFC 3339 time> <stream> <P|F> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `F` (full line) or `P` (partial).
    pub tag: String,
    /// The text, without the newline.
    pub text: String,
}

/// Parses a CRI log file; panics on a line not in CRI's format.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    content
        .lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (f.next(), f.next(), f.next()) else {
                panic!("{}: not a CRI log line: {line:?}", path.display());
            };
            assert!(
                time.len() > 20 && time.contains('T'),
                "{}: bad time in {line:?}",
                path.display()
            );
            LogLine {
                stream: stream.to_string(),
                tag: tag.to_string(),
                text: f.next().unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// The log file of container `name` in a pod whose log directory is `log_dir`.
pub fn log_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("{name}.log"))
}
