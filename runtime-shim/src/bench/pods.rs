//! Pods through CRI for the bench's `pod` and `network` groups: the client, the checks that CRI
//! can run pods here at all (a group that cannot says why instead of failing the whole run), and
//! timed pod start and teardown. Every pod started is removed, also when a group fails.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::{Bench, GroupResult, Rt};
use crate::cri_client::{self, Cri};

/// The Kubernetes namespace of the bench's pods.
const K8S_NAMESPACE: &str = "hull-bench";

/// How long one pod start took, per CRI call.
#[derive(Debug, Clone, Copy)]
pub struct PodStart {
    /// When RunPodSandbox was called (wall clock).
    pub called_at: SystemTime,
    /// RunPodSandbox.
    pub run: Duration,
    /// CreateContainer of every container.
    pub create: Duration,
    /// StartContainer of every container.
    pub start: Duration,
}

impl PodStart {
    /// The three together.
    pub fn total(&self) -> Duration {
        self.run + self.create + self.start
    }
}

/// CRI, the handlers to compare, and the pods started and not removed yet.
pub struct Pods {
    cri: Cri,
    handlers: [String; 2],
    image: String,
    cgroup_parent: String,
    log_root: PathBuf,
    live: Vec<String>,
}

impl Pods {
    /// Connects to CRI and checks it can run the bench's pods: it answers, knows the image and
    /// says its network is ready. `Err` is the reason the group cannot run here.
    pub fn open(bench: &Bench) -> Result<Pods, String> {
        let args = &bench.args;
        let address = args.cri_address.as_ref().unwrap_or(&args.address);
        let cri = Cri::connect(address).map_err(|e| format!("no CRI: {e}"))?;
        let version = cri.version().map_err(|e| {
            format!(
                "containerd at {} does not serve CRI (is its CRI plugin disabled?): {e}",
                address.display()
            )
        })?;
        tracing::debug!(runtime = %version.runtime_name, version = %version.runtime_version, "CRI");
        match cri.image_present(&args.image) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "CRI does not know image {} (import it into namespace k8s.io: \
                     `ctr -n k8s.io image import`)",
                    args.image
                ))
            }
            Err(e) => return Err(format!("ImageStatus {}: {e}", args.image)),
        }
        match cri.network_ready() {
            Ok(true) => {}
            Ok(false) => {
                return Err("CRI says its network is not ready (no CNI configuration?)".into())
            }
            Err(e) => return Err(format!("CRI Status: {e}")),
        }
        let log_root = args.out.join("pod-logs");
        std::fs::create_dir_all(&log_root)
            .map_err(|e| format!("creating {}: {e}", log_root.display()))?;
        Ok(Pods {
            cri,
            handlers: [args.hull_handler.clone(), args.runc_handler.clone()],
            image: args.image.clone(),
            cgroup_parent: args.cgroup_parent.clone(),
            log_root,
            live: Vec::new(),
        })
    }

    /// [`Pods::open`] for `group`; where CRI cannot run pods the group is marked skipped with
    /// the reason, and None.
    pub fn open_for(bench: &Bench, group: &mut GroupResult) -> Option<Pods> {
        Pods::open(bench)
            .map_err(|why| group.skipped = Some(why))
            .ok()
    }

    /// The runtime handler of `rt`.
    pub fn handler(&self, rt: Rt) -> &str {
        &self.handlers[rt as usize]
    }

    /// Starts pod `name` under `rt`'s handler with `containers` (name, command) from the bench's
    /// image: RunPodSandbox, then CreateContainer and StartContainer of each, timed. The pod's
    /// id and the times.
    pub fn start(
        &mut self,
        rt: Rt,
        name: &str,
        containers: &[(&str, Vec<String>)],
    ) -> Result<(String, PodStart), String> {
        let name = format!("hb-{}-{name}", std::process::id());
        let log_dir = self.log_root.join(&name);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
        let config = cri_client::pod_config(&name, K8S_NAMESPACE, &log_dir, &self.cgroup_parent);
        let handler = self.handler(rt).to_string();
        let called_at = SystemTime::now();
        let t = Instant::now();
        let pod = self
            .cri
            .run_pod(&config, &handler)
            .map_err(|e| format!("RunPodSandbox {name} (handler {handler}): {e}"))?;
        self.live.push(pod.clone());
        let run = t.elapsed();
        let (mut create, mut start) = (Duration::ZERO, Duration::ZERO);
        for (container, command) in containers {
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            let c = cri_client::container_config(container, &self.image, &command);
            let t = Instant::now();
            let id = self
                .cri
                .create_container(&pod, &c, &config)
                .map_err(|e| format!("CreateContainer {container} in {name}: {e}"))?;
            create += t.elapsed();
            let t = Instant::now();
            self.cri
                .start(&id)
                .map_err(|e| format!("StartContainer {container} in {name}: {e}"))?;
            start += t.elapsed();
        }
        Ok((
            pod,
            PodStart {
                called_at,
                run,
                create,
                start,
            },
        ))
    }

    /// StopPodSandbox + RemovePodSandbox of `pod`, timed.
    pub fn remove(&mut self, pod: &str) -> Result<Duration, String> {
        let t = Instant::now();
        self.cri
            .stop_remove_pod(pod)
            .map_err(|e| format!("removing pod {}: {e}", cri_client::short(pod)))?;
        self.live.retain(|p| p != pod);
        Ok(t.elapsed())
    }

    /// The pod's IPv4 address.
    pub fn ipv4(&self, pod: &str) -> Result<String, String> {
        self.cri
            .pod_ipv4(pod)
            .map_err(|e| format!("PodSandboxStatus {}: {e}", cri_client::short(pod)))?
            .ok_or_else(|| format!("pod {} has no IPv4 address", cri_client::short(pod)))
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for pod in std::mem::take(&mut self.live) {
            if let Err(e) = self.cri.stop_remove_pod(&pod) {
                tracing::warn!(pod = %pod, error = %e, "hull bench could not remove a pod it started");
            }
        }
    }
}

/// A container that idles (`sleep`).
pub fn idle_command() -> Vec<String> {
    vec!["sleep".into(), "1000000".into()]
}
