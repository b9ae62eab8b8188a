//! The bench's groups, one module each; [`run`] dispatches by name.

pub mod exec;
pub mod memory;
pub mod network;
pub mod noisy;
pub mod pod;
pub mod pool;
pub mod stages;
pub mod start;
pub mod work;

use super::{Bench, BenchError, GroupResult};

/// Runs group `name`.
pub fn run(bench: &mut Bench, name: &str) -> Result<GroupResult, BenchError> {
    match name {
        "start" => start::run(bench),
        "pod" => pod::run(bench),
        "pool" => pool::run(bench),
        "stages" => stages::run(bench),
        "exec" => exec::run(bench),
        "work" => work::run(bench),
        "memory" => memory::run(bench),
        "noisy" => noisy::run(bench),
        "network" => network::run(bench),
        other => Err(BenchError::Usage(format!("unknown group {other:?}"))),
    }
}

/// Milliseconds of a duration.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Wraps `work` (shell code) so that it prints `HULL_BENCH_MS=<ms>`, timed inside the container
/// from /proc/uptime (10 ms resolution).
pub fn timed_script(work: &str) -> String {
    let now = "$(awk '{printf \"%d\", $1 * 1000}' /proc/uptime)";
    format!("a={now}; {work}; b={now}; echo HULL_BENCH_MS=$((b - a))")
}

/// The figure a [`timed_script`] printed.
pub fn parse_timed(what: &str, output: &str) -> Result<f64, BenchError> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("HULL_BENCH_MS="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| BenchError::NoFigure {
            what: what.into(),
            output: output.chars().take(300).collect(),
        })
}

/// `n` scaled by the bench's --scale, at least 1.
pub fn scaled(bench: &Bench, n: u64) -> u64 {
    ((n as f64 * bench.args.scale).round() as u64).max(1)
}
