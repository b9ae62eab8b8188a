//! `hull bench` end to end, short: a real containerd with its CRI plugin and a bridge CNI
//! network this host reaches (tests/common's fixture, hull in host-agent mode), n=2, a few
//! groups including pods through CRI and the pod network; the JSON it wrote parses, holds every
//! group asked for with both runtimes' samples, says host-agent mode everywhere, and the plots
//! are SVG files. No timing is asserted.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test bench -- --nocapture`

mod common;

use common::containerd::{containerd_or_skip, Containerd, Options, CRI_NS, IMAGE, NS, RUNTIME};
use common::text;

const GROUPS: [&str; 6] = ["start", "pod", "stages", "exec", "memory", "network"];

#[test]
fn hull_bench_short_run_writes_what_it_says() {
    let opts = Options {
        pod_gateway: true,
        ..Options::cri()
    };
    let Some(c) = containerd_or_skip("hull bench", &opts) else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hull"))
        .arg("bench")
        .arg("--address")
        .arg(c.sock())
        .args(["--namespace", NS, "--image", IMAGE])
        .args([
            "--n",
            "2",
            "--warmup",
            "1",
            "--pods",
            "1,2",
            "--scale",
            "0.05",
            "--settle-secs",
            "1",
        ])
        .args(["--groups", &GROUPS.join(",")])
        .args(["--hull-runtime", RUNTIME])
        .args(["--cgroup-parent", &Containerd::cgroup_parent()])
        .arg("--hull-config")
        .arg(c.dir().join("hull.toml"))
        .arg("--containerd-log")
        .arg(c.dir().join("logs/containerd.log"))
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    // Its error first: stdout (printed above) is long, and CI shows only parts of the output.
    assert!(
        out.status.success(),
        "hull bench failed (status {:?}): {}\ncontainerd's log:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        c.log_tail()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("host-agent mode (no VM)"),
        "tables do not say host-agent mode: {stdout}"
    );

    let json = std::fs::read_to_string(out_dir.path().join("bench.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).expect("bench.json parses");
    assert_eq!(report["where"]["kind"], "host-agent", "{json}");
    assert_eq!(report["where"]["vm"], false);
    assert!(report["where"]["label"]
        .as_str()
        .unwrap()
        .starts_with("host-agent mode (no VM)"));
    let runtimes: Vec<&str> = report["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(runtimes, [RUNTIME, "io.containerd.runc.v2"]);
    let groups = report["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, GROUPS);

    for group in groups {
        let name = group["name"].as_str().unwrap();
        let place = group["where"].as_str().unwrap();
        assert!(
            place.starts_with("host-agent mode (no VM)"),
            "{name}: {place}"
        );
        assert!(group["skipped"].is_null(), "{name} did not run: {group}");
        let metrics = group["metrics"].as_array().unwrap();
        assert!(!metrics.is_empty(), "{name} has no metrics");
        // Both runtimes measured in every group (the stage group: the client-side stages),
        // but the network: a host-agent pod has no network of its own.
        let measured: &[&str] = if name == "network" {
            &["runc"]
        } else {
            &["hull", "runc"]
        };
        for rt in measured {
            assert!(
                metrics.iter().any(|m| m[rt]["n"].as_u64() > Some(0)),
                "{name}: no {rt} samples: {group}"
            );
        }
        for m in metrics.iter().filter(|m| m["hull"].is_object()) {
            let s = &m["hull"];
            let (min, med, max) = (
                s["min"].as_f64().unwrap(),
                s["median"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert!(min <= med && med <= max, "{name}: {m}");
        }
        let plots = group["plots"].as_array().unwrap();
        assert!(!plots.is_empty(), "{name} drew no plot");
        for plot in plots {
            let path = out_dir.path().join(plot.as_str().unwrap());
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(
                svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{} is not an SVG file",
                path.display()
            );
        }
    }
    let start = &groups[0]["metrics"][0];
    assert_eq!(start["hull"]["n"], 2);
    assert_eq!(start["runc"]["n"], 2);
    assert!(start["ratio"].as_f64().unwrap() > 0.0);

    // Pods through CRI: each call timed for both handlers, and the pods served over the network.
    let pod: Vec<&str> = groups[1]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hull"]["n"] == 2 && m["runc"]["n"] == 2)
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for call in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        assert!(pod.contains(&call), "{call} not measured: {pod:?}");
    }
    // hull's RunPodSandbox broken into the shim's stages for the pod's sandbox.
    let pod_stage = |stage: &str| {
        groups[1]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == format!("hull RunPodSandbox: {stage} after the call"))
            .unwrap_or_else(|| panic!("no {stage} row: {}", groups[1]))
            .clone()
    };
    for stage in ["shim-start", "agent-ready", "sandbox-ready"] {
        let m = pod_stage(stage);
        assert_eq!(m["hull"]["n"], 2, "{m}");
        assert!(m["runc"].is_null(), "{m}");
    }
    let (shim, agent) = (pod_stage("shim-start"), pod_stage("agent-ready"));
    assert!(
        shim["hull"]["median"].as_f64() <= agent["hull"]["median"].as_f64(),
        "the agent was ready before the shim started: {shim} {agent}"
    );
    // The network from this host to runc's pod; hull's column empty, and said why.
    let network = groups[5]["metrics"].as_array().unwrap();
    assert_eq!(network.len(), 3, "{network:?}");
    for m in network {
        assert!(m["runc"]["n"].as_u64() >= Some(2), "{m}");
        assert!(m["runc"]["min"].as_f64() > Some(0.0), "{m}");
        assert!(m["hull"].is_null(), "host-agent hull measured: {m}");
    }
    let notes = groups[5]["notes"].to_string();
    assert!(notes.contains("hull not measured"), "{notes}");

    // The shim's own stage lines reached containerd's log and were read back.
    let stages: Vec<&str> = groups[2]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hull"]["n"].as_u64() > Some(0))
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for stage in [
        "shim-start",
        "agent-ready",
        "sandbox-ready",
        "create-container",
        "start-container",
        "exit-seen",
        "teardown-done",
        "ctr-returned",
    ] {
        assert!(stages.contains(&stage), "stage {stage} missing: {stages:?}");
    }
    // Host-agent mode has no VM stages, and says so.
    let vmm = groups[2]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "vmm-spawn")
        .expect("vmm-spawn row");
    assert!(vmm["hull"].is_null());
    assert!(vmm["note"].as_str().unwrap().contains("host-agent"));

    // Nothing the bench started is left, by ctr or through CRI.
    for ls in [
        c.ctr(&["container", "ls", "-q"]),
        c.ctr_in(CRI_NS, &["container", "ls", "-q"]),
    ] {
        assert!(
            String::from_utf8_lossy(&ls.stdout).trim().is_empty(),
            "containers left: {}",
            text(&ls)
        );
    }
}

/// `make bench-hull`: the full `hull bench` (every group unless HULL_BENCH_GROUPS names some,
/// default repetitions unless HULL_BENCH_N is set) against the fixture's containerd, hull in
/// host-agent mode; results in $HULL_BENCH_OUT (default `build/bench`). containerd and so the
/// shims inherit this test's environment. Prints the tables; asserts only that it ran.
#[test]
#[ignore = "benchmark: make bench-hull"]
fn bench_hull_host_agent_full() {
    let opts = Options {
        pod_gateway: true,
        ..Options::cri()
    };
    let Some(c) = containerd_or_skip("hull bench (full)", &opts) else {
        return;
    };
    let out_dir = std::env::var("HULL_BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/../build/bench", env!("CARGO_MANIFEST_DIR")));
    let n = std::env::var("HULL_BENCH_N").unwrap_or_else(|_| "10".into());
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_hull"));
    bench
        .arg("bench")
        .arg("--address")
        .arg(c.sock())
        .args(["--namespace", NS, "--image", IMAGE, "--n", &n])
        .args(["--hull-runtime", RUNTIME])
        .args(["--cgroup-parent", &Containerd::cgroup_parent()])
        .arg("--hull-config")
        .arg(c.dir().join("hull.toml"))
        .arg("--containerd-log")
        .arg(c.dir().join("logs/containerd.log"))
        .args(["--out", &out_dir]);
    if let Ok(groups) = std::env::var("HULL_BENCH_GROUPS") {
        bench.args(["--groups", &groups]);
    }
    let status = bench.status().unwrap();
    assert!(status.success(), "hull bench failed\n{}", c.log_tail());
}

/// The memory group's guest view goes through a real agent: GetGuestDetails over the sandbox's
/// hybrid-vsock socket, split by `bench::guest_memory`. A host agent reports the host's
/// /proc/meminfo, so only the plumbing and the split are checked, not guest figures.
#[test]
fn guest_memory_is_read_from_the_agent_of_a_sandbox() {
    use hull_runtime::bench::guest_memory;
    use hull_runtime::sandbox::{inventory, SandboxPaths};

    let agent = common::containerd::target_dir().join("hull-agent");
    assert!(
        agent.exists(),
        "{} not built (cargo build -p hull-agent)",
        agent.display()
    );
    let run_dir = tempfile::tempdir().unwrap();
    let paths = SandboxPaths::new(run_dir.path(), "guest-mem");
    std::fs::create_dir_all(&paths.shared).unwrap();
    inventory::write_info(&paths.dir, "vm", 1, 256).unwrap();
    let mut child = std::process::Command::new(&agent)
        .arg("--listen")
        .arg(format!("hybrid://{}", paths.vsock_socket.display()))
        .arg("--shared-dir")
        .arg(&paths.shared)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let result = loop {
        match guest_memory::read(run_dir.path(), "guest-mem") {
            Ok(split) => break Ok(split),
            Err(e) if started.elapsed() > std::time::Duration::from_secs(10) => break Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let split = result.expect("the agent's memory");
    assert_eq!(split.ram, 256.0, "the size the sandbox recorded");
    assert!(split.free > 0.0 && split.slab > 0.0, "{split:?}");
    let rows = guest_memory::rows(&[split]);
    assert_eq!(rows[0], ("hull guest: RAM".to_string(), vec![256.0]));
}
