//! The pmem image: a regular file, opened read-only and mapped MAP_PRIVATE, whose mapping backs
//! the device's KVM memory slot.

use std::fs::File;
use std::path::{Path, PathBuf};

use vm_memory::mmap::{MmapRegion, MmapRegionError};
use vm_memory::FileOffset;

/// Start and size of the window are multiples of this: the guest adds the window's memory
/// (struct pages, direct map) in 2 MiB sub-sections, and refuses a misaligned one.
pub const PMEM_ALIGN: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PmemImageError {
    #[error("cannot open the pmem image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pmem image {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "the pmem image {path} is {len} bytes; it must be a non-empty multiple of 2 MiB \
         (the guest maps it in 2 MiB sections; pad it)"
    )]
    Size { path: PathBuf, len: u64 },
    #[error("cannot map the pmem image {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: MmapRegionError,
    },
}

/// A mapped image. The mapping lives as long as this value; the VM's memory slot points into it.
pub struct PmemImage {
    path: PathBuf,
    region: MmapRegion<()>,
}

impl PmemImage {
    /// Opens `path` read-only and maps all of it private (reads share the host's page cache;
    /// writes make private copies) and without a swap reservation.
    pub fn open(path: &Path) -> Result<Self, PmemImageError> {
        let file = File::open(path).map_err(|source| PmemImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| PmemImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(PmemImageError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let len = meta.len();
        if len == 0 || !len.is_multiple_of(PMEM_ALIGN) || usize::try_from(len).is_err() {
            return Err(PmemImageError::Size {
                path: path.to_path_buf(),
                len,
            });
        }
        let region = MmapRegion::build(
            Some(FileOffset::new(file, 0)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|source| PmemImageError::Map {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PmemImage {
            path: path.to_path_buf(),
            region,
        })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes mapped (the file's size).
    pub fn len(&self) -> u64 {
        self.region.size() as u64
    }

    /// Never true: an empty image is refused by [`PmemImage::open`].
    pub fn is_empty(&self) -> bool {
        self.region.size() == 0
    }

    /// The mapping's host address, for the memory slot.
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }
}
