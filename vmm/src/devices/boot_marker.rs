//! Boot-time marker device.
//!
//! The guest init writes the single byte `BOOT_MARKER_MAGIC` at `BOOT_MARKER_ADDR` once userspace is
//! up. The device records how long after VMM start that happened and logs
//! `guest boot marker: guest_boot_ms=<ms>` (one decimal), the line tests and the lab grep for.
//! Only the first hit is kept as the boot time; later hits are logged without `guest_boot_ms=`.

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::bus::BusDevice;
use crate::layout::BOOT_MARKER_MAGIC;

/// Records when the guest reached the boot marker.
pub struct BootMarker {
    vmm_start: Instant,
    first_hit: Option<Duration>,
}

impl BootMarker {
    /// Creates the marker; elapsed times are measured from `vmm_start`.
    pub fn new(vmm_start: Instant) -> Self {
        Self {
            vmm_start,
            first_hit: None,
        }
    }

    /// Time from VMM start to the first marker write, if the guest wrote it.
    pub fn first_hit(&self) -> Option<Duration> {
        self.first_hit
    }

    fn record_hit(&mut self) {
        let elapsed = self.vmm_start.elapsed();
        match self.first_hit {
            None => {
                self.first_hit = Some(elapsed);
                info!("guest boot marker: guest_boot_ms={:.1}", millis(elapsed));
            }
            Some(first) => info!(
                "guest boot marker written again: guest_marker_again_ms={:.3} (first hit at {:.1} ms kept)",
                millis(elapsed),
                millis(first)
            ),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl BusDevice for BootMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (0, [BOOT_MARKER_MAGIC]) => self.record_hit(),
            _ => debug!(offset, len = data.len(), "boot marker: ignoring write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects formatted log output.
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for LogBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LogBuffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs `f` with INFO logs captured and returns them.
    fn capture_logs(f: impl FnOnce()) -> String {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        logs.text()
    }

    /// Parses the value after `guest_boot_ms=` on each line that has it.
    fn boot_ms_values(logs: &str) -> Vec<String> {
        logs.lines()
            .filter_map(|l| l.split("guest_boot_ms=").nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn magic_write_records_elapsed_time_and_logs_it() {
        let start = Instant::now() - Duration::from_millis(250);
        let mut marker = BootMarker::new(start);
        assert_eq!(marker.first_hit(), None);
        let logs = capture_logs(|| marker.write(0, &[BOOT_MARKER_MAGIC]));
        let hit = marker.first_hit().expect("marker recorded");
        assert!(hit >= Duration::from_millis(250));
        assert!(hit <= start.elapsed());

        assert!(logs.contains("guest boot marker: guest_boot_ms="), "{logs}");
        let values = boot_ms_values(&logs);
        assert_eq!(values.len(), 1, "{logs}");
        let (whole, fraction) = values[0].split_once('.').expect("one decimal");
        assert_eq!(fraction.len(), 1, "{logs}");
        let logged_ms: f64 = values[0].parse().unwrap();
        assert!(whole.parse::<u64>().unwrap() >= 250);
        assert!(
            (logged_ms - millis(hit)).abs() <= 0.05,
            "{logged_ms} vs {hit:?}"
        );
    }

    #[test]
    fn first_hit_is_kept_and_later_hits_are_logged() {
        let mut marker = BootMarker::new(Instant::now());
        marker.write(0, &[BOOT_MARKER_MAGIC]);
        let first = marker.first_hit().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let logs = capture_logs(|| marker.write(0, &[BOOT_MARKER_MAGIC]));
        assert_eq!(marker.first_hit(), Some(first));
        assert!(logs.contains("guest boot marker written again"), "{logs}");
        // Only the first hit produces the line the lab greps for.
        assert!(boot_ms_values(&logs).is_empty(), "{logs}");
    }

    #[test]
    fn other_accesses_are_ignored() {
        let mut marker = BootMarker::new(Instant::now());
        let logs = capture_logs(|| {
            marker.write(0, &[BOOT_MARKER_MAGIC + 1]);
            marker.write(1, &[BOOT_MARKER_MAGIC]);
            marker.write(0, &[BOOT_MARKER_MAGIC, 0, 0, 0]);
        });
        assert_eq!(marker.first_hit(), None);
        assert!(!logs.contains("guest_boot_ms="), "{logs}");
        let mut data = [0xffu8; 4];
        marker.read(0, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
