//! `boot_params` (the "zero page") for the 64-bit Linux boot protocol.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, E820_MAX_ENTRIES_ZEROPAGE};
use vm_memory::GuestAddress;

use super::{BootError, E820Entry, InitrdInfo};
use crate::layout::{CMDLINE_ADDR, ZERO_PAGE_ADDR};
use crate::memory::GuestMemory;

/// `boot_flag`: the boot sector signature.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header`: "HdrS".
const HDRS_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// `type_of_loader`: "undefined" boot loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// `kernel_alignment`: the physical alignment the x86_64 kernel is built for (16 MiB).
const KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// Fills `boot_params`: setup header fields, command line, initrd and e820 table.
fn build_boot_params(
    e820: &[E820Entry],
    cmdline_len: usize,
    initrd: Option<InitrdInfo>,
) -> boot_params {
    let mut params = boot_params::default();
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        // load_initrd keeps the initrd below the 32-bit MMIO gap, so these fit in 32 bits.
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let mut table = [boot_e820_entry::default(); E820_MAX_ENTRIES_ZEROPAGE];
    for (slot, entry) in table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_table = table;
    params.e820_entries = e820.len().min(E820_MAX_ENTRIES_ZEROPAGE) as u8;
    params
}

/// Writes `boot_params` at `ZERO_PAGE_ADDR`.
pub(super) fn write_boot_params(
    mem: &GuestMemory,
    e820: &[E820Entry],
    cmdline_len: usize,
    initrd: Option<InitrdInfo>,
) -> Result<(), BootError> {
    let params = build_boot_params(e820, cmdline_len, initrd);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )
    .map_err(|source| BootError::BootParams {
        what: "boot_params",
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
    fn fields_read_back_from_guest_memory() {
        let mem_bytes = 256 << 20;
        let mem = guest_memory(mem_bytes);
        let e820 = e820_entries(mem_bytes);
        let initrd = InitrdInfo {
            addr: GuestAddress(0xf00_0000),
            size: 0x12_3456,
        };
        write_boot_params(&mem, &e820, 42, Some(initrd)).unwrap();

        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, 0xf00_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x12_3456);
        assert_eq!(params.e820_entries as usize, e820.len());
        let table = params.e820_table;
        for (got, want) in table.iter().zip(&e820) {
            assert_eq!(
                ({ got.addr }, { got.size }, { got.r#type }),
                (want.addr, want.size, want.kind as u32)
            );
        }
        assert_eq!({ table[e820.len()].size }, 0);

        // Raw offsets from the x86 boot protocol document, independent of the struct layout.
        let raw = |off: u64, len: usize| {
            let mut b = vec![0u8; len];
            mem.read_slice(&mut b, GuestAddress(ZERO_PAGE_ADDR + off))
                .unwrap();
            b
        };
        assert_eq!(raw(0x1fe, 2), [0x55, 0xaa]);
        assert_eq!(raw(0x202, 4), b"HdrS");
        assert_eq!(raw(0x210, 1), [0xff]);
        assert_eq!(raw(0x218, 4), 0xf00_0000u32.to_le_bytes());
        assert_eq!(raw(0x228, 4), (CMDLINE_ADDR as u32).to_le_bytes());
        assert_eq!(raw(0x1e8, 1), [e820.len() as u8]);
        assert_eq!(
            raw(0x2d0 + 20, 8),
            0x9_fc00u64.to_le_bytes(),
            "second e820 entry starts at the EBDA"
        );
    }

    #[test]
    fn no_initrd_leaves_ramdisk_fields_zero() {
        let mem = guest_memory(16 << 20);
        write_boot_params(&mem, &e820_entries(16 << 20), 0, None).unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(
            ({ params.hdr.ramdisk_image }, { params.hdr.ramdisk_size }),
            (0, 0)
        );
    }
}
