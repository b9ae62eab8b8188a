//! Port-forward end to end on the host, with the real hull-agent binary: the agent runs in a
//! scratch network namespace "guest" behind its hybrid-vsock listener (`--listen hybrid://`,
//! the protocol hull-vmm's socket speaks), TCP echo servers run in that namespace, and the
//! shim's `PortForwarder` mirrors them into a second scratch namespace "pod". A client inside
//! "pod" dials 127.0.0.1 / [::1] as containerd's CRI PortForward does. Checks: bytes
//! round-trip (a large payload, both EOFs passed on), the host's own namespace never gets a
//! listener, a guest port that goes away loses its mirror, and `stop` closes the mirrors.
//! Needs root, iproute2 (`ip`, `ss`) and a built hull-agent (`cargo build -p hull-agent`).

mod common;

use common::run;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_proto::agent_ttrpc::AgentServiceClient;
use hull_runtime::agent_client::AgentClient;
use hull_runtime::port_forward::PortForwarder;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The directory of the test binaries (and of `hull-agent` when it was built).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-hull-v2"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether this machine can run the test; on CI it must.
fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    let agent = target_dir().join("hull-agent").exists();
    if root && ip && agent {
        return true;
    }
    let why = format!(
        "needs root ({root}), iproute2 ({ip}) and a built hull-agent ({agent}; cargo build -p hull-agent)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("port-forward test {why}");
    }
    eprintln!("SKIPPED: port-forward test {why}");
    false
}

