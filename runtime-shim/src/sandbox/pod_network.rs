//! A VM pod's network: the interfaces CNI put into the pod's network namespace on the host are
//! each wired to a tap there (see [`crate::network`]), the taps are handed to hull-vmm as
//! inherited descriptors (one virtio-net NIC each, with the veth's MAC and MTU), and once the
//! agent answers it configures the guest NICs and routes as CNI configured the veths. The
//! netns path is recorded in the sandbox directory so `delete` after a crash can unwire it.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::agent_client::AgentClient;
use crate::network::{self, MacAddr, NetworkError, Wiring};

/// File in the sandbox directory naming the pod's host netns.
pub const NETNS_FILE: &str = "netns";

/// The pod network of one sandbox.
pub struct PodNetwork {
    netns: PathBuf,
    wiring: Wiring,
    /// A pool VM's: the MAC its NIC booted with, which the guest swaps for the pod's.
    booted_mac: Option<MacAddr>,
}

impl PodNetwork {
    /// Discovers and wires the CNI interfaces of `netns`; records the netns in `sandbox_dir`.
    pub async fn wire(netns: &Path, sandbox_dir: &Path) -> Result<PodNetwork, NetworkError> {
        record_netns(netns, sandbox_dir);
        let path = netns.to_path_buf();
        let wiring = tokio::task::spawn_blocking(move || {
            let found = network::discover(&path)?;
            network::wire(&path, &found)
        })
        .await
        .map_err(|_| NetworkError::Panicked(netns.to_path_buf()))??;
        tracing::info!(netns = %netns.display(), nics = wiring.nics.len(), "pod network wired");
        Ok(PodNetwork {
            netns: netns.to_path_buf(),
            wiring,
            booted_mac: None,
        })
    }

    /// Carries a pool VM's tap from its namespace `vmm_netns` into the pod's `netns` and wires
    /// it to the pod's one interface (`found`, discovered before the claim); records the netns in
    /// `sandbox_dir`.
    pub async fn adopt(
        netns: &Path,
        sandbox_dir: &Path,
        vmm_netns: &Path,
        found: network::PodNetwork,
    ) -> Result<PodNetwork, NetworkError> {
        record_netns(netns, sandbox_dir);
        let (path, from) = (netns.to_path_buf(), vmm_netns.to_path_buf());
        let wiring = tokio::task::spawn_blocking(move || {
            network::adopt_tap(&from, crate::pool::POOL_TAP, &path, &found)
        })
        .await
        .map_err(|_| NetworkError::Panicked(netns.to_path_buf()))??;
        tracing::info!(netns = %netns.display(), "pod network wired to a pool VM's NIC");
        Ok(PodNetwork {
            netns: netns.to_path_buf(),
            wiring,
            booted_mac: Some(crate::pool::POOL_MAC),
        })
    }

    /// The tap descriptors hull-vmm inherits, with their `--net` arguments.
    pub fn vmm_nets(&self) -> Vec<(RawFd, String)> {
        self.wiring
            .nics
            .iter()
            .filter_map(|nic| {
                let fd = nic.fd.as_ref()?.as_raw_fd();
                Some((fd, nic.vmm_net_arg(fd)))
            })
            .collect()
    }

    /// Configures the guest's NICs (found by MAC, renamed as on the host) and routes.
    pub async fn configure_guest(
        &self,
        agent: &AgentClient,
    ) -> Result<(), crate::agent_client::AgentError> {
        for nic in &self.wiring.nics {
            let mut interface = nic.guest.to_proto();
            if let Some(booted) = self.booted_mac {
                interface.new_hw_address = std::mem::take(&mut interface.hw_address);
                interface.hw_address = booted.to_string();
            }
            agent.update_interface(interface).await?;
        }
        let routes = self.wiring.routes.iter().map(|r| r.to_proto()).collect();
        agent.update_routes(routes).await
    }

    /// Removes the taps and filters (after the VMM is gone).
    pub async fn unwire(self) {
        let PodNetwork { netns, wiring, .. } = self;
        let result = tokio::task::spawn_blocking(move || network::unwire(&netns, &wiring)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%e, "unwiring the pod network"),
            Err(e) => tracing::warn!(%e, "unwiring the pod network"),
        }
    }
}

/// Records the pod's netns in `sandbox_dir` for [`unwire_recorded`] (before anything is made in
/// it).
fn record_netns(netns: &Path, sandbox_dir: &Path) {
    let _ = std::fs::write(
        sandbox_dir.join(NETNS_FILE),
        netns.as_os_str().as_encoded_bytes(),
    );
}

/// After a crash: removes whatever of ours is left in the netns recorded in `sandbox_dir`.
pub async fn unwire_recorded(sandbox_dir: &Path) {
    let Ok(netns) = std::fs::read_to_string(sandbox_dir.join(NETNS_FILE)) else {
        return;
    };
    let netns = PathBuf::from(netns.trim());
    let result = tokio::task::spawn_blocking(move || network::unwire_all(&netns)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(%e, "unwiring the pod network after a crash");
    }
}
