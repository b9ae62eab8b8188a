//! A hostile tiny guest (tests/guests/hostile_vsock.c) attacks hull-vmm's virtio-mmio transport and
//! virtio-vsock device from inside the VM: registers written in every state, descriptor loops,
//! chains outside guest memory, lengths near 4 GiB, wrong flags, queue registers changed after
//! activation, avail indexes far ahead, connection floods and credit lies. After each phase it makes
//! one well-formed vsock connection that must be echoed by a listener here.
//!
//! From the host side the test checks that hull-vmm never hangs (deadline, then SIGKILL), exits
//! cleanly, keeps serving, keeps its log bounded, returns to its starting fd count and anonymous
//! memory after the floods, and that its event-loop thread idles while the guest idles. The figures
//! (VmRSS, RssAnon, fds, log size) are printed.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::netns::{ip, net_allowed, NetNs};
use common::{pvh_guest_program, vmm_bin};

const DEADLINE: Duration = Duration::from_secs(300);
const ECHO_PORT: u32 = 5555;
const SINK_PORT: u32 = 5556;
const STUCK_PORT: u32 = 5557;
/// The VMM's log may not grow past this however many bad accesses the guest makes.
const MAX_LOG_BYTES: usize = 256 * 1024;

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn port_listener(uds: &Path, port: u32) -> UnixListener {
    let l = UnixListener::bind(format!("{}_{port}", uds.display())).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The host listeners the guest talks to: an echo server, a sink that accepts and never reads,
/// and a listener that never accepts. Served by one thread until dropped.
struct HostSide {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
    _stuck: UnixListener,
}

impl HostSide {
    fn start(uds: &Path) -> Self {
        let echo = port_listener(uds, ECHO_PORT);
        let sink = port_listener(uds, SINK_PORT);
        let stuck = port_listener(uds, STUCK_PORT);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || serve(&echo, &sink, &stop2));
        HostSide {
            stop,
            thread: Some(thread),
            _stuck: stuck,
        }
    }

    /// Stops serving; returns the most connections the echo listener held at once.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn serve(echo: &UnixListener, sink: &UnixListener, stop: &AtomicBool) -> usize {
    let mut echoing: Vec<UnixStream> = Vec::new();
    let mut sinking: Vec<UnixStream> = Vec::new();
    let mut most = 0;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut busy = false;
        while let Ok((s, _)) = echo.accept() {
            s.set_nonblocking(true).unwrap();
            echoing.push(s);
            busy = true;
        }
        while let Ok((s, _)) = sink.accept() {
            sinking.push(s);
            busy = true;
        }
        most = most.max(echoing.len());
        echoing.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                busy = true;
                write_all_nonblocking(s, &buf[..n])
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        });
        // A sink stream the VMM closed reads EOF: drop it. Data is never read (peek only).
        sinking.retain(|s| {
            let mut b = [0u8; 1];
            // SAFETY: recv with MSG_PEEK into a 1-byte buffer we own.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(s),
                    b.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            n != 0
        });
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    most
}

fn write_all_nonblocking(s: &mut UnixStream, mut data: &[u8]) -> bool {
    let start = Instant::now();
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(_) => return false,
        }
    }
    true
}

/// One look at the VMM process.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: Option<Instant>,
    vm_rss_kib: u64,
    rss_anon_kib: u64,
    fds: usize,
    /// utime + stime (clock ticks) of every thread that is not a vCPU.
    loop_ticks: u64,
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let mut loop_ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat[open + 1..close].starts_with("vcpu") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After "pid (comm) ": state is field 0, utime 11, stime 12.
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        loop_ticks += ticks(11) + ticks(12);
    }
    Some(Sample {
        at: Some(Instant::now()),
        vm_rss_kib: status_kib(&status, "VmRSS:"),
        rss_anon_kib: status_kib(&status, "RssAnon:"),
        fds,
        loop_ticks,
    })
}

