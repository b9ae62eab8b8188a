//! hull-vmm benchmarks (print figures, assert nothing about speed). Run with `make bench`.
//! They are `#[ignore]`d so `cargo test` skips them.
//!
//! Figures: VMM start → first guest instruction, start → first serial byte (vs QEMU microvm booting the
//! same tiny guest on the same /dev/kvm), VMM RSS with a 128 MiB guest (vs QEMU), and port-I/O exits/s.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{figures, run_vmm, tiny_guest, Entry};

const RUNS: usize = 15;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn where_measured() -> &'static str {
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        "PVM host"
    } else {
        "KVM host"
    }
}

/// Spawns `cmd`, waits until its stdout contains `needle`; returns (child, ms to the needle).
fn spawn_until(mut cmd: Command, needle: &str) -> Option<(Child, f64)> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(30) {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    let ms = start.elapsed().as_secs_f64() * 1e3;
                    return Some((child, ms));
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "bench: {:?} did not print {needle:?} within 30 s; it printed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&seen)
    );
    None
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn hull_cmd(kernel: &str) -> Command {
    let mut c = Command::new(common::vmm_bin());
    c.args([
        "--kernel",
        kernel,
        "--mem-mib",
        "128",
        "--cmdline",
        "console=ttyS0 spin",
        "--log-level",
        "warn",
    ]);
    c
}

fn qemu_cmd(kernel: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "microvm,x-option-roms=off,rtc=off,acpi=off",
        "-accel",
        "kvm",
        "-cpu",
        // PVM refuses the arch-capabilities MSR that `-cpu host` sets.
        "host,-arch-capabilities",
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-kernel",
        kernel,
        "-append",
        "console=ttyS0 spin",
    ]);
    c
}

/// Start → "tiny-guest: spinning" on the console, and RSS once there, for a command.
fn start_and_rss(make: impl Fn() -> Command) -> Option<(f64, f64)> {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let (child, ms) = spawn_until(make(), "tiny-guest: spinning")?;
        std::thread::sleep(Duration::from_millis(100));
        if let Some(kib) = rss_kib(child.id()) {
            rss.push(kib as f64);
        }
        times.push(ms);
        stop(child);
    }
    Some((median(&mut times), median(&mut rss)))
}

#[test]
#[ignore]
fn bench_startup_and_memory() {
    let kernel = tiny_guest(Entry::Pvh);
    let kernel = kernel.to_str().unwrap();
    let mut first_exit = Vec::new();
    let mut marker = Vec::new();
    for _ in 0..RUNS {
        let run = run_vmm(
            &["--kernel", kernel, "--cmdline", "console=ttyS0 mark"],
            Duration::from_secs(30),
        );
        run.assert_exit(0);
        first_exit.extend(figures(&run.stderr, "vmm_to_first_exit_us"));
        marker.extend(figures(&run.stderr, "guest_boot_ms"));
    }
    println!(
        "== hull-vmm start-up ({}, tiny PVH guest, n={RUNS})",
        where_measured()
    );
    println!(
        "VMM start -> first guest instruction (first exit): median {:.0} us",
        median(&mut first_exit)
    );
    println!(
        "VMM start -> guest boot marker: median {:.2} ms",
        median(&mut marker)
    );

    let hull = start_and_rss(|| hull_cmd(kernel)).expect("hull-vmm runs");
    println!("hull-vmm: spawn -> first guest line on serial: median {:.2} ms; RSS with a 128 MiB guest: median {:.0} KiB", hull.0, hull.1);
    match start_and_rss(|| qemu_cmd(kernel)) {
        Some(qemu) => {
            println!("qemu microvm (peer, same guest, same /dev/kvm): spawn -> first line: median {:.2} ms; RSS: median {:.0} KiB", qemu.0, qemu.1);
            println!("ratio hull/qemu: start-up {:.2}x, RSS {:.2}x", hull.0 / qemu.0, hull.1 / qemu.1);
        }
        None => println!("qemu microvm peer: could not run qemu-system-x86_64 -accel kvm here (not installed or failed)"),
    }
}

#[test]
#[ignore]
fn bench_port_io_exits() {
    let kernel = tiny_guest(Entry::Pvh);
    let n = 200_000u64;
    let cmdline = format!("console=ttyS0 mark ioloop={n}");
    let mut rates = Vec::new();
    for _ in 0..5 {
        let run = run_vmm(
            &["--kernel", kernel.to_str().unwrap(), "--cmdline", &cmdline],
            Duration::from_secs(120),
        );
        run.assert_exit(0);
        let first = figures(&run.stderr, "guest_boot_ms");
        let again = figures(&run.stderr, "guest_marker_again_ms");
        if let (Some(a), Some(b)) = (first.first(), again.first()) {
            rates.push(n as f64 / ((b - a) / 1e3));
        }
    }
    println!(
        "== port I/O exits ({}, {} outs to an unclaimed port per run, n={})",
        where_measured(),
        n,
        rates.len()
    );
    println!(
        "exits/s: median {:.0} (= {:.2} us per exit)",
        median(&mut rates.clone()),
        1e6 / median(&mut rates)
    );
}
