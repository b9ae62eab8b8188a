//! `lab-pod --quickstart` (issue 16): the README's Kubernetes quick start pod `hello-hull`, sent
//! through containerd's CRI the way kubelet sends it. The lab's L1 has no kubelet (and no API
//! server): this client stands in for kubelet, so what it does is what kubelet does for
//!
//! ```yaml
//! metadata: {name: hello-hull}
//! spec:
//!   runtimeClassName: hull
//!   containers:
//!   - name: hello
//!     image: busybox:latest
//!     command: ["sh", "-c", "uname -r; sleep 3600"]
//!     resources:
//!       limits: {cpu: "1", memory: "256Mi"}
//! ```
//!
//! with the RuntimeClass `hull install` printed (its handler and pod overhead, read from the file
//! run.sh saved): RunPodSandbox with the handler, the pod's limits as the sandbox's
//! `linux.resources` (containerd turns them into the `io.kubernetes.cri.sandbox-*` annotations
//! the shim sizes the VM from) and the overhead as `linux.overhead`; CreateContainer with the
//! container's limits (Guaranteed QoS: requests default to limits), kubelet's log path
//! `<pod log dir>/hello/0.log` and its usual mounts (/etc/hosts, /dev/termination-log, the
//! service-account volume; stand-in contents, there is no API server); then what `kubectl logs
//! hello-hull` shows (the CRI log file), the VM size the shim chose, and `kubectl delete pod
//! hello-hull --grace-period=5` (StopContainer, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox). Checks: `qs-image`, `pod-start`, `logs`, `vm-size`, `pod-remove`,
//! `nothing-left`. Not done as kubelet does: the image is not pulled (no registry in the lab:
//! run.sh imported it under the name `busybox:latest` resolves to, as with `imagePullPolicy:
//! IfNotPresent`), and the name is sent instead of the image id ImageStatus would give.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cri::{self, api};
use crate::l1::{read_trim, wait_clean};
use crate::{Check, Run};

/// What `image: busybox:latest` resolves to.
pub const QS_IMAGE: &str = "docker.io/library/busybox:latest";
/// The pod and container of the README's YAML.
const POD_NAME: &str = "hello-hull";
const POD_NAMESPACE: &str = "default";
const CONTAINER: &str = "hello";
const COMMAND: [&str; 3] = ["sh", "-c", "uname -r; sleep 3600"];
/// `limits: {cpu: "1", memory: "256Mi"}`.
const LIMIT_CPU: &str = "1";
const LIMIT_MEMORY: &str = "256Mi";
/// kubelet's CFS period (µs) and the oom_score_adj of a Guaranteed pod's container.
const CPU_PERIOD: i64 = 100_000;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// `kubectl delete pod --grace-period=5`: `sleep` as a child of PID 1 `sh` ignores SIGTERM.
const GRACE_SECS: i64 = 5;
/// How long the container's first log line may take after StartContainer.
const LOG_WAIT: Duration = Duration::from_secs(60);

/// The RuntimeClass fields kubelet uses: the handler and `overhead.podFixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeClass {
    pub handler: String,
    pub overhead_milli_cpu: i64,
    pub overhead_memory: i64,
}

/// A CPU quantity ("1", "250m", "0.5") in millicores.
pub fn milli_cpu(q: &str) -> Option<i64> {
    let q = q.trim().trim_matches('"');
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    q.parse::<f64>().ok().map(|c| (c * 1000.0).round() as i64)
}

/// A memory quantity ("256Mi", "1Gi", "160Mi", "1000000") in bytes.
pub fn memory_bytes(q: &str) -> Option<i64> {
    let q = q.trim().trim_matches('"');
    let units = [("Ki", 1i64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<i64>().ok().map(|n| n * factor);
        }
    }
    q.parse().ok()
}

