//! Balloon device tests: a fake driver posts chains in guest RAM that is backed by a real memfd
//! (as in hull-vmm), so a release is checked where it matters: the host pages are gone and the
//! guest reads zeroes.

use std::os::fd::AsRawFd as _;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps as _};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT as _};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::device::{DEFLATE_QUEUE, INFLATE_QUEUE, REPORTING_QUEUE};
use super::*;
use crate::memory::{create_guest_ram, GuestRam};
use crate::virtio::test_driver::{DriverQueue, RawDesc};
use crate::virtio::{ActivateError, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

const MIB: u64 = 1 << 20;
const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;
/// Guest RAM of the tests.
const RAM_MIB: u64 = 32;
/// Where the tests' "free" memory lives: 8..12 MiB.
const FREE_AT: u64 = 8 * MIB;
const FREE_LEN: u64 = 4 * MIB;
const PATTERN: u8 = 0xa5;

struct Harness {
    ram: GuestRam,
    dev: Balloon,
    drivers: Vec<DriverQueue>,
}

/// A memfd-backed guest with `FREE_AT..+FREE_LEN` filled with PATTERN, and an activated balloon
/// whose driver accepted reporting when `reporting`.
fn harness(reporting: bool) -> Harness {
    harness_with(Balloon::new().unwrap(), reporting)
}

fn harness_with(mut dev: Balloon, reporting: bool) -> Harness {
    let ram = create_guest_ram(RAM_MIB).unwrap();
    ram.memory
        .write_slice(&vec![PATTERN; FREE_LEN as usize], GuestAddress(FREE_AT))
        .unwrap();
    // Touch the rings now, so host memory measured later changes only by what is released.
    ram.memory
        .write_slice(&[0u8; 0x3_0000], GuestAddress(0x1_0000))
        .unwrap();
    let drivers: Vec<DriverQueue> = (0..3u64)
        .map(|i| DriverQueue::new(0x1_0000 * (i + 1), 0x10_0000))
        .collect();
    let mut features = VIRTIO_F_VERSION_1;
    if reporting {
        features |= 1 << VIRTIO_BALLOON_F_REPORTING;
    }
    dev.set_acked_features(features);
    let mut queues: Vec<Queue> = drivers.iter().map(DriverQueue::queue).collect();
    if !reporting {
        queues[REPORTING_QUEUE] = Queue::new(128).unwrap();
    }
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    dev.activate(ram.memory.clone(), irq, queues).unwrap();
    Harness { ram, dev, drivers }
}

impl Harness {
    /// Posts raw descriptors on queue `index` and lets the device serve that queue.
    fn post(&mut self, index: usize, descs: &[RawDesc]) {
        self.drivers[index].add_raw(&self.ram.memory, descs);
        self.dev.process_queue(index);
    }

    /// The chain the device returned on queue `index` (its used length), if any.
    fn returned(&mut self, index: usize) -> Option<u32> {
        self.drivers[index]
            .pop_used(&self.ram.memory)
            .map(|(_, len)| len)
    }

    fn byte_at(&self, gpa: u64) -> u8 {
        self.ram.memory.read_obj(GuestAddress(gpa)).unwrap()
    }

    /// Bytes of the memfd that hold host pages.
    fn host_bytes(&self) -> u64 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on an open fd into a zeroed stat buffer.
        assert_eq!(
            unsafe { libc::fstat(self.ram.memfd.as_raw_fd(), &mut st) },
            0
        );
        st.st_blocks as u64 * 512
    }

    fn free_area_untouched(&self) -> bool {
        (FREE_AT..FREE_AT + FREE_LEN)
            .step_by(BALLOON_PAGE_SIZE as usize)
            .all(|gpa| self.byte_at(gpa) == PATTERN)
    }
}

#[test]
fn reported_ranges_are_released_on_the_host_and_read_as_zero() {
    let mut h = harness(true);
    let before = h.host_bytes();
    // Two ranges in one report: 8..10 MiB and 11..12 MiB; 10..11 MiB stays in use.
    h.post(
        REPORTING_QUEUE,
        &[
            (0, FREE_AT, (2 * MIB) as u32, W | N, 1),
            (1, FREE_AT + 3 * MIB, MIB as u32, W, 0),
        ],
    );
    assert_eq!(h.returned(REPORTING_QUEUE), Some(0));
    let after = h.host_bytes();
    assert!(
        before - after >= 3 * MIB,
        "host memory went from {before} to {after} bytes; 3 MiB should have been released"
    );
    for gpa in [
        FREE_AT,
        FREE_AT + 2 * MIB - 1,
        FREE_AT + 3 * MIB,
        FREE_AT + 4 * MIB - 1,
    ] {
        assert_eq!(h.byte_at(gpa), 0, "released byte at {gpa:#x}");
    }
    for gpa in [FREE_AT + 2 * MIB, FREE_AT + 3 * MIB - 1] {
        assert_eq!(h.byte_at(gpa), PATTERN, "byte in use at {gpa:#x}");
    }
    let stats = h.dev.stats();
    assert_eq!((stats.reports, stats.released_bytes), (1, 3 * MIB));
    assert_eq!(stats.bad_reports, 0);
}

