//! Guest RAM: one memfd mapped shared into the VMM, split into regions around the 32-bit MMIO gap.
//!
//! A memfd (rather than anonymous memory) lets vhost-user back-ends such as virtiofsd map the same
//! pages: the file descriptor and the offset of each region are what the vhost-user memory table
//! carries.
//!
//! A memfd mapping is advised for transparent huge pages (`MADV_HUGEPAGE`). Whether the host gives
//! them to shared memory is its `shmem_enabled` setting ([`SHMEM_THP_PATH`]): with `advise` (or
//! `always`/`within_size`) KVM maps the guest in 2 MiB pages and the guest takes one nested page
//! fault per 2 MiB it touches instead of one per 4 KiB (QEMU's private anonymous RAM gets this
//! from the anonymous THP setting); with the default `never` the advice has no effect. Huge pages
//! make the host memory of a guest grow in 2 MiB steps.
//!
//! Instead of a memfd, guest RAM can be an unlinked file on a tmpfs directory given by the caller
//! ([`create_guest_ram_in`], `hull-vmm --mem-dir`): the same shared memory, but the page size is
//! then that mount's `huge=` option (`huge=always`: 2 MiB pages) rather than the host-wide
//! `shmem_enabled`. The shim's jail mounts such a tmpfs for its VMM. That mapping is not advised:
//! a fault in an advised mapping may compact or reclaim host memory until it finds a free 2 MiB
//! page (the host's default `defrag` setting, `madvise`), which on a host whose memory is
//! fragmented by many VMs stalled the VMM's set-up and the guest's first steps (nested lab, pod
//! start after other pods: set-up 278 ms, VMM start to the guest's first exit 754 ms); unadvised,
//! a fault takes a 2 MiB page when one is free and a 4 KiB page otherwise, at once.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
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
    #[error("cannot create guest memory in {dir}: {source}")]
    RamFile {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest memory directory {dir} is not on a tmpfs (guest RAM must be memory, not disk)")]
    NotTmpfs { dir: PathBuf },
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

/// Guest memory plus the shared-memory file behind it (a memfd or an unlinked tmpfs file).
pub struct GuestRam {
    pub memory: GuestMemory,
    pub memfd: Arc<File>,
    pub size_bytes: u64,
}

/// Creates guest RAM of `mem_mib` MiB backed by a memfd mapped MAP_SHARED.
pub fn create_guest_ram(mem_mib: u64) -> Result<GuestRam, MemoryError> {
    create_guest_ram_in(mem_mib, None)
}

/// Creates guest RAM of `mem_mib` MiB mapped MAP_SHARED from an unlinked file in the tmpfs
/// directory `dir`, or from a memfd for `None`.
pub fn create_guest_ram_in(mem_mib: u64, dir: Option<&Path>) -> Result<GuestRam, MemoryError> {
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
    let memfd = Arc::new(match dir {
        Some(dir) => create_tmpfs_file(dir)?,
        None => create_memfd("hull-guest-ram")?,
    });
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
    match dir {
        None => advise_huge_pages(&memory),
        Some(dir) => tracing::debug!(
            "guest RAM in a file on the tmpfs {}: its huge= mount option sets the page size \
             (not advised: no compaction stalls)",
            dir.display()
        ),
    }
    Ok(GuestRam {
        memory,
        memfd,
        size_bytes,
    })
}

/// Advises every RAM mapping (a memfd's) for transparent huge pages and logs what the host will
/// do with it.
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

/// The tmpfs magic of `statfs` (linux/magic.h).
const TMPFS_MAGIC: libc::c_long = 0x0102_1994;

/// An unlinked file for guest RAM in `dir`, which must be on a tmpfs (O_TMPFILE: it never has a
/// name another process could open).
fn create_tmpfs_file(dir: &Path) -> Result<File, MemoryError> {
    use std::os::unix::fs::OpenOptionsExt;
    let ram_err = |source| MemoryError::RamFile {
        dir: dir.to_path_buf(),
        source,
    };
    let cdir = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        ram_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has a NUL byte",
        ))
    })?;
    // SAFETY: `cdir` is a valid C string and `stat` a writable statfs the call fills in.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(cdir.as_ptr(), &mut stat) } != 0 {
        return Err(ram_err(std::io::Error::last_os_error()));
    }
    if stat.f_type != TMPFS_MAGIC {
        return Err(MemoryError::NotTmpfs {
            dir: dir.to_path_buf(),
        });
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .map_err(ram_err)
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

    /// The line starting with `key` in this process's smaps block of the VMA that starts at
    /// `start` (its header line starts with "<start>-"; "VmFlags:" ends the block).
    fn vma_field(start: usize, key: &str) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{start:x}-");
        let mut vma = smaps.lines().skip_while(|l| !l.starts_with(&header));
        assert!(vma.next().is_some(), "no VMA starts at {start:#x}");
        vma.find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line for the VMA at {start:#x}"))
            .to_string()
    }

    #[test]
    fn ram_is_advised_for_huge_pages() {
        let ram = create_guest_ram(32).unwrap();
        let region = ram.memory.iter().next().unwrap();
        let flags = vma_field(region.as_ptr() as usize, "VmFlags:");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "guest RAM VMA lacks the hugepage advice: {flags}"
        );
    }

    /// A tmpfs mounted on a temporary directory for the test's life (the tests run as root).
    struct TestTmpfs {
        dir: tempfile::TempDir,
    }

    impl TestTmpfs {
        fn mount(options: &str) -> TestTmpfs {
            let dir = tempfile::tempdir().unwrap();
            let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            let data = CString::new(options).unwrap();
            // SAFETY: valid C strings; a fresh tmpfs on our own temporary directory.
            let rc = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    data.as_ptr().cast(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mounting a tmpfs ({options}) needs root: {}",
                std::io::Error::last_os_error()
            );
            TestTmpfs { dir }
        }
    }

    impl Drop for TestTmpfs {
        fn drop(&mut self) {
            let target = CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string naming the mount made in `mount`.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// The `ShmemPmdMapped` figure (KiB) of the VMA that starts at `start`.
    fn shmem_pmd_mapped_kib(start: usize) -> u64 {
        let line = vma_field(start, "ShmemPmdMapped:");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn ram_on_a_huge_always_tmpfs_is_mapped_in_2mib_pages_unadvised() {
        // Whatever the host's shmem_enabled says (`never` by default), the mount's own option
        // gives the mapping huge pages, without MADV_HUGEPAGE (whose faults may stall in
        // compaction).
        let tmpfs = TestTmpfs::mount("size=64m,huge=always,mode=0700");
        let ram = create_guest_ram_in(32, Some(tmpfs.dir.path())).unwrap();
        let region = ram.memory.iter().next().unwrap();
        let start = region.as_ptr() as usize;
        let flags = vma_field(start, "VmFlags:");
        assert!(
            !flags.split_whitespace().any(|f| f == "hg"),
            "RAM on a tmpfs must not be advised (faults would compact): {flags}"
        );
        ram.memory
            .write_obj(0x1234_5678u32, GuestAddress(4 << 20))
            .unwrap();
        assert!(
            shmem_pmd_mapped_kib(start) >= 2048,
            "the first write did not map a 2 MiB page"
        );
        // The file has no name in the directory and holds the write.
        assert_eq!(std::fs::read_dir(tmpfs.dir.path()).unwrap().count(), 0);
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 4];
        ram.memfd.read_exact_at(&mut buf, 4 << 20).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0x1234_5678);
    }

    #[test]
    fn ram_directory_must_be_a_tmpfs_that_exists() {
        let disk = Path::new(env!("CARGO_MANIFEST_DIR"));
        let err = create_guest_ram_in(32, Some(disk)).err().unwrap();
        assert!(matches!(err, MemoryError::NotTmpfs { .. }), "{err}");
        assert!(
            err.to_string().contains(&disk.display().to_string()),
            "{err}"
        );
        let missing = Path::new("/nonexistent/hull-ram");
        let err = create_guest_ram_in(32, Some(missing)).err().unwrap();
        assert!(matches!(err, MemoryError::RamFile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/hull-ram"), "{err}");
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
