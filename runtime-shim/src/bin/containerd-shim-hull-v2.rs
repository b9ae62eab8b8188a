//! containerd-shim-hull-v2: containerd's shim v2 for Hull (one microVM per pod).
//!
//! containerd runs it as `containerd-shim-hull-v2 -namespace NS -address SOCK -id ID start`
//! (prints the ttrpc address of the shim serving the pod), `... delete` (clean-up after a
//! crashed shim), and the daemon itself.

use std::io::Write as _;

use hull_runtime::shim::{start_command, HullShim, RUNTIME_ID};

fn main() {
    if let Err(e) = hull_runtime::threads::no_huge_pages() {
        eprintln!("{RUNTIME_ID}: turning transparent huge pages off for the shim: {e}");
    }
    let runtime = hull_runtime::threads::shim_runtime();
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
