//! Counts of the guest exits that reach the VMM, by reason and by port/address, kept by each vCPU
//! thread in plain integers (no sharing on the hot path) and merged when the thread ends.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Why `KVM_RUN` returned to the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    /// `KVM_RUN` returned EINTR/EAGAIN (a kick or a signal).
    Interrupted,
    SystemEvent,
    Other,
}

impl ExitKind {
    const ALL: [ExitKind; 7] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Interrupted,
        ExitKind::SystemEvent,
        ExitKind::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Interrupted => "interrupted",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Other => "other",
        }
    }

    /// Whether the exit has a port or guest-physical address worth counting separately.
    fn has_place(self) -> bool {
        matches!(
            self,
            ExitKind::IoIn | ExitKind::IoOut | ExitKind::MmioRead | ExitKind::MmioWrite
        )
    }
}

/// Exit counts of one vCPU (or the sum of several).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExitStats {
    by_kind: [u64; ExitKind::ALL.len()],
    by_place: HashMap<(ExitKind, u64), u64>,
}

impl ExitStats {
    /// Counts one exit; `place` is the port or address of an I/O or MMIO exit.
    pub fn record(&mut self, kind: ExitKind, place: u64) {
        self.by_kind[kind as usize] += 1;
        if kind.has_place() {
            *self.by_place.entry((kind, place)).or_default() += 1;
        }
    }

    /// Count of one kind.
    pub fn count(&self, kind: ExitKind) -> u64 {
        self.by_kind[kind as usize]
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ExitStats) {
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            *mine += theirs;
        }
        for (key, n) in &other.by_place {
            *self.by_place.entry(*key).or_default() += n;
        }
    }

    /// One line: the total, each non-zero kind, and the `top` busiest ports/addresses, e.g.
    /// `total=12 io_out=10 mmio_write=2; top: io_out@0x3f8=9 ...`.
    pub fn describe(&self, top: usize) -> String {
        let mut out = format!("total={}", self.total());
        for kind in ExitKind::ALL {
            let n = self.count(kind);
            if n != 0 {
                let _ = write!(out, " {}={n}", kind.name());
            }
        }
        let mut places: Vec<_> = self.by_place.iter().collect();
        // Busiest first; ties in a stable order.
        places.sort_by(|(ka, na), (kb, nb)| nb.cmp(na).then(ka.cmp(kb)));
        if !places.is_empty() {
            out.push_str("; top:");
            for ((kind, place), n) in places.into_iter().take(top) {
                let _ = write!(out, " {}@{place:#x}={n}", kind.name());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
