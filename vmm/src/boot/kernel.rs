//! Loading an uncompressed ELF `vmlinux` into guest memory.
//!
//! The ELF headers are checked here first (format, truncation, where the segments land) so that a
//! wrong file gets a clear error; the copy itself and the PVH note lookup are done by
//! `linux_loader::loader::Elf`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64, PT_LOAD, PT_NOTE,
};
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::zero_pages::SkipZeroPages;
use super::{BootError, BootProtocol, LoadedKernel};
use crate::layout::{HIMEM_START, MMIO_GAP_START};
use crate::memory::GuestMemory;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// A PE/COFF ("MZ") header: a bzImage built with the EFI stub.
const MZ_MAGIC: &[u8; 2] = b"MZ";
/// The x86 boot protocol setup header magic, at offset 0x202 of every bzImage.
const BZIMAGE_HDRS_MAGIC: &[u8; 4] = b"HdrS";
const BZIMAGE_HDRS_OFFSET: usize = 0x202;
/// How many leading bytes are enough to recognise the image format.
const PROBE_LEN: usize = BZIMAGE_HDRS_OFFSET + BZIMAGE_HDRS_MAGIC.len();

/// What the first bytes of a kernel image say it is.
#[derive(Debug, PartialEq, Eq)]
enum ImageKind {
    Elf,
    BzImage,
    Unknown,
}

fn classify_image(prefix: &[u8]) -> ImageKind {
    if prefix.starts_with(ELF_MAGIC) {
        ImageKind::Elf
    } else if prefix.starts_with(MZ_MAGIC)
        || prefix.get(BZIMAGE_HDRS_OFFSET..PROBE_LEN) == Some(BZIMAGE_HDRS_MAGIC)
    {
        ImageKind::BzImage
    } else {
        ImageKind::Unknown
    }
}

/// Loads an ELF `vmlinux` at the physical addresses of its segments (all at or above
/// `HIMEM_START` and below the end of low RAM). Picks PVH when the ELF has a
/// `XEN_ELFNOTE_PHYS32_ENTRY` note, the 64-bit boot protocol otherwise. A bzImage is refused with
/// a clear error. `mem` must be fresh guest memory: pages of the image that are all zero are not
/// written (see [`SkipZeroPages`]).
pub fn load_kernel(mem: &GuestMemory, kernel: &mut File) -> Result<LoadedKernel, BootError> {
    let file_size = kernel.metadata().map_err(BootError::KernelRead)?.len();
    let prefix = read_prefix(kernel, PROBE_LEN)?;
    match classify_image(&prefix) {
        ImageKind::Elf => {}
        ImageKind::BzImage => return Err(BootError::BzImageUnsupported),
        ImageKind::Unknown => return Err(BootError::NotElf),
    }
    let ehdr = parse_ehdr(&prefix, file_size)?;
    let phdrs = read_phdrs(kernel, &ehdr, file_size)?;
    let (kernel_start, kernel_end) = check_segments(&phdrs, file_size, low_ram_end(mem))?;

    let mut image = SkipZeroPages::new(&mut *kernel);
    let loaded = Elf::load(mem, None, &mut image, Some(GuestAddress(HIMEM_START)))
        .map_err(BootError::KernelLoad)?;
    let (entry, protocol) = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (addr.0, BootProtocol::Pvh),
        PvhBootCapability::PvhEntryNotPresent | PvhBootCapability::PvhEntryIgnored => {
            (ehdr.e_entry, BootProtocol::Linux64)
        }
    };
    if !(kernel_start..kernel_end).contains(&entry) {
        return Err(BootError::KernelEntryOutside { entry });
    }
    let kernel_end = kernel_end.max(loaded.kernel_end);
    tracing::info!(
        ?protocol,
        entry = format_args!("{entry:#x}"),
        start = format_args!("{kernel_start:#x}"),
        end = format_args!("{kernel_end:#x}"),
        written = image.written(),
        zero_pages_skipped = image.skipped(),
        "kernel loaded"
    );
    Ok(LoadedKernel {
        entry: GuestAddress(entry),
        protocol,
        kernel_end: GuestAddress(kernel_end),
    })
}

/// End of the RAM region that starts at guest address 0 (never beyond the MMIO gap).
fn low_ram_end(mem: &GuestMemory) -> u64 {
    mem.find_region(GuestAddress(0))
        .map_or(0, |r| r.len())
        .min(MMIO_GAP_START)
}

/// Reads up to `len` bytes from the start of the file (fewer if the file is shorter).
fn read_prefix(file: &mut File, len: usize) -> Result<Vec<u8>, BootError> {
    file.seek(SeekFrom::Start(0))
        .map_err(BootError::KernelRead)?;
    let mut prefix = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut prefix)
        .map_err(BootError::KernelRead)?;
    Ok(prefix)
}

