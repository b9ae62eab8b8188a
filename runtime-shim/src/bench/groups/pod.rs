//! CRI pod start: RunPodSandbox + CreateContainer + StartContainer of one idle container, as
//! kubelet starts a pod, then StopPodSandbox + RemovePodSandbox; hull's handler against runc's,
//! interleaved. With `--containerd-log`, hull's RunPodSandbox is broken into the stages the
//! shim logs for the pod's sandbox (shim start to agent ready), after the call was made.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ms;
use crate::bench::pods::{idle_command, Pods};
use crate::bench::stages::{log_len, parse, read_from, unix_us, Stage};
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Runs the group; it is skipped (with the reason) where CRI cannot run pods.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("pod", "CRI pod start: RunPodSandbox + one container");
    let Some(mut pods) = Pods::open_for(bench, &mut group) else {
        return Ok(group);
    };
    let rounds = pod_rounds(bench, &mut pods, "pod", |_| Ok(()))?;
    let log = bench.args.containerd_log.clone();
    let PodRounds { samples, stages } = rounds;
    for (name, [hull, runc]) in METRICS.into_iter().zip(samples) {
        group.metrics.push(Metric::pair(name, "ms", &hull, &runc));
    }
    for (stage, after) in &stages {
        let name = format!("hull RunPodSandbox: {} after the call", stage.name());
        group.metrics.push(Metric::pair(&name, "ms", after, &[]));
    }
    if log.is_none() {
        group.notes.push(
            "RunPodSandbox's stages not shown: pass --containerd-log FILE (the shim logs them \
             into containerd's log)"
                .into(),
        );
    }
    group.notes.push(format!(
        "through CRI as kubelet calls it; handlers {:?} and {:?}; each pod one container (sleep), \
         the image already unpacked",
        pods.handler(Rt::Hull),
        pods.handler(Rt::Runc)
    ));
    Ok(group)
}

/// Each runtime's samples of the [`METRICS`] and hull's RunPodSandbox stages (ms after the call).
pub struct PodRounds {
    /// `samples[metric][rt]`.
    pub samples: [[Vec<f64>; 2]; 5],
    /// hull's stages.
    pub stages: BTreeMap<Stage, Vec<f64>>,
}

/// The figures of one pod start and its removal, in [`PodRounds::samples`]' order.
pub const METRICS: [&str; 5] = [
    "pod start (all three calls)",
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopPodSandbox + RemovePodSandbox",
];

/// Warm-up + n rounds of a pod start and removal per runtime, hull then runc, `before_each`
/// run (untimed) before each start; with `--containerd-log`, hull's RunPodSandbox stages.
pub fn pod_rounds(
    bench: &mut Bench,
    pods: &mut Pods,
    group: &str,
    mut before_each: impl FnMut(&mut Bench) -> Result<(), BenchError>,
) -> Result<PodRounds, BenchError> {
    let mut samples: [[Vec<f64>; 2]; 5] = Default::default();
    let log = bench.args.containerd_log.clone();
    let mut stages: BTreeMap<Stage, Vec<f64>> = BTreeMap::new();
    let rounds = bench.args.warmup + bench.args.n;
    for round in 0..rounds {
        for rt in Rt::BOTH {
            bench
                .progress
                .show(group, "pod start", round * 2 + rt as usize, rounds * 2);
            before_each(bench)?;
            let offset = log.as_deref().map(log_len).unwrap_or(0);
            let (pod, start) = pods
                .start(rt, &format!("pod-{}", rt.short()), &[("c", idle_command())])
                .map_err(|detail| BenchError::Pod { detail })?;
            if let (Some(log), Rt::Hull, true) = (&log, rt, round >= bench.args.warmup) {
                // The shim's lines travel through containerd's log relay: give them a moment.
                std::thread::sleep(Duration::from_millis(100));
                let called = unix_us(start.called_at);
                for (stage, at) in parse(&read_from(log, offset), &pod) {
                    let after = at.saturating_sub(called) as f64 / 1000.0;
                    stages.entry(stage).or_default().push(after);
                }
            }
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
    Ok(PodRounds { samples, stages })
}
