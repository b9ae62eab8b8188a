//! The Intel MultiProcessor Specification (1.4) table in the EBDA.
//!
//! It tells a kernel without ACPI how many CPUs there are, where the IOAPIC is and how ISA IRQs
//! reach its pins. Layout: the 16-byte floating pointer at `MPTABLE_ADDR` (the last KiB of base
//! memory, one of the places Linux scans), immediately followed by the configuration table.

use super::{write_bytes, BootError};
use crate::layout::{APIC_ADDR, IOAPIC_ADDR, LOW_RAM_END, MPTABLE_ADDR, VIRTIO_IRQ_MAX};
use crate::memory::GuestMemory;

/// Largest vCPU count the boot code supports: the MP table must fit in the 1 KiB EBDA.
pub const MAX_VCPUS: u8 = 32;

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;
/// IOAPIC pins 0..=23, each with an I/O interrupt entry.
const IOAPIC_PINS: u8 = VIRTIO_IRQ_MAX as u8 + 1;
/// Bus, IOAPIC, the I/O interrupt entries and the two local interrupt entries.
const SMALL_ENTRIES: usize = 1 + 1 + IOAPIC_PINS as usize + 2;
const SPEC_REV_1_4: u8 = 4;

/// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

/// Interrupt types of (local) interrupt entries.
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Processor entry flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
/// CPU signature (family 6) and feature flags (FPU, APIC) in processor entries.
const CPU_SIGNATURE: u32 = 6 << 8;
const CPU_FEATURES: u32 = 1 | 1 << 9;
/// Local APIC and IOAPIC versions of KVM's in-kernel irqchip.
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ENABLED: u8 = 1;
/// Destination "all local APICs" of a local interrupt entry.
const ALL_LAPICS: u8 = 0xff;
const ISA_BUS_ID: u8 = 0;

/// Total size of the floating pointer plus the configuration table for `num_cpus` CPUs.
const fn mptable_len(num_cpus: usize) -> usize {
    FLOATING_POINTER_LEN
        + HEADER_LEN
        + num_cpus * PROCESSOR_ENTRY_LEN
        + SMALL_ENTRIES * SMALL_ENTRY_LEN
}

const _: () =
    assert!(MPTABLE_ADDR as usize + mptable_len(MAX_VCPUS as usize) <= LOW_RAM_END as usize);

