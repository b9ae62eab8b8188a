//! Where a hull pod's guest memory goes, as the guest kernel counts it (the agent's
//! GetGuestDetails, /proc/meminfo in the guest): the memory group prints it beside the host's
//! PSS, so a cut can aim at what the guest really holds.
//!
//! The VM's RAM splits into what the guest kernel set aside while booting (its own image, the
//! page map: RAM minus MemTotal), what it uses, and what is free. The host pays for the first
//! two and for free pages the guest touched and has not handed back yet.

use std::path::Path;
use std::time::Duration;

use hull_proto::agent::GuestMemory;
use hull_proto::agent_ttrpc::AgentServiceClient;

use crate::agent_client::AgentClient;
use crate::sandbox::{inventory, SandboxPaths};

/// How long to wait for the agent's hybrid-vsock handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One guest's memory, in MiB, by what holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuestSplit {
    /// The VM's RAM.
    pub ram: f64,
    /// Set aside by the guest kernel at boot (RAM - MemTotal): its image, the page map.
    pub reserved: f64,
    /// Shmem: the root file system (the unpacked initramfs) and tmpfs.
    pub shmem: f64,
    /// Page cache other than shmem (Cached - Shmem).
    pub page_cache: f64,
    /// AnonPages: process memory.
    pub anon: f64,
    /// Slab.
    pub slab: f64,
    /// KernelStack + PageTables + Percpu.
    pub stacks_tables_percpu: f64,
    /// VmallocUsed.
    pub vmalloc: f64,
    /// Free pages parked on the per-CPU page lists (not in MemFree, not handed back).
    pub percpu_lists: f64,
    /// Used but in none of the above (device buffers, pages the kernel allocates directly, ...).
    pub other_kernel: f64,
    /// MemFree.
    pub free: f64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl GuestSplit {
    /// Splits what a guest reported for a VM of `ram_mib`. Every figure comes from the guest
    /// and is only printed: a lying guest makes a wrong table, nothing else.
    pub fn of(memory: &GuestMemory, ram_mib: u64) -> GuestSplit {
        let ram = ram_mib as f64;
        let total = mib(memory.total_bytes);
        let free = mib(memory.free_bytes);
        let shmem = mib(memory.shmem_bytes);
        let page_cache = (mib(memory.cached_bytes) - shmem).max(0.0);
        let anon = mib(memory.anon_bytes);
        let slab = mib(memory.slab_bytes);
        let stacks_tables_percpu = mib(memory.kernel_stack_bytes)
            + mib(memory.page_tables_bytes)
            + mib(memory.percpu_bytes);
        let vmalloc = mib(memory.vmalloc_bytes);
        let percpu_lists = mib(memory.percpu_lists_bytes);
        let counted =
            shmem + page_cache + anon + slab + stacks_tables_percpu + vmalloc + percpu_lists;
        GuestSplit {
            ram,
            reserved: (ram - total).max(0.0),
            shmem,
            page_cache,
            anon,
            slab,
            stacks_tables_percpu,
            vmalloc,
            percpu_lists,
            other_kernel: (total - free - counted).max(0.0),
            free,
        }
    }

    /// Reserved plus used: what the guest holds (the host pays at least this).
    pub fn held(&self) -> f64 {
        self.ram - self.free
    }

    /// Every figure with its name, in table order.
    pub fn parts(&self) -> [(&'static str, f64); 12] {
        [
            ("RAM", self.ram),
            ("held (RAM - free)", self.held()),
            ("reserved at boot (kernel image, page map)", self.reserved),
            ("root fs + tmpfs", self.shmem),
            ("page cache", self.page_cache),
            ("anon", self.anon),
            ("slab", self.slab),
            ("stacks + page tables + percpu", self.stacks_tables_percpu),
            ("vmalloc", self.vmalloc),
            ("free pages on per-CPU lists", self.percpu_lists),
            ("other kernel", self.other_kernel),
            ("free", self.free),
        ]
    }
}

/// Asks the agent of sandbox `id` (under `run_dir`) for its memory.
pub fn read(run_dir: &Path, id: &str) -> Result<GuestSplit, String> {
    let paths = SandboxPaths::new(run_dir, id);
    let ram_mib = inventory::recorded_mem_mib(&paths.dir)
        .ok_or_else(|| format!("no VM size recorded in {}", paths.dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let details = runtime.block_on(async {
        let client = hull_proto::client::connect_hybrid_vsock_with_timeout(
            &paths.vsock_socket,
            hull_proto::AGENT_API_PORT,
            CONNECT_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        AgentClient::new(AgentServiceClient::new(client))
            .guest_details()
            .await
            .map_err(|e| e.to_string())
    })?;
    let memory = details
        .memory
        .into_option()
        .ok_or("the agent reported no memory breakdown (an older agent)")?;
    Ok(GuestSplit::of(&memory, ram_mib))
}

/// One row per figure of [`GuestSplit::parts`], each with a sample per guest: hull-only rows
/// of the memory group's table.
pub fn rows(splits: &[GuestSplit]) -> Vec<(String, Vec<f64>)> {
    let parts: Vec<_> = splits.iter().map(GuestSplit::parts).collect();
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let samples = parts.iter().map(|p| p[i].1).collect();
            (format!("hull guest: {name}"), samples)
        })
        .collect()
}

#[cfg(test)]
mod tests;
