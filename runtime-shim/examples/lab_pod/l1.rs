//! What the pod step sees of L1 itself: the sandboxes' consoles, and what pods leave behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Args;

/// Copies the consoles of the sandboxes under `run_dir` every 300 ms until `stop`.
pub fn watch_consoles(
    run_dir: PathBuf,
    consoles: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(entries) = std::fs::read_dir(&run_dir) {
            for e in entries.flatten() {
                let Ok(data) = std::fs::read(e.path().join("console.log")) else {
                    continue;
                };
                let tail = &data[data.len().saturating_sub(4096)..];
                let text = String::from_utf8_lossy(tail).into_owned();
                let name = e.file_name().to_string_lossy().into_owned();
                let mut map = consoles.lock().unwrap();
                // Keep the agent line once seen, even when it scrolled out of the tail.
                let had_agent = map.get(&name).is_some_and(|t| t.contains("HULL-AGENT"));
                let text = if had_agent && !text.contains("HULL-AGENT") {
                    format!("(HULL-AGENT seen earlier)\n{text}")
                } else {
                    text
                };
                map.insert(name, text);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Processes in L1 whose program name (argv[0]'s file name) is one of `names`.
fn processes_named(names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let prog = String::from_utf8_lossy(argv0);
        let base = prog.rsplit('/').next().unwrap_or_default();
        if names.contains(&base) {
            found.push(format!("{} {}", e.file_name().to_string_lossy(), prog));
        }
    }
    found
}

fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What pods leave behind in L1, empty when nothing: our VMM, virtiofsd and shim processes,
/// sandbox directories, pod cgroups, taps in L1's own namespace, CRI's netns mounts, CNI address leases.
pub fn leftovers(args: &Args) -> Vec<String> {
    let mut left = Vec::new();
    for p in processes_named(&["hull-vmm", "virtiofsd", "containerd-shim-hull-v2"]) {
        left.push(format!("process {p}"));
    }
    for d in dir_entries(&args.run_dir) {
        left.push(format!("sandbox dir {d}"));
    }
    // Pod cgroups (cgroup v2, or each v1 hierarchy), under the config's default parent.
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/hull-pods")];
    parents.extend(
        dir_entries(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h).join("hull-pods")),
    );
    for parent in parents {
        for d in dir_entries(&parent) {
            if parent.join(&d).is_dir() {
                left.push(format!("cgroup {}", parent.join(d).display()));
            }
        }
    }
    for n in dir_entries(Path::new("/sys/class/net")) {
        if Path::new("/sys/class/net")
            .join(&n)
            .join("tun_flags")
            .exists()
        {
            left.push(format!("tap {n} in L1's netns"));
        }
    }
    if !args.netns_dir.as_os_str().is_empty() {
        for n in dir_entries(&args.netns_dir) {
            left.push(format!("netns {n}"));
        }
    }
    if !args.ipam_dir.as_os_str().is_empty() {
        for n in dir_entries(&args.ipam_dir) {
            if n.parse::<std::net::IpAddr>().is_ok() {
                left.push(format!("CNI lease {n}"));
            }
        }
    }
    left
}

/// [`leftovers`] once the teardown had a few seconds (the shim exits after its last task).
pub fn wait_clean(args: &Args) -> Vec<String> {
    let started = Instant::now();
    let mut left = leftovers(args);
    while !left.is_empty() && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        left = leftovers(args);
    }
    left
}
