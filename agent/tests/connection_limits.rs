//! The agent's listeners under a connection flood, host mode. The hybrid listener (the agent on
//! a Unix socket speaking the hybrid-vsock handshake, as the shim reaches it): at most
//! `MAX_HANDSHAKING_CONNECTIONS` silent connections and `MAX_API_CONNECTIONS` API connections
//! are held, the one beyond a cap is closed at once without an `OK` line, its fd count stays
//! bounded, silent connections are closed after their timeout while a connection that sent a
//! request stays open, and a fresh connection gets Health answered after the flood; at most
//! `MAX_LOG_READERS` log readers, a fifth refused while the first keeps reading. The `unix://`
//! listener (the code the guest's vsock API port runs, `conn_limits::accept_api_connections`):
//! the same API cap and first-request timeout without a handshake.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ctx;
use hull_proto::agent::{health_response, HealthRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;
use hull_proto::contract::{MAX_API_CONNECTIONS, MAX_HANDSHAKING_CONNECTIONS, MAX_LOG_READERS};

/// The handshake and first-request timeouts the tests give the agent (the variables
/// `hull_agent::conn_limits` reads).
const HANDSHAKE_TIMEOUT_MS: u64 = 1500;
const FIRST_REQUEST_TIMEOUT_MS: u64 = 1500;

/// `hull-agent --listen hybrid://<tmp>/agent.sock` (or `unix://`) with short timeouts; killed
/// on drop.
struct HybridAgent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    scheme: &'static str,
}

impl HybridAgent {
    fn start() -> HybridAgent {
        Self::start_with("hybrid")
    }

    /// The agent listening on `<scheme>://<tmp>/agent.sock`.
    fn start_with(scheme: &'static str) -> HybridAgent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("{scheme}://{}", socket.display()))
            .env("RUST_LOG", "info")
            .env(
                "HULL_AGENT_HANDSHAKE_TIMEOUT_MS",
                HANDSHAKE_TIMEOUT_MS.to_string(),
            )
            .env(
                "HULL_AGENT_FIRST_REQUEST_TIMEOUT_MS",
                FIRST_REQUEST_TIMEOUT_MS.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = HybridAgent {
            child,
            dir,
            socket,
            scheme,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&agent.socket).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        // That probe holds a handshake slot until the agent sees it closed.
        std::thread::sleep(Duration::from_millis(50));
        agent
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    async fn client(&self) -> AgentServiceClient {
        if self.scheme == "unix" {
            let address = format!("unix://{}", self.socket.display());
            let client = ttrpc::asynchronous::Client::connect(&address)
                .await
                .unwrap_or_else(|e| panic!("connecting: {e}\n{}", self.log()));
            return AgentServiceClient::new(client);
        }
        let client =
            hull_proto::client::connect_hybrid_vsock(&self.socket, hull_proto::AGENT_API_PORT)
                .await
                .unwrap_or_else(|e| panic!("connecting: {e}\n{}", self.log()));
        AgentServiceClient::new(client)
    }

    async fn assert_healthy(&self, client: &AgentServiceClient) {
        let health = client
            .health(ctx(), &HealthRequest::new())
            .await
            .unwrap_or_else(|e| panic!("Health: {e}\n{}", self.log()));
        assert_eq!(
            health.status.enum_value(),
            Ok(health_response::ServingStatus::SERVING_STATUS_SERVING)
        );
    }
}

impl Drop for HybridAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- hull-agent log ----\n{}", self.log());
        }
    }
}

/// A raw connection that sent `line` (if any).
fn raw(socket: &Path, line: Option<&str>) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    if let Some(line) = line {
        stream.write_all(line.as_bytes()).unwrap();
    }
    stream
}

/// What the agent sends on `stream` until it closes it (or `timeout` passes: None).
fn read_until_closed(stream: &mut UnixStream, timeout: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // A reset counts as closed.
            Err(_) => return Some(got),
        }
    }
}

