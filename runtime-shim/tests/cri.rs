//! Tier 1 CRI tests: a real CRI client (the `k8s-cri` crate over gRPC, as kubelet talks to
//! containerd) against a real containerd with its CRI plugin, Debian's bridge CNI plugin on a
//! network private to the test, locally built pause and busybox images, and two runtime
//! handlers: `runc` and `hull` (host-agent mode). Every scenario runs for both handlers in the
//! same run; where the behaviour must be the same, hull's observations are compared with runc's.
//! After each scenario nothing may be left: no pod, container, netns, mount, process, cgroup,
//! hull run-dir entry, CNI reservation or cached CNI result.
//!
//! Needs root, containerd, runc, busybox-static, containernetworking-plugins, iproute2, gcc,
//! python3 and a built hull-agent (`cargo build -p hull-agent`). A missing piece prints SKIPPED,
//! or fails the test when `CI` or `HULL_REQUIRE_CRI` is set.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test cri -- --nocapture`
//! Only some handlers: `HULL_CRI_HANDLERS=runc` (default `runc,hull`); only some scenarios:
//! `HULL_CRI_SCENARIOS=exec,logs` (names as printed).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::containerd::{containerd_or_skip, Containerd, Options, IMAGE, PAUSE_IMAGE};
use common::cri::{
    api, container_config, log_path, mount, pod_config, read_log, short, Cri, CriResult, CriTestExt,
};

/// What a scenario saw that must be the same under every handler.
type Observed = Vec<String>;
type Scenario = fn(&Ctx) -> Observed;

/// One scenario run with one handler.
struct Ctx<'a> {
    c: &'a Containerd,
    cri: &'a Cri,
    handler: &'a str,
    /// A fresh directory for this scenario and handler (volumes, logs).
    work: PathBuf,
}

