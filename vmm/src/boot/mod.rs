//! Linux boot: kernel/initrd loading, e820, boot_params / PVH start info, MP table, GDT, paging, CPUID, MSRs and initial registers.
