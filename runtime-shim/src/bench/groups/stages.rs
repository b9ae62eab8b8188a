//! Stage breakdown of a hull container start: `ctr run --rm IMAGE sh -c 'echo ...'`, each stage's
//! time after `ctr` was started, from the stage lines the shim logs into containerd's log
//! (`--containerd-log`) plus what the client sees (first output, `ctr` returned). runc gets the
//! client-side stages in the same rounds, for comparison.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bench::stages::{log_len, parse, read_from, unix_us, Stage};
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// What the container prints.
const OUTPUT: &str = "hull-bench-output";

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group(
        "stages",
        "stage breakdown of one start (ms after ctr started)",
    );
    let log = bench.args.containerd_log.clone();
    let image = bench.args.image.clone();
    let script = format!("echo {OUTPUT}");
    let mut samples: BTreeMap<(Rt, Stage), Vec<f64>> = BTreeMap::new();
    let mut missing_shim_lines = 0;
    let mut runs = [0usize; 2];
    let warmup = bench.args.warmup;
    let (_, _) = bench.interleaved("stages", "ctr run --rm echo", |b, rt| {
        let id = b.ctr.new_id(&format!("stage-{}", rt.short()));
        let offset = log.as_deref().map(log_len).unwrap_or(0);
        let t = b
            .ctr
            .run_rm(b.runtime(rt), &image, &id, &["sh", "-c", &script])?;
        let start = unix_us(t.started_at);
        let mut at: BTreeMap<Stage, u64> = BTreeMap::new();
        at.insert(Stage::CtrStarted, start);
        if let Some(first) = t.first_output_at {
            at.insert(Stage::FirstOutput, unix_us(first));
        }
        at.insert(Stage::CtrReturned, start + t.wall.as_micros() as u64);
        runs[rt as usize] += 1;
        if runs[rt as usize] <= warmup {
            return Ok(0.0);
        }
        if rt == Rt::Hull {
            if let Some(log) = &log {
                // The shim's lines travel through containerd's log relay: give them a moment.
                std::thread::sleep(Duration::from_millis(100));
                let found = parse(&read_from(log, offset), &id);
                if found.is_empty() {
                    missing_shim_lines += 1;
                }
                at.extend(found);
            }
        }
        for (stage, when) in at {
            samples
                .entry((rt, stage))
                .or_default()
                .push(when.saturating_sub(start) as f64 / 1000.0);
        }
        Ok(t.wall.as_secs_f64() * 1000.0)
    })?;
    for stage in Stage::ALL {
        let get = |rt: Rt| samples.get(&(rt, stage)).cloned().unwrap_or_default();
        let (hull, runc) = (get(Rt::Hull), get(Rt::Runc));
        if hull.is_empty() && runc.is_empty() {
            if stage.vm_only() && !bench.location.vm {
                group.metrics.push(
                    Metric::pair(stage.name(), "ms", &[], &[])
                        .with_note("none in host-agent mode (no VM)"),
                );
            }
            continue;
        }
        group
            .metrics
            .push(Metric::pair(stage.name(), "ms", &hull, &runc));
    }
    match &log {
        None => group.notes.push(
            "shim stages not shown: pass --containerd-log FILE (the shim logs its stage lines \
             into containerd's log); only the client-side stages were measured"
                .into(),
        ),
        Some(path) if missing_shim_lines > 0 => group.notes.push(format!(
            "{missing_shim_lines} hull run(s) had no stage lines in {} (is the shim's log \
             level info or lower, and is that containerd's log?)",
            path.display()
        )),
        Some(_) => {}
    }
    group.notes.push(
        "runc: client-side stages only (first output, ctr returned); hull: the shim's own \
         timestamps as well"
            .into(),
    );
    Ok(group)
}