impl Ctx<'_> {
    /// A pod config named `<name>-<handler>` with its log directory under `work`.
    fn pod(&self, name: &str) -> api::PodSandboxConfig {
        let name = format!("{name}-{}", self.handler);
        let logs = self.work.join("logs").join(&name);
        std::fs::create_dir_all(&logs).unwrap();
        pod_config(&name, &logs, &Containerd::cgroup_parent())
    }

    fn run_pod(&self, cfg: &api::PodSandboxConfig) -> String {
        self.cri.run_pod(cfg, self.handler).unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {} (handler {}): {e}",
                cfg.hostname, self.handler
            )
        })
    }

    fn start(
        &self,
        pod: &str,
        pod_cfg: &api::PodSandboxConfig,
        cfg: &api::ContainerConfig,
    ) -> String {
        let name = &cfg.metadata.as_ref().unwrap().name;
        let id = self
            .cri
            .create_container(pod, cfg, pod_cfg)
            .unwrap_or_else(|e| panic!("CreateContainer {name} (handler {}): {e}", self.handler));
        self.cri
            .start(&id)
            .unwrap_or_else(|e| panic!("StartContainer {name} (handler {}): {e}", self.handler));
        id
    }

    /// A container `name` that sleeps, with these volumes.
    fn sleeper(
        &self,
        pod: &str,
        pod_cfg: &api::PodSandboxConfig,
        name: &str,
        mounts: Vec<api::Mount>,
    ) -> String {
        let mut cfg = container_config(name, IMAGE, &["sleep", "3600"]);
        cfg.mounts = mounts;
        self.start(pod, pod_cfg, &cfg)
    }

    /// StopPodSandbox then RemovePodSandbox, both must succeed.
    fn remove_pod(&self, id: &str) {
        self.cri
            .stop_pod(id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {} ({}): {e}", short(id), self.handler));
        self.cri
            .remove_pod(id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {} ({}): {e}", short(id), self.handler));
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn log_dir(cfg: &api::PodSandboxConfig) -> PathBuf {
    PathBuf::from(&cfg.log_directory)
}

/// Polls `f` until it returns Some, for at most `timeout`.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An error as kubelet tells errors apart: it acts on NotFound (the object is gone: stop and
/// remove succeed) and DeadlineExceeded (an exec probe timed out); any other code is just "an
/// error" to it, so runc's Unknown and a more precise code from hull count as the same.
fn error_kind(e: &common::cri::CriError) -> String {
    match e.code {
        tonic::Code::NotFound | tonic::Code::DeadlineExceeded => format!("error {:?}", e.code),
        _ => "error".into(),
    }
}

/// An ExecSync result as an observation: exit code and output, or the kind of error.
fn exec_obs(r: &CriResult<common::cri::Exec>) -> String {
    match r {
        Ok(e) => format!(
            "exit {} stdout {:?} stderr {:?}",
            e.code, e.stdout, e.stderr
        ),
        Err(e) => error_kind(e),
    }
}

/// A CRI call's result as an observation: ok, or the kind of error.
fn call_obs<T>(r: &CriResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => error_kind(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// RunPodSandbox: the pod is ready, has an address from the test's CNI network and a netns.
fn scenario_run_pod(x: &Ctx) -> Observed {
    let cfg = x.pod("runp");
    let id = x.run_pod(&cfg);
    let st = x.cri.pod_status(&id).unwrap();
    assert_eq!(
        st.state,
        api::PodSandboxState::SandboxReady as i32,
        "pod not ready: {st:?}"
    );
    assert_eq!(st.runtime_handler, x.handler);
    let ip: Ipv4Addr = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("pod has no IPv4 address ({e}): {st:?}"));
    assert_eq!(
        ip.octets()[..3],
        [10, 213, (std::process::id() % 250) as u8],
        "{ip} is not from the test's network"
    );
    let netns: Vec<_> = std::fs::read_dir(x.c.netns_dir())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(netns.len(), 1, "netns mounts: {netns:?}");
    // The check for leftovers after each scenario sees a running pod.
    assert!(!x.c.processes().is_empty(), "no process of the pod found");
    if x.handler == "hull" {
        let dir = x.c.hull_run_dir().join(&id);
        assert!(dir.exists(), "no hull sandbox dir {}", dir.display());
    }
    x.remove_pod(&id);
    vec!["ready, address from the CNI network, one netns".into()]
}

/// Two containers in one pod see the same hostname, IPC objects and /dev/shm.
fn scenario_shared_pod(x: &Ctx) -> Observed {
    let cfg = x.pod("share");
    let pod = x.run_pod(&cfg);
    let a = x.sleeper(&pod, &cfg, "a", vec![]);
    let b = x.start(
        &pod,
        &cfg,
        &container_config("b", IMAGE, &["sh", "-c", "exec sleep 3601"]),
    );
    let mut obs = Vec::new();

    // pid: CONTAINER (kubelet's default): each container has its own process namespace.
    let own = x.cri.sh(&b, "ps -o args | grep -c '^[s]leep 3601'");
    assert_eq!(own.trim(), "1", "b does not see its own process");
    let other = x
        .cri
        .exec_sync(&a, &["sh", "-c", "ps -o args | grep -c '^[s]leep 3601'"])
        .unwrap();
    assert_eq!(other.stdout.trim(), "0", "a sees b's processes: {other:?}");
    obs.push("each container has its own process namespace".into());

    let ha = x.cri.sh(&a, "hostname");
    let hb = x.cri.sh(&b, "hostname");
    assert_eq!(ha.trim(), cfg.hostname, "hostname in a");
    assert_eq!(hb.trim(), cfg.hostname, "hostname in b");
    obs.push("both containers have the pod's hostname".into());

    // System V IPC: a message queue and a shared memory segment made in a are listed in b.
    for (flag, list) in [
        ("-Q", "/proc/sysvipc/msg"),
        ("-M 4096", "/proc/sysvipc/shm"),
    ] {
        let made = x.cri.sh(&a, &format!("ipcmk {flag}"));
        let ipc_id = made
            .rsplit(':')
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        assert!(
            ipc_id.parse::<u32>().is_ok(),
            "ipcmk {flag} printed {made:?}"
        );
        let listed = x.cri.sh(&b, &format!("cat {list}"));
        let ids: Vec<&str> = listed
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert!(
            ids.contains(&ipc_id.as_str()),
            "ipcmk {flag} in a made id {ipc_id}; b's {list}: {listed:?}"
        );
        obs.push(format!("ipcmk {flag} in a is listed in b"));
    }

    x.cri.sh(&a, "echo shared-by-a > /dev/shm/from-a");
    let seen = x.cri.sh(&b, "cat /dev/shm/from-a");
    assert_eq!(
        seen, "shared-by-a\n",
        "/dev/shm file written by a, read in b"
    );
    x.cri.sh(&b, "echo shared-by-b > /dev/shm/from-b");
    assert_eq!(x.cri.sh(&a, "cat /dev/shm/from-b"), "shared-by-b\n");
    let fstype = x
        .cri
        .sh(&a, "grep ' /dev/shm ' /proc/mounts | cut -d' ' -f3");
    obs.push(format!(
        "/dev/shm shared both ways, fstype {}",
        fstype.trim()
    ));
    x.remove_pod(&pod);
    obs
}

/// The `..data` layout of kubelet's atomic writer for one key.
fn atomic_write(dir: &Path, stamp: &str, value: &str) {
    let ts = dir.join(stamp);
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join("key"), value).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(stamp, &tmp).unwrap();
    // The swap itself: one rename over `..data`.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("key").exists() {
        std::os::unix::fs::symlink("..data/key", dir.join("key")).unwrap();
    }
}

/// emptyDir shared by two containers, a read-only hostPath, a configMap-style `..data` swap.
fn scenario_volumes(x: &Ctx) -> Observed {
    let empty = x.dir("empty");
    let ro = x.dir("ro");
    std::fs::write(ro.join("data.txt"), "read-only data\n").unwrap();
    let cm = x.dir("configmap");
    let first = "..2026_12_02_10_00_00.000000001";
    atomic_write(&cm, first, "value-1");

    let cfg = x.pod("vol");
    let pod = x.run_pod(&cfg);
    let a = x.sleeper(
        &pod,
        &cfg,
        "a",
        vec![
            mount(&empty, "/empty", false),
            mount(&ro, "/ro", true),
            mount(&cm, "/config", true),
        ],
    );
    let b = x.sleeper(&pod, &cfg, "b", vec![mount(&empty, "/empty", false)]);
    let mut obs = Vec::new();

    x.cri.sh(&a, "echo from-a > /empty/a.txt");
    assert_eq!(x.cri.sh(&b, "cat /empty/a.txt"), "from-a\n");
    x.cri.sh(&b, "echo from-b > /empty/b.txt");
    assert_eq!(x.cri.sh(&a, "cat /empty/b.txt"), "from-b\n");
    assert_eq!(
        std::fs::read_to_string(empty.join("b.txt")).ok().as_deref(),
        Some("from-b\n"),
        "the host sees the emptyDir file"
    );
    obs.push("emptyDir shared by a, b and the host".into());

    assert_eq!(x.cri.sh(&a, "cat /ro/data.txt"), "read-only data\n");
    let write = x.cri.exec_sync(&a, &["touch", "/ro/new"]).unwrap();
    assert_ne!(
        write.code, 0,
        "write to a read-only hostPath worked: {write:?}"
    );
    assert!(
        write.stderr.contains("Read-only file system"),
        "write to the read-only hostPath: {write:?}"
    );
    assert!(!ro.join("new").exists());
    obs.push(format!(
        "read-only hostPath: read ok, write fails ({})",
        write.stderr.trim()
    ));

    assert_eq!(x.cri.sh(&a, "cat /config/key"), "value-1");
    let write = x.cri.exec_sync(&a, &["touch", "/config/new"]).unwrap();
    assert_ne!(write.code, 0, "write to the read-only configMap: {write:?}");
    atomic_write(&cm, "..2026_12_02_10_00_01.000000002", "value-2");
    std::fs::remove_dir_all(cm.join(first)).unwrap();
    let seen = poll(Duration::from_secs(5), || {
        let v = x.cri.exec_sync(&a, &["cat", "/config/key"]).ok()?;
        (v.stdout == "value-2").then_some(())
    });
    assert!(
        seen.is_some(),
        "after the ..data swap the container reads {:?}",
        x.cri.exec_sync(&a, &["cat", "/config/key"])
    );
    let listing = x.cri.sh(&a, "ls -a /config | sort | tr '\\n' ' '");
    obs.push(format!(
        "configMap ..data swap seen; ls -a: {}",
        listing.trim()
    ));
    x.remove_pod(&pod);
    obs
}

/// ExecSync: exit codes, stdout and stderr apart, large output, a missing binary, a timeout.
fn scenario_exec(x: &Ctx) -> Observed {
    let cfg = x.pod("exec");
    let pod = x.run_pod(&cfg);
    let c = x.sleeper(&pod, &cfg, "c", vec![]);
    let mut obs = Vec::new();

    let r = x
        .cri
        .exec_sync(&c, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let e = r.as_ref().unwrap_or_else(|e| panic!("ExecSync: {e}"));
    assert_eq!(
        (e.code, e.stdout.as_str(), e.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    obs.push(exec_obs(&r));

    for cmd in [&["true"][..], &["sh", "-c", "exit 255"], &["false"]] {
        let r = x.cri.exec_sync(&c, cmd);
        assert!(r.is_ok(), "ExecSync {cmd:?}: {r:?}");
        obs.push(format!("{cmd:?}: {}", exec_obs(&r)));
    }

    let r = x.cri.exec_sync(&c, &["seq", "1", "20000"]).unwrap();
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.lines().count(), 20000, "large output cut");
    assert_eq!(r.stdout.lines().last(), Some("20000"));
    obs.push("20000 lines of output arrive whole".into());

    let r = x.cri.exec_sync(&c, &["/no/such/binary"]);
    obs.push(format!("missing binary: {}", call_obs(&r)));

    let started = Instant::now();
    let r = x.cri.exec_sync_timeout(&c, &["sleep", "30"], 1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "ExecSync timeout 1 s took {took:?}"
    );
    assert!(r.is_err(), "ExecSync past its timeout: {r:?}");
    obs.push(format!("timeout 1 s: {} within 10 s", call_obs(&r)));

    // The container is still usable after all that.
    assert_eq!(x.cri.sh(&c, "echo still-here"), "still-here\n");
    x.remove_pod(&pod);
    obs
}

fn stream_lines(lines: &[common::cri::LogLine], stream: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| format!("{} {}", l.tag, l.text))
        .collect()
}

/// Container logs: CRI's log file gets stdout and stderr lines in CRI format; ReopenContainerLog
/// after the file was rotated away makes a new file that gets the later lines.
fn scenario_logs(x: &Ctx) -> Observed {
    let cfg = x.pod("logs");
    let pod = x.run_pod(&cfg);
    let script = "echo line1; echo err1 >&2; echo line2; \
        while [ ! -e /tmp/go ]; do sleep 0.1; done; \
        echo after-reopen; echo err2 >&2; exec sleep 3600";
    let c = x.start(
        &pod,
        &cfg,
        &container_config("logger", IMAGE, &["sh", "-c", script]),
    );
    let path = log_path(&log_dir(&cfg), "logger");
    let st = x.cri.status(&c).unwrap();
    assert_eq!(Path::new(&st.log_path), path, "ContainerStatus.log_path");

    let want_first = (
        vec!["F line1".to_string(), "F line2".to_string()],
        vec!["F err1".to_string()],
    );
    let got = poll(Duration::from_secs(10), || {
        let lines = read_log(&path);
        let got = (
            stream_lines(&lines, "stdout"),
            stream_lines(&lines, "stderr"),
        );
        (got == want_first).then_some(got)
    });
    assert!(
        got.is_some(),
        "log {} has {:?}",
        path.display(),
        std::fs::read_to_string(&path)
    );

    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    x.cri
        .reopen_log(&c)
        .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}"));
    x.cri.sh(&c, "touch /tmp/go");
    let want_second = (
        vec!["F after-reopen".to_string()],
        vec!["F err2".to_string()],
    );
    let got = poll(Duration::from_secs(10), || {
        let lines = read_log(&path);
        let got = (
            stream_lines(&lines, "stdout"),
            stream_lines(&lines, "stderr"),
        );
        (got == want_second).then_some(got)
    });
    assert!(
        got.is_some(),
        "reopened log {} has {:?}",
        path.display(),
        std::fs::read_to_string(&path)
    );
    let old = read_log(&rotated);
    assert!(
        !old.iter().any(|l| l.text == "after-reopen"),
        "the rotated log got lines after the reopen: {old:?}"
    );

    // A container that exits: its lines are all there once it has exited.
    let done = x.start(
        &pod,
        &cfg,
        &container_config("short", IMAGE, &["sh", "-c", "echo bye; echo bye-err >&2"]),
    );
    let st = x.cri.wait_exited(&done, Duration::from_secs(20));
    assert_eq!(st.exit_code, 0);
    let lines = read_log(&log_path(&log_dir(&cfg), "short"));
    assert_eq!(stream_lines(&lines, "stdout"), ["F bye"]);
    assert_eq!(stream_lines(&lines, "stderr"), ["F bye-err"]);
    x.remove_pod(&pod);
    vec![
        format!("{want_first:?}"),
        format!("after reopen {want_second:?}"),
        "exited container's lines complete".into(),
    ]
}

/// Termination message: kubelet binds a host file at the container's terminationMessagePath; the
/// container writes it and the host file has the message.
fn scenario_termination_message(x: &Ctx) -> Observed {
    let dir = x.dir("term");
    let file = dir.join("termination-log");
    std::fs::write(&file, "").unwrap();
    let cfg = x.pod("term");
    let pod = x.run_pod(&cfg);
    let mut ccfg = container_config(
        "dying",
        IMAGE,
        &[
            "sh",
            "-c",
            "printf 'goodbye: disk full' > /dev/termination-log; exit 2",
        ],
    );
    ccfg.mounts = vec![mount(&file, "/dev/termination-log", false)];
    let c = x.start(&pod, &cfg, &ccfg);
    let st = x.cri.wait_exited(&c, Duration::from_secs(20));
    assert_eq!(st.exit_code, 2, "{st:?}");
    let msg = std::fs::read_to_string(&file).unwrap();
    assert_eq!(msg, "goodbye: disk full");
    x.remove_pod(&pod);
    vec![format!("exit {}, host file has {msg:?}", st.exit_code)]
}

/// StopContainer with a grace period: SIGTERM first (a container that traps it exits by it),
/// SIGKILL after the timeout for one that ignores it; stopping again succeeds.
fn scenario_stop_grace(x: &Ctx) -> Observed {
    let cfg = x.pod("stop");
    let pod = x.run_pod(&cfg);
    let traps = "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    let ignores = "trap '' TERM; echo ready; while true; do sleep 0.1; done";
    let t = x.start(
        &pod,
        &cfg,
        &container_config("traps", IMAGE, &["sh", "-c", traps]),
    );
    let i = x.start(
        &pod,
        &cfg,
        &container_config("ignores", IMAGE, &["sh", "-c", ignores]),
    );
    for name in ["traps", "ignores"] {
        let path = log_path(&log_dir(&cfg), name);
        let ready = poll(Duration::from_secs(10), || {
            read_log(&path)
                .iter()
                .any(|l| l.text == "ready")
                .then_some(())
        });
        assert!(ready.is_some(), "{name} never printed ready");
    }
    let mut obs = Vec::new();

    let started = Instant::now();
    x.cri
        .stop(&t, 10)
        .unwrap_or_else(|e| panic!("StopContainer traps: {e}"));
    let took = started.elapsed();
    let st = x.cri.status(&t).unwrap();
    assert_eq!(st.state, api::ContainerState::ContainerExited as i32);
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM-trapping container took {took:?}"
    );
    assert_eq!(st.exit_code, 0, "{st:?}");
    let lines = read_log(&log_path(&log_dir(&cfg), "traps"));
    assert!(lines.iter().any(|l| l.text == "got-term"), "{lines:?}");
    obs.push(format!(
        "trapping container: exit {} by SIGTERM, reason {}",
        st.exit_code, st.reason
    ));

    let started = Instant::now();
    x.cri
        .stop(&i, 2)
        .unwrap_or_else(|e| panic!("StopContainer ignores: {e}"));
    let took = started.elapsed();
    let st = x.cri.status(&i).unwrap();
    assert_eq!(st.state, api::ContainerState::ContainerExited as i32);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "SIGTERM-ignoring container with a 2 s grace period stopped after {took:?}"
    );
    assert_eq!(st.exit_code, 137, "{st:?}");
    obs.push(format!(
        "ignoring container: exit {} after the grace period, reason {}",
        st.exit_code, st.reason
    ));

    for (name, id) in [("traps", &t), ("ignores", &i)] {
        let r = x.cri.stop(id, 1);
        assert!(r.is_ok(), "StopContainer {name} again: {r:?}");
    }
    x.remove_pod(&pod);
    obs
}

