//! Pushing the boot state into a KVM vCPU: CPUID, MSRs, FPU, LAPIC LINT0/LINT1 and, for the
//! boot CPU only, the entry registers.

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use super::cpuid::filter_cpuid;
use super::gdt::{boot_gdt, segment, CODE_INDEX, DATA_INDEX, GDT_ENTRIES, IDT_LEN, TSS_INDEX};
use super::{BootError, BootProtocol, LoadedKernel, MAX_VCPUS};
use crate::layout::{
    BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PML4_START, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRITE_BACK: u64 = 6;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

/// LAPIC register offsets of LVT LINT0/LINT1 and the delivery-mode field in them.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_DELIVERY_MODE_MASK: u32 = 0x7 << 8;
const APIC_MODE_NMI: u32 = 0x4 << 8;
const APIC_MODE_EXTINT: u32 = 0x7 << 8;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the always-one bit 1 set (interrupts off).
const RFLAGS_RESERVED_ONE: u64 = 1 << 1;

/// Prepares vCPU `cpu_index` of `num_cpus` (its KVM vCPU id and APIC id must be `cpu_index`) for
/// booting `kernel`: CPUID, MSRs, FPU, LAPIC; the boot CPU (index 0) also gets the entry
/// registers, the others stay in their reset state until INIT/SIPI.
///
/// The VM must have its in-kernel irqchip created before this is called (LAPIC state).
pub fn setup_vcpu(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    cpu_index: u8,
    num_cpus: u8,
    kernel: &LoadedKernel,
) -> Result<(), BootError> {
    if num_cpus == 0 || num_cpus > MAX_VCPUS {
        return Err(BootError::BadCpuCount {
            num_cpus,
            max: MAX_VCPUS,
        });
    }
    if cpu_index >= num_cpus {
        return Err(BootError::BadCpuIndex {
            cpu_index,
            num_cpus,
        });
    }
    let kvm_err = |what| move |source| BootError::Kvm { what, source };

    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let tsc_deadline_timer = kvm.check_extension(Cap::TscDeadlineTimer);
    filter_cpuid(
        cpuid.as_mut_slice(),
        cpu_index,
        num_cpus,
        tsc_deadline_timer,
    );
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

    set_boot_msrs(vcpu)?;
    vcpu.set_fpu(&boot_fpu()).map_err(kvm_err("KVM_SET_FPU"))?;

    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    set_lint_delivery_modes(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;

    if cpu_index == 0 {
        let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot_sregs(sregs, kernel.protocol))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&boot_regs(kernel))
            .map_err(kvm_err("KVM_SET_REGS"))?;
    }
    tracing::debug!(cpu_index, num_cpus, protocol = ?kernel.protocol, "vCPU set up for boot");
    Ok(())
}

/// MSR values at boot: fast strings on, MTRRs enabled with write-back default, everything
/// else zero.
fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        reserved: 0,
        data,
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        msr(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRITE_BACK),
    ]
}

fn set_boot_msrs(vcpu: &VcpuFd) -> Result<(), BootError> {
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|e| BootError::FamList {
        what: "MSR",
        reason: format!("{e:?}"),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(|source| BootError::Kvm {
        what: "KVM_SET_MSRS",
        source,
    })?;
    if set != entries.len() {
        let first_refused = entries.get(set).map_or(0, |e| e.index);
        return Err(BootError::MsrsRefused {
            set,
            total: entries.len(),
            first_refused,
        });
    }
    Ok(())
}

/// x87 control word and MXCSR at their power-on values. KVM_SET_FPU ignores `mxcsr` (KVM's vCPU
/// reset already puts 0x1f80 there); it is filled in anyway so the intent is explicit.
fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&lapic.regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (r, b) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *r = b as _;
    }
}

/// LINT0 delivers ExtINT (the legacy PIC) and LINT1 delivers NMI; other LVT bits are kept.
fn set_lint_delivery_modes(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let value = lapic_reg(lapic, offset);
        set_lapic_reg(lapic, offset, (value & !APIC_DELIVERY_MODE_MASK) | mode);
    }
}

