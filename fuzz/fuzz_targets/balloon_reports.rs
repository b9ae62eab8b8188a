//! hull-vmm's virtio-balloon device (vmm/src/virtio/balloon/) on guest-built queues: free page
//! reports (any descriptors: readable, empty, unaligned, outside RAM, across the hole, near 2^64,
//! loops, INDIRECT) and chains on the inflate and deflate queues.
//!
//! Properties: no panic; every range handed to the release step is non-empty, page aligned and
//! inside one guest RAM region; chains go back with used length 0, never more than were served.
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use guest::Input;
use hull_vmm::memory::GuestMemory;
use hull_vmm::virtio::balloon::{
    Balloon, Discard, FreeRange, BALLOON_PAGE_SIZE, VIRTIO_BALLOON_F_REPORTING,
};
use hull_vmm::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// Checks each range instead of releasing it (the fuzz guest's RAM is anonymous memory).
struct CheckRange;

impl Discard for CheckRange {
    fn discard(&mut self, _mem: &GuestMemory, range: FreeRange) -> std::io::Result<()> {
        assert!(range.len > 0, "{range:?}");
        assert_eq!(range.gpa % BALLOON_PAGE_SIZE, 0, "{range:?}");
        assert_eq!(range.len % BALLOON_PAGE_SIZE, 0, "{range:?}");
        let end = range.gpa.checked_add(range.len).expect("range wraps");
        assert!(
            guest::RAM
                .iter()
                .any(|&(start, len)| range.gpa >= start && end <= start + len as u64),
            "{range:?} is not inside one RAM region"
        );
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let mut features = VIRTIO_F_VERSION_1;
    if input.bool() {
        features |= 1 << VIRTIO_BALLOON_F_REPORTING;
    }
    let queues: Vec<_> = (0..3u64)
        .map(|i| guest::build_queue(&mem, &mut input, i * 0x1000, i == 2))
        .collect();
    guest::fill_data(&mem, &mut input);

    let mut dev = Balloon::with_discard(Box::new(CheckRange)).expect("balloon");
    dev.set_acked_features(features);
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    if dev.activate(mem.clone(), irq, queues).is_err() {
        return;
    }
    for _ in 0..4 {
        dev.process_queue(usize::from(input.u8() % 4));
    }
    // Chains go back with length 0; only a head index outside the queue (which the driver wrote
    // itself) cannot go back, so the used index never runs ahead of the chains served.
    let stats = dev.stats();
    let served = stats.reports + stats.bad_reports + stats.ignored_chains;
    let mut used_total = 0u64;
    for i in 0..3u64 {
        let used = i * 0x1000 + 0x800;
        let idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
        used_total += u64::from(idx);
        for n in 0..u64::from(idx).min(16) {
            let len: u32 = mem.read_obj(GuestAddress(used + 4 + 8 * n + 4)).unwrap();
            assert_eq!(len, 0, "used length of queue {i} element {n}");
        }
    }
    assert!(used_total <= served, "{used_total} chains returned, {served} served");
});
