//! The set-up helper: `hull-agent __container-setup`, started by the agent with the process's
//! stdio on fds 0-2 and the control socket on fd 3. A fresh single-threaded process, so it may
//! unshare/setns and fork freely. It enters the namespaces, then clones the container process
//! with CLONE_PARENT (so the agent is its parent and reaps it), reports its pid and exits. The
//! container process sets itself up, (for a container) waits for Start, and execs; the control
//! socket is close-on-exec, so the agent sees EOF exactly when exec succeeded.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::FromRawFd as _;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::config::{
    AgentMessage, ExecConfig, InitConfig, SetupMessage, SetupRequest, CONTROL_FD, MAX_CONTROL_LINE,
};
use super::init::{self, namespace_flag, SetupError};
use super::seccomp;
use super::syscall::{LinuxSyscall, Syscall as _};

/// Runs the helper; never returns.
pub fn run() -> ! {
    // SAFETY: fd 3 was set up by the agent for this process and nothing else owns it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let _ = nix::fcntl::fcntl(
        &control,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // Whatever else the agent let us inherit must not reach the container process.
    close_on_exec_from(CONTROL_FD + 1);
    let mut channel = Channel::new(control);
    let outcome = channel.read_request().and_then(|request| match request {
        SetupRequest::Init(config) => run_init(&mut channel, &config),
        SetupRequest::Exec(config) => run_exec(&mut channel, &config),
    });
    if let Err(message) = outcome {
        channel.send(&SetupMessage::Error(message));
    }
    std::process::exit(1)
}

struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    fn new(stream: UnixStream) -> Self {
        let writer = stream.try_clone().unwrap_or_else(|_| std::process::exit(1));
        Channel {
            reader: BufReader::new(stream),
            writer,
        }
    }

    fn read_line(&mut self) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_CONTROL_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the control socket: {e}"))?;
        if line.is_empty() {
            return Err("the agent closed the control socket".into());
        }
        Ok(line)
    }

    fn read_request(&mut self) -> Result<SetupRequest, String> {
        let line = self.read_line()?;
        serde_json::from_slice(&line).map_err(|e| format!("bad set-up request: {e}"))
    }

    fn read_message(&mut self) -> Result<AgentMessage, String> {
        let line = self.read_line()?;
        serde_json::from_slice(&line).map_err(|e| format!("bad agent message: {e}"))
    }

    fn send(&mut self, message: &SetupMessage) {
        if let Ok(mut line) = serde_json::to_vec(message) {
            line.push(b'\n');
            let _ = self.writer.write_all(&line);
        }
    }
}

