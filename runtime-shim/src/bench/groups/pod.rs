//! CRI pod start: RunPodSandbox + CreateContainer + StartContainer of one idle container, as
//! kubelet starts a pod, then StopPodSandbox + RemovePodSandbox; hull's handler against runc's,
//! interleaved.

use super::ms;
use crate::bench::pods::{idle_command, Pods};
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Runs the group; it is skipped (with the reason) where CRI cannot run pods.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("pod", "CRI pod start: RunPodSandbox + one container");
    let mut pods = match Pods::open(bench) {
        Ok(p) => p,
        Err(why) => {
            group.skipped = Some(why);
            return Ok(group);
        }
    };
    let mut samples: [[Vec<f64>; 2]; 5] = Default::default();
    let rounds = bench.args.warmup + bench.args.n;
    for round in 0..rounds {
        for rt in Rt::BOTH {
            bench
                .progress
                .show("pod", "pod start", round * 2 + rt as usize, rounds * 2);
            let (pod, start) = pods
                .start(rt, &format!("pod-{}", rt.short()), &[("c", idle_command())])
                .map_err(|detail| BenchError::Pod { detail })?;
            let teardown = pods
                .remove(&pod)
                .map_err(|detail| BenchError::Pod { detail })?;
            if round >= bench.args.warmup {
                let figures = [
                    start.total(),
                    start.run,
                    start.create,
                    start.start,
                    teardown,
                ];
                for (kind, d) in figures.into_iter().enumerate() {
                    samples[kind][rt as usize].push(ms(d));
                }
            }
        }
    }
    let names = [
        "pod start (all three calls)",
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopPodSandbox + RemovePodSandbox",
    ];
    for (name, [hull, runc]) in names.into_iter().zip(samples) {
        group.metrics.push(Metric::pair(name, "ms", &hull, &runc));
    }
    group.notes.push(format!(
        "through CRI as kubelet calls it; handlers {:?} and {:?}; each pod one container (sleep), \
         the image already unpacked",
        pods.handler(Rt::Hull),
        pods.handler(Rt::Runc)
    ));
    Ok(group)
}