/// What one run of the hostile guest produced.
struct Outcome {
    status: Option<i32>,
    killed: bool,
    lines: Vec<(Instant, String)>,
    stderr: String,
    samples: Vec<Sample>,
    echo_most: usize,
    elapsed: Duration,
}

impl Outcome {
    fn stdout(&self) -> String {
        self.lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn when(&self, line: &str) -> Option<Instant> {
        self.lines.iter().find(|(_, l)| l == line).map(|(t, _)| *t)
    }

    /// Samples taken while the guest sat in `settle NAME` (it idles about a second).
    fn settle(&self, name: &str) -> Vec<Sample> {
        let (Some(from), Some(to)) = (
            self.when(&format!("hostile: settle begin {name}")),
            self.when(&format!("hostile: settle end {name}")),
        ) else {
            panic!("the guest never settled in {name}\n{}", self.stdout());
        };
        self.samples
            .iter()
            .filter(|s| s.at.is_some_and(|t| t > from && t < to))
            .copied()
            .collect()
    }

    fn value(&self, key: &str) -> u64 {
        let prefix = format!("hostile: {key}=");
        self.lines
            .iter()
            .find_map(|(_, l)| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key:?} in the guest output\n{}", self.stdout()))
    }

    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|(_, l)| l == line)
    }
}

/// Runs the hostile guest with a vsock device on `uds`; `wrap` is a command hull-vmm runs under
/// (e.g. `ip netns exec NS`) and `extra` more hull-vmm flags.
fn run_hostile_guest(uds: &Path, phases: Option<&str>, wrap: &[&str], extra: &[&str]) -> Outcome {
    let kernel = pvh_guest_program("hostile_vsock.c");
    let host = HostSide::start(uds);
    let mut cmdline = "console=ttyS0".to_string();
    if let Some(p) = phases {
        cmdline.push_str(&format!(" phases={p}"));
    }
    let start = Instant::now();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(vmm_bin());
            c
        }
        None => Command::new(vmm_bin()),
    };
    let mut child: Child = command
        .arg("--kernel")
        .arg(&kernel)
        .args(["--vsock-cid", "3", "--vsock-uds"])
        .arg(uds)
        .args(["--cmdline", &cmdline])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hull-vmm");
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let lines2 = lines.clone();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let out_thread = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            lines2.lock().unwrap().push((Instant::now(), line));
        }
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut samples = Vec::new();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            killed = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        if let Some(s) = sample(pid) {
            samples.push(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    out_thread.join().unwrap();
    let stderr = err_thread.join().unwrap();
    let echo_most = host.finish();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    Outcome {
        status: status.code(),
        killed,
        lines,
        stderr,
        samples,
        echo_most,
        elapsed,
    }
}

fn max_by<F: Fn(&Sample) -> u64>(samples: &[Sample], f: F) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}

/// Event-loop CPU ticks spent during a settle window, and the window's length in ticks.
fn loop_busy(samples: &[Sample]) -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => {
            let span = b.at.unwrap() - a.at.unwrap();
            (
                b.loop_ticks - a.loop_ticks,
                (span.as_millis() as u64 * hz) / 1000,
            )
        }
        _ => (0, 0),
    }
}

