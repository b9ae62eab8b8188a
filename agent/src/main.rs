//! hull-agent binary: PID 1 mode in a guest, `--listen ADDR` host mode elsewhere.

use std::process::ExitCode;

use hull_agent::cli::{self, Command};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(hull_agent::container::config::SETUP_HELPER_ARG) {
        hull_agent::container::helper::run();
    }
    if hull_agent::is_pid1() {
        hull_agent::pid1::run();
    }
    match cli::parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            // The marker literal stays in the binary: `hull check` finds it in a guest image.
            println!(
                "hull-agent {} {}",
                hull_agent::AGENT_VERSION,
                hull_proto::AGENT_API_MARKER
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(listen, shared_dir)) => {
            hull_agent::logging::init(false);
            match hull_agent::run_host(&listen, shared_dir) {
                Ok(reason) => {
                    tracing::info!(?reason, "hull-agent stopped");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    tracing::error!(%err, "hull-agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            eprintln!("hull-agent: {err}\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
