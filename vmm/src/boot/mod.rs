//! Linux boot: kernel/initrd loading, e820, boot_params / PVH start info, MP table, GDT, paging,
//! CPUID, MSRs and initial registers.
//!
//! The work is split in two halves:
//! - pure functions over guest memory ([`load_kernel`], [`load_initrd`], [`configure_system`],
//!   [`e820_entries`]) that can be tested without KVM;
//! - [`setup_vcpu`], which pushes CPUID, MSRs, FPU, LAPIC and entry registers into a KVM vCPU.
//!
//! Two entry protocols are supported for an uncompressed ELF `vmlinux`:
//! - PVH (the kernel carries a `XEN_ELFNOTE_PHYS32_ENTRY` note): 32-bit protected mode, paging off,
//!   `rbx` points at an `hvm_start_info`;
//! - the 64-bit Linux boot protocol: long mode on identity page tables, `rsi` points at
//!   `boot_params` (the "zero page").

mod cmdline;
mod cpuid;
mod e820;
mod gdt;
mod initrd;
mod kernel;
mod linux64;
mod mptable;
mod paging;
mod pvh;
#[cfg(test)]
mod test_util;
mod vcpu;
mod zero_pages;

use vm_memory::GuestAddress;

pub use e820::{e820_entries, E820Entry, E820Type};
pub use initrd::load_initrd;
pub use kernel::load_kernel;
pub use mptable::MAX_VCPUS;
pub use vcpu::setup_vcpu;

use crate::memory::GuestMemory;

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: the ELF has a `XEN_ELFNOTE_PHYS32_ENTRY` note; 32-bit entry with `hvm_start_info`.
    Pvh,
    /// 64-bit Linux boot protocol: long-mode entry at the ELF entry point with `boot_params`.
    Linux64,
}

/// Where and how a kernel was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Guest-physical entry point (the PVH entry for [`BootProtocol::Pvh`]).
    pub entry: GuestAddress,
    /// The entry protocol to use.
    pub protocol: BootProtocol,
    /// First guest-physical address after the highest loaded segment (including its bss).
    pub kernel_end: GuestAddress,
}

/// Where an initrd was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdInfo {
    /// Guest-physical start address (page aligned).
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Everything [`configure_system`] needs to write the boot structures.
pub struct BootConfig<'a> {
    /// Guest RAM size in bytes (as given to [`crate::memory::create_guest_ram`]).
    pub mem_bytes: u64,
    /// Kernel command line.
    pub cmdline: &'a linux_loader::cmdline::Cmdline,
    /// The initrd, if one was loaded.
    pub initrd: Option<InitrdInfo>,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    pub num_cpus: u8,
    /// The loaded kernel.
    pub kernel: &'a LoadedKernel,
}

