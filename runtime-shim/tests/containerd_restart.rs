//! Tier 1: task events reach containerd again after containerd was killed (SIGKILL) and
//! restarted while containers run, for hull as for runc in the same run. CRI learns that a
//! container stopped from these events, so without them Kubernetes never sees a pod's
//! containers exit after a containerd restart.
//!
//! The check is on containerd's own event stream (`ctr events`): `ctr task ls` asks the shim
//! directly and shows STOPPED even when the shim's events are lost.
//!
//! Needs what `tests/containerd.rs` needs (root, containerd, ctr, runc, busybox-static,
//! python3, a built hull-agent); a missing piece prints SKIPPED, or fails the test on CI.
//!
//! Run: `cargo build -p hull-agent -p hull-runtime && cargo test -p hull-runtime --test containerd_restart -- --nocapture`

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::containerd::{containerd_or_skip, Containerd, Options, NS, RUNTIME};
use common::text;

/// runc's shim, the reference.
const RUNC: &str = "io.containerd.runc.v2";

/// `ctr events`: containerd's event stream, one line per event
/// (`<time> <namespace> <topic> <event as JSON>`).
struct EventStream {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EventStream {
    /// Subscribes, and returns once the subscription is seen to receive events.
    fn subscribe(c: &Containerd) -> EventStream {
        let mut child = Command::new("ctr")
            .arg("-a")
            .arg(c.sock())
            .args(["-n", NS, "events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stream = EventStream { child, lines };
        // containerd's own events prove the subscription is live: create namespaces until one
        // shows up.
        for n in 0..10 {
            let probe = format!("hull-restart-probe{n}");
            let out = c.ctr(&["namespaces", "create", &probe]);
            assert!(out.status.success(), "namespaces create: {}", text(&out));
            if stream.wait_for("/namespaces/create", &probe, Duration::from_secs(2)) {
                return stream;
            }
        }
        panic!("`ctr events` never received an event: {:?}", stream.lines());
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for an event on `topic` naming `id` (as a JSON string value).
    fn wait_for(&self, topic: &str, id: &str, timeout: Duration) -> bool {
        let quoted = format!("\"{id}\"");
        let started = Instant::now();
        while started.elapsed() < timeout {
            let found = self
                .lines()
                .iter()
                .any(|l| l.split_whitespace().any(|field| field == topic) && l.contains(&quoted));
            if found {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes runc's record of the container (kept under a fixed root, not in the test's temp
/// dir) when the test fails before `task rm`.
struct RuncState(String);

impl Drop for RuncState {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["--root", &format!("/run/containerd/runc/{NS}")])
            .args(["delete", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn task_events_arrive_after_containerd_is_killed_and_restarted() {
    let Some(mut c) = containerd_or_skip("containerd restart", &Options::default()) else {
        return;
    };
    // runc keeps its state under a fixed root: ids unique to this run.
    let (runc_id, hull_id) = (
        format!("restart-runc-{}", std::process::id()),
        format!("restart-hull-{}", std::process::id()),
    );
    let _runc_state = RuncState(runc_id.clone());
    let containers = [(runc_id.as_str(), RUNC), (hull_id.as_str(), RUNTIME)];
    for (id, runtime) in containers {
        c.run_detached(id, runtime, &["sleep", "1000"]);
    }

    c.restart();
    // containerd found its shims again.
    for (id, _) in containers {
        c.wait_for_status(id, "RUNNING");
    }
    let events = EventStream::subscribe(&c);

    for (id, _) in containers {
        let out = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        assert!(out.status.success(), "kill {id}: {}", text(&out));
    }
    // runc first: if its exit does not arrive either, the test set-up is at fault, not hull.
    for (id, runtime) in containers {
        assert!(
            events.wait_for("/tasks/exit", id, Duration::from_secs(20)),
            "no /tasks/exit for {id} ({runtime}) after the restart; events seen: {:#?}\n{}",
            events.lines(),
            c.log_tail()
        );
        c.wait_for_status(id, "STOPPED");
    }

    for (id, runtime) in containers {
        let out = c.ctr(&["task", "rm", id]);
        assert!(out.status.success(), "task rm {id}: {}", text(&out));
        assert!(
            events.wait_for("/tasks/delete", id, Duration::from_secs(20)),
            "no /tasks/delete for {id} ({runtime}); events seen: {:#?}\n{}",
            events.lines(),
            c.log_tail()
        );
        let out = c.ctr(&["container", "rm", id]);
        assert!(out.status.success(), "container rm {id}: {}", text(&out));
    }
    // Each exit arrived once.
    for (id, _) in containers {
        let quoted = format!("\"{id}\"");
        let exits = events
            .lines()
            .iter()
            .filter(|l| l.contains("/tasks/exit") && l.contains(&quoted))
            .count();
        assert_eq!(exits, 1, "{id}: {:#?}", events.lines());
    }
    drop(events);
    c.assert_clean(&hull_id);
}
