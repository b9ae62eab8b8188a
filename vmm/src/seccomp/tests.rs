//! Filter contents, and real filters installed on threads of a child process (this test binary
//! re-run with one case selected by an environment variable): a listed call passes, an unlisted
//! call or a listed call with a forbidden argument kills the child with SIGSYS. The virtio-fs case
//! runs the vhost-user activation, reset and FUSE traffic against a real virtiofsd under the vcpu
//! and vmm filters, as hull-vmm does (no tiny guest drives virtio-fs yet).

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use super::*;
use crate::virtio::fs::backend_tests::{Sandbox, Virtiofsd};
use crate::virtio::VirtioDevice;

const CASE_ENV: &str = "HULL_SECCOMP_TEST_CASE";

#[test]
fn kvm_request_numbers_match_linux_headers() {
    assert_eq!(kvm_run_request(), 0xae80);
    assert_eq!(kvm_get_regs_request(), 0x8090_ae81);
    assert_eq!(kvm_get_sregs_request(), 0x8138_ae83);
}

#[test]
fn each_thread_type_gets_its_own_list() {
    let kick = crate::vcpu::kick_signal();
    let vmm = allowed_syscalls(ThreadKind::Vmm, kick);
    let vcpu = allowed_syscalls(ThreadKind::Vcpu, kick);
    for common in [
        libc::SYS_write,
        libc::SYS_futex,
        libc::SYS_mmap,
        libc::SYS_ioctl,
    ] {
        assert!(vmm.contains(&common) && vcpu.contains(&common), "{common}");
    }
    for vmm_only in [libc::SYS_epoll_wait, libc::SYS_accept4, libc::SYS_socket] {
        assert!(
            vmm.contains(&vmm_only) && !vcpu.contains(&vmm_only),
            "{vmm_only}"
        );
    }
    for vcpu_only in [libc::SYS_sendmsg, libc::SYS_recvmsg] {
        assert!(
            vcpu.contains(&vcpu_only) && !vmm.contains(&vcpu_only),
            "{vcpu_only}"
        );
    }
    for never in [
        libc::SYS_execve,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_fork,
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_ptrace,
        libc::SYS_mount,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_kill,
        libc::SYS_setuid,
    ] {
        assert!(!vmm.contains(&never) && !vcpu.contains(&never), "{never}");
    }
    let vmm_bpf = build(ThreadKind::Vmm, kick).unwrap();
    let vcpu_bpf = build(ThreadKind::Vcpu, kick).unwrap();
    assert!(!vmm_bpf.is_empty() && !vcpu_bpf.is_empty());
    assert_ne!(vmm_bpf, vcpu_bpf);
}

/// Re-runs this test binary with only [`child`] selected and `case` in the environment.
fn run_case(case: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "seccomp::tests::child", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CASE_ENV, case)
        // A backtrace would read debug info from files: not something a filtered thread may do.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

