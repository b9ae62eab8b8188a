//! Loading the initrd at the top of low RAM.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use vm_memory::{Bytes, GuestAddress};

use super::zero_pages::SkipZeroPages;
use super::{BootError, InitrdInfo};
use crate::layout::MMIO_GAP_START;
use crate::memory::GuestMemory;

const PAGE_SIZE: u64 = 0x1000;

/// Where an initrd of `size` bytes goes: as high as possible below the end of low RAM
/// (`min(mem_bytes, MMIO_GAP_START)`), page aligned, and not below `kernel_end` (rounded up to a
/// page).
fn initrd_addr(mem_bytes: u64, size: u64, kernel_end: u64) -> Result<u64, BootError> {
    let limit = mem_bytes.min(MMIO_GAP_START);
    let does_not_fit = || BootError::InitrdDoesNotFit {
        size,
        limit,
        kernel_end,
    };
    let lowest = kernel_end
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or_else(does_not_fit)?;
    let addr = limit.checked_sub(size).ok_or_else(does_not_fit)? / PAGE_SIZE * PAGE_SIZE;
    if addr < lowest {
        return Err(does_not_fit());
    }
    Ok(addr)
}

/// Copies the initrd file into guest memory at the top of low RAM (below `MMIO_GAP_START`),
/// page aligned and above `kernel_end`. `mem` must be fresh guest memory: pages of the initrd that
/// are all zero are not written (see [`SkipZeroPages`]).
pub fn load_initrd(
    mem: &GuestMemory,
    mem_bytes: u64,
    initrd: &mut File,
    kernel_end: GuestAddress,
) -> Result<InitrdInfo, BootError> {
    let size = initrd.metadata().map_err(BootError::InitrdRead)?.len();
    if size == 0 {
        return Err(BootError::InitrdEmpty);
    }
    let addr = initrd_addr(mem_bytes, size, kernel_end.0)?;
    // The size is below the 3 GiB gap here, so it fits in usize.
    let len = usize::try_from(size).map_err(|_| BootError::InitrdDoesNotFit {
        size,
        limit: mem_bytes.min(MMIO_GAP_START),
        kernel_end: kernel_end.0,
    })?;
    initrd
        .seek(SeekFrom::Start(0))
        .map_err(BootError::InitrdRead)?;
    let mut image = SkipZeroPages::new(&mut *initrd);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut image, len)
        .map_err(|source| BootError::GuestWrite {
            what: "initrd",
            addr,
            source,
        })?;
    tracing::info!(
        addr = format_args!("{addr:#x}"),
        size,
        zero_pages_skipped = image.skipped(),
        "initrd loaded"
    );
    Ok(InitrdInfo {
        addr: GuestAddress(addr),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::{guest_memory, memfd_with};

    #[test]
    fn goes_at_the_page_aligned_top_of_ram() {
        let mem = guest_memory(64 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let info = load_initrd(
            &mem,
            64 << 20,
            &mut memfd_with(&data),
            GuestAddress(0x200_0000),
        )
        .unwrap();
        assert_eq!(info.size, 10_000);
        // 64 MiB - 10000 rounded down to a page.
        assert_eq!(info.addr, GuestAddress(((64 << 20) - 10_000) & !0xfff));
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, info.addr).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn large_guest_keeps_the_initrd_below_the_mmio_gap() {
        assert_eq!(
            initrd_addr(8 << 30, 0x2000, 0x200_0000).unwrap(),
            MMIO_GAP_START - 0x2000
        );
    }

    #[test]
    fn too_big_is_refused_with_sizes() {
        let mem = guest_memory(16 << 20);
        let data = vec![1u8; 15 << 20];
        let err = load_initrd(
            &mem,
            16 << 20,
            &mut memfd_with(&data),
            GuestAddress(0x20_0000),
        )
        .unwrap_err();
        assert!(
            matches!(err, BootError::InitrdDoesNotFit { size, limit: 0x100_0000, .. } if size == 15 << 20)
        );
        assert!(err
            .to_string()
            .starts_with("initrd of 15728640 bytes does not fit below 0x1000000"));
        // Bigger than RAM altogether.
        assert!(initrd_addr(16 << 20, 32 << 20, 0x20_0000).is_err());
        // Exactly the room between the kernel and the top fits.
        assert_eq!(
            initrd_addr(16 << 20, (16 << 20) - 0x20_0000, 0x20_0000).unwrap(),
            0x20_0000
        );
        assert!(initrd_addr(16 << 20, (16 << 20) - 0x20_0000 + 1, 0x20_0000).is_err());
    }

    #[test]
    fn empty_is_refused() {
        let mem = guest_memory(16 << 20);
        let err = load_initrd(
            &mem,
            16 << 20,
            &mut memfd_with(b""),
            GuestAddress(0x20_0000),
        );
        assert!(matches!(err, Err(BootError::InitrdEmpty)));
    }
}
