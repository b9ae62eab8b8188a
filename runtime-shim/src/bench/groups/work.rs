//! Work inside a running container, the same busybox code under both runtimes, timed inside the
//! container (/proc/uptime, 10 ms resolution; in a VM that is the guest's clock): a CPU-bound
//! shell loop, a fork+exec loop (syscall-heavy), sequential file I/O on the container's rootfs
//! (write + fsync, read back), and metadata (create, list, remove many files).

use super::{exec::idle_pair, parse_timed, scaled, timed_script};
use crate::bench::{Bench, BenchError, GroupResult, Metric};

/// One workload: its name and shell code.
pub struct Workload {
    /// The metric's name.
    pub name: String,
    /// Shell code (busybox sh).
    pub script: String,
}

/// The workloads, sized by --scale.
pub fn workloads(bench: &Bench) -> Vec<Workload> {
    let cpu = scaled(bench, 200_000);
    let forks = scaled(bench, 300);
    let mib = scaled(bench, 64);
    let files = scaled(bench, 1000);
    vec![
        Workload {
            name: format!("cpu: shell loop x{cpu}"),
            script: format!("i=0; while [ $i -lt {cpu} ]; do i=$((i+1)); done"),
        },
        Workload {
            name: format!("fork+exec loop x{forks}"),
            script: format!("i=0; while [ $i -lt {forks} ]; do /bin/true; i=$((i+1)); done"),
        },
        Workload {
            name: format!("file write {mib} MiB + fsync (rootfs)"),
            script: format!(
                "dd if=/dev/zero of=/hull-bench-seq bs=1M count={mib} conv=fsync 2>/dev/null"
            ),
        },
        Workload {
            name: format!("file read {mib} MiB (rootfs, cached)"),
            script: "dd if=/hull-bench-seq of=/dev/null bs=1M 2>/dev/null".into(),
        },
        Workload {
            name: format!("metadata: create+list+remove {files} files"),
            script: format!(
                "mkdir -p /hull-bench-meta; i=0; while [ $i -lt {files} ]; do \
                 : > /hull-bench-meta/f$i; i=$((i+1)); done; ls -l /hull-bench-meta >/dev/null; \
                 rm -r /hull-bench-meta"
            ),
        },
    ]
}

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let mut group = bench.group("work", "work inside a container (busybox sh)");
    let image = bench.args.image.clone();
    let ids = idle_pair(bench, &image, "work")?;
    for load in workloads(bench) {
        let script = timed_script(&load.script);
        let (hull, runc) = bench.interleaved("work", &load.name, |b, rt| {
            let t = b.ctr.exec(&ids[rt as usize], &["sh", "-c", &script])?;
            parse_timed(&load.name, &t.stdout)
        })?;
        group
            .metrics
            .push(Metric::pair(&load.name, "ms", &hull, &runc));
    }
    for id in &ids {
        bench.ctr.remove(id);
    }
    group.notes.push(
        "timed inside the container from /proc/uptime (10 ms resolution; in a VM the guest's clock)"
            .into(),
    );
    if !bench.location.vm {
        group.notes.push(
            "host-agent mode: hull's containers run on the host kernel like runc's; these figures \
             show the agent's overhead, not a VM's"
                .into(),
        );
    }
    Ok(group)
}
