use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::sizing::{
    vm_size, SizingPolicy, VmSize, SANDBOX_CPU_PERIOD, SANDBOX_CPU_QUOTA, SANDBOX_MEMORY,
};
use super::spec::{to_guest_spec, CriSpecError, GuestPod};
use super::{sandbox_id_for, PodRole, CONTAINER_TYPE, SANDBOX_ID};

const STATE: &str = "/run/containerd/io.containerd.grpc.v1.cri";
const ROOT: &str = "/var/lib/containerd/io.containerd.grpc.v1.cri";

/// A pause container spec as containerd 1.6's CRI sends it (FACTS.md, measured).
fn sandbox_spec() -> Spec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "pod-a",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "bind",
             "source": format!("{STATE}/sandboxes/sb1/shm"), "options": ["rbind", "ro"]},
            {"destination": "/etc/resolv.conf", "type": "bind",
             "source": format!("{ROOT}/sandboxes/sb1/resolv.conf"), "options": ["rbind", "ro"]}
        ],
        "annotations": {CONTAINER_TYPE: "sandbox", SANDBOX_ID: "sb1"},
        "linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            {"type": "network", "path": format!("{STATE}/netns/cni-1234")}
        ]}
    }))
    .unwrap()
}

/// An app container spec of the same pod.
fn container_spec() -> Spec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind",
             "source": format!("{ROOT}/sandboxes/sb1/hosts"), "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/dev/termination-log", "type": "bind",
             "source": "/var/lib/kubelet/pods/u/containers/c/x", "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/data", "type": "bind",
             "source": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg",
             "options": ["rbind", "rprivate", "ro"]},
            {"destination": "/dev/shm", "type": "bind",
             "source": format!("{STATE}/sandboxes/sb1/shm"), "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro"]}
        ],
        "annotations": {CONTAINER_TYPE: "container", SANDBOX_ID: "sb1"},
        "linux": {"namespaces": [
            {"type": "pid"}, {"type": "mount"},
            {"type": "ipc", "path": "/proc/4242/ns/ipc"},
            {"type": "uts", "path": "/proc/4242/ns/uts"},
            {"type": "network", "path": "/proc/4242/ns/net"}
        ]}
    }))
    .unwrap()
}

fn pid(pid: u32) -> GuestPod {
    GuestPod {
        sandbox_init_pid: Some(pid),
        sandbox_netns: None,
    }
}

fn ns_path(spec: &Spec, kind: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == kind)?
        .path()
        .clone()
}

fn mount_source(spec: &Spec, destination: &str) -> PathBuf {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(destination))
        .and_then(|m| m.source().clone())
        .unwrap()
}

fn without_namespace(mut spec: Spec, kind: LinuxNamespaceType) -> Spec {
    let linux = spec.linux_mut().as_mut().unwrap();
    let nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.typ() != kind)
        .collect();
    linux.set_namespaces(Some(nss));
    spec
}

#[test]
fn roles_and_grouping_follow_the_annotations() {
    assert_eq!(PodRole::from_annotations(None), PodRole::Standalone);
    assert_eq!(sandbox_id_for("c1", None), "c1");
    let sandbox = sandbox_spec();
    assert_eq!(
        PodRole::from_annotations(sandbox.annotations().as_ref()),
        PodRole::Sandbox
    );
    let app = container_spec();
    let role = PodRole::from_annotations(app.annotations().as_ref());
    assert_eq!(
        role,
        PodRole::Container {
            sandbox_id: "sb1".into()
        }
    );
    assert_eq!(sandbox_id_for("c2", app.annotations().as_ref()), "sb1");
    let mut orphan = HashMap::new();
    orphan.insert(CONTAINER_TYPE.to_string(), "container".to_string());
    assert_eq!(sandbox_id_for("c3", Some(&orphan)), "c3");
}

