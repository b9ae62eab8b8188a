//! virtio-pmem tests: requests posted by a fake driver in test guest memory, and the image
//! mapping checked against a real file (private: writes never reach it).

use std::io::Write as _;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::device::RequestError;
use super::*;
use crate::virtio::test_driver::{guest_memory, DriverQueue, Mem, RawDesc};
use crate::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;

struct Harness {
    mem: Mem,
    dev: Pmem,
    driver: DriverQueue,
    irq: IrqTrigger,
}

fn harness() -> Harness {
    let mem = guest_memory();
    let driver = DriverQueue::new(0x1_0000, 0x10_0000);
    let mut dev = Pmem::new(0x1_0000_0000, 8 << 20).unwrap();
    dev.set_acked_features(VIRTIO_F_VERSION_1);
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    dev.activate(mem.clone(), irq.clone(), vec![driver.queue()])
        .unwrap();
    Harness {
        mem,
        dev,
        driver,
        irq,
    }
}

impl Harness {
    /// Posts a request of `kind` with a 4-byte response buffer; returns (used length, status).
    fn request(&mut self, kind: u32) -> (u32, u32) {
        let idxs = self.driver.add(
            &self.mem,
            &[(4, false, &kind.to_le_bytes()), (4, true, &[0xff; 4])],
        );
        self.dev.process_queue();
        let (_, len) = self.driver.pop_used(&self.mem).expect("request returned");
        let status = self.driver.read_buf(&self.mem, idxs[1], 4);
        (len, u32::from_le_bytes(status.try_into().unwrap()))
    }

    fn mem_write_u32(&self, at: u64, value: u32) {
        use vm_memory::{Bytes, GuestAddress};
        self.mem.write_obj(value.to_le(), GuestAddress(at)).unwrap();
    }

    fn post_raw(&mut self, descs: &[RawDesc]) -> u32 {
        self.driver.add_raw(&self.mem, descs);
        self.dev.process_queue();
        self.driver.pop_used(&self.mem).expect("chain returned").1
    }
}

#[test]
fn config_space_is_start_then_size() {
    let h = harness();
    let mut start = [0u8; 8];
    let mut size = [0u8; 8];
    h.dev.read_config(0, &mut start);
    h.dev.read_config(8, &mut size);
    assert_eq!(u64::from_le_bytes(start), 0x1_0000_0000);
    assert_eq!(u64::from_le_bytes(size), 8 << 20);
    // Byte reads, and reads past the end read zero.
    let mut byte = [0u8; 1];
    h.dev.read_config(12, &mut byte);
    assert_eq!(byte[0], 0);
    h.dev.read_config(4, &mut byte);
    assert_eq!(byte[0], 1);
    let mut past = [0xffu8; 4];
    h.dev.read_config(16, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn config_writes_change_nothing() {
    let mut h = harness();
    h.dev.write_config(0, &[0u8; 8]);
    let mut start = [0u8; 8];
    h.dev.read_config(0, &mut start);
    assert_eq!(u64::from_le_bytes(start), 0x1_0000_0000);
}

#[test]
fn flush_is_answered_ok_with_an_interrupt() {
    let mut h = harness();
    assert_eq!(
        h.request(VIRTIO_PMEM_REQ_TYPE_FLUSH),
        (4, VIRTIO_PMEM_RESP_TYPE_OK)
    );
    assert_eq!(
        h.irq.status() & crate::virtio::INT_VRING,
        crate::virtio::INT_VRING
    );
    assert_eq!(h.dev.stats().flushes, 1);
}

#[test]
fn unknown_request_is_answered_eio() {
    let mut h = harness();
    assert_eq!(h.request(7), (4, VIRTIO_PMEM_RESP_TYPE_EIO));
    assert_eq!(h.dev.stats().unknown, 1);
}

#[test]
fn malformed_chains_come_back_empty_and_the_queue_keeps_working() {
    let mut h = harness();
    let buf = h.driver.buf_addr(0);
    // A lone request with no response buffer.
    assert_eq!(h.post_raw(&[(0, buf, 4, 0, 0)]), 0);
    // The response first (device-writable where the request should be).
    assert_eq!(
        h.post_raw(&[(1, buf, 4, W | N, 2), (2, buf + 8, 4, W, 0)]),
        0
    );
    // A request shorter than 4 bytes.
    assert_eq!(h.post_raw(&[(3, buf, 2, N, 4), (4, buf + 8, 4, W, 0)]), 0);
    // A request outside guest memory.
    assert_eq!(
        h.post_raw(&[(5, 1 << 40, 4, N, 6), (6, buf + 8, 4, W, 0)]),
        0
    );
    // A response outside guest memory.
    h.mem_write_u32(buf, VIRTIO_PMEM_REQ_TYPE_FLUSH);
    assert_eq!(h.post_raw(&[(7, buf, 4, N, 8), (8, 1 << 40, 4, W, 0)]), 0);
    assert_eq!(h.dev.stats().bad_chains, 5);
    assert_eq!(
        h.request(VIRTIO_PMEM_REQ_TYPE_FLUSH),
        (4, VIRTIO_PMEM_RESP_TYPE_OK)
    );
}

#[test]
fn serve_request_names_what_is_missing() {
    let h = harness();
    let mut driver = DriverQueue::new(0x4_0000, 0x10_0000);
    let mut queue: Queue = driver.queue();
    let buf = driver.buf_addr(0);
    driver.add_raw(&h.mem, &[(0, buf, 4, 0, 0)]);
    let chain = crate::virtio::pop_chain(&mut queue, &h.mem)
        .unwrap()
        .unwrap();
    assert_eq!(
        device::serve_request(&h.mem, chain),
        Err(RequestError::NoResponse)
    );
}

#[test]
fn a_device_not_activated_ignores_kicks() {
    let mut dev = Pmem::new(0, PMEM_ALIGN).unwrap();
    dev.process_queue();
    assert_eq!(dev.stats(), PmemStats::default());
}

fn image_file(len: u64, fill: u8) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&vec![fill; len as usize]).unwrap();
    f.flush().unwrap();
    f
}

