//! The guest's physical memory map (e820), shared by the 64-bit boot protocol and PVH.

use crate::layout::{EBDA_START, HIGH_RAM_START};
use crate::memory::ram_ranges;

/// Type of an e820 range (values as in the e820 / PVH memmap ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not to be used by the OS.
    Reserved = 2,
}

/// One range of the guest memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest-physical start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// Memory map of a guest with `mem_bytes` of RAM: RAM `[0, EBDA)`, reserved EBDA..1 MiB, RAM
/// from 1 MiB to the end of low RAM (at most the MMIO gap), and RAM above 4 GiB for the rest.
/// Empty ranges are left out.
pub fn e820_entries(mem_bytes: u64) -> Vec<E820Entry> {
    let mut entries = Vec::with_capacity(4);
    let mut push = |addr: u64, end: u64, kind: E820Type| {
        if end > addr {
            entries.push(E820Entry {
                addr,
                size: end - addr,
                kind,
            });
        }
    };
    for (start, size) in ram_ranges(mem_bytes) {
        let end = start + size;
        if start == 0 {
            push(0, end.min(EBDA_START), E820Type::Ram);
            push(EBDA_START, HIGH_RAM_START.min(end), E820Type::Reserved);
            push(HIGH_RAM_START, end, E820Type::Ram);
        } else {
            push(start, end, E820Type::Ram);
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

    fn ram(addr: u64, size: u64) -> E820Entry {
        E820Entry {
            addr,
            size,
            kind: E820Type::Ram,
        }
    }

    const LEGACY: E820Entry = E820Entry {
        addr: EBDA_START,
        size: HIGH_RAM_START - EBDA_START,
        kind: E820Type::Reserved,
    };

    #[test]
    fn small_guest_has_low_ram_legacy_hole_and_high_ram() {
        let mem = 128 << 20;
        assert_eq!(
            e820_entries(mem),
            vec![ram(0, 0x9_fc00), LEGACY, ram(0x10_0000, mem - 0x10_0000)]
        );
    }

    #[test]
    fn guest_between_3_and_4_gib_stops_at_the_mmio_gap() {
        let mem = 3u64 << 30 | 512 << 20; // 3.5 GiB
        assert_eq!(
            e820_entries(mem),
            vec![
                ram(0, 0x9_fc00),
                LEGACY,
                ram(0x10_0000, MMIO_GAP_START - 0x10_0000),
                ram(MMIO_GAP_END, mem - MMIO_GAP_START),
            ]
        );
    }

    #[test]
    fn large_guest_puts_the_rest_above_4_gib() {
        let mem = 8u64 << 30;
        let entries = e820_entries(mem);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3], ram(1 << 32, mem - MMIO_GAP_START));
        let total_ram: u64 = entries
            .iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(total_ram, mem - LEGACY.size);
    }

    #[test]
    fn guest_exactly_at_the_gap_has_no_high_range() {
        let entries = e820_entries(MMIO_GAP_START);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2], ram(0x10_0000, MMIO_GAP_START - 0x10_0000));
    }
}
