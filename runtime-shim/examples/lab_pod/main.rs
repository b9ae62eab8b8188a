//! The nested lab's pod scenario (issues 12 and 13, Tier 2; see tests/lab/README.md): a CRI
//! client, built static, that runs inside the lab's L1 VM against containerd with its CRI
//! plugin, the bridge CNI network and runtime handlers `hull` (VM mode: one microVM per pod) and
//! `runc`. It is not a test of this crate's own build: `tests/lab/build_suite.py` builds it and
//! `tests/lab/run.sh` (`lab_pod`) runs it; the host's `lab.py` judges the lines it prints:
//!
//! ```text
//! LAB-POD name=.. check=<what> status=ok|fail detail="..."
//! LAB-POD-TIME name=.. runtime=hull pod=<n> run_ms=.. create_ms=.. start_ms=.. total_ms=..
//! LAB-POD-BENCH name=.. runtime=hull|runc total_ms="a b c" run_ms="..." create_ms="..." start_ms="..."
//! LAB-NET-BENCH name=.. runtime=hull|runc bulk_mib=.. down_mbit="..." up_mbit="..." req_ms="..."
//! LAB-TAIL name=.. attempt=.. stream=<what> | <line>        (evidence of a failure)
//! LAB-POD-END name=.. status=ok|fail|hang failed="<checks>"
//! ```
//!
//! `hang`: the pod's guest never reached its agent (the lab's known L2 boot hang, see
//! shared/FACTS.md): RunPodSandbox failed with the shim's "did not answer" and no console of the
//! sandbox showed the agent's line. Anything else that goes wrong is a failure of the product.
//!
//! usage: lab_pod --socket SOCK --run-dir DIR --pod-dir DIR --netns-dir DIR --ipam-dir DIR
//!                [--full] [--bench N] [--pool [--hull-config FILE] [--hull-bin FILE]]
//!                [--name NAME] [--attempt N]
//!        lab_pod --quickstart --runtime-class FILE --hull-config FILE [--kubelet-dir DIR] ...
//!                (the README's Kubernetes quick start pod, kubelet's part: see quickstart.rs)

mod bench;
mod checks;
/// The library's CRI client, with the lab pods' Kubernetes namespace.
mod cri {
    pub use hull_runtime::cri_client::*;

    /// A pod config as kubelet sends it, in Kubernetes namespace `hull-test`.
    pub fn pod_config(
        name: &str,
        log_dir: &std::path::Path,
        cgroup_parent: &str,
    ) -> api::PodSandboxConfig {
        hull_runtime::cri_client::pod_config(name, "hull-test", log_dir, cgroup_parent)
    }
}
mod l1;
mod net_bench;
mod pool;
mod quickstart;
mod ws_port_forward;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checks::{cri_port_forward, cross_pod_checks, jail_checks, pod_checks, port_forward_path};
use cri::{api, Cri};
use l1::{read_trim, wait_clean, watch_consoles};

/// The busybox image and the pause image the lab imports into namespace k8s.io.
const IMAGE: &str = "lab.local/busybox:lab";
const PAUSE_IMAGE: &str = "lab.local/pause:lab";
/// busybox httpd's port in the pods.
const PORT: u16 = hull_runtime::bench::netprobe::HTTP_PORT;
/// What the pods' DNS config asks for (checked in /etc/resolv.conf of a container).
const DNS_SERVER: &str = "10.88.0.53";
const DNS_SEARCH: &str = "lab.example";
const DNS_OPTION: &str = "ndots:2";

