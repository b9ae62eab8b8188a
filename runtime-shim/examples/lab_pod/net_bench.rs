//! Network figures L1 <-> pod (issue 13), hull vs runc in the same run. One pod per runtime,
//! both up at once, serving from the pod's /dev/shm (memory in both runtimes, so the figures
//! are the network path's and not the rootfs's): busybox `httpd` for downloads and small
//! requests, busybox `nc` as a sink for uploads. From L1, `rounds` rounds, the runtimes
//! interleaved within each: one download and one upload of [`BULK_MIB`], and [`REQUESTS`] small
//! GETs, each on a new TCP connection. Figures only, never judged:
//!
//! ```text
//! LAB-NET-BENCH name=.. runtime=hull|runc down_mbit="..." up_mbit="..." req_ms="..."
//! ```
//!
//! A pod that does not start or a transfer that fails is a failed check (`net-bench`).

use std::time::Duration;

use hull_runtime::bench::netprobe::{self, ProbeError};

use crate::l1::wait_clean;
use crate::{cri, Run};

/// Size of each download and upload.
const BULK_MIB: usize = 16;
/// Small requests per round and runtime.
const REQUESTS: usize = 20;

#[derive(Default)]
struct Figures {
    down_mbit: Vec<f64>,
    up_mbit: Vec<f64>,
    req_ms: Vec<f64>,
}

struct Target {
    handler: &'static str,
    pod: String,
    ip: String,
    figures: Figures,
}

fn start(run: &mut Run, handler: &'static str) -> Result<Target, String> {
    let cfg = run.pod_config(&format!("net-{handler}"));
    let (pod, _, _) = run.start_pod(
        &cfg,
        handler,
        &[
            ("srv", netprobe::server_command(BULK_MIB)),
            ("sink", netprobe::sink_command()),
        ],
    )?;
    let target = run.pod_ip(&pod).and_then(|ip| {
        netprobe::wait_serving(&ip, Duration::from_secs(30))
            .map(|()| ip)
            .map_err(|e| e.to_string())
    });
    match target {
        Ok(ip) => Ok(Target {
            handler,
            pod,
            ip,
            figures: Figures::default(),
        }),
        Err(e) => {
            let _ = run.stop_remove(&pod);
            Err(format!("{handler} pod {}: {e}", cri::short(&pod)))
        }
    }
}

fn round(t: &mut Target) -> Result<(), ProbeError> {
    let f = &mut t.figures;
    f.down_mbit.push(netprobe::download(&t.ip, BULK_MIB)?);
    f.up_mbit.push(netprobe::upload(&t.ip, BULK_MIB)?);
    for _ in 0..REQUESTS {
        f.req_ms.push(netprobe::request(&t.ip)?);
    }
    Ok(())
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn net_bench(run: &mut Run, rounds: usize) {
    let mut errors = Vec::new();
    let mut targets = Vec::new();
    for handler in ["hull", "runc"] {
        match start(run, handler) {
            Ok(t) => targets.push(t),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        'rounds: for _ in 0..rounds {
            for t in targets.iter_mut() {
                if let Err(e) = round(t) {
                    errors.push(format!("{}: {e}", t.handler));
                    break 'rounds;
                }
            }
        }
    }
    for t in &targets {
        let f = &t.figures;
        run.line(
            "LAB-NET-BENCH",
            &format!(
                "runtime={} bulk_mib={BULK_MIB} down_mbit=\"{}\" up_mbit=\"{}\" req_ms=\"{}\"",
                t.handler,
                list(&f.down_mbit),
                list(&f.up_mbit),
                list(&f.req_ms)
            ),
        );
    }
    for t in &targets {
        if let Err(e) = run.stop_remove(&t.pod) {
            errors.push(e);
        }
    }
    run.check(
        "net-bench",
        if errors.is_empty() {
            Ok(format!(
                "{rounds} rounds: {BULK_MIB} MiB down + up, {REQUESTS} requests, hull and runc"
            ))
        } else {
            Err(errors.join("; "))
        },
    );
    let left = wait_clean(&run.args);
    run.check(
        "nothing-left-after-net-bench",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, pod cgroup, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}
