//! Host memory per idle pod at several pod counts, and density: k idle containers (`sleep`) per
//! runtime, then the PSS of each one's shim and everything below it (hull: the VMM with the
//! guest memory it touched, virtiofsd, or the host agent and its container; runc: the
//! container). Per pod = that pod's own processes; the shared containerd is not counted. In VM
//! mode it also asks each hull pod's guest where its memory goes (see `bench::guest_memory`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bench::guest_memory::{self, GuestSplit};
use crate::bench::pss::{find_shim, pod_memory};
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group(
        "memory",
        "host memory per idle pod (PSS of shim + everything below it)",
    );
    let image = bench.args.image.clone();
    let namespace = bench.args.namespace.clone();
    let counts = bench.args.pods.clone();
    let total = counts.len() * 2;
    let mut last_per_pod: [Option<f64>; 2] = [None, None];
    let mut step = 0;
    let mut guests: Vec<GuestSplit> = Vec::new();
    for &k in &counts {
        let mut per_pod: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut parts: [BTreeMap<&'static str, Vec<f64>>; 2] = Default::default();
        for rt in Rt::BOTH {
            bench.progress.show(
                "memory",
                &format!("{k} idle {} pods", rt.short()),
                step,
                total,
            );
            step += 1;
            let ids: Vec<String> = (0..k)
                .map(|_| bench.ctr.new_id(&format!("mem-{}", rt.short())))
                .collect();
            for id in &ids {
                bench.ctr.start_idle(bench.runtime(rt), &image, id)?;
            }
            std::thread::sleep(Duration::from_secs(bench.args.settle_secs));
            for id in &ids {
                let Some(shim) = find_shim(&namespace, id) else {
                    group.notes.push(format!(
                        "{}: no shim process found for {id} (is this containerd on this host?)",
                        rt.short()
                    ));
                    continue;
                };
                let memory = pod_memory(shim);
                per_pod[rt as usize].push(memory.total_kib() as f64 / 1024.0);
                for (component, kib) in memory.by_component {
                    parts[rt as usize]
                        .entry(component)
                        .or_default()
                        .push(kib as f64 / 1024.0);
                }
            }
            if rt == Rt::Hull && bench.location.vm {
                for id in &ids {
                    match guest_memory::read(&bench.hull_run_dir, id) {
                        Ok(split) => guests.push(split),
                        Err(e) => group
                            .notes
                            .push(format!("hull: the guest of {id} said nothing: {e}")),
                    }
                }
            }
            for id in &ids {
                bench.ctr.remove(id);
            }
        }
        let metric = Metric::pair(
            &format!("PSS per idle pod, {k} pod(s)"),
            "MiB",
            &per_pod[0],
            &per_pod[1],
        )
        .with_note(format!(
            "hull: {}; runc: {}",
            breakdown(&parts[0]),
            breakdown(&parts[1])
        ));
        for rt in Rt::BOTH {
            if let Some(s) = &metric_summary(&metric, rt) {
                last_per_pod[rt as usize] = Some(*s);
            }
        }
        group.metrics.push(metric);
    }
    let budget = bench.args.budget_mib as f64;
    let density = |rt: Rt| {
        last_per_pod[rt as usize]
            .filter(|p| *p > 0.0)
            .map(|p| (budget / p).floor())
    };
    let (h, r) = (density(Rt::Hull), density(Rt::Runc));
    group.metrics.push(
        Metric::pair(
            &format!("idle pods in {} MiB", bench.args.budget_mib),
            "pods",
            &h.into_iter().collect::<Vec<_>>(),
            &r.into_iter().collect::<Vec<_>>(),
        )
        .with_note("budget / median PSS per pod at the largest pod count"),
    );
    for (name, samples) in guest_memory::rows(&guests) {
        group
            .metrics
            .push(Metric::pair(&name, "MiB", &samples, &[]));
    }
    if !guests.is_empty() {
        group.notes.push(
            "hull guest rows: each guest's memory as its kernel counts it (all pod counts \
             pooled); the host pays for what the guest holds plus free pages it touched and has \
             not handed back"
                .into(),
        );
    }
    group.notes.push(format!(
        "samples are pods (one PSS figure per pod, measured after {} s idle); containerd itself \
         is shared and not counted",
        bench.args.settle_secs
    ));
    Ok(group)
}

fn metric_summary(metric: &Metric, rt: Rt) -> Option<f64> {
    match rt {
        Rt::Hull => metric.hull.as_ref().map(|s| s.median),
        Rt::Runc => metric.runc.as_ref().map(|s| s.median),
    }
}

/// "shim 3.1, hull-agent 2.0 MiB" from the median of each component.
fn breakdown(parts: &BTreeMap<&'static str, Vec<f64>>) -> String {
    let words: Vec<String> = parts
        .iter()
        .filter_map(|(name, v)| {
            crate::bench::stats::Summary::of(v).map(|s| format!("{name} {:.1}", s.median))
        })
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        format!("{} MiB", words.join(", "))
    }
}
