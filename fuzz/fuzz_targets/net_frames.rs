//! hull-vmm's virtio-net frame handling (vmm/src/virtio/net/frame.rs) on guest-built queues:
//! tx chains gathered into one frame and their header checked against the negotiated offloads,
//! rx frames scattered over one or more guest rx chains (with and without mergeable buffers).
//!
//! Properties: no panic; an accepted tx frame holds a header and an Ethernet header and at most
//! MAX_BUFFER_LEN bytes; a delivered rx frame used as many chains as it reports (and says so
//! in num_buffers); with no buffers, leaves the avail position where it was.
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use guest::Input;
use hull_vmm::virtio::net::frame::{
    check_tx_header, deliver_rx, gather_tx, has_available, RxOutcome, ETH_HLEN, MAX_BUFFER_LEN,
    VNET_HDR_LEN,
};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let acked = input.u64();
    let mergeable = input.bool();
    let mut tx = guest::build_queue(&mem, &mut input, 0x1000, false);
    let mut rx = guest::build_queue(&mem, &mut input, 0x0, true);
    guest::fill_data(&mem, &mut input);

    // tx: every available chain, as the device's run_tx does.
    let mut buf = Vec::with_capacity(MAX_BUFFER_LEN);
    let mut popped = 0;
    while let Some(chain) = tx.pop_descriptor_chain(&mem) {
        let head = chain.head_index();
        let checked = gather_tx(&mem, chain, &mut buf).and_then(|()| check_tx_header(&buf, acked));
        if checked.is_ok() {
            assert!(buf.len() >= VNET_HDR_LEN + ETH_HLEN && buf.len() <= MAX_BUFFER_LEN);
        }
        assert!(buf.capacity() <= 2 * MAX_BUFFER_LEN);
        let _ = tx.add_used(&mem, head, 0);
        popped += 1;
        if popped >= 64 {
            break;
        }
    }

    // rx: frames of input-chosen sizes until the guest runs out of buffers.
    for _ in 0..8 {
        let has = has_available(&rx, &mem);
        let len = match input.u8() % 4 {
            0 => MAX_BUFFER_LEN,
            1 => VNET_HDR_LEN + ETH_HLEN,
            _ => (VNET_HDR_LEN + ETH_HLEN + usize::from(input.u16())).min(MAX_BUFFER_LEN),
        };
        let mut frame = vec![input.u8(); len];
        let (avail_before, used_before) = (rx.next_avail(), rx.next_used());
        match deliver_rx(&mut rx, &mem, &mut frame, mergeable) {
            RxOutcome::Delivered(n) => {
                assert!(has);
                assert!(n >= 1 && (mergeable || n == 1));
                assert_eq!(rx.next_used().wrapping_sub(used_before), n);
                assert_eq!(u16::from_le_bytes([frame[10], frame[11]]), n);
            }
            RxOutcome::Dropped(_) => {}
            RxOutcome::NoBuffers => {
                assert_eq!(rx.next_avail(), avail_before);
                assert_eq!(rx.next_used(), used_before);
                break;
            }
        }
        if input.is_empty() {
            break;
        }
    }
});