/// A scratch network namespace with `lo` up, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("hullpf-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        run("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside this namespace (sockets it creates stay in it).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// Local addresses of the listening TCP sockets in this namespace.
    fn listeners(&self) -> Vec<String> {
        listeners_of(&run("ip", &["netns", "exec", &self.name, "ss", "-ltnH"]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The local-address column of `ss -ltnH` output.
fn listeners_of(ss: &str) -> Vec<String> {
    ss.lines()
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

fn host_listeners() -> Vec<String> {
    listeners_of(&run("ss", &["-ltnH"]))
}

fn has_port(listeners: &[String], port: u16) -> bool {
    let suffix = format!(":{port}");
    listeners.iter().any(|l| l.ends_with(&suffix))
}

/// hull-agent in the guest namespace behind its hybrid-vsock listener; killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(guest: &Netns) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock.sock");
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &guest.name])
            .arg(target_dir().join("hull-agent"))
            .arg("--listen")
            .arg(format!("hybrid://{}", socket.display()))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child,
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("hull-agent exited early ({status}):\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "no agent socket:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server in a namespace: echoes while reading, shuts its write side down at EOF.
/// Stops (closing its listener) on drop.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(netns: &Netns, address: SocketAddr) -> Echo {
        let listener = netns.enter(|| TcpListener::bind(address).unwrap());
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || echo(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Echo {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.close();
    }
}

fn echo(mut conn: TcpStream) {
    conn.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 32 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// From inside `netns`: connects to `address`, writes `payload` then shuts down the write
/// side, meanwhile reads until EOF; returns what came back.
fn exchange(netns: &Netns, address: SocketAddr, payload: &[u8]) -> Vec<u8> {
    netns.enter(|| {
        let mut conn = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {address} in the pod netns: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = conn.try_clone().unwrap();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                writer.write_all(payload).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            conn.read_to_end(&mut back).unwrap();
            back
        })
    })
}

/// Waits until `netns` does (or does not) listen on `port`.
fn wait_listening(netns: &Netns, port: u16, listening: bool, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while has_port(&netns.listeners(), port) != listening {
        assert!(
            Instant::now() < deadline,
            "pod netns listening on {port} should be {listening}; listeners {:?}\nagent log:\n{}",
            netns.listeners(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An echo server on `address` whose port the host's own namespace does not listen on.
fn echo_on_a_port_free_on_the_host(guest: &Netns, address: SocketAddr) -> Echo {
    loop {
        let echo = Echo::start(guest, address);
        if !has_port(&host_listeners(), echo.port) {
            return echo;
        }
    }
}

#[test]
fn port_forward_reaches_guest_listeners_from_the_pod_netns_only() {
    if !can_run() {
        return;
    }
    let guest = Netns::new("guest");
    let pod = Netns::new("pod");
    let agent = Agent::start(&guest);
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let wildcard6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    let echo_a = echo_on_a_port_free_on_the_host(&guest, v4);
    let mut echo_b = echo_on_a_port_free_on_the_host(&guest, wildcard6);
    let (a, b) = (echo_a.port, echo_b.port);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let ttrpc =
            hull_proto::client::connect_hybrid_vsock(&agent.socket, hull_proto::AGENT_API_PORT)
                .await
                .unwrap();
        AgentClient::new(AgentServiceClient::new(ttrpc))
    });

    // The RPC itself: both echo ports (127.0.0.1 and [::]) are reported.
    let listed = rt.block_on(client.list_tcp_listeners()).unwrap();
    assert!(
        listed.contains(&a) && listed.contains(&b),
        "{a}, {b} not in {listed:?}"
    );

    // The agent's port-forward port on its own: a closed port or a bad line is closed.
    let closed_port = guest.enter(|| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    for first_line in [format!("TCP {closed_port}\n"), "TCP 0\n".to_string()] {
        let reply = rt.block_on(async {
            let mut stream = hull_proto::client::open_hybrid_vsock_stream(
                &agent.socket,
                hull_proto::PORT_FORWARD_PORT,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            stream.write_all(first_line.as_bytes()).await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
                .await
                .expect("the agent closes the connection")
                .unwrap();
            reply
        });
        assert!(reply.is_empty(), "{first_line:?}: {reply:?}");
    }

    let forwarder = rt
        .block_on(async { PortForwarder::start(pod.path(), agent.socket.clone(), client.clone()) });
    wait_listening(&pod, a, true, &agent);
    wait_listening(&pod, b, true, &agent);
    let pod_listeners = pod.listeners();
    for port in [a, b] {
        for address in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            assert!(
                pod_listeners.contains(&address),
                "{address} not in {pod_listeners:?}"
            );
        }
    }
    let host = host_listeners();
    assert!(
        !has_port(&host, a) && !has_port(&host, b),
        "the host's own netns listens on {a} or {b}: {host:?}"
    );

    // A large payload both ways, the client's EOF reaching the guest server and the server's
    // EOF coming back, through 127.0.0.1 and through [::1].
    let payload: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let back = exchange(&pod, SocketAddr::from((Ipv4Addr::LOCALHOST, a)), &payload);
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
    let back = exchange(&pod, SocketAddr::from((Ipv6Addr::LOCALHOST, b)), b"hello");
    assert_eq!(back, b"hello");
    // Nothing to send at all: the EOF alone crosses both ways.
    assert!(exchange(&pod, SocketAddr::from((Ipv4Addr::LOCALHOST, b)), b"").is_empty());

    // Several at once.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let pod = &pod;
                scope.spawn(move || {
                    let data = vec![i; 300_000];
                    exchange(pod, SocketAddr::from((Ipv4Addr::LOCALHOST, a)), &data) == data
                })
            })
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap(), "a concurrent forward lost bytes");
        }
    });

    // The guest closes b: its mirror goes, a's stays.
    echo_b.close();
    wait_listening(&pod, b, false, &agent);
    assert!(has_port(&pod.listeners(), a));

    // Stopping closes every mirror at once.
    rt.block_on(forwarder.stop());
    let left = pod.listeners();
    assert!(
        !has_port(&left, a),
        "mirror of {a} left after stop: {left:?}"
    );
    let refused = pod.enter(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, a)),
            Duration::from_secs(5),
        )
    });
    assert!(refused.is_err(), "connected after stop");
    let host = host_listeners();
    assert!(!has_port(&host, a), "{host:?}");

    // A forwarder dropped without stop (a panicking owner) closes its mirrors too.
    let forwarder = rt
        .block_on(async { PortForwarder::start(pod.path(), agent.socket.clone(), client.clone()) });
    wait_listening(&pod, a, true, &agent);
    drop(forwarder);
    wait_listening(&pod, a, false, &agent);
    drop(echo_a);
}
