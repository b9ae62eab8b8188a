//! The agent's ready signal: an agent serving a hybrid-vsock socket connects to the socket a
//! guest connection to the host's ready port would reach (`<socket>_1028`, where hull-vmm
//! forwards it) once it serves the API, so the shim need not poll. When the signal comes, the
//! API answers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hull_proto::agent::VersionRequest;
use hull_proto::agent_ttrpc::AgentServiceClient;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_hybrid_agent_signals_ready_once_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let ready_path =
        hull_proto::handshake::guest_connection_path(&socket, hull_proto::AGENT_READY_PORT);
    let ready = tokio::net::UnixListener::bind(&ready_path).unwrap();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("hybrid://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning hull-agent"),
    );
    tokio::time::timeout(Duration::from_secs(20), ready.accept())
        .await
        .expect("no ready signal within 20 s")
        .unwrap();
    // No retry: the signal means the API serves now.
    let client = hull_proto::client::connect_hybrid_vsock(&socket, hull_proto::AGENT_API_PORT)
        .await
        .expect("the API after the ready signal");
    let reply = AgentServiceClient::new(client)
        .version(
            ttrpc::context::with_timeout(5_000_000_000),
            &VersionRequest::new(),
        )
        .await
        .unwrap();
    hull_proto::check_api_version(&reply).unwrap();
}