/// The handler and pod overhead of the RuntimeClass YAML `hull install` printed (a line scrape
/// of the few keys it has, not a YAML parser).
pub fn parse_runtime_class(text: &str) -> Result<RuntimeClass, String> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_string())
            .next()
    };
    if value("kind:").as_deref() != Some("RuntimeClass") {
        return Err(format!("no `kind: RuntimeClass` in {text:?}"));
    }
    let handler = value("handler:").ok_or("no handler in the RuntimeClass")?;
    let cpu = value("cpu:").ok_or("no overhead cpu in the RuntimeClass")?;
    let memory = value("memory:").ok_or("no overhead memory in the RuntimeClass")?;
    Ok(RuntimeClass {
        handler,
        overhead_milli_cpu: milli_cpu(&cpu).ok_or(format!("overhead cpu {cpu:?}"))?,
        overhead_memory: memory_bytes(&memory).ok_or(format!("overhead memory {memory:?}"))?,
    })
}

/// kubelet's CRI resources for a CPU limit and a memory limit (requests = limits): quota =
/// milli × period / 1000, shares = milli × 1024 / 1000 (at least 2).
pub fn linux_resources(milli: i64, memory: i64) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        cpu_period: CPU_PERIOD,
        cpu_quota: (milli * CPU_PERIOD / 1000).max(1000),
        cpu_shares: (milli * 1024 / 1000).max(2),
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

/// The VM size the README promises for this pod: its limits plus the config's overheads, never
/// below the config's floor (computed here from the config's values, not by the shim's code).
pub fn expected_size(config: &hull_runtime::config::Config) -> (u64, u64) {
    let cpus = (milli_cpu(LIMIT_CPU).unwrap_or(0) as u64).div_ceil(1000);
    let mib = memory_bytes(LIMIT_MEMORY).unwrap_or(0) as u64 >> 20;
    let vcpus = (cpus + config.pod_vcpu_overhead as u64).max(config.vcpus as u64);
    let mem = (mib + config.pod_mem_overhead_mib).max(config.mem_mib);
    (vcpus, mem)
}

/// `--vcpus` and `--mem-mib` of a hull-vmm command line (NUL-separated, as in /proc).
pub fn vmm_size(cmdline: &[u8]) -> Option<(u64, u64)> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    Some((after("--vcpus")?, after("--mem-mib")?))
}

/// The command lines of the running hull-vmm processes.
fn vmm_cmdlines() -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if String::from_utf8_lossy(argv0).rsplit('/').next() == Some("hull-vmm") {
            found.push(cmdline);
        }
    }
    found
}

/// The `stdout` lines of a CRI log file (`<time> <stream> <P|F> <text>`), lines not in that
/// format skipped.
pub fn stdout_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, stream, _) = (f.next()?, f.next()?, f.next()?);
            (stream == "stdout").then(|| f.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Something unique enough for a pod uid (kubelet's is a UUID from the API server).
fn pod_uid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// What kubelet keeps for the pod on the node: its log directory and the files it mounts.
struct PodFiles {
    uid: String,
    log_dir: PathBuf,
    kubelet_pod_dir: PathBuf,
}

impl PodFiles {
    fn create(log_root: &Path, kubelet_root: &Path) -> Result<PodFiles, String> {
        let uid = pod_uid();
        let log_dir = log_root.join(format!("{POD_NAMESPACE}_{POD_NAME}_{uid}"));
        let kubelet_pod_dir = kubelet_root.join("pods").join(&uid);
        let sa = kubelet_pod_dir.join("volumes/kubernetes.io~projected/kube-api-access-lab");
        let term = kubelet_pod_dir.join(format!("containers/{CONTAINER}/lab0001"));
        let mk = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
        };
        mk(&log_dir.join(CONTAINER))?;
        mk(&sa)?;
        mk(term.parent().unwrap_or(Path::new("/")))?;
        let write = |p: PathBuf, text: &str| {
            std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))
        };
        write(
            kubelet_pod_dir.join("etc-hosts"),
            &format!("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.1\t{POD_NAME}\n"),
        )?;
        write(term, "")?;
        write(sa.join("namespace"), POD_NAMESPACE)?;
        write(
            sa.join("token"),
            "lab-stand-in-token (no API server in the lab)",
        )?;
        write(sa.join("ca.crt"), "")?;
        Ok(PodFiles {
            uid,
            log_dir,
            kubelet_pod_dir,
        })
    }

    fn container_log(&self) -> PathBuf {
        self.log_dir.join(CONTAINER).join("0.log")
    }
}

