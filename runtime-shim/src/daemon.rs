//! The shim daemon: serves the Task API on the socket `start` chose.
//!
//! Own loop instead of the containerd-shim crate's `run`, because that crate registers the
//! service only as `containerd.task.v3.Task` (containerd 2.x), while containerd 1.6/1.7 call
//! `containerd.task.v2.Task`; the two APIs carry the same messages, so we serve both names.

use std::path::Path;
use std::sync::Arc;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::Flags;
use containerd_shim_protos::shim_async::create_task;
use ttrpc::asynchronous::Server;

use crate::config::Config;
use crate::publisher::EventPublisher;
use crate::task::HullTask;

/// Task service name containerd 2.x calls.
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
/// Task service name containerd 1.6/1.7 call.
pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
/// Longest wait at exit for the queued events to reach containerd.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A daemon that could not serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No -socket flag.
    #[error("the daemon needs -socket")]
    NoSocket,
    /// Socket set-up failed.
    #[error("listening on {path}: {source}")]
    Listen {
        /// Socket path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// containerd did not say where its event socket is.
    #[error("containerd's ttrpc socket: {0}")]
    Publisher(String),
    /// The ttrpc server failed.
    #[error("ttrpc server: {0}")]
    Server(#[from] ttrpc::Error),
}

/// Serves until Shutdown with no task left (or SIGTERM/SIGINT).
pub async fn serve(flags: &Flags) -> Result<(), DaemonError> {
    let socket = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    if socket.is_empty() {
        return Err(DaemonError::NoSocket);
    }
    let config = Config::load(None);
    let debug = flags.debug || config.as_ref().is_ok_and(|c| c.debug);
    if let Err(e) = containerd_shim::logger::init(
        debug,
        if debug { "debug" } else { "info" },
        &flags.namespace,
        &flags.id,
    ) {
        eprintln!("hull shim: logging into the bundle's log FIFO: {e}");
    }
    let Some(listener) = listen(socket)? else {
        // Another daemon already serves this sandbox.
        signal_server_started();
        return Ok(());
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    if ttrpc_address.is_empty() {
        return Err(DaemonError::Publisher("TTRPC_ADDRESS is not set".into()));
    }
    // Connects lazily and reconnects (containerd may restart while we run).
    let publisher = EventPublisher::connect(&ttrpc_address);
    let exit = Arc::new(ExitSignal::default());
    let task = match config {
        Ok(config) => HullTask::new(config, &flags.namespace, publisher.clone(), exit.clone()),
        Err(e) => {
            tracing::error!(%e, "hull configuration");
            HullTask::new(
                Config::default(),
                &flags.namespace,
                publisher.clone(),
                exit.clone(),
            )
            .with_config_error(e.to_string())
        }
    };
    let task: Arc<dyn containerd_shim_protos::shim_async::Task + Send + Sync> = Arc::new(task);
    let mut services = create_task(task.clone());
    for (name, service) in create_task(task) {
        if name == TASK_SERVICE_V3 {
            services.insert(TASK_SERVICE_V2.to_string(), service);
        }
    }
    let listener =
        ttrpc::asynchronous::transport::Listener::try_from(listener).map_err(|source| {
            DaemonError::Listen {
                path: socket.to_string(),
                source,
            }
        })?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server.start().await?;
    signal_server_started();
    tracing::info!(socket, "hull shim serving");
    crate::bench::stages::mark(crate::bench::stages::Stage::ShimStart, &flags.id);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DaemonError::Listen {
            path: "SIGTERM".into(),
            source,
        })?;
    tokio::select! {
        _ = exit.wait() => {}
        _ = term.recv() => tracing::info!("SIGTERM"),
    }
    // The last events (TaskExit, TaskDelete) must reach containerd before we exit.
    if let Err(e) = publisher.flush(FLUSH_TIMEOUT).await {
        tracing::warn!(%e, "exiting with events undelivered");
    }
    // Let the Shutdown reply go out; containerd keeps its connection open until we exit, so
    // do not wait for it to close.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), server.shutdown()).await;
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// Binds the shim socket. `Ok(None)` if a live daemon already listens there; a stale socket
/// file is replaced.
fn listen(path: &str) -> Result<Option<std::os::unix::net::UnixListener>, DaemonError> {
    let err = |source| DaemonError::Listen {
        path: path.to_string(),
        source,
    };
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(err)?;
            std::os::unix::net::UnixListener::bind(path)
                .map(Some)
                .map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Tells `start` (which copies our stdout until EOF) that the server is up: stdout becomes
/// stderr (/dev/null), closing the pipe.
fn signal_server_started() {
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}
