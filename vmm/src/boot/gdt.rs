//! The boot GDT (null, code, data, TSS) and an empty IDT, plus the matching KVM segment
//! registers, so that what the guest finds in memory and what is loaded in the hidden segment
//! state agree.

use kvm_bindings::kvm_segment;

use super::{write_bytes, BootError, BootProtocol};
use crate::layout::{BOOT_GDT_ADDR, BOOT_IDT_ADDR};
use crate::memory::GuestMemory;

/// GDT index of the code segment (selector 0x08).
pub(super) const CODE_INDEX: u16 = 1;
/// GDT index of the data segment (selector 0x10), used for DS/ES/FS/GS/SS.
pub(super) const DATA_INDEX: u16 = 2;
/// GDT index of the TSS (selector 0x18).
pub(super) const TSS_INDEX: u16 = 3;
/// Number of GDT entries; the table is 32 bytes, just below `BOOT_IDT_ADDR`.
pub(super) const GDT_ENTRIES: usize = 4;
/// Size of the IDT we load: one empty gate (the kernel installs its own before enabling
/// interrupts).
pub(super) const IDT_LEN: u16 = 8;

const _: () = assert!(BOOT_GDT_ADDR + (GDT_ENTRIES as u64) * 8 <= BOOT_IDT_ADDR);

/// Access byte + flags nibble, in the `0xF0AA` form (flags in bits 12..15, access in 0..7).
/// Present, ring 0, executable/readable, accessed; L=1 (64-bit), 4 KiB granularity.
const CODE64: u16 = 0xa09b;
/// Same with D=1 (32-bit) instead of L.
const CODE32: u16 = 0xc09b;
/// Present, ring 0, read/write, accessed; 32-bit, 4 KiB granularity.
const DATA: u16 = 0xc093;
/// Present, busy 32/64-bit TSS, byte granularity.
const TSS: u16 = 0x008b;
const FLAT_LIMIT: u32 = 0xf_ffff;
const TSS_LIMIT: u32 = 0x67;

/// Encodes one segment descriptor.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let flags = u64::from(flags & 0xf0ff);
    let base = u64::from(base);
    let limit = u64::from(limit);
    (base & 0xff00_0000) << 32
        | flags << 40
        | (limit & 0x000f_0000) << 32
        | (base & 0x00ff_ffff) << 16
        | (limit & 0x0000_ffff)
}

/// The GDT for a protocol: 64-bit code for the 64-bit protocol, 32-bit code for PVH.
pub(super) fn boot_gdt(protocol: BootProtocol) -> [u64; GDT_ENTRIES] {
    let code = match protocol {
        BootProtocol::Linux64 => CODE64,
        BootProtocol::Pvh => CODE32,
    };
    [
        0,
        gdt_entry(code, 0, FLAT_LIMIT),
        gdt_entry(DATA, 0, FLAT_LIMIT),
        gdt_entry(TSS, 0, TSS_LIMIT),
    ]
}

/// Decodes GDT entry `index` into the KVM segment register that loading its selector gives.
pub(super) fn segment(gdt: &[u64; GDT_ENTRIES], index: u16) -> kvm_segment {
    let entry = gdt[usize::from(index)];
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let granular = bit(55) == 1;
    let raw_limit = (entry & 0xffff) as u32 | (((entry >> 48) & 0xf) as u32) << 16;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 56) & 0xff) << 24,
        limit: if granular {
            raw_limit << 12 | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

/// Writes the protocol's GDT at `BOOT_GDT_ADDR` and an empty IDT at `BOOT_IDT_ADDR`.
pub(super) fn write_gdt_and_idt(
    mem: &GuestMemory,
    protocol: BootProtocol,
) -> Result<(), BootError> {
    let gdt: Vec<u8> = boot_gdt(protocol)
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    write_bytes(mem, "GDT", BOOT_GDT_ADDR, &gdt)?;
    write_bytes(mem, "IDT", BOOT_IDT_ADDR, &[0; IDT_LEN as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn known_encodings() {
        // Flat 64-bit code and flat data, as every x86 boot loader writes them.
        assert_eq!(gdt_entry(CODE64, 0, FLAT_LIMIT), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA, 0, FLAT_LIMIT), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(CODE32, 0, FLAT_LIMIT), 0x00cf_9b00_0000_ffff);
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xa_bcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn gdt_read_back_from_memory_decodes_to_flat_segments() {
        let mem = guest_memory(16 << 20);
        for protocol in [BootProtocol::Linux64, BootProtocol::Pvh] {
            write_gdt_and_idt(&mem, protocol).unwrap();
            let mut gdt = [0u64; GDT_ENTRIES];
            for (i, e) in gdt.iter_mut().enumerate() {
                *e = mem
                    .read_obj(GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))
                    .unwrap();
            }
            assert_eq!(gdt, boot_gdt(protocol));
            assert_eq!(gdt[0], 0);

            let code = segment(&gdt, CODE_INDEX);
            assert_eq!(
                (code.base, code.limit, code.selector),
                (0, 0xffff_ffff, 0x08)
            );
            assert_eq!(
                (code.type_, code.s, code.present, code.dpl, code.g),
                (0xb, 1, 1, 0, 1)
            );
            match protocol {
                BootProtocol::Linux64 => assert_eq!((code.l, code.db), (1, 0)),
                BootProtocol::Pvh => assert_eq!((code.l, code.db), (0, 1)),
            }
            let data = segment(&gdt, DATA_INDEX);
            assert_eq!(
                (data.base, data.limit, data.selector),
                (0, 0xffff_ffff, 0x10)
            );
            assert_eq!((data.type_, data.s, data.db, data.l), (0x3, 1, 1, 0));
            let tss = segment(&gdt, TSS_INDEX);
            assert_eq!(
                (tss.limit, tss.selector, tss.type_, tss.s, tss.g),
                (0x67, 0x18, 0xb, 0, 0)
            );
            assert_eq!(tss.unusable, 0);

            let idt: u64 = mem.read_obj(GuestAddress(BOOT_IDT_ADDR)).unwrap();
            assert_eq!(idt, 0);
        }
    }

    #[test]
    fn null_descriptor_is_unusable() {
        let gdt = boot_gdt(BootProtocol::Linux64);
        assert_eq!(segment(&gdt, 0).unusable, 1);
    }
}
