//! Agent side of the set-up helper: spawn `hull-agent __container-setup` with the process's
//! stdio and the control socket, put it in the cgroup, send the request and follow its
//! messages (see [`super::helper`]).

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::cgroup::Cgroup;
use super::config::{AgentMessage, SetupMessage, SetupRequest, CONTROL_FD, SETUP_HELPER_ARG};
use crate::exits::ExitRegistry;

/// Control channel to a container process waiting for Start.
pub struct Control {
    reader: BufReader<UnixStream>,
    /// The container process (killed if it does not exec in time).
    pid: Option<i32>,
}

/// Longest the set-up of a process (and, for a container, its exec at Start) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest message accepted from the helper.
const MAX_MESSAGE: u64 = 64 * 1024;

impl Control {
    async fn send_line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("writing to the set-up helper: {e}"))
    }

    async fn send(&mut self, message: AgentMessage) -> Result<(), String> {
        let mut line = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.send_line(&line).await
    }

    /// The next message, or None at EOF (the process exec'd or died).
    async fn next(&mut self) -> Result<Option<SetupMessage>, String> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_MESSAGE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading from the set-up helper: {e}"))?;
        if line.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(|e| format!("bad message from the set-up helper: {e}"))
    }

    /// Tells the waiting container process to exec and waits (at most [`SETUP_TIMEOUT`]) for
    /// the outcome.
    pub async fn start(mut self) -> Result<(), String> {
        self.send(AgentMessage::Start).await?;
        let Ok(outcome) = tokio::time::timeout(SETUP_TIMEOUT, self.next()).await else {
            if let Some(pid) = self.pid {
                kill_now(pid);
            }
            return Err(format!(
                "the container process did not exec within {} s (killed)",
                SETUP_TIMEOUT.as_secs()
            ));
        };
        match outcome? {
            None => Ok(()),
            Some(SetupMessage::Error(err)) => Err(err),
            Some(other) => Err(format!("unexpected message {other:?} at start")),
        }
    }
}

/// Id maps to write for a new user namespace.
#[derive(Debug, Clone, Default)]
pub struct IdMaps {
    /// uid_map text.
    pub uid_map: String,
    /// gid_map text.
    pub gid_map: String,
}

/// A process the helper set up.
pub struct Launched {
    /// Its pid (in the agent's pid namespace).
    pub pid: i32,
    /// For a container's init: the channel that starts it.
    pub control: Option<Control>,
    /// With a terminal: the master of the pty it opened in the container's devpts.
    pub pty_master: Option<OwnedFd>,
}

/// Spawns the helper and runs the request until the container process is ready (Init) or has
/// exec'd (Exec).
pub async fn launch(
    request: &SetupRequest,
    stdio: [OwnedFd; 3],
    cgroup: Option<&Cgroup>,
    id_maps: &IdMaps,
    exits: &ExitRegistry,
) -> Result<Launched, String> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("creating the control socket: {e}"))?;
    let theirs_fd = theirs.as_raw_fd();
    let [stdin, stdout, stderr] = stdio;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(SETUP_HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: dup2 is async-signal-safe; it only touches fd numbers owned by this child.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("starting the set-up helper: {e}"))?;
    drop(command);
    drop(theirs);
    let helper_pid = child.id() as i32;
    // The reaper collects the helper; we never wait on `child`.
    drop(child);
    let helper_exit = exits.watch(helper_pid);
    if let Some(cgroup) = cgroup {
        if let Err(err) = cgroup.add_process(helper_pid) {
            kill_now(helper_pid);
            return Err(format!("joining the cgroup: {err}"));
        }
    }
    ours.set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    let stream = UnixStream::from_std(ours).map_err(|e| format!("control socket: {e}"))?;
    let mut control = Control {
        reader: BufReader::new(stream),
        pid: None,
    };
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    control.send_line(&line).await?;

    let is_init = matches!(request, SetupRequest::Init(_));
    let mut pid = None;
    let mut pty_master = None;
    let followed = tokio::time::timeout(
        SETUP_TIMEOUT,
        follow(
            &mut control,
            helper_pid,
            id_maps,
            is_init,
            &mut pid,
            &mut pty_master,
        ),
    )
    .await;
    drop(helper_exit);
    match followed {
        Ok(Ok(Some(init_pid))) => Ok(Launched {
            pid: init_pid,
            control: Some(Control {
                pid: Some(init_pid),
                ..control
            }),
            pty_master,
        }),
        Ok(Ok(None)) => match pid {
            Some(pid) => Ok(Launched {
                pid,
                control: None,
                pty_master,
            }),
            None => Err("the set-up helper exited without finishing".into()),
        },
        Ok(Err(err)) => Err(err),
        Err(_) => {
            // A helper stuck (in a frozen cgroup, on a hung mount): it and its child go.
            for stuck in [Some(helper_pid), pid].into_iter().flatten() {
                kill_now(stuck);
            }
            Err(format!(
                "the set-up did not finish within {} s",
                SETUP_TIMEOUT.as_secs()
            ))
        }
    }
}

