//! The kernel's log, printed by PID 1 after boot when the command line asks for it
//! (`hull.kmsg=1`): a guest booted with `quiet` prints almost nothing while it boots (every
//! console byte is an exit to the VMM, and the time stamps of a loud boot measure the console),
//! yet its log buffer holds every message with its time stamp. Printing it once the agent runs
//! shows where a quiet boot spent its time without slowing that boot down.

use std::io::{ErrorKind, Read as _, Write};
use std::os::unix::fs::OpenOptionsExt as _;

/// The kernel command line word that asks for the dump.
pub const KMSG_CMDLINE_WORD: &str = "hull.kmsg=1";

/// The longest record /dev/kmsg returns (the kernel's limit is a little under 8 KiB).
const RECORD_MAX: usize = 8192;

/// Microseconds since boot on the clock the kernel log's time stamps come closest to
/// (CLOCK_MONOTONIC), so the agent's own milestones line up with the kernel's messages.
pub fn uptime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A dmesg-style line for the agent's own milestone `what` at `usec` since boot.
pub fn milestone_line(usec: u64, what: &str) -> String {
    format!(
        "[{:5}.{:06}] hull-agent: {what}",
        usec / 1_000_000,
        usec % 1_000_000
    )
}

/// Whether `cmdline` asks for the kernel log dump.
pub fn cmdline_requests_kmsg(cmdline: &str) -> bool {
    crate::guest_init::cmdline_has_word(cmdline, KMSG_CMDLINE_WORD)
}

/// One /dev/kmsg record (`prio,seq,usec,flags[,...];message`, then optional ` KEY=value` lines)
/// as a dmesg-style line `[seconds.micros] message`; `None` for text that is not a record.
pub fn format_record(record: &str) -> Option<String> {
    let (header, rest) = record.split_once(';')?;
    let usec: u64 = header.split(',').nth(2)?.parse().ok()?;
    let message = rest.lines().next().unwrap_or("");
    Some(format!(
        "[{:5}.{:06}] {message}",
        usec / 1_000_000,
        usec % 1_000_000
    ))
}

/// Writes every record the kernel log holds now to `out`, one line each, then the agent's
/// `milestones` (time since boot in µs, what) in the same form; returns how many kernel records.
pub fn dump(out: &mut impl Write, milestones: &[(u64, &str)]) -> std::io::Result<usize> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut buf = vec![0u8; RECORD_MAX];
    let mut lines = 0;
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(line) = format_record(&String::from_utf8_lossy(&buf[..n])) {
                    writeln!(out, "{line}")?;
                    lines += 1;
                }
            }
            // Records overwritten while we read: the next read goes on with the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    for (usec, what) in milestones {
        writeln!(out, "{}", milestone_line(*usec, what))?;
    }
    out.flush()?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_dmesg_lines() {
        assert_eq!(
            format_record("6,339,5140900,-;NET: Registered PF_VSOCK protocol family\n").as_deref(),
            Some("[    5.140900] NET: Registered PF_VSOCK protocol family")
        );
        assert_eq!(
            format_record("4,12,42,-,caller=T1;hello\n SUBSYSTEM=virtio\n").as_deref(),
            Some("[    0.000042] hello")
        );
        assert_eq!(format_record("no record"), None);
        assert_eq!(
            milestone_line(1_250_000, "started"),
            "[    1.250000] hull-agent: started"
        );
        assert_eq!(format_record("6,1,x,-;bad time"), None);
    }

    #[test]
    fn only_the_exact_word_asks_for_the_dump() {
        assert!(cmdline_requests_kmsg("console=ttyS0 quiet hull.kmsg=1"));
        assert!(!cmdline_requests_kmsg("hull.kmsg=0 quiet"));
        assert!(!cmdline_requests_kmsg("xhull.kmsg=1"));
    }
}