fn pod_config(rc: &RuntimeClass, files: &PodFiles) -> Result<api::PodSandboxConfig, String> {
    let milli = milli_cpu(LIMIT_CPU).ok_or("cpu limit")?;
    let memory = memory_bytes(LIMIT_MEMORY).ok_or("memory limit")?;
    let mut cfg = cri::pod_config(
        POD_NAME,
        &files.log_dir,
        &format!("/kubepods/pod{}", files.uid),
    );
    let meta = cfg.metadata.get_or_insert_with(Default::default);
    meta.uid = files.uid.clone();
    meta.namespace = POD_NAMESPACE.into();
    cfg.hostname = POD_NAME.into();
    cfg.labels = [
        ("io.kubernetes.pod.name", POD_NAME),
        ("io.kubernetes.pod.namespace", POD_NAMESPACE),
        ("io.kubernetes.pod.uid", files.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.annotations = [("kubernetes.io/config.source".to_string(), "api".to_string())].into();
    // dnsPolicy ClusterFirst with kubeadm's cluster DNS address.
    cfg.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec![
            format!("{POD_NAMESPACE}.svc.cluster.local"),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    });
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux.resources = Some(linux_resources(milli, memory));
    let mut overhead = linux_resources(rc.overhead_milli_cpu, rc.overhead_memory);
    overhead.cpu_quota = rc.overhead_milli_cpu * CPU_PERIOD / 1000;
    linux.overhead = Some(overhead);
    Ok(cfg)
}

fn container_config(files: &PodFiles) -> Result<api::ContainerConfig, String> {
    let milli = milli_cpu(LIMIT_CPU).ok_or("cpu limit")?;
    let memory = memory_bytes(LIMIT_MEMORY).ok_or("memory limit")?;
    let mut c = cri::container_config(CONTAINER, QS_IMAGE, &COMMAND);
    c.log_path = format!("{CONTAINER}/0.log");
    c.labels = [
        ("io.kubernetes.container.name", CONTAINER),
        ("io.kubernetes.pod.name", POD_NAME),
        ("io.kubernetes.pod.namespace", POD_NAMESPACE),
        ("io.kubernetes.pod.uid", files.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut resources = linux_resources(milli, memory);
    resources.oom_score_adj = GUARANTEED_OOM_SCORE_ADJ;
    c.linux.get_or_insert_with(Default::default).resources = Some(resources);
    let d = &files.kubelet_pod_dir;
    c.mounts = vec![
        cri::mount(
            &d.join("volumes/kubernetes.io~projected/kube-api-access-lab"),
            "/var/run/secrets/kubernetes.io/serviceaccount",
            true,
        ),
        cri::mount(&d.join("etc-hosts"), "/etc/hosts", false),
        cri::mount(
            &d.join(format!("containers/{CONTAINER}/lab0001")),
            "/dev/termination-log",
            false,
        ),
    ];
    Ok(c)
}

/// `image: busybox:latest` as CRI sees it; CRI learns of an image tagged by `ctr` from
/// containerd's events, so it may take a moment.
fn wait_for_image(run: &Run) -> Check {
    let started = Instant::now();
    loop {
        match run.cri.image_present(QS_IMAGE) {
            Ok(true) => {
                return Ok(format!(
                    "{QS_IMAGE} present (what `image: busybox:latest` names)"
                ))
            }
            Ok(false) if started.elapsed() < Duration::from_secs(30) => {}
            Ok(false) => return Err(format!("{QS_IMAGE} not in CRI's images after 30 s")),
            Err(e) => return Err(format!("ImageStatus {QS_IMAGE}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl logs`: the container's stdout lines once it printed one, at most [`LOG_WAIT`].
fn wait_for_log(path: &Path) -> Result<Vec<String>, String> {
    let started = Instant::now();
    loop {
        let lines = stdout_lines(&std::fs::read_to_string(path).unwrap_or_default());
        if !lines.is_empty() {
            return Ok(lines);
        }
        if started.elapsed() > LOG_WAIT {
            return Err(format!(
                "{} has no stdout line after {LOG_WAIT:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn check_logs(run: &Run, files: &PodFiles) -> Check {
    let lines = wait_for_log(&files.container_log())?;
    let release = lines[0].trim().to_string();
    if release.is_empty() || release == run.l1_kernel {
        return Err(format!(
            "the pod printed '{release}', L1's own kernel is '{}': not our microVM",
            run.l1_kernel
        ));
    }
    Ok(format!(
        "kubectl logs {POD_NAME} ({}): '{release}' (the guest's kernel; L1 runs '{}')",
        files.container_log().display(),
        run.l1_kernel
    ))
}

fn check_vm_size(run: &Run, pod: &str) -> Check {
    let config = hull_runtime::config::Config::load(Some(&run.args.hull_config))
        .map_err(|e| format!("reading {}: {e}", run.args.hull_config.display()))?;
    let want = expected_size(&config);
    let cmdlines = vmm_cmdlines();
    let [cmdline] = cmdlines.as_slice() else {
        return Err(format!(
            "{} hull-vmm processes running, expected 1",
            cmdlines.len()
        ));
    };
    let got = vmm_size(cmdline).ok_or("hull-vmm's command line has no --vcpus/--mem-mib")?;
    let info_path = run.args.run_dir.join(pod).join("info");
    let info = read_trim(&info_path.to_string_lossy());
    let recorded = format!("vm {} {}", want.0, want.1);
    if got != want || info != recorded {
        return Err(format!(
            "expected {} vCPU / {} MiB (limits cpu {LIMIT_CPU}, memory {LIMIT_MEMORY} + pod_vcpu_overhead {} / pod_mem_overhead_mib {}); hull-vmm has --vcpus {} --mem-mib {}, {} says '{info}'",
            want.0, want.1, config.pod_vcpu_overhead, config.pod_mem_overhead_mib, got.0, got.1, info_path.display()
        ));
    }
    Ok(format!(
        "hull-vmm --vcpus {} --mem-mib {} (limits cpu {LIMIT_CPU}, memory {LIMIT_MEMORY} + overheads {} vCPU / {} MiB, as the README says); sandbox info '{info}'",
        got.0, got.1, config.pod_vcpu_overhead, config.pod_mem_overhead_mib
    ))
}

/// `kubectl delete pod hello-hull --grace-period=5`, as kubelet carries it out.
fn delete_pod(run: &Run, pod: &str, container: &str) -> Check {
    let c = cri::short(container);
    run.cri
        .stop(container, GRACE_SECS)
        .map_err(|e| format!("StopContainer {c}: {e}"))?;
    run.cri
        .remove(container)
        .map_err(|e| format!("RemoveContainer {c}: {e}"))?;
    run.stop_remove(pod)?;
    Ok(format!(
        "StopContainer (grace {GRACE_SECS} s), RemoveContainer, StopPodSandbox, RemovePodSandbox of {}",
        cri::short(pod)
    ))
}

/// The quick start's pod, start to removal (see the module docs).
pub fn scenario(run: &mut Run) {
    let rc = std::fs::read_to_string(&run.args.runtime_class)
        .map_err(|e| format!("reading {}: {e}", run.args.runtime_class.display()))
        .and_then(|t| parse_runtime_class(&t));
    let rc = match rc {
        Ok(rc) => rc,
        Err(e) => {
            run.check("runtime-class", Err(e));
            return;
        }
    };
    let image = wait_for_image(run);
    if !run.check("qs-image", image) {
        return;
    }
    let files = match PodFiles::create(&run.args.pod_dir, &run.args.kubelet_dir) {
        Ok(f) => f,
        Err(e) => {
            run.check("pod-start", Err(e));
            return;
        }
    };
    let started = start(run, &rc, &files);
    let (pod, container) = match started {
        Ok(ids) => ids,
        Err(e) => {
            run.check("pod-start", Err(e));
            run.console_tails();
            // A pod that was created but did not start is still removed.
            let _ = run.cri.remove_everything();
            return;
        }
    };
    let logs = check_logs(run, &files);
    run.check("logs", logs);
    let size = check_vm_size(run, &pod);
    run.check("vm-size", size);
    if !run.failed.is_empty() {
        run.console_tails();
    }
    let deleted = delete_pod(run, &pod, &container);
    run.check("pod-remove", deleted);
    let mut left = wait_clean(&run.args);
    if let Ok(pods) = run.cri.list_pods() {
        if !pods.is_empty() {
            left.push(format!("CRI still lists pods {pods:?}"));
        }
    }
    if let Ok(containers) = run.cri.list_containers() {
        if !containers.is_empty() {
            left.push(format!("CRI still lists containers {containers:?}"));
        }
    }
    run.check(
        "nothing-left",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, pod cgroup, tap, netns or CNI lease left; CRI lists nothing".into())
        } else {
            Err(left.join(", "))
        },
    );
    // kubelet removes the pod's directory once the pod is gone.
    let _ = std::fs::remove_dir_all(&files.kubelet_pod_dir);
}

/// RunPodSandbox with the RuntimeClass's handler, CreateContainer, StartContainer. A
/// RunPodSandbox the shim gave up on ("did not answer") while no console showed the agent's
/// line is the lab's L2 boot hang (`run.hang`), as in the pod step.
fn start(run: &mut Run, rc: &RuntimeClass, files: &PodFiles) -> Result<(String, String), String> {
    let cfg = pod_config(rc, files)?;
    let container = container_config(files)?;
    let t0 = Instant::now();
    let pod = run.cri.run_pod(&cfg, &rc.handler).map_err(|e| {
        let reached = run
            .consoles
            .lock()
            .unwrap()
            .values()
            .any(|c| c.contains("HULL-AGENT"));
        if e.message.contains("did not answer") && !reached {
            run.hang = true;
        }
        format!("RunPodSandbox (handler {}): {e}", rc.handler)
    })?;
    let run_ms = t0.elapsed().as_millis();
    let t1 = Instant::now();
    let id = run
        .cri
        .create_container(&pod, &container, &cfg)
        .map_err(|e| format!("CreateContainer {CONTAINER}: {e}"))?;
    let create_ms = t1.elapsed().as_millis();
    let t2 = Instant::now();
    run.cri
        .start(&id)
        .map_err(|e| format!("StartContainer {CONTAINER}: {e}"))?;
    let start_ms = t2.elapsed().as_millis();
    run.check(
        "pod-start",
        Ok(format!(
            "pod {POD_NAME} ({}) with container {CONTAINER} started through CRI with runtime handler \
             '{}' (RuntimeClass overhead {}m CPU / {} MiB sent as linux.overhead): RunPodSandbox \
             {run_ms} ms, CreateContainer {create_ms} ms, StartContainer {start_ms} ms",
            cri::short(&pod),
            rc.handler,
            rc.overhead_milli_cpu,
            rc.overhead_memory >> 20,
        )),
    );
    Ok((pod, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_class_as_hull_install_prints_it() {
        let rc = parse_runtime_class(hull_runtime::install::RUNTIME_CLASS_YAML).unwrap();
        assert_eq!(rc.handler, "hull");
        assert_eq!(
            (rc.overhead_milli_cpu, rc.overhead_memory),
            (250, 160 << 20)
        );
    }

    #[test]
    fn quantities_and_kubelet_resources() {
        assert_eq!(milli_cpu("1"), Some(1000));
        assert_eq!(milli_cpu("\"250m\""), Some(250));
        assert_eq!(memory_bytes("256Mi"), Some(256 << 20));
        let r = linux_resources(1000, 256 << 20);
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares),
            (100_000, 100_000, 1024)
        );
    }

    #[test]
    fn vmm_size_and_log_lines() {
        let cmdline = b"/hull-vmm\0--kernel\0/k\0--mem-mib\0384\0--vcpus\01\0";
        assert_eq!(vmm_size(cmdline), Some((1, 384)));
        let log = "2026-12-03T14:00:00.000000000Z stdout F 6.1.192\nbad\n";
        assert_eq!(stdout_lines(log), vec!["6.1.192".to_string()]);
    }
}
