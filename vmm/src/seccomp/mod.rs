//! Per-thread seccomp filters: each hull-vmm thread runs guest-influenced code only under an
//! allowlist of the syscalls that thread really makes (found with `strace -f` over the tiny-guest,
//! vsock, net and virtio-fs workloads).
//!
//! Thread types:
//! - **vmm** (the main thread): builds the VM, then runs the event loop that serves every device
//!   (vsock host sockets, tap rx/tx, virtio-fs call forwarding, control eventfds) and finally stops
//!   the vCPUs. Its filter is installed after set-up, once the vCPU threads exist, before the event
//!   loop handles its first event.
//! - **vcpu** (one per vCPU): `KVM_RUN` and the MMIO/PIO exits it dispatches, which include the
//!   virtio-mmio register accesses and therefore device activation and reset (vhost-user requests to
//!   virtiofsd, tap offload changes). Installed by the thread itself before its first `KVM_RUN`.
//!
//! A syscall outside a thread's list kills the whole process (`SECCOMP_RET_KILL_PROCESS`): hull-vmm
//! dies by SIGSYS (signal 31), which its parent sees as "killed by signal 31". No handler runs, so
//! nothing in the VMM can catch or ignore it; the kernel's audit log (if enabled) names the syscall.
//!
//! Argument filters: `ioctl` only with the request numbers the thread needs; `socket` only for
//! `AF_UNIX` stream sockets; `mmap`/`mprotect` never with `PROT_EXEC`; `futex` only the wait/wake
//! family; `fcntl` only flag queries/updates; `madvise` only `MADV_DONTNEED`; `fallocate` only
//! `PUNCH_HOLE | KEEP_SIZE` (free page reporting); `tgkill` only with the
//! vCPU kick signal (vmm) or `SIGABRT` (a Rust abort).

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The thread types that get their own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: set-up, then the device event loop.
    Vmm,
    /// A vCPU thread.
    Vcpu,
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {kind} seccomp filter: {source}")]
    Build {
        kind: ThreadKind,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the {kind} seccomp filter on thread {thread}: {source}")]
    Install {
        kind: ThreadKind,
        thread: String,
        #[source]
        source: seccompiler::Error,
    },
}

// KVM ioctl request numbers a vCPU thread uses (linux/kvm.h; KVMIO = 0xAE).
const KVMIO: u32 = 0xAE;
vmm_sys_util::ioctl_io_nr!(kvm_run, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(kvm_get_regs, KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_ior_nr!(kvm_get_sregs, KVMIO, 0x83, kvm_bindings::kvm_sregs);

/// `KVM_RUN`.
pub fn kvm_run_request() -> u64 {
    kvm_run()
}

/// `KVM_GET_REGS` (register dump of a failed vCPU).
pub fn kvm_get_regs_request() -> u64 {
    kvm_get_regs()
}

/// `KVM_GET_SREGS` (register dump of a failed vCPU).
pub fn kvm_get_sregs_request() -> u64 {
    kvm_get_sregs()
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// `arg[index] == value` (compared on the low 32 bits: every argument filtered here is an `int`
/// or an `unsigned int` to the kernel).
fn arg_eq(index: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .expect("argument index below 6")
}

/// `arg[index] & mask == value`.
fn arg_masked(index: u8, mask: u64, value: u64) -> SeccompCondition {
    SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .expect("argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule has at least one condition")
}

/// Allows `syscalls` with any arguments.
fn allow(rules: &mut Rules, syscalls: &[libc::c_long]) {
    for &nr in syscalls {
        rules.insert(nr, Vec::new());
    }
}

/// Allows `syscall` when argument `index` equals one of `values`.
fn allow_values(rules: &mut Rules, syscall: libc::c_long, index: u8, values: &[u64]) {
    let entry = rules.entry(syscall).or_default();
    entry.extend(values.iter().map(|&v| rule(vec![arg_eq(index, v)])));
}

/// What every thread needs: memory management (never executable), locks, its own exit, logging
/// (write on stderr/eventfds), signal return, and an abort's SIGABRT.
fn common_rules(rules: &mut Rules) {
    allow(
        rules,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_brk,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_getrandom,
            libc::SYS_clock_gettime,
        ],
    );
    let no_exec = || rule(vec![arg_masked(2, libc::PROT_EXEC as u64, 0)]);
    rules.insert(libc::SYS_mmap, vec![no_exec()]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()]);
    allow_values(rules, libc::SYS_madvise, 2, &[libc::MADV_DONTNEED as u64]);
    // The futex command without FUTEX_PRIVATE_FLAG / FUTEX_CLOCK_REALTIME.
    const FUTEX_CMD_MASK: u64 = 0x7f;
    let futex_cmds = [
        libc::FUTEX_WAIT,
        libc::FUTEX_WAKE,
        libc::FUTEX_REQUEUE,
        libc::FUTEX_CMP_REQUEUE,
        libc::FUTEX_WAKE_OP,
        libc::FUTEX_WAIT_BITSET,
        libc::FUTEX_WAKE_BITSET,
    ];
    rules.insert(
        libc::SYS_futex,
        futex_cmds
            .iter()
            .map(|&c| rule(vec![arg_masked(1, FUTEX_CMD_MASK, c as u64)]))
            .collect(),
    );
    // F_GETFD: Rust's debug builds check an fd is open before closing it; F_GETFL/F_SETFL: O_NONBLOCK.
    allow_values(
        rules,
        libc::SYS_fcntl,
        1,
        &[
            libc::F_GETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
        ],
    );
    allow_values(rules, libc::SYS_tgkill, 2, &[libc::SIGABRT as u64]);
}

fn vmm_rules(kick_signal: libc::c_int) -> Rules {
    let mut rules = Rules::new();
    common_rules(&mut rules);
    allow(
        &mut rules,
        &[
            // The event loop.
            libc::SYS_epoll_wait,
            libc::SYS_epoll_ctl,
            // vsock: the handshake timer, host clients (accept, read, write, half-close), guest
            // connections to `<uds>_<port>`.
            libc::SYS_timerfd_settime,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
            // The vsock device removes its listening socket file when the VM ends.
            libc::SYS_unlink,
            // Stopping the vCPUs: kick, sleep 1 ms, join.
            libc::SYS_clock_nanosleep,
        ],
    );
    // Guest connections: AF_UNIX stream sockets only (SOCK_NONBLOCK / SOCK_CLOEXEC allowed).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![
            arg_eq(0, libc::AF_UNIX as u64),
            arg_masked(1, 0xf, libc::SOCK_STREAM as u64),
        ])],
    );
    // virtio-balloon free page reporting: a hole punched in the guest RAM memfd, nothing else.
    allow_values(
        &mut rules,
        libc::SYS_fallocate,
        1,
        &[(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64],
    );
    // set_nonblocking on an accepted client.
    allow_values(&mut rules, libc::SYS_ioctl, 1, &[libc::FIONBIO]);
    allow_values(&mut rules, libc::SYS_tgkill, 2, &[kick_signal as u64]);
    rules
}

