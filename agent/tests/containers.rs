//! Real containers from a busybox rootfs, created by the hull-agent binary on the host through
//! its hybrid-vsock listener (the protocol hull-vmm speaks). Needs root.

use std::time::Duration;

use hull_proto::agent::*;
use hull_proto::agent_ttrpc::AgentServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use ttrpc::Code;

mod common;

use common::busybox::BusyboxAgent as Agent;

fn start_agent() -> Option<Agent> {
    Agent::start()
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(30))
}

fn spec(args: &[&str], terminal: bool) -> Vec<u8> {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "hull-test",
        "process": {
            "terminal": terminal,
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
        ],
        "linux": {"namespaces": [
            {"type": "mount"}, {"type": "pid"}, {"type": "uts"}, {"type": "ipc"}
        ]}
    })
    .to_string()
    .into_bytes()
}

/// The test side of the stdio stream protocol: connect to a port through the hybrid socket.
struct Run {
    stdin: Option<UnixStream>,
    stdout: tokio::task::JoinHandle<Vec<u8>>,
}

async fn read_all(mut s: UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

async fn create(
    c: &AgentServiceClient,
    agent: &Agent,
    id: &str,
    args: &[&str],
    stdin: bool,
    terminal: bool,
) -> Run {
    create_with_spec(c, agent, id, spec(args, terminal), stdin, terminal).await
}

/// [`create`] from a spec the test built itself.
async fn create_with_spec(
    c: &AgentServiceClient,
    agent: &Agent,
    id: &str,
    spec_json: Vec<u8>,
    stdin: bool,
    terminal: bool,
) -> Run {
    let req = CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec_json,
        rootfs_path: "c/rootfs".into(),
        stdio: Some(StdioRequest {
            stdin,
            stdout: true,
            stderr: false,
            terminal,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let ports = c
        .create_container(ctx(), &req)
        .await
        .unwrap()
        .stdio_ports
        .unwrap();
    let stdin = if stdin {
        Some(agent.open_stream(ports.stdin_port).await)
    } else {
        None
    };
    let out = agent.open_stream(ports.stdout_port).await;
    Run {
        stdin,
        stdout: tokio::spawn(read_all(out)),
    }
}

async fn start_and_wait(c: &AgentServiceClient, id: &str) -> i32 {
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait(c, id, "").await
}

async fn wait(c: &AgentServiceClient, id: &str, exec_id: &str) -> i32 {
    let r = c
        .wait_process(
            ctx(),
            &WaitProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.exited_at.seconds > 0);
    r.exit_status
}

async fn remove(c: &AgentServiceClient, id: &str) {
    c.remove_container(
        ctx(),
        &RemoveContainerRequest {
            container_id: id.into(),
            stop_timeout_ms: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn lifecycle_exit_codes_and_output() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;

    let run = create(&c, &agent, "t1", &["true"], false, false).await;
    assert_eq!(start_and_wait(&c, "t1").await, 0);
    assert_eq!(run.stdout.await.unwrap(), b"");
    remove(&c, "t1").await;

    let run = create(
        &c,
        &agent,
        "t2",
        &["sh", "-c", "echo hello from $(hostname); exit 3"],
        false,
        false,
    )
    .await;
    assert_eq!(start_and_wait(&c, "t2").await, 3);
    assert_eq!(
        String::from_utf8(run.stdout.await.unwrap()).unwrap(),
        "hello from hull-test\n"
    );
    remove(&c, "t2").await;

    // output written right before exiting is never lost
    let run = create(
        &c,
        &agent,
        "t3",
        &["sh", "-c", "seq 1 20000; exit 0"],
        false,
        false,
    )
    .await;
    assert_eq!(start_and_wait(&c, "t3").await, 0);
    let out = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    assert_eq!(out.lines().count(), 20000);
    assert!(out.ends_with("20000\n"));
    remove(&c, "t3").await;
}

#[tokio::test(flavor = "current_thread")]
async fn signals_exec_stdin_and_pause() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;

    let run = create(&c, &agent, "s1", &["sleep", "100"], false, false).await;
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: "s1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // exec into the running container: it sees the container's pid namespace
    let exec = ExecProcessRequest {
        container_id: "s1".into(),
        exec_id: "e1".into(),
        oci_process_json: br#"{"args":["sh","-c","cat /proc/1/cmdline; echo; exit 5"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec(),
        stdio: Some(StdioRequest { stdout: true, ..Default::default() }).into(),
        ..Default::default()
    };
    let ports = c
        .exec_process(ctx(), &exec)
        .await
        .unwrap()
        .stdio_ports
        .unwrap();
    let out = tokio::spawn(read_all(agent.open_stream(ports.stdout_port).await));
    c.start_exec(
        ctx(),
        &StartExecRequest {
            container_id: "s1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(wait(&c, "s1", "e1").await, 5);
    assert_eq!(
        String::from_utf8(out.await.unwrap()).unwrap(),
        "sleep\u{0}100\u{0}\n"
    );

    // pause / resume through cgroup.freeze
    c.pause_container(
        ctx(),
        &PauseContainerRequest {
            container_id: "s1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.resume_container(
        ctx(),
        &ResumeContainerRequest {
            container_id: "s1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let stats = c
        .stats_container(
            ctx(),
            &StatsContainerRequest {
                container_id: "s1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stats.stats.cpu.usage_usec > 0);

    c.signal_process(
        ctx(),
        &SignalProcessRequest {
            container_id: "s1".into(),
            signal: 9,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(wait(&c, "s1", "").await, 137);
    drop(run);
    remove(&c, "s1").await;

    // stdin: cat echoes until EOF
    let mut run = create(&c, &agent, "i1", &["cat"], true, false).await;
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: "i1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(wait(&c, "i1", "").await, 0);
    assert_eq!(run.stdout.await.unwrap(), b"ping\n");
    remove(&c, "i1").await;
}

/// Waits (up to 10 s) until the pty has a window size, then prints it: a resize sent after Start
/// must reach the process whenever it arrives.
const WAIT_FOR_WINDOW_THEN_PRINT: &str = "i=0; \
    while [ -z \"$(stty size 2>/dev/null)\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
    stty size";

#[tokio::test(flavor = "current_thread")]
async fn tty_starts_with_the_spec_console_size() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&spec(&["stty", "size"], true)).unwrap();
    spec["process"]["consoleSize"] = serde_json::json!({"height": 41, "width": 132});
    let run = create_with_spec(&c, &agent, "p2", spec.to_string().into_bytes(), false, true).await;
    // No TtyWinResize at all: the size comes from the spec, before the process runs (as runc does).
    assert_eq!(start_and_wait(&c, "p2").await, 0);
    let out = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    assert_eq!(out.trim(), "41 132");
    remove(&c, "p2").await;
}

#[tokio::test(flavor = "current_thread")]
async fn tty_and_window_size() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;
    let run = create(
        &c,
        &agent,
        "p1",
        &["sh", "-c", WAIT_FOR_WINDOW_THEN_PRINT],
        false,
        true,
    )
    .await;
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: "p1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.tty_win_resize(
        ctx(),
        &TtyWinResizeRequest {
            container_id: "p1".into(),
            rows: 33,
            columns: 101,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(wait(&c, "p1", "").await, 0);
    let out = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    assert_eq!(out.trim(), "33 101");
    remove(&c, "p1").await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_input_gets_clear_errors() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;
    let status = common::rpc_status::<CreateContainerResponse>;
    let base = CreateContainerRequest {
        container_id: "b1".into(),
        oci_spec_json: b"{not json".to_vec(),
        rootfs_path: "c/rootfs".into(),
        ..Default::default()
    };
    let s = status(c.create_container(ctx(), &base).await);
    assert_eq!(s.code(), Code::INVALID_ARGUMENT);
    assert!(s.message.contains("oci_spec_json"), "{}", s.message);

    let _ = std::fs::remove_file(agent.shared_dir().join("evil"));
    std::os::unix::fs::symlink("/etc", agent.shared_dir().join("evil")).unwrap();
    let escape = CreateContainerRequest {
        oci_spec_json: spec(&["true"], false),
        rootfs_path: "evil".into(),
        ..base.clone()
    };
    let s = status(c.create_container(ctx(), &escape).await);
    assert_eq!(s.code(), Code::INVALID_ARGUMENT);
    assert!(s.message.contains("outside"), "{}", s.message);

    // A missing executable fails the create, as with runc.
    let missing = CreateContainerRequest {
        oci_spec_json: spec(&["no-such-program"], false),
        ..base.clone()
    };
    let s = status(c.create_container(ctx(), &missing).await);
    assert_eq!(s.code(), Code::FAILED_PRECONDITION);
    assert!(
        s.message.contains("\"no-such-program\" not found"),
        "{}",
        s.message
    );

    // The shared directory itself as the rootfs: it holds every container's files.
    let whole_share = CreateContainerRequest {
        oci_spec_json: spec(&["true"], false),
        rootfs_path: ".".into(),
        ..base.clone()
    };
    let s = status(c.create_container(ctx(), &whole_share).await);
    assert_eq!(s.code(), Code::INVALID_ARGUMENT);
    assert!(
        s.message.contains("shared directory itself"),
        "{}",
        s.message
    );

    // Sysctls: only those the container's own namespaces isolate.
    let with_sysctl = |key: &str| {
        let mut spec = common::busybox::spec(&["true"]);
        spec["linux"]["sysctl"] = serde_json::json!({ key: "1" });
        CreateContainerRequest {
            oci_spec_json: spec.to_string().into_bytes(),
            ..base.clone()
        }
    };
    for (key, why) in [
        ("kernel.core_pattern", "whole guest"),
        ("net.ipv4.ip_forward", "Network namespace"),
        ("kernel/../../etc/passwd", "not a sysctl name"),
    ] {
        let s = status(c.create_container(ctx(), &with_sysctl(key)).await);
        assert_eq!(s.code(), Code::INVALID_ARGUMENT, "{key}");
        assert!(s.message.contains(why), "{key}: {}", s.message);
    }
    // An IPC sysctl in the container's own IPC namespace is fine, and set.
    let mut shm = common::busybox::spec(&["cat", "/proc/sys/kernel/shm_rmid_forced"]);
    shm["linux"]["sysctl"] = serde_json::json!({"kernel.shm_rmid_forced": "1"});
    let run = create_with_spec(
        &c,
        &agent,
        "shm",
        shm.to_string().into_bytes(),
        false,
        false,
    )
    .await;
    assert_eq!(start_and_wait(&c, "shm").await, 0);
    assert_eq!(run.stdout.await.unwrap(), b"1\n");
    remove(&c, "shm").await;

    let unknown = c
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: "nope".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(unknown, Err(ttrpc::Error::RpcStatus(s)) if s.code() == Code::NOT_FOUND));

    let good = CreateContainerRequest {
        oci_spec_json: spec(&["true"], false),
        ..base.clone()
    };
    c.create_container(ctx(), &good).await.unwrap();
    let s = status(c.create_container(ctx(), &good).await);
    assert_eq!(s.code(), Code::ALREADY_EXISTS);
    remove(&c, "b1").await;
    c.health(ctx(), &HealthRequest::new()).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn user_namespace_maps_ids() {
    let Some(agent) = start_agent() else { return };
    let c = agent.client().await;
    let mut spec: serde_json::Value = serde_json::from_slice(&spec(
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
        ],
        false,
    ))
    .unwrap();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    spec["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    let run = create_with_spec(
        &c,
        &agent,
        "u1",
        spec.to_string().into_bytes(),
        false,
        false,
    )
    .await;
    assert_eq!(start_and_wait(&c, "u1").await, 0);
    let out = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    let fields: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        fields,
        [
            vec!["0", "200000", "65536"],
            vec!["0", "300000", "65536"],
            vec!["0"],
            vec!["0"]
        ],
        "{out}"
    );
    remove(&c, "u1").await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_exec_that_leaves_a_background_child_still_ends() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let spec = common::busybox::spec(&["sleep", "1000"]);
    let _init_out = common::busybox::create(&c, &agent, "bg", &spec).await;
    common::busybox::start(&c, "bg").await;
    // The background sleep inherits stdout and outlives the shell by far; the shell's exit ends
    // the process's output and WaitProcess, and the agent keeps serving meanwhile.
    let (_pid, out) = common::busybox::exec(
        &c,
        &agent,
        "bg",
        "e1",
        &["sh", "-c", "echo before; sleep 600 & echo after"],
    )
    .await;
    let status = common::busybox::wait_within(&c, "bg", "e1", Duration::from_secs(60)).await;
    assert_eq!(status, 0);
    assert_eq!(out.await.unwrap(), b"before\nafter\n");
    let list = c
        .list_processes(
            ctx(),
            &ListProcessesRequest {
                container_id: "bg".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        list.processes.len() >= 2,
        "the background sleep should still run: {:?}",
        list.processes
    );
    remove(&c, "bg").await;
}

#[tokio::test(flavor = "current_thread")]
async fn processes_inherit_no_descriptors_beyond_their_stdio() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    // A terminal container: its pty must not reach the others (a plain exec and a second
    // container are checked; `a_terminal_is_a_tty_of_the_container_itself` covers tty execs).
    let _tty = create(&c, &agent, "tty", &["sleep", "1000"], true, true).await;
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: "tty".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The shell lists its own descriptors (`; true` keeps it from exec'ing ls).
    let list_fds = "ls /proc/$$/fd; true";
    let (_pid, exec_out) =
        common::busybox::exec(&c, &agent, "tty", "fds", &["sh", "-c", list_fds]).await;
    assert_eq!(wait(&c, "tty", "fds").await, 0);
    let other = create(&c, &agent, "other", &["sh", "-c", list_fds], false, false).await;
    assert_eq!(start_and_wait(&c, "other").await, 0);
    assert_eq!(
        String::from_utf8(other.stdout.await.unwrap()).unwrap(),
        "0\n1\n2\n",
        "a second container's descriptors"
    );
    assert_eq!(
        String::from_utf8(exec_out.await.unwrap()).unwrap(),
        "0\n1\n2\n",
        "an exec's descriptors"
    );
    remove(&c, "other").await;
    remove(&c, "tty").await;
}

#[tokio::test(flavor = "current_thread")]
async fn realtime_signal_exits_and_signals_after_the_exit() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let spec = common::busybox::spec(&["sleep", "1000"]);
    let _init_out = common::busybox::create(&c, &agent, "rt", &spec).await;
    common::busybox::start(&c, "rt").await;
    // Killed by SIGRTMIN+6 (40): 128 + 40, as runc reports it.
    let (_pid, _out) =
        common::busybox::exec(&c, &agent, "rt", "rt40", &["sh", "-c", "kill -s 40 $$"]).await;
    assert_eq!(wait(&c, "rt", "rt40").await, 168);
    // A real-time signal through SignalProcess.
    let (_pid, _out) = common::busybox::exec(&c, &agent, "rt", "sleeper", &["sleep", "600"]).await;
    let signal = |exec_id: &str, signal: u32| SignalProcessRequest {
        container_id: "rt".into(),
        exec_id: exec_id.into(),
        signal,
        ..Default::default()
    };
    c.signal_process(ctx(), &signal("sleeper", 34))
        .await
        .unwrap();
    assert_eq!(wait(&c, "rt", "sleeper").await, 128 + 34);
    // Signalling a process that has finished: NotFound, as runc's shim answers.
    let s = common::rpc_status(c.signal_process(ctx(), &signal("rt40", 9)).await);
    assert_eq!(s.code(), Code::NOT_FOUND, "{}", s.message);
    assert!(s.message.contains("already finished"), "{}", s.message);
    remove(&c, "rt").await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_agent_sends_its_log_on_the_log_port() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let mut log = agent.open_stream(hull_proto::AGENT_LOG_PORT).await;
    // A failing call is logged as a warning naming the container.
    let err = c
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: "log-probe".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(err.is_err());
    let mut text = String::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !text.contains("\"log-probe\"") {
        let n = tokio::time::timeout_at(deadline, log.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no log line about log-probe; got {text:?}"))
            .unwrap();
        assert!(n > 0, "the log stream ended; got {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = text.lines().find(|l| l.contains("\"log-probe\"")).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("StartContainer"), "{line}");
}

#[tokio::test(flavor = "current_thread")]
async fn execs_that_cannot_start_fail_clearly_and_their_wait_ends() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let spec = common::busybox::spec(&["sleep", "1000"]);
    let _init_out = common::busybox::create(&c, &agent, "nostart", &spec).await;
    common::busybox::start(&c, "nostart").await;
    let start_exec = |exec_id: &str, args: &[&str]| {
        let process = serde_json::json!({
            "args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}
        });
        let exec_id = exec_id.to_string();
        let c = c.clone();
        async move {
            c.exec_process(
                ctx(),
                &ExecProcessRequest {
                    container_id: "nostart".into(),
                    exec_id: exec_id.clone(),
                    oci_process_json: process.to_string().into_bytes(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            c.start_exec(
                ctx(),
                &StartExecRequest {
                    container_id: "nostart".into(),
                    exec_id,
                    ..Default::default()
                },
            )
            .await
        }
    };
    let status_of = |result| {
        let s = common::rpc_status(result);
        (s.code(), s.message)
    };

    // A missing executable: the error names it, and WaitProcess answers 255 instead of hanging.
    let (code, message) = status_of(start_exec("missing", &["no-such-program"]).await);
    assert_eq!(code, Code::FAILED_PRECONDITION, "{message}");
    assert!(message.contains("no-such-program"), "{message}");
    assert_eq!(wait(&c, "nostart", "missing").await, 255);

    // A paused container: the exec is refused (its set-up would freeze with the container).
    c.pause_container(
        ctx(),
        &PauseContainerRequest {
            container_id: "nostart".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (code, message) = status_of(start_exec("paused", &["true"]).await);
    assert_eq!(code, Code::FAILED_PRECONDITION, "{message}");
    assert!(message.contains("paused"), "{message}");
    c.resume_container(
        ctx(),
        &ResumeContainerRequest {
            container_id: "nostart".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Resumed, the same exec starts.
    c.start_exec(
        ctx(),
        &StartExecRequest {
            container_id: "nostart".into(),
            exec_id: "paused".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(wait(&c, "nostart", "paused").await, 0);
    remove(&c, "nostart").await;
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_creates_with_one_id_make_one_container() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let request = CreateContainerRequest {
        container_id: "twin".into(),
        oci_spec_json: common::busybox::spec(&["sleep", "1000"])
            .to_string()
            .into_bytes(),
        rootfs_path: "c/rootfs".into(),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        c.create_container(ctx(), &request),
        c.create_container(ctx(), &request)
    );
    let refused = match (a, b) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (a, b) => panic!("expected one success and one refusal, got {a:?} and {b:?}"),
    };
    let s = common::rpc_status::<()>(Err(refused));
    assert_eq!(s.code(), Code::ALREADY_EXISTS, "{}", s.message);
    remove(&c, "twin").await;
    // The id is free again.
    c.create_container(ctx(), &request).await.unwrap();
    remove(&c, "twin").await;
}

#[tokio::test(flavor = "current_thread")]
async fn exited_execs_are_removed_and_bounded() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let spec = common::busybox::spec(&["sleep", "1000"]);
    let _init_out = common::busybox::create(&c, &agent, "execs", &spec).await;
    common::busybox::start(&c, "execs").await;
    let remove_process = |exec_id: &str| RemoveProcessRequest {
        container_id: "execs".into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };

    let (_pid, _out) = common::busybox::exec(&c, &agent, "execs", "long", &["sleep", "600"]).await;
    let s = common::rpc_status(c.remove_process(ctx(), &remove_process("long")).await);
    assert_eq!(s.code(), Code::FAILED_PRECONDITION, "a running exec");

    let (_pid, _out) = common::busybox::exec(&c, &agent, "execs", "short", &["true"]).await;
    assert_eq!(wait(&c, "execs", "short").await, 0);
    c.remove_process(ctx(), &remove_process("short"))
        .await
        .unwrap();
    let waited = c
        .wait_process(
            ctx(),
            &WaitProcessRequest {
                container_id: "execs".into(),
                exec_id: "short".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        common::rpc_status(waited).code(),
        Code::NOT_FOUND,
        "a removed exec"
    );

    // A host that never removes its execs (a probe every few seconds for days) leaves the agent
    // with a bounded number: the oldest exited ones are forgotten. Hundreds of execs take a while
    // in the nested lab, so this part runs against a local agent only.
    if agent.is_remote() {
        remove(&c, "execs").await;
        return;
    }
    for i in 0..300 {
        let exec_id = format!("probe{i}");
        let (_pid, _out) = common::busybox::exec(&c, &agent, "execs", &exec_id, &["true"]).await;
        assert_eq!(wait(&c, "execs", &exec_id).await, 0);
    }
    let s = common::rpc_status(c.remove_process(ctx(), &remove_process("probe0")).await);
    assert_eq!(s.code(), Code::NOT_FOUND, "the oldest exec was forgotten");
    c.remove_process(ctx(), &remove_process("probe299"))
        .await
        .unwrap();
    remove(&c, "execs").await;
}

#[tokio::test(flavor = "current_thread")]
async fn start_waits_for_the_streams_and_can_be_retried() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    let spec = common::busybox::spec(&["sleep", "1000"]);
    let _init_out = common::busybox::create(&c, &agent, "retry", &spec).await;
    common::busybox::start(&c, "retry").await;
    let process = serde_json::json!({
        "args": ["echo", "connected late"], "env": ["PATH=/bin"], "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    });
    let ports = c
        .exec_process(
            ctx(),
            &ExecProcessRequest {
                container_id: "retry".into(),
                exec_id: "late".into(),
                oci_process_json: process.to_string().into_bytes(),
                stdio: Some(StdioRequest {
                    stdout: true,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .stdio_ports
        .unwrap();
    let start = StartExecRequest {
        container_id: "retry".into(),
        exec_id: "late".into(),
        ..Default::default()
    };
    // The stdout stream is not connected: Start fails after its wait, and consumes nothing.
    let s = common::rpc_status(c.start_exec(ctx(), &start).await);
    assert_eq!(s.code(), Code::FAILED_PRECONDITION, "{}", s.message);
    assert!(s.message.contains("stdout"), "{}", s.message);
    let out = tokio::spawn(read_all(agent.open_stream(ports.stdout_port).await));
    c.start_exec(ctx(), &start).await.unwrap();
    assert_eq!(wait(&c, "retry", "late").await, 0);
    assert_eq!(out.await.unwrap(), b"connected late\n");
    remove(&c, "retry").await;
}

#[tokio::test(flavor = "current_thread")]
async fn device_nodes_outside_the_allowed_set_cannot_be_opened() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    // Root with CAP_MKNOD may create any node (as with runc), but opening one is up to the
    // device rules: /dev/zero is in the default set, /dev/console (5:1) and a virtio disk
    // (254:0) are not.
    let script = "mknod /dev/zero2 c 1 5 && head -c 3 /dev/zero2 | wc -c; \
                  mknod /dev/console2 c 5 1 && (: > /dev/console2) 2>&1; \
                  mknod /dev/vda9 b 254 0 && (head -c 1 /dev/vda9 >/dev/null) 2>&1; echo done";
    let mut spec = common::busybox::spec(&["sh", "-c", script]);
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_MKNOD"], "effective": ["CAP_MKNOD"], "permitted": ["CAP_MKNOD"]
    });
    // containerd's rule list: deny everything (the defaults still come after it).
    spec["linux"]["resources"] =
        serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]});
    let run = create_with_spec(
        &c,
        &agent,
        "dev",
        spec.to_string().into_bytes(),
        false,
        false,
    )
    .await;
    assert_eq!(start_and_wait(&c, "dev").await, 0);
    let text = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "3", "{text}");
    for denied in &lines[1..3] {
        assert!(denied.contains("Operation not permitted"), "{text}");
    }
    assert_eq!(lines[3], "done", "{text}");
    remove(&c, "dev").await;

    // UpdateContainer replaces the rules: the console becomes writable for a running container.
    let mut spec =
        common::busybox::spec(&["sh", "-c", "mknod /dev/console2 c 5 1 && exec sleep 1000"]);
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_MKNOD"], "effective": ["CAP_MKNOD"], "permitted": ["CAP_MKNOD"]
    });
    let _out = common::busybox::create(&c, &agent, "dev2", &spec).await;
    common::busybox::start(&c, "dev2").await;
    // (The init makes the node once it runs: wait for it, or `>` would create a plain file.)
    let open_console =
        "while [ ! -c /dev/console2 ]; do sleep 0.1; done; (: > /dev/console2) 2>&1; echo done";
    let (_pid, out) =
        common::busybox::exec(&c, &agent, "dev2", "before", &["sh", "-c", open_console]).await;
    assert_eq!(wait(&c, "dev2", "before").await, 0);
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    assert!(text.contains("Operation not permitted"), "{text}");
    let update = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rw"}
    ]});
    c.update_container(
        ctx(),
        &UpdateContainerRequest {
            container_id: "dev2".into(),
            oci_resources_json: update.to_string().into_bytes(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_pid, out) =
        common::busybox::exec(&c, &agent, "dev2", "after", &["sh", "-c", open_console]).await;
    assert_eq!(wait(&c, "dev2", "after").await, 0);
    assert_eq!(out.await.unwrap(), b"done\n");
    remove(&c, "dev2").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_terminal_is_a_tty_of_the_container_itself() {
    let Some(agent) = start_agent() else {
        return;
    };
    let c = agent.client().await;
    // The pty lives in the container's own devpts: `tty` names it and the node is there.
    let script = "tty && test -c \"$(tty)\" && echo is-a-node";
    let run = create(&c, &agent, "ttyown", &["sh", "-c", script], false, true).await;
    assert_eq!(start_and_wait(&c, "ttyown").await, 0);
    let text = String::from_utf8(run.stdout.await.unwrap()).unwrap();
    assert_eq!(text, "/dev/pts/0\r\nis-a-node\r\n");

    // The same for an exec with a terminal, in a running container.
    let _sleeper = create(&c, &agent, "ttyexec", &["sleep", "1000"], false, false).await;
    c.start_container(
        ctx(),
        &StartContainerRequest {
            container_id: "ttyexec".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let process = serde_json::json!({
        "terminal": true, "args": ["sh", "-c", script], "env": ["PATH=/bin"], "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    });
    let stdio = StdioRequest {
        stdout: true,
        terminal: true,
        ..Default::default()
    };
    let (_pid, out) = common::busybox::exec_with(&c, &agent, "ttyexec", "t", &process, stdio).await;
    assert_eq!(wait(&c, "ttyexec", "t").await, 0);
    let text = String::from_utf8(out.await.unwrap()).unwrap();
    assert!(
        text.starts_with("/dev/pts/") && text.ends_with("\r\nis-a-node\r\n"),
        "{text:?}"
    );
    remove(&c, "ttyown").await;
    remove(&c, "ttyexec").await;
}