fn assert_passes(case: &str) {
    let out = run_case(case);
    assert!(
        out.status.success(),
        "case {case}: {:?} (signal 31 = a needed syscall is not in the allowlist)\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_killed(case: &str) {
    let out = run_case(case);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "case {case} should die by SIGSYS: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn listed_calls_pass_under_each_filter() {
    assert_passes("vcpu-mmap-rw");
    assert_passes("vmm-unix-socket");
    assert_passes("vmm-punch-hole");
}

#[test]
fn forbidden_calls_kill_the_process() {
    assert_killed("vcpu-mmap-exec");
    assert_killed("vcpu-unix-socket");
    assert_killed("vcpu-fionbio");
    assert_killed("vmm-inet-socket");
    assert_killed("vmm-kvm-run");
    assert_killed("vmm-mprotect-exec");
    assert_killed("vmm-fallocate-grow");
    assert_killed("vcpu-punch-hole");
}

#[test]
fn virtio_fs_activation_and_requests_run_under_the_filters() {
    if hull_runtime::sandbox::virtiofsd::find_virtiofsd().is_none() {
        assert!(
            std::env::var_os("HULL_REQUIRE_VIRTIOFSD").is_none_or(|v| v != "1"),
            "virtiofsd is not installed and HULL_REQUIRE_VIRTIOFSD=1"
        );
        eprintln!("SKIPPED seccomp virtio-fs case: virtiofsd not found");
        return;
    }
    assert_passes("virtio-fs");
}

/// Runs `f` on a new thread that first installs the filter of `kind`.
fn filtered<T: Send + 'static>(kind: ThreadKind, f: impl FnOnce() -> T + Send + 'static) -> T {
    let program = build(kind, crate::vcpu::kick_signal()).unwrap();
    std::thread::spawn(move || {
        install(kind, &program).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn mmap_anon(prot: libc::c_int) -> bool {
    // SAFETY: an anonymous private mapping, unmapped right away.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    // SAFETY: p is the mapping made above (if any).
    p != libc::MAP_FAILED && unsafe { libc::munmap(p, 4096) } == 0
}

/// fallocate(2) with `mode` on the first page of guest RAM, on a thread under the filter of
/// `kind`. The RAM is created unfiltered, as at hull-vmm's set-up.
fn fallocate_guest_ram(kind: ThreadKind, mode: libc::c_int) -> libc::c_int {
    let ram = crate::memory::create_guest_ram(crate::layout::MIN_MEM_MIB).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*ram.memfd);
    // SAFETY: plain fallocate on the memfd `ram` owns, alive until the thread is joined.
    let rc = filtered(kind, move || unsafe { libc::fallocate(fd, mode, 0, 4096) });
    drop(ram);
    rc
}

const PUNCH_HOLE: libc::c_int = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

fn socket(family: libc::c_int) -> bool {
    // SAFETY: plain socket(2); the fd is closed right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: fd was just returned by socket(2).
    fd >= 0 && unsafe { libc::close(fd) } == 0
}

/// The child half of the cases above; does nothing unless `HULL_SECCOMP_TEST_CASE` is set.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return;
    };
    match case.as_str() {
        "vcpu-mmap-rw" => assert!(filtered(ThreadKind::Vcpu, || mmap_anon(
            libc::PROT_READ | libc::PROT_WRITE
        ))),
        "vcpu-mmap-exec" => {
            filtered(ThreadKind::Vcpu, || {
                mmap_anon(libc::PROT_READ | libc::PROT_EXEC)
            });
        }
        "vcpu-unix-socket" => {
            filtered(ThreadKind::Vcpu, || socket(libc::AF_UNIX));
        }
        "vcpu-fionbio" => {
            filtered(ThreadKind::Vcpu, || {
                let mut on: libc::c_int = 1;
                // SAFETY: FIONBIO on stdin with a valid int pointer.
                unsafe { libc::ioctl(0, libc::FIONBIO, &mut on) }
            });
        }
        "vmm-unix-socket" => assert!(filtered(ThreadKind::Vmm, || socket(libc::AF_UNIX))),
        "vmm-inet-socket" => {
            filtered(ThreadKind::Vmm, || socket(libc::AF_INET));
        }
        "vmm-kvm-run" => {
            // SAFETY: an ioctl on an invalid fd (the filter decides before the kernel looks).
            filtered(ThreadKind::Vmm, || unsafe {
                libc::ioctl(-1, kvm_run_request())
            });
        }
        "vmm-mprotect-exec" => {
            filtered(ThreadKind::Vmm, || {
                let mut page = vec![0u8; 8192];
                let addr = ((page.as_mut_ptr() as usize + 4095) & !4095) as *mut libc::c_void;
                // SAFETY: a page inside our own buffer; never executed.
                unsafe { libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC) }
            });
        }
        "vmm-punch-hole" => assert_eq!(fallocate_guest_ram(ThreadKind::Vmm, PUNCH_HOLE), 0),
        "vmm-fallocate-grow" => {
            fallocate_guest_ram(ThreadKind::Vmm, 0);
        }
        "vcpu-punch-hole" => {
            fallocate_guest_ram(ThreadKind::Vcpu, PUNCH_HOLE);
        }
        "virtio-fs" => virtio_fs_under_filters(),
        other => panic!("unknown case {other}"),
    }
    // A case that should have been killed and was not fails here.
    eprintln!("case {case} returned");
}

/// hull-vmm's split: connect at set-up (unfiltered), DRIVER_OK and resets on vCPU threads, FUSE
/// traffic (kicks, call eventfds, interrupts) on the event-loop thread.
fn virtio_fs_under_filters() {
    use crate::virtio::fs::backend_tests::{
        fuse_request, u32_at, u64_at, ActiveFs, FUSE_LOOKUP, FUSE_ROOT_ID,
    };
    let virtiofsd = Virtiofsd::start("seccomp", Sandbox::None).expect("virtiofsd");
    let prepared = ActiveFs::prepare(&virtiofsd.socket());
    let fs = filtered(ThreadKind::Vcpu, move || ActiveFs::activate(prepared));
    let fs = filtered(ThreadKind::Vmm, move || {
        let mut fs = fs;
        fs.fuse_init();
        fs
    });
    let fs = filtered(ThreadKind::Vcpu, move || {
        let mut fs = fs;
        assert!(fs.device.lock().unwrap().reset());
        fs.reactivate();
        fs
    });
    let fs = filtered(ThreadKind::Vmm, move || {
        let mut fs = fs;
        let reply = fs.exchange(&fuse_request(FUSE_LOOKUP, 3, FUSE_ROOT_ID, b"hello.txt\0"));
        assert_eq!(u32_at(&reply, 4), 0, "LOOKUP error");
        assert_eq!(u64_at(&reply, 16 + 40 + 8), 20, "size of hello.txt");
        fs
    });
    drop(fs);
    drop(virtiofsd);
}