#[test]
fn sandbox_gets_new_guest_namespaces_and_keeps_the_cni_netns_on_the_host() {
    let g = to_guest_spec(
        sandbox_spec(),
        "sb1",
        &PodRole::Sandbox,
        &GuestPod::default(),
    )
    .unwrap();
    for kind in [
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
    ] {
        assert_eq!(ns_path(&g.spec, kind), None, "{kind:?}");
    }
    assert_eq!(
        g.host_netns,
        Some(PathBuf::from(format!("{STATE}/netns/cni-1234")))
    );
    assert_eq!(
        g.host_shm,
        Some(PathBuf::from(format!("{STATE}/sandboxes/sb1/shm")))
    );
    assert_eq!(
        mount_source(&g.spec, "/dev/shm"),
        Path::new(hull_proto::POD_SHM_SOURCE)
    );
    assert_eq!(
        mount_source(&g.spec, "/etc/resolv.conf"),
        Path::new("sb1/mounts/3")
    );
    assert_eq!(g.binds.len(), 1);
    assert!(g.binds[0].read_only);
    assert_eq!(
        g.binds[0].source,
        PathBuf::from(format!("{ROOT}/sandboxes/sb1/resolv.conf"))
    );
}

#[test]
fn app_containers_join_the_sandbox_namespaces_in_the_guest() {
    let role = PodRole::Container {
        sandbox_id: "sb1".into(),
    };
    let g = to_guest_spec(container_spec(), "c1", &role, &pid(17)).unwrap();
    assert_eq!(
        ns_path(&g.spec, LinuxNamespaceType::Network),
        Some("/proc/17/ns/net".into())
    );
    assert_eq!(
        ns_path(&g.spec, LinuxNamespaceType::Ipc),
        Some("/proc/17/ns/ipc".into())
    );
    assert_eq!(
        ns_path(&g.spec, LinuxNamespaceType::Uts),
        Some("/proc/17/ns/uts".into())
    );
    assert_eq!(
        ns_path(&g.spec, LinuxNamespaceType::Pid),
        None,
        "its own pid namespace"
    );
    assert_eq!(g.host_netns, None);
    assert_eq!(g.host_shm, None);
    assert_eq!(
        mount_source(&g.spec, "/dev/shm"),
        Path::new(hull_proto::POD_SHM_SOURCE)
    );
    let binds: Vec<_> = g
        .binds
        .iter()
        .map(|b| {
            (
                b.destination.to_str().unwrap(),
                b.shared_path("c1"),
                b.read_only,
            )
        })
        .collect();
    assert_eq!(
        binds,
        vec![
            ("/etc/hosts", PathBuf::from("c1/mounts/1"), false),
            ("/dev/termination-log", PathBuf::from("c1/mounts/2"), false),
            ("/data", PathBuf::from("c1/mounts/3"), true),
        ]
    );
    assert_eq!(mount_source(&g.spec, "/data"), Path::new("c1/mounts/3"));
    assert_eq!(mount_source(&g.spec, "/sys/fs/cgroup"), Path::new("cgroup"));
    // Shared pid namespace (shareProcessNamespace): the sandbox's too.
    let mut shared_pid = container_spec();
    let linux = shared_pid.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss[0].set_path(Some("/proc/4242/ns/pid".into()));
    linux.set_namespaces(Some(nss));
    let g = to_guest_spec(shared_pid, "c1", &role, &pid(17)).unwrap();
    assert_eq!(
        ns_path(&g.spec, LinuxNamespaceType::Pid),
        Some("/proc/17/ns/pid".into())
    );
}

#[test]
fn an_app_container_before_its_sandbox_started_is_refused() {
    let role = PodRole::Container {
        sandbox_id: "sb1".into(),
    };
    let err = to_guest_spec(container_spec(), "c1", &role, &GuestPod::default()).unwrap_err();
    assert_eq!(
        err,
        CriSpecError::SandboxNotStarted {
            sandbox_id: "sb1".into()
        }
    );
    assert!(err.to_string().contains("sb1"));
}

#[test]
fn host_namespaces_are_refused_by_name() {
    for (kind, field) in [
        (LinuxNamespaceType::Network, "hostNetwork"),
        (LinuxNamespaceType::Ipc, "hostIPC"),
        (LinuxNamespaceType::Pid, "hostPID"),
    ] {
        let spec = without_namespace(sandbox_spec(), kind);
        let err = to_guest_spec(spec, "sb1", &PodRole::Sandbox, &GuestPod::default()).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
        let role = PodRole::Container {
            sandbox_id: "sb1".into(),
        };
        let err = to_guest_spec(
            without_namespace(container_spec(), kind),
            "c1",
            &role,
            &pid(1),
        )
        .unwrap_err();
        assert!(matches!(err, CriSpecError::HostNamespace { .. }), "{err}");
    }
}