/// Stop and remove in kubelet's orders, each again on an already stopped or removed object.
fn scenario_stop_remove_twice(x: &Ctx) -> Observed {
    let cfg = x.pod("twice");
    let pod = x.run_pod(&cfg);
    let running = x.sleeper(&pod, &cfg, "running", vec![]);
    let created = x
        .cri
        .create_container(
            &pod,
            &container_config("created", IMAGE, &["sleep", "3600"]),
            &cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    let mut obs = Vec::new();

    x.cri
        .stop_pod(&pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    let st = x.cri.pod_status(&pod).unwrap();
    assert_eq!(st.state, api::PodSandboxState::SandboxNotready as i32);
    let rs = x.cri.status(&running).unwrap();
    assert_eq!(
        rs.state,
        api::ContainerState::ContainerExited as i32,
        "{rs:?}"
    );
    let cs = x.cri.status(&created).unwrap();
    obs.push(format!(
        "after StopPodSandbox: running container exit {}, created one state {}",
        rs.exit_code, cs.state
    ));
    let r = x.cri.stop_pod(&pod);
    assert!(r.is_ok(), "StopPodSandbox again: {r:?}");
    let r = x.cri.stop(&running, 0);
    assert!(r.is_ok(), "StopContainer on a stopped container: {r:?}");
    let r = x.cri.remove(&running);
    assert!(r.is_ok(), "RemoveContainer: {r:?}");
    let r = x.cri.remove(&running);
    obs.push(format!("RemoveContainer again: {}", call_obs(&r)));
    x.cri
        .remove_pod(&pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    let r = x.cri.remove_pod(&pod);
    assert!(r.is_ok(), "RemovePodSandbox again: {r:?}");
    let r = x.cri.pod_status(&pod);
    assert_eq!(
        r.as_ref().err().map(|e| e.code),
        Some(tonic::Code::NotFound),
        "PodSandboxStatus of a removed pod: {r:?}"
    );
    let r = x.cri.stop_pod(&pod);
    obs.push(format!("StopPodSandbox of a removed pod: {}", call_obs(&r)));
    let r = x.cri.status(&created);
    obs.push(format!(
        "the created container after RemovePodSandbox: {}",
        call_obs(&r)
    ));

    // The other order: RemovePodSandbox of a running pod (CRI stops it first).
    let cfg = x.pod("twice2");
    let pod = x.run_pod(&cfg);
    x.sleeper(&pod, &cfg, "c", vec![]);
    let r = x.cri.remove_pod(&pod);
    obs.push(format!("RemovePodSandbox of a ready pod: {}", call_obs(&r)));
    if r.is_err() {
        x.remove_pod(&pod);
    }
    obs
}

/// RemoveContainer of a running container, without StopContainer first.
fn scenario_remove_running(x: &Ctx) -> Observed {
    let cfg = x.pod("rmrun");
    let pod = x.run_pod(&cfg);
    let c = x.sleeper(&pod, &cfg, "victim", vec![]);
    let other = x.sleeper(&pod, &cfg, "other", vec![]);
    x.cri
        .remove(&c)
        .unwrap_or_else(|e| panic!("RemoveContainer of a running container: {e}"));
    let r = x.cri.status(&c);
    assert_eq!(
        r.as_ref().err().map(|e| e.code),
        Some(tonic::Code::NotFound),
        "{r:?}"
    );
    assert_eq!(x.cri.sh(&other, "echo alive"), "alive\n");
    let st = x.cri.pod_status(&pod).unwrap();
    assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
    x.remove_pod(&pod);
    vec!["removed while running; the pod and its other container go on".into()]
}

/// 20 pods created, used and removed concurrently; the check after the scenario proves that
/// nothing is left.
fn scenario_concurrent_pods(x: &Ctx) -> Observed {
    const N: usize = 20;
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                s.spawn(move || -> Result<(), String> {
                    let cfg = x.pod(&format!("conc{i}"));
                    let pod = x
                        .cri
                        .run_pod(&cfg, x.handler)
                        .map_err(|e| format!("pod {i}: RunPodSandbox: {e}"))?;
                    let result = (|| {
                        let c = x
                            .cri
                            .create_and_start(
                                &pod,
                                &container_config("c", IMAGE, &["sleep", "3600"]),
                                &cfg,
                            )
                            .map_err(|e| format!("create/start: {e}"))?;
                        let e = x
                            .cri
                            .exec_sync(&c, &["echo", &i.to_string()])
                            .map_err(|e| format!("ExecSync: {e}"))?;
                        if e.stdout != format!("{i}\n") {
                            return Err(format!("ExecSync: {e:?}"));
                        }
                        Ok(())
                    })();
                    let stop = x
                        .cri
                        .stop_pod(&pod)
                        .map_err(|e| format!("StopPodSandbox: {e}"));
                    let remove = x
                        .cri
                        .remove_pod(&pod)
                        .map_err(|e| format!("RemovePodSandbox: {e}"));
                    result
                        .and(stop)
                        .and(remove)
                        .map_err(|e| format!("pod {i}: {e}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    eprintln!(
        "  {N} pods with {} run, exec'd and removed concurrently in {:?}",
        x.handler,
        started.elapsed()
    );
    assert!(
        errors.is_empty(),
        "{} of {N} pods failed: {}",
        errors.len(),
        distinct(&errors)
    );
    vec![format!("{N} concurrent pods ok")]
}

/// The distinct messages among `errors` (ids and pod numbers blanked), with their counts.
fn distinct(errors: &[String]) -> String {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in errors {
        let blanked: String = e
            .split_inclusive(|c: char| !c.is_ascii_alphanumeric())
            .map(|word| {
                let w = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                if w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                    word.replacen(w, "<id>", 1)
                } else {
                    word.to_string()
                }
            })
            .collect();
        let blanked = match blanked.split_once(": ") {
            Some((pod, rest)) if pod.starts_with("pod ") => rest.to_string(),
            _ => blanked,
        };
        *seen.entry(blanked).or_default() += 1;
    }
    seen.into_iter()
        .map(|(e, n)| format!("\n  {n} x {e}"))
        .collect()
}

/// Bad input gets an error that names what is wrong.
fn scenario_bad_input(x: &Ctx) -> Observed {
    let mut obs = Vec::new();
    let cfg = x.pod("bad");
    let unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let r = x
        .cri
        .create_container(unknown, &container_config("c", IMAGE, &["true"]), &cfg);
    let e = r.expect_err("CreateContainer in an unknown pod");
    assert!(e.message.contains(unknown), "{e}");
    obs.push(format!(
        "CreateContainer in an unknown pod: {}",
        error_kind(&e)
    ));
    let r = x
        .cri
        .create_container("", &container_config("c", IMAGE, &["true"]), &cfg);
    obs.push(format!(
        "CreateContainer without a pod id: {}",
        call_obs(&r)
    ));
    assert!(r.is_err());
    let r = x.cri.pod_status(unknown);
    obs.push(format!(
        "PodSandboxStatus of an unknown pod: {}",
        call_obs(&r)
    ));

    // A hostPath whose source is gone by StartContainer (containerd itself creates a missing
    // source at CreateContainer, so the runtime only meets one that vanished in between).
    let pod = x.run_pod(&cfg);
    let gone = x.dir("vanishing");
    let mut ccfg = container_config("c", IMAGE, &["sleep", "3600"]);
    ccfg.mounts = vec![mount(&gone, "/data", false)];
    let c = x
        .cri
        .create_container(&pod, &ccfg, &cfg)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    std::fs::remove_dir(&gone).unwrap();
    let r = x.cri.start(&c);
    let e = r.expect_err("StartContainer with a hostPath source that does not exist");
    assert!(
        e.message.contains(gone.to_str().unwrap()),
        "the error does not name the missing source {}: {e}",
        gone.display()
    );
    obs.push(format!(
        "StartContainer with a missing hostPath source: {}",
        error_kind(&e)
    ));
    eprintln!("  [{}] missing hostPath source: {e}", x.handler);
    let r = x.cri.remove(&c);
    assert!(r.is_ok(), "RemoveContainer after the failed start: {r:?}");
    // The pod survives its container's failed start.
    let st = x.cri.pod_status(&pod).unwrap();
    assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
    let c = x.sleeper(&pod, &cfg, "c2", vec![]);
    assert_eq!(x.cri.sh(&c, "echo ok"), "ok\n");
    x.remove_pod(&pod);

    if x.handler == "hull" {
        // hostNetwork: the pod would share the host's network namespace. A VM cannot, so hull
        // must refuse and say why (runc allows it: not compared).
        let mut cfg = x.pod("hostnet");
        let ns = cfg
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap();
        ns.network = api::NamespaceMode::Node as i32;
        match x.cri.run_pod(&cfg, x.handler) {
            Ok(id) => {
                let _ = x.cri.stop_pod(&id);
                let _ = x.cri.remove_pod(&id);
                panic!("hull ran a pod in the host's network namespace");
            }
            Err(e) => {
                let m = e.message.to_lowercase();
                assert!(
                    m.contains("host") && m.contains("net"),
                    "hostNetwork refused without naming the host network namespace: {e}"
                );
                eprintln!("  [hull] hostNetwork pod refused: {e}");
            }
        }
    }
    obs
}

/// Pod sysctls apply inside the containers (CRI puts them into the sandbox's spec only; the
/// containers see them through the pod's IPC and network namespaces).
fn scenario_sysctls(x: &Ctx) -> Observed {
    let mut cfg = x.pod("sysctl");
    let linux = cfg.linux.as_mut().unwrap();
    linux
        .sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    let pod = x.run_pod(&cfg);
    let c = x.sleeper(&pod, &cfg, "c", vec![]);
    let mut obs = Vec::new();

    assert_eq!(x.cri.sh(&c, "cat /proc/sys/kernel/shm_rmid_forced"), "1\n");
    assert_eq!(
        x.cri
            .sh(&c, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"),
        "80\n"
    );
    obs.push(
        "sysctls kernel.shm_rmid_forced=1 and net.ipv4.ip_unprivileged_port_start=80 seen".into(),
    );
    // shm_rmid_forced=1: a segment nobody attached goes away with its creator.
    x.cri.sh(&c, "ipcmk -M 4096");
    let left = x.cri.sh(&c, "tail -n +2 /proc/sysvipc/shm | wc -l");
    obs.push(format!(
        "shm segments left after ipcmk exited: {}",
        left.trim()
    ));
    x.remove_pod(&pod);
    obs
}

/// The pod's hostname and DNS config: `hostname`, `/etc/hostname`, `/etc/resolv.conf`.
fn scenario_hostname_dns(x: &Ctx) -> Observed {
    let mut cfg = x.pod("dns");
    cfg.hostname = format!("hull-dns-{}", x.handler);
    cfg.dns_config = Some(api::DnsConfig {
        servers: vec!["10.213.250.10".into()],
        searches: vec!["hull.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let pod = x.run_pod(&cfg);
    let c = x.sleeper(&pod, &cfg, "c", vec![]);
    let mut obs = Vec::new();
    assert_eq!(x.cri.sh(&c, "hostname"), format!("{}\n", cfg.hostname));
    assert_eq!(
        x.cri.sh(&c, "cat /etc/hostname"),
        format!("{}\n", cfg.hostname)
    );
    obs.push("hostname and /etc/hostname are the pod's".into());
    let resolv = x.cri.sh(&c, "cat /etc/resolv.conf");
    for want in [
        "nameserver 10.213.250.10",
        "search hull.svc.cluster.local",
        "options ndots:5",
    ] {
        assert!(
            resolv.contains(want),
            "/etc/resolv.conf lacks {want:?}: {resolv:?}"
        );
    }
    obs.push("/etc/resolv.conf from the pod's DNS config".into());
    x.remove_pod(&pod);
    obs
}

// ---------------------------------------------------------------------------------------------
// The run

/// Everything left of pods, containers and their plumbing; empty when clean.
fn leftovers(c: &Containerd, cri: &Cri, baseline_mounts: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    match cri.list_pods() {
        Ok(p) if !p.is_empty() => left.push(format!("pods: {p:?}")),
        Err(e) => left.push(format!("ListPodSandbox: {e}")),
        _ => {}
    }
    match cri.list_containers() {
        Ok(p) if !p.is_empty() => left.push(format!("containers: {p:?}")),
        Err(e) => left.push(format!("ListContainers: {e}")),
        _ => {}
    }
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let netns = entries(&c.netns_dir());
    if !netns.is_empty() {
        left.push(format!("netns: {netns:?}"));
    }
    let run = entries(&c.hull_run_dir());
    if !run.is_empty() {
        left.push(format!("hull run dir: {run:?}"));
    }
    let mounts: Vec<String> = c
        .mounts()
        .into_iter()
        .filter(|m| !baseline_mounts.contains(m))
        .collect();
    if !mounts.is_empty() {
        left.push(format!("mounts: {mounts:?}"));
    }
    let procs = c.processes();
    if !procs.is_empty() {
        left.push(format!("processes: {procs:?}"));
    }
    let cgroups = c.cgroups();
    if !cgroups.is_empty() {
        left.push(format!("cgroups: {cgroups:?}"));
    }
    let reserved: Vec<String> = entries(&c.ipam_dir())
        .into_iter()
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect();
    if !reserved.is_empty() {
        left.push(format!("CNI address reservations: {reserved:?}"));
    }
    let cached = c.cni_cache_files();
    if !cached.is_empty() {
        left.push(format!("CNI cached results: {cached:?}"));
    }
    let ports = entries(
        &Path::new("/sys/class/net")
            .join(Containerd::bridge_name())
            .join("brif"),
    );
    if !ports.is_empty() {
        left.push(format!("veths on the bridge: {ports:?}"));
    }
    left
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(panic without a message)".into())
}

fn env_list(var: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => default.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn cri_scenarios() {
    let Some(c) = containerd_or_skip("CRI scenarios", &Options::cri()) else {
        return;
    };
    let cri = common::cri::connect(&c.sock(), c.ids());
    cri.wait_ready(&[IMAGE, PAUSE_IMAGE]);
    let version = cri.version().unwrap();
    eprintln!(
        "CRI: {} {} (API {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    let baseline_mounts = c.mounts();
    let handlers = env_list("HULL_CRI_HANDLERS", &["runc", "hull"]);
    let only = env_list("HULL_CRI_SCENARIOS", &[]);
    let scenarios: [(&str, Scenario); 12] = [
        ("run-pod", scenario_run_pod),
        ("shared-pod", scenario_shared_pod),
        ("volumes", scenario_volumes),
        ("exec", scenario_exec),
        ("logs", scenario_logs),
        ("termination-message", scenario_termination_message),
        ("stop-grace", scenario_stop_grace),
        ("stop-remove-twice", scenario_stop_remove_twice),
        ("remove-running", scenario_remove_running),
        ("sysctls", scenario_sysctls),
        ("hostname-dns", scenario_hostname_dns),
        ("bad-input", scenario_bad_input),
    ];
    let mut scenarios: Vec<(&str, Scenario)> = scenarios.to_vec();
    scenarios.push(("concurrent-pods", scenario_concurrent_pods));
    // Quiet the default hook: failures are collected and printed in the summary.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut table: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (n, (name, scenario)) in scenarios.iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let mut seen: Vec<(String, Observed)> = Vec::new();
        for (h, handler) in handlers.iter().enumerate() {
            let work = c.dir().join("work").join(name).join(handler);
            std::fs::create_dir_all(&work).unwrap();
            let ctx = Ctx {
                c: &c,
                cri: &cri,
                handler,
                work,
            };
            let t0 = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&ctx)));
            let took = t0.elapsed();
            let mut problems = Vec::new();
            let observed = match result {
                Ok(obs) => Some(obs),
                Err(p) => {
                    problems.push(panic_text(p.as_ref()));
                    None
                }
            };
            // Whatever the scenario left: removed through CRI, then nothing may remain.
            let cleanup_errors = cri.remove_everything();
            if observed.is_some() && !cleanup_errors.is_empty() {
                problems.push(format!("left pods/containers: {cleanup_errors:?}"));
            }
            let mut left = Vec::new();
            let clean = poll(Duration::from_secs(15), || {
                left = leftovers(&c, &cri, &baseline_mounts);
                left.is_empty().then_some(())
            });
            if clean.is_none() {
                problems.push(format!("left behind: {}", left.join("; ")));
            }
            let status = if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", problems.join(" | "))
            };
            eprintln!("scenario {name} [{handler}] ({took:.1?}): {status}");
            if let Some(obs) = &observed {
                for o in obs {
                    eprintln!("    {o}");
                }
            }
            if !problems.is_empty() {
                let errors = c.log_lines(|l| l.contains("level=error"), 6);
                if !errors.is_empty() {
                    eprintln!("  containerd errors:\n{errors}");
                }
                failures.push(format!("{name} [{handler}]: {}", problems.join(" | ")));
            } else if let Some(obs) = observed {
                seen.push((handler.clone(), obs));
            }
            table.insert((n, h), status);
        }
        // Same behaviour as runc's.
        if let Some((_, reference)) = seen.iter().find(|(h, _)| h == "runc") {
            for (handler, obs) in seen.iter().filter(|(h, _)| h != "runc") {
                if obs != reference {
                    let msg = format!(
                        "{name} [{handler}]: behaves differently from runc:\n  runc: {reference:?}\n  {handler}: {obs:?}"
                    );
                    eprintln!("{msg}");
                    failures.push(msg);
                    let h = handlers.iter().position(|x| x == handler).unwrap();
                    table.insert((n, h), "FAILED: differs from runc".into());
                }
            }
        }
    }
    std::panic::set_hook(hook);
    eprintln!("\n== CRI scenarios ({:.1?})", started.elapsed());
    for ((n, h), status) in &table {
        let handler = &handlers[*h];
        let first_line = status.lines().next().unwrap_or("");
        eprintln!("{:<22} {handler:<5} {first_line}", scenarios[*n].0);
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
