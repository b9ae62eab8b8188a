//! DestroySandbox on the host: running, paused and created containers and a running exec are
//! killed and reaped, their cgroups and the mounts below their rootfs are gone when the reply
//! arrives, and the agent keeps serving. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::busybox::{create, ctx, exec, spec, start, wait, BusyboxAgent};
use hull_proto::agent::*;
use ttrpc::Code;

/// A tmpfs mounted below the container rootfs in the agent's mount namespace (the test and the
/// agent share it); detached on drop if the agent did not.
struct LeakedMount(PathBuf);

impl Drop for LeakedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn is_mounted(point: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_sandbox_kills_reaps_and_cleans_up_everything() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;

    let running_out = create(&c, &agent, "running", &spec(&["sleep", "1000"])).await;
    let running = start(&c, "running").await;
    let (exec_pid, exec_out) = exec(&c, &agent, "running", "e1", &["sleep", "1000"]).await;
    let _paused_out = create(&c, &agent, "paused", &spec(&["sleep", "1000"])).await;
    let paused = start(&c, "paused").await;
    c.pause_container(
        ctx(),
        &PauseContainerRequest {
            container_id: "paused".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let created_out = create(&c, &agent, "created", &spec(&["true"])).await;
    let created = c
        .list_processes(
            ctx(),
            &ListProcessesRequest {
                container_id: "created".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .processes[0]
        .pid;
    let pids = [running, exec_pid, paused, created];
    assert!(pids.iter().all(|&p| p > 0 && alive(p)), "{pids:?}");

    let cgroup_root = hull_agent::container::cgroup::find_root().ok();
    let cgroups: Vec<PathBuf> = cgroup_root
        .iter()
        .flat_map(|root| ["running", "paused", "created"].map(|id| root.join("hull").join(id)))
        .collect();
    assert!(cgroups.iter().all(|d| d.is_dir()));

    let mount =
        LeakedMount(std::fs::canonicalize(agent.shared_dir().join("c/rootfs/mnt")).unwrap());
    nix::mount::mount(
        Some("tmpfs"),
        &mount.0,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    assert!(is_mounted(&mount.0));

    let started = std::time::Instant::now();
    c.destroy_sandbox(
        ctx(),
        &DestroySandboxRequest {
            sandbox_id: "sb1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    println!("DestroySandbox took {:?}", started.elapsed());

    // Everything is gone when the reply arrives.
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still exists after DestroySandbox");
    }
    for dir in &cgroups {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert!(
        !is_mounted(&mount.0),
        "the mount below the rootfs is still there"
    );
    for id in ["running", "paused", "created"] {
        let r = c
            .wait_process(
                ctx(),
                &WaitProcessRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(r, Err(ttrpc::Error::RpcStatus(ref s)) if s.code() == Code::NOT_FOUND),
            "{id}: {r:?}"
        );
    }
    // The output streams of the killed processes ended.
    for out in [running_out, exec_out, created_out] {
        tokio::time::timeout(Duration::from_secs(5), out)
            .await
            .expect("an output stream stayed open")
            .unwrap();
    }

    // The agent still serves, and the ids can be used again.
    let out = create(&c, &agent, "running", &spec(&["sh", "-c", "echo again"])).await;
    start(&c, "running").await;
    assert_eq!(wait(&c, "running", "").await, 0);
    assert_eq!(out.await.unwrap(), b"again\n");
    c.destroy_sandbox(
        ctx(),
        &DestroySandboxRequest {
            sandbox_id: "sb1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}
