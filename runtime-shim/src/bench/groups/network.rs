//! Network group: a hook only. Pod networking needs CNI and VMs (the nested lab); the lab's
//! owner measures it there.

use crate::bench::{Bench, GroupResult};

/// Reports the group as not run here.
pub fn run(bench: &mut Bench) -> GroupResult {
    let mut group = bench.group("network", "pod network (request latency, throughput)");
    group.skipped = Some(
        "not implemented in hull bench yet: pod networking is measured in the nested lab \
         (tests/lab); this group is the hook for it"
            .into(),
    );
    group
}