/// Follows the helper's messages: Some(pid) when a container's init is ready for Start, None
/// when an exec's helper is done (the pid, if reported, is in `pid`).
async fn follow(
    control: &mut Control,
    helper_pid: i32,
    id_maps: &IdMaps,
    is_init: bool,
    pid: &mut Option<i32>,
    pty_master: &mut Option<OwnedFd>,
) -> Result<Option<i32>, String> {
    loop {
        match control.next().await? {
            Some(SetupMessage::PtyMaster(fd)) if pty_master.is_none() => {
                // The helper reports the process's pid before or after this; it is needed.
                let owner = match *pid {
                    Some(owner) => owner,
                    None => {
                        let owner = wait_for_pid(control).await?;
                        *pid = Some(owner);
                        owner
                    }
                };
                *pty_master = Some(take_fd(owner, fd)?);
                control.send(AgentMessage::PtyTaken).await?;
            }
            Some(SetupMessage::PtyMaster(_)) => return Err("a second pty master".into()),
            Some(SetupMessage::NeedIdMaps) => {
                write_id_maps(helper_pid, id_maps)?;
                control.send(AgentMessage::IdMapsDone).await?;
            }
            Some(SetupMessage::Pid(p)) if p > 0 => *pid = Some(p),
            Some(SetupMessage::Pid(p)) => return Err(format!("helper reported pid {p}")),
            Some(SetupMessage::Ready) if is_init => {
                let init_pid = match *pid {
                    Some(init_pid) => init_pid,
                    None => wait_for_pid(control).await?,
                };
                return Ok(Some(init_pid));
            }
            Some(SetupMessage::Ready) => return Err("unexpected Ready for an exec".into()),
            Some(SetupMessage::Error(err)) => return Err(err),
            None if is_init => return Err("the set-up helper exited without finishing".into()),
            None => return Ok(None),
        }
    }
}

/// SIGKILL to `pid` (a helper or container process the agent gives up on).
fn kill_now(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A copy of descriptor `fd` of process `pid` (pidfd_getfd(2); close-on-exec).
fn take_fd(pid: i32, fd: i32) -> Result<OwnedFd, String> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open with integer arguments; the result is owned right below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(format!(
            "pidfd_open {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor pidfd_open just returned.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd with integer arguments; the result is owned right below.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(format!(
            "taking the pty master (fd {fd} of {pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor pidfd_getfd just returned.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

async fn wait_for_pid(control: &mut Control) -> Result<i32, String> {
    match control.next().await? {
        Some(SetupMessage::Pid(p)) if p > 0 => Ok(p),
        other => Err(format!("expected the container pid, got {other:?}")),
    }
}

fn write_id_maps(pid: i32, maps: &IdMaps) -> Result<(), String> {
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let write = |file: &str, text: &str| {
        std::fs::write(proc_dir.join(file), text)
            .map_err(|e| format!("writing {file} of the user namespace: {e}"))
    };
    write("uid_map", &maps.uid_map)?;
    write("gid_map", &maps.gid_map)
}