#[test]
fn image_is_mapped_private_and_writes_never_reach_the_file() {
    let f = image_file(PMEM_ALIGN, 0x5a);
    let image = PmemImage::open(f.path()).unwrap();
    assert_eq!(image.len(), PMEM_ALIGN);
    let at = image.host_addr() as *mut u8;
    // SAFETY: the mapping is PMEM_ALIGN bytes, readable and writable, owned by `image`.
    unsafe {
        assert_eq!(*at.add(4096), 0x5a);
        *at.add(4096) = 0x00;
        assert_eq!(*at.add(4096), 0x00);
    }
    drop(image);
    let on_disk = std::fs::read(f.path()).unwrap();
    assert!(
        on_disk.iter().all(|&b| b == 0x5a),
        "the guest's write reached the file"
    );
}

#[test]
fn image_size_must_be_a_nonzero_multiple_of_2_mib() {
    for len in [0, 4096, PMEM_ALIGN + 4096] {
        let f = image_file(len, 0);
        let err = PmemImage::open(f.path()).err().expect("refused");
        assert!(
            matches!(err, PmemImageError::Size { len: l, .. } if l == len),
            "{err}"
        );
        assert!(err.to_string().contains("multiple of 2 MiB"), "{err}");
    }
}

#[test]
fn image_errors_name_the_file() {
    let missing = PmemImage::open(std::path::Path::new("/nonexistent/hull.img"))
        .err()
        .unwrap();
    assert!(
        missing.to_string().contains("/nonexistent/hull.img"),
        "{missing}"
    );
    let dir = tempfile::tempdir().unwrap();
    let not_file = PmemImage::open(dir.path()).err().unwrap();
    assert!(
        matches!(not_file, PmemImageError::NotAFile { .. }),
        "{not_file}"
    );
}

#[test]
fn window_lies_above_ram_and_4_gib_on_a_1_gib_boundary() {
    use crate::layout::pmem_window_start;
    assert_eq!(pmem_window_start(256 << 20), 0x1_0000_0000);
    assert_eq!(pmem_window_start(0xc000_0000), 0x1_0000_0000);
    // 4 GiB of RAM: 3 GiB below the gap, 1 GiB above 4 GiB, ending at 5 GiB.
    assert_eq!(pmem_window_start(0x1_4000_0000), 0x1_4000_0000);
    assert_eq!(pmem_window_start(0x1_4000_1000), 0x1_8000_0000);
}
