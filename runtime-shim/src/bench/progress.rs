//! The progress line on stderr: rewritten in place on a terminal, one line every few seconds
//! otherwise (a log file).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Progress of a long run.
pub struct Progress {
    tty: bool,
    started: Instant,
    last_line: Option<Instant>,
    quiet: bool,
}

impl Progress {
    /// A progress line on stderr (`quiet`: none).
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_line: None,
            quiet,
        }
    }

    /// Shows `group: what (done/total)`.
    pub fn show(&mut self, group: &str, what: &str, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let text = format!(
            "[{:>5.0}s] {group}: {what} ({done}/{total})",
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
            || done == total
        {
            self.last_line = Some(Instant::now());
            let _ = writeln!(err, "{text}");
        }
    }

    /// Ends the line (on a terminal).
    pub fn finish(&mut self) {
        if self.tty && !self.quiet {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