/// Entry registers of the boot CPU.
fn boot_regs(kernel: &LoadedKernel) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED_ONE,
        rip: kernel.entry.0,
        ..Default::default()
    };
    match kernel.protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO_ADDR,
        BootProtocol::Linux64 => {
            regs.rsi = ZERO_PAGE_ADDR;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
        }
    }
    regs
}

/// Segment, descriptor-table and control registers of the boot CPU, starting from KVM's reset
/// state `sregs` (which keeps the APIC base and the interrupt bitmap).
fn boot_sregs(mut sregs: kvm_sregs, protocol: BootProtocol) -> kvm_sregs {
    let gdt = boot_gdt(protocol);
    let data = segment(&gdt, DATA_INDEX);
    sregs.cs = segment(&gdt, CODE_INDEX);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = segment(&gdt, TSS_INDEX);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = IDT_LEN - 1;
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    sregs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::{guest_memory, kvm_vm_with};
    use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
    use vm_memory::GuestAddress;

    const PVH_KERNEL: LoadedKernel = LoadedKernel {
        entry: GuestAddress(0x100_0040),
        protocol: BootProtocol::Pvh,
        kernel_end: GuestAddress(0x200_0000),
    };
    const LINUX64_KERNEL: LoadedKernel = LoadedKernel {
        entry: GuestAddress(0x100_0200),
        protocol: BootProtocol::Linux64,
        kernel_end: GuestAddress(0x200_0000),
    };

    #[test]
    fn linux64_registers_enter_long_mode_on_the_identity_tables() {
        let regs = boot_regs(&LINUX64_KERNEL);
        assert_eq!(
            (regs.rip, regs.rsi, regs.rsp, regs.rbp, regs.rflags),
            (
                0x100_0200,
                ZERO_PAGE_ADDR,
                BOOT_STACK_POINTER,
                BOOT_STACK_POINTER,
                2
            )
        );
        let sregs = boot_sregs(kvm_sregs::default(), BootProtocol::Linux64);
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PG | X86_CR0_PE),
            X86_CR0_PG | X86_CR0_PE
        );
        assert_eq!((sregs.cs.l, sregs.cs.selector), (1, 0x08));
        assert_eq!((sregs.ss.selector, sregs.tr.selector), (0x10, 0x18));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (BOOT_GDT_ADDR, 31));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (BOOT_IDT_ADDR, 7));
    }

    #[test]
    fn pvh_registers_enter_32bit_protected_mode_without_paging() {
        let regs = boot_regs(&PVH_KERNEL);
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags),
            (0x100_0040, PVH_INFO_ADDR, 2)
        );
        let sregs = boot_sregs(kvm_sregs::default(), BootProtocol::Pvh);
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((sregs.cr3, sregs.cr4, sregs.efer), (0, 0, 0));
        assert_eq!(
            (sregs.cs.l, sregs.cs.db, sregs.cs.limit),
            (0, 1, 0xffff_ffff)
        );
        assert_eq!((sregs.ds.selector, sregs.ds.db), (0x10, 1));
    }

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi_keeping_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, 0x1_0000 | APIC_MODE_NMI); // masked, wrong mode
        set_lapic_reg(&mut lapic, APIC_LVT_LINT1, 0x1_0000);
        set_lint_delivery_modes(&mut lapic);
        assert_eq!(
            lapic_reg(&lapic, APIC_LVT_LINT0),
            0x1_0000 | APIC_MODE_EXTINT
        );
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT1), 0x1_0000 | APIC_MODE_NMI);
    }

    #[test]
    fn bad_cpu_index_or_count_is_refused_before_touching_kvm() {
        let mem = guest_memory(16 << 20);
        let (kvm, vm) = kvm_vm_with(&mem);
        let vcpu = vm.create_vcpu(0).unwrap();
        let err = setup_vcpu(&kvm, &vcpu, 2, 2, &PVH_KERNEL).unwrap_err();
        assert!(matches!(
            err,
            BootError::BadCpuIndex {
                cpu_index: 2,
                num_cpus: 2
            }
        ));
        let err = setup_vcpu(&kvm, &vcpu, 0, 0, &PVH_KERNEL).unwrap_err();
        assert!(matches!(err, BootError::BadCpuCount { .. }));
    }

    #[test]
    fn real_kvm_vcpus_read_back_what_was_set() {
        let mem = guest_memory(64 << 20);
        let (kvm, vm) = kvm_vm_with(&mem);
        let boot_cpu = vm.create_vcpu(0).unwrap();
        let second_cpu = vm.create_vcpu(1).unwrap();
        let reset_regs = second_cpu.get_regs().unwrap();
        setup_vcpu(&kvm, &boot_cpu, 0, 2, &LINUX64_KERNEL).unwrap();
        setup_vcpu(&kvm, &second_cpu, 1, 2, &LINUX64_KERNEL).unwrap();

        for (index, vcpu) in [(0u32, &boot_cpu), (1, &second_cpu)] {
            let cpuid = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
            let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
            assert_eq!(leaf1.ebx >> 24, index, "APIC id of vCPU {index}");
            assert_eq!((leaf1.ebx >> 16) & 0xff, 2);
            assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
            let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
            assert_eq!(leaf1.ecx & (1 << 24) != 0, tsc_deadline, "TSC deadline bit");
            assert!(cpuid
                .as_slice()
                .iter()
                .filter(|e| e.function == 0xa)
                .all(|e| e.eax == 0));

            assert_eq!(vcpu.get_fpu().unwrap().fcw, 0x37f);
            // KVM_GET_FPU does not report MXCSR; the XSAVE area (legacy region, byte 24) does.
            assert_eq!(vcpu.get_xsave().unwrap().region[6], 0x1f80, "MXCSR");

            let lapic = vcpu.get_lapic().unwrap();
            assert_eq!(
                lapic_reg(&lapic, APIC_LVT_LINT0) & APIC_DELIVERY_MODE_MASK,
                APIC_MODE_EXTINT
            );
            assert_eq!(
                lapic_reg(&lapic, APIC_LVT_LINT1) & APIC_DELIVERY_MODE_MASK,
                APIC_MODE_NMI
            );
            assert_eq!(
                lapic_reg(&lapic, 0x20) >> 24,
                index,
                "LAPIC id matches the CPUID APIC id"
            );

            let mut msrs = Msrs::from_entries(&[
                kvm_msr_entry {
                    index: MSR_MTRR_DEF_TYPE,
                    ..Default::default()
                },
                kvm_msr_entry {
                    index: MSR_IA32_MISC_ENABLE,
                    ..Default::default()
                },
            ])
            .unwrap();
            assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 2);
            assert_eq!(msrs.as_slice()[0].data, MTRR_ENABLE | MTRR_TYPE_WRITE_BACK);
            assert_ne!(msrs.as_slice()[1].data & MISC_ENABLE_FAST_STRING, 0);
        }

        let regs = boot_cpu.get_regs().unwrap();
        assert_eq!(
            (regs.rip, regs.rsi, regs.rsp),
            (0x100_0200, ZERO_PAGE_ADDR, BOOT_STACK_POINTER)
        );
        let sregs = boot_cpu.get_sregs().unwrap();
        assert_eq!(
            (sregs.cr3, sregs.cs.l, sregs.cs.selector),
            (PML4_START, 1, 0x08)
        );
        assert_ne!(sregs.efer & EFER_LMA, 0);

        // The application processor keeps its reset registers.
        let ap_regs = second_cpu.get_regs().unwrap();
        assert_eq!((ap_regs.rip, ap_regs.rsi), (reset_regs.rip, reset_regs.rsi));
        assert_eq!(ap_regs.rip, 0xfff0);
    }
}
