//! The hull-agent binary in host mode, driven through its real ttrpc API on a Unix socket and
//! through a hybrid-vsock proxy (the path the shim takes through hull-vmm).

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{ctx, rpc_status, start_hybrid_proxy, AgentProcess};
use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentServiceClient;
use ttrpc::Code;

fn command_output(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn health_version_and_guest_details() {
    let agent = AgentProcess::start();
    let client = agent.client().await;

    let health = client.health(ctx(), &HealthRequest::new()).await.unwrap();
    assert_eq!(
        health.status.enum_value(),
        Ok(health_response::ServingStatus::SERVING_STATUS_SERVING)
    );

    let version = client.version(ctx(), &VersionRequest::new()).await.unwrap();
    assert_eq!(version.api_version, hull_proto::API_VERSION);
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    hull_proto::check_api_version(&version).unwrap();

    let details = client
        .get_guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .unwrap();
    assert_eq!(details.kernel_release, command_output("uname", &["-r"]));
    assert_eq!(details.machine, command_output("uname", &["-m"]));
    assert_eq!(
        details.online_cpus.to_string(),
        command_output("getconf", &["_NPROCESSORS_ONLN"])
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(details.memory_total_bytes, mem_total_kib * 1024);
    assert!(details.memory_available_bytes <= details.memory_total_bytes);
    assert_eq!(details.agent_version, version.agent_version);

    let declared = hull_proto::agent_service_rpc_names();
    let rpcs = &details.capabilities.rpcs;
    for rpc in ["Health", "Version", "GetGuestDetails", "PowerOff"] {
        assert!(rpcs.iter().any(|r| r == rpc), "{rpc} missing from {rpcs:?}");
    }
    for rpc in rpcs {
        assert!(declared.contains(rpc), "{rpc} is not an AgentService RPC");
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap();
    for fs in &details.capabilities.filesystems {
        assert!(
            filesystems
                .lines()
                .any(|l| l.split_whitespace().last() == Some(fs)),
            "{fs} reported but not in /proc/filesystems"
        );
    }
}

async fn expect_unimplemented<T: std::fmt::Debug>(
    rpc: &str,
    call: impl std::future::Future<Output = ttrpc::Result<T>>,
) {
    let status = rpc_status(call.await);
    assert_eq!(status.code(), Code::UNIMPLEMENTED, "{rpc}: {status:?}");
    assert!(status.message.contains(rpc), "{rpc}: {}", status.message);
}

#[tokio::test(flavor = "current_thread")]
async fn valid_requests_to_unimplemented_rpcs_answer_unimplemented() {
    let agent = AgentProcess::start();
    let c = agent.client().await;

    // Container RPCs are implemented: an unknown container is NOT_FOUND.
    let start = StartContainerRequest {
        container_id: "c1".into(),
        ..Default::default()
    };
    let status = rpc_status(c.start_container(ctx(), &start).await);
    assert_eq!(status.code(), Code::NOT_FOUND, "{status:?}");
    let wait = WaitProcessRequest {
        container_id: "c1".into(),
        ..Default::default()
    };
    let status = rpc_status(c.wait_process(ctx(), &wait).await);
    assert_eq!(status.code(), Code::NOT_FOUND, "{status:?}");

    // GetOOMEvent is implemented: a long poll that waits while nothing is OOM-killed.
    let poll = tokio::time::timeout(
        Duration::from_millis(300),
        c.get_oom_event(ctx(), &GetOOMEventRequest::new()),
    )
    .await;
    assert!(
        poll.is_err(),
        "GetOOMEvent answered without an OOM kill: {poll:?}"
    );
    let set_time = SetGuestDateTimeRequest {
        time: Some(protobuf::well_known_types::timestamp::Timestamp {
            seconds: 1,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    expect_unimplemented("SetGuestDateTime", c.set_guest_date_time(ctx(), &set_time)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_input_is_invalid_argument_and_the_agent_survives() {
    let agent = AgentProcess::start();
    let c = agent.client().await;

    for bad_id in ["../etc", "", "a/b", &"x".repeat(129), "c 1"] {
        let req = StartContainerRequest {
            container_id: bad_id.to_string(),
            ..Default::default()
        };
        let status = rpc_status(c.start_container(ctx(), &req).await);
        assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{bad_id:?}");
        assert!(
            status.message.contains("container_id"),
            "{}",
            status.message
        );
    }
    let exec = ExecProcessRequest {
        container_id: "c1".into(),
        exec_id: String::new(),
        oci_process_json: b"{}".to_vec(),
        ..Default::default()
    };
    let status = rpc_status(c.exec_process(ctx(), &exec).await);
    assert_eq!(status.code(), Code::INVALID_ARGUMENT);
    assert!(status.message.contains("exec_id"), "{}", status.message);
    let create = CreateContainerRequest {
        container_id: "c1".into(),
        oci_spec_json: b"{}".to_vec(),
        rootfs_path: "../../etc".into(),
        ..Default::default()
    };
    let status = rpc_status(c.create_container(ctx(), &create).await);
    assert_eq!(status.code(), Code::INVALID_ARGUMENT);
    assert!(status.message.contains("rootfs_path"), "{}", status.message);

    // Raw garbage and a frame header announcing a 2 GiB message on other connections.
    let mut raw = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    let _ = raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0]);
    let _ = raw.write_all(&[0xa5; 4096]);
    drop(raw);
    let mut raw = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    let _ = raw.write_all(b"CONNECT 1024\nGET / HTTP/1.0\r\n\r\n");
    drop(raw);

    let fresh = agent.client().await;
    fresh.health(ctx(), &HealthRequest::new()).await.unwrap();
    c.health(ctx(), &HealthRequest::new()).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn power_off_replies_then_the_process_exits_0() {
    let mut agent = AgentProcess::start();
    let c = agent.client().await;
    c.power_off(ctx(), &PowerOffRequest::new()).await.unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("hull-agent still running 15 s after PowerOff");
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    assert!(
        !agent.socket.exists(),
        "the API socket was left behind in {}",
        agent.dir().display()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ttrpc_works_through_the_hybrid_vsock_handshake() {
    let agent = AgentProcess::start();
    let proxy = start_hybrid_proxy(&agent.socket, hull_proto::AGENT_API_PORT);

    let client = hull_proto::client::connect_hybrid_vsock(&proxy.path, hull_proto::AGENT_API_PORT)
        .await
        .unwrap();
    let c = AgentServiceClient::new(client);
    let version = c.version(ctx(), &VersionRequest::new()).await.unwrap();
    hull_proto::check_api_version(&version).unwrap();
    let health = c.health(ctx(), &HealthRequest::new()).await.unwrap();
    assert_eq!(
        health.status.enum_value(),
        Ok(health_response::ServingStatus::SERVING_STATUS_SERVING)
    );

    // A port nobody listens on: the proxy closes the connection, like hull-vmm.
    let err = hull_proto::client::connect_hybrid_vsock(&proxy.path, 4242)
        .await
        .err()
        .expect("connecting to an unserved port must fail");
    assert!(
        matches!(
            err,
            hull_proto::client::HybridVsockError::Closed { port: 4242, .. }
        ),
        "{err}"
    );
}
