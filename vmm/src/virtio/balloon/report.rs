//! Free page reports: a chain on the reporting queue lists guest-physical ranges the guest has
//! freed (one device-writable descriptor per range). [`free_ranges`] checks the whole chain
//! before anything is released; [`Discard`] releases the host pages behind a range.

use std::os::fd::AsRawFd as _;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion as _};

use super::BALLOON_PAGE_SIZE;
use crate::memory::GuestMemory;

/// One guest-physical range the guest reported free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeRange {
    pub gpa: u64,
    pub len: u64,
}

/// Why a report was refused (nothing of it is released).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("descriptor at {gpa:#x} is device-readable; reported pages must be device-writable")]
    ReadOnly { gpa: u64 },
    #[error("empty range at {gpa:#x}")]
    Empty { gpa: u64 },
    #[error("range {gpa:#x}+{len:#x} is not aligned to {BALLOON_PAGE_SIZE}-byte pages")]
    Unaligned { gpa: u64, len: u64 },
    #[error("range {gpa:#x}+{len:#x} is not inside one guest RAM region")]
    OutsideRam { gpa: u64, len: u64 },
    #[error("the chain has no descriptors")]
    NoRanges,
}

/// Reads every range of a reporting chain, checking each: device-writable, not empty, page
/// aligned, inside one RAM region of `mem`. The chain's length is bounded by the queue size
/// (virtio-queue's iterator stops there, loops included).
pub fn free_ranges<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
) -> Result<Vec<FreeRange>, ReportError>
where
    M: std::ops::Deref<Target = GuestMemory>,
{
    let mut ranges = Vec::new();
    for desc in chain {
        let (gpa, len) = (desc.addr().0, u64::from(desc.len()));
        if !desc.is_write_only() {
            return Err(ReportError::ReadOnly { gpa });
        }
        if len == 0 {
            return Err(ReportError::Empty { gpa });
        }
        if gpa % BALLOON_PAGE_SIZE != 0 || len % BALLOON_PAGE_SIZE != 0 {
            return Err(ReportError::Unaligned { gpa, len });
        }
        if !inside_one_region(mem, gpa, len) {
            return Err(ReportError::OutsideRam { gpa, len });
        }
        ranges.push(FreeRange { gpa, len });
    }
    if ranges.is_empty() {
        return Err(ReportError::NoRanges);
    }
    Ok(ranges)
}

fn inside_one_region(mem: &GuestMemory, gpa: u64, len: u64) -> bool {
    let Some(last) = gpa.checked_add(len - 1) else {
        return false;
    };
    mem.find_region(GuestAddress(gpa))
        .is_some_and(|region| last <= region.last_addr().0)
}

/// Releases the host memory behind a guest range; the guest reads zeroes there afterwards.
pub trait Discard: Send {
    fn discard(&mut self, mem: &GuestMemory, range: FreeRange) -> std::io::Result<()>;
}

/// What releasing the ranges of one report did.
#[derive(Debug)]
pub struct Released {
    /// Bytes released.
    pub bytes: u64,
    /// The last range that could not be released, and why.
    pub failed: Option<(FreeRange, std::io::Error)>,
}

/// Releases every range of a checked report; a failed range does not stop the others.
pub fn release_all(
    discard: &mut dyn Discard,
    mem: &GuestMemory,
    ranges: Vec<FreeRange>,
) -> Released {
    let mut released = Released {
        bytes: 0,
        failed: None,
    };
    for range in ranges {
        match discard.discard(mem, range) {
            Ok(()) => released.bytes += range.len,
            Err(e) => released.failed = Some((range, e)),
        }
    }
    released
}

/// Punches a hole in the memfd behind guest RAM (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the pages
/// leave the page cache, every mapping of them (hull-vmm's, KVM's, virtiofsd's) is dropped, and the
/// next guest access faults in a zero page.
#[derive(Debug, Default)]
pub struct PunchHole;

impl Discard for PunchHole {
    fn discard(&mut self, mem: &GuestMemory, range: FreeRange) -> std::io::Result<()> {
        let region = mem
            .find_region(GuestAddress(range.gpa))
            .ok_or_else(|| std::io::Error::other("range outside guest RAM"))?;
        let file = region
            .file_offset()
            .ok_or_else(|| std::io::Error::other("guest RAM region is not file-backed"))?;
        let offset = file.start() + (range.gpa - region.start_addr().0);
        let (offset, len) = (
            libc::off_t::try_from(offset).map_err(std::io::Error::other)?,
            libc::off_t::try_from(range.len).map_err(std::io::Error::other)?,
        );
        // SAFETY: plain syscall on a descriptor the region owns; the range lies inside the memfd
        // (checked by `free_ranges`) and dropping guest pages never touches VMM memory.
        let rc = unsafe {
            libc::fallocate(
                file.file().as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
