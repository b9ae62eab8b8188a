//! Routes the exit statuses the reaper collects to whoever waits for that pid.
//!
//! A pid can exit before anybody registered interest (a container process that dies during
//! set-up): such exits are kept, bounded, until claimed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::oneshot;

/// Unclaimed exits kept at most (oldest dropped).
const MAX_UNCLAIMED: usize = 4096;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// As runc reports it: exit code, or 128 + signal.
    pub status: i32,
    /// When the agent reaped it.
    pub at: SystemTime,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<i32, oneshot::Sender<ExitInfo>>,
    unclaimed: HashMap<i32, ExitInfo>,
    order: VecDeque<i32>,
}

/// Shared registry of exits; cheap to clone.
#[derive(Clone, Default)]
pub struct ExitRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl ExitRegistry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a receiver that gets `pid`'s exit (at once if it already happened).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ExitInfo> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(exit) = inner.unclaimed.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            inner.waiting.insert(pid, tx);
        }
        rx
    }

    /// Records that `pid` exited.
    pub fn exited(&self, pid: i32, status: i32) {
        let exit = ExitInfo {
            status,
            at: SystemTime::now(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = inner.waiting.remove(&pid) {
            let _ = tx.send(exit);
            return;
        }
        inner.unclaimed.insert(pid, exit);
        inner.order.push_back(pid);
        while inner.order.len() > MAX_UNCLAIMED {
            if let Some(old) = inner.order.pop_front() {
                inner.unclaimed.remove(&old);
            }
        }
    }

    /// Forgets an unclaimed exit of `pid` (a helper the agent does not wait for).
    pub fn forget(&self, pid: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.unclaimed.remove(&pid);
        inner.waiting.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn exits_before_and_after_watching_are_delivered() {
        let registry = ExitRegistry::new();
        registry.exited(10, 3);
        assert_eq!(registry.watch(10).await.unwrap().status, 3);
        let later = registry.watch(11);
        registry.exited(11, 137);
        assert_eq!(later.await.unwrap().status, 137);
        for pid in 0..(MAX_UNCLAIMED as i32 + 10) {
            registry.exited(100_000 + pid, 0);
        }
        assert!(registry.inner.lock().unwrap().unclaimed.len() <= MAX_UNCLAIMED);
    }
}