/// Builds the floating pointer plus configuration table, as placed at `MPTABLE_ADDR`.
fn build_mptable(num_cpus: u8) -> Vec<u8> {
    let ioapic_id = num_cpus; // CPUs use APIC ids 0..num_cpus
    let mut entries = Vec::new();
    for cpu in 0..num_cpus {
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, LAPIC_VERSION]);
        entries.push(if cpu == 0 {
            CPU_ENABLED | CPU_BOOT_PROCESSOR
        } else {
            CPU_ENABLED
        });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    for pin in 0..IOAPIC_PINS {
        // Polarity and trigger "conform to the bus" (ISA: active high, edge).
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            ISA_BUS_ID,
            pin,
            ioapic_id,
            pin,
        ]);
    }
    for (int_type, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        entries.extend_from_slice(&[
            ENTRY_LOCAL_INTERRUPT,
            int_type,
            0,
            0,
            ISA_BUS_ID,
            0,
            ALL_LAPICS,
            lint,
        ]);
    }
    let entry_count = u16::from(num_cpus) + SMALL_ENTRIES as u16;

    let mut table = Vec::with_capacity(mptable_len(num_cpus.into()));
    // Floating pointer.
    table.extend_from_slice(b"_MP_");
    table.extend_from_slice(&((MPTABLE_ADDR as usize + FLOATING_POINTER_LEN) as u32).to_le_bytes());
    table.extend_from_slice(&[1, SPEC_REV_1_4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    table[10] = checksum(&table);
    // Configuration table header.
    let config_start = table.len();
    let base_len = (HEADER_LEN + entries.len()) as u16;
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&base_len.to_le_bytes());
    table.extend_from_slice(&[SPEC_REV_1_4, 0]);
    table.extend_from_slice(b"HULL    ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&(APIC_ADDR as u32).to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[config_start + 7] = checksum(&table[config_start..]);
    debug_assert_eq!(table.len(), mptable_len(num_cpus.into()));
    table
}

/// The byte that makes `bytes` (which has 0 in the checksum slot) sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Writes the MP table for `num_cpus` CPUs at `MPTABLE_ADDR`; the caller has checked that
/// `num_cpus` is 1..=[`MAX_VCPUS`].
pub(super) fn write_mptable(mem: &GuestMemory, num_cpus: u8) -> Result<(), BootError> {
    write_bytes(mem, "MP table", MPTABLE_ADDR, &build_mptable(num_cpus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    /// Reads the table back from guest memory the way a kernel would: floating pointer, then
    /// the configuration table it points at. Returns the configuration table bytes.
    fn read_back(mem: &GuestMemory) -> Vec<u8> {
        let mut fp = [0u8; 16];
        mem.read_slice(&mut fp, GuestAddress(MPTABLE_ADDR)).unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(sum(&fp), 0, "floating pointer checksum");
        assert_eq!(fp[8], 1);
        assert_eq!(fp[9], 4);
        let config_addr = u32::from_le_bytes(fp[4..8].try_into().unwrap()) as u64;
        let mut header = [0u8; HEADER_LEN];
        mem.read_slice(&mut header, GuestAddress(config_addr))
            .unwrap();
        assert_eq!(&header[..4], b"PCMP");
        let len = u16::from_le_bytes([header[4], header[5]]) as usize;
        let mut config = vec![0u8; len];
        mem.read_slice(&mut config, GuestAddress(config_addr))
            .unwrap();
        assert_eq!(sum(&config), 0, "configuration table checksum");
        config
    }

    /// Walks the entries and returns them as (type, bytes).
    fn entries(config: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let count = u16::from_le_bytes([config[34], config[35]]) as usize;
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        for _ in 0..count {
            let len = if config[at] == ENTRY_PROCESSOR {
                PROCESSOR_ENTRY_LEN
            } else {
                SMALL_ENTRY_LEN
            };
            out.push((config[at], config[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, config.len(), "entries fill the table exactly");
        out
    }

    #[test]
    fn signatures_checksums_and_cpu_entries() {
        let mem = guest_memory(16 << 20);
        for num_cpus in [1u8, 2, 7, MAX_VCPUS] {
            write_mptable(&mem, num_cpus).unwrap();
            let config = read_back(&mem);
            assert_eq!(
                u32::from_le_bytes(config[36..40].try_into().unwrap()) as u64,
                APIC_ADDR
            );
            let entries = entries(&config);
            let cpus: Vec<_> = entries
                .iter()
                .filter(|(t, _)| *t == ENTRY_PROCESSOR)
                .collect();
            assert_eq!(cpus.len(), num_cpus as usize);
            for (i, (_, cpu)) in cpus.iter().enumerate() {
                assert_eq!(cpu[1] as usize, i, "APIC id");
                let boot = cpu[3] & CPU_BOOT_PROCESSOR != 0;
                assert_eq!(boot, i == 0, "only CPU 0 is the boot processor");
                assert_ne!(cpu[3] & CPU_ENABLED, 0);
            }
        }
    }

    #[test]
    fn ioapic_bus_and_interrupt_entries() {
        let mem = guest_memory(16 << 20);
        write_mptable(&mem, 2).unwrap();
        let entries = entries(&read_back(&mem));
        let ioapic: Vec<_> = entries.iter().filter(|(t, _)| *t == ENTRY_IOAPIC).collect();
        assert_eq!(ioapic.len(), 1);
        let ioapic = &ioapic[0].1;
        assert_eq!(ioapic[1], 2, "IOAPIC id follows the CPU ids");
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()) as u64,
            IOAPIC_ADDR
        );
        let bus: Vec<_> = entries.iter().filter(|(t, _)| *t == ENTRY_BUS).collect();
        assert_eq!(&bus[0].1[2..8], b"ISA   ");
        let irqs: Vec<_> = entries
            .iter()
            .filter(|(t, _)| *t == ENTRY_IO_INTERRUPT)
            .collect();
        assert_eq!(irqs.len(), 24);
        for (pin, (_, e)) in irqs.iter().enumerate() {
            assert_eq!(
                (e[5] as usize, e[6], e[7] as usize),
                (pin, 2, pin),
                "ISA IRQ n -> pin n"
            );
        }
        let lints: Vec<_> = entries
            .iter()
            .filter(|(t, _)| *t == ENTRY_LOCAL_INTERRUPT)
            .map(|(_, e)| (e[1], e[6], e[7]))
            .collect();
        assert_eq!(
            lints,
            vec![(INT_TYPE_EXTINT, 0xff, 0), (INT_TYPE_NMI, 0xff, 1)]
        );
    }

    #[test]
    fn table_stays_inside_the_ebda() {
        assert!(MPTABLE_ADDR + build_mptable(MAX_VCPUS).len() as u64 <= LOW_RAM_END);
    }
}
