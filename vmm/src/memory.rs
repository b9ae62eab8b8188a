//! Guest RAM: one memfd mapped shared into the VMM, split into regions around the 32-bit MMIO gap.
//!
//! A memfd (rather than anonymous memory) lets vhost-user back-ends such as virtiofsd map the same
//! pages: the file descriptor and the offset of each region are what the vhost-user memory table
//! carries.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::layout::{MIN_MEM_MIB, MMIO_GAP_END, MMIO_GAP_START};

/// The guest memory type used everywhere in the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Largest guest we accept (bounded so `mem_mib << 20` cannot overflow and mistakes are caught early).
pub const MAX_MEM_MIB: u64 = 1 << 20; // 1 TiB

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {mib} MiB is too small: at least {min} MiB is needed")]
    TooSmall { mib: u64, min: u64 },
    #[error("guest memory of {mib} MiB is too large: at most {max} MiB is supported")]
    TooLarge { mib: u64, max: u64 },
    #[error("cannot create the guest memory memfd: {0}")]
    Memfd(#[source] std::io::Error),
    #[error("cannot size the guest memory memfd to {bytes} bytes: {source}")]
    Truncate {
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map guest memory: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// Guest-physical RAM ranges `(start, size)` for a guest of `mem_bytes`: RAM below the MMIO gap,
/// and the rest above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(0, mem_bytes)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_bytes - MMIO_GAP_START),
        ]
    }
}

/// Guest memory plus the memfd behind it.
pub struct GuestRam {
    pub memory: GuestMemory,
    pub memfd: Arc<File>,
    pub size_bytes: u64,
}

/// Creates guest RAM of `mem_mib` MiB backed by a sealed-size memfd mapped MAP_SHARED.
pub fn create_guest_ram(mem_mib: u64) -> Result<GuestRam, MemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall {
            mib: mem_mib,
            min: MIN_MEM_MIB,
        });
    }
    if mem_mib > MAX_MEM_MIB {
        return Err(MemoryError::TooLarge {
            mib: mem_mib,
            max: MAX_MEM_MIB,
        });
    }
    let size_bytes = mem_mib << 20;
    let memfd = Arc::new(create_memfd("hull-guest-ram")?);
    memfd
        .set_len(size_bytes)
        .map_err(|source| MemoryError::Truncate {
            bytes: size_bytes,
            source,
        })?;
    let mut file_offset = 0u64;
    let regions: Vec<_> = ram_ranges(size_bytes)
        .into_iter()
        .map(|(start, len)| {
            let r = (
                GuestAddress(start),
                len as usize,
                Some(FileOffset::from_arc(memfd.clone(), file_offset)),
            );
            file_offset += len;
            r
        })
        .collect();
    let memory = GuestMemoryMmap::from_ranges_with_files(&regions)?;
    Ok(GuestRam {
        memory,
        memfd,
        size_bytes,
    })
}

fn create_memfd(name: &str) -> Result<File, MemoryError> {
    let cname = CString::new(name).expect("memfd name has no NUL");
    // SAFETY: cname is a valid NUL-terminated string; we check the return value.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend as _, GuestMemoryRegion};

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
    }

    #[test]
    fn rejects_too_small_and_too_large() {
        assert!(matches!(
            create_guest_ram(1),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            create_guest_ram(MAX_MEM_MIB + 1),
            Err(MemoryError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_is_shared_memfd() {
        let ram = create_guest_ram(32).unwrap();
        assert_eq!(ram.memory.num_regions(), 1);
        let region = ram.memory.iter().next().unwrap();
        assert!(region.file_offset().is_some());
        ram.memory
            .write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .unwrap();
        // The write is visible through the memfd.
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 4];
        ram.memfd.read_exact_at(&mut buf, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xdead_beef);
    }
}
