//! hull-vmm's virtio-pmem device (vmm/src/virtio/pmem/) on a guest-built request queue: any
//! descriptors (readable or writable in any order, empty, short, outside RAM, across the hole,
//! near 2^64, loops, INDIRECT) and any request bytes.
//!
//! Properties: no panic; a chain goes back with used length 4 (answered) or 0 (refused); never
//! more chains go back than were served.
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use guest::Input;
use hull_vmm::virtio::pmem::Pmem;
use hull_vmm::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let queue = guest::build_queue(&mem, &mut input, 0, false);
    guest::fill_data(&mem, &mut input);

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
    for n in 0..u64::from(idx).min(16) {
        let len: u32 = mem.read_obj(GuestAddress(used + 4 + 8 * n + 4)).unwrap();
        assert!(len == 0 || len == 4, "used length {len} of element {n}");
    }
});
