//! What GetGuestDetails reports: uname, /proc/meminfo, online CPUs, /proc/filesystems.

use std::path::Path;

use hull_proto::agent::{AgentCapabilities, GuestDetailsResponse, GuestMemory};

/// File systems whose support is worth telling the host about.
const INTERESTING_FILESYSTEMS: [&str; 9] = [
    "cgroup2", "overlay", "virtiofs", "fuse", "tmpfs", "devtmpfs", "ext4", "devpts", "mqueue",
];

/// Reading the guest's details failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestInfoError {
    /// A /proc file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// uname(2) failed.
    #[error("uname: {0}")]
    Uname(nix::Error),
    /// /proc/meminfo lacks a field.
    #[error("/proc/meminfo has no usable {0} line")]
    MeminfoField(&'static str),
}

/// The value of the /proc/meminfo line `name` in bytes (values are in kB); `Ok(None)` when there
/// is no such line, an error when the line is there but unreadable.
fn meminfo_field(text: &str, name: &'static str) -> Result<Option<u64>, GuestInfoError> {
    let Some(rest) = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
    else {
        return Ok(None);
    };
    let mut parts = rest.split_whitespace();
    let value: Option<u64> = parts.next().and_then(|v| v.parse().ok());
    let bytes = match (value, parts.next()) {
        (Some(value), Some("kB")) => value.checked_mul(1024),
        (Some(value), None) => Some(value),
        _ => None,
    };
    bytes.map(Some).ok_or(GuestInfoError::MeminfoField(name))
}

/// Parses /proc/meminfo text into the API's [`GuestMemory`] (bytes). `MemTotal` and
/// `MemAvailable` must be there; a breakdown line the kernel does not print counts as 0.
/// `percpu_lists_bytes` is not in /proc/meminfo (see [`parse_percpu_list_bytes`]) and stays 0.
pub fn parse_meminfo(text: &str) -> Result<GuestMemory, GuestInfoError> {
    let required = |name| meminfo_field(text, name)?.ok_or(GuestInfoError::MeminfoField(name));
    let optional = |name| Ok::<_, GuestInfoError>(meminfo_field(text, name)?.unwrap_or(0));
    Ok(GuestMemory {
        total_bytes: required("MemTotal")?,
        available_bytes: required("MemAvailable")?,
        free_bytes: optional("MemFree")?,
        cached_bytes: optional("Cached")?,
        shmem_bytes: optional("Shmem")?,
        anon_bytes: optional("AnonPages")?,
        slab_bytes: optional("Slab")?,
        kernel_stack_bytes: optional("KernelStack")?,
        page_tables_bytes: optional("PageTables")?,
        percpu_bytes: optional("Percpu")?,
        vmalloc_bytes: optional("VmallocUsed")?,
        ..Default::default()
    })
}

/// Pages parked on the per-CPU page lists, in bytes: the sum of every pageset's `count:` in
/// /proc/zoneinfo text (4 KiB pages).
pub fn parse_percpu_list_bytes(zoneinfo: &str) -> u64 {
    zoneinfo
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("count:"))
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .fold(0u64, |sum, pages| {
            sum.saturating_add(pages.saturating_mul(4096))
        })
}

/// The [`INTERESTING_FILESYSTEMS`] listed in /proc/filesystems text, in that order.
pub fn parse_filesystems(text: &str) -> Vec<String> {
    let supported: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    INTERESTING_FILESYSTEMS
        .iter()
        .filter(|fs| supported.contains(fs))
        .map(|fs| fs.to_string())
        .collect()
}

/// Number of online CPUs (sysconf `_SC_NPROCESSORS_ONLN`), at least 1.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

fn read_proc(path: &str) -> Result<String, GuestInfoError> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| GuestInfoError::Read {
        path: path.to_string(),
        source,
    })
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> Result<String, GuestInfoError> {
    let uts = nix::sys::utsname::uname().map_err(GuestInfoError::Uname)?;
    Ok(uts.release().to_string_lossy().into_owned())
}

