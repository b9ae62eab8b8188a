use super::*;

/// A statistics file laid out as KVM does: header, id string, descriptors, data.
fn stats_file(name_size: usize, stats: &[(&str, u16, u64)]) -> Vec<u8> {
    let id_offset = HEADER_LEN;
    let desc_offset = id_offset + name_size;
    let desc_len = DESC_FIXED_LEN + name_size;
    let data_offset = desc_offset + stats.len() * desc_len;
    let mut buf = Vec::new();
    for v in [
        0u32,
        name_size as u32,
        stats.len() as u32,
        id_offset as u32,
        desc_offset as u32,
        data_offset as u32,
    ] {
        buf.extend_from_slice(&v.to_ne_bytes());
    }
    let mut id = b"kvm-1234".to_vec();
    id.resize(name_size, 0);
    buf.extend_from_slice(&id);
    let mut data = Vec::new();
    for (name, size, value) in stats {
        buf.extend_from_slice(&0u32.to_ne_bytes()); // flags
        buf.extend_from_slice(&0i16.to_ne_bytes()); // exponent
        buf.extend_from_slice(&size.to_ne_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // bucket_size
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        buf.extend_from_slice(&n);
        for k in 0..*size {
            data.extend_from_slice(&(value + u64::from(k)).to_ne_bytes());
        }
    }
    buf.extend_from_slice(&data);
    buf
}

#[test]
fn parses_counters_and_first_histogram_bucket() {
    let buf = stats_file(
        48,
        &[
            ("exits", 1, 42),
            ("halt_poll_hist", 3, 7),
            ("io_exits", 1, 0),
        ],
    );
    let stats = parse_stats(&buf).unwrap();
    let pairs: Vec<_> = stats.iter().map(|s| (s.name.as_str(), s.value)).collect();
    assert_eq!(
        pairs,
        [("exits", 42), ("halt_poll_hist", 7), ("io_exits", 0)]
    );
    assert_eq!(describe_nonzero(&stats), "exits=42 halt_poll_hist=7");
}

#[test]
fn truncated_or_absurd_files_are_errors() {
    let buf = stats_file(48, &[("exits", 1, 42), ("pf_fixed", 1, 9)]);
    for cut in [0, 10, HEADER_LEN + 48 + 20, buf.len() - 1] {
        let err = parse_stats(&buf[..cut]).unwrap_err();
        assert!(
            matches!(err, KvmStatsError::Malformed(_)),
            "cut at {cut}: {err}"
        );
    }
    let mut huge_name = buf.clone();
    huge_name[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(parse_stats(&huge_name).is_err());
    let mut far_data = buf;
    far_data[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(parse_stats(&far_data).is_err());
}

#[test]
fn real_kvm_vm_and_vcpu_have_exit_and_page_counters() {
    let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let vcpu_stats = KvmStatsFile::open(&vcpu).unwrap().read_stats().unwrap();
    let names: Vec<_> = vcpu_stats.iter().map(|s| s.name.as_str()).collect();
    for expected in ["exits", "io_exits", "mmio_exits", "halt_exits", "pf_fixed"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let vm_stats = KvmStatsFile::open(&vm).unwrap().read_stats().unwrap();
    let names: Vec<_> = vm_stats.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"pages_4k"),
        "pages_4k missing from {names:?}"
    );
}
