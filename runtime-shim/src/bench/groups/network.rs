//! Pod network: from the host `hull bench` runs on to a pod's IP, hull's pod against runc's,
//! both up at once, measured in interleaved rounds: bulk download and upload, and small
//! requests each on a new TCP connection ([`netprobe`]). hull in host-agent mode has no pod
//! network (the pod's interfaces go into the VM), so there only runc's pod is measured and
//! the table says why hull's column is empty.

use std::time::Duration;

use crate::bench::netprobe::{self, ProbeError};
use crate::bench::pods::Pods;
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Small requests per round and runtime.
const REQUESTS: usize = 20;
/// Bulk transfer size at --scale 1.
const BULK_MIB: u64 = 16;

#[derive(Default)]
struct Samples {
    down: Vec<f64>,
    up: Vec<f64>,
    req: Vec<f64>,
}

fn probe_error(rt: Rt, e: ProbeError) -> BenchError {
    BenchError::Pod {
        detail: format!("{} pod: {e}", rt.short()),
    }
}

/// Runs the group; it is skipped (with the reason) where CRI cannot run pods.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("network", "pod network: this host <-> a pod's IP");
    let Some(mut pods) = Pods::open_for(bench, &mut group) else {
        return Ok(group);
    };
    let bulk_mib = super::scaled(bench, BULK_MIB) as usize;
    let runtimes: &[Rt] = if bench.location.vm {
        &Rt::BOTH
    } else {
        &[Rt::Runc]
    };
    let (mut ips, mut pods_started) = (Vec::new(), Vec::new());
    for &rt in runtimes {
        bench
            .progress
            .show("network", "starting the pods", ips.len(), runtimes.len());
        let containers = [
            ("srv", netprobe::server_command(bulk_mib)),
            ("sink", netprobe::sink_command()),
        ];
        let (pod, _) = pods
            .start(rt, &format!("net-{}", rt.short()), &containers)
            .map_err(|detail| BenchError::Pod { detail })?;
        pods_started.push(pod.clone());
        let ip = pods
            .ipv4(&pod)
            .map_err(|detail| BenchError::Pod { detail })?;
        netprobe::wait_serving(&ip, Duration::from_secs(60)).map_err(|e| probe_error(rt, e))?;
        ips.push(ip);
    }
    let mut samples: [Samples; 2] = Default::default();
    let rounds = bench.args.warmup + bench.args.n;
    for round in 0..rounds {
        for (i, (&rt, ip)) in runtimes.iter().zip(&ips).enumerate() {
            bench.progress.show(
                "network",
                "transfers",
                round * runtimes.len() + i,
                rounds * runtimes.len(),
            );
            let down = netprobe::download(ip, bulk_mib).map_err(|e| probe_error(rt, e))?;
            let up = netprobe::upload(ip, bulk_mib).map_err(|e| probe_error(rt, e))?;
            let mut req = Vec::with_capacity(REQUESTS);
            for _ in 0..REQUESTS {
                req.push(netprobe::request(ip).map_err(|e| probe_error(rt, e))?);
            }
            if round >= bench.args.warmup {
                let s = &mut samples[rt as usize];
                s.down.push(down);
                s.up.push(up);
                s.req.extend(req);
            }
        }
    }
    for pod in pods_started {
        pods.remove(&pod)
            .map_err(|detail| BenchError::Pod { detail })?;
    }
    let [hull, runc] = samples;
    group.metrics.push(Metric::pair(
        &format!("download {bulk_mib} MiB (pod -> host)"),
        "Mbit/s",
        &hull.down,
        &runc.down,
    ));
    group.metrics.push(Metric::pair(
        &format!("upload {bulk_mib} MiB (host -> pod)"),
        "Mbit/s",
        &hull.up,
        &runc.up,
    ));
    group.metrics.push(Metric::pair(
        "request (new TCP connection + small GET)",
        "ms",
        &hull.req,
        &runc.req,
    ));
    if !bench.location.vm {
        group.notes.push(
            "hull not measured: in host-agent mode a pod has no network of its own (its \
             interfaces go into the VM in VM mode); runc's pod alone was measured"
                .into(),
        );
    }
    group.notes.push(format!(
        "busybox httpd serving from the pod's /dev/shm, nc as the upload sink (an upload ends when the pod answers how many bytes it got); {REQUESTS} \
         requests per round; throughput ratios below 1 mean hull is slower"
    ));
    Ok(group)
}
