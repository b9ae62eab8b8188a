//! Adjusting KVM's supported CPUID for one vCPU: its APIC id, the topology (`num_cpus` cores of
//! one thread each, one package), the hypervisor bit, the TSC-deadline timer when KVM's LAPIC
//! has it (KVM never lists it as supported; it saves the guest a LAPIC timer calibration), no
//! thermal/power leaf except ARAT (the LAPIC timer keeps running in idle states, as KVM's LAPIC
//! does), and no PMU leaf. KVM's own leaves (0x4000_0000 signature, 0x4000_0001 paravirtual
//! features: kvmclock, its stable bit, PV EOI...) are passed through as KVM reports them, so the
//! guest takes its TSC frequency from kvmclock instead of calibrating against the PIT.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1: EBX[31:24] initial APIC id, EBX[23:16] logical processor count, EBX[15:8] CLFLUSH
/// line size in 8-byte units.
const LEAF_FEATURES: u32 = 0x1;
const CLFLUSH_LINE_8_BYTE_UNITS: u32 = 8; // 64-byte cache lines
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// Leaf 4: deterministic cache parameters (one entry per cache).
const LEAF_CACHE_PARAMS: u32 = 0x4;
const CACHE_CORES_MASK: u32 = 0x3f << 26;
const CACHE_SHARING_MASK: u32 = 0xfff << 14;
/// Leaf 6: thermal and power management (EAX bit 2: ARAT, the always-running APIC timer);
/// leaf 0xa: architectural PMU.
const LEAF_THERMAL_POWER: u32 = 0x6;
const EAX_ARAT: u32 = 1 << 2;
const LEAF_PMU: u32 = 0xa;
/// Leaves 0xb and 0x1f: extended topology, one entry per level.
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;
/// AMD: leaf 0x8000_0001 ECX bit 1 (CmpLegacy: HTT counts cores), leaf 0x8000_0008 ECX (core
/// count and APIC id size), leaf 0x8000_001e (extended APIC id, core and node ids).
const LEAF_AMD_EXT_FEATURES: u32 = 0x8000_0001;
const ECX_CMP_LEGACY: u32 = 1 << 1;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

/// Number of APIC-id bits needed to number `num_cpus` cores (ceil(log2)).
fn core_id_bits(num_cpus: u8) -> u32 {
    u32::from(num_cpus).next_power_of_two().trailing_zeros()
}

