//! The container's root file system as the shared directory: what a container writes is in the
//! directory on this side, and what changes on this side (new, changed, removed files) is what the
//! container sees. With a local agent both sides are one file system; in the lab the agent runs in
//! the microVM and the directory reaches it through virtio-fs (virtiofsd), which is what this
//! checks there. Needs root.

mod common;

use std::path::PathBuf;

use std::time::Duration;

use common::busybox::{create, remove, spec, start, wait_within, BusyboxAgent};
use hull_proto::agent_ttrpc::AgentServiceClient;

/// Runs `script` in a fresh container; returns its exit status and output.
async fn run(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    script: &str,
) -> (i32, String) {
    run_within(c, agent, id, script, Duration::from_secs(30)).await
}

/// [`run`] allowing the script `deadline` to finish.
async fn run_within(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    script: &str,
    deadline: Duration,
) -> (i32, String) {
    let out = create(c, agent, id, &spec(&["sh", "-c", script])).await;
    start(c, id).await;
    let status = wait_within(c, id, "", deadline).await;
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    remove(c, id).await;
    (status, text)
}

/// Waits in the container (up to 10 s) until `condition` holds: virtio-fs may cache attributes
/// and directory entries for a moment, as NFS does.
fn until(condition: &str, then: &str) -> String {
    format!(
        "i=0; until {condition}; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done; {then}"
    )
}

fn rootfs(agent: &BusyboxAgent) -> PathBuf {
    agent.shared_dir().join("c/rootfs")
}

/// 4 MiB of varied bytes (xorshift), so a wrong offset or a lost page changes the content.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn container_writes_appear_on_this_side() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;
    let target = rootfs(&agent).join("sfs-written-in-container");
    let _ = std::fs::remove_file(&target);
    let (status, out) = run(
        &c,
        &agent,
        "sfs-w",
        "echo written-in-the-container > /sfs-written-in-container && sync && echo done",
    )
    .await;
    assert_eq!((status, out.as_str()), (0, "done\n"));
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "written-in-the-container\n"
    );
    std::fs::remove_file(&target).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn changes_on_this_side_are_seen_in_the_container() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;
    let file = rootfs(&agent).join("sfs-from-outside");
    std::fs::write(&file, "first\n").unwrap();
    let (status, out) = run(&c, &agent, "sfs-r1", "cat /sfs-from-outside").await;
    assert_eq!((status, out.as_str()), (0, "first\n"));

    // Changed in place, with a different length.
    std::fs::write(&file, "second, longer\n").unwrap();
    let script = until(
        "[ \"$(cat /sfs-from-outside)\" = 'second, longer' ]",
        "cat /sfs-from-outside",
    );
    let (status, out) = run(&c, &agent, "sfs-r2", &script).await;
    assert_eq!((status, out.as_str()), (0, "second, longer\n"));

    std::fs::remove_file(&file).unwrap();
    let script = until(
        "[ ! -e /sfs-from-outside ]",
        "[ -e /sfs-from-outside ] && echo still-there || echo gone",
    );
    let (status, out) = run(&c, &agent, "sfs-r3", &script).await;
    assert_eq!((status, out.as_str()), (0, "gone\n"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_file_is_copied_through_the_container_intact() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;
    let original = pattern(4 * 1024 * 1024);
    let source = rootfs(&agent).join("sfs-big-in");
    let copy = rootfs(&agent).join("sfs-big-out");
    let _ = std::fs::remove_file(&copy);
    std::fs::write(&source, &original).unwrap();
    // The container reads the file and writes a copy: both directions through the share.
    let (status, out) = run(
        &c,
        &agent,
        "sfs-big",
        "cat /sfs-big-in > /sfs-big-out && sync && wc -c < /sfs-big-out",
    )
    .await;
    assert_eq!(status, 0, "{out}");
    assert_eq!(out.trim(), original.len().to_string());
    let copied = std::fs::read(&copy).unwrap();
    assert!(copied == original, "the copy differs from the original");
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&copy).unwrap();
}

/// Prints fsbench's figures measured in a container, on the shared root file system (issue 6;
/// the lab compares them with the same program run on the directory behind the share). Needs
/// `fsbench` (tests/lab/fsbench.c, static) at the root of the rootfs; its arguments come from
/// `HULL_FSBENCH_ARGS` (default: `--mib 64 --files 10000`).
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn bench_fsbench_in_a_container() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    if !rootfs(&agent).join("fsbench").is_file() {
        println!(
            "SKIPPED: no /fsbench in the rootfs (copy a static build of tests/lab/fsbench.c there)"
        );
        return;
    }
    let args = std::env::var("HULL_FSBENCH_ARGS").unwrap_or("--mib 64 --files 10000".into());
    let c = agent.client().await;
    // Nested and emulated in the lab: give it time.
    let script = format!("/fsbench / {args}");
    let (status, out) =
        run_within(&c, &agent, "sfs-bench", &script, Duration::from_secs(600)).await;
    assert_eq!(status, 0, "{out}");
    assert!(out.starts_with("FSBENCH "), "{out}");
    println!("{}", out.trim());
}
