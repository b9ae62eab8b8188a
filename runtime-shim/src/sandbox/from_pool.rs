//! Starting a sandbox on a VM the pool booted ([`crate::pool`]): claim a ready slot, watch its
//! processes, carry the pod's network over, then finish as for a VM booted here. Whatever goes
//! wrong on the way, the claimed VM is torn down and the caller boots one as without a pool.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::pod_network::PodNetwork;
use super::priority::restore_normal_weight;
use super::processes::{
    monitor_adopted, read_pids_file, stop_processes, ProcessRecord, HULL_VMM, VIRTIOFSD,
};
use super::{cleanup, Sandbox, SandboxError, SandboxPaths, SandboxRequest, Started};
use crate::bench::stages::{self, Stage};
use crate::config::Config;
use crate::network;
use crate::pool::{self, PoolDirs};

impl Sandbox {
    /// A sandbox on a claimed pool VM, or `None` when the pool has no VM for this request (no
    /// pool, no ready slot of its size, a pod with more than one interface, no jail) or the
    /// claimed one failed (it is torn down and the reason logged).
    pub(super) async fn start_from_pool(
        config: &Config,
        sandbox_id: &str,
        request: &SandboxRequest,
    ) -> Option<Sandbox> {
        let run_dir = &config.sandbox.run_dir;
        let dirs = PoolDirs::new(run_dir);
        // Without a ready VM (no pool: the common case) nothing else is looked at.
        if !config.jail || dirs.ready_slots().is_empty() {
            return None;
        }
        let profile = pool::boot_profile(config, request.size);
        if dirs.ready_for(&profile).is_empty() {
            return None;
        }
        let pod_network = match &request.host_netns {
            Some(netns) => {
                let path = netns.clone();
                match tokio::task::spawn_blocking(move || network::discover(&path)).await {
                    Ok(Ok(found))
                        if found.interfaces.len() == 1
                            && found.interfaces[0].mtu <= pool::POOL_MTU =>
                    {
                        Some(found)
                    }
                    Ok(Ok(found)) => {
                        tracing::info!(
                            sandbox = sandbox_id,
                            interfaces = found.interfaces.len(),
                            mtu = found.interfaces.first().map(|i| i.mtu),
                            "a pool VM has one NIC of MTU {} at most: booting a VM for this pod",
                            pool::POOL_MTU
                        );
                        return None;
                    }
                    _ => return None,
                }
            }
            None => None,
        };
        let paths = match pool::claim(run_dir, sandbox_id, &profile) {
            Ok(Some(paths)) => paths,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(sandbox = sandbox_id, %e, "claiming a pool VM");
                return None;
            }
        };
        stages::mark(Stage::PoolClaimed, sandbox_id);
        match adopt(config, sandbox_id, paths, request.clone(), pod_network).await {
            Ok(sandbox) => Some(sandbox),
            Err(e) => {
                tracing::warn!(
                    sandbox = sandbox_id,
                    %e,
                    "the claimed pool VM failed: booting a VM for this sandbox"
                );
                None
            }
        }
    }
}

/// Takes over the claimed VM in `paths`: its processes (from the pids file), the pod's
/// network, then the common finish.
async fn adopt(
    config: &Config,
    sandbox_id: &str,
    paths: SandboxPaths,
    request: SandboxRequest,
    pod_network: Option<network::PodNetwork>,
) -> Result<Sandbox, SandboxError> {
    let recorded = read_pids_file(&paths.pids_file);
    let pids: Vec<(&'static str, ProcessRecord)> = recorded
        .iter()
        .filter_map(|(name, record)| {
            let name: &'static str = [VIRTIOFSD, HULL_VMM]
                .into_iter()
                .find(|known| known == name)?;
            Some((name, *record))
        })
        .collect();
    let vmm = pids.iter().find(|(name, _)| *name == HULL_VMM).map(|p| p.1);
    let stopping = Arc::new(AtomicBool::new(false));
    let give_up = |pids: Vec<(&'static str, ProcessRecord)>, paths: SandboxPaths| {
        stopping.store(true, Ordering::SeqCst);
        async move {
            stop_processes(&pids).await;
            cleanup::cleanup_dir(&paths);
        }
    };
    // The VMM's network namespace, opened while the VMM is known to be that very process (a
    // pid read later could name another).
    let vmm_netns = vmm.and_then(|vmm| File::open(format!("/proc/{}/ns/net", vmm.pid)).ok());
    let alive = pids.len() == 2 && pids.iter().all(|(_, r)| r.is_alive());
    let Some(vmm_netns) = vmm_netns.filter(|_| alive) else {
        give_up(pids, paths.clone()).await;
        return Err(SandboxError::Died(format!(
            "a process of the pre-booted VM in {} is gone",
            paths.dir.display()
        )));
    };
    // The pool booted it at the lowest CPU weight (see [`super::priority`]); the pod's VM gets
    // the default weight, and the pod start waits for it from here on.
    if let Err(e) = restore_normal_weight(&super::jail::cgroup::recorded(&paths.dir)) {
        tracing::warn!(sandbox = sandbox_id, %e, "giving a pool VM the default CPU weight");
    }
    let (death_tx, death) = watch::channel(None);
    let death_tx = Arc::new(death_tx);
    for (name, record) in &pids {
        if let Err(e) = monitor_adopted(
            name,
            *record,
            pids.clone(),
            stopping.clone(),
            death_tx.clone(),
        ) {
            give_up(pids.clone(), paths.clone()).await;
            return Err(SandboxError::Io {
                action: "watching (pidfd_open)",
                path: PathBuf::from(format!("/proc/{}", record.pid)),
                source: e,
            });
        }
    }
    let mut wired = None;
    if let (Some(netns), Some(found)) = (&request.host_netns, pod_network) {
        let vmm_netns = PathBuf::from(format!("/proc/self/fd/{}", vmm_netns.as_raw_fd()));
        match PodNetwork::adopt(netns, &paths.dir, &vmm_netns, found).await {
            Ok(net) => wired = Some(net),
            Err(e) => {
                give_up(pids, paths).await;
                return Err(e.into());
            }
        }
    }
    let started = Started {
        paths,
        network: wired,
        pids,
        stopping,
        death,
        from_pool: true,
        ready: None,
    };
    started.finish(config, sandbox_id, request).await
}
