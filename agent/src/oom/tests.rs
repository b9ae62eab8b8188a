//! The event plumbing over a regular file that mimics cgroup v2 `memory.events` (this host's
//! cgroup v2 has no memory controller; the real file is exercised in the lab and by
//! `tests/oom.rs` where the controller exists). inotify reports writes to a regular file with
//! the same IN_MODIFY event the kernel raises for `memory.events`.

use super::*;
use std::time::Duration;

fn events_text(oom_kill: u64) -> String {
    format!("low 0\nhigh 0\nmax 3\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
}

struct Fixture {
    dir: tempfile::TempDir,
    monitor: Arc<OomMonitor>,
    power_off: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let monitor = OomMonitor::new();
    let (power_off, rx) = watch::channel(false);
    let task = tokio::spawn(Arc::clone(&monitor).run(rx));
    Fixture {
        dir,
        monitor,
        power_off,
        task,
    }
}

impl Fixture {
    fn file(&self, name: &str, oom_kill: u64) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, events_text(oom_kill)).unwrap();
        path
    }

    async fn next(&self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.monitor.next_event(self.power_off.subscribe()))
            .await
            .ok()
            .flatten()
    }
}

#[test]
fn the_counter_is_parsed_from_memory_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.events");
    std::fs::write(&path, events_text(7)).unwrap();
    assert_eq!(read_oom_kills(&path).unwrap(), 7);
    std::fs::write(&path, "low 0\nhigh 0\n").unwrap();
    assert!(matches!(read_oom_kills(&path), Err(OomError::Read { .. })));
    assert!(read_oom_kills(&dir.path().join("missing")).is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn a_rising_oom_kill_counter_is_reported_once_per_rise() {
    let f = fixture();
    let a = f.file("a.events", 0);
    let b = f.file("b.events", 0);
    f.monitor.watch("ctr-a", &a, 0).unwrap();
    f.monitor.watch("ctr-b", &b, 0).unwrap();

    // Other counters changing is not an OOM kill.
    std::fs::write(&a, "low 1\nhigh 2\nmax 9\noom 0\noom_kill 0\n").unwrap();
    assert_eq!(f.next(Duration::from_millis(200)).await, None);

    std::fs::write(&b, events_text(1)).unwrap();
    assert_eq!(
        f.next(Duration::from_secs(5)).await.as_deref(),
        Some("ctr-b")
    );
    // Rewriting the same value is not a new kill.
    std::fs::write(&b, events_text(1)).unwrap();
    assert_eq!(f.next(Duration::from_millis(200)).await, None);

    std::fs::write(&a, events_text(2)).unwrap();
    assert_eq!(
        f.next(Duration::from_secs(5)).await.as_deref(),
        Some("ctr-a")
    );

    // After unwatch, rises are not reported.
    f.monitor.unwatch("ctr-a");
    std::fs::write(&a, events_text(5)).unwrap();
    assert_eq!(f.next(Duration::from_millis(200)).await, None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_rise_before_the_watch_is_reported_and_a_waiting_poll_is_woken() {
    let f = fixture();
    // The counter already rose between cgroup creation (baseline 0) and the watch.
    let early = f.file("early.events", 1);
    f.monitor.watch("early", &early, 0).unwrap();
    assert_eq!(
        f.next(Duration::from_secs(1)).await.as_deref(),
        Some("early")
    );

    // A poll that is already waiting gets the event.
    let late = f.file("late.events", 0);
    f.monitor.watch("late", &late, 0).unwrap();
    let monitor = Arc::clone(&f.monitor);
    let rx = f.power_off.subscribe();
    let poll = tokio::spawn(async move { monitor.next_event(rx).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&late, events_text(1)).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.as_deref(), Some("late"));
}

#[tokio::test(flavor = "current_thread")]
async fn the_queue_is_bounded_and_drops_the_oldest() {
    let f = fixture();
    for i in 0..(MAX_QUEUED_EVENTS + 5) {
        f.monitor.push(format!("c{i}"));
    }
    assert_eq!(f.next(Duration::from_secs(1)).await.as_deref(), Some("c5"));
    let mut rest = 1;
    while f.next(Duration::from_millis(20)).await.is_some() {
        rest += 1;
    }
    assert_eq!(rest, MAX_QUEUED_EVENTS);
}

#[tokio::test(flavor = "current_thread")]
async fn power_off_ends_pending_polls_and_the_monitor() {
    let f = fixture();
    let monitor = Arc::clone(&f.monitor);
    let rx = f.power_off.subscribe();
    let poll = tokio::spawn(async move { monitor.next_event(rx).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.power_off.send_replace(true);
    let got = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll did not end at power-off")
        .unwrap();
    assert_eq!(got, None);
    tokio::time::timeout(Duration::from_secs(5), f.task)
        .await
        .expect("the monitor task did not end at power-off")
        .unwrap();
    // Even with an event queued, a poll after power-off returns at once.
    f.monitor.push("x".into());
    assert_eq!(f.monitor.next_event(f.power_off.subscribe()).await, None);
}
