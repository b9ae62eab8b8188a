//! Bounds the log lines a guest can cause: a misbehaving or malicious guest must not be able to
//! flood the VMM's log with one line per bad packet.

/// Log lines always let through before limiting starts.
const BURST: u64 = 16;
/// After the burst, one line in this many is let through.
const EVERY: u64 = 1024;

/// Counts guest-caused log events and decides which ones are logged.
#[derive(Debug, Default)]
pub struct GuestLogLimit {
    seen: u64,
}

impl GuestLogLimit {
    /// Records one event; true if it should be logged.
    pub fn allow(&mut self) -> bool {
        self.seen = self.seen.saturating_add(1);
        self.seen <= BURST || self.seen.is_multiple_of(EVERY)
    }

    /// Guest-caused events seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_then_samples() {
        let mut l = GuestLogLimit::default();
        let allowed = (0..10_000).filter(|_| l.allow()).count();
        // 16 in the burst, then 1024, 2048, ..., 9216.
        assert_eq!(allowed, 16 + 9);
        assert_eq!(l.seen(), 10_000);
    }
}
