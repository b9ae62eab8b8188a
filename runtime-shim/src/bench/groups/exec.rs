//! Exec latency: `ctr task exec` of `true` in an idle container.

use super::ms;
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("exec", "exec latency: ctr task exec ID true");
    let image = bench.args.image.clone();
    let ids = idle_pair(bench, &image, "exec")?;
    let (hull, runc) = bench.interleaved("exec", "ctr task exec true", |b, rt| {
        Ok(ms(b.ctr.exec(&ids[rt as usize], &["true"])?.wall))
    })?;
    for id in &ids {
        bench.ctr.remove(id);
    }
    group
        .metrics
        .push(Metric::pair("ctr task exec true", "ms", &hull, &runc));
    Ok(group)
}

/// One idle container per runtime (index = `Rt as usize`).
pub fn idle_pair(bench: &Bench, image: &str, tag: &str) -> Result<[String; 2], BenchError> {
    let ids = Rt::BOTH.map(|rt| bench.ctr.new_id(&format!("{tag}-{}", rt.short())));
    for rt in Rt::BOTH {
        bench
            .ctr
            .start_idle(bench.runtime(rt), image, &ids[rt as usize])?;
    }
    Ok(ids)
}
