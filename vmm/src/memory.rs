//! Guest RAM: one memfd mapped shared into the VMM, split into regions around the 32-bit MMIO gap.
//!
//! A memfd (rather than anonymous memory) lets vhost-user back-ends such as virtiofsd map the same
//! pages: the file descriptor and the offset of each region are what the vhost-user memory table
//! carries.
//!
//! The mapping is advised for transparent huge pages (`MADV_HUGEPAGE`). Whether the host gives
//! them to shared memory is its `shmem_enabled` setting ([`SHMEM_THP_PATH`]): with `advise` (or
//! `always`/`within_size`) KVM maps the guest in 2 MiB pages and the guest takes one nested page
//! fault per 2 MiB it touches instead of one per 4 KiB (QEMU's private anonymous RAM gets this
//! from the anonymous THP setting); with the default `never` the advice has no effect. Huge pages
//! make the host memory of a guest grow in 2 MiB steps.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::layout::{MIN_MEM_MIB, MMIO_GAP_END, MMIO_GAP_START};

/// The guest memory type used everywhere in the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// The host's transparent-huge-page mode for shared memory (memfd, tmpfs).
pub const SHMEM_THP_PATH: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

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
    advise_huge_pages(&memory);
    Ok(GuestRam {
        memory,
        memfd,
        size_bytes,
    })
}

/// Advises every RAM mapping for transparent huge pages and logs what the host will do with it.
fn advise_huge_pages(memory: &GuestMemory) {
    use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion};
    for region in memory.iter() {
        // SAFETY: the range is exactly one live mapping owned by `memory`; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents.
        let rc = unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "guest RAM: MADV_HUGEPAGE refused ({}): 4 KiB host pages",
                std::io::Error::last_os_error()
            );
            return;
        }
    }
    tracing::debug!("guest RAM in {}", describe_host_thp());
}

/// What the host does with the huge-page advice, in words (for logs).
pub fn describe_host_thp() -> String {
    let text = std::fs::read_to_string(SHMEM_THP_PATH).ok();
    let mode = text.as_deref().and_then(selected_thp_mode);
    if shmem_thp_effective(mode) {
        format!("2 MiB host pages where possible (shared-memory THP mode {mode:?})")
    } else {
        format!(
            "4 KiB host pages: shared-memory THP is {} on this host (`echo advise > \
             {SHMEM_THP_PATH}` lets KVM map the guest in 2 MiB pages, fewer nested page faults)",
            mode.unwrap_or("unavailable")
        )
    }
}

/// The selected mode in a THP sysfs file (`always within_size advise [never] deny force`).
pub fn selected_thp_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

/// Whether shared memory advised with `MADV_HUGEPAGE` gets huge pages in `mode`.
pub fn shmem_thp_effective(mode: Option<&str>) -> bool {
    matches!(mode, Some("always" | "within_size" | "advise" | "force"))
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
    fn thp_mode_is_the_bracketed_word() {
        let text = "always within_size advise [never] deny force\n";
        assert_eq!(selected_thp_mode(text), Some("never"));
        assert_eq!(selected_thp_mode("[advise] never"), Some("advise"));
        assert_eq!(selected_thp_mode("always never"), None);
        assert_eq!(selected_thp_mode("[never"), None);
        assert!(!shmem_thp_effective(Some("never")));
        assert!(!shmem_thp_effective(Some("deny")));
        assert!(!shmem_thp_effective(None));
        for mode in ["always", "within_size", "advise", "force"] {
            assert!(shmem_thp_effective(Some(mode)), "{mode}");
        }
    }

    #[test]
    fn ram_is_advised_for_huge_pages() {
        let ram = create_guest_ram(32).unwrap();
        let region = ram.memory.iter().next().unwrap();
        let start = region.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // The VMA's header line starts with "<start>-"; its "VmFlags:" line ends its block.
        let header = format!("{start:x}-");
        let mut vma = smaps.lines().skip_while(|l| !l.starts_with(&header));
        assert!(vma.next().is_some(), "no VMA starts at {start:#x}");
        let flags = vma.find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "guest RAM VMA lacks the hugepage advice: {flags}"
        );
    }

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
