//! A vCPU thread's stack mapping (`vcpu::VCPU_STACK_SIZE`, as glibc lays it out) is shorter
//! than 2 MiB, so a host with THP `always` cannot back it with a 2 MiB page. One test in its
//! own binary: no thread has exited before it, so glibc maps a fresh stack instead of handing
//! out a cached one of another size.

/// The length of the mapping in /proc/self/maps that holds `address`.
fn mapping_len(address: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start..end).contains(&address).then_some(end - start)
        })
        .expect("a mapping holds the address")
}

#[test]
fn a_vcpu_thread_stack_mapping_cannot_hold_a_huge_page() {
    let stack_len = |size: usize| {
        std::thread::Builder::new()
            .stack_size(size)
            .spawn(|| {
                let local = 0u8;
                mapping_len(std::hint::black_box(&local) as *const u8 as usize)
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let len = stack_len(hull_vmm::vcpu::VCPU_STACK_SIZE);
    assert!(len < 2 << 20, "a vCPU stack mapping of {len} bytes");
    // Rust's default stack, for contrast (its mapping can hold a 2 MiB page). Spawned second:
    // its stack, once cached, must not be the one measured above.
    let default = stack_len(2 << 20);
    assert!(
        default >= 2 << 20,
        "a default stack mapping of {default} bytes"
    );
}
