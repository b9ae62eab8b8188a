//! Identity page tables for the 64-bit entry: PML4 -> PDPT -> one PD of 2 MiB pages covering the
//! first GiB (kernel, boot structures and stack all live there). The kernel replaces them early.

use super::{write_bytes, BootError};
use crate::layout::{PDE_START, PDPTE_START, PML4_START};
use crate::memory::GuestMemory;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_2M: u64 = 1 << 7;
const ENTRIES_PER_TABLE: u64 = 512;
const HUGE_PAGE: u64 = 2 << 20;

/// The three tables as raw bytes: (address, 4 KiB table).
fn identity_page_tables() -> [(u64, Vec<u8>); 3] {
    let one_entry = |entry: u64| {
        let mut table = vec![0u8; 4096];
        table[..8].copy_from_slice(&entry.to_le_bytes());
        table
    };
    let pd: Vec<u8> = (0..ENTRIES_PER_TABLE)
        .flat_map(|i| ((i * HUGE_PAGE) | PRESENT | WRITABLE | PAGE_SIZE_2M).to_le_bytes())
        .collect();
    [
        (PML4_START, one_entry(PDPTE_START | PRESENT | WRITABLE)),
        (PDPTE_START, one_entry(PDE_START | PRESENT | WRITABLE)),
        (PDE_START, pd),
    ]
}

/// Writes the PML4 at `PML4_START`, the PDPT at `PDPTE_START` and the PD at `PDE_START`.
pub(super) fn write_identity_page_tables(mem: &GuestMemory) -> Result<(), BootError> {
    for (addr, table) in identity_page_tables() {
        write_bytes(mem, "page table", addr, &table)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    /// Walks the tables in guest memory like the MMU does; returns the physical address or
    /// `None` for a non-present mapping.
    fn translate(mem: &GuestMemory, virt: u64) -> Option<u64> {
        let read = |addr: u64| -> u64 { mem.read_obj(GuestAddress(addr)).unwrap() };
        let pml4e = read(PML4_START + 8 * ((virt >> 39) & 0x1ff));
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + 8 * ((virt >> 30) & 0x1ff));
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + 8 * ((virt >> 21) & 0x1ff));
        if pde & PRESENT == 0 {
            return None;
        }
        assert_ne!(pde & PAGE_SIZE_2M, 0, "only 2 MiB pages are used");
        Some((pde & !(HUGE_PAGE - 1) & ((1 << 52) - 1)) | (virt & (HUGE_PAGE - 1)))
    }

    #[test]
    fn first_gib_is_identity_mapped_and_nothing_else() {
        let mem = guest_memory(16 << 20);
        // Dirty the area first: the tables must not depend on zeroed memory.
        mem.write_slice(&[0xff; 0x3000], GuestAddress(PML4_START))
            .unwrap();
        write_identity_page_tables(&mem).unwrap();
        for virt in [
            0,
            0x1234,
            0x10_0000,
            0x100_0abc,
            0x3fff_ffff,
            0x2000_0000,
            0x3fe0_0000,
        ] {
            assert_eq!(translate(&mem, virt), Some(virt), "{virt:#x}");
        }
        assert_eq!(translate(&mem, 0x4000_0000), None);
        assert_eq!(translate(&mem, 1 << 39), None);
    }
}
