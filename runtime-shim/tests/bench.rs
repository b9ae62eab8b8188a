//! `hull bench` end to end, short: a real containerd (tests/common's fixture, hull in
//! host-agent mode), n=2, a few groups; the JSON it wrote parses, holds every group asked for
//! with both runtimes' samples, says host-agent mode everywhere, and the plots are SVG files.
//! No timing is asserted.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test bench -- --nocapture`

mod common;

use common::containerd::{containerd_or_skip, Options, IMAGE, NS, RUNTIME};
use common::text;

const GROUPS: [&str; 5] = ["start", "stages", "exec", "memory", "network"];

#[test]
fn hull_bench_short_run_writes_what_it_says() {
    let Some(c) = containerd_or_skip("hull bench", &Options::default()) else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hull"))
        .arg("bench")
        .arg("--address")
        .arg(c.sock())
        .args(["--namespace", NS, "--image", IMAGE])
        .args([
            "--n", "2", "--warmup", "1", "--pods", "1,2", "--scale", "0.05",
        ])
        .args(["--groups", &GROUPS.join(",")])
        .args(["--hull-runtime", RUNTIME])
        .arg("--hull-config")
        .arg(c.dir().join("hull.toml"))
        .arg("--containerd-log")
        .arg(c.dir().join("logs/containerd.log"))
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "hull bench failed: {}\n{}",
        text(&out),
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
        if name == "network" {
            assert!(group["skipped"].is_string(), "network is a hook only");
            continue;
        }
        let metrics = group["metrics"].as_array().unwrap();
        assert!(!metrics.is_empty(), "{name} has no metrics");
        // Both runtimes measured in every group (the stage group: the client-side stages).
        for rt in ["hull", "runc"] {
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

    // The shim's own stage lines reached containerd's log and were read back.
    let stages: Vec<&str> = groups[1]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hull"]["n"].as_u64() > Some(0))
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for stage in [
        "shim-start",
        "agent-ready",
        "create-container",
        "start-container",
        "exit-seen",
        "teardown-done",
        "ctr-returned",
    ] {
        assert!(stages.contains(&stage), "stage {stage} missing: {stages:?}");
    }
    // Host-agent mode has no VM stages, and says so.
    let vmm = groups[1]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "vmm-spawn")
        .expect("vmm-spawn row");
    assert!(vmm["hull"].is_null());
    assert!(vmm["note"].as_str().unwrap().contains("host-agent"));

    // Nothing the bench started is left.
    let ls = c.ctr(&["container", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).trim().is_empty(),
        "containers left: {}",
        text(&ls)
    );
}

/// `make bench-hull`: the full `hull bench` (every group, default repetitions unless
/// HULL_BENCH_N is set) against the fixture's containerd, hull in host-agent mode; results in
/// $HULL_BENCH_OUT (default `build/bench`). Prints the tables; asserts only that it ran.
#[test]
#[ignore = "benchmark: make bench-hull"]
fn bench_hull_host_agent_full() {
    let Some(c) = containerd_or_skip("hull bench (full)", &Options::default()) else {
        return;
    };
    let out_dir = std::env::var("HULL_BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/../build/bench", env!("CARGO_MANIFEST_DIR")));
    let n = std::env::var("HULL_BENCH_N").unwrap_or_else(|_| "10".into());
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hull"))
        .arg("bench")
        .arg("--address")
        .arg(c.sock())
        .args(["--namespace", NS, "--image", IMAGE, "--n", &n])
        .args(["--hull-runtime", RUNTIME])
        .arg("--hull-config")
        .arg(c.dir().join("hull.toml"))
        .arg("--containerd-log")
        .arg(c.dir().join("logs/containerd.log"))
        .args(["--out", &out_dir])
        .status()
        .unwrap();
    assert!(status.success(), "hull bench failed\n{}", c.log_tail());
}
