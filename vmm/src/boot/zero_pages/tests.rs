use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::*;
use crate::boot::test_util::guest_memory;
use crate::memory::GuestMemory;

const GUEST_BASE: u64 = 0x10_0000;

/// Whether the host page behind guest address `addr` is resident (`mincore`).
fn resident(mem: &GuestMemory, addr: u64) -> bool {
    let host = mem.get_host_address(GuestAddress(addr)).unwrap() as usize;
    let page = host / PAGE_SIZE * PAGE_SIZE;
    let mut vec = [0u8; 1];
    // SAFETY: `page` is the start of a page inside the test's guest memory mapping and `vec`
    // has room for the one page asked about.
    let rc = unsafe { libc::mincore(page as *mut libc::c_void, PAGE_SIZE, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec[0] & 1 == 1
}

/// Three pages: data, zeros, then zeros with one byte set in the middle.
fn image() -> Vec<u8> {
    let mut bytes = vec![0u8; 3 * PAGE_SIZE];
    bytes[..PAGE_SIZE].fill(0xab);
    bytes[2 * PAGE_SIZE + 1000] = 7;
    bytes
}

#[test]
fn pieces_end_at_host_page_boundaries() {
    let pieces: Vec<_> = page_pieces(4000, 10_000).collect();
    assert_eq!(pieces, [(0, 96), (96, 4192), (4192, 8288), (8288, 10_000)]);
    let aligned: Vec<_> = page_pieces(8192, 8192).collect();
    assert_eq!(aligned, [(0, 4096), (4096, 8192)]);
    assert_eq!(page_pieces(0, 0).count(), 0);
}

#[test]
fn zero_is_found_in_blocks_and_in_the_remainder() {
    assert!(is_all_zero(&[]));
    assert!(is_all_zero(&[0; 4096]));
    assert!(is_all_zero(&[0; 70]));
    for at in [0, 63, 64, 4095] {
        let mut bytes = [0u8; 4096];
        bytes[at] = 1;
        assert!(!is_all_zero(&bytes), "byte {at} set");
    }
    let mut tail = [0u8; 70];
    tail[69] = 0x80;
    assert!(!is_all_zero(&tail));
}

#[test]
fn copies_the_image_and_leaves_its_zero_pages_unwritten() {
    let mem = guest_memory(16 << 20);
    let bytes = image();
    let mut reader = SkipZeroPages::new(&bytes[..]);
    mem.read_exact_volatile_from(GuestAddress(GUEST_BASE), &mut reader, bytes.len())
        .unwrap();

    assert_eq!(reader.written() + reader.skipped(), bytes.len() as u64);
    assert_eq!(reader.written(), 2 * PAGE_SIZE as u64);
    assert_eq!(reader.skipped(), PAGE_SIZE as u64);
    // Before reading the copy back (a read maps pages too).
    assert!(resident(&mem, GUEST_BASE));
    assert!(
        !resident(&mem, GUEST_BASE + PAGE_SIZE as u64),
        "the zero page was written"
    );
    assert!(resident(&mem, GUEST_BASE + 2 * PAGE_SIZE as u64));

    let mut copy = vec![0xffu8; bytes.len()];
    mem.read_slice(&mut copy, GuestAddress(GUEST_BASE)).unwrap();
    assert_eq!(copy, bytes);
}

#[test]
fn an_unaligned_destination_gets_every_byte() {
    let mem = guest_memory(16 << 20);
    let mut bytes = image();
    bytes.extend_from_slice(&[0, 0, 5, 0, 9]);
    let addr = GuestAddress(GUEST_BASE + 100);
    let mut reader = SkipZeroPages::new(&bytes[..]);
    mem.read_exact_volatile_from(addr, &mut reader, bytes.len())
        .unwrap();

    let mut copy = vec![0xffu8; bytes.len()];
    mem.read_slice(&mut copy, addr).unwrap();
    assert_eq!(copy, bytes);
    assert_eq!(reader.written() + reader.skipped(), bytes.len() as u64);
}

#[test]
fn reads_larger_than_its_buffer_are_copied_in_full() {
    let mem = guest_memory(16 << 20);
    let bytes: Vec<u8> = (0..BUFFER_LEN * 2 + 123).map(|i| (i % 251) as u8).collect();
    let mut reader = SkipZeroPages::new(&bytes[..]);
    mem.read_exact_volatile_from(GuestAddress(GUEST_BASE), &mut reader, bytes.len())
        .unwrap();

    let mut copy = vec![0u8; bytes.len()];
    mem.read_slice(&mut copy, GuestAddress(GUEST_BASE)).unwrap();
    assert_eq!(copy, bytes);
    assert_eq!(reader.skipped(), 0);
}

#[test]
fn a_short_image_is_an_error_not_a_partial_copy_reported_as_done() {
    let mem = guest_memory(16 << 20);
    let bytes = image();
    let mut reader = SkipZeroPages::new(&bytes[..]);
    let result =
        mem.read_exact_volatile_from(GuestAddress(GUEST_BASE), &mut reader, bytes.len() + 1);
    assert!(result.is_err());
}
