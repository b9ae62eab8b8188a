//! hull-vmm's virtio-pmem device (vmm/src/virtio/pmem/) on a guest-built request queue: any
//! descriptors (readable or writable in any order, empty, short, outside RAM, across the hole,
//! near 2^64, loops, INDIRECT) and any request bytes.
//!
//! Properties: no panic; never more chains go back than were served; a chain goes back with used
//! length 4 (answered) or 0 (refused), checked where no guest buffer the device writes can
//! cover the used ring (else the device's status bytes, written where the guest asked, stand
//! where lengths were).
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use guest::Input;
use hull_vmm::virtio::pmem::Pmem;
use hull_vmm::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let queue = guest::build_queue(&mem, &mut input, 0, false);
    guest::fill_data(&mem, &mut input);
    let lengths_checkable = !used_ring_writable(&mem, queue.size(), 0x800);

    let mut dev = Pmem::new(0x1_0000_0000, 2 << 20).expect("pmem");
    dev.set_acked_features(VIRTIO_F_VERSION_1);
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    if dev.activate(mem.clone(), irq, vec![queue]).is_err() {
        return;
    }
    for _ in 0..4 {
        dev.process_queue();
    }
    let stats = dev.stats();
    let served = stats.flushes + stats.unknown + stats.bad_chains;
    let used = 0x800u64;
    let idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
    assert!(
        u64::from(idx) <= served,
        "{idx} chains returned, {served} served"
    );
    // The device writes each answer's status where the guest asked: into the used ring too, if
    // a writable buffer covers it, and then the guest's own bytes stand where lengths were.
    if !lengths_checkable {
        return;
    }
    for n in 0..u64::from(idx).min(16) {
        let len: u32 = mem.read_obj(GuestAddress(used + 4 + 8 * n + 4)).unwrap();
        assert!(len == 0 || len == 4, "used length {len} of element {n}");
    }
});

/// Whether the device may write into the used ring at `used` on the guest's behalf: a
/// device-writable descriptor of the table (at 0) covers any of it, or the table holds an
/// INDIRECT descriptor (whose own table, in guest memory, may point anywhere). Read before the
/// device runs: its writes may change the table too.
fn used_ring_writable(mem: &guest::Mem, size: u16, used: u64) -> bool {
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;
    let used_end = used + 4 + 8 * 16 + 2;
    (0..u64::from(size)).any(|i| {
        let addr: u64 = mem.read_obj(GuestAddress(16 * i)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(16 * i + 8)).unwrap();
        let flags: u16 = mem.read_obj(GuestAddress(16 * i + 12)).unwrap();
        flags & INDIRECT != 0
            || (flags & WRITE != 0 && addr < used_end && addr.saturating_add(u64::from(len)) > used)
    })
}
