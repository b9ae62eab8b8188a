//! Guest physical memory layout of a Hull microVM (x86_64).
//!
//! Everything the boot code, the devices and the tiny test guests agree on lives here.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (left zero)
//! 0x0000_0500  GDT                      (BOOT_GDT_ADDR)
//! 0x0000_0520  IDT (empty)              (BOOT_IDT_ADDR)
//! 0x0000_6000  PVH hvm_start_info       (PVH_INFO_ADDR)
//! 0x0000_6040  PVH memory map entries   (PVH_MEMMAP_ADDR)
//! 0x0000_7000  Linux boot_params ("zero page") (ZERO_PAGE_ADDR)
//! 0x0000_8ff0  initial stack pointer    (BOOT_STACK_POINTER)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (identity map of the first 1 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line      (CMDLINE_ADDR, CMDLINE_MAX_SIZE)
//! 0x0009_fc00  EBDA: MP table           (MPTABLE_ADDR)
//! 0x000a_0000  legacy hole up to 1 MiB (reserved in e820)
//! 0x0010_0000  kernel load address      (HIMEM_START)
//!   ...        initrd at the top of low RAM, page aligned
//! 0xc000_0000  MMIO gap start (no RAM from here to 4 GiB)
//! 0xd000_0000  boot-time marker         (BOOT_MARKER_ADDR)
//! 0xd000_1000  virtio-mmio device i at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, IRQ VIRTIO_IRQ_BASE + i
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC (in-kernel irqchip)
//! 0x1_0000_0000 RAM above 4 GiB when the guest has more than MMIO_GAP_START bytes
//!   ...        the virtio-pmem window (an image file), on the first 1 GiB boundary above RAM and
//!              4 GiB ([`pmem_window_start`])
//! ```

/// Guest-physical address where the kernel (ELF segments) is expected to be loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// GDT used for 32-bit (PVH) and 64-bit entry.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Empty IDT loaded at entry.
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info` structure.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH `hvm_memmap_table_entry` array, right after the start info.
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Maximum number of PVH memory map entries we write.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = 64;
/// Linux `boot_params` (the zero page) for the 64-bit boot protocol.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer (rsp) for the 64-bit boot protocol entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page tables: PML4, PDPT and one PD identity-mapping the first GiB with 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line (NUL terminated).
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest command line we accept, including the terminating NUL (x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9_fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
/// End of conventional memory usable by the guest below 1 MiB.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Start of RAM above the legacy hole.
pub const HIGH_RAM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap: RAM below 4 GiB stops here.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (exclusive) = 4 GiB.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// Firecracker-style boot-time marker: the guest writes `BOOT_MARKER_MAGIC` (one byte) at this address.
pub const BOOT_MARKER_ADDR: u64 = 0xd000_0000;
/// Size of the boot marker MMIO window.
pub const BOOT_MARKER_SIZE: u64 = 0x1000;
/// The byte value that means "guest userspace is up".
pub const BOOT_MARKER_MAGIC: u8 = 123;

/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_1000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI (IOAPIC pin) of the first virtio-mmio device; device i uses VIRTIO_IRQ_BASE + i.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last usable GSI for virtio-mmio devices (IOAPIC has 24 pins).
pub const VIRTIO_IRQ_MAX: u32 = 23;

/// IOAPIC and local APIC base addresses (standard PC values).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const APIC_ADDR: u64 = 0xfee0_0000;

/// KVM needs three pages for the real-mode TSS and one for its identity map, inside the MMIO gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Legacy ports.
pub const SERIAL_COM1_PORT: u16 = 0x3f8;
pub const SERIAL_COM1_IRQ: u32 = 4;
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// i8042 command that pulses the CPU reset line (what Linux's `reboot=k` writes).
pub const I8042_RESET_COMMAND: u8 = 0xfe;

/// The pmem window starts on a boundary of this size.
pub const PMEM_WINDOW_ALIGN: u64 = 1 << 30;

/// Where the virtio-pmem window goes for a guest whose RAM ends at guest-physical `ram_end`
/// (exclusive): the first 1 GiB boundary at or above both `ram_end` and 4 GiB, so it never
/// overlaps RAM, the MMIO gap or the devices in it, and is aligned far beyond the guest's 2 MiB
/// (memory sub-section) and 128 MiB (section) needs.
pub fn pmem_window_start(ram_end: u64) -> u64 {
    ram_end
        .max(MMIO_GAP_END)
        .next_multiple_of(PMEM_WINDOW_ALIGN)
}

/// Smallest guest memory we accept, in MiB: enough for the boot structures, a kernel and an initramfs.
pub const MIN_MEM_MIB: u64 = 16;