fn parse_ehdr(prefix: &[u8], file_size: u64) -> Result<Elf64_Ehdr, BootError> {
    let ehdr_len = std::mem::size_of::<Elf64_Ehdr>();
    let Some(bytes) = prefix.get(..ehdr_len) else {
        return Err(BootError::TruncatedElf {
            what: "ELF header",
            offset: 0,
            len: ehdr_len as u64,
            file_size,
        });
    };
    let mut ehdr = Elf64_Ehdr::default();
    ehdr.as_mut_slice().copy_from_slice(bytes);
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
        return Err(BootError::UnsupportedElf(
            "not a 64-bit ELF (a 64-bit x86_64 vmlinux is needed)",
        ));
    }
    if ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err(BootError::UnsupportedElf("not a little-endian ELF"));
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(BootError::UnsupportedElf("not an x86_64 ELF"));
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Err(BootError::UnsupportedElf(
            "unexpected program header entry size",
        ));
    }
    if ehdr.e_phnum == 0 {
        return Err(BootError::UnsupportedElf("no program headers"));
    }
    if ehdr.e_phoff < ehdr_len as u64 {
        return Err(BootError::UnsupportedElf(
            "program headers overlap the ELF header",
        ));
    }
    Ok(ehdr)
}

/// Reads the program header table (bounded by the file size, so never a huge allocation).
fn read_phdrs(
    file: &mut File,
    ehdr: &Elf64_Ehdr,
    file_size: u64,
) -> Result<Vec<Elf64_Phdr>, BootError> {
    let table_len = u64::from(ehdr.e_phnum) * std::mem::size_of::<Elf64_Phdr>() as u64;
    check_in_file("program header table", ehdr.e_phoff, table_len, file_size)?;
    file.seek(SeekFrom::Start(ehdr.e_phoff))
        .map_err(BootError::KernelRead)?;
    let mut phdrs = vec![Elf64_Phdr::default(); usize::from(ehdr.e_phnum)];
    for phdr in &mut phdrs {
        file.read_exact(phdr.as_mut_slice())
            .map_err(BootError::KernelRead)?;
    }
    Ok(phdrs)
}

/// Checks that every segment's bytes are in the file and every loadable segment lands in
/// `[HIMEM_START, ram_end)`. Returns the lowest start and highest end of the loadable segments.
fn check_segments(
    phdrs: &[Elf64_Phdr],
    file_size: u64,
    ram_end: u64,
) -> Result<(u64, u64), BootError> {
    let mut span: Option<(u64, u64)> = None;
    for phdr in phdrs {
        match phdr.p_type {
            PT_NOTE => check_in_file("note segment", phdr.p_offset, phdr.p_filesz, file_size)?,
            PT_LOAD if phdr.p_memsz > 0 => {
                if phdr.p_filesz > phdr.p_memsz {
                    return Err(BootError::UnsupportedElf(
                        "a loadable segment has more file bytes than memory bytes",
                    ));
                }
                check_in_file("loadable segment", phdr.p_offset, phdr.p_filesz, file_size)?;
                let start = phdr.p_paddr;
                let end = start.saturating_add(phdr.p_memsz);
                if start < HIMEM_START || end > ram_end {
                    return Err(BootError::KernelDoesNotFit {
                        start,
                        end,
                        min: HIMEM_START,
                        max: ram_end,
                    });
                }
                span = Some(match span {
                    None => (start, end),
                    Some((lo, hi)) => (lo.min(start), hi.max(end)),
                });
            }
            _ => {}
        }
    }
    span.ok_or(BootError::UnsupportedElf("no loadable segment"))
}

