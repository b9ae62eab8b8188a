//! `hull`: small tools around the Hull runtime.
//!
//! - `hull check [--prefix DIR]`: will a pod run here (KVM kind, guest image and its agent API,
//!   hull-vmm, virtiofsd, devices, cgroup v2, containerd and its `hull` runtime, memory)?
//! - `hull install [--prefix DIR] [--from DIR] [--bin-dir DIR] [--config-from FILE]` /
//!   `hull uninstall [--prefix DIR]`: see `hull_runtime::install`
//! - `hull agent health --uds PATH`: Health + Version of an agent through a hybrid-vsock socket
//!   (hull-vmm's `--vsock-uds`, or a host agent's hybrid listener)
//! - `hull agent create-sandbox --uds PATH --id ID [--shared-fs-tag TAG]`: CreateSandbox alone, e.g.
//!   to mount a VM's virtio-fs share before driving containers through the agent API directly
//! - `hull agent logs --uds PATH`: the agent's own log from its log port, from the moment it
//!   connects (lines nobody has read yet, boot lines included, come first); the shim reads it too
//! - `hull bench --image IMG [...]`: hull against runc through a real containerd (see
//!   `hull_runtime::bench`)
//! - `hull console SANDBOX [--config FILE]`: a shell in the sandbox's guest (only when the
//!   sandbox was started with `debug_console = true`; see `hull_runtime::console`)
//! - `hull agent console --uds PATH`: the same through a hybrid-vsock socket directly
//! - `hull version`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hull_proto::agent::{CreateSandboxRequest, HealthRequest, SharedFs, VersionRequest};
use hull_proto::agent_ttrpc::AgentServiceClient;

