use std::path::Path;

use super::*;

fn ready_slot(run_dir: &Path, slot: &str, vcpus: u32, mem_mib: u64) {
    let dir = PoolDirs::new(run_dir).ready.join(slot);
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    inventory::write_info(&dir, "vm", vcpus, mem_mib).unwrap();
}

const DEFAULT: VmSize = VmSize {
    vcpus: 1,
    mem_mib: 256,
};

#[test]
fn claim_takes_a_ready_slot_of_the_size_and_records_it() {
    let run = tempfile::tempdir().unwrap();
    ready_slot(run.path(), "pool-1-1", 2, 512);
    ready_slot(run.path(), "pool-1-2", 1, 256);
    let paths = claim(run.path(), "sb1", DEFAULT).unwrap().unwrap();
    assert_eq!(paths, SandboxPaths::new(run.path(), "sb1"));
    assert!(paths.shared.is_dir());
    assert_eq!(
        std::fs::read_to_string(paths.dir.join(SLOT_FILE)).unwrap(),
        "pool-1-2\n"
    );
    // The other size stays; the claimed slot is gone from the pool.
    assert_eq!(PoolDirs::new(run.path()).ready_slots(), ["pool-1-1"]);
    assert!(claim(run.path(), "sb2", DEFAULT).unwrap().is_none());
    let big = VmSize {
        vcpus: 2,
        mem_mib: 512,
    };
    assert!(claim(run.path(), "sb2", big).unwrap().is_some());
}

#[test]
fn no_pool_or_an_empty_one_claims_nothing() {
    let run = tempfile::tempdir().unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
    std::fs::create_dir_all(PoolDirs::new(run.path()).ready).unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
    // A slot without a recorded size (still being set up) is not taken.
    std::fs::create_dir_all(PoolDirs::new(run.path()).ready.join("pool-1-1")).unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
}

#[test]
fn an_existing_sandbox_directory_is_an_error_and_the_slot_stays() {
    let run = tempfile::tempdir().unwrap();
    ready_slot(run.path(), "pool-1-1", 1, 256);
    std::fs::create_dir_all(run.path().join("sb1")).unwrap();
    let err = claim(run.path(), "sb1", DEFAULT).unwrap_err();
    assert!(err.to_string().contains("pool-1-1"), "{err}");
    assert_eq!(PoolDirs::new(run.path()).ready_slots(), ["pool-1-1"]);
}

#[test]
fn racing_shims_get_each_slot_once() {
    let run = tempfile::tempdir().unwrap();
    for n in 0..4 {
        ready_slot(run.path(), &format!("pool-1-{n}"), 1, 256);
    }
    let claimed: Vec<Option<SandboxPaths>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let run = run.path();
                scope.spawn(move || claim(run, &format!("sb{i}"), DEFAULT).unwrap())
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let got: Vec<&SandboxPaths> = claimed.iter().flatten().collect();
    assert_eq!(got.len(), 4, "{claimed:?}");
    let mut slots: Vec<String> = got
        .iter()
        .map(|p| std::fs::read_to_string(p.dir.join(SLOT_FILE)).unwrap())
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 4);
    assert!(PoolDirs::new(run.path()).ready_slots().is_empty());
}

#[test]
fn pool_directory_is_no_containerd_or_cri_id() {
    // containerd's identifiers start with a letter or digit; CRI's sandbox ids are hex.
    assert!(POOL_DIR.starts_with('.'));
}