fn vcpu_rules() -> Rules {
    let mut rules = Rules::new();
    common_rules(&mut rules);
    allow_values(
        &mut rules,
        libc::SYS_ioctl,
        1,
        &[
            kvm_run_request(),
            kvm_get_regs_request(),
            kvm_get_sregs_request(),
            // virtio-net activation/reset (a virtio-mmio Status write): the tap's offloads follow
            // the features the guest accepted.
            libc::TUNSETOFFLOAD,
        ],
    );
    // virtio-fs activation/reset: vhost-user requests to virtiofsd on the already connected socket.
    allow(&mut rules, &[libc::SYS_sendmsg, libc::SYS_recvmsg]);
    rules
}

/// The allowlist of `kind` as syscall number → rules (empty = any arguments).
fn rules_for(kind: ThreadKind, kick_signal: libc::c_int) -> Rules {
    match kind {
        ThreadKind::Vmm => vmm_rules(kick_signal),
        ThreadKind::Vcpu => vcpu_rules(),
    }
}

/// Syscall numbers allowed (under some argument condition or none) for `kind`.
pub fn allowed_syscalls(kind: ThreadKind, kick_signal: libc::c_int) -> Vec<libc::c_long> {
    rules_for(kind, kick_signal).into_keys().collect()
}

/// Compiles the filter of `kind`: its allowlist, anything else kills the process.
/// `kick_signal` is the signal the VMM sends to interrupt `KVM_RUN`.
pub fn build(kind: ThreadKind, kick_signal: libc::c_int) -> Result<BpfProgram, SeccompError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|source| SeccompError::Build { kind, source })?;
    let filter = SeccompFilter::new(
        rules_for(kind, kick_signal),
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|source| SeccompError::Build { kind, source })?;
    filter
        .try_into()
        .map_err(|source| SeccompError::Build { kind, source })
}

/// Installs `program` (the filter of `kind`) on the calling thread, for the rest of its life.
/// Sets `no_new_privs` first, as seccomp requires without CAP_SYS_ADMIN.
pub fn install(kind: ThreadKind, program: &BpfProgram) -> Result<(), SeccompError> {
    let thread = std::thread::current().name().unwrap_or("main").to_string();
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
        kind,
        thread: thread.clone(),
        source,
    })?;
    tracing::debug!(
        "seccomp: {kind} filter installed on thread {thread} ({} BPF instructions; other syscalls kill the VMM with SIGSYS)",
        program.len()
    );
    Ok(())
}

/// Name of the test-only environment variable read by [`test_violation`].
pub const TEST_VIOLATION_ENV: &str = "HULL_VMM_TEST_SECCOMP_VIOLATION";

/// TEST ONLY, debug builds only (compiled out of release builds): when
/// `HULL_VMM_TEST_SECCOMP_VIOLATION` names `kind` (`vmm` or `vcpu`), makes a syscall that `kind`'s
/// filter forbids, right after the filter was installed. `vmm` opens an AF_INET socket (a listed
/// syscall with a forbidden argument); `vcpu` maps memory executable (PROT_EXEC). With the filter
/// on, the VMM dies by SIGSYS; with `--seccomp=off` the call succeeds and a warning says so.
#[cfg(debug_assertions)]
pub fn test_violation(kind: ThreadKind) {
    let wanted = std::env::var(TEST_VIOLATION_ENV).unwrap_or_default();
    if wanted != kind.to_string() {
        return;
    }
    tracing::warn!("{TEST_VIOLATION_ENV}={wanted}: making a forbidden syscall on purpose");
    match kind {
        ThreadKind::Vmm => {
            // SAFETY: plain socket(2); the fd is closed right away.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: fd was just returned by socket(2).
                unsafe { libc::close(fd) };
            }
        }
        ThreadKind::Vcpu => {
            // SAFETY: an anonymous private mapping, unmapped right away.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // SAFETY: p is the mapping made above.
                unsafe { libc::munmap(p, 4096) };
            }
        }
    }
    tracing::warn!("{TEST_VIOLATION_ENV}: the forbidden syscall returned (seccomp is off)");
}

/// Release builds carry no test hook.
#[cfg(not(debug_assertions))]
pub fn test_violation(_kind: ThreadKind) {}

#[cfg(test)]
mod tests;