/// Reads the `OK <n>\n` line byte by byte.
fn read_ok_line(stream: &mut UnixStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 32 {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn api_connections_beyond_the_cap_are_closed_without_ok() {
    let agent = HybridAgent::start();
    let base_fds = agent.fds();
    // MAX_API_CONNECTIONS real clients, each answered (so none is idle).
    let mut clients = Vec::new();
    for _ in 0..MAX_API_CONNECTIONS {
        let client = agent.client().await;
        agent.assert_healthy(&client).await;
        clients.push(client);
    }
    // One more: the handshake gets no OK, the connection is closed at once.
    let started = Instant::now();
    let mut extra = raw(&agent.socket, Some("CONNECT 1024\n"));
    let reply = read_until_closed(&mut extra, Duration::from_secs(3))
        .expect("the connection beyond the cap was not closed");
    assert!(
        reply.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed only after {:?}",
        started.elapsed()
    );
    let fds = agent.fds();
    assert!(
        fds <= base_fds + MAX_API_CONNECTIONS + 2,
        "{fds} fds with {MAX_API_CONNECTIONS} API connections (base {base_fds})"
    );
    // The held connections still work, past the first-request timeout.
    tokio::time::sleep(Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS + 500)).await;
    agent.assert_healthy(&clients[0]).await;
    agent
        .assert_healthy(&clients[MAX_API_CONNECTIONS - 1])
        .await;
    // One goes away: a fresh one is served again.
    clients.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = raw(&agent.socket, Some("CONNECT 1024\n"));
        if read_ok_line(&mut probe).starts_with("OK ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no API slot came free after a client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(clients);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = agent.client().await;
    agent.assert_healthy(&fresh).await;
    assert!(
        agent.log().contains("too many API connections at once"),
        "no warning logged:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_silent_connections_is_bounded_and_timed_out() {
    let agent = HybridAgent::start();
    let base_fds = agent.fds();
    let flood = 2000;
    let mut silent = Vec::with_capacity(flood);
    let mut max_fds = 0;
    for i in 0..flood {
        silent.push(raw(&agent.socket, None));
        if i % 100 == 0 {
            max_fds = max_fds.max(agent.fds());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    max_fds = max_fds.max(agent.fds());
    // The agent holds at most MAX_HANDSHAKING_CONNECTIONS of them (plus a few in flight).
    assert!(
        max_fds <= base_fds + MAX_HANDSHAKING_CONNECTIONS + 8,
        "agent had {max_fds} fds during a flood of {flood} (base {base_fds})"
    );
    let open: Vec<usize> = silent
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| {
            read_until_closed(s, Duration::from_millis(1))
                .is_none()
                .then_some(i)
        })
        .collect();
    assert!(
        open.len() <= MAX_HANDSHAKING_CONNECTIONS,
        "{} of {flood} still open on the agent's side",
        open.len()
    );
    // Those the agent held are closed after the handshake timeout.
    let started = Instant::now();
    for i in &open {
        assert!(
            read_until_closed(
                &mut silent[*i],
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS + 3000)
            )
            .is_some(),
            "a silent connection outlived the handshake timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_millis(HANDSHAKE_TIMEOUT_MS + 3000));
    // The agent still answers on a fresh connection, and its fds are back.
    let client = agent.client().await;
    agent.assert_healthy(&client).await;
    drop(client);
    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = agent.fds();
    assert!(
        after <= base_fds + 2,
        "{after} fds after the flood (base {base_fds})"
    );
    assert!(
        agent
            .log()
            .contains("too many connections in the handshake at once"),
        "no warning logged"
    );
    // Rate-limited: far fewer warnings than refusals.
    let warnings = agent
        .log()
        .matches("too many connections in the handshake")
        .count();
    assert!(warnings < 20, "{warnings} warnings for one flood");
}

#[tokio::test(flavor = "current_thread")]
async fn an_api_connection_silent_after_the_handshake_is_closed_but_a_used_one_stays() {
    let agent = HybridAgent::start();
    let used = agent.client().await;
    agent.assert_healthy(&used).await;

    let mut silent = raw(&agent.socket, Some("CONNECT 1024\n"));
    assert!(read_ok_line(&mut silent).starts_with("OK "), "no OK line");
    let started = Instant::now();
    let rest = read_until_closed(
        &mut silent,
        Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS + 3000),
    )
    .expect("a silent API connection was not closed");
    let waited = started.elapsed();
    assert!(rest.is_empty());
    assert!(
        waited >= Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS - 200),
        "closed after {waited:?}, before the first-request timeout"
    );

    // The connection that did send a request is still served (like the shim's, kept for the
    // sandbox's life), with nothing sent for longer than that timeout.
    tokio::time::sleep(Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS + 500)).await;
    agent.assert_healthy(&used).await;

    // A connection that never completes the CONNECT line is closed after the handshake timeout.
    let mut partial = raw(&agent.socket, Some("CONN"));
    let started = Instant::now();
    assert!(read_until_closed(
        &mut partial,
        Duration::from_millis(HANDSHAKE_TIMEOUT_MS + 3000)
    )
    .is_some());
    assert!(started.elapsed() >= Duration::from_millis(HANDSHAKE_TIMEOUT_MS - 200));
}

/// Reads from `stream` until what arrived contains `needle` (true) or `timeout` passed.
fn read_until_contains(stream: &mut UnixStream, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&got).contains(needle) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "current_thread")]
async fn a_log_reader_beyond_the_cap_is_refused_and_the_first_keeps_reading() {
    let agent = HybridAgent::start();
    let log_connect = format!("CONNECT {}\n", hull_proto::AGENT_LOG_PORT);
    let mut readers = Vec::new();
    for _ in 0..MAX_LOG_READERS {
        let mut reader = raw(&agent.socket, Some(&log_connect));
        assert!(read_ok_line(&mut reader).starts_with("OK "), "no OK line");
        readers.push(reader);
    }
    // A flood of further readers: each is closed at once, without an OK line.
    for _ in 0..50 {
        let started = Instant::now();
        let mut extra = raw(&agent.socket, Some(&log_connect));
        let reply = read_until_closed(&mut extra, Duration::from_secs(3))
            .expect("a log reader beyond the cap was not closed");
        assert!(
            reply.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // The first reader (the shim's) is still there and reads the agent's own warning.
    let warning = "too many log readers at once";
    assert!(
        read_until_contains(&mut readers[0], warning, Duration::from_secs(5)),
        "the first log reader did not get the warning:\n{}",
        agent.log()
    );
    // One reader leaves: its place is free again (no log line needed to notice).
    drop(readers.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = raw(&agent.socket, Some(&log_connect));
        if read_ok_line(&mut probe).starts_with("OK ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log reader slot came free after a reader left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = agent.client().await;
    agent.assert_healthy(&client).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_unix_listener_caps_api_connections_and_closes_silent_ones() {
    let agent = HybridAgent::start_with("unix");
    let base_fds = agent.fds();
    let mut clients = Vec::new();
    for _ in 0..MAX_API_CONNECTIONS {
        let client = agent.client().await;
        agent.assert_healthy(&client).await;
        clients.push(client);
    }
    // One more is closed at once; so is each of a flood.
    for _ in 0..200 {
        let started = Instant::now();
        let mut extra = raw(&agent.socket, None);
        assert!(
            read_until_closed(&mut extra, Duration::from_secs(3)).is_some(),
            "an API connection beyond the cap was not closed"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let fds = agent.fds();
    assert!(
        fds <= base_fds + MAX_API_CONNECTIONS + 2,
        "{fds} fds with {MAX_API_CONNECTIONS} API connections (base {base_fds})"
    );
    assert!(
        agent.log().contains("too many API connections at once"),
        "no warning logged:\n{}",
        agent.log()
    );
    // The used connections outlive the first-request timeout.
    tokio::time::sleep(Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS + 500)).await;
    agent.assert_healthy(&clients[0]).await;
    // With room again, a silent connection is held, then closed after the timeout.
    clients.truncate(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut silent = raw(&agent.socket, None);
    let started = Instant::now();
    assert!(
        read_until_closed(
            &mut silent,
            Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS + 3000)
        )
        .is_some(),
        "a silent connection was not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(FIRST_REQUEST_TIMEOUT_MS - 200),
        "closed after {:?}, before the first-request timeout",
        started.elapsed()
    );
    agent.assert_healthy(&clients[0]).await;
    let fresh = agent.client().await;
    agent.assert_healthy(&fresh).await;
}
