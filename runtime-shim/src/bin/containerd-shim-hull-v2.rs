//! containerd-shim-hull-v2: containerd's shim v2 for Hull (one microVM per pod).
//!
//! containerd runs it as `containerd-shim-hull-v2 -namespace NS -address SOCK -id ID start`
//! (prints the ttrpc address of the shim serving the pod), `... delete` (clean-up after a
//! crashed shim), and the daemon itself.

use std::io::Write as _;

use hull_runtime::shim::{start_command, HullShim, RUNTIME_ID};

/// Most tokio workers of one shim. Every pod has its own shim: with tokio's default (one worker
/// per host CPU) each shim on a 64-CPU host would start 64 idle workers, each with its stack and
/// malloc arena. Slow work goes to tokio's blocking pool, which grows on demand and shrinks when
/// idle.
const MAX_WORKERS: usize = 2;

fn main() {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(shim_main()),
        Err(e) => {
            eprintln!("{RUNTIME_ID}: starting the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn shim_main() {
    let args: Vec<_> = std::env::args_os().collect();
    if let Ok(flags) = containerd_shim::parse(&args[1..]) {
        if flags.action.is_empty() {
            if let Err(e) = hull_runtime::daemon::serve(&flags).await {
                eprintln!("{RUNTIME_ID}: {e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        if flags.action == "start" {
            match start_command(&flags).await {
                Ok(address) => {
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(address.as_bytes());
                    let _ = stdout.flush();
                    std::process::exit(0);
                }
                Err(e) => {
                    eprintln!("{RUNTIME_ID}: start: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    containerd_shim::asynchronous::run::<HullShim>(RUNTIME_ID, None).await;
}
