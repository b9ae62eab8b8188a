//! Test helpers: guest memory, in-memory files and minimal ELF images built byte by byte.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

use vm_memory::GuestAddress;

use crate::memory::{ram_ranges, GuestMemory};

/// Anonymous guest memory laid out like the real one (split around the MMIO gap).
pub fn guest_memory(mem_bytes: u64) -> GuestMemory {
    let ranges: Vec<_> = ram_ranges(mem_bytes)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).expect("map test guest memory")
}

/// A memfd holding `bytes`, as a `File` (what the loaders take).
pub fn memfd_with(bytes: &[u8]) -> File {
    let name = CString::new("hull-boot-test").unwrap();
    // SAFETY: valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).unwrap();
    file
}

/// A minimal x86_64 ELF executable: one PT_LOAD segment holding `code` (plus `bss` zero bytes)
/// at physical address `load_addr`, and, when `pvh_entry` is set, a PT_NOTE with a Xen
/// `XEN_ELFNOTE_PHYS32_ENTRY` (type 18) note.
pub struct TestElf {
    pub load_addr: u64,
    pub entry: u64,
    pub code: Vec<u8>,
    pub bss: u64,
    pub pvh_entry: Option<u32>,
}

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const CODE_OFFSET: usize = 0x100;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

impl TestElf {
    /// The file bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let phnum = if self.pvh_entry.is_some() { 2 } else { 1 };
        let note_offset = EHDR_LEN + phnum * PHDR_LEN;
        let mut out = Vec::new();
        // ELF header.
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV ABI
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&self.entry.to_le_bytes());
        out.extend_from_slice(&(EHDR_LEN as u64).to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&(EHDR_LEN as u16).to_le_bytes());
        out.extend_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        out.extend_from_slice(&(phnum as u16).to_le_bytes());
        out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        assert_eq!(out.len(), EHDR_LEN);
        // Program headers.
        let code_len = self.code.len() as u64;
        push_phdr(
            &mut out,
            PT_LOAD,
            CODE_OFFSET as u64,
            self.load_addr,
            code_len,
            code_len + self.bss,
        );
        let note = self.pvh_entry.map(|entry| {
            let mut note = Vec::new();
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
            note
        });
        if let Some(note) = &note {
            push_phdr(
                &mut out,
                PT_NOTE,
                note_offset as u64,
                0,
                note.len() as u64,
                0,
            );
            out.extend_from_slice(note);
        }
        assert!(out.len() <= CODE_OFFSET);
        out.resize(CODE_OFFSET, 0);
        out.extend_from_slice(&self.code);
        out
    }
}

fn push_phdr(out: &mut Vec<u8>, p_type: u32, offset: u64, paddr: u64, filesz: u64, memsz: u64) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&paddr.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
    out.extend_from_slice(&filesz.to_le_bytes());
    out.extend_from_slice(&memsz.to_le_bytes());
    out.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
}

/// A KVM VM with `mem` registered as its memory slots and an in-kernel irqchip (needed for the
/// LAPIC). Panics with a clear message when /dev/kvm is not usable: these tests need it.
pub fn kvm_vm_with(mem: &GuestMemory) -> (kvm_ioctls::Kvm, kvm_ioctls::VmFd) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    for (slot, region) in mem.iter().enumerate() {
        let memory_region = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `mem`, which the caller keeps alive as long as
        // the VM (both are dropped at the end of the test).
        unsafe { vm.set_user_memory_region(memory_region) }.expect("KVM_SET_USER_MEMORY_REGION");
    }
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    (kvm, vm)
}
