//! Start from a pool of pre-booted VMs: the bench runs `hull pool run --size 1` with hull's
//! configuration, then measures `ctr run --rm IMAGE true` and the CRI pod start (where CRI runs
//! pods) as the `start` and `pod` groups do, hull taking the pool's VM. Before every start, of
//! either runtime, it waits until the pool has its VM again, so no start shares the machine
//! with a pool boot. The `start` and `pod` groups are the same starts without the pool. Only in
//! VM mode: a host agent has no VM to keep.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ms;
use super::pod::{pod_rounds, PodRounds, METRICS};
use crate::bench::pods::Pods;
use crate::bench::{Bench, BenchError, GroupResult, Metric};
use crate::pool::{stop_and_wait, PoolDirs};

/// How long the pool may take to have a VM ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the group.
pub fn run(bench: &mut Bench) -> Result<GroupResult, BenchError> {
    let title = format!(
        "start from a pool of pre-booted VMs (hull pool run --size 1 --refill-delay-ms {})",
        bench.args.pool_refill_delay_ms
    );
    let mut group = bench.group("pool", &title);
    if !bench.location.vm {
        group.skipped = Some("the pool holds VMs: hull runs in host-agent mode here".into());
        return Ok(group);
    }
    let mut pool = PoolDaemon::start(bench)?;
    let result = measure(bench, &mut group, &mut pool);
    let claims = pool.stop();
    let kinds = if result? { 2 } else { 1 };
    let claims = claims?;
    let starts = (bench.args.warmup + bench.args.n) * kinds;
    group.notes.push(format!(
        "hull took a pool VM in {claims} of its {starts} starts (warm-up included; the pool \
         daemon's log counts them); before each start of either runtime the pool had its VM \
         booted again"
    ));
    group.notes.push(if bench.args.pool_refill_delay_ms == 0 {
        "the replacement VM booted while the start that took the pool's VM went on (as with \
         back-to-back starts on a busy host); --pool-refill-delay-ms lets starts run alone"
            .into()
    } else {
        format!(
            "the replacement VM booted {} ms after a start took the pool's VM",
            bench.args.pool_refill_delay_ms
        )
    });
    if claims < starts {
        group.notes.push(
            "a hull start that did not take a pool VM booted its own: see the shim's log".into(),
        );
    }
    Ok(group)
}

/// Measures the starts with the pool; whether CRI pod starts were measured too.
fn measure(
    bench: &mut Bench,
    group: &mut GroupResult,
    pool: &mut PoolDaemon,
) -> Result<bool, BenchError> {
    let image = bench.args.image.clone();
    let (hull, runc) = bench.interleaved("pool", "ctr run --rm true", |b, rt| {
        pool.wait_ready()?;
        let id = b.ctr.new_id(&format!("pool-{}", rt.short()));
        let t = b.ctr.run_rm(b.runtime(rt), &image, &id, &["true"])?;
        Ok(ms(t.wall))
    })?;
    group.metrics.push(Metric::pair(
        "ctr run --rm true, hull from the pool",
        "ms",
        &hull,
        &runc,
    ));
    let mut skipped = None;
    let pods = Pods::open(bench).map_err(|why| skipped = Some(why)).ok();
    let Some(mut pods) = pods else {
        group.notes.push(format!(
            "CRI pod start not measured: {}",
            skipped.unwrap_or_default()
        ));
        return Ok(false);
    };
    let PodRounds { samples, stages } =
        pod_rounds(bench, &mut pods, "pool", |_| pool.wait_ready())?;
    for (name, [hull, runc]) in METRICS.into_iter().zip(samples).take(2) {
        let name = format!("{name}, hull from the pool");
        group.metrics.push(Metric::pair(&name, "ms", &hull, &runc));
    }
    for (stage, after) in &stages {
        let name = format!(
            "hull RunPodSandbox from the pool: {} after the call",
            stage.name()
        );
        group.metrics.push(Metric::pair(&name, "ms", after, &[]));
    }
    Ok(true)
}

/// The bench's `hull pool run`.
struct PoolDaemon {
    child: Child,
    log: PathBuf,
    ready: PathBuf,
}

impl PoolDaemon {
    fn start(bench: &Bench) -> Result<PoolDaemon, BenchError> {
        let log = bench.args.out.join("pool.log");
        let err = |detail: String| BenchError::Pool { detail };
        let file =
            std::fs::File::create(&log).map_err(|e| err(format!("{}: {e}", log.display())))?;
        let hull = std::env::current_exe().map_err(|e| err(format!("this program: {e}")))?;
        let mut cmd = Command::new(&hull);
        cmd.args(["pool", "run", "--size", "1", "--refill-delay-ms"])
            .arg(bench.args.pool_refill_delay_ms.to_string());
        if let Some(config) = &bench.args.hull_config {
            cmd.arg("--config").arg(config);
        }
        let stderr = file.try_clone().map_err(|e| err(e.to_string()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| err(format!("{} pool run: {e}", hull.display())))?;
        let mut daemon = PoolDaemon {
            child,
            log,
            ready: PoolDirs::new(&bench.hull_run_dir).ready,
        };
        // On failure the daemon is stopped by its Drop.
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// Waits until the pool has a ready VM.
    fn wait_ready(&mut self) -> Result<(), BenchError> {
        let started = Instant::now();
        while !has_entries(&self.ready) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Pool {
                    detail: format!(
                        "hull pool run exited ({status}); its log: {}",
                        self.log.display()
                    ),
                });
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(BenchError::Pool {
                    detail: format!(
                        "no pool VM ready after {} s (its log: {})",
                        READY_TIMEOUT.as_secs(),
                        self.log.display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the daemon (SIGTERM; it removes its unclaimed VM) and returns how many VMs shims
    /// took from it.
    fn stop(&mut self) -> Result<usize, BenchError> {
        let status = stop_and_wait(&mut self.child).map_err(|e| BenchError::Pool {
            detail: format!("waiting for hull pool run: {e}"),
        })?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !status.success() {
            return Err(BenchError::Pool {
                detail: format!(
                    "hull pool run ended {status} (its log: {})",
                    self.log.display()
                ),
            });
        }
        Ok(count_claims(&log))
    }
}

impl Drop for PoolDaemon {
    fn drop(&mut self) {
        let _ = stop_and_wait(&mut self.child);
    }
}

/// The VMs the daemon saw claimed, from its log.
pub fn count_claims(log: &str) -> usize {
    log.lines().filter(|l| l.contains(CLAIMED_LINE)).count()
}

/// What the pool daemon logs when a shim took one of its VMs.
pub const CLAIMED_LINE: &str = crate::pool::daemon::CLAIMED;

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}