#[test]
fn host_namespace_paths_never_reach_the_guest() {
    // A plain container asking to join a host network namespace.
    let mut spec = container_spec();
    spec.set_annotations(None);
    let err = to_guest_spec(spec, "c1", &PodRole::Standalone, &GuestPod::default()).unwrap_err();
    assert!(
        matches!(err, CriSpecError::HostNamespacePath { .. }),
        "{err}"
    );
    // A sandbox with a path for anything but its network.
    let mut spec = sandbox_spec();
    let linux = spec.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss[1].set_path(Some("/proc/1/ns/ipc".into()));
    linux.set_namespaces(Some(nss));
    let err = to_guest_spec(spec, "sb1", &PodRole::Sandbox, &GuestPod::default()).unwrap_err();
    assert!(err.to_string().contains("/proc/1/ns/ipc"), "{err}");
    // An app container asked to join a mount namespace.
    let mut spec = container_spec();
    let linux = spec.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss[1].set_path(Some("/proc/4242/ns/mnt".into()));
    linux.set_namespaces(Some(nss));
    let role = PodRole::Container {
        sandbox_id: "sb1".into(),
    };
    assert!(to_guest_spec(spec, "c1", &role, &pid(1)).is_err());
}

#[test]
fn plain_containers_keep_their_shm_and_get_host_binds_through_the_shared_dir() {
    let mut spec: Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/host", "type": "none", "source": "/srv/data", "options": ["rbind"]},
            {"destination": "/rel", "type": "bind", "source": "relative/x", "options": ["rbind"]}
        ],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}]}
    }))
    .unwrap();
    let err = to_guest_spec(
        spec.clone(),
        "c1",
        &PodRole::Standalone,
        &GuestPod::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        CriSpecError::RelativeBindSource {
            index: 2,
            path: "relative/x".into()
        }
    );
    spec.mounts_mut().as_mut().unwrap().pop();
    let g = to_guest_spec(spec, "c1", &PodRole::Standalone, &GuestPod::default()).unwrap();
    assert_eq!(mount_source(&g.spec, "/dev/shm"), Path::new("shm"));
    assert_eq!(mount_source(&g.spec, "/host"), Path::new("c1/mounts/1"));
    assert_eq!(g.binds.len(), 1);
    assert!(!g.binds[0].read_only);
}

fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn vm_size_is_the_pod_limit_plus_overhead_never_below_the_floor() {
    let policy = SizingPolicy {
        floor: VmSize {
            vcpus: 1,
            mem_mib: 256,
        },
        vcpu_overhead: 0,
        mem_overhead_mib: 128,
    };
    assert_eq!(vm_size(&policy, None), policy.floor);
    let pod = annotations(&[
        (SANDBOX_CPU_QUOTA, "250000"),
        (SANDBOX_CPU_PERIOD, "100000"),
        (SANDBOX_MEMORY, &(512u64 << 20).to_string()),
    ]);
    assert_eq!(
        vm_size(&policy, Some(&pod)),
        VmSize {
            vcpus: 3,
            mem_mib: 640
        }
    );
    // Small limits: the floor.
    let small = annotations(&[
        (SANDBOX_CPU_QUOTA, "50000"),
        (SANDBOX_CPU_PERIOD, "100000"),
        (SANDBOX_MEMORY, "1048576"),
    ]);
    assert_eq!(
        vm_size(&policy, Some(&small)),
        VmSize {
            vcpus: 1,
            mem_mib: 256
        }
    );
    // No limits (quota -1, memory 0) and garbage: the floor.
    let none = annotations(&[
        (SANDBOX_CPU_QUOTA, "-1"),
        (SANDBOX_CPU_PERIOD, "100000"),
        (SANDBOX_MEMORY, "0"),
    ]);
    assert_eq!(vm_size(&policy, Some(&none)), policy.floor);
    let garbage = annotations(&[(SANDBOX_CPU_QUOTA, "x"), (SANDBOX_MEMORY, "1e9")]);
    assert_eq!(vm_size(&policy, Some(&garbage)), policy.floor);
    // Huge limits are capped.
    let huge = annotations(&[
        (SANDBOX_CPU_QUOTA, "100000000"),
        (SANDBOX_CPU_PERIOD, "1"),
        (SANDBOX_MEMORY, &u64::MAX.to_string()),
    ]);
    assert_eq!(
        vm_size(&policy, Some(&huge)),
        VmSize {
            vcpus: 32,
            mem_mib: 256
        }
    );
}
