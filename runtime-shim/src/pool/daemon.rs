//! The pool daemon (`hull pool run`): keeps `size` VMs of the default size booted to a ready
//! agent under `<run_dir>/.pool/`, one boot at a time, and boots a new one for each a shim
//! claims. The VMs' processes are its children: it reaps them, claimed or not. A VM that dies
//! before a shim claims it is retired and replaced. On shutdown (the future given to [`run`])
//! it retires the unclaimed VMs; claimed ones are the shims' and keep running.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    boot_profile, move_slot, PoolDirs, POOL_DIR, POOL_MAC, POOL_MTU, POOL_TAP, PROFILE_FILE,
};
use crate::config::{Config, SandboxMode};
use crate::cri::sizing::VmSize;
use crate::network;
use crate::sandbox::priority::BootPriority;
use crate::sandbox::processes::{death_reason, stop_processes, ProcessRecord};
use crate::sandbox::{cleanup, inventory, launch, SandboxError, SandboxPaths};

/// The message the daemon logs for each VM a shim took (`hull bench` counts them).
pub const CLAIMED: &str = "pool VM claimed";

/// Boot failures in a row after which the daemon gives up.
const MAX_FAILURES: u32 = 5;

/// Why the pool cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The configuration or the arguments do not allow a pool.
    #[error("hull pool: {0}")]
    Usage(String),
    /// A pool directory could not be made or locked.
    #[error("hull pool: {action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// VMs kept failing to boot.
    #[error("hull pool: {MAX_FAILURES} boots in a row failed, the last: {0}")]
    Boots(SandboxError),
}

/// A ready VM of the pool.
struct Slot {
    id: String,
    pids: Vec<(&'static str, ProcessRecord)>,
    died: watch::Receiver<Option<String>>,
}

/// How the pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// VMs kept ready.
    pub size: usize,
    /// How long after a shim took a VM the replacement starts booting: a boot beside a pod
    /// start slows that start where the machine has no idle core (in the lab, with one L1 CPU,
    /// a pod start from the pool took 3.6 s with the replacement booting beside it and 2.2 s
    /// without). 0: at once.
    pub refill_delay: Duration,
}

