//! The shim v2 process contract: `start` (daemonize, print the address, one shim per sandbox),
//! `delete` (clean up after a crashed shim), and the daemon serving [`HullTask`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config as ShimConfig, Error as ShimError, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;

use crate::config::{Config, CONFIG_ENV};
use crate::convert::config_path_from_options;
use crate::cri::sandbox_id_for;
use crate::exit::{self, KILLED_EXIT_STATUS};
use crate::publisher::EventPublisher;
use crate::sandbox::{cleanup_after_crash, valid_id, SandboxPaths};
use crate::task::{HullTask, BUNDLE_SANDBOX_FILE};

/// containerd's name for this runtime.
pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// The shim process.
pub struct HullShim {
    id: String,
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

/// The annotations of the bundle in `bundle` (its config.json), if readable.
fn bundle_annotations(bundle: &Path) -> Option<HashMap<String, String>> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&bytes).ok()?;
    spec.annotations().clone()
}

#[async_trait]
impl Shim for HullShim {
    type T = HullTask;

    async fn new(_runtime_id: &str, args: &Flags, config: &mut ShimConfig) -> Self {
        // Our sandbox processes are waited for by their own tasks; the crate's reaper would
        // steal their exit statuses.
        config.no_reaper = true;
        config.no_sub_reaper = true;
        if Config::load(None).map(|c| c.debug).unwrap_or(false) {
            config.default_log_level = "debug".into();
        }
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        HullShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, ShimError> {
        start_daemon(opts, &self.bundle).await
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, ShimError> {
        cleanup_container(&self.bundle, &self.id).await;
        Ok(DeleteResponse {
            pid: 0,
            exit_status: KILLED_EXIT_STATUS,
            exited_at: Some(exit::now()).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> HullTask {
        // The crate's publisher does not reconnect after a containerd restart: ours, on the
        // same address (`$TTRPC_ADDRESS`), replaces it.
        let publisher = EventPublisher::connect(&publisher.address);
        match Config::load(None) {
            Ok(config) => HullTask::new(config, &self.namespace, publisher, self.exit.clone()),
            Err(e) => {
                tracing::error!(%e, "hull configuration");
                HullTask::new(
                    Config::default(),
                    &self.namespace,
                    publisher,
                    self.exit.clone(),
                )
                .with_config_error(e.to_string())
            }
        }
    }
}

/// `start`: picks the sandbox (grouping) from the bundle's CRI annotations, starts the shim
/// daemon for it unless one already serves it, records the address in the bundle and returns
/// it. The runtime options' ConfigPath reaches the daemon as `$HULL_CONFIG`.
pub async fn start_daemon(opts: StartOpts, bundle: &Path) -> Result<String, ShimError> {
    let grouping = sandbox_id_for(&opts.id, bundle_annotations(bundle).as_ref());
    if !valid_id(&grouping) {
        return Err(ShimError::InvalidArgument(format!(
            "bad sandbox id {grouping:?}"
        )));
    }
    let config_path = opts.extensions.iter().find_map(config_path_from_options);
    let vars: Vec<(&str, &str)> = config_path
        .as_deref()
        .map(|p| vec![(CONFIG_ENV, p)])
        .unwrap_or_default();
    let address = spawn(opts, &grouping, vars).await?;
    std::fs::write(bundle.join("address"), &address)
        .map_err(|e| ShimError::Other(format!("writing the address file in the bundle: {e}")))?;
    Ok(address)
}

/// The largest options message read from `start`'s stdin.
const MAX_START_INPUT: u64 = 1 << 20;

/// `start` as containerd 1.6/1.7 expect it: options (an `Any`) on stdin, `TTRPC_ADDRESS` in
/// the environment, and ONLY the plain address (`unix:///...`) on stdout. (The containerd-shim
/// crate's own `start` prints a JSON reply that containerd before 2.0 cannot parse.)
pub async fn start_command(flags: &Flags) -> Result<String, ShimError> {
    use std::io::Read as _;
    let mut input = Vec::new();
    let stdin = std::io::stdin();
    if !std::io::IsTerminal::is_terminal(&stdin) {
        let _ = stdin.lock().take(MAX_START_INPUT).read_to_end(&mut input);
    }
    let extensions = protobuf::Message::parse_from_bytes(&input)
        .ok()
        .filter(|any: &protobuf::well_known_types::any::Any| !any.type_url.is_empty())
        .into_iter()
        .collect();
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        extensions,
        ..Default::default()
    };
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    };
    start_daemon(opts, &bundle).await
}

/// `delete` after a crashed or killed shim: unmounts the container's rootfs; if the container
/// is its sandbox's own (a `ctr run` container, a CRI pod sandbox), stops the sandbox processes
/// and removes the sandbox directory. Does nothing for bundles Hull never set up.
pub async fn cleanup_container(bundle: &Path, container_id: &str) {
    let Ok(dir) = std::fs::read_to_string(bundle.join(BUNDLE_SANDBOX_FILE)) else {
        tracing::info!(container_id, "delete: no sandbox recorded in the bundle");
        return;
    };
    let dir = PathBuf::from(dir.trim());
    let (Some(run_dir), Some(sandbox_id)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let sandbox_id = sandbox_id.to_string_lossy().into_owned();
    if !valid_id(&sandbox_id) || !valid_id(container_id) {
        tracing::warn!(?dir, "delete: bad sandbox record ignored");
        return;
    }
    let paths = SandboxPaths::new(run_dir, &sandbox_id);
    match crate::shared_dir::SharedDir::open(&paths.shared) {
        Ok(shared) => crate::sandbox::cleanup::remove_container_dir(&shared, container_id),
        Err(e) => tracing::info!(%e, "delete: no shared directory"),
    }
    if sandbox_id == container_id {
        cleanup_after_crash(&paths).await;
    }
    tracing::info!(container_id, sandbox_id, "delete: cleaned up");
}