struct Args {
    socket: PathBuf,
    run_dir: PathBuf,
    pod_dir: PathBuf,
    netns_dir: PathBuf,
    ipam_dir: PathBuf,
    full: bool,
    bench: usize,
    name: String,
    attempt: String,
    quickstart: bool,
    runtime_class: PathBuf,
    hull_config: PathBuf,
    kubelet_dir: PathBuf,
    pool: bool,
    hull_bin: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        socket: PathBuf::new(),
        run_dir: PathBuf::new(),
        pod_dir: PathBuf::from("/tmp/pods"),
        netns_dir: PathBuf::new(),
        ipam_dir: PathBuf::new(),
        full: false,
        bench: 0,
        name: "pod".into(),
        attempt: "1".into(),
        quickstart: false,
        runtime_class: PathBuf::new(),
        hull_config: PathBuf::from("/etc/hull/config.toml"),
        kubelet_dir: PathBuf::from("/var/lib/kubelet"),
        pool: false,
        hull_bin: PathBuf::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--socket" => a.socket = value().into(),
            "--run-dir" => a.run_dir = value().into(),
            "--pod-dir" => a.pod_dir = value().into(),
            "--netns-dir" => a.netns_dir = value().into(),
            "--ipam-dir" => a.ipam_dir = value().into(),
            "--bench" => a.bench = value().parse().unwrap_or_else(|_| usage("--bench N")),
            "--name" => a.name = value(),
            "--attempt" => a.attempt = value(),
            "--full" => a.full = true,
            "--quickstart" => a.quickstart = true,
            "--runtime-class" => a.runtime_class = value().into(),
            "--hull-config" => a.hull_config = value().into(),
            "--kubelet-dir" => a.kubelet_dir = value().into(),
            "--pool" => a.pool = true,
            "--hull-bin" => a.hull_bin = value().into(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.socket.as_os_str().is_empty() || a.run_dir.as_os_str().is_empty() {
        usage("--socket and --run-dir are required");
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("lab_pod: {msg}\nsee the top of runtime-shim/examples/lab_pod.rs");
    std::process::exit(2)
}

/// One line of text safe inside a double-quoted LAB field.
fn clean(text: &str) -> String {
    let one: String = text
        .trim()
        .replace(['\r', '\n'], ";")
        .chars()
        .map(|c| match c {
            '"' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    one.chars().take(400).collect()
}

/// The run's state: the checks that failed, and what the sandboxes' consoles showed.
struct Run {
    args: Args,
    cri: Cri,
    failed: Vec<String>,
    hang: bool,
    consoles: Arc<Mutex<BTreeMap<String, String>>>,
    l1_kernel: String,
    l1_boot_id: String,
}

/// Result of one check: a short description of what was seen, or why it failed.
type Check = Result<String, String>;

impl Run {
    fn line(&self, tag: &str, rest: &str) {
        println!(
            "{tag} name={} attempt={} {rest}",
            self.args.name, self.args.attempt
        );
    }

    fn check(&mut self, what: &str, result: Check) -> bool {
        let (status, detail) = match &result {
            Ok(d) => ("ok", d.clone()),
            Err(e) => ("fail", e.clone()),
        };
        self.line(
            "LAB-POD",
            &format!("check={what} status={status} detail=\"{}\"", clean(&detail)),
        );
        if result.is_err() {
            self.failed.push(what.to_string());
        }
        result.is_ok()
    }

    fn tail(&self, stream: &str, text: &str, lines: usize) {
        let all: Vec<&str> = text.lines().collect();
        for l in &all[all.len().saturating_sub(lines)..] {
            println!(
                "LAB-TAIL name={} attempt={} stream={stream} | {}",
                self.args.name,
                self.args.attempt,
                clean(l)
            );
        }
    }

    /// The last console output of every sandbox seen so far (the shim deletes the files on
    /// teardown, so the watcher thread keeps copies).
    fn console_tails(&self) {
        for (sandbox, text) in self.consoles.lock().unwrap().iter() {
            self.tail(&format!("console-{}", cri::short(sandbox)), text, 15);
        }
    }

    fn exec(&self, id: &str, script: &str) -> Result<cri::Exec, String> {
        self.cri
            .exec_sync(id, &["sh", "-c", script])
            .map_err(|e| format!("ExecSync `{script}` in {}: {e}", cri::short(id)))
    }

    /// `sh -c script` in container `id`, which must exit 0; its stdout.
    fn sh(&self, id: &str, script: &str) -> Result<String, String> {
        let e = self.exec(id, script)?;
        if e.code != 0 {
            return Err(format!(
                "`{script}` in {}: exit {}, stdout '{}', stderr '{}'",
                cri::short(id),
                e.code,
                e.stdout.trim(),
                e.stderr.trim()
            ));
        }
        Ok(e.stdout)
    }

    fn pod_config(&self, name: &str) -> api::PodSandboxConfig {
        let log_dir = self.args.pod_dir.join(name);
        let _ = std::fs::create_dir_all(&log_dir);
        let mut cfg = cri::pod_config(name, &log_dir, "/labpods");
        cfg.hostname = format!("{name}-host");
        cfg.dns_config = Some(api::DnsConfig {
            servers: vec![DNS_SERVER.into()],
            searches: vec![DNS_SEARCH.into()],
            options: vec![DNS_OPTION.into()],
        });
        cfg
    }

    /// RunPodSandbox + CreateContainer + StartContainer of the pod's containers, timed.
    /// `containers`: (name, command).
    fn start_pod(
        &mut self,
        cfg: &api::PodSandboxConfig,
        handler: &str,
        containers: &[(&str, Vec<String>)],
    ) -> Result<(String, Vec<String>, [u128; 3]), String> {
        let t0 = Instant::now();
        let pod = self.cri.run_pod(cfg, handler).map_err(|e| {
            let msg = format!("RunPodSandbox ({handler}): {e}");
            if handler == "hull" && e.message.contains("did not answer") {
                let reached = self
                    .consoles
                    .lock()
                    .unwrap()
                    .values()
                    .any(|c| c.contains("HULL-AGENT"));
                if !reached {
                    self.hang = true;
                }
            }
            msg
        })?;
        let run_ms = t0.elapsed().as_millis();
        let (mut create_ms, mut start_ms) = (0, 0);
        let mut ids = Vec::new();
        for (name, cmd) in containers {
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let c = cri::container_config(name, IMAGE, &cmd);
            let t = Instant::now();
            let id = self
                .cri
                .create_container(&pod, &c, cfg)
                .map_err(|e| format!("CreateContainer {name} ({handler}): {e}"))?;
            create_ms += t.elapsed().as_millis();
            let t = Instant::now();
            self.cri
                .start(&id)
                .map_err(|e| format!("StartContainer {name} ({handler}): {e}"))?;
            start_ms += t.elapsed().as_millis();
            ids.push(id);
        }
        Ok((pod, ids, [run_ms, create_ms, start_ms]))
    }

    fn stop_remove(&self, pod: &str) -> Result<(), String> {
        self.cri
            .stop_pod(pod)
            .map_err(|e| format!("StopPodSandbox {}: {e}", cri::short(pod)))?;
        self.cri
            .remove_pod(pod)
            .map_err(|e| format!("RemovePodSandbox {}: {e}", cri::short(pod)))
    }

    fn pod_ip(&self, pod: &str) -> Check {
        let st = self
            .cri
            .pod_status(pod)
            .map_err(|e| format!("PodSandboxStatus: {e}"))?;
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "pod {} has no IPv4 address: '{ip}'",
                cri::short(pod)
            ));
        }
        Ok(ip)
    }

    /// `wget` from L1 (busybox) of the pod's httpd page; retried while httpd starts.
    /// The pod's IPv6 address (the lab's network is dual stack): CRI's additional IPs.
    fn pod_ipv6(&self, pod: &str) -> Check {
        let st = self
            .cri
            .pod_status(pod)
            .map_err(|e| format!("PodSandboxStatus: {e}"))?;
        let ips: Vec<String> = st
            .network
            .map(|n| n.additional_ips.into_iter().map(|i| i.ip).collect())
            .unwrap_or_default();
        ips.iter()
            .find(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
            .cloned()
            .ok_or_else(|| format!("pod {} has no IPv6 address: {ips:?}", cri::short(pod)))
    }

    fn wget_from_l1(&self, ip: &str) -> Check {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let url = format!("http://{host}:{PORT}/");
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(20) {
            // busybox 1.35's `wget -T` crashes (SIGSEGV): `timeout` bounds it instead.
            match std::process::Command::new("timeout")
                .args(["-s", "KILL", "10", "wget", "-q", "-O-", &url])
                .output()
            {
                Ok(out) if out.status.success() => {
                    return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
                }
                Ok(out) => {
                    last = format!(
                        "exit {:?}: {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Err(e) => last = format!("running wget: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("wget {url} from L1: {last}"))
    }
}

fn web_command(tag: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p /www && echo \"hull-pod {tag} $(hostname)\" > /www/index.html && exec httpd -f -p {PORT} -h /www"
    );
    vec!["sh".into(), "-c".into(), script]
}

fn sleep_command() -> Vec<String> {
    vec!["sleep".into(), "100000".into()]
}

/// One pod with two containers in one microVM (the smoke), optionally a second pod (full).
fn scenario(run: &mut Run) {
    let mut pool = None;
    if run.args.pool {
        match pool::PoolDaemon::start(&run.args) {
            Ok((daemon, ready)) => {
                run.check("pool-ready", Ok(ready));
                let background = pool::ready_vm_in_background(&run.args.run_dir);
                run.check("pool-vm-background", background);
                pool = Some(daemon);
            }
            Err(e) => {
                run.check("pool-ready", Err(e));
                return;
            }
        }
    }
    let cfg_a = run.pod_config("lab-a");
    let started = run.start_pod(
        &cfg_a,
        "hull",
        &[("web", web_command("a")), ("side", sleep_command())],
    );
    let (pod_a, ids, times) = match started {
        Ok(s) => s,
        Err(e) => {
            run.check("pod-start", Err(e));
            run.console_tails();
            return;
        }
    };
    let (web, side) = (ids[0].clone(), ids[1].clone());
    run.check(
        "pod-start",
        Ok(format!(
            "pod {} with containers web and side started (hull)",
            cri::short(&pod_a)
        )),
    );
    run.line(
        "LAB-POD-TIME",
        &format!(
            "runtime=hull pod=a run_ms={} create_ms={} start_ms={} total_ms={}",
            times[0],
            times[1],
            times[2],
            times.iter().sum::<u128>()
        ),
    );
    let mut pods = vec![pod_a.clone()];
    if let Some(mut daemon) = pool.take() {
        let claimed = pool::claimed(&run.args.run_dir, &pod_a);
        run.check("pool-claimed", claimed);
        let normal = pool::claimed_vm_at_normal_priority(&run.args.run_dir, &pod_a);
        run.check("pool-vm-normal", normal);
        let stopped = daemon.stop(&run.args.run_dir);
        run.check("pool-stop", stopped);
    }
    pod_checks(run, &pod_a, &web, &side);
    jail_checks(run);
    if run.args.pool {
        let cfg_c = run.pod_config("lab-c");
        match run.start_pod(&cfg_c, "hull", &[("side", sleep_command())]) {
            Ok((pod_c, _, _)) => {
                pods.push(pod_c.clone());
                let own = pool::booted_own(&run.args.run_dir, &pod_c)
                    .and_then(|own| run.pod_ip(&pod_c).map(|ip| format!("{own}; {ip}")));
                run.check("pod-own-vm", own);
            }
            Err(e) => {
                run.check("pod-own-vm", Err(e));
            }
        }
    }

    if run.args.full {
        let cfg_b = run.pod_config("lab-b");
        match run.start_pod(&cfg_b, "hull", &[("web", web_command("b"))]) {
            Ok((pod_b, ids_b, _)) => {
                pods.push(pod_b.clone());
                run.check("pod-b-start", Ok(format!("pod {}", cri::short(&pod_b))));
                cross_pod_checks(run, (&pod_a, &side), (&pod_b, &ids_b[0]));
                port_forward_path(run, &pod_a);
                cri_port_forward(run, &pod_a);
            }
            Err(e) => {
                run.check("pod-b-start", Err(e));
            }
        }
    }
    if !run.failed.is_empty() {
        run.console_tails();
    }

    let mut stop_errors = Vec::new();
    for pod in &pods {
        if let Err(e) = run.stop_remove(pod) {
            stop_errors.push(e);
        }
    }
    let removed = if stop_errors.is_empty() {
        Ok(format!(
            "StopPodSandbox + RemovePodSandbox of {} pod(s)",
            pods.len()
        ))
    } else {
        Err(stop_errors.join("; "))
    };
    run.check("pod-remove", removed);
    let mut left = wait_clean(&run.args);
    let listed = run.cri.list_pods().unwrap_or_default();
    if !listed.is_empty() {
        left.push(format!("CRI still lists pods {listed:?}"));
    }
    run.check(
        "nothing-left",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, pod cgroup, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}

fn main() {
    let args = parse_args();
    let consoles = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (dir, c, s) = (args.run_dir.clone(), consoles.clone(), stop.clone());
        std::thread::spawn(move || watch_consoles(dir, c, s))
    };
    let cri = Cri::connect(&args.socket).unwrap_or_else(|e| {
        eprintln!("lab_pod: {e}");
        std::process::exit(1)
    });
    let mut run = Run {
        args,
        cri,
        failed: Vec::new(),
        hang: false,
        consoles,
        l1_kernel: read_trim("/proc/sys/kernel/osrelease"),
        l1_boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
    };
    let t0 = Instant::now();
    let ready = (|| loop {
        let missing: Vec<&str> = [IMAGE, PAUSE_IMAGE]
            .into_iter()
            .filter(|i| !run.cri.image_present(i).unwrap_or(false))
            .collect();
        let net = run.cri.network_ready().unwrap_or(false);
        if missing.is_empty() && net {
            return Ok(format!(
                "images and CNI network ready in {} ms",
                t0.elapsed().as_millis()
            ));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "CRI not ready: images missing {missing:?}, network ready {net}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    })();
    if run.check("cri-ready", ready) {
        if run.args.quickstart {
            quickstart::scenario(&mut run);
        } else {
            scenario(&mut run);
            if run.args.bench > 0 && !run.hang {
                let n = run.args.bench;
                bench::bench(&mut run, n);
                if !run.hang {
                    net_bench::net_bench(&mut run, n);
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let status = if run.hang {
        "hang"
    } else if run.failed.is_empty() {
        "ok"
    } else {
        "fail"
    };
    let failed = run.failed.join(" ");
    run.line(
        "LAB-POD-END",
        &format!("status={status} failed=\"{failed}\""),
    );
    std::process::exit(if status == "ok" { 0 } else { 1 });
}
