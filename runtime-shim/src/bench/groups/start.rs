//! Container start: `ctr run --rm IMAGE ID true`, wall time of the whole call (create, start,
//! exit, delete, teardown).

use super::ms;
use crate::bench::{Bench, BenchError, GroupResult, Metric, Rt};

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("start", "container start: ctr run --rm IMAGE true");
    let image = bench.args.image.clone();
    let (hull, runc) = bench.interleaved("start", "ctr run --rm true", |b, rt: Rt| {
        let id = b.ctr.new_id(&format!("start-{}", rt.short()));
        let t = b.ctr.run_rm(b.runtime(rt), &image, &id, &["true"])?;
        Ok(ms(t.wall))
    })?;
    group
        .metrics
        .push(Metric::pair("ctr run --rm true", "ms", &hull, &runc));
    group.notes.push(
        "wall time of the whole ctr call: create, start, exit, delete and sandbox teardown".into(),
    );
    Ok(group)
}
