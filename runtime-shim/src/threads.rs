//! The shim's process set-up: its tokio runtime, and no transparent huge pages for its memory.
//!
//! Where the host's THP setting is `always` (Debian's and RHEL's default), an anonymous mapping
//! that holds a whole 2 MiB-aligned range is filled with a 2 MiB page on its first touch. A
//! thread stack (2 MiB, Rust's and tokio's default) that lands aligned then costs 2 MiB for the
//! few KiB it uses: in the nested lab every shim and every hull-vmm had one such stack, 4 MiB
//! per pod. The shim gains nothing from huge pages, so it turns them off for itself; its
//! children inherit that (virtiofsd too, which only maps guest RAM that keeps its own huge
//! pages), except hull-vmm, whose guest RAM wants them: it gets them back before its exec
//! ([`allow_huge_pages`]) and keeps its own thread stacks off them.

/// Most tokio workers of one shim. Every pod has its own shim: with tokio's default (one worker
/// per host CPU) each shim on a 64-CPU host would start 64 idle workers, each with its stack and
/// malloc arena. Slow work goes to tokio's blocking pool, which grows on demand and shrinks when
/// idle.
pub const MAX_WORKERS: usize = 2;

/// The shim daemon's tokio runtime: at most [`MAX_WORKERS`] workers.
pub fn shim_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Turns transparent huge pages off for this process and the children it starts from now on
/// (`PR_SET_THP_DISABLE`, inherited across fork and exec).
pub fn no_huge_pages() -> std::io::Result<()> {
    set_thp_disable(1)
}

/// Turns transparent huge pages back on for this process: for a child between fork and exec
/// (async-signal-safe: one prctl).
pub fn allow_huge_pages() -> std::io::Result<()> {
    set_thp_disable(0)
}

fn set_thp_disable(value: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: prctl(2) with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, value, 0, 0, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
