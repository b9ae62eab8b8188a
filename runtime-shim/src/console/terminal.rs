//! The local terminal of `hull console`: raw mode while the console runs (every key, Ctrl-C
//! included, goes to the guest's shell; the guest's pty does the echo and line editing), the
//! saved settings put back when [`RawMode`] is dropped.

use std::io::IsTerminal as _;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use super::ConsoleError;

/// Whether this process's stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Stdin in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin (a terminal) into raw mode.
    pub fn enter() -> Result<RawMode, ConsoleError> {
        let io = |action| {
            move |e: nix::errno::Errno| ConsoleError::Io {
                action,
                source: e.into(),
            }
        };
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(io("reading the terminal settings"))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(io("putting the terminal in raw mode"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
