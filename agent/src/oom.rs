//! GetOOMEvent: watches every container's cgroup `memory.events` and queues the container's id
//! whenever its `oom_kill` counter rises.
//!
//! One inotify instance watches all the files (cgroup v2 raises a modify event on
//! `memory.events` when a counter changes); one task ([`OomMonitor::run`]) reads the events and
//! re-reads the changed files. Events wait in a bounded queue (oldest dropped) until a
//! GetOOMEvent long poll takes them. Both the task and pending polls end at power-off.

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

/// Events kept at most while nobody polls (oldest dropped).
pub const MAX_QUEUED_EVENTS: usize = 128;

/// Longest `memory.events` content read (the real file is about 60 bytes).
const MAX_EVENTS_FILE: u64 = 4096;

/// Watching a container's `memory.events` failed.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// The inotify instance could not be created when the agent started.
    #[error("OOM events are unavailable: inotify_init failed: {0}")]
    NoInotify(nix::Error),
    /// inotify_add_watch failed.
    #[error("watching {path}: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// The file could not be read or has no `oom_kill` line.
    #[error("reading the oom_kill counter of {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The inotify instance, shareable with the tokio reactor.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One watched `memory.events` file.
struct Watched {
    container_id: String,
    file: PathBuf,
    wd: WatchDescriptor,
    oom_kills: u64,
}

/// The OOM event source of the agent.
pub struct OomMonitor {
    inotify: Result<Arc<InotifyFd>, nix::Error>,
    /// By raw watch descriptor.
    watched: Mutex<HashMap<i32, Watched>>,
    queue: Mutex<VecDeque<String>>,
    queued: Notify,
}

/// Reads the `oom_kill` counter of a `memory.events` file.
pub fn read_oom_kills(file: &Path) -> Result<u64, OomError> {
    let fail = |reason: String| OomError::Read {
        path: file.to_path_buf(),
        reason,
    };
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_EVENTS_FILE).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    crate::container::cgroup::parse_keyed(&text, "oom_kill")
        .ok_or_else(|| fail("no oom_kill line".into()))
}

impl OomMonitor {
    /// Creates the monitor. If inotify is unavailable the agent still runs; watching then
    /// fails with [`OomError::NoInotify`].
    pub fn new() -> Arc<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map(|i| Arc::new(InotifyFd(i)));
        if let Err(err) = &inotify {
            warn!(%err, "inotify_init failed: no OOM events");
        }
        Arc::new(OomMonitor {
            inotify,
            watched: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
        })
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `memory_events` for `container_id`. A rise already visible right after
    /// the watch was added (relative to `baseline`, the counter when the cgroup was made) is
    /// reported at once.
    pub fn watch(
        &self,
        container_id: &str,
        memory_events: &Path,
        baseline: u64,
    ) -> Result<(), OomError> {
        let inotify = self.inotify.as_ref().map_err(|e| OomError::NoInotify(*e))?;
        let wd = inotify
            .0
            .add_watch(memory_events, AddWatchFlags::IN_MODIFY)
            .map_err(|source| OomError::Watch {
                path: memory_events.to_path_buf(),
                source,
            })?;
        debug!(container_id, file = %memory_events.display(), "watching OOM kills");
        let raw = wd.as_raw();
        self.lock_watched().insert(
            raw,
            Watched {
                container_id: container_id.to_string(),
                file: memory_events.to_path_buf(),
                wd,
                oom_kills: baseline,
            },
        );
        self.recheck(raw);
        Ok(())
    }

    /// Stops watching `container_id`'s file (container removed). Unknown ids are ignored.
    pub fn unwatch(&self, container_id: &str) {
        let removed: Vec<Watched> = {
            let mut watched = self.lock_watched();
            let wds: Vec<i32> = watched
                .iter()
                .filter(|(_, w)| w.container_id == container_id)
                .map(|(wd, _)| *wd)
                .collect();
            wds.iter().filter_map(|wd| watched.remove(wd)).collect()
        };
        if let Ok(inotify) = &self.inotify {
            for w in removed {
                // Fails harmlessly when the cgroup is already gone (the kernel dropped it).
                let _ = inotify.0.rm_watch(w.wd);
            }
        }
    }

    /// Re-reads the file behind `wd`; queues the container's id if its counter rose.
    fn recheck(&self, wd: i32) {
        let mut watched = self.lock_watched();
        let Some(entry) = watched.get_mut(&wd) else {
            return;
        };
        match read_oom_kills(&entry.file) {
            Ok(now) if now > entry.oom_kills => {
                info!(container_id = %entry.container_id, oom_kills = now, "OOM kill");
                entry.oom_kills = now;
                let id = entry.container_id.clone();
                drop(watched);
                self.push(id);
            }
            Ok(_) => {}
            Err(err) => debug!(%err, "re-reading memory.events"),
        }
    }

    fn push(&self, container_id: String) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(container_id);
        while queue.len() > MAX_QUEUED_EVENTS {
            if let Some(dropped) = queue.pop_front() {
                warn!(container_id = %dropped, "OOM event queue full: dropped the oldest event");
            }
        }
        drop(queue);
        self.queued.notify_waiters();
    }

    fn pop(&self) -> Option<String> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// The next OOM event (a container id). None once `power_off` turns true: a long poll must
    /// not hold the agent up while it goes down.
    pub async fn next_event(&self, mut power_off: watch::Receiver<bool>) -> Option<String> {
        loop {
            let notified = self.queued.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *power_off.borrow() {
                return None;
            }
            if let Some(id) = self.pop() {
                return Some(id);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = power_off.wait_for(|off| *off) => return None,
            }
        }
    }

    /// Reads inotify events until `power_off` turns true, re-checking the files that changed.
    pub async fn run(self: Arc<Self>, mut power_off: watch::Receiver<bool>) {
        let Ok(inotify) = self.inotify.as_ref().map(Arc::clone) else {
            return;
        };
        // SAFETY: the Arc keeps the inotify fd open, with its number, while the AsyncFd lives.
        let readiness = match unsafe { AsyncFd::register(Arc::clone(&inotify)) } {
            Ok(fd) => fd,
            Err(err) => {
                warn!(%err, "registering the inotify fd: no OOM events");
                return;
            }
        };
        loop {
            let mut ready = tokio::select! {
                ready = readiness.readable() => match ready {
                    Ok(ready) => ready,
                    Err(err) => {
                        warn!(%err, "inotify readiness: OOM monitor stopped");
                        return;
                    }
                },
                _ = power_off.wait_for(|off| *off) => {
                    debug!("OOM monitor stopped (power-off)");
                    return;
                }
            };
            match inotify.0.read_events() {
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.recheck_all();
                        } else if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                            // The file is gone (cgroup removed): the kernel dropped the watch.
                            self.lock_watched().remove(&event.wd.as_raw());
                        } else {
                            self.recheck(event.wd.as_raw());
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(err) => {
                    warn!(%err, "reading inotify events: OOM monitor stopped");
                    return;
                }
            }
        }
    }

    fn recheck_all(&self) {
        let wds: Vec<i32> = self.lock_watched().keys().copied().collect();
        for wd in wds {
            self.recheck(wd);
        }
    }
}

#[cfg(test)]
mod tests;
