//! Runs the ttrpc server for the agent API until PowerOff (or SIGTERM/SIGINT), then shuts it
//! down so that every reply already queued, PowerOff's included, is written before returning.

use std::sync::Arc;

use hull_proto::agent_ttrpc::create_agent_service;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::cli::ListenAddress;
use crate::conn_limits::{accept_api_connections, ttrpc_listener, ConnectionLimits};
use crate::console::DebugConsole;
use crate::logging::LogReaders;
use crate::port_forward::PortForwards;
use crate::service::AgentApi;
use crate::stdio::StreamHub;

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A PowerOff RPC was answered.
    PowerOff,
    /// SIGTERM or SIGINT arrived.
    Signal(&'static str),
}

/// The server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// ttrpc's error.
        source: ttrpc::Error,
    },
    /// Starting the accept loop failed.
    #[error("starting the ttrpc server on {address}: {source}")]
    Start {
        /// The address.
        address: String,
        /// ttrpc's error.
        source: ttrpc::Error,
    },
    /// Installing a signal handler failed.
    #[error("installing the {signal} handler: {source}")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Serves the agent API on `listen` until PowerOff, SIGTERM or SIGINT. Must run inside a tokio
/// runtime. A Unix socket file created here is removed again before returning. Containers'
/// rootfs paths are relative to `shared_dir` (None: set by CreateSandbox).
pub async fn serve(
    listen: &ListenAddress,
    shared_dir: Option<std::path::PathBuf>,
) -> Result<StopReason, ServerError> {
    let signal_stream = |kind, name| {
        signal(kind).map_err(|source| ServerError::Signal {
            signal: name,
            source,
        })
    };
    let mut sigterm = signal_stream(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal_stream(SignalKind::interrupt(), "SIGINT")?;

    let exits = crate::exits::ExitRegistry::new();
    let reaper_exits = exits.clone();
    tokio::spawn(async move {
        if let Err(err) = crate::reaper::reap_children_forever(reaper_exits).await {
            warn!(%err, "the zombie reaper stopped");
        }
    });
    if !crate::is_pid1() {
        // Orphans of containers without a pid namespace are reaped by us, not the host init.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1u64, 0u64, 0u64, 0u64) };
    }
    let hub = crate::stdio::StreamHub::new(matches!(listen, ListenAddress::Vsock { .. }));
    let runtime = Arc::new(crate::runtime::Runtime::new(
        shared_dir,
        Arc::clone(&hub),
        exits,
    ));
    let oom = Arc::clone(runtime.oom());
    let (api, mut power_off_requested) = AgentApi::with_runtime(runtime);
    // The debug console opens when CreateSandbox asks for it.
    let in_guest = matches!(listen, ListenAddress::Vsock { .. });
    let console = crate::console::DebugConsole::new(in_guest);
    let api = api.with_debug_console(Arc::clone(&console));
    // Ends at power-off; on a signal it is dropped with the tokio runtime.
    tokio::spawn(oom.run(power_off_requested.clone()));
    let stop_long_polls = api.long_poll_stopper();
    // The agent's own logs for the host, on the log port.
    let (log_readers, log_rx) = crate::logging::LogReaders::new();
    if let Some(buffer) = crate::logging::buffer() {
        tokio::spawn(crate::logging::forward_logs(buffer, log_rx));
    }
    let others = OtherPorts {
        logs: log_readers,
        forwards: crate::port_forward::PortForwards::new(),
        hub,
        console,
    };
    let server = listen_api(listen, ConnectionLimits::from_env(), others)?;
    let mut server = server.register_service(create_agent_service(Arc::new(api)));
    if let ListenAddress::Unix(path) | ListenAddress::Hybrid(path) = listen {
        restrict_to_owner(path);
    }
    server.start().await.map_err(|source| ServerError::Start {
        address: listen.to_string(),
        source,
    })?;
    info!(address = %listen, "serving the agent API");
    let announced = listen.clone();
    tokio::spawn(async move { crate::ready::announce(&announced).await });

    let reason = tokio::select! {
        _ = power_off_requested.wait_for(|requested| *requested) => StopReason::PowerOff,
        _ = sigterm.recv() => StopReason::Signal("SIGTERM"),
        _ = sigint.recv() => StopReason::Signal("SIGINT"),
    };
    info!(?reason, "stopping the agent API server");
    // Stops accepting, then waits until every connection's writer has sent what was queued:
    // the PowerOff reply reaches the host before we go down. A connection with a call still
    // pending (the shim keeps a GetOOMEvent long poll open for the sandbox's life) would hold
    // that wait for ttrpc's own bound (5-10 s), longer than the shim's 2 s grace before
    // SIGKILL: every teardown took 2 s. So the long polls end first, and the wait is bounded
    // for whatever else is pending (a WaitProcess of a container still running).
    if matches!(reason, StopReason::Signal(_)) {
        // Pending GetOOMEvent calls answer UNAVAILABLE now, as at PowerOff.
        stop_long_polls.send_replace(true);
    }
    let grace = shutdown_grace(reason);
    match tokio::time::timeout(grace, server.shutdown()).await {
        Ok(Err(err)) => warn!(%err, "ttrpc server shutdown"),
        Ok(Ok(())) => {}
        Err(_) => info!(
            ?grace,
            "connections with pending calls still open; stopping without them"
        ),
    }
    if let ListenAddress::Unix(path) | ListenAddress::Hybrid(path) = listen {
        if let Err(err) = std::fs::remove_file(path) {
            warn!(path = %path.display(), %err, "removing the API socket");
        }
    }
    Ok(reason)
}

/// What the listeners serve besides the API.
struct OtherPorts {
    logs: Arc<LogReaders>,
    forwards: Arc<PortForwards>,
    hub: Arc<StreamHub>,
    console: Arc<DebugConsole>,
}

/// Binds `listen` and starts accepting on it, every connection within `limits` whatever the
/// mode: ttrpc is fed through a listener of admitted connections (see
/// [`crate::conn_limits`]), never its own accept loop. Guest mode also listens on the log and
/// port-forward vsock ports (the debug console and stdio ports open when asked for).
fn listen_api(
    listen: &ListenAddress,
    limits: ConnectionLimits,
    others: OtherPorts,
) -> Result<ttrpc::asynchronous::Server, ServerError> {
    let bind_error = |err: std::io::Error| ServerError::Bind {
        address: listen.to_string(),
        source: ttrpc::Error::Others(err.to_string()),
    };
    let server = ttrpc::asynchronous::Server::new();
    match listen {
        ListenAddress::Hybrid(path) => {
            let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
            let (api_tx, api_rx) = tokio::sync::mpsc::channel(16);
            let OtherPorts {
                logs,
                forwards,
                hub,
                console,
            } = others;
            tokio::spawn(crate::hybrid::accept_loop(
                listener, limits, api_tx, logs, hub, forwards, console,
            ));
            Ok(server.add_listener(ttrpc_listener(api_rx)))
        }
        ListenAddress::Unix(path) => {
            let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(stream, _)| stream);
                Some((accepted, listener))
            });
            let (api_tx, api_rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(accept_api_connections(Box::pin(incoming), limits, api_tx));
            Ok(server.add_listener(ttrpc_listener(api_rx)))
        }
        ListenAddress::Vsock { cid, port } => {
            let address = tokio_vsock::VsockAddr::new(*cid, *port);
            let listener = tokio_vsock::VsockListener::bind(address).map_err(bind_error)?;
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(stream, _)| stream);
                Some((accepted, listener))
            });
            let (api_tx, api_rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(accept_api_connections(Box::pin(incoming), limits, api_tx));
            tokio::spawn(crate::logging::accept_vsock_log_connections(others.logs));
            tokio::spawn(crate::port_forward::accept_vsock(others.forwards));
            Ok(server.add_listener(ttrpc_listener(api_rx)))
        }
    }
}

/// How long the stop waits for connections to finish: after PowerOff long enough for its
/// reply (and any other answered call) to be written; after a signal — the host is tearing the
/// sandbox down, nobody waits for a reply — briefly. Both stay well under the shim's 2 s grace
/// between SIGTERM and SIGKILL (runtime-shim/src/sandbox/processes.rs).
pub fn shutdown_grace(reason: StopReason) -> std::time::Duration {
    match reason {
        StopReason::PowerOff => std::time::Duration::from_millis(1000),
        StopReason::Signal(_) => std::time::Duration::from_millis(100),
    }
}

/// Makes the API socket usable by its owner only (host mode: the socket is the whole API).
fn restrict_to_owner(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        warn!(path = %path.display(), %err, "restricting the API socket's permissions");
    }
}
