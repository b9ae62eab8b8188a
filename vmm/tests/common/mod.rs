//! Shared helpers for hull-vmm integration tests: building the tiny guests and running hull-vmm.
#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which boot path a tiny guest uses.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// ELF with a XEN_ELFNOTE_PHYS32_ENTRY note: 32-bit protected mode entry.
    Pvh,
    /// ELF without the note: 64-bit Linux boot protocol entry.
    Linux64,
}

fn guests_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

fn build_guest(entry: Entry, out: &Path) {
    build_guest_from(entry, "guest.c", out);
}

/// Builds the tiny guest program `c_file` (in tests/guests) with the start-up code of `entry`.
fn build_guest_from(entry: Entry, c_file: &str, out: &Path) {
    let src = guests_src();
    let start = match entry {
        Entry::Pvh => "start_pvh.S",
        Entry::Linux64 => "start_linux64.S",
    };
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-ffreestanding",
        "-fno-pic",
        "-fno-pie",
        "-no-pie",
        "-nostdlib",
        "-static",
        "-mgeneral-regs-only",
        "-mno-red-zone",
        "-fno-stack-protector",
        "-fcf-protection=none",
        "-O2",
        "-Wall",
        "-Werror",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ])
    .arg(format!("-Wl,-T,{}", src.join("guest.ld").display()))
    .arg("-o")
    .arg(out)
    .arg(src.join(start))
    .arg(src.join("common.S"))
    .arg(src.join(c_file));
    if let Entry::Pvh = entry {
        cmd.arg("-Wl,-e,pvh_entry");
    }
    let status = cmd
        .status()
        .expect("gcc must be installed to build the tiny guests");
    assert!(
        status.success(),
        "building tiny guest {c_file} ({entry:?}) failed"
    );
}

/// Path of another tiny guest program (`c_file` in tests/guests, PVH entry), built once per test
/// process; used by guests with a job of their own (e.g. the hostile guest).
pub fn pvh_guest_program(c_file: &str) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!(
        "{}-{}.elf",
        std::process::id(),
        c_file.trim_end_matches(".c")
    ));
    if !out.exists() {
        build_guest_from(Entry::Pvh, c_file, &out);
    }
    out
}

/// Path of the tiny guest for `entry`, built once per test process.
pub fn tiny_guest(entry: Entry) -> PathBuf {
    static PVH: OnceLock<PathBuf> = OnceLock::new();
    static LINUX64: OnceLock<PathBuf> = OnceLock::new();
    let (cell, name) = match entry {
        Entry::Pvh => (&PVH, "tiny-pvh.elf"),
        Entry::Linux64 => (&LINUX64, "tiny-linux64.elf"),
    };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-guests");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("{}-{name}", std::process::id()));
        build_guest(entry, &out);
        out
    })
    .clone()
}

pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hull-vmm")
}

/// Result of one hull-vmm run.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status,
            Some(code),
            "hull-vmm exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs hull-vmm with `args` and a hard timeout (killed after `timeout`). Output is drained while
/// the VMM runs, so a chatty guest cannot block on a full pipe.
pub fn run_vmm(args: &[&str], timeout: Duration) -> Run {
    use std::io::Read;
    let start = Instant::now();
    let mut child = Command::new(vmm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hull-vmm");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        status: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// Values of `key=<number>` found in `text`, in order.
pub fn figures(text: &str, key: &str) -> Vec<f64> {
    let needle = format!("{key}=");
    text.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &text[i + needle.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}