/// Collects the GetGuestDetails reply; `implemented_rpcs` become `capabilities.rpcs`.
pub fn read_guest_details(
    implemented_rpcs: &[&str],
) -> Result<GuestDetailsResponse, GuestInfoError> {
    let uts = nix::sys::utsname::uname().map_err(GuestInfoError::Uname)?;
    let mut memory = parse_meminfo(&read_proc("/proc/meminfo")?)?;
    let filesystems = parse_filesystems(&read_proc("/proc/filesystems")?);
    // Only a breakdown figure: a kernel without /proc/zoneinfo reports 0.
    memory.percpu_lists_bytes = read_proc("/proc/zoneinfo")
        .map(|text| parse_percpu_list_bytes(&text))
        .unwrap_or(0);
    Ok(GuestDetailsResponse {
        kernel_release: uts.release().to_string_lossy().into_owned(),
        kernel_version: uts.version().to_string_lossy().into_owned(),
        machine: uts.machine().to_string_lossy().into_owned(),
        memory_total_bytes: memory.total_bytes,
        memory_available_bytes: memory.available_bytes,
        online_cpus: online_cpus(),
        capabilities: protobuf::MessageField::some(AgentCapabilities {
            rpcs: implemented_rpcs.iter().map(|s| s.to_string()).collect(),
            filesystems,
            ..Default::default()
        }),
        agent_version: crate::AGENT_VERSION.to_string(),
        memory: protobuf::MessageField::some(memory),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        4028152 kB\nMemFree:          123 kB\n\
                           MemAvailable:    3000000 kB\nBuffers:  1 kB\n";

    #[test]
    fn meminfo_values_are_converted_to_bytes() {
        assert_eq!(
            parse_meminfo(MEMINFO).unwrap(),
            GuestMemory {
                total_bytes: 4028152 * 1024,
                available_bytes: 3000000 * 1024,
                free_bytes: 123 * 1024,
                ..Default::default()
            }
        );
    }

    #[test]
    fn meminfo_breakdown_lines_are_read_and_missing_ones_are_zero() {
        let text = "MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 50 kB\nCached: 30 kB\n\
                    SwapCached: 99 kB\nAnonPages: 4 kB\nShmem: 20 kB\nSlab: 7 kB\n\
                    KernelStack: 2 kB\nPageTables: 1 kB\n";
        let info = parse_meminfo(text).unwrap();
        assert_eq!(info.cached_bytes, 30 * 1024, "Cached, not SwapCached");
        assert_eq!(info.shmem_bytes, 20 * 1024);
        assert_eq!(info.anon_bytes, 4 * 1024);
        assert_eq!(info.slab_bytes, 7 * 1024);
        assert_eq!(info.kernel_stack_bytes, 2 * 1024);
        assert_eq!(info.page_tables_bytes, 1024);
        assert_eq!(info.percpu_bytes, 0, "no Percpu line");
        assert_eq!(info.total_bytes, 100 * 1024);
        assert_eq!(info.percpu_lists_bytes, 0, "not a /proc/meminfo figure");
        // A breakdown line that is there but unreadable is an error, not a zero.
        assert!(parse_meminfo("MemTotal: 1 kB\nMemAvailable: 1 kB\nSlab: lots\n").is_err());
    }

    #[test]
    fn meminfo_without_fields_or_with_garbage_is_an_error() {
        assert!(matches!(
            parse_meminfo("MemFree: 1 kB\n"),
            Err(GuestInfoError::MeminfoField("MemTotal"))
        ));
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\nMemAvailable: 1 kB\n").is_err());
        let overflow = format!("MemTotal: {} kB\nMemAvailable: 1 kB\n", u64::MAX);
        assert!(parse_meminfo(&overflow).is_err());
        // "MemTotalX" is not "MemTotal".
        assert!(parse_meminfo("MemTotalX: 1 kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn per_cpu_list_pages_are_summed_over_every_pageset() {
        let zoneinfo = "Node 0, zone    DMA32\n  pages free     3\n  pagesets\n    cpu: 0\n\
                        \x20             count:    103\n              high:     1581\n    cpu: 1\n\
                        \x20             count: 2\n  node_unreclaimable:  0\n";
        assert_eq!(parse_percpu_list_bytes(zoneinfo), 105 * 4096);
        assert_eq!(parse_percpu_list_bytes("count: lots\n"), 0);
    }

    #[test]
    fn filesystems_are_filtered_in_a_fixed_order() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tcgroup2\n\text4\nnodev\toverlay\n";
        assert_eq!(
            parse_filesystems(text),
            vec!["cgroup2", "overlay", "tmpfs", "ext4"]
        );
    }

    #[test]
    fn details_of_this_machine_match_proc() {
        let details = read_guest_details(&["Health"]).unwrap();
        let meminfo = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        assert_eq!(details.memory_total_bytes, meminfo.total_bytes);
        assert_eq!(details.memory.total_bytes, meminfo.total_bytes);
        assert!(details.memory.slab_bytes > 0);
        assert!(details.online_cpus >= 1);
        assert_eq!(details.kernel_release, kernel_release().unwrap());
        assert_eq!(details.capabilities.rpcs, vec!["Health"]);
        assert_eq!(details.agent_version, crate::AGENT_VERSION);
    }
}
