//! The VM size of a pod: containerd's CRI puts the pod's resources on the sandbox container as
//! annotations; the VM gets them plus the configured overhead, never less than the configured
//! floor.

use std::collections::HashMap;

/// CPU quota of the whole pod (µs per period; absent or ≤ 0: no limit).
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// CPU period the quota is counted in (µs).
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// CPU shares of the pod (not used for sizing: shares are relative, not an amount).
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
/// Memory limit of the whole pod in bytes (absent or 0: no limit).
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// Most vCPUs and MiB a VM gets (the config's own limits).
const MAX_VCPUS: u32 = 32;
const MAX_MEM_MIB: u64 = 65536;

/// What a pod VM is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub mem_mib: u64,
}

/// The floor and the overheads from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizingPolicy {
    /// The smallest VM (config `vcpus`, `mem_mib`), also the size of a pod without limits.
    pub floor: VmSize,
    /// Added to the pod's CPU limit (config `pod_vcpu_overhead`).
    pub vcpu_overhead: u32,
    /// Added to the pod's memory limit for the guest kernel and agent (config
    /// `pod_mem_overhead_mib`).
    pub mem_overhead_mib: u64,
}

/// The VM size for a sandbox container's annotations: each of CPUs and memory is the larger of
/// the floor and the pod's limit plus overhead (CPU limit = quota / period, rounded up).
/// Malformed annotations count as absent.
pub fn vm_size(policy: &SizingPolicy, annotations: Option<&HashMap<String, String>>) -> VmSize {
    let get = |key: &str| -> Option<i64> {
        annotations?
            .get(key)?
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
    };
    let pod_cpus = match (get(SANDBOX_CPU_QUOTA), get(SANDBOX_CPU_PERIOD)) {
        (Some(quota), Some(period)) => Some((quota as u64).div_ceil(period as u64)),
        _ => None,
    };
    let pod_mib = get(SANDBOX_MEMORY).map(|bytes| (bytes as u64).div_ceil(1 << 20));
    let vcpus = pod_cpus
        .map(|c| {
            c.saturating_add(policy.vcpu_overhead as u64)
                .min(MAX_VCPUS as u64) as u32
        })
        .map_or(policy.floor.vcpus, |c| c.max(policy.floor.vcpus));
    let mem_mib = pod_mib
        .map(|m| m.saturating_add(policy.mem_overhead_mib).min(MAX_MEM_MIB))
        .map_or(policy.floor.mem_mib, |m| m.max(policy.floor.mem_mib));
    VmSize { vcpus, mem_mib }
}