#[test]
fn malformed_reports_release_nothing_and_are_returned() {
    let end = RAM_MIB * MIB;
    let page = BALLOON_PAGE_SIZE as u32;
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        ("device-readable", vec![(0, FREE_AT, page, 0, 0)]),
        ("empty", vec![(0, FREE_AT, 0, W, 0)]),
        ("unaligned address", vec![(0, FREE_AT + 512, page, W, 0)]),
        ("unaligned length", vec![(0, FREE_AT, page + 1, W, 0)]),
        ("past the end of RAM", vec![(0, end, page, W, 0)]),
        (
            "across the end of RAM",
            vec![(0, end - u64::from(page), 2 * page, W, 0)],
        ),
        ("near 2^64", vec![(0, u64::MAX - 0xfff, page, W, 0)]),
        ("length near 4 GiB", vec![(0, FREE_AT, !0xfff_u32, W, 0)]),
        // A good first range must not be released when a later one is bad.
        (
            "good then bad",
            vec![(0, FREE_AT, page, W | N, 1), (1, end, page, W, 0)],
        ),
    ];
    for (what, descs) in cases {
        let mut h = harness(true);
        h.post(REPORTING_QUEUE, &descs);
        assert_eq!(
            h.returned(REPORTING_QUEUE),
            Some(0),
            "{what}: chain returned"
        );
        assert!(h.free_area_untouched(), "{what}: nothing released");
        let stats = h.dev.stats();
        assert_eq!((stats.bad_reports, stats.released_bytes), (1, 0), "{what}");
    }
}

#[test]
fn a_failed_release_is_counted_and_the_chain_still_returned() {
    struct Refuse;
    impl Discard for Refuse {
        fn discard(&mut self, _: &crate::memory::GuestMemory, _: FreeRange) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
    }
    let mut h = harness_with(Balloon::with_discard(Box::new(Refuse)).unwrap(), true);
    h.post(REPORTING_QUEUE, &[(0, FREE_AT, MIB as u32, W, 0)]);
    assert_eq!(h.returned(REPORTING_QUEUE), Some(0));
    assert_eq!(h.dev.stats().bad_reports, 1);
    assert!(h.free_area_untouched());
}

#[test]
fn inflate_and_deflate_chains_are_returned_untouched() {
    let mut h = harness(true);
    // An inflate chain names 4 KiB page frame numbers (le32) in a device-readable buffer.
    let pfns: Vec<u8> = (0..16u32)
        .flat_map(|i| ((FREE_AT >> 12) as u32 + i).to_le_bytes())
        .collect();
    h.ram
        .memory
        .write_slice(&pfns, GuestAddress(0x20_0000))
        .unwrap();
    for index in [INFLATE_QUEUE, DEFLATE_QUEUE] {
        h.post(index, &[(0, 0x20_0000, pfns.len() as u32, 0, 0)]);
        assert_eq!(h.returned(index), Some(0));
    }
    assert!(h.free_area_untouched());
    assert_eq!(h.dev.stats().ignored_chains, 2);
}

#[test]
fn config_space_asks_for_no_pages_and_keeps_what_the_driver_wrote() {
    let mut dev = Balloon::new().unwrap();
    let mut config = [0xffu8; 8];
    dev.read_config(0, &mut config);
    assert_eq!(config, [0; 8]);
    dev.write_config(4, &7u32.to_le_bytes());
    // num_pages is not writable, and writes of other sizes are ignored.
    dev.write_config(0, &9u32.to_le_bytes());
    dev.write_config(4, &[1, 2]);
    dev.read_config(0, &mut config);
    assert_eq!(config, [0, 0, 0, 0, 7, 0, 0, 0]);
    let mut past = [0xffu8; 4];
    dev.read_config(u64::MAX - 1, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn reporting_queue_is_needed_only_when_negotiated() {
    // Declined: two queues suffice and the third is never served.
    let mut h = harness(false);
    h.drivers[REPORTING_QUEUE].add_raw(&h.ram.memory, &[(0, FREE_AT, MIB as u32, W, 0)]);
    h.dev.process_queue(REPORTING_QUEUE);
    assert_eq!(h.returned(REPORTING_QUEUE), None);
    assert!(h.free_area_untouched());

    // Accepted but the queue not set up: activation fails with the queue named.
    let ram = create_guest_ram(RAM_MIB).unwrap();
    let mut dev = Balloon::new().unwrap();
    dev.set_acked_features(VIRTIO_F_VERSION_1 | 1 << VIRTIO_BALLOON_F_REPORTING);
    let d = DriverQueue::new(0x1_0000, 0x10_0000);
    let queues = vec![d.queue(), d.queue(), Queue::new(128).unwrap()];
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let err = dev.activate(ram.memory.clone(), irq, queues).unwrap_err();
    assert!(
        matches!(err, ActivateError::BadQueue { index: 2, .. }),
        "{err}"
    );
}

#[test]
fn kicks_are_served_by_the_event_loop() {
    let h = harness(true);
    let Harness {
        ram,
        dev,
        mut drivers,
    } = h;
    let dev = std::sync::Arc::new(std::sync::Mutex::new(dev));
    let mut manager: EventManager<std::sync::Arc<std::sync::Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    manager.add_subscriber(dev.clone());
    drivers[REPORTING_QUEUE].add_raw(&ram.memory, &[(0, FREE_AT, MIB as u32, W, 0)]);
    dev.lock().unwrap().queue_events()[REPORTING_QUEUE]
        .write(1)
        .unwrap();
    // The activation's own wake-ups and the kick: a few rounds at most.
    for _ in 0..4 {
        manager.run_with_timeout(100).unwrap();
        if dev.lock().unwrap().stats().reports == 1 {
            break;
        }
    }
    assert_eq!(dev.lock().unwrap().stats().reports, 1);
    assert_eq!(
        drivers[REPORTING_QUEUE].pop_used(&ram.memory).map(|u| u.1),
        Some(0)
    );
    let zero: u8 = ram.memory.read_obj(GuestAddress(FREE_AT)).unwrap();
    assert_eq!(zero, 0);
}
