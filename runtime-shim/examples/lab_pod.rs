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
//! LAB-TAIL name=.. attempt=.. stream=<what> | <line>        (evidence of a failure)
//! LAB-POD-END name=.. status=ok|fail|hang failed="<checks>"
//! ```
//!
//! `hang`: the pod's guest never reached its agent (the lab's known L2 boot hang, see
//! shared/FACTS.md): RunPodSandbox failed with the shim's "did not answer" and no console of the
//! sandbox showed the agent's line. Anything else that goes wrong is a failure of the product.
//!
//! usage: lab_pod --socket SOCK --run-dir DIR --pod-dir DIR --netns-dir DIR --ipam-dir DIR
//!                [--full] [--bench N] [--name NAME] [--attempt N]

#[path = "../tests/common/cri.rs"]
#[allow(dead_code)]
mod cri;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cri::{api, Cri};

/// The busybox image and the pause image the lab imports into namespace k8s.io.
const IMAGE: &str = "lab.local/busybox:lab";
const PAUSE_IMAGE: &str = "lab.local/pause:lab";
/// busybox httpd's port in the pods.
const PORT: u16 = 8080;
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
    fn wget_from_l1(&self, ip: &str) -> Check {
        let url = format!("http://{ip}:{PORT}/");
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

/// Copies the consoles of the sandboxes under `run_dir` every 300 ms until `stop`.
fn watch_consoles(
    run_dir: PathBuf,
    consoles: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(entries) = std::fs::read_dir(&run_dir) {
            for e in entries.flatten() {
                let Ok(data) = std::fs::read(e.path().join("console.log")) else {
                    continue;
                };
                let tail = &data[data.len().saturating_sub(4096)..];
                let text = String::from_utf8_lossy(tail).into_owned();
                let name = e.file_name().to_string_lossy().into_owned();
                let mut map = consoles.lock().unwrap();
                // Keep the agent line once seen, even when it scrolled out of the tail.
                let had_agent = map.get(&name).is_some_and(|t| t.contains("HULL-AGENT"));
                let text = if had_agent && !text.contains("HULL-AGENT") {
                    format!("(HULL-AGENT seen earlier)\n{text}")
                } else {
                    text
                };
                map.insert(name, text);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Processes in L1 whose program name (argv[0]'s file name) is one of `names`.
fn processes_named(names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let prog = String::from_utf8_lossy(argv0);
        let base = prog.rsplit('/').next().unwrap_or_default();
        if names.contains(&base) {
            found.push(format!("{} {}", e.file_name().to_string_lossy(), prog));
        }
    }
    found
}

fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What pods leave behind in L1, empty when nothing: our VMM, virtiofsd and shim processes,
/// sandbox directories, taps in L1's own namespace, CRI's netns mounts, CNI address leases.
fn leftovers(args: &Args) -> Vec<String> {
    let mut left = Vec::new();
    for p in processes_named(&["hull-vmm", "virtiofsd", "containerd-shim-hull-v2"]) {
        left.push(format!("process {p}"));
    }
    for d in dir_entries(&args.run_dir) {
        left.push(format!("sandbox dir {d}"));
    }
    for n in dir_entries(Path::new("/sys/class/net")) {
        if Path::new("/sys/class/net")
            .join(&n)
            .join("tun_flags")
            .exists()
        {
            left.push(format!("tap {n} in L1's netns"));
        }
    }
    if !args.netns_dir.as_os_str().is_empty() {
        for n in dir_entries(&args.netns_dir) {
            left.push(format!("netns {n}"));
        }
    }
    if !args.ipam_dir.as_os_str().is_empty() {
        for n in dir_entries(&args.ipam_dir) {
            if n.parse::<std::net::IpAddr>().is_ok() {
                left.push(format!("CNI lease {n}"));
            }
        }
    }
    left
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
    pod_checks(run, &pod_a, &web, &side);

    if run.args.full {
        let cfg_b = run.pod_config("lab-b");
        match run.start_pod(&cfg_b, "hull", &[("web", web_command("b"))]) {
            Ok((pod_b, ids_b, _)) => {
                pods.push(pod_b.clone());
                run.check("pod-b-start", Ok(format!("pod {}", cri::short(&pod_b))));
                cross_pod_checks(run, (&pod_a, &side), (&pod_b, &ids_b[0]));
                port_forward_path(run, &pod_a);
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
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}

fn pod_checks(run: &mut Run, pod: &str, web: &str, side: &str) {
    // ExecSync in each container: exit code and both output streams.
    let r = run
        .exec(side, "echo out-side; echo err-side >&2; exit 3")
        .and_then(|e| {
            if e.code == 3 && e.stdout == "out-side\n" && e.stderr == "err-side\n" {
                Ok("side: exit 3, stdout 'out-side', stderr 'err-side'".to_string())
            } else {
                Err(format!("side: {e:?}"))
            }
        });
    run.check("exec-side", r);
    let r = run.sh(web, "echo out-web").and_then(|out| {
        if out == "out-web\n" {
            Ok("web: exit 0, stdout 'out-web'".to_string())
        } else {
            Err(format!("web: stdout '{out}'"))
        }
    });
    run.check("exec-web", r);

    // Both containers run in one guest that is not L1: same kernel boot id, another kernel.
    let ids = (|| -> Result<(String, String, String), String> {
        let a = run.sh(web, "cat /proc/sys/kernel/random/boot_id")?;
        let b = run.sh(side, "cat /proc/sys/kernel/random/boot_id")?;
        let k = run.sh(side, "uname -r")?;
        Ok((a.trim().into(), b.trim().into(), k.trim().into()))
    })();
    let r = ids.and_then(|(a, b, k)| {
        if a != b {
            Err(format!("web boot id {a} != side boot id {b}: not one VM"))
        } else if a == run.l1_boot_id || k == run.l1_kernel {
            Err(format!("containers run on L1's kernel ({k}, boot id {a})"))
        } else {
            Ok(format!(
                "one guest kernel {k} (L1: {}), boot id {a}",
                run.l1_kernel
            ))
        }
    });
    run.check("one-microvm", r);

    let r = (|| {
        let a = run.sh(web, "hostname")?;
        let b = run.sh(side, "hostname")?;
        if a == b && a.trim() == "lab-a-host" {
            Ok(format!("both '{}'", a.trim()))
        } else {
            Err(format!(
                "web '{}', side '{}', pod asked for 'lab-a-host'",
                a.trim(),
                b.trim()
            ))
        }
    })();
    run.check("same-hostname", r);

    let r = (|| {
        run.sh(web, "echo shm-from-web > /dev/shm/lab-token")?;
        let got = run.sh(side, "cat /dev/shm/lab-token")?;
        if got == "shm-from-web\n" {
            Ok("side reads what web wrote in /dev/shm".to_string())
        } else {
            Err(format!("side read '{got}'"))
        }
    })();
    run.check("same-shm", r);

    let ip = run.pod_ip(pod);
    let r = ip.clone().and_then(|ip| {
        let trie = run.sh(side, "cat /proc/net/fib_trie")?;
        let lines: Vec<&str> = trie.lines().collect();
        let local = lines
            .windows(2)
            .any(|w| w[0].trim_end().ends_with(&format!("-- {ip}")) && w[1].contains("host LOCAL"));
        if local {
            Ok(format!(
                "CNI IP {ip} is a local address of the guest (fib_trie in side)"
            ))
        } else {
            let addrs = run.sh(side, "ip -o addr 2>&1 || true").unwrap_or_default();
            Err(format!(
                "CNI IP {ip} is not local in the guest; ip -o addr: {addrs}"
            ))
        }
    });
    run.check("pod-ip", r);
    let ip = ip.ok();

    let r = match &ip {
        Some(ip) => run.wget_from_l1(ip).and_then(|page| {
            if page.starts_with("hull-pod a ") {
                Ok(format!("L1 got '{page}' from http://{ip}:{PORT}/"))
            } else {
                Err(format!("L1 got '{page}'"))
            }
        }),
        None => Err("no pod IP".into()),
    };
    if !run.check("l1-http", r) {
        diagnose_network(run, side, ip.as_deref().unwrap_or("0.0.0.0"));
    }

    let r = run.sh(side, "cat /etc/resolv.conf").and_then(|resolv| {
        let wanted = [
            format!("nameserver {DNS_SERVER}"),
            format!("search {DNS_SEARCH}"),
            format!("options {DNS_OPTION}"),
        ];
        match wanted.iter().find(|w| !resolv.contains(w.as_str())) {
            None => Ok(format!("resolv.conf as asked: {}", resolv.trim())),
            Some(w) => Err(format!("resolv.conf lacks '{w}': {resolv}")),
        }
    });
    run.check("resolv-conf", r);
}

/// The network as L1, the pod's netns on L1 (veth, tap, tc filters) and the guest see it, as
/// LAB-TAIL lines: printed when a network check failed.
fn diagnose_network(run: &Run, container: &str, ip: &str) {
    let l1 = format!(
        "ping -c 1 -W 2 {ip}; grep -A1 -E '^(Ip|Tcp):' /proc/net/snmp; cat /proc/net/dev; ip addr; ip route; ip neigh; \
         cat {}/lab-a/*.log; \
         for f in {}/*/netns; do ns=$(cat \"$f\"); echo \"== pod netns $ns\"; \
         nsenter --net=\"$ns\" sh -c 'cat /proc/net/dev; ip addr; ip route; ip neigh; \
         for d in $(ls /sys/class/net); do tc qdisc show dev $d; tc filter show dev $d; done'; done",
        run.args.pod_dir.display(),
        run.args.run_dir.display()
    );
    match std::process::Command::new("sh").args(["-c", &l1]).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            run.tail("diag-l1", &text, 120);
        }
        Err(e) => run.tail("diag-l1", &format!("sh: {e}"), 1),
    }
    let guest = format!(
        "netstat -ltn; grep -A1 -E '^(Ip|Tcp):' /proc/net/snmp; cat /proc/net/dev; ip neigh; \
         ping -c 1 -W 2 10.88.0.1; timeout 5 wget -q -O- http://127.0.0.1:{PORT}/; timeout 5 wget -q -O- http://{ip}:{PORT}/; \
         grep -A1 -E '^(Ip|Tcp):' /proc/net/snmp"
    );
    match run.exec(container, &format!("{guest} 2>&1")) {
        Ok(e) => run.tail("diag-guest", &e.stdout, 60),
        Err(e) => run.tail("diag-guest", &e, 1),
    }
}

/// containerd's CRI PortForward enters the pod's netns on the host and dials
/// `localhost:<port>` there (shared/FACTS.md); the shim mirrors the guest's TCP listeners
/// there. This checks that path (busybox `wget` in the netns, retried while the mirror picks
/// the listener up), not the CRI PortForward stream itself.
fn port_forward_path(run: &mut Run, pod: &str) {
    let netns =
        std::fs::read_to_string(run.args.run_dir.join(pod).join("netns")).unwrap_or_default();
    let url = format!("http://127.0.0.1:{PORT}/");
    let started = Instant::now();
    let mut last = String::from("no netns recorded in the sandbox dir");
    while !netns.is_empty() && started.elapsed() < Duration::from_secs(15) {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["timeout", "-s", "KILL", "10", "wget", "-q", "-O-", &url])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let page = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let r = if page.starts_with("hull-pod a ") {
                    Ok(format!(
                        "{url} in the pod's netns on L1 reaches the guest: '{page}'"
                    ))
                } else {
                    Err(format!("{url} in the pod's netns answered '{page}'"))
                };
                run.check("portforward-path", r);
                return;
            }
            Ok(o) => {
                last = format!(
                    "wget exit {:?}: {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            }
            Err(e) => last = format!("nsenter: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    run.check(
        "portforward-path",
        Err(format!("{url} in the pod's netns {netns}: {last}")),
    );
}

fn cross_pod_checks(run: &mut Run, (pod_a, side_a): (&str, &str), (pod_b, web_b): (&str, &str)) {
    let r = (|| {
        let ip_a = run.pod_ip(pod_a)?;
        let ip_b = run.pod_ip(pod_b)?;
        let boot_a = run.sh(side_a, "cat /proc/sys/kernel/random/boot_id")?;
        let boot_b = run.sh(web_b, "cat /proc/sys/kernel/random/boot_id")?;
        if boot_a == boot_b {
            return Err(format!(
                "pods a and b share one kernel (boot id {})",
                boot_a.trim()
            ));
        }
        // b's httpd from a, then a's httpd from b.
        let script = |ip: &str| {
            format!(
                "i=0; until timeout 10 wget -q -O- http://{ip}:{PORT}/; do i=$((i+1)); [ $i -ge 20 ] && exit 1; sleep 0.5; done"
            )
        };
        let from_a = run.sh(side_a, &script(&ip_b))?;
        let from_b = run.sh(web_b, &script(&ip_a))?;
        if from_a.starts_with("hull-pod b ") && from_b.starts_with("hull-pod a ") {
            Ok(format!(
                "two microVMs: a ({ip_a}) got '{}' from b, b ({ip_b}) got '{}' from a",
                from_a.trim(),
                from_b.trim()
            ))
        } else {
            Err(format!("a got '{from_a}', b got '{from_b}'"))
        }
    })();
    run.check("pod-to-pod", r);
}

/// Pod start (RunPodSandbox + CreateContainer + StartContainer of one container), hull vs
/// runc, interleaved, `n` each. Figures only.
fn bench(run: &mut Run, n: usize) {
    let mut figures: BTreeMap<&str, Vec<[u128; 3]>> = BTreeMap::new();
    let mut errors = Vec::new();
    for i in 0..n {
        for handler in ["hull", "runc"] {
            let cfg = run.pod_config(&format!("bench-{handler}-{i}"));
            match run.start_pod(&cfg, handler, &[("c", sleep_command())]) {
                Ok((pod, _, t)) => {
                    figures.entry(handler).or_default().push(t);
                    if let Err(e) = run.stop_remove(&pod) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for handler in ["hull", "runc"] {
        let f = figures.get(handler).cloned().unwrap_or_default();
        let list = |k: Option<usize>| {
            f.iter()
                .map(|t| match k {
                    Some(k) => t[k].to_string(),
                    None => t.iter().sum::<u128>().to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        run.line(
            "LAB-POD-BENCH",
            &format!(
                "runtime={handler} total_ms=\"{}\" run_ms=\"{}\" create_ms=\"{}\" start_ms=\"{}\"",
                list(None),
                list(Some(0)),
                list(Some(1)),
                list(Some(2))
            ),
        );
    }
    // The figures are never judged; a pod that would not start is.
    run.check(
        "bench-pods",
        if errors.is_empty() {
            Ok(format!("{n} pods each with hull and runc"))
        } else {
            Err(errors.join("; "))
        },
    );
    let left = wait_clean(&run.args);
    run.check(
        "nothing-left-after-bench",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}

/// [`leftovers`] once the teardown had a few seconds (the shim exits after its last task).
fn wait_clean(args: &Args) -> Vec<String> {
    let started = Instant::now();
    let mut left = leftovers(args);
    while !left.is_empty() && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        left = leftovers(args);
    }
    left
}

fn main() {
    let args = parse_args();
    let consoles = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (dir, c, s) = (args.run_dir.clone(), consoles.clone(), stop.clone());
        std::thread::spawn(move || watch_consoles(dir, c, s))
    };
    let cri = Cri::connect(&args.socket, Arc::new(Mutex::new(BTreeSet::new())));
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
        scenario(&mut run);
        if run.args.bench > 0 && !run.hang {
            let n = run.args.bench;
            bench(&mut run, n);
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
