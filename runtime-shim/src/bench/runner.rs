//! Drives containerd through `ctr`: timed `ctr run --rm`, detached containers, execs, and the
//! removal of everything the bench started (also when a run fails half-way).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::BenchError;

/// One timed `ctr` call.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Wall time from spawning `ctr` to reaping it.
    pub wall: Duration,
    /// When `ctr` was spawned (wall clock).
    pub started_at: SystemTime,
    /// When the first byte of its stdout arrived, if any did.
    pub first_output_at: Option<SystemTime>,
    /// Its stdout.
    pub stdout: String,
}

/// `ctr` against one containerd and namespace; remembers the containers it started.
pub struct Ctr {
    address: PathBuf,
    namespace: String,
    snapshotter: Option<String>,
    timeout: Duration,
    live: Mutex<Vec<String>>,
    seq: Mutex<u64>,
}

impl Ctr {
    /// `ctr -a address -n namespace`, each call killed after `timeout`; containers on
    /// `snapshotter` (None: containerd's default).
    pub fn new(
        address: PathBuf,
        namespace: String,
        snapshotter: Option<String>,
        timeout: Duration,
    ) -> Ctr {
        Ctr {
            address,
            namespace,
            snapshotter,
            timeout,
            live: Mutex::new(Vec::new()),
            seq: Mutex::new(0),
        }
    }

    /// A container id not used before in this run: `hb-<pid>-<tag>-<n>`.
    pub fn new_id(&self, tag: &str) -> String {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        format!("hb-{}-{tag}-{}", std::process::id(), *seq)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(&self.address)
            .arg("-n")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// Runs `ctr args`, timed; an exit status other than 0 is an error naming the call.
    pub fn timed(&self, args: &[&str]) -> Result<Timed, BenchError> {
        let call = || format!("ctr {}", args.join(" "));
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Ctr {
                call: call(),
                detail: format!("cannot start ctr: {e}"),
            })?;
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let out_reader = std::thread::spawn(move || {
            let mut first_at = None;
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                first_at.get_or_insert_with(SystemTime::now);
                text.extend_from_slice(&buf[..n]);
            }
            (first_at, String::from_utf8_lossy(&text).into_owned())
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let pid = child.id() as i32;
        let timeout = self.timeout;
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                // SAFETY: kill with plain arguments; `pid` is our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            false
        });
        let status = child.wait();
        let wall = started.elapsed();
        let _ = done_tx.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        let (first_output_at, stdout) = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        match status {
            Ok(s) if s.success() && !timed_out => Ok(Timed {
                wall,
                started_at,
                first_output_at,
                stdout,
            }),
            Ok(s) => Err(BenchError::Ctr {
                call: call(),
                detail: if timed_out {
                    format!("no answer within {timeout:?}; killed")
                } else {
                    format!("{s}: {}", stderr.trim())
                },
            }),
            Err(e) => Err(BenchError::Ctr {
                call: call(),
                detail: format!("waiting for ctr: {e}"),
            }),
        }
    }

    /// `ctr run --rm --runtime RUNTIME IMAGE ID CMD...`, timed.
    pub fn run_rm(
        &self,
        runtime: &str,
        image: &str,
        id: &str,
        cmd: &[&str],
    ) -> Result<Timed, BenchError> {
        self.remember(id);
        let mut args = vec!["run", "--rm"];
        args.extend(self.run_options(runtime));
        args.extend_from_slice(&[image, id]);
        args.extend_from_slice(cmd);
        let result = self.timed(&args);
        if result.is_ok() {
            self.forget(id);
        }
        result
    }

    /// Starts a detached container running `cmd` and waits until its task runs.
    pub fn start_detached(
        &self,
        runtime: &str,
        image: &str,
        id: &str,
        cmd: &[&str],
    ) -> Result<(), BenchError> {
        self.remember(id);
        let mut args = vec!["run", "-d"];
        args.extend(self.run_options(runtime));
        args.extend_from_slice(&[image, id]);
        args.extend_from_slice(cmd);
        self.timed(&args)?;
        Ok(())
    }

    /// `--runtime RUNTIME [--snapshotter S]`.
    fn run_options<'a>(&'a self, runtime: &'a str) -> Vec<&'a str> {
        let mut options = vec!["--runtime", runtime];
        if let Some(snapshotter) = &self.snapshotter {
            options.extend_from_slice(&["--snapshotter", snapshotter]);
        }
        options
    }

    /// An idle container (`sleep`) that work is exec'd in.
    pub fn start_idle(&self, runtime: &str, image: &str, id: &str) -> Result<(), BenchError> {
        self.start_detached(runtime, image, id, &["sleep", "1000000"])
    }

    /// `ctr task exec` of `cmd` in `id`, timed.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Result<Timed, BenchError> {
        let exec_id = self.new_id("x");
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, id];
        args.extend_from_slice(cmd);
        self.timed(&args)
    }

    /// Kills and removes container `id` (task and container), best effort.
    pub fn remove(&self, id: &str) {
        let _ = self.timed(&["task", "kill", "-s", "SIGKILL", id]);
        for _ in 0..100 {
            if self.timed(&["task", "delete", id]).is_ok() {
                break;
            }
            // Not stopped yet, or already gone.
            let ls = self
                .timed(&["task", "ls"])
                .map(|t| t.stdout)
                .unwrap_or_default();
            if !ls.lines().any(|l| l.split_whitespace().next() == Some(id)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.timed(&["container", "delete", id]);
        self.forget(id);
    }

    /// Removes every container this bench started and did not remove yet.
    pub fn remove_all(&self) {
        let ids: Vec<String> = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in ids {
            self.remove(&id);
        }
    }

    /// The image is there (`ctr image ls`).
    pub fn has_image(&self, image: &str) -> Result<bool, BenchError> {
        let ls = self.timed(&["image", "ls", "-q"])?;
        Ok(ls.stdout.lines().any(|l| l.trim() == image))
    }

    fn remember(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_string());
    }

    fn forget(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| x != id);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.remove_all();
    }
}
