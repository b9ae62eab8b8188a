//! The pod scenario's checks inside one pod, across pods, and through the pod's netns on L1.

use std::time::{Duration, Instant};

use crate::{ws_port_forward, Run, DNS_OPTION, DNS_SEARCH, DNS_SERVER, PORT};

pub fn pod_checks(run: &mut Run, pod: &str, web: &str, side: &str) {
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

    // The same over IPv6: the CNI's second address reached the guest NIC, with its route.
    let r = run.pod_ipv6(pod).and_then(|ip6| {
        let page = run.wget_from_l1(&ip6)?;
        if page.starts_with("hull-pod a ") {
            Ok(format!("L1 got '{page}' from http://[{ip6}]:{PORT}/"))
        } else {
            Err(format!("L1 got '{page}' from [{ip6}]"))
        }
    });
    if !run.check("l1-http-ipv6", r) {
        let addrs = run.sh(side, "ip -o addr; ip -6 route").unwrap_or_default();
        run.tail("diag-guest-ipv6", &addrs, 20);
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
pub fn diagnose_network(run: &Run, container: &str, ip: &str) {
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
pub fn port_forward_path(run: &mut Run, pod: &str) {
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

pub fn cross_pod_checks(
    run: &mut Run,
    (pod_a, side_a): (&str, &str),
    (pod_b, web_b): (&str, &str),
) {
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

/// The CRI PortForward stream itself, as `kubectl port-forward` reaches it: PortForward's URL,
/// a WebSocket to containerd's streaming server, an HTTP request on the data channel; the
/// answer must be the page of httpd in the guest. Retried while the shim mirrors the listener.
pub fn cri_port_forward(run: &mut Run, pod: &str) {
    let request = format!("GET / HTTP/1.0\r\nHost: localhost:{PORT}\r\n\r\n");
    let complete = |d: &[u8]| String::from_utf8_lossy(d).contains("hull-pod a ");
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        let answer = run
            .cri
            .port_forward(pod, &[PORT as i32])
            .map_err(|e| format!("PortForward: {e}"))
            .and_then(|url| {
                ws_port_forward::exchange(
                    &url,
                    request.as_bytes(),
                    complete,
                    Duration::from_secs(15),
                )
                .map_err(|e| format!("stream {url}: {e}"))
            });
        match answer {
            Ok(data) if complete(&data) => {
                let text = String::from_utf8_lossy(&data);
                let page = text.lines().last().unwrap_or_default().trim().to_string();
                run.check(
                    "cri-portforward",
                    Ok(format!("CRI PortForward stream (WebSocket, v4.channel.k8s.io) to port {PORT} got '{page}'")),
                );
                return;
            }
            Ok(data) => {
                last = format!(
                    "answer without the page: '{}'",
                    String::from_utf8_lossy(&data)
                )
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    run.check("cri-portforward", Err(last));
}

/// The jail (issue 14): every hull-vmm in L1 runs unprivileged, without capabilities, under
/// seccomp, as PID 1 of its own pid namespace, in other mount/ipc/uts namespaces than L1's, in
/// the pod cgroup, with a root holding only what it needs.
pub fn jail_checks(run: &mut Run) {
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        if !status.lines().any(|l| l == "Name:\thull-vmm") {
            continue;
        }
        let pid = e.file_name().to_string_lossy().into_owned();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let uid = field("Uid");
        let mut bad = Vec::new();
        if uid.split(' ').any(|u| u == "0") {
            bad.push(format!("Uid {uid}"));
        }
        for cap in ["CapPrm", "CapEff", "CapBnd"] {
            if !field(cap).trim_start_matches('0').is_empty() {
                bad.push(format!("{cap} {}", field(cap)));
            }
        }
        if field("NoNewPrivs") != "1" {
            bad.push(format!("NoNewPrivs {}", field("NoNewPrivs")));
        }
        if field("Seccomp") != "2" {
            bad.push(format!("Seccomp {}", field("Seccomp")));
        }
        if !field("NSpid").ends_with(" 1") {
            bad.push(format!("NSpid {}", field("NSpid")));
        }
        for ns in ["mnt", "pid", "ipc", "uts"] {
            let own = std::fs::read_link(p.join("ns").join(ns)).ok();
            if own.is_none() || own == std::fs::read_link(format!("/proc/self/ns/{ns}")).ok() {
                bad.push(format!("{ns} namespace is L1's"));
            }
        }
        let cgroup = std::fs::read_to_string(p.join("cgroup")).unwrap_or_default();
        if !cgroup.contains("hull-pods/") {
            bad.push(format!("cgroup {}", cgroup.trim().replace('\n', ",")));
        }
        let mut root: Vec<String> = std::fs::read_dir(p.join("root"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        root.sort();
        if root
            .iter()
            .any(|n| ["etc", "usr", "bin", "home", "proc", "sys"].contains(&n.as_str()))
        {
            bad.push(format!("root holds {root:?}"));
        }
        let summary = format!("pid {pid} uid {uid} root {}", root.join(","));
        if bad.is_empty() {
            seen.push(summary);
        } else {
            wrong.push(format!("{summary}: {}", bad.join(", ")));
        }
    }
    let r = if !wrong.is_empty() {
        Err(wrong.join("; "))
    } else if seen.is_empty() {
        Err("no hull-vmm process found in L1".into())
    } else {
        Ok(format!(
            "{} hull-vmm jailed (no caps, no_new_privs, seccomp, own pid/mnt/ipc/uts ns, pod cgroup): {}",
            seen.len(),
            seen.join("; ")
        ))
    };
    run.check("vmm-jailed", r);
}
