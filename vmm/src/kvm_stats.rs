//! KVM's own per-VM and per-vCPU counters (the binary statistics of `KVM_GET_STATS_FD`, Linux
//! 5.14+): how many exits the guest took inside KVM (page faults, halts, interrupts, ...), not only
//! the ones that reach the VMM, and how guest memory is mapped (`pages_4k`, `pages_2m`).
//!
//! The file descriptors are opened during set-up (the ioctl is not in the seccomp allowlists) and
//! read once when the VM has ended (a plain `read` from offset 0 to the end).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};

/// `KVM_GET_STATS_FD` = `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xae << 8 | 0xce;
/// Size of `struct kvm_stats_header` (six u32) and of `struct kvm_stats_desc` before its name.
const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// The stats file of a VM or vCPU is a few KiB; anything much larger is not what we expect.
const MAX_STATS_FILE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KvmStatsError {
    #[error("KVM_GET_STATS_FD failed (needs Linux 5.14 or later): {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot read the KVM statistics file: {0}")]
    Read(#[source] std::io::Error),
    #[error("KVM statistics file is malformed: {0}")]
    Malformed(String),
}

/// One counter: its name and (for histograms, the first bucket of) its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmStat {
    pub name: String,
    pub value: u64,
}

/// An open binary statistics file of a VM or a vCPU.
pub struct KvmStatsFile(File);

impl KvmStatsFile {
    /// Opens the statistics file of the VM or vCPU behind `fd`.
    pub fn open(fd: &impl AsRawFd) -> Result<Self, KvmStatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let stats = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_GET_STATS_FD as _) };
        if stats < 0 {
            return Err(KvmStatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `stats` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { File::from_raw_fd(stats) }))
    }

    /// Reads the whole file (once: it is read from its current position, 0 when fresh) and
    /// returns its single-value counters.
    pub fn read_stats(mut self) -> Result<Vec<KvmStat>, KvmStatsError> {
        let mut buf = Vec::new();
        (&mut self.0)
            .take(MAX_STATS_FILE as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(KvmStatsError::Read)?;
        if buf.len() > MAX_STATS_FILE {
            return Err(KvmStatsError::Malformed(format!(
                "larger than {MAX_STATS_FILE} bytes"
            )));
        }
        parse_stats(&buf)
    }
}

fn u32_at(buf: &[u8], at: usize, what: &str) -> Result<u32, KvmStatsError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| KvmStatsError::Malformed(format!("{what} at {at} is past the end")))
}

fn u16_at(buf: &[u8], at: usize, what: &str) -> Result<u16, KvmStatsError> {
    buf.get(at..at + 2)
        .map(|b| u16::from_ne_bytes(b.try_into().expect("2 bytes")))
        .ok_or_else(|| KvmStatsError::Malformed(format!("{what} at {at} is past the end")))
}

/// Parses a binary statistics file: the header, `num_desc` descriptors of `16 + name_size` bytes
/// each at `desc_offset`, and the values at `data_offset + desc.offset`.
pub fn parse_stats(buf: &[u8]) -> Result<Vec<KvmStat>, KvmStatsError> {
    let name_size = u32_at(buf, 4, "name_size")? as usize;
    let num_desc = u32_at(buf, 8, "num_desc")? as usize;
    let desc_offset = u32_at(buf, 16, "desc_offset")? as usize;
    let data_offset = u32_at(buf, 20, "data_offset")? as usize;
    if buf.len() < HEADER_LEN || name_size == 0 || name_size > 4096 {
        return Err(KvmStatsError::Malformed(format!(
            "header: name_size {name_size}"
        )));
    }
    let desc_len = DESC_FIXED_LEN + name_size;
    let mut stats = Vec::with_capacity(num_desc.min(1024));
    for i in 0..num_desc {
        let at = desc_offset
            .checked_add(i.checked_mul(desc_len).ok_or_else(|| overflow(i))?)
            .ok_or_else(|| overflow(i))?;
        let size = u16_at(buf, at + 6, "descriptor size")?;
        let offset = u32_at(buf, at + 8, "descriptor offset")? as usize;
        let name_bytes = buf
            .get(at + DESC_FIXED_LEN..at + desc_len)
            .ok_or_else(|| KvmStatsError::Malformed(format!("descriptor {i} name is cut")))?;
        let name_end = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_size);
        let name = String::from_utf8_lossy(&name_bytes[..name_end]).into_owned();
        if size == 0 {
            continue;
        }
        let value_at = data_offset.checked_add(offset).ok_or_else(|| overflow(i))?;
        let value = buf
            .get(value_at..value_at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| {
                KvmStatsError::Malformed(format!("value of {name:?} at {value_at} is past the end"))
            })?;
        stats.push(KvmStat { name, value });
    }
    Ok(stats)
}

fn overflow(i: usize) -> KvmStatsError {
    KvmStatsError::Malformed(format!("descriptor {i} offset overflows"))
}

/// `name=value` for every non-zero counter, space separated.
pub fn describe_nonzero(stats: &[KvmStat]) -> String {
    stats
        .iter()
        .filter(|s| s.value != 0)
        .map(|s| format!("{}={}", s.name, s.value))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
