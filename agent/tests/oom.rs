//! GetOOMEvent through the real agent: the long poll runs beside other RPCs and ends at
//! power-off (any host, root), and a container the OOM killer kills exits 137 and is reported
//! (needs the memory controller in cgroup v2: in the lab; skipped on v1/hybrid hosts).

mod common;

use std::time::Duration;

use common::busybox::{create, ctx, has_cgroup_controllers, spec, start, wait, BusyboxAgent};
use hull_proto::agent::*;
use ttrpc::Code;

/// The long poll has no deadline (as the shim calls it).
fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

#[tokio::test(flavor = "current_thread")]
async fn the_long_poll_does_not_block_other_rpcs_and_ends_at_power_off() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    let c = agent.client().await;
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        poller
            .get_oom_event(no_deadline(), &GetOOMEventRequest::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !poll.is_finished(),
        "GetOOMEvent returned without an OOM kill"
    );

    // Other RPCs, containers included, run while the poll waits.
    c.health(ctx(), &HealthRequest::new()).await.unwrap();
    let out = create(&c, &agent, "busy", &spec(&["true"])).await;
    start(&c, "busy").await;
    assert_eq!(wait(&c, "busy", "").await, 0);
    assert_eq!(out.await.unwrap(), b"");
    common::busybox::remove(&c, "busy").await;
    assert!(!poll.is_finished());

    c.power_off(ctx(), &PowerOffRequest::new()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("GetOOMEvent still pending after PowerOff")
        .unwrap();
    match answer {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), Code::UNAVAILABLE, "{}", s.message);
            assert!(s.message.contains("powering off"), "{}", s.message);
        }
        // The connection may close before the status frame is read; either way it ended.
        Err(other) => eprintln!("GetOOMEvent ended with {other:?}"),
        Ok(r) => panic!("unexpected OOM event {r:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_oom_killed_container_exits_137_and_is_reported() {
    let Some(agent) = BusyboxAgent::start() else {
        return;
    };
    if !has_cgroup_controllers(&agent, &["memory"]) {
        return;
    }
    let c = agent.client().await;
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        poller
            .get_oom_event(no_deadline(), &GetOOMEventRequest::new())
            .await
    });
    let limit = 32 * 1024 * 1024;
    let mut hog = spec(&["tail", "/dev/zero"]);
    hog["linux"]["resources"] = serde_json::json!({"memory": {"limit": limit, "swap": limit}});
    let _out = create(&c, &agent, "hog", &hog).await;
    start(&c, "hog").await;
    assert_eq!(wait(&c, "hog", "").await, 137);
    let event = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("no OOM event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(event.container_id, "hog");
    let stats = c
        .stats_container(
            ctx(),
            &StatsContainerRequest {
                container_id: "hog".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stats.stats.memory.oom_kills >= 1);
    common::busybox::remove(&c, "hog").await;
}