#[derive(Parser)]
#[command(name = "hull", version, about = "Hull runtime tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Will a pod run here? KVM, guest image, agent API, hull-vmm, virtiofsd, devices, cgroup
    /// v2, containerd and its `hull` runtime, memory (exit 1 if something stops a pod).
    Check {
        /// Configuration file (default: <prefix>/etc/hull/config.toml if present, else
        /// $HULL_CONFIG, then /etc/hull/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The installation root to check (as given to `hull install`).
        #[arg(long, default_value = "/")]
        prefix: PathBuf,
    },
    /// Installs the shim, hull-vmm, hull, the guest image, /etc/hull/config.toml and the
    /// containerd drop-in (root; restarts nothing).
    Install {
        /// Installation root.
        #[arg(long, default_value = "/")]
        prefix: PathBuf,
        /// Directory with the guest image (vmlinux, initramfs.cpio).
        #[arg(long = "from", default_value = "build/guest")]
        from: PathBuf,
        /// Directory with containerd-shim-hull-v2, hull-vmm and hull (default: this hull's).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Install this config file instead of the commented defaults.
        #[arg(long)]
        config_from: Option<PathBuf>,
    },
    /// Removes what `hull install` created (files changed since are kept and listed).
    Uninstall {
        /// Installation root.
        #[arg(long, default_value = "/")]
        prefix: PathBuf,
    },
    /// Lists the sandboxes on this host: VM size, containers, host memory (PSS of the shim's
    /// sandbox processes and their children), uptime.
    Ps {
        /// Configuration file (its sandbox.run_dir is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints the agent log the shim keeps for a sandbox (`<run_dir>/<id>/agent.log`).
    Logs {
        /// The sandbox id (see `hull ps`).
        sandbox: String,
        /// Configuration file (its sandbox.run_dir is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A shell in a sandbox's guest (the debug console: only when the sandbox was started
    /// with `debug_console = true` and a debug guest image). Ctrl-] quits on a terminal.
    Console {
        /// The sandbox id (see `hull ps`).
        sandbox: String,
        /// Configuration file (its sandbox.run_dir is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A pool of pre-booted sandbox VMs (off unless this runs): new pods and containers of the
    /// default VM size take a ready VM instead of booting one.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Talks to an agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Benchmarks hull against runc through a real containerd: container and CRI pod start,
    /// stages, exec, work, memory per idle pod, noisy neighbours, pod network; tables,
    /// bench.json and SVG plots.
    Bench(Box<hull_runtime::bench::BenchArgs>),
    /// Prints the version.
    Version,
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Keeps --size VMs of the config's default size (vcpus, mem_mib) booted to a ready agent
    /// under <run_dir>/.pool and boots a new one for each a shim takes; runs until SIGTERM or
    /// SIGINT, then stops the VMs no shim took. One per run directory.
    Run {
        /// VMs kept ready.
        #[arg(long, default_value_t = 1)]
        size: usize,
        /// Milliseconds after a VM was taken before its replacement boots (0: at once). On a
        /// host without an idle core a boot beside a pod start slows that start.
        #[arg(long, default_value_t = 0)]
        refill_delay_ms: u64,
        /// Configuration file (the shim's: the same run_dir, kernel, sizes and jail).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints how many pool VMs are ready and booting.
    Status {
        /// Configuration file (its sandbox.run_dir is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
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
    /// Prints the agent's log from its log port until the guest ends (or for --for seconds):
    /// what is logged from now on, after any lines nobody has read yet (the shim's copy in the
    /// sandbox's agent.log goes on).
    Logs {
        /// The hybrid-vsock Unix socket.
        #[arg(long)]
        uds: PathBuf,
        /// Seconds to keep retrying the connection while the guest boots.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// Stop after this many seconds.
        #[arg(long = "for")]
        for_secs: Option<u64>,
    },
    /// The debug console through a hybrid-vsock socket (the agent must have been asked for it
    /// by CreateSandbox, e.g. `hull agent create-sandbox --debug-console`).
    Console {
        /// The hybrid-vsock Unix socket.
        #[arg(long)]
        uds: PathBuf,
    },
    /// CreateSandbox through a hybrid-vsock socket (mounts the virtio-fs share in the guest).
    CreateSandbox {
        /// The hybrid-vsock Unix socket.
        #[arg(long)]
        uds: PathBuf,
        /// The sandbox id.
        #[arg(long)]
        id: String,
        /// The guest's hostname (default: the id).
        #[arg(long)]
        hostname: Option<String>,
        /// The virtio-fs tag to mount (hull-vmm's `--fs tag=...`); none: no shared directory.
        #[arg(long)]
        shared_fs_tag: Option<String>,
        /// Open the guest's debug console (`hull agent console`).
        #[arg(long)]
        debug_console: bool,
        /// Where the guest mounts the share.
        #[arg(long, default_value = hull_runtime::sandbox::GUEST_SHARED_DIR)]
        shared_fs_mount_point: String,
        /// The agent's API port.
        #[arg(long, default_value_t = hull_proto::AGENT_API_PORT)]
        port: u32,
        /// Seconds to keep retrying the connection while the guest boots.
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
        Command::Check { config, prefix } => check(config, &prefix),
        Command::Install {
            prefix,
            from,
            bin_dir,
            config_from,
        } => install(prefix, from, bin_dir, config_from),
        Command::Uninstall { prefix } => uninstall(&prefix),
        Command::Ps { config } => ps(config),
        Command::Bench(args) => hull_runtime::bench::run(*args)
            .map(|_| true)
            .map_err(Into::into),
        Command::Logs { sandbox, config } => logs(&sandbox, config),
        Command::Pool {
            command:
                PoolCommand::Run {
                    size,
                    refill_delay_ms,
                    config,
                },
        } => pool_run(
            hull_runtime::pool::daemon::PoolOptions {
                size,
                refill_delay: Duration::from_millis(refill_delay_ms),
            },
            config,
        ),
        Command::Pool {
            command: PoolCommand::Status { config },
        } => pool_status(config),
        Command::Console { sandbox, config } => console(&sandbox, config),
        Command::Agent {
            command: AgentCommand::Console { uds },
        } => agent_console(&uds),
        Command::Agent {
            command: AgentCommand::Health { uds, port, timeout },
        } => agent_health(uds, port, Duration::from_secs(timeout)),
        Command::Agent {
            command:
                AgentCommand::Logs {
                    uds,
                    timeout,
                    for_secs,
                },
        } => agent_logs(
            uds,
            Duration::from_secs(timeout),
            for_secs.map(Duration::from_secs),
        ),
        Command::Agent {
            command:
                AgentCommand::CreateSandbox {
                    uds,
                    id,
                    hostname,
                    shared_fs_tag,
                    debug_console,
                    shared_fs_mount_point,
                    port,
                    timeout,
                },
        } => {
            let request = CreateSandboxRequest {
                hostname: hostname.unwrap_or_else(|| id.clone()),
                sandbox_id: id,
                shared_fs: shared_fs_tag
                    .map(|tag| SharedFs {
                        tag,
                        mount_point: shared_fs_mount_point,
                        ..Default::default()
                    })
                    .into(),
                debug_console,
                ..Default::default()
            };
            agent_create_sandbox(uds, port, Duration::from_secs(timeout), request)
        }
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

fn check(config: Option<PathBuf>, prefix: &std::path::Path) -> anyhow::Result<bool> {
    let config = hull_runtime::check::load_config(config.as_deref(), prefix)?;
    let findings = hull_runtime::check::run_checks(&config, prefix);
    print!("{}", hull_runtime::check::render(&findings));
    println!("sandbox mode: {:?}", config.sandbox.mode);
    Ok(findings.iter().all(|f| f.ok()))
}

fn install(
    prefix: PathBuf,
    guest_dir: PathBuf,
    bin_dir: Option<PathBuf>,
    config_from: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the directory of this hull")?
            .to_path_buf(),
    };
    let opts = hull_runtime::install::InstallOptions {
        prefix,
        guest_dir,
        bin_dir,
        config_from,
    };
    let report = hull_runtime::install::install(&opts)?;
    print!("{}", report.render());
    Ok(true)
}

fn uninstall(prefix: &std::path::Path) -> anyhow::Result<bool> {
    let report = hull_runtime::install::uninstall(prefix)?;
    print!("{}", report.render());
    Ok(true)
}

fn ps(config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    let sandboxes = hull_runtime::sandbox::inventory::list(&config.sandbox.run_dir);
    println!(
        "{:<24} {:<10} {:>5} {:>8} {:>9} {:>8}  CONTAINERS",
        "SANDBOX", "MODE", "VCPUS", "MEM_MIB", "PSS_MIB", "UPTIME"
    );
    for s in &sandboxes {
        let uptime = s
            .uptime
            .map_or("-".to_string(), |u| format!("{}s", u.as_secs()));
        let state = if s.processes.is_empty() {
            " (dead)"
        } else {
            ""
        };
        println!(
            "{:<24} {:<10} {:>5} {:>8} {:>9.1} {:>8}  {}{state}",
            s.id,
            s.mode,
            s.vcpus,
            s.mem_mib,
            s.pss_kib as f64 / 1024.0,
            uptime,
            s.containers.join(",")
        );
    }
    if sandboxes.is_empty() {
        println!("(no sandboxes under {})", config.sandbox.run_dir.display());
    }
    Ok(true)
}

fn logs(sandbox: &str, config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    let path = hull_runtime::sandbox::inventory::agent_log_path(&config.sandbox.run_dir, sandbox)
        .ok_or_else(|| anyhow::anyhow!("bad sandbox id {sandbox:?}"))?;
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "no agent log for sandbox {sandbox} ({}): {e}; `hull ps` lists the sandboxes",
            path.display()
        )
    })?;
    use std::io::Write as _;
    std::io::stdout().write_all(&text)?;
    Ok(true)
}

fn console(sandbox: &str, config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    block_on(hull_runtime::console::run(&config.sandbox.run_dir, sandbox))??;
    Ok(true)
}

fn agent_console(uds: &std::path::Path) -> anyhow::Result<bool> {
    block_on(hull_runtime::console::run_on_socket(uds))??;
    Ok(true)
}

fn pool_run(
    options: hull_runtime::pool::daemon::PoolOptions,
    config: Option<PathBuf>,
) -> anyhow::Result<bool> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        hull_runtime::pool::daemon::run(&config, options, shutdown).await?;
        anyhow::Ok(true)
    })?
}