#[test]
fn hostile_guest_cannot_hang_crash_or_bloat_the_vmm() {
    let dir = tempdir("all");
    let uds = dir.join("vm.sock");
    let phases = std::env::var("HULL_HOSTILE_PHASES").ok();
    let run = run_hostile_guest(&uds, phases.as_deref(), &[], &[]);
    let out = run.stdout();
    eprintln!("{out}");
    let log_tail: String = {
        let lines: Vec<&str> = run.stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        !run.killed,
        "hull-vmm did not finish within {DEADLINE:?} (killed)\n{out}\n--- log tail ---\n{log_tail}"
    );
    assert_eq!(
        run.status,
        Some(0),
        "hull-vmm exit status\n{out}\n--- log tail ---\n{log_tail}"
    );
    assert!(run.has("hostile: done"), "{out}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    // Every phase that must keep serving did.
    let not_served: Vec<&String> = run
        .lines
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains(" NOT SERVED"))
        .filter(|l| {
            // With 1024 connections open the device refuses new ones, and says so.
            *l != "hostile: phase connect-flood-while-full NOT SERVED: REQUEST refused (RST)"
        })
        .collect();
    assert!(not_served.is_empty(), "{not_served:?}\n{out}");
    let served = run
        .lines
        .iter()
        .filter(|(_, l)| l.ends_with(" served"))
        .count();

    // What the phases saw (only for the phases that ran).
    let ran = |p: &str| run.has(&format!("hostile: phase begin {p}"));
    if ran("tx-chains") {
        assert_eq!(run.value("chains stuck"), 0, "{out}");
    }
    if ran("rx-chains") {
        assert!(run.has("hostile: read-only rx buffers intact"), "{out}");
    }
    if ran("mmio-states") {
        assert!(
            run.has("hostile: status DRIVER_OK with poked queues (64 = needs reset) = 79"),
            "{out}"
        );
        assert_eq!(run.value("guest_cid after config writes"), 3, "{out}");
    }
    if ran("queue-resize") {
        assert_eq!(
            run.value("tx queue ready after un-ready attempt"),
            1,
            "{out}"
        );
        assert!(
            run.has("hostile: status DRIVER_OK with rings past RAM end (64 = needs reset) = 79"),
            "{out}"
        );
    }
    if ran("closed-flood") {
        let sent = run.value("closed-port requests sent");
        assert_eq!(run.value("closed-port resets received"), sent, "{out}");
        assert!(
            run.value("closed-port requests taken before tx paused") < 3000,
            "{out}"
        );
    }
    if ran("connect-flood") {
        let responses = run.value("flood responses");
        assert!(responses <= 1024, "{out}");
        assert_eq!(responses + run.value("flood resets"), 1100, "{out}");
    }
    if ran("avail-jump") {
        assert_eq!(run.value("bad-head rounds served"), 2000, "{out}");
        // The queue the guest broke is reported, not silently dropped.
        assert!(
            run.stderr
                .contains("vsock: tx queue unusable until the driver resets the device"),
            "{}",
            run.stderr
        );
    }
    if ran("vsock-protocol") {
        assert_eq!(run.value("answers to spoofed source CIDs"), 0, "{out}");
        assert_eq!(
            run.value("resets for wrong destination or type"),
            6,
            "{out}"
        );
        assert_eq!(
            run.value("connections reset for protocol violations"),
            6,
            "{out}"
        );
        assert_eq!(run.value("resets for unknown connections"), 2, "{out}");
    }
    if ran("credit-lies") {
        assert!(run.has("hostile: overrun connection reset"), "{out}");
    }

    // Figures: memory and fds at rest before and after everything, and at the floods' peaks.
    let base = run.settle("baseline");
    let fin = run.settle("final");
    let base_fds = max_by(&base, |s| s.fds as u64);
    let final_fds = max_by(&fin, |s| s.fds as u64);
    let base_anon = max_by(&base, |s| s.rss_anon_kib);
    let final_anon = max_by(&fin, |s| s.rss_anon_kib);
    let peak_fds = max_by(&run.samples, |s| s.fds as u64);
    let peak_anon = max_by(&run.samples, |s| s.rss_anon_kib);
    eprintln!(
        "hostile: {} phases served in {:.1} s; echo listener held at most {} connections",
        served,
        run.elapsed.as_secs_f64(),
        run.echo_most
    );
    eprintln!(
        "hostile figures: fds baseline={base_fds} peak={peak_fds} final={final_fds}; RssAnon KiB \
         baseline={base_anon} peak={peak_anon} final={final_anon}; VmRSS KiB baseline={} peak={} \
         final={}; log bytes={}",
        max_by(&base, |s| s.vm_rss_kib),
        max_by(&run.samples, |s| s.vm_rss_kib),
        max_by(&fin, |s| s.vm_rss_kib),
        run.stderr.len()
    );
    for name in [
        "connections-open",
        "connections-closed",
        "buffers-full",
        "buffers-freed",
        "after-busy-reset",
    ] {
        if run.has(&format!("hostile: settle begin {name}")) {
            let s = run.settle(name);
            eprintln!(
                "hostile figures: settle {name}: fds={} RssAnon KiB={}",
                max_by(&s, |x| x.fds as u64),
                max_by(&s, |x| x.rss_anon_kib)
            );
        }
    }
    assert_eq!(final_fds, base_fds, "fds leaked\n{out}");
    if run.has("hostile: settle begin after-busy-reset") {
        // A device reset drops every connection the guest knew of, at once.
        let s = run.settle("after-busy-reset");
        let fds = s.iter().map(|x| x.fds as u64).min().unwrap_or(0);
        assert_eq!(fds, base_fds, "fds left after a device reset\n{out}");
    }
    assert!(
        peak_fds <= base_fds + 1024 + 16,
        "fds grew past the connection bound: {peak_fds}"
    );
    assert!(
        final_anon <= base_anon + 4 * 1024,
        "anonymous memory grew from {base_anon} KiB to {final_anon} KiB"
    );
    assert!(
        run.stderr.len() <= MAX_LOG_BYTES,
        "the guest made hull-vmm log {} bytes\n--- log tail ---\n{log_tail}",
        run.stderr.len()
    );
    // While the guest idles, the event loop must idle too (no busy loop left behind).
    let mut idle: HashMap<&str, (u64, u64)> = HashMap::new();
    for name in ["baseline", "final", "after-avail-jump"] {
        if run.has(&format!("hostile: settle begin {name}")) {
            idle.insert(name, loop_busy(&run.settle(name)));
        }
    }
    eprintln!("hostile figures: event-loop ticks while the guest idles (busy, window): {idle:?}");
    for (name, (busy, window)) in idle {
        assert!(
            busy * 4 <= window.max(4),
            "the event loop was busy {busy} of {window} ticks in settle {name}"
        );
    }
}

