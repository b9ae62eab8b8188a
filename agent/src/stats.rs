//! StatsContainer: a container's usage read from its cgroup v2 files.

use hull_proto::stats::{ContainerStats, CpuStats, IoStats, MemoryStats, PidsStats};

use crate::container::cgroup::Cgroup;

/// Reads cpu.stat, memory.*, pids.* and io.stat (missing files read as 0).
pub fn read_stats(cgroup: &Cgroup) -> ContainerStats {
    let cpu = |key| cgroup.keyed("cpu.stat", key).unwrap_or(0);
    let (read_bytes, write_bytes, read_ios, write_ios) = cgroup.io_totals();
    ContainerStats {
        cpu: Some(CpuStats {
            usage_usec: cpu("usage_usec"),
            user_usec: cpu("user_usec"),
            system_usec: cpu("system_usec"),
            nr_periods: cpu("nr_periods"),
            nr_throttled: cpu("nr_throttled"),
            throttled_usec: cpu("throttled_usec"),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStats {
            usage_bytes: cgroup.single("memory.current").unwrap_or(0),
            limit_bytes: cgroup.single("memory.max").unwrap_or(0),
            anon_bytes: cgroup.keyed("memory.stat", "anon").unwrap_or(0),
            file_bytes: cgroup.keyed("memory.stat", "file").unwrap_or(0),
            swap_usage_bytes: cgroup.single("memory.swap.current").unwrap_or(0),
            oom_kills: cgroup.keyed("memory.events", "oom_kill").unwrap_or(0),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStats {
            current: cgroup.single("pids.current").unwrap_or(0),
            limit: cgroup.single("pids.max").unwrap_or(0),
            ..Default::default()
        })
        .into(),
        io: Some(IoStats {
            read_bytes,
            write_bytes,
            read_ios,
            write_ios,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