/// Runs the pool until `shutdown` completes.
pub async fn run(
    config: &Config,
    options: PoolOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PoolError> {
    let size = options.size;
    if size == 0 {
        return Err(PoolError::Usage(
            "the pool size is 0: pass --size N (at least 1)".into(),
        ));
    }
    if config.sandbox.mode != SandboxMode::Vm {
        return Err(PoolError::Usage(
            "a pool holds VMs: sandbox.mode must be \"vm\"".into(),
        ));
    }
    if !config.jail {
        return Err(PoolError::Usage(
            "a pool VM needs the jail (its own network namespace): jail = false is not supported"
                .into(),
        ));
    }
    config
        .check_sandbox_prerequisites()
        .map_err(|e| PoolError::Usage(e.to_string()))?;
    let dirs = PoolDirs::new(&config.sandbox.run_dir);
    let _lock = lock(&config.sandbox.run_dir.join(POOL_DIR))?;
    for dir in [&dirs.boot, &dirs.ready] {
        std::fs::create_dir_all(dir).map_err(|source| PoolError::Io {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
    }
    clear_leftovers(&dirs).await;
    let vm = VmSize {
        vcpus: config.vcpus.into(),
        mem_mib: config.mem_mib,
    };
    tracing::info!(size, refill_delay_ms = options.refill_delay.as_millis() as u64, vcpus = vm.vcpus, mem_mib = vm.mem_mib, run_dir = %config.sandbox.run_dir.display(), "pool started");
    tokio::pin!(shutdown);
    let mut ready: Vec<Slot> = Vec::new();
    let mut failures = 0;
    let mut booted = 0u64;
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut last_claim: Option<std::time::Instant> = None;
    loop {
        let mut kept = Vec::new();
        for slot in ready.drain(..) {
            if !dirs.ready.join(&slot.id).exists() {
                tracing::info!(slot = slot.id, "{CLAIMED}");
                last_claim = Some(std::time::Instant::now());
                continue;
            }
            let died = slot.died.borrow().clone();
            match died {
                Some(reason) => {
                    tracing::warn!(slot = slot.id, reason, "a pool VM died: replacing it");
                    retire(&dirs, &slot).await;
                }
                None => kept.push(slot),
            }
        }
        ready = kept;
        let refill_wait = last_claim
            .map(|at| options.refill_delay.saturating_sub(at.elapsed()))
            .unwrap_or_default();
        if ready.len() < size && refill_wait.is_zero() {
            booted += 1;
            // Unique across daemons: a pid comes back, the start time with it does not.
            let id = format!("pool-{}-{started_ms}-{booted}", std::process::id());
            // SIGTERM during a boot: the half-booted VM goes (its processes are in its pids
            // file from their spawn on).
            let booted_or_stopped = tokio::select! {
                result = boot_slot(config, &dirs, &id, vm) => Some(result),
                _ = &mut shutdown => None,
            };
            let Some(result) = booted_or_stopped else {
                tracing::info!(slot = id, "stopping a pool VM that was booting");
                crate::sandbox::cleanup_after_crash(&SandboxPaths::new(&dirs.boot, &id)).await;
                break;
            };
            match result {
                Ok(slot) => {
                    failures = 0;
                    tracing::info!(
                        slot = slot.id,
                        ready = ready.len() + 1,
                        size,
                        "pool VM ready"
                    );
                    ready.push(slot);
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(slot = id, %e, failures, "a pool VM did not boot");
                    if failures >= MAX_FAILURES {
                        retire_all(&dirs, ready).await;
                        return Err(PoolError::Boots(e));
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1 << failures)) => {}
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(if ready.len() < size {
                refill_wait.min(Duration::from_millis(50))
            } else {
                Duration::from_millis(50)
            }) => {}
        }
    }
    retire_all(&dirs, ready).await;
    tracing::info!("pool stopped");
    Ok(())
}

/// Boots one VM in `boot/<id>` with its NIC on a tap in a network namespace of its own, waits
/// for its agent and moves it to `ready/<id>`.
async fn boot_slot(
    config: &Config,
    dirs: &PoolDirs,
    id: &str,
    size: VmSize,
) -> Result<Slot, SandboxError> {
    let paths = SandboxPaths::new(&dirs.boot, id);
    std::fs::create_dir_all(&paths.shared).map_err(|source| SandboxError::Io {
        action: "creating",
        path: paths.shared.clone(),
        source,
    })?;
    let children = async {
        let netns = File::from(network::new_netns()?);
        let tap = network::create_detached_tap(&netns, POOL_TAP)?;
        let fd = tap.as_raw_fd();
        let nets = [(fd, format!("fd={fd},mac={POOL_MAC},mtu={POOL_MTU}"))];
        let netns_path = PathBuf::from(format!("/proc/self/fd/{}", netns.as_raw_fd()));
        let priority = BootPriority::Background;
        launch::start_vm(config, id, &paths, size, &nets, Some(&netns_path), priority).await
        // The VMM holds the tap and sits in the namespace: ours close here.
    };
    let (children, ready) = children
        .await
        .inspect_err(|_| cleanup::cleanup_dir(&paths))?;
    let pids: Vec<(&'static str, ProcessRecord)> = children
        .iter()
        .filter_map(|(name, child)| Some((*name, ProcessRecord::of(child.id()?)?)))
        .collect();
    let _ = inventory::write_info(&paths.dir, "vm", size.vcpus, size.mem_mib);
    let profile = paths.dir.join(PROFILE_FILE);
    let recorded = std::fs::write(&profile, boot_profile(config, size));
    let (death_tx, died) = watch::channel(None);
    let death_tx = Arc::new(death_tx);
    for (name, mut child) in children {
        let death_tx = death_tx.clone();
        // Reaps the process whoever owns the VM by then; the report only matters unclaimed.
        tokio::spawn(async move {
            let reason = match child.wait().await {
                Ok(status) => death_reason(name, status),
                Err(e) => format!("{name} could not be waited for: {e}"),
            };
            death_tx.send_replace(Some(reason));
        });
    }
    let agent = match recorded {
        Ok(()) => {
            let timeout = config.sandbox.boot_timeout();
            crate::sandbox::connect_agent(&paths, id, &died, timeout, Some(ready)).await
        }
        Err(source) => Err(SandboxError::Io {
            action: "writing",
            path: profile.clone(),
            source,
        }),
    };
    if let Err(e) = agent {
        stop_processes(&pids).await;
        cleanup::cleanup_dir(&paths);
        return Err(e);
    }
    let to = dirs.ready.join(id);
    if let Err(source) = std::fs::rename(&paths.dir, &to) {
        stop_processes(&pids).await;
        cleanup::cleanup_dir(&paths);
        return Err(SandboxError::Io {
            action: "moving a booted pool VM to",
            path: to,
            source,
        });
    }
    Ok(Slot {
        id: id.to_string(),
        pids,
        died,
    })
}

/// Takes `slot` out of `ready/` (unless a shim claimed it first) and tears it down.
async fn retire(dirs: &PoolDirs, slot: &Slot) {
    let back = SandboxPaths::new(&dirs.boot, &slot.id);
    if move_slot(&dirs.ready.join(&slot.id), &back.dir).is_err() {
        // Claimed in the meantime: the shim's now.
        return;
    }
    stop_processes(&slot.pids).await;
    cleanup::cleanup_dir(&back);
}

async fn retire_all(dirs: &PoolDirs, slots: Vec<Slot>) {
    for slot in &slots {
        retire(dirs, slot).await;
    }
}

/// Tears down what a daemon that died left in the pool (its VMs' processes, mounts, cgroups).
/// A ready VM is first taken back into `boot/` (unless a shim claims it first: then it is the
/// shim's).
async fn clear_leftovers(dirs: &PoolDirs) {
    for slot in dirs.ready_slots() {
        tracing::warn!(slot, "taking back a ready pool VM a previous daemon left");
        let _ = move_slot(&dirs.ready.join(&slot), &dirs.boot.join(&slot));
    }
    let Ok(entries) = std::fs::read_dir(&dirs.boot) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if hull_proto::valid_id(&name) {
            tracing::warn!(slot = name, "removing a pool VM a previous daemon left");
            crate::sandbox::cleanup_after_crash(&SandboxPaths::new(&dirs.boot, &name)).await;
        }
    }
}

/// Takes the pool's lock (one daemon per run directory).
fn lock(pool_dir: &std::path::Path) -> Result<nix::fcntl::Flock<File>, PoolError> {
    std::fs::create_dir_all(pool_dir).map_err(|source| PoolError::Io {
        action: "creating",
        path: pool_dir.to_path_buf(),
        source,
    })?;
    let path = pool_dir.join("lock");
    let file = File::create(&path).map_err(|source| PoolError::Io {
        action: "creating",
        path: path.clone(),
        source,
    })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| PoolError::Io {
            action: "locking (is another `hull pool run` using this run directory?)",
            path,
            source: errno.into(),
        },
    )
}