/// The same guest with a virtio-net device (over a tap in a scratch network namespace) next to
/// vsock: registers poked in every state, hostile tx chains, heads past the table, avail index far
/// ahead; vsock must keep serving.
#[test]
fn hostile_guest_attacking_virtio_net_leaves_vsock_serving() {
    if !net_allowed("hostile net guest") {
        return;
    }
    let ns = NetNs(format!("hull-hostile-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "-n", &ns.0, "tuntap", "add", "dev", "hulltap1", "mode", "tap",
    ]);
    ip(&["-n", &ns.0, "link", "set", "hulltap1", "up"]);
    let dir = tempdir("net");
    let uds = dir.join("vm.sock");
    let run = run_hostile_guest(
        &uds,
        Some("net"),
        &["ip", "netns", "exec", &ns.0],
        &["--net", "tap=hulltap1"],
    );
    let out = run.stdout();
    assert!(!run.killed, "hull-vmm killed at the deadline\n{out}");
    assert_eq!(run.status, Some(0), "{out}\n{}", run.stderr);
    assert!(run.has("hostile: phase begin net"), "{out}");
    assert!(run.has("hostile: status net after init = 15"), "{out}");
    assert_eq!(run.value("net chains used"), 12, "{out}");
    assert!(
        !run.lines
            .iter()
            .any(|(_, l)| l.contains("bad-head round not served")),
        "{out}"
    );
    for phase in ["net", "final"] {
        assert!(run.has(&format!("hostile: phase {phase} served")), "{out}");
    }
    assert!(run.stderr.len() <= MAX_LOG_BYTES, "{}", run.stderr.len());
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let base = max_by(&run.settle("baseline"), |s| s.fds as u64);
    let fin = max_by(&run.settle("final"), |s| s.fds as u64);
    assert_eq!(fin, base, "fds leaked\n{out}");
    eprintln!(
        "hostile net figures: fds baseline={base} final={fin}; log bytes={}",
        run.stderr.len()
    );
}
