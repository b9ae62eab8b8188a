use std::path::Path;

use super::*;
use crate::config::Config;

fn ready_slot(run_dir: &Path, slot: &str, profile: &str) {
    let dir = PoolDirs::new(run_dir).ready.join(slot);
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    std::fs::write(dir.join(PROFILE_FILE), profile).unwrap();
}

const DEFAULT: &str = "size 1 vcpus 256 MiB\n...";
const BIG: &str = "size 2 vcpus 512 MiB\n...";

#[test]
fn claim_takes_a_ready_slot_of_the_profile_and_records_it() {
    let run = tempfile::tempdir().unwrap();
    ready_slot(run.path(), "pool-1-1", BIG);
    ready_slot(run.path(), "pool-1-2", DEFAULT);
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
    assert!(claim(run.path(), "sb2", BIG).unwrap().is_some());
}

#[test]
fn no_pool_or_an_empty_one_claims_nothing() {
    let run = tempfile::tempdir().unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
    std::fs::create_dir_all(PoolDirs::new(run.path()).ready).unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
    // A slot without a recorded profile (still being set up) is not taken.
    std::fs::create_dir_all(PoolDirs::new(run.path()).ready.join("pool-1-1")).unwrap();
    assert!(claim(run.path(), "sb1", DEFAULT).unwrap().is_none());
}

#[test]
fn an_existing_sandbox_directory_is_an_error_and_the_slot_stays() {
    let run = tempfile::tempdir().unwrap();
    ready_slot(run.path(), "pool-1-1", DEFAULT);
    std::fs::create_dir_all(run.path().join("sb1")).unwrap();
    let err = claim(run.path(), "sb1", DEFAULT).unwrap_err();
    assert!(err.to_string().contains("pool-1-1"), "{err}");
    assert_eq!(PoolDirs::new(run.path()).ready_slots(), ["pool-1-1"]);
}

#[test]
fn racing_shims_get_each_slot_once() {
    let run = tempfile::tempdir().unwrap();
    for n in 0..4 {
        ready_slot(run.path(), &format!("pool-1-{n}"), DEFAULT);
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
fn the_boot_profile_changes_with_what_the_boot_takes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel one").unwrap();
    let mut config = Config {
        kernel: kernel.clone(),
        ..Config::default()
    };
    let size = VmSize {
        vcpus: 1,
        mem_mib: 256,
    };
    let base = boot_profile(&config, size);
    assert_eq!(base, boot_profile(&config, size), "deterministic");
    assert!(base.starts_with("size 1 vcpus 256 MiB\n"), "{base}");
    let bigger = VmSize {
        vcpus: 1,
        mem_mib: 512,
    };
    assert_ne!(base, boot_profile(&config, bigger));
    config.kernel_params = "mitigations=auto".into();
    assert_ne!(base, boot_profile(&config, size));
    config.kernel_params.clear();
    config.jail_uid = 1000;
    assert_ne!(base, boot_profile(&config, size));
    config.jail_uid = Config::default().jail_uid;
    assert_eq!(base, boot_profile(&config, size));
    // A rebuilt kernel in the same place is another kernel.
    std::fs::write(&kernel, b"kernel number two").unwrap();
    assert_ne!(base, boot_profile(&config, size));
}

#[test]
fn the_pool_tap_is_one_the_network_clean_up_knows_as_ours() {
    assert!(POOL_TAP.starts_with(crate::network::TAP_PREFIX));
}
