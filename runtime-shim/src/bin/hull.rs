//! `hull`: small tools around the Hull runtime.
//!
//! - `hull check`: is KVM here (and is it PVM)? the guest image? the VMM? virtiofsd?
//! - `hull agent health --uds PATH`: Health + Version of an agent through a hybrid-vsock socket
//!   (hull-vmm's `--vsock-uds`, or a host agent's hybrid listener)
//! - `hull version`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hull_proto::agent::{HealthRequest, VersionRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;

#[derive(Parser)]
#[command(name = "hull", version, about = "Hull runtime tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks KVM, the guest image, the VMM and virtiofsd (exit 1 if something is missing).
    Check {
        /// Configuration file (default: $HULL_CONFIG, then /etc/hull/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Talks to an agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Prints the version.
    Version,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Health and Version calls through a hybrid-vsock socket.
    Health {
        /// The hybrid-vsock Unix socket.
        #[arg(long)]
        uds: PathBuf,
        /// The agent's API port.
        #[arg(long, default_value_t = hull_proto::AGENT_API_PORT)]
        port: u32,
        /// Seconds to keep retrying while the guest boots.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!(
                "hull {} (agent API {})",
                env!("CARGO_PKG_VERSION"),
                hull_proto::API_VERSION
            );
            Ok(true)
        }
        Command::Check { config } => check(config),
        Command::Agent {
            command: AgentCommand::Health { uds, port, timeout },
        } => agent_health(uds, port, Duration::from_secs(timeout)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hull: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    let findings = hull_runtime::check::run_checks(&config);
    for f in &findings {
        println!(
            "{:<10} {:<4} {}",
            f.what,
            if f.ok { "ok" } else { "FAIL" },
            f.detail
        );
    }
    println!("sandbox mode: {:?}", config.sandbox.mode);
    Ok(findings.iter().all(|f| f.ok))
}

fn agent_health(uds: PathBuf, port: u32, timeout: Duration) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = std::time::Instant::now();
        let client = loop {
            match hull_proto::client::connect_hybrid_vsock(&uds, port).await {
                Ok(c) => break AgentServiceClient::new(c),
                Err(e) if started.elapsed() >= timeout => {
                    return Err(e).context("connecting to the agent")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let ctx = || ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
        let health = client
            .health(ctx(), &HealthRequest::default())
            .await
            .context("Health")?;
        let version = client
            .version(ctx(), &VersionRequest::default())
            .await
            .context("Version")?;
        println!(
            "health: {:?}\nagent_version: {}\napi_version: {}",
            health.status.enum_value_or_default(),
            version.agent_version,
            version.api_version
        );
        Ok(hull_proto::check_api_version(&version).is_ok())
    })
}