/// Marks every descriptor from `first` on close-on-exec (close_range(2); on kernels without it,
/// one by one from /proc/self/fd).
fn close_on_exec_from(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a stale one (the directory's) fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// fork() that makes the child a child of our parent (the agent).
fn clone_parent() -> Result<i32, String> {
    // SAFETY: raw clone without a new stack behaves like fork; this process is single-threaded.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    Ok(pid as i32)
}

fn install_filter(program: &seccompiler::BpfProgram) -> Result<(), SetupError> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const seccompiler::sock_filter,
    }
    let prog = SockFprog {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: the kernel copies the program; `prog` and `program` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(SetupError::Unsupported(format!(
            "loading the seccomp filter: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn run_init(channel: &mut Channel, config: &InitConfig) -> Result<(), String> {
    let sys = LinuxSyscall;
    let spec = &config.spec;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    // A new user namespace first: the agent writes its id maps, then we are root inside.
    if let Some(user) = namespaces
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::User)
    {
        match user.path() {
            Some(path) => sys
                .setns(path, CloneFlags::CLONE_NEWUSER)
                .map_err(|e| e.to_string())?,
            None => {
                sys.unshare(CloneFlags::CLONE_NEWUSER)
                    .map_err(|e| e.to_string())?;
                channel.send(&SetupMessage::NeedIdMaps);
                if channel.read_message()? != AgentMessage::IdMapsDone {
                    return Err("expected IdMapsDone".into());
                }
            }
        }
        sys.setgid(0).map_err(|e| e.to_string())?;
        sys.setuid(0).map_err(|e| e.to_string())?;
    }
    let mut unshare = CloneFlags::empty();
    for ns in namespaces
        .iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::User)
    {
        let flag = namespace_flag(ns.typ());
        match ns.path() {
            Some(path) => sys.setns(path, flag).map_err(|e| e.to_string())?,
            None => unshare |= flag,
        }
    }
    sys.unshare(unshare).map_err(|e| e.to_string())?;

    let pid = clone_parent()?;
    if pid > 0 {
        channel.send(&SetupMessage::Pid(pid));
        std::process::exit(0);
    }
    init::prepare_rootfs(&sys, &config.rootfs, spec).map_err(|e| e.to_string())?;
    // As runc: a missing executable fails CreateContainer, not StartContainer.
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    check_executable(process)?;
    if config.terminal {
        hand_over_container_pty(channel, config.console_size)?;
    }
    channel.send(&SetupMessage::Ready);
    if channel.read_message()? != AgentMessage::Start {
        return Err("expected Start".into());
    }
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    exec_process(process, config.terminal, seccomp.as_ref())
}

/// The namespaces an exec joins, in order: user first, mount last.
const EXEC_NAMESPACES: [(&str, LinuxNamespaceType); 7] = [
    ("user", LinuxNamespaceType::User),
    ("ipc", LinuxNamespaceType::Ipc),
    ("uts", LinuxNamespaceType::Uts),
    ("net", LinuxNamespaceType::Network),
    ("pid", LinuxNamespaceType::Pid),
    ("cgroup", LinuxNamespaceType::Cgroup),
    ("mnt", LinuxNamespaceType::Mount),
];

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn run_exec(channel: &mut Channel, config: &ExecConfig) -> Result<(), String> {
    let sys = LinuxSyscall;
    for (name, kind) in EXEC_NAMESPACES {
        let theirs = Path::new("/proc")
            .join(config.init_pid.to_string())
            .join("ns")
            .join(name);
        let ours = Path::new("/proc/self/ns").join(name);
        if !theirs.exists() {
            return Err(format!(
                "container process {} is gone ({} missing)",
                config.init_pid,
                theirs.display()
            ));
        }
        if !same_file(&theirs, &ours) {
            sys.setns(&theirs, namespace_flag(kind))
                .map_err(|e| e.to_string())?;
        }
    }
    let pid = clone_parent()?;
    if pid > 0 {
        channel.send(&SetupMessage::Pid(pid));
        std::process::exit(0);
    }
    if config.terminal {
        hand_over_container_pty(channel, config.console_size)?;
    }
    exec_process(&config.process, config.terminal, config.seccomp.as_ref())
}

/// Opens a pty in the container's devpts (its /dev/ptmx: we are in its mount namespace and
/// root), makes the slave fds 0-2, and lets the agent take the master (which is close-on-exec,
/// so the process keeps only the slave). A pty from the agent's devpts would not exist in the
/// container's /dev/pts: `tty` and ttyname(3) would fail there.
fn hand_over_container_pty(
    channel: &mut Channel,
    console_size: Option<(u16, u16)>,
) -> Result<(), String> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let ptmx = c"/dev/ptmx";
    // SAFETY: open(2) of a constant path; the descriptor is owned right below.
    let master = unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(format!(
            "opening the container's /dev/ptmx: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor open(2) just returned.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int that lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(format!(
            "unlocking the pty: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Some((rows, columns)) = console_size {
        crate::stdio::resize_pty(&master, rows, columns)
            .map_err(|e| format!("setting the terminal size: {e}"))?;
    }
    // SAFETY: TIOCGPTPEER opens the slave of this very master (in the same devpts) and
    // returns a new descriptor, owned right below.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(format!(
            "opening the pty's slave: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor the ioctl just returned.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(format!(
                "dup2 of the pty: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(slave);
    channel.send(&SetupMessage::PtyMaster(master.as_raw_fd()));
    match channel.read_message()? {
        AgentMessage::PtyTaken => Ok(()),
        other => Err(format!("expected PtyTaken, got {other:?}")),
    }
}

/// Whether the process's executable exists in the (new) root: on its PATH, or at its path
/// (relative to its cwd).
fn check_executable(process: &Process) -> Result<(), String> {
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or("process.args is empty")?;
    if arg0.contains('/') {
        let path = process.cwd().join(arg0);
        if std::fs::metadata(&path).is_err() {
            return Err(format!("executable {arg0:?} not found in the container"));
        }
        return Ok(());
    }
    let env = process.env().clone().unwrap_or_default();
    init::find_executable(arg0, &env)
        .map(drop)
        .ok_or_else(|| format!("executable {arg0:?} not found in the container's PATH"))
}

/// Process set-up and execve; returns only on failure.
fn exec_process(
    process: &Process,
    terminal: bool,
    profile: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<(), String> {
    let sys = LinuxSyscall;
    // The agent (a Rust program) ignores SIGPIPE; the container process must not inherit that.
    // SAFETY: resetting a signal disposition to its default in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let programs = match profile {
        Some(profile) => seccomp::compile(profile).map_err(|e| e.to_string())?.0,
        None => Vec::new(),
    };
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    let (early, late): (&[_], &[_]) = if no_new_privs {
        (&[], &programs)
    } else {
        (&programs, &[])
    };
    init::prepare_process(&sys, process, terminal, early, &install_filter)
        .map_err(|e| e.to_string())?;
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let arg0 = args.first().ok_or("process.args is empty")?;
    let program = init::find_executable(arg0, &env)
        .ok_or_else(|| format!("executable {arg0:?} not found in the container's PATH"))?;
    let to_c = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
    let c_args = args
        .iter()
        .map(|a| to_c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>, _>>()?;
    let c_program = super::syscall::path_cstring(&program)
        .map_err(|_| format!("bad program path {}", program.display()))?;
    init::finish_process(&sys, process, late, &install_filter).map_err(|e| e.to_string())?;
    let err = nix::unistd::execve(&c_program, &c_args, &c_env).unwrap_err();
    Err(format!("exec {}: {err}", program.display()))
}