/// Errors of the boot code.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading the kernel file failed.
    #[error("cannot read the kernel image: {0}")]
    KernelRead(#[source] std::io::Error),
    /// The kernel file is a bzImage (compressed, with a setup header).
    #[error(
        "kernel image is not an ELF vmlinux (bzImage is not supported, use the uncompressed vmlinux)"
    )]
    BzImageUnsupported,
    /// The kernel file is neither an ELF nor a bzImage.
    #[error(
        "kernel image is not an ELF vmlinux (no ELF magic; an uncompressed vmlinux is needed)"
    )]
    NotElf,
    /// The ELF is not a 64-bit little-endian x86_64 executable with loadable segments.
    #[error("kernel ELF is not supported: {0}")]
    UnsupportedElf(&'static str),
    /// A header or segment of the ELF lies beyond the end of the file.
    #[error("kernel ELF is truncated: the {what} at file offset {offset:#x} (+{len:#x} bytes) ends beyond the end of the {file_size}-byte file")]
    TruncatedElf {
        what: &'static str,
        offset: u64,
        len: u64,
        file_size: u64,
    },
    /// A loadable segment is below `HIMEM_START` or beyond low RAM.
    #[error("kernel does not fit in guest memory: a segment spans [{start:#x}, {end:#x}) but usable RAM for the kernel is [{min:#x}, {max:#x})")]
    KernelDoesNotFit {
        start: u64,
        end: u64,
        min: u64,
        max: u64,
    },
    /// The entry point is not inside any loadable segment.
    #[error("kernel entry point {entry:#x} is outside the loaded segments")]
    KernelEntryOutside { entry: u64 },
    /// `linux_loader` failed to copy the ELF into guest memory.
    #[error("cannot load the kernel ELF into guest memory: {0}")]
    KernelLoad(#[source] linux_loader::loader::Error),
    /// Reading the initrd file failed.
    #[error("cannot read the initrd: {0}")]
    InitrdRead(#[source] std::io::Error),
    /// The initrd file is empty.
    #[error("initrd is empty")]
    InitrdEmpty,
    /// No room for the initrd between the kernel and the end of low RAM.
    #[error("initrd of {size} bytes does not fit below {limit:#x} (it must stay above the kernel, which ends at {kernel_end:#x})")]
    InitrdDoesNotFit {
        size: u64,
        limit: u64,
        kernel_end: u64,
    },
    /// The command line does not fit in `CMDLINE_MAX_SIZE` bytes with its NUL.
    #[error("command line too long ({len} > {max} bytes)", max = crate::layout::CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong { len: usize },
    /// The command line cannot be turned into a C string.
    #[error("invalid command line: {0}")]
    CmdlineInvalid(#[source] linux_loader::cmdline::Error),
    /// Writing the command line into guest memory failed.
    #[error("cannot write the command line into guest memory: {0}")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    /// `num_cpus` is 0 or above [`MAX_VCPUS`].
    #[error("invalid vCPU count {num_cpus}: must be 1..={max}")]
    BadCpuCount { num_cpus: u8, max: u8 },
    /// `cpu_index` is not below `num_cpus`.
    #[error("vCPU index {cpu_index} is out of range for {num_cpus} vCPUs")]
    BadCpuIndex { cpu_index: u8, num_cpus: u8 },
    /// A boot structure could not be written (guest memory too small).
    #[error("cannot write the {what} at guest address {addr:#x}: {source}")]
    GuestWrite {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// `linux_loader` failed to write `boot_params` or the PVH start info.
    #[error("cannot write the {what}: {source}")]
    BootParams {
        what: &'static str,
        #[source]
        source: linux_loader::configurator::Error,
    },
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM did not accept all boot MSRs.
    #[error("KVM accepted only {set} of {total} boot MSRs (first refused: {first_refused:#x})")]
    MsrsRefused {
        set: usize,
        total: usize,
        first_refused: u32,
    },
    /// A KVM flexible-array list could not be built.
    #[error("cannot build the {what} list: {reason}")]
    FamList { what: &'static str, reason: String },
}

/// Writes every boot structure the kernel needs into guest memory: the command line, the MP
/// table, the GDT/IDT, and either the PVH start info or (64-bit protocol) the page tables and
/// `boot_params`.
pub fn configure_system(mem: &GuestMemory, cfg: &BootConfig) -> Result<(), BootError> {
    check_cpu_count(cfg.num_cpus)?;
    let cmdline_len = cmdline::write_cmdline(mem, cfg.cmdline)?;
    mptable::write_mptable(mem, cfg.num_cpus)?;
    gdt::write_gdt_and_idt(mem, cfg.kernel.protocol)?;
    let e820 = e820_entries(cfg.mem_bytes);
    match cfg.kernel.protocol {
        BootProtocol::Pvh => pvh::write_start_info(mem, &e820, cfg.initrd)?,
        BootProtocol::Linux64 => {
            paging::write_identity_page_tables(mem)?;
            linux64::write_boot_params(mem, &e820, cmdline_len, cfg.initrd)?;
        }
    }
    tracing::debug!(
        protocol = ?cfg.kernel.protocol,
        num_cpus = cfg.num_cpus,
        mem_bytes = cfg.mem_bytes,
        initrd = ?cfg.initrd,
        "boot structures written"
    );
    Ok(())
}

/// Refuses a vCPU count of 0 or above [`MAX_VCPUS`].
fn check_cpu_count(num_cpus: u8) -> Result<(), BootError> {
    if num_cpus == 0 || num_cpus > MAX_VCPUS {
        return Err(BootError::BadCpuCount {
            num_cpus,
            max: MAX_VCPUS,
        });
    }
    Ok(())
}

/// Writes `bytes` at `addr`, naming `what` in the error.
fn write_bytes(
    mem: &GuestMemory,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), BootError> {
    use vm_memory::Bytes;
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| BootError::GuestWrite { what, addr, source })
}

#[cfg(test)]
mod tests {
    //! End to end: a tiny ELF "kernel" goes through load_kernel, load_initrd, configure_system
    //! and setup_vcpu, then runs on a real KVM vCPU and reports, through port 0x3f8, what it
    //! finds in its registers and in the boot structures.

    use super::test_util::{guest_memory, kvm_vm_with, memfd_with, TestElf};
    use super::*;
    use crate::layout::{BOOT_STACK_POINTER, PML4_START, SERIAL_COM1_PORT};
    use kvm_ioctls::{VcpuExit, VcpuFd};
    use linux_loader::cmdline::Cmdline;

    const MEM_BYTES: u64 = 64 << 20;
    const LOAD_ADDR: u64 = 0x100_0000;

    /// Runs until `count` 4-byte writes to COM1 were seen; any other exit fails the test.
    fn serial_words(vcpu: &mut VcpuFd, count: usize) -> Vec<u32> {
        let mut words = Vec::new();
        while words.len() < count {
            match vcpu.run().expect("KVM_RUN") {
                VcpuExit::IoOut(SERIAL_COM1_PORT, data) => {
                    words.push(u32::from_le_bytes(data.try_into().expect("a 4-byte out")))
                }
                other => panic!("unexpected exit {other:?} after {words:x?}"),
            }
        }
        words
    }

    /// Loads `elf` plus a small initrd, writes the boot structures and sets up vCPU 0 of
    /// `num_cpus`; returns what the guest printed.
    fn boot(elf: &TestElf, num_cpus: u8, words: usize) -> (LoadedKernel, InitrdInfo, Vec<u32>) {
        let mem = guest_memory(MEM_BYTES);
        let kernel = load_kernel(&mem, &mut memfd_with(&elf.bytes())).unwrap();
        let initrd = load_initrd(
            &mem,
            MEM_BYTES,
            &mut memfd_with(&[7u8; 5000]),
            kernel.kernel_end,
        )
        .unwrap();
        let mut cmdline = Cmdline::new(crate::layout::CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0 panic=-1").unwrap();
        let cfg = BootConfig {
            mem_bytes: MEM_BYTES,
            cmdline: &cmdline,
            initrd: Some(initrd),
            num_cpus,
            kernel: &kernel,
        };
        configure_system(&mem, &cfg).unwrap();

        let (kvm, vm) = kvm_vm_with(&mem);
        let mut vcpu = vm.create_vcpu(0).unwrap();
        setup_vcpu(&kvm, &vcpu, 0, num_cpus, &kernel).unwrap();
        let printed = serial_words(&mut vcpu, words);
        (kernel, initrd, printed)
    }

    #[test]
    fn linux64_entry_runs_in_long_mode_with_boot_params_in_rsi() {
        #[rustfmt::skip]
        let code = vec![
            0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x202]   ; boot_params.hdr.header
            0x66, 0xba, 0xf8, 0x03,             // mov dx, 0x3f8
            0xef,                               // out dx, eax
            0x48, 0x89, 0xe0,                   // mov rax, rsp
            0xef,                               // out dx, eax
            0x0f, 0x20, 0xd8,                   // mov rax, cr3
            0xef,                               // out dx, eax
            0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1
            0x0f, 0xa2,                         // cpuid
            0x89, 0xd8,                         // mov eax, ebx
            0x66, 0xba, 0xf8, 0x03,             // mov dx, 0x3f8
            0xef,                               // out dx, eax
            0x8b, 0x86, 0x18, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x218]   ; hdr.ramdisk_image
            0xef,                               // out dx, eax
            0xf4,                               // hlt
        ];
        let elf = TestElf {
            load_addr: LOAD_ADDR,
            entry: LOAD_ADDR,
            code,
            bss: 0x1000,
            pvh_entry: None,
        };
        let (kernel, initrd, words) = boot(&elf, 2, 5);
        assert_eq!(kernel.protocol, BootProtocol::Linux64);
        assert_eq!(words[0], u32::from_le_bytes(*b"HdrS"));
        assert_eq!(u64::from(words[1]), BOOT_STACK_POINTER);
        assert_eq!(u64::from(words[2]), PML4_START);
        assert_eq!(words[3] >> 24, 0, "APIC id of the boot CPU");
        assert_eq!((words[3] >> 16) & 0xff, 2, "logical processor count");
        assert_eq!(u64::from(words[4]), initrd.addr.0);
    }

    #[test]
    fn pvh_entry_runs_in_32bit_mode_with_start_info_in_rbx() {
        #[rustfmt::skip]
        let code = vec![
            0x8b, 0x03,             // mov eax, [ebx]          ; start_info.magic
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xef,                   // out dx, eax
            0x8b, 0x43, 0x18,       // mov eax, [ebx + 24]     ; start_info.cmdline_paddr
            0x8b, 0x00,             // mov eax, [eax]          ; first 4 bytes of the command line
            0xef,                   // out dx, eax
            0x8b, 0x43, 0x10,       // mov eax, [ebx + 16]     ; start_info.modlist_paddr
            0x8b, 0x00,             // mov eax, [eax]          ; modlist[0].paddr
            0xef,                   // out dx, eax
            0x0f, 0x20, 0xc0,       // mov eax, cr0
            0xef,                   // out dx, eax
            0xf4,                   // hlt
        ];
        let elf = TestElf {
            load_addr: LOAD_ADDR,
            entry: LOAD_ADDR + 0x100,
            code,
            bss: 0x1000,
            pvh_entry: Some(LOAD_ADDR as u32),
        };
        let (kernel, initrd, words) = boot(&elf, 1, 4);
        assert_eq!(kernel.protocol, BootProtocol::Pvh);
        assert_eq!(words[0], 0x336e_c578);
        assert_eq!(words[1], u32::from_le_bytes(*b"cons"));
        assert_eq!(u64::from(words[2]), initrd.addr.0);
        assert_eq!(words[3], 0x11, "CR0 = PE | ET, paging off");
    }

    #[test]
    fn configure_system_refuses_bad_cpu_counts() {
        let mem = guest_memory(16 << 20);
        let cmdline = Cmdline::new(16).unwrap();
        let kernel = LoadedKernel {
            entry: GuestAddress(LOAD_ADDR),
            protocol: BootProtocol::Pvh,
            kernel_end: GuestAddress(LOAD_ADDR + 0x1000),
        };
        for num_cpus in [0, MAX_VCPUS + 1] {
            let cfg = BootConfig {
                mem_bytes: 16 << 20,
                cmdline: &cmdline,
                initrd: None,
                num_cpus,
                kernel: &kernel,
            };
            assert!(matches!(
                configure_system(&mem, &cfg),
                Err(BootError::BadCpuCount { .. })
            ));
        }
    }
}
