use super::*;

const MIB: u64 = 1024 * 1024;

fn guest() -> GuestMemory {
    GuestMemory {
        total_bytes: 236 * MIB,
        free_bytes: 200 * MIB,
        available_bytes: 210 * MIB,
        cached_bytes: 8 * MIB,
        shmem_bytes: 6 * MIB,
        anon_bytes: 3 * MIB,
        slab_bytes: 5 * MIB,
        kernel_stack_bytes: MIB / 2,
        page_tables_bytes: MIB / 4,
        percpu_bytes: MIB / 4,
        vmalloc_bytes: 2 * MIB,
        percpu_lists_bytes: MIB,
        ..Default::default()
    }
}

#[test]
fn ram_splits_into_reserved_used_parts_and_free() {
    let split = GuestSplit::of(&guest(), 256);
    assert_eq!(split.ram, 256.0);
    assert_eq!(split.reserved, 20.0);
    assert_eq!(split.shmem, 6.0);
    assert_eq!(split.page_cache, 2.0);
    assert_eq!(split.anon, 3.0);
    assert_eq!(split.slab, 5.0);
    assert_eq!(split.stacks_tables_percpu, 1.0);
    assert_eq!(split.vmalloc, 2.0);
    assert_eq!(split.percpu_lists, 1.0);
    // 236 - 200 free - (6 + 2 + 3 + 5 + 1 + 2 + 1) counted.
    assert_eq!(split.other_kernel, 16.0);
    assert_eq!(split.free, 200.0);
    assert_eq!(split.held(), 56.0);
    let parts = split.reserved
        + split.shmem
        + split.page_cache
        + split.anon
        + split.slab
        + split.stacks_tables_percpu
        + split.vmalloc
        + split.percpu_lists
        + split.other_kernel
        + split.free;
    assert_eq!(parts, split.ram);
}

#[test]
fn figures_that_do_not_add_up_never_go_negative() {
    // A guest claiming more than the VM has, and more shmem than cache.
    let memory = GuestMemory {
        total_bytes: 512 * MIB,
        free_bytes: 600 * MIB,
        cached_bytes: MIB,
        shmem_bytes: 4 * MIB,
        ..Default::default()
    };
    let split = GuestSplit::of(&memory, 256);
    assert_eq!(split.reserved, 0.0);
    assert_eq!(split.page_cache, 0.0);
    assert_eq!(split.other_kernel, 0.0);
}

#[test]
fn rows_carry_one_sample_per_guest_for_every_part() {
    let a = GuestSplit::of(&guest(), 256);
    let mut b = a;
    b.slab = 9.0;
    let rows = rows(&[a, b]);
    assert_eq!(rows.len(), a.parts().len());
    let slab = rows
        .iter()
        .find(|(name, _)| name == "hull guest: slab")
        .unwrap();
    assert_eq!(slab.1, vec![5.0, 9.0]);
    let reserved = &rows[2];
    assert_eq!(
        reserved.0,
        "hull guest: reserved at boot (kernel image, page map)"
    );
    assert_eq!(reserved.1, vec![20.0, 20.0]);
    assert!(
        rows.iter().all(|(name, _)| name.len() <= 60),
        "names fit the table"
    );
    assert!(super::rows(&[]).is_empty());
}

#[test]
fn a_sandbox_without_a_recorded_size_is_an_error_naming_its_directory() {
    let run_dir = tempfile::tempdir().unwrap();
    let err = read(run_dir.path(), "nosuch").unwrap_err();
    assert!(err.contains("no VM size recorded"), "{err}");
    assert!(err.contains("nosuch"), "{err}");
}