fn check_in_file(
    what: &'static str,
    offset: u64,
    len: u64,
    file_size: u64,
) -> Result<(), BootError> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(BootError::TruncatedElf {
            what,
            offset,
            len,
            file_size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::{guest_memory, memfd_with, TestElf};
    use vm_memory::Bytes;

    const CODE: &[u8] = &[0xf4, 0x90, 0x90, 0xcc];

    #[test]
    fn loads_a_64bit_elf_at_its_physical_address() {
        let mem = guest_memory(64 << 20);
        let elf = TestElf {
            load_addr: 0x20_0000,
            entry: 0x20_0000,
            code: CODE.to_vec(),
            bss: 0x3000,
            pvh_entry: None,
        };
        let loaded = load_kernel(&mem, &mut memfd_with(&elf.bytes())).unwrap();
        assert_eq!(loaded.protocol, BootProtocol::Linux64);
        assert_eq!(loaded.entry, GuestAddress(0x20_0000));
        assert_eq!(
            loaded.kernel_end,
            GuestAddress(0x20_0000 + CODE.len() as u64 + 0x3000)
        );
        let mut back = [0u8; 4];
        mem.read_slice(&mut back, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&back, CODE);
    }

    #[test]
    fn pvh_note_selects_pvh_and_its_entry() {
        let mem = guest_memory(64 << 20);
        let elf = TestElf {
            load_addr: 0x100_0000,
            entry: 0x100_0000,
            code: CODE.to_vec(),
            bss: 0,
            pvh_entry: Some(0x100_0002),
        };
        let loaded = load_kernel(&mem, &mut memfd_with(&elf.bytes())).unwrap();
        assert_eq!(loaded.protocol, BootProtocol::Pvh);
        assert_eq!(loaded.entry, GuestAddress(0x100_0002));
    }

    #[test]
    fn bzimage_is_refused_clearly() {
        let mem = guest_memory(16 << 20);
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let err = load_kernel(&mem, &mut memfd_with(&image)).unwrap_err();
        assert!(matches!(err, BootError::BzImageUnsupported));
        assert_eq!(
            err.to_string(),
            "kernel image is not an ELF vmlinux (bzImage is not supported, use the uncompressed vmlinux)"
        );
        let mut efi = vec![0u8; 0x100];
        efi[..2].copy_from_slice(b"MZ");
        assert!(matches!(
            load_kernel(&mem, &mut memfd_with(&efi)),
            Err(BootError::BzImageUnsupported)
        ));
    }

    #[test]
    fn random_bytes_and_empty_files_are_not_elf() {
        let mem = guest_memory(16 << 20);
        assert!(matches!(
            load_kernel(&mem, &mut memfd_with(b"#!/bin/sh\n")),
            Err(BootError::NotElf)
        ));
        assert!(matches!(
            load_kernel(&mem, &mut memfd_with(b"")),
            Err(BootError::NotElf)
        ));
    }

    #[test]
    fn truncated_elf_is_reported() {
        let mem = guest_memory(64 << 20);
        let elf = TestElf {
            load_addr: 0x20_0000,
            entry: 0x20_0000,
            code: vec![0x90; 256],
            bss: 0,
            pvh_entry: None,
        };
        let bytes = elf.bytes();
        // Cut inside the segment's bytes.
        let err = load_kernel(&mem, &mut memfd_with(&bytes[..bytes.len() - 10])).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::TruncatedElf {
                    what: "loadable segment",
                    ..
                }
            ),
            "{err}"
        );
        // Cut inside the program header table.
        let err = load_kernel(&mem, &mut memfd_with(&bytes[..70])).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::TruncatedElf {
                    what: "program header table",
                    ..
                }
            ),
            "{err}"
        );
        // Cut inside the ELF header.
        let err = load_kernel(&mem, &mut memfd_with(&bytes[..20])).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::TruncatedElf {
                    what: "ELF header",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_class_or_machine_is_refused() {
        let mem = guest_memory(16 << 20);
        let elf = TestElf {
            load_addr: 0x20_0000,
            entry: 0x20_0000,
            code: CODE.to_vec(),
            bss: 0,
            pvh_entry: None,
        };
        let mut bytes = elf.bytes();
        bytes[EI_CLASS] = 1; // ELFCLASS32
        assert!(matches!(
            load_kernel(&mem, &mut memfd_with(&bytes)),
            Err(BootError::UnsupportedElf(_))
        ));
        let mut bytes = elf.bytes();
        bytes[18] = 40; // e_machine = ARM
        assert!(matches!(
            load_kernel(&mem, &mut memfd_with(&bytes)),
            Err(BootError::UnsupportedElf(_))
        ));
    }

    #[test]
    fn kernel_beyond_ram_or_below_himem_does_not_fit() {
        let mem = guest_memory(16 << 20);
        let elf = TestElf {
            load_addr: 0xf0_0000,
            entry: 0xf0_0000,
            code: CODE.to_vec(),
            bss: 2 << 20,
            pvh_entry: None,
        };
        let err = load_kernel(&mem, &mut memfd_with(&elf.bytes())).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::KernelDoesNotFit {
                    max: 0x100_0000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("kernel does not fit in guest memory"));

        let low = TestElf {
            load_addr: 0x8000,
            entry: 0x8000,
            code: CODE.to_vec(),
            bss: 0,
            pvh_entry: None,
        };
        let err = load_kernel(&mem, &mut memfd_with(&low.bytes())).unwrap_err();
        assert!(
            matches!(err, BootError::KernelDoesNotFit { start: 0x8000, .. }),
            "{err}"
        );
    }

    #[test]
    fn entry_outside_the_segments_is_refused() {
        let mem = guest_memory(64 << 20);
        let elf = TestElf {
            load_addr: 0x20_0000,
            entry: 0x30_0000,
            code: CODE.to_vec(),
            bss: 0,
            pvh_entry: None,
        };
        let err = load_kernel(&mem, &mut memfd_with(&elf.bytes())).unwrap_err();
        assert!(
            matches!(err, BootError::KernelEntryOutside { entry: 0x30_0000 }),
            "{err}"
        );
    }
}
