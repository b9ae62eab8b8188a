//! `--pool`: the pod scenario with `hull pool run` (issue 15). The pool (one VM) is started with
//! the pod step's hull config before the first pod, which must take the pool's VM (its sandbox
//! directory names the slot); the pool is stopped once that pod runs (it retires the VM it
//! booted to refill), and a later pod boots a VM of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_runtime::pool::{ask_to_stop, stop_and_wait, PoolDirs, POOL_DIR, SLOT_FILE};
use hull_runtime::sandbox::jail::cgroup::recorded;
use hull_runtime::sandbox::priority::{current_weight, BootPriority};

use crate::Args;

/// How long the pool may take to have its VM ready (the lab is slow, and hangs happen).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the daemon may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `hull pool run`.
pub struct PoolDaemon {
    child: Child,
    log: PathBuf,
}

/// The `hull` binary: `--hull-bin`, else beside this program.
fn hull_binary(args: &Args) -> PathBuf {
    if !args.hull_bin.as_os_str().is_empty() {
        return args.hull_bin.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hull")))
        .unwrap_or_else(|| PathBuf::from("hull"))
}

fn ready_dir(run_dir: &Path) -> PathBuf {
    PoolDirs::new(run_dir).ready
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

impl PoolDaemon {
    /// Starts the pool with one VM and waits until it is ready.
    pub fn start(args: &Args) -> Result<(PoolDaemon, String), String> {
        let log = args.pod_dir.join("pool.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let hull = hull_binary(args);
        let t0 = Instant::now();
        let child = Command::new(&hull)
            .args(["pool", "run", "--size", "1", "--config"])
            .arg(&args.hull_config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{} pool run: {e}", hull.display()))?;
        let mut daemon = PoolDaemon { child, log };
        while entries(&ready_dir(&args.run_dir)) == 0 {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "hull pool run exited ({status}): {}",
                    daemon.log_tail()
                ));
            }
            if t0.elapsed() > READY_TIMEOUT {
                let _ = daemon.stop(&args.run_dir);
                return Err(format!(
                    "no pool VM ready after {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    daemon.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((
            daemon,
            format!(
                "hull pool run: 1 VM ready in {} ms",
                t0.elapsed().as_millis()
            ),
        ))
    }

    /// SIGTERM, then waits: the daemon must exit 0 and leave no ready or booting VM.
    pub fn stop(&mut self, run_dir: &Path) -> Result<String, String> {
        let t0 = Instant::now();
        ask_to_stop(&mut self.child);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    return Err(format!("hull pool run ended {status}: {}", self.log_tail()))
                }
                Ok(None) if t0.elapsed() > STOP_TIMEOUT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "hull pool run still ran {} s after SIGTERM: {}",
                        STOP_TIMEOUT.as_secs(),
                        self.log_tail()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let dirs = PoolDirs::new(run_dir);
        let left = entries(&dirs.ready) + entries(&dirs.boot);
        if left > 0 {
            return Err(format!("the stopped pool left {left} VM directories"));
        }
        let _ = std::fs::remove_dir_all(run_dir.join(POOL_DIR));
        Ok(format!(
            "hull pool run stopped in {} ms, its unclaimed VMs removed",
            t0.elapsed().as_millis()
        ))
    }

    /// The daemon's last log lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(6)..].join(" | ")
    }
}

impl Drop for PoolDaemon {
    fn drop(&mut self) {
        let _ = stop_and_wait(&mut self.child);
    }
}

/// Whether sandbox `pod` was taken from the pool: its directory names the slot.
pub fn claimed(run_dir: &Path, pod: &str) -> Result<String, String> {
    let file = run_dir.join(pod).join(SLOT_FILE);
    match std::fs::read_to_string(&file) {
        Ok(slot) => Ok(format!("the pod took pool VM {}", slot.trim())),
        Err(_) => Err(format!(
            "the pod booted its own VM: no {} (the shim's log says why)",
            file.display()
        )),
    }
}

/// Whether sandbox `pod` booted its own VM (no pool slot recorded).
pub fn booted_own(run_dir: &Path, pod: &str) -> Result<String, String> {
    match claimed(run_dir, pod) {
        Ok(took) => Err(format!("the pool was stopped, yet {took}")),
        Err(_) => Ok("the pod booted its own VM".into()),
    }
}

/// Whether the pod cgroup recorded in the sandbox directory `dir` has the CPU weight of
/// `priority`; `whose` names the VM in what is said.
fn weight_is(dir: &Path, priority: BootPriority, whose: &str) -> Result<String, String> {
    let dirs = recorded(dir);
    let (file, value) = current_weight(&dirs)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no cpu.weight or cpu.shares in the pod cgroups {dirs:?}"))?;
    let said = format!("{whose} cgroup has {} {value}", file.name());
    if file.priority_of(value) == Some(priority) {
        Ok(said)
    } else {
        Err(format!("{said}, not the {priority:?} weight"))
    }
}

/// The pool's ready VM boots and waits at the lowest CPU weight.
pub fn ready_vm_in_background(run_dir: &Path) -> Result<String, String> {
    let ready = ready_dir(run_dir);
    let slot = std::fs::read_dir(&ready)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .ok_or_else(|| format!("no ready VM in {}", ready.display()))?;
    weight_is(
        &slot.path(),
        BootPriority::Background,
        "the ready pool VM's",
    )
}

/// The VM pod `pod` took from the pool has the default CPU weight.
pub fn claimed_vm_at_normal_priority(run_dir: &Path, pod: &str) -> Result<String, String> {
    weight_is(&run_dir.join(pod), BootPriority::Normal, "the claimed VM's")
}
