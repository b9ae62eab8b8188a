//! Noisy neighbours: a probe container's CPU loop and file I/O, alone and while a neighbour
//! container of the same runtime burns CPU, memory bandwidth, page cache or disk. The slowdown
//! (median with the neighbour / median alone) says how much of the neighbour leaks through.

use std::time::Duration;

use super::{exec::idle_pair, parse_timed, scaled, timed_script};
use crate::bench::stats::{ratio, Summary};
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// A neighbour: its kind and the shell code it runs forever.
pub struct Neighbour {
    /// cpu, memory, page-cache, disk.
    pub kind: &'static str,
    /// busybox sh code that never ends.
    pub script: &'static str,
}

/// The neighbours.
pub const NEIGHBOURS: [Neighbour; 4] = [
    Neighbour {
        kind: "cpu",
        script: "while :; do :; done & while :; do :; done",
    },
    Neighbour {
        kind: "memory",
        script: "while :; do dd if=/dev/zero of=/dev/null bs=16M count=256 2>/dev/null; done",
    },
    Neighbour {
        kind: "page-cache",
        script: "dd if=/dev/zero of=/hb-cache bs=1M count=256 2>/dev/null; \
                 while :; do cat /hb-cache >/dev/null; \
                 dd if=/dev/zero of=/hb-cache2 bs=1M count=128 2>/dev/null; rm -f /hb-cache2; done",
    },
    Neighbour {
        kind: "disk",
        script:
            "while :; do dd if=/dev/zero of=/hb-disk bs=1M count=32 conv=fsync 2>/dev/null; done",
    },
];

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group(
        "noisy",
        "noisy neighbours: probe alone vs beside a busy neighbour of the same runtime",
    );
    let image = bench.args.image.clone();
    let cpu_loop = scaled(bench, 100_000);
    let mib = scaled(bench, 16);
    let probes = [
        (
            format!("probe cpu loop x{cpu_loop}"),
            timed_script(&format!(
                "i=0; while [ $i -lt {cpu_loop} ]; do i=$((i+1)); done"
            )),
        ),
        (
            format!("probe write {mib} MiB + fsync"),
            timed_script(&format!(
                "dd if=/dev/zero of=/hb-probe bs=1M count={mib} conv=fsync 2>/dev/null"
            )),
        ),
    ];
    let probe_ids = idle_pair(bench, &image, "probe")?;
    let mut alone: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for (name, script) in &probes {
        let samples = measure(bench, &probe_ids, name, script, "alone")?;
        group.metrics.push(Metric::pair(
            &format!("{name}, alone"),
            "ms",
            &samples.0,
            &samples.1,
        ));
        alone.push(samples);
    }
    for neighbour in &NEIGHBOURS {
        let ids = Rt::BOTH.map(|rt| bench.ctr.new_id(&format!("noisy-{}", rt.short())));
        for rt in Rt::BOTH {
            bench.ctr.start_detached(
                bench.runtime(rt),
                &image,
                &ids[rt as usize],
                &["sh", "-c", neighbour.script],
            )?;
        }
        // Let the neighbours get going (the page-cache one writes its file first).
        std::thread::sleep(Duration::from_secs(1));
        for ((name, script), base) in probes.iter().zip(&alone) {
            let with = measure(bench, &probe_ids, name, script, neighbour.kind)?;
            let slowdown = |samples: &[f64], base: &[f64]| {
                let (s, b) = (Summary::of(samples)?, Summary::of(base)?);
                ratio(s.median, b.median)
            };
            let (h, r) = (slowdown(&with.0, &base.0), slowdown(&with.1, &base.1));
            group.metrics.push(
                Metric::pair(
                    &format!("{name}, {} neighbour", neighbour.kind),
                    "ms",
                    &with.0,
                    &with.1,
                )
                .with_note(format!(
                    "slowdown vs alone: hull {}, runc {}",
                    times(h),
                    times(r)
                )),
            );
        }
        for id in &ids {
            bench.ctr.remove(id);
        }
    }
    for id in &probe_ids {
        bench.ctr.remove(id);
    }
    group.notes.push(
        "probes timed inside the probe container (/proc/uptime, 10 ms resolution); the \
         neighbour is a container of the same runtime; no CPU or I/O limits are set"
            .into(),
    );
    if !bench.location.vm {
        group.notes.push(
            "host-agent mode (no VM): hull's probe and neighbour share the host kernel like \
             runc's, so this shows no VM isolation at all; run it in VM mode for that"
                .into(),
        );
    }
    Ok(group)
}

fn measure(
    bench: &mut Bench,
    ids: &[String; 2],
    name: &str,
    script: &str,
    with: &str,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    bench.interleaved("noisy", &format!("{name}, {with}"), |b, rt| {
        let t = b.ctr.exec(&ids[rt as usize], &["sh", "-c", script])?;
        parse_timed(name, &t.stdout)
    })
}

fn times(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}x"))
}
