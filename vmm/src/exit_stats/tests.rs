use super::*;

#[test]
fn counts_by_kind_and_place() {
    let mut s = ExitStats::default();
    for _ in 0..3 {
        s.record(ExitKind::IoOut, 0x3f8);
    }
    s.record(ExitKind::IoIn, 0x3fd);
    s.record(ExitKind::MmioWrite, 0xd000_0000);
    s.record(ExitKind::Interrupted, 0);
    assert_eq!(s.total(), 6);
    assert_eq!(s.count(ExitKind::IoOut), 3);
    assert_eq!(s.count(ExitKind::Other), 0);
    assert_eq!(
        s.describe(2),
        "total=6 io_in=1 io_out=3 mmio_write=1 interrupted=1; top: io_out@0x3f8=3 io_in@0x3fd=1"
    );
}

#[test]
fn merge_adds_counts_of_other_vcpus() {
    let mut a = ExitStats::default();
    a.record(ExitKind::IoOut, 0x3f8);
    let mut b = ExitStats::default();
    b.record(ExitKind::IoOut, 0x3f8);
    b.record(ExitKind::MmioRead, 0x1000);
    b.record(ExitKind::SystemEvent, 0);
    a.merge(&b);
    assert_eq!(a.total(), 4);
    assert_eq!(
        a.describe(10),
        "total=4 io_out=2 mmio_read=1 system_event=1; top: io_out@0x3f8=2 mmio_read@0x1000=1"
    );
}

#[test]
fn no_exits_describe_as_zero() {
    assert_eq!(ExitStats::default().describe(5), "total=0");
}