fn pool_status(config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = hull_runtime::config::Config::load(config.as_deref())?;
    let dirs = hull_runtime::pool::PoolDirs::new(&config.sandbox.run_dir);
    println!(
        "pool in {}: {} ready, {} booting",
        config.sandbox.run_dir.display(),
        dirs.ready_slots().len(),
        dirs.booting()
    );
    Ok(true)
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work))
}

/// Connects to the agent, retrying for `timeout` while the guest boots.
async fn connect(
    uds: &std::path::Path,
    port: u32,
    timeout: Duration,
) -> anyhow::Result<AgentServiceClient> {
    let started = std::time::Instant::now();
    loop {
        match hull_proto::client::connect_hybrid_vsock(uds, port).await {
            Ok(c) => return Ok(AgentServiceClient::new(c)),
            Err(e) if started.elapsed() >= timeout => {
                return Err(e)
                    .with_context(|| format!("connecting to the agent through {}", uds.display()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn call_context() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

fn agent_create_sandbox(
    uds: PathBuf,
    port: u32,
    timeout: Duration,
    request: CreateSandboxRequest,
) -> anyhow::Result<bool> {
    block_on(async move {
        let client = connect(&uds, port, timeout).await?;
        client
            .create_sandbox(call_context(), &request)
            .await
            .context("CreateSandbox")?;
        println!("sandbox {} created", request.sandbox_id);
        Ok(true)
    })?
}

fn agent_health(uds: PathBuf, port: u32, timeout: Duration) -> anyhow::Result<bool> {
    block_on(async move {
        let client = connect(&uds, port, timeout).await?;
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
    })?
}

fn agent_logs(uds: PathBuf, timeout: Duration, for_time: Option<Duration>) -> anyhow::Result<bool> {
    block_on(async move {
        let started = std::time::Instant::now();
        let mut stream = loop {
            match hull_proto::client::open_hybrid_vsock_stream(
                &uds,
                hull_proto::AGENT_LOG_PORT,
                Duration::from_secs(5),
            )
            .await
            {
                Ok(stream) => break stream,
                Err(e) if started.elapsed() >= timeout => {
                    return Err(anyhow::anyhow!("{e}")).with_context(|| {
                        format!(
                            "connecting to the agent's log port through {}",
                            uds.display()
                        )
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut stdout = tokio::io::stdout();
        let copy = tokio::io::copy(&mut stream, &mut stdout);
        match for_time {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, copy).await;
            }
            None => {
                copy.await.context("copying the agent's log")?;
            }
        }
        use tokio::io::AsyncWriteExt as _;
        stdout.flush().await?;
        Ok(true)
    })?
}
