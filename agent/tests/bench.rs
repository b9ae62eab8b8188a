//! Benchmark (prints, asserts nothing about timings): the agent on this host in host mode.
//! `cargo test -p hull-agent --release --test bench -- --ignored --nocapture`
//!
//! - create+start+wait of `true` (n=50, median/min/max), runc's `run` of the same bundle as
//!   the peer;
//! - exec latency of `true` in a running container (ExecProcess+StartExec+WaitProcess), runc's
//!   `exec` as the peer;
//! - the agent's VmRSS/VmHWM with one idle container.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::busybox::{create, exec, remove, spec, start, wait, BusyboxAgent};

const RUNS: usize = 50;

struct Figures(Vec<Duration>);

impl Figures {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[v.len() / 2]
    }
    fn line(&self) -> String {
        let min = self.0.iter().min().copied().unwrap_or_default();
        let max = self.0.iter().max().copied().unwrap_or_default();
        format!(
            "median {:>8.2} ms  (min {:.2}, max {:.2}, n={})",
            ms(self.median()),
            ms(min),
            ms(max),
            self.0.len()
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

fn where_it_ran() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "host mode on this machine (not in a guest): kernel {}, {cpus} CPUs, /dev/kvm {}; {} build",
        kernel.trim(),
        if pvm { "is PVM" } else { "is not PVM" },
        if cfg!(debug_assertions) {
            "DEBUG (use --release)"
        } else {
            "release"
        }
    )
}

/// runc with its own state dir; None if runc is missing or fails.
fn runc(root: &Path, args: &[&str]) -> Option<()> {
    let status = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(())
}

fn write_bundle_config(bundle: &Path, args: &[&str]) {
    std::fs::write(bundle.join("config.json"), spec(args).to_string()).unwrap();
}

/// runc's figures on the same rootfs: (run of `true`, exec of `true`).
fn runc_peer(bundle: &Path) -> Option<(Figures, Figures)> {
    let state = tempfile::tempdir().ok()?;
    let bundle_arg = bundle.to_str()?;
    write_bundle_config(bundle, &["true"]);
    runc(state.path(), &["run", "--bundle", bundle_arg, "warmup"])?;
    let mut run = Vec::new();
    for i in 0..RUNS {
        let id = format!("peer-{i}");
        let t = Instant::now();
        runc(state.path(), &["run", "--bundle", bundle_arg, &id])?;
        run.push(t.elapsed());
    }
    write_bundle_config(bundle, &["sleep", "1000"]);
    runc(
        state.path(),
        &["run", "-d", "--bundle", bundle_arg, "peer-idle"],
    )?;
    let mut execs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let ok = runc(state.path(), &["exec", "peer-idle", "true"]);
        execs.push(t.elapsed());
        if ok.is_none() {
            break;
        }
    }
    let _ = runc(state.path(), &["delete", "-f", "peer-idle"]);
    std::fs::remove_file(bundle.join("config.json")).ok();
    (execs.len() == RUNS).then_some((Figures(run), Figures(execs)))
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn bench_container_start_exec_and_rss() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;

    // Warm-up (page cache, first cgroup creation).
    let out = create(&c, &agent, "warm", &spec(&["true"])).await;
    start(&c, "warm").await;
    wait(&c, "warm", "").await;
    out.await.unwrap();
    remove(&c, "warm").await;

    let mut runs = Vec::new();
    for i in 0..RUNS {
        let id = format!("b{i}");
        let t = Instant::now();
        let out = create(&c, &agent, &id, &spec(&["true"])).await;
        start(&c, &id).await;
        assert_eq!(wait(&c, &id, "").await, 0);
        runs.push(t.elapsed());
        out.await.unwrap();
        remove(&c, &id).await;
    }

    let idle_out = create(&c, &agent, "idle", &spec(&["sleep", "1000"])).await;
    start(&c, "idle").await;
    let mut execs = Vec::new();
    for i in 0..RUNS {
        let exec_id = format!("x{i}");
        let t = Instant::now();
        let (_pid, out) = exec(&c, &agent, "idle", &exec_id, &["true"]).await;
        assert_eq!(wait(&c, "idle", &exec_id).await, 0);
        execs.push(t.elapsed());
        out.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss = status_field(agent.pid(), "VmRSS:");
    let hwm = status_field(agent.pid(), "VmHWM:");
    remove(&c, "idle").await;
    drop(idle_out);

    let agent_run = Figures(runs);
    let agent_exec = Figures(execs);
    println!("\n== hull-agent benchmark: {}", where_it_ran());
    println!(
        "create+start+wait `true` (agent API):   {}",
        agent_run.line()
    );
    println!(
        "exec `true` in a running container:     {}",
        agent_exec.line()
    );
    println!(
        "agent memory, one idle container:       VmRSS {rss}, VmHWM {hwm} (peak over the run)"
    );
    match runc_peer(&agent.shared_dir().join("c")) {
        Some((run, execs)) => {
            println!("peer `runc run` of `true` (same rootfs): {}", run.line());
            println!("peer `runc exec` `true`:                 {}", execs.line());
            println!(
                "ratio agent/runc: start {:.2}, exec {:.2}",
                ms(agent_run.median()) / ms(run.median()),
                ms(agent_exec.median()) / ms(execs.median())
            );
        }
        None => println!("peer: runc not available or failed here; no ratio"),
    }
}
