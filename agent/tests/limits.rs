//! cgroup v2 limits of a container through the real agent: the spec's memory, pids and cpu limits
//! are in the container's cgroup (seen from inside it through its cgroup namespace, and in
//! StatsContainer), UpdateContainer changes them, and the pids limit is enforced. Needs the
//! memory, pids and cpu controllers in cgroup v2: in the lab; skipped on v1/hybrid hosts.

mod common;

use common::busybox::{
    create, ctx, exec, has_cgroup_controllers, remove, spec, start, wait, BusyboxAgent,
};
use hull_proto::agent::{StatsContainerRequest, UpdateContainerRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;
use hull_proto::stats::ContainerStats;

const MIB: i64 = 1024 * 1024;

/// The container's own cgroup files, read from inside it.
async fn cgroup_files(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    exec_id: &str,
) -> String {
    let (_pid, out) = exec(
        c,
        agent,
        id,
        exec_id,
        &[
            "cat",
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/pids.max",
            "/sys/fs/cgroup/cpu.max",
        ],
    )
    .await;
    assert_eq!(wait(c, id, exec_id).await, 0);
    String::from_utf8(out.await.unwrap()).unwrap()
}

async fn stats(c: &AgentServiceClient, id: &str) -> ContainerStats {
    c.stats_container(
        ctx(),
        &StatsContainerRequest {
            container_id: id.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .stats
    .into_option()
    .expect("StatsContainer without stats")
}

#[tokio::test(flavor = "current_thread")]
async fn memory_pids_and_cpu_limits_are_applied_updated_and_enforced() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    if !has_cgroup_controllers(&agent, &["memory", "pids", "cpu"]) {
        return;
    }
    let c = agent.client().await;
    let mut limited = spec(&["sleep", "1000"]);
    limited["linux"]["resources"] = serde_json::json!({
        "memory": {"limit": 64 * MIB},
        "pids": {"limit": 12},
        // A quota above what the guest's vCPUs can use: cpu.max is written and read back, but
        // the test does not depend on CFS bandwidth throttling, whose timers are unreliable
        // in the nested, emulated lab (an exec into a 50 % container never finished there).
        "cpu": {"quota": 400000, "period": 100000}
    });
    // The container's own cgroup at /sys/fs/cgroup, as runc gives it with a cgroup namespace.
    limited["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "cgroup"}));
    limited["mounts"].as_array_mut().unwrap().push(
        serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup",
            "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    );
    let _out = create(&c, &agent, "lim", &limited).await;
    start(&c, "lim").await;

    let files = cgroup_files(&c, &agent, "lim", "read1").await;
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [(64 * MIB).to_string().as_str(), "12", "400000 100000"],
        "memory.max, pids.max, cpu.max inside the container"
    );
    let s = stats(&c, "lim").await;
    assert_eq!(s.memory.limit_bytes, 64 * MIB as u64);
    assert_eq!(s.pids.limit, 12);
    assert!(s.pids.current >= 1, "{:?}", s.pids);

    let update = serde_json::json!({
        "memory": {"limit": 48 * MIB},
        "pids": {"limit": 8},
        "cpu": {"quota": 300000, "period": 200000}
    });
    c.update_container(
        ctx(),
        &UpdateContainerRequest {
            container_id: "lim".into(),
            oci_resources_json: update.to_string().into_bytes(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let files = cgroup_files(&c, &agent, "lim", "read2").await;
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [(48 * MIB).to_string().as_str(), "8", "300000 200000"],
        "after UpdateContainer"
    );

    // 8 pids in all: the init sleep, this shell and its subshell leave room for a few sleeps
    // only; the fork that would pass the limit fails inside the container.
    let (_pid, out) = exec(
        &c,
        &agent,
        "lim",
        "forks",
        &[
            "sh",
            "-c",
            "(for i in $(seq 1 20); do sleep 30 & done) 2>&1; echo pids.current=$(cat /sys/fs/cgroup/pids.current)",
        ],
    )
    .await;
    wait(&c, "lim", "forks").await;
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    assert!(
        text.contains("can't fork"),
        "no fork failed under pids.max 8: {text}"
    );
    let current: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pids.current="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pids.current in {text:?}"));
    assert!(current <= 8, "pids.current {current} above pids.max 8");
    remove(&c, "lim").await;
}
