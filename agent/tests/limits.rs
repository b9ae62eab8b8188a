//! cgroup v2 limits of a container through the real agent: the spec's memory, pids and cpu limits
//! reach the container's cgroup (StatsContainer, and the container's own view through its cgroup
//! namespace, from its init and from execs), UpdateContainer changes them, and the pids limit is
//! enforced. Needs the memory, pids and cpu controllers in cgroup v2: in the lab; skipped on
//! v1/hybrid hosts.

mod common;

use common::busybox::{
    create, ctx, exec, has_cgroup_controllers, remove, spec, start, wait, BusyboxAgent,
};
use hull_proto::agent::{StatsContainerRequest, UpdateContainerRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;
use hull_proto::stats::ContainerStats;

const MIB: i64 = 1024 * 1024;

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

/// The agent, if it has the cgroup v2 `controllers` (None after printing SKIPPED otherwise).
fn agent_with(controllers: &[&str]) -> Option<BusyboxAgent> {
    BusyboxAgent::start().filter(|agent| has_cgroup_controllers(agent, controllers))
}

/// `args` with the given `linux.resources`.
fn limited(args: &[&str], resources: serde_json::Value) -> serde_json::Value {
    let mut spec = spec(args);
    spec["linux"]["resources"] = resources;
    spec
}

/// Adds a cgroup namespace and cgroup2 mounted read-only at /sys/fs/cgroup, as runc gives them.
fn with_cgroup_namespace(mut spec: serde_json::Value) -> serde_json::Value {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "cgroup"}));
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "ro"]
        }));
    spec
}

/// Runs `script` with `sh -c` as an exec in container `id`; returns its output once it exited 0.
async fn exec_output(
    c: &AgentServiceClient,
    agent: &BusyboxAgent,
    id: &str,
    exec_id: &str,
    script: &str,
) -> String {
    let (_pid, out) = exec(c, agent, id, exec_id, &["sh", "-c", script]).await;
    assert_eq!(wait(c, id, exec_id).await, 0, "exec {exec_id}");
    String::from_utf8(out.await.unwrap()).unwrap()
}

const READ_LIMITS: &str =
    "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max";

#[tokio::test(flavor = "current_thread")]
async fn spec_limits_and_updates_reach_the_cgroup() {
    let Some(agent) = agent_with(&["memory", "pids", "cpu"]) else {
        return;
    };
    let c = agent.client().await;
    let spec = limited(
        &["sleep", "1000"],
        serde_json::json!({
            "memory": {"limit": 64 * MIB},
            "pids": {"limit": 12},
            "cpu": {"quota": 400000, "period": 100000}
        }),
    );
    let _out = create(&c, &agent, "lim", &spec).await;
    start(&c, "lim").await;
    let s = stats(&c, "lim").await;
    assert_eq!(s.memory.limit_bytes, 64 * MIB as u64);
    assert_eq!(s.pids.limit, 12);
    assert!(s.pids.current >= 1, "{:?}", s.pids);

    let update = serde_json::json!({"memory": {"limit": 48 * MIB}, "pids": {"limit": 8}});
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
    let s = stats(&c, "lim").await;
    assert_eq!(
        s.memory.limit_bytes,
        48 * MIB as u64,
        "after UpdateContainer"
    );
    assert_eq!(s.pids.limit, 8, "after UpdateContainer");
    remove(&c, "lim").await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_pids_limit_is_enforced() {
    let Some(agent) = agent_with(&["pids"]) else {
        return;
    };
    let c = agent.client().await;
    // 6 pids in all: the shell, its subshell and a few sleeps; the fork that would pass the
    // limit fails inside the container. The sleeps go with the container's pid namespace.
    let script = "(for i in $(seq 1 20); do sleep 30 & done) 2>&1; echo finished";
    let spec = limited(
        &["sh", "-c", script],
        serde_json::json!({"pids": {"limit": 6}}),
    );
    let out = create(&c, &agent, "forks", &spec).await;
    start(&c, "forks").await;
    assert_eq!(wait(&c, "forks", "").await, 0);
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    assert!(
        text.contains("can't fork"),
        "no fork failed under pids.max 6: {text}"
    );
    assert!(text.ends_with("finished\n"), "{text}");
    remove(&c, "forks").await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_container_sees_its_own_limits_through_its_cgroup_namespace() {
    let Some(agent) = agent_with(&["memory", "pids", "cpu"]) else {
        return;
    };
    let c = agent.client().await;
    // A cpu quota above what the guest's vCPUs can use: cpu.max is checked, throttling is not.
    let spec = with_cgroup_namespace(limited(
        &["sh", "-c", READ_LIMITS],
        serde_json::json!({
            "memory": {"limit": 32 * MIB},
            "pids": {"limit": 20},
            "cpu": {"quota": 300000, "period": 200000}
        }),
    ));
    let out = create(&c, &agent, "view", &spec).await;
    start(&c, "view").await;
    assert_eq!(wait(&c, "view", "").await, 0);
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [(32 * MIB).to_string().as_str(), "20", "300000 200000"],
        "memory.max, pids.max, cpu.max inside the container"
    );
    remove(&c, "view").await;
}

#[tokio::test(flavor = "current_thread")]
async fn execs_see_the_limits_and_their_updates_and_are_held_to_them() {
    let Some(agent) = agent_with(&["memory", "pids", "cpu"]) else {
        return;
    };
    let c = agent.client().await;
    let spec = with_cgroup_namespace(limited(
        &["sleep", "1000"],
        serde_json::json!({
            "memory": {"limit": 64 * MIB},
            "pids": {"limit": 12},
            "cpu": {"quota": 400000, "period": 100000}
        }),
    ));
    let _out = create(&c, &agent, "execs", &spec).await;
    start(&c, "execs").await;
    let text = exec_output(&c, &agent, "execs", "read1", READ_LIMITS).await;
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [(64 * MIB).to_string().as_str(), "12", "400000 100000"],
        "memory.max, pids.max, cpu.max seen by an exec"
    );

    let update = serde_json::json!({
        "memory": {"limit": 48 * MIB},
        "pids": {"limit": 8},
        "cpu": {"quota": 300000, "period": 200000}
    });
    c.update_container(
        ctx(),
        &UpdateContainerRequest {
            container_id: "execs".into(),
            oci_resources_json: update.to_string().into_bytes(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = exec_output(&c, &agent, "execs", "read2", READ_LIMITS).await;
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [(48 * MIB).to_string().as_str(), "8", "300000 200000"],
        "after UpdateContainer"
    );

    // 8 pids in all: the init sleep, this shell and its subshell leave room for a few sleeps
    // only; the fork that would pass the limit fails. The sleeps outlive the exec's shell and
    // keep its stdout open: the exec still ends when the shell exits.
    let script = "(for i in $(seq 1 20); do sleep 30 & done) 2>&1; \
                  echo pids.current=$(cat /sys/fs/cgroup/pids.current)";
    let text = exec_output(&c, &agent, "execs", "forks", script).await;
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
    remove(&c, "execs").await;
}
