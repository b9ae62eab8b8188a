//! The agent stops promptly on SIGTERM even while a host connection has a call pending (the
//! shim keeps GetOOMEvent and WaitProcess long polls open for a sandbox's life). Before the
//! stop was bounded, ttrpc's shutdown waited for such connections for 5 s and more, and the
//! shim SIGKILLed the agent after its 2 s grace: every sandbox teardown took 2 s.

mod common;

use std::time::{Duration, Instant};

use common::AgentProcess;
use hull_proto::agent::GetOOMEventRequest;

#[tokio::test(flavor = "current_thread")]
async fn sigterm_with_a_pending_long_poll_exits_promptly() {
    let mut agent = AgentProcess::start();
    let client = agent.client().await;
    let pending = tokio::spawn(async move {
        let ctx = ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64);
        client.get_oom_event(ctx, &GetOOMEventRequest::new()).await
    });
    // Let the call reach the agent and stay pending there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "GetOOMEvent answered without an OOM"
    );

    let signalled = Instant::now();
    // SAFETY: kill with plain arguments, on our own child.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) }, 0);
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("hull-agent still running 10 s after SIGTERM");
    let took = signalled.elapsed();
    eprintln!("hull-agent exited {took:?} after SIGTERM with a call pending");
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    // The shim SIGKILLs after 2 s; the agent must be gone well before.
    assert!(
        took < Duration::from_secs(1),
        "hull-agent took {took:?} to exit on SIGTERM with a call pending (the shim's grace is \
         2 s)\nlog:\n{}",
        agent.log()
    );
    assert!(!agent.socket.exists(), "the API socket was left behind");
    // The long poll was answered (as at PowerOff), not cut off.
    let reply = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending call never ended")
        .unwrap();
    match reply {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), ttrpc::Code::UNAVAILABLE, "{s:?}")
        }
        other => panic!("GetOOMEvent after SIGTERM: {other:?}"),
    }
}
