//! hull-vmm end to end with tiny freestanding guests (they run under PVM as well as normal KVM):
//! both boot paths, serial output, boot marker, i8042 power-off, vCPU failure, SIGTERM, error messages.

mod common;

use std::time::Duration;

use common::{figures, run_vmm, tiny_guest, Entry};

const TIMEOUT: Duration = Duration::from_secs(60);

fn boot(entry: Entry, cmdline: &str, extra: &[&str]) -> common::Run {
    let kernel = tiny_guest(entry);
    let mut args = vec!["--kernel", kernel.to_str().unwrap(), "--cmdline", cmdline];
    args.extend_from_slice(extra);
    run_vmm(&args, TIMEOUT)
}

#[test]
fn pvh_guest_prints_marks_and_powers_off() {
    let run = boot(
        Entry::Pvh,
        "console=ttyS0 reboot=k mark",
        &["--mem-mib", "64"],
    );
    run.assert_exit(0);
    assert!(
        run.stdout.contains("tiny-guest: entry=pvh\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("tiny-guest: cmdline=console=ttyS0 reboot=k mark\n"),
        "{}",
        run.stdout
    );
    // 64 MiB minus the EBDA/legacy hole: the PVH memory map shows 63 MiB of RAM.
    assert!(run.stdout.contains("ram_mib=63"), "{}", run.stdout);
    assert!(
        run.stdout.contains("tiny-guest: done, resetting"),
        "{}",
        run.stdout
    );
    assert_eq!(
        figures(&run.stderr, "guest_boot_ms").len(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn exit_stats_count_serial_writes_and_kvm_counters() {
    let run = boot(
        Entry::Pvh,
        "console=ttyS0 reboot=k",
        &["--mem-mib", "64", "--exit-stats"],
    );
    run.assert_exit(0);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("exit stats: VMM exits"))
        .unwrap_or_else(|| panic!("no VMM exit stats:\n{}", run.stderr));
    // Every byte the guest printed went through the UART's data port (0x3f8) in its own exit.
    let serial_writes: usize = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("io_out@0x3f8="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no io_out@0x3f8 count in {line}"));
    assert!(
        serial_writes >= run.stdout.len() && run.stdout.len() > 20,
        "{serial_writes} writes to 0x3f8 for {} bytes of output: {line}",
        run.stdout.len()
    );
    for what in ["guest RAM in ", "KVM vm:", "KVM vcpu0:"] {
        assert!(
            run.stderr.contains(&format!("exit stats: {what}")),
            "{what} missing:\n{}",
            run.stderr
        );
    }
    let vcpu = run
        .stderr
        .lines()
        .find(|l| l.contains("exit stats: KVM vcpu0:"))
        .unwrap();
    assert!(vcpu.contains(" exits="), "{vcpu}");

    // Without the flag (and at the default log level) nothing is printed.
    let quiet = boot(Entry::Pvh, "console=ttyS0 reboot=k", &["--mem-mib", "64"]);
    quiet.assert_exit(0);
    assert!(!quiet.stderr.contains("exit stats"), "{}", quiet.stderr);
}

#[test]
fn linux64_guest_gets_boot_params_and_e820() {
    let run = boot(Entry::Linux64, "console=ttyS0 mark", &["--mem-mib", "256"]);
    run.assert_exit(0);
    assert!(
        run.stdout.contains("tiny-guest: entry=linux64\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("tiny-guest: cmdline=console=ttyS0 mark\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ram_mib=255"), "{}", run.stdout);
    assert_eq!(
        figures(&run.stderr, "guest_boot_ms").len(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn serial_log_goes_to_file() {
    let dir = tempdir();
    let log = dir.join("serial.log");
    let run = boot(
        Entry::Pvh,
        "console=ttyS0",
        &["--serial-log", log.to_str().unwrap()],
    );
    run.assert_exit(0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tiny-guest: done, resetting"), "{text}");
    assert!(
        !run.stdout.contains("tiny-guest"),
        "serial leaked to stdout: {}",
        run.stdout
    );
}

#[test]
fn multiple_vcpus_boot() {
    let run = boot(Entry::Pvh, "console=ttyS0", &["--vcpus", "4"]);
    run.assert_exit(0);
    assert!(
        run.stdout.contains("tiny-guest: done, resetting"),
        "{}",
        run.stdout
    );
}

#[test]
fn triple_fault_is_a_vcpu_failure_with_registers() {
    let run = boot(Entry::Linux64, "console=ttyS0 crash", &[]);
    run.assert_exit(2);
    assert!(
        run.stdout.contains("tiny-guest: crashing"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("vcpu0 failed"), "{}", run.stderr);
    assert!(run.stderr.contains("rip=0x"), "{}", run.stderr);
}

#[test]
fn sigterm_stops_a_spinning_guest_cleanly() {
    use std::process::{Command, Stdio};
    let kernel = tiny_guest(Entry::Pvh);
    let child = Command::new(common::vmm_bin())
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 spin",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for_output_line(pid, Duration::from_secs(30));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("tiny-guest: spinning"), "{stdout}");
    assert!(stderr.contains("received signal 15"), "{stderr}");
}

/// Waits until the guest has been running a while (its vCPU thread has used CPU time).
fn wait_for_output_line(pid: i32, timeout: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let utime_plus_stime: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if utime_plus_stime > 5 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let run = run_vmm(&["--kernel", "/nonexistent/vmlinux"], TIMEOUT);
    run.assert_exit(1);
    assert!(
        run.stderr
            .contains("cannot open the kernel /nonexistent/vmlinux"),
        "{}",
        run.stderr
    );
}

#[test]
fn non_elf_kernel_is_a_clear_error() {
    let dir = tempdir();
    let bogus = dir.join("bzImage");
    let mut bytes = vec![0u8; 4096];
    bytes[0..2].copy_from_slice(b"MZ");
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&bogus, bytes).unwrap();
    let run = run_vmm(&["--kernel", bogus.to_str().unwrap()], TIMEOUT);
    run.assert_exit(1);
    assert!(
        run.stderr.to_lowercase().contains("bzimage"),
        "{}",
        run.stderr
    );
}

#[test]
fn too_little_memory_is_a_clear_error() {
    let kernel = tiny_guest(Entry::Pvh);
    let run = run_vmm(
        &["--kernel", kernel.to_str().unwrap(), "--mem-mib", "4"],
        TIMEOUT,
    );
    run.assert_exit(1);
    assert!(run.stderr.contains("too small"), "{}", run.stderr);
}

#[test]
fn bad_cmdline_is_a_clear_error() {
    let kernel = tiny_guest(Entry::Pvh);
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 \u{e9}",
        ],
        TIMEOUT,
    );
    run.assert_exit(1);
    assert!(
        run.stderr.contains("kernel command line is invalid"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(common::vmm_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--mem-mib",
        "--vcpus",
        "--serial-log",
        "--vsock-cid",
        "--vsock-uds",
        "--fs",
        "--pmem",
        "--exit-stats",
        "--log-level",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "t-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The guest touches 4 MiB, reports it free on the balloon's reporting queue and reads it back:
/// hull-vmm (seccomp on) punched the hole, so the guest sees zeroes and the VMM logs the release.
#[test]
fn free_page_report_releases_guest_memory() {
    let run = boot(
        Entry::Pvh,
        "console=ttyS0 reboot=k balloon-report",
        &["--mem-mib", "64", "--free-page-reporting"],
    );
    run.assert_exit(0);
    assert!(
        run.stdout
            .contains("tiny-guest: balloon touched=4096KiB first_byte=165\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("tiny-guest: balloon reported, nonzero_pages=0\n"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr
            .contains("balloon: 1 free page reports released 4 MiB on the host (0 refused"),
        "{}",
        run.stderr
    );
}

/// The guest reads the virtio-pmem window through the memory slot (both ends of the image) and
/// writes into it: it sees its own write, and the image file does not.
#[test]
fn pmem_window_shows_the_image_and_keeps_guest_writes_private() {
    const SIZE: usize = 4 << 20;
    let dir = tempdir();
    let image = dir.join("root.img");
    let mut bytes = vec![0u8; SIZE];
    bytes[..8].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    bytes[SIZE - 8..].copy_from_slice(&0xfeed_face_cafe_beefu64.to_le_bytes());
    std::fs::write(&image, &bytes).unwrap();
    for entry in [Entry::Pvh, Entry::Linux64] {
        let run = boot(
            entry,
            "console=ttyS0 reboot=k pmem",
            &["--mem-mib", "64", "--pmem", image.to_str().unwrap()],
        );
        run.assert_exit(0);
        assert!(
            run.stdout.contains(
                "tiny-guest: pmem start=0x0000000100000000 size=0x0000000000400000 \
                 first=0x0123456789abcdef last=0xfeedfacecafebeef after_write=0x1122334455667788\n"
            ),
            "{entry:?}\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read(&image).unwrap(),
        bytes,
        "a guest write reached the image"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pmem_image_of_a_bad_size_is_refused_by_name() {
    let dir = tempdir();
    let image = dir.join("odd.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let run = boot(
        Entry::Pvh,
        "console=ttyS0 reboot=k",
        &["--mem-mib", "64", "--pmem", image.to_str().unwrap()],
    );
    run.assert_exit(1);
    assert!(
        run.stderr.contains("odd.img") && run.stderr.contains("multiple of 2 MiB"),
        "{}",
        run.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
