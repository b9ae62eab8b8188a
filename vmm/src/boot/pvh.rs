//! PVH boot: `hvm_start_info`, its memory map and the module list carrying the initrd.

use std::mem::size_of;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use vm_memory::GuestAddress;

use super::{BootError, E820Entry, InitrdInfo};
use crate::layout::{
    CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX_ENTRIES, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemory;

/// The module list (one entry: the initrd) goes right after the largest memory map.
const PVH_MODLIST_ADDR: u64 =
    PVH_MEMMAP_ADDR + (PVH_MEMMAP_MAX_ENTRIES * size_of::<hvm_memmap_table_entry>()) as u64;

const _: () = assert!(PVH_INFO_ADDR + size_of::<hvm_start_info>() as u64 <= PVH_MEMMAP_ADDR);
const _: () = assert!(PVH_MODLIST_ADDR + size_of::<hvm_modlist_entry>() as u64 <= ZERO_PAGE_ADDR);

/// Version 1 of `hvm_start_info` has the memory map fields.
const START_INFO_VERSION: u32 = 1;

/// Builds the start info, memory map and module list.
fn build_start_info(
    e820: &[E820Entry],
    initrd: Option<InitrdInfo>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Option<hvm_modlist_entry>,
) {
    let memmap: Vec<_> = e820
        .iter()
        .take(PVH_MEMMAP_MAX_ENTRIES)
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|initrd| hvm_modlist_entry {
        paddr: initrd.addr.0,
        size: initrd.size,
        cmdline_paddr: 0,
        reserved: 0,
    });
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() {
            PVH_MODLIST_ADDR
        } else {
            0
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    (start_info, memmap, module)
}

/// Writes the start info at `PVH_INFO_ADDR`, the memory map at `PVH_MEMMAP_ADDR` and, with an
/// initrd, a one-entry module list after the memory map.
pub(super) fn write_start_info(
    mem: &GuestMemory,
    e820: &[E820Entry],
    initrd: Option<InitrdInfo>,
) -> Result<(), BootError> {
    let (start_info, memmap, module) = build_start_info(e820, initrd);
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if let Some(module) = module {
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|source| BootError::BootParams {
        what: "PVH start info",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820_entries;
    use crate::boot::test_util::guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn start_info_memmap_and_modlist_read_back() {
        let mem_bytes = 128 << 20;
        let mem = guest_memory(mem_bytes);
        let e820 = e820_entries(mem_bytes);
        let initrd = InitrdInfo {
            addr: GuestAddress(0x7f0_0000),
            size: 0x8_1234,
        };
        write_start_info(&mem, &e820, Some(initrd)).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.memmap_paddr, PVH_MEMMAP_ADDR);
        assert_eq!(info.memmap_entries as usize, e820.len());
        for (i, want) in e820.iter().enumerate() {
            let got: hvm_memmap_table_entry = mem
                .read_obj(GuestAddress(
                    info.memmap_paddr + (i * size_of::<hvm_memmap_table_entry>()) as u64,
                ))
                .unwrap();
            assert_eq!(
                (got.addr, got.size, got.type_),
                (want.addr, want.size, want.kind as u32)
            );
        }
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(
            (module.paddr, module.size, module.cmdline_paddr),
            (0x7f0_0000, 0x8_1234, 0)
        );
        // The module list does not overlap the memory map or the zero page.
        assert!(info.modlist_paddr >= PVH_MEMMAP_ADDR + (e820.len() * 24) as u64);
        assert!(info.modlist_paddr + 32 <= ZERO_PAGE_ADDR);
    }

    #[test]
    fn without_initrd_there_are_no_modules() {
        let mem = guest_memory(16 << 20);
        write_start_info(&mem, &e820_entries(16 << 20), None).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }
}