/// Rewrites the entries for vCPU `cpu_index` of `num_cpus` (APIC id = `cpu_index`);
/// `tsc_deadline_timer` says whether KVM has `KVM_CAP_TSC_DEADLINE_TIMER`.
pub(super) fn filter_cpuid(
    entries: &mut [kvm_cpuid_entry2],
    cpu_index: u8,
    num_cpus: u8,
    tsc_deadline_timer: bool,
) {
    let apic_id = u32::from(cpu_index);
    let cpus = u32::from(num_cpus);
    let core_bits = core_id_bits(num_cpus);
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0xff)
                    | apic_id << 24
                    | cpus << 16
                    | CLFLUSH_LINE_8_BYTE_UNITS << 8;
                entry.ecx |= ECX_HYPERVISOR;
                if tsc_deadline_timer {
                    entry.ecx |= ECX_TSC_DEADLINE;
                }
                if num_cpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                let cache_type = entry.eax & 0x1f;
                if cache_type != 0 {
                    let level = (entry.eax >> 5) & 0x7;
                    // L1/L2 belong to one core (one thread); L3 is shared by the whole package.
                    let sharing = if level >= 3 { cpus - 1 } else { 0 };
                    entry.eax = (entry.eax & !(CACHE_CORES_MASK | CACHE_SHARING_MASK))
                        | (cpus - 1) << 26
                        | sharing << 14;
                }
            }
            LEAF_THERMAL_POWER => {
                // Without ARAT the guest marks its LAPIC timer as stopping in deep idle and keeps
                // the PIT as a tick broadcast device (more timer interrupts, more exits).
                (entry.eax, entry.ebx, entry.ecx, entry.edx) = (entry.eax & EAX_ARAT, 0, 0, 0);
            }
            LEAF_PMU => {
                (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                let level = entry.index;
                (entry.eax, entry.ebx, entry.ecx) = match level {
                    0 => (0, 1, LEVEL_TYPE_SMT << 8),
                    1 => (core_bits, cpus, LEVEL_TYPE_CORE << 8 | 1),
                    _ => (0, 0, level & 0xff),
                };
                entry.edx = apic_id;
            }
            LEAF_AMD_EXT_FEATURES => {
                if num_cpus > 1 {
                    entry.ecx |= ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !ECX_CMP_LEGACY;
                }
            }
            LEAF_AMD_SIZES => {
                // ECX[7:0] = cores - 1, ECX[15:12] = APIC id bits for the core id.
                entry.ecx = (entry.ecx & !0xf0ff) | core_bits << 12 | (cpus - 1);
            }
            LEAF_AMD_TOPOLOGY => {
                entry.eax = apic_id;
                // EBX[15:8] threads per core - 1 = 0, EBX[7:0] core id.
                entry.ebx = (entry.ebx & !0xffff) | apic_id;
                // ECX[10:8] nodes per package - 1 = 0, ECX[7:0] node id = 0.
                entry.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: 0,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        }
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn sample() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(
                0x1,
                0,
                [0x0083_0f10, 0xff_ff_ff_07, 0x7ed8_320b, 0x178b_fbff],
            ),
            entry(0x4, 0, [0x1c00_4121, 0, 0, 0]), // L1d, 8 cores sharing in the host
            entry(0x4, 3, [0x1c03_c163, 0, 0, 0]), // L3
            entry(0x4, 4, [0, 0, 0, 0]),           // no more caches
            entry(0x6, 0, [0x4, 0x1, 0x1, 0]),
            entry(0xa, 0, [0x0730_0805, 0, 0, 0x603]),
            entry(0xb, 0, [1, 2, 0x100, 9]),
            entry(0xb, 1, [7, 16, 0x201, 9]),
            entry(0xb, 2, [0, 0, 2, 9]),
            entry(0x8000_0001, 0, [0, 0, 0x0000_0002, 0]),
            entry(0x8000_0008, 0, [0x3030, 0, 0x0000_700f, 0]),
            entry(0x8000_001e, 0, [9, 0x0000_0104, 0x0000_0300, 0]),
            entry(0x4000_0001, 0, [0x1234, 0, 0, 0]),
        ]
    }

    #[test]
    fn apic_id_hypervisor_bit_and_counts_in_leaf_1() {
        let mut e = sample();
        filter_cpuid(&mut e, 3, 4, false);
        let leaf1 = find(&e, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 3, "APIC id");
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!((leaf1.ebx >> 8) & 0xff, 8, "CLFLUSH size 64 bytes");
        assert_eq!(leaf1.ebx & 0xff, 0x07, "brand index kept");
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & EDX_HTT, 0);
        assert_eq!(leaf1.eax, 0x0083_0f10, "signature kept");
        assert_eq!(
            leaf1.ecx & ECX_TSC_DEADLINE,
            0,
            "not advertised without the capability"
        );

        let mut e = sample();
        filter_cpuid(&mut e, 0, 1, true);
        let leaf1 = find(&e, 1, 0);
        assert_ne!(leaf1.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 1);
        assert_eq!(leaf1.edx & EDX_HTT, 0, "one CPU: no HTT");
    }

    #[test]
    fn topology_leaves_describe_one_thread_per_core() {
        let mut e = sample();
        filter_cpuid(&mut e, 2, 3, false);
        let smt = find(&e, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let core = find(&e, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        let end = find(&e, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx & 0xff00, end.edx), (0, 0, 0, 2));

        let l1 = find(&e, 4, 0);
        assert_eq!(l1.eax >> 26, 2, "cores per package - 1");
        assert_eq!((l1.eax >> 14) & 0xfff, 0, "L1 is private");
        assert_eq!(l1.eax & 0x3fff, 0x0121, "cache type/level kept");
        let l3 = find(&e, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 2, "L3 shared by all");
        assert_eq!(find(&e, 4, 4).eax, 0, "terminator untouched");
    }

    #[test]
    fn amd_topology_leaves() {
        let mut e = sample();
        filter_cpuid(&mut e, 5, 6, false);
        assert_ne!(find(&e, 0x8000_0001, 0).ecx & ECX_CMP_LEGACY, 0);
        let sizes = find(&e, 0x8000_0008, 0);
        assert_eq!((sizes.ecx & 0xff, (sizes.ecx >> 12) & 0xf), (5, 3));
        let topo = find(&e, 0x8000_001e, 0);
        assert_eq!((topo.eax, topo.ebx & 0xffff, topo.ecx & 0x7ff), (5, 5, 0));

        let mut e = sample();
        filter_cpuid(&mut e, 0, 1, false);
        assert_eq!(find(&e, 0x8000_0001, 0).ecx & ECX_CMP_LEGACY, 0);
        assert_eq!(find(&e, 0x8000_0008, 0).ecx & 0xf0ff, 0);
    }

    #[test]
    fn thermal_keeps_only_arat_pmu_is_cleared_and_others_kept() {
        let mut e = sample();
        filter_cpuid(&mut e, 0, 2, false);
        let thermal = find(&e, 0x6, 0);
        assert_eq!(
            (thermal.eax, thermal.ebx, thermal.ecx, thermal.edx),
            (EAX_ARAT, 0, 0, 0),
            "leaf 6 keeps ARAT only"
        );
        let pmu = find(&e, 0xa, 0);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
        assert_eq!(find(&e, 0x4000_0001, 0).eax, 0x1234);

        // A host without ARAT does not get it invented.
        let mut e = sample();
        e.iter_mut().find(|x| x.function == 0x6).unwrap().eax = 0x1;
        filter_cpuid(&mut e, 0, 1, false);
        assert_eq!(find(&e, 0x6, 0).eax, 0);
    }

    #[test]
    fn kvm_paravirt_leaves_pass_through() {
        // "KVMKVMKVM\0\0\0" and the feature bits KVM reports (kvmclock, CLOCKSOURCE2, the
        // stable bit 24...), unchanged: the guest's kvmclock and TSC frequency depend on them.
        let signature = entry(
            0x4000_0000,
            0,
            [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
        );
        let features = entry(0x4000_0001, 0, [0x0100_00fb, 0, 0, 0]);
        let mut e = vec![signature, features];
        filter_cpuid(&mut e, 0, 1, true);
        assert_eq!(e[0], signature);
        assert_eq!(e[1], features);
    }

    #[test]
    fn core_id_bits_rounds_up() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 32].map(core_id_bits),
            [0, 1, 2, 2, 3, 3, 4, 5]
        );
    }
}
