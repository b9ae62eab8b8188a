//! Pod and container configs as kubelet sends them to CRI.

use std::path::Path;

use super::api;

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

/// A pod config as kubelet sends it: metadata (Kubernetes namespace `k8s_namespace`, a uid
/// unique to this process), hostname, log directory, cgroup parent, pod namespaces for network
/// and IPC and a namespace of its own for each container's processes.
pub fn pod_config(
    name: &str,
    k8s_namespace: &str,
    log_dir: &Path,
    cgroup_parent: &str,
) -> api::PodSandboxConfig {
    let uid = format!("uid-{name}-{}", std::process::id());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_string(),
            uid,
            namespace: k8s_namespace.into(),
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

/// A container config running `command` from `image_ref`, its log at `<pod log dir>/<name>.log`,
/// with the paths kubelet masks and makes read-only.
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
