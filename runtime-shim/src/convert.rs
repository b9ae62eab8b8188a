//! Conversions between the agent API and containerd's task API that need no I/O.

use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message as _;
use hull_proto::stats::ContainerStats;

/// The type URL containerd registers for cgroup v2 metrics (`ctr task metrics` decodes it).
pub const CGROUPS_V2_METRICS_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Maps the agent's container stats to containerd's cgroup v2 `Metrics`.
pub fn metrics_from_agent(stats: &ContainerStats) -> Metrics {
    let mut metrics = Metrics::new();
    if let Some(cpu) = stats.cpu.as_ref() {
        metrics.cpu = Some(CPUStat {
            usage_usec: cpu.usage_usec,
            user_usec: cpu.user_usec,
            system_usec: cpu.system_usec,
            nr_periods: cpu.nr_periods,
            nr_throttled: cpu.nr_throttled,
            throttled_usec: cpu.throttled_usec,
            ..Default::default()
        })
        .into();
    }
    if let Some(memory) = stats.memory.as_ref() {
        metrics.memory = Some(MemoryStat {
            usage: memory.usage_bytes,
            usage_limit: memory.limit_bytes,
            anon: memory.anon_bytes,
            file: memory.file_bytes,
            swap_usage: memory.swap_usage_bytes,
            ..Default::default()
        })
        .into();
        metrics.memory_events = Some(MemoryEvents {
            oom_kill: memory.oom_kills,
            ..Default::default()
        })
        .into();
    }
    if let Some(pids) = stats.pids.as_ref() {
        metrics.pids = Some(PidsStat {
            current: pids.current,
            limit: pids.limit,
            ..Default::default()
        })
        .into();
    }
    if let Some(io) = stats.io.as_ref() {
        metrics.io = Some(IOStat {
            usage: vec![IOEntry {
                rbytes: io.read_bytes,
                wbytes: io.write_bytes,
                rios: io.read_ios,
                wios: io.write_ios,
                ..Default::default()
            }],
            ..Default::default()
        })
        .into();
    }
    metrics
}

/// Packs metrics into the `Any` containerd expects in StatsResponse.
pub fn metrics_any(metrics: &Metrics) -> Result<Any, protobuf::Error> {
    Ok(Any {
        type_url: CGROUPS_V2_METRICS_URL.to_string(),
        value: metrics.write_to_bytes()?,
        ..Default::default()
    })
}

/// Reads `config_path` from containerd's runtime options (`runtimeoptions.v1.Options`:
/// field 1 type_url, field 2 config_path). `None` for another message type or no path.
pub fn config_path_from_options(any: &Any) -> Option<String> {
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    let mut input = protobuf::CodedInputStream::from_bytes(&any.value);
    while let Ok(Some(tag)) = input.read_raw_tag_or_eof() {
        let (field, wire_type) = (tag >> 3, tag & 7);
        if field == 2 && wire_type == 2 {
            return input.read_string().ok().filter(|s| !s.is_empty());
        }
        let wire_type = protobuf::rt::WireType::new(wire_type)?;
        input.skip_field(wire_type).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::stats::{CpuStats, IoStats, MemoryStats, PidsStats};

    #[test]
    fn stats_map_field_by_field() {
        let stats = ContainerStats {
            cpu: Some(CpuStats {
                usage_usec: 10,
                user_usec: 6,
                system_usec: 4,
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStats {
                usage_bytes: 4096,
                limit_bytes: 8192,
                oom_kills: 2,
                ..Default::default()
            })
            .into(),
            pids: Some(PidsStats {
                current: 3,
                limit: 0,
                ..Default::default()
            })
            .into(),
            io: Some(IoStats {
                read_bytes: 100,
                write_bytes: 200,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let m = metrics_from_agent(&stats);
        assert_eq!(m.cpu.usage_usec, 10);
        assert_eq!(m.cpu.user_usec, 6);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 8192);
        assert_eq!(m.memory_events.oom_kill, 2);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.io.usage[0].wbytes, 200);
        let any = metrics_any(&m).unwrap();
        assert_eq!(any.type_url, CGROUPS_V2_METRICS_URL);
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), m);
        assert!(metrics_from_agent(&ContainerStats::default()).cpu.is_none());
    }

    #[test]
    fn runtime_options_config_path_is_decoded() {
        // runtimeoptions.v1.Options{type_url: "x", config_path: "/etc/hull/t.toml"}
        let mut value = vec![0x0a, 1, b'x', 0x12, 16];
        value.extend_from_slice(b"/etc/hull/t.toml");
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: value.clone(),
            ..Default::default()
        };
        assert_eq!(
            config_path_from_options(&any).as_deref(),
            Some("/etc/hull/t.toml")
        );
        let other = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(config_path_from_options(&other), None);
        let garbage = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 200],
            ..Default::default()
        };
        assert_eq!(config_path_from_options(&garbage), None);
    }
}
