//! Routes the exit statuses the reaper collects to whoever waits for that pid.
//!
//! A pid can exit before anybody registered interest (a container process that dies during
//! set-up, an exec of `true` that ends before the agent has read its pid): such exits are kept
//! until claimed, at most [`MAX_UNCLAIMED`] of them and for [`UNCLAIMED_TTL`]. The age limit
//! keeps an old exit (an orphan's, a failed launch's) from being handed to a new process that
//! got the same pid after the pid counter wrapped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

/// Unclaimed exits kept at most (oldest dropped).
const MAX_UNCLAIMED: usize = 4096;
/// How long an unclaimed exit waits for its claimant. Who claims one asks within moments of
/// learning the pid; reusing a pid takes a wrap of the whole pid space.
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

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
    unclaimed: HashMap<i32, (ExitInfo, Instant)>,
    order: VecDeque<(i32, Instant)>,
}

impl Inner {
    /// Drops unclaimed exits older than `ttl`, and the oldest beyond [`MAX_UNCLAIMED`].
    fn prune(&mut self, ttl: Duration) {
        while let Some(&(pid, reaped)) = self.order.front() {
            // The entry this record stands for, unless it was claimed or replaced since.
            let current = self
                .unclaimed
                .get(&pid)
                .is_some_and(|(_, at)| *at == reaped);
            let too_many = self.unclaimed.len() > MAX_UNCLAIMED;
            if current && !too_many && reaped.elapsed() <= ttl {
                return;
            }
            self.order.pop_front();
            if current {
                self.unclaimed.remove(&pid);
            }
        }
    }
}

/// Shared registry of exits; cheap to clone.
#[derive(Clone)]
pub struct ExitRegistry {
    inner: Arc<Mutex<Inner>>,
    ttl: Duration,
}

impl Default for ExitRegistry {
    fn default() -> Self {
        Self::with_ttl(UNCLAIMED_TTL)
    }
}

impl ExitRegistry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty registry keeping unclaimed exits for `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        ExitRegistry {
            inner: Arc::default(),
            ttl,
        }
    }

    /// Returns a receiver that gets `pid`'s exit (at once if it already happened).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ExitInfo> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.prune(self.ttl);
        match inner.unclaimed.remove(&pid) {
            Some((exit, reaped)) if reaped.elapsed() <= self.ttl => {
                let _ = tx.send(exit);
            }
            _ => {
                inner.waiting.insert(pid, tx);
            }
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
        let now = Instant::now();
        inner.unclaimed.insert(pid, (exit, now));
        inner.order.push_back((pid, now));
        inner.prune(self.ttl);
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

    #[tokio::test(flavor = "current_thread")]
    async fn an_old_unclaimed_exit_is_not_handed_to_a_new_process_with_its_pid() {
        let registry = ExitRegistry::with_ttl(Duration::from_millis(50));
        registry.exited(20, 1);
        std::thread::sleep(Duration::from_millis(100));
        // The pid came round again: the new process's exit is its own.
        let mut new_process = registry.watch(20);
        assert!(
            new_process.try_recv().is_err(),
            "a stale exit was delivered"
        );
        registry.exited(20, 0);
        assert_eq!(new_process.await.unwrap().status, 0);
        assert!(registry.inner.lock().unwrap().unclaimed.is_empty());
    }
}
