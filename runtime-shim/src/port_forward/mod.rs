//! CRI port-forward into a Hull pod. containerd serves PortForward by entering the pod's
//! network namespace on the host and dialling `localhost:<port>`; the pod's processes listen
//! in the guest. A [`PortForwarder`] closes that gap for one sandbox: every
//! [`POLL_INTERVAL`] it asks the agent for the guest's listening TCP ports (ListTcpListeners)
//! and keeps a listener on 127.0.0.1:<port> and [::1]:<port> **inside the pod's network
//! namespace** for each (created by a thread that entered the namespace, see [`netns`]; the
//! host's own namespace never gets one). Each accepted connection goes to the agent's
//! [`hull_proto::PORT_FORWARD_PORT`] through the sandbox's hybrid-vsock socket, starts with
//! `TCP <port>\n`, and then the bytes are copied both ways (fixed-size buffers, EOF passed on
//! as a write shutdown) until both directions are closed. Listeners of ports that went away
//! in the guest are closed; [`PortForwarder::stop`] closes everything.

pub mod netns;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use ttrpc::Code;

use crate::agent_client::AgentClient;

/// How often the guest's listeners are polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Most forwarded connections of one sandbox at once; more are closed at once (the agent's
/// own bound is the same).
pub const MAX_CONNECTIONS: usize = 256;
/// Buffer size of each copy direction.
pub const COPY_BUFFER: usize = 64 * 1024;
/// Deadline of the hybrid-vsock handshake of one forwarded connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Mirrors one sandbox's guest TCP listeners into its pod network namespace.
pub struct PortForwarder {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Where a forwarder binds and where it sends connections.
struct Target {
    netns: PathBuf,
    vsock_socket: PathBuf,
}

impl PortForwarder {
    /// Starts forwarding for the pod whose host network namespace is `netns` (e.g.
    /// `/var/run/netns/cni-...`) and whose agent is reached through the hybrid-vsock socket
    /// `vsock_socket`; `agent` is that agent's API client. Needs a tokio runtime. Problems
    /// (an agent without ListTcpListeners, a port taken in the pod namespace) are logged, never
    /// fatal to the sandbox.
    pub fn start(netns: PathBuf, vsock_socket: PathBuf, agent: AgentClient) -> PortForwarder {
        let (stop, stopped) = watch::channel(false);
        let target = Arc::new(Target {
            netns,
            vsock_socket,
        });
        let task = tokio::spawn(run(target, agent, stopped));
        PortForwarder {
            stop,
            task: Some(task),
        }
    }

    /// Stops polling, closes every listener (they are closed when this returns) and ends the
    /// forwarded connections.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(%err, "port forwarder task");
            }
        }
    }
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The accept tasks of one mirrored port (aborted when dropped: a dropped JoinHandle alone
/// would leave the listener open).
struct Mirror {
    accepts: Vec<JoinHandle<()>>,
}

impl Mirror {
    /// Closes its listeners; returns once they are closed.
    async fn close(mut self) {
        let accepts = std::mem::take(&mut self.accepts);
        for accept in &accepts {
            accept.abort();
        }
        for accept in accepts {
            let _ = accept.await;
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        for accept in &self.accepts {
            accept.abort();
        }
    }
}

/// Which ports to start and which to stop mirroring, given those mirrored (or tried) now and
/// those the guest reports.
pub fn plan(current: &BTreeSet<u16>, wanted: &[u16]) -> (Vec<u16>, Vec<u16>) {
    let wanted: BTreeSet<u16> = wanted.iter().copied().collect();
    let add = wanted.difference(current).copied().collect();
    let remove = current.difference(&wanted).copied().collect();
    (add, remove)
}

async fn run(target: Arc<Target>, agent: AgentClient, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut mirrors: BTreeMap<u16, Mirror> = BTreeMap::new();
    // Ports the guest has but we could not bind: retried every poll, logged once.
    let mut unbound: BTreeSet<u16> = BTreeSet::new();
    let mut poll_failing = false;
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            _ = interval.tick() => {}
        }
        let wanted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            reply = agent.list_tcp_listeners() => reply,
        };
        let wanted = match wanted {
            Ok(ports) => {
                poll_failing = false;
                ports
            }
            Err(err) if err.code() == Some(Code::UNIMPLEMENTED) => {
                tracing::info!(%err, "the agent cannot list its TCP listeners: no port-forward");
                break;
            }
            Err(err) => {
                if !poll_failing {
                    tracing::warn!(%err, "polling the guest's TCP listeners (retrying)");
                }
                poll_failing = true;
                continue;
            }
        };
        unbound.retain(|port| wanted.contains(port));
        let current: BTreeSet<u16> = mirrors.keys().copied().collect();
        let (add, remove) = plan(&current, &wanted);
        for port in remove {
            if let Some(mirror) = mirrors.remove(&port) {
                tracing::debug!(port, "guest port closed: removing its mirror");
                mirror.close().await;
            }
        }
        if add.is_empty() {
            continue;
        }
        for (port, mirror) in bind_mirrors(&target, &add, &mut unbound, &slots, &stopped).await {
            mirrors.insert(port, mirror);
        }
    }
    for (_, mirror) in std::mem::take(&mut mirrors) {
        mirror.close().await;
    }
    tracing::debug!(netns = %target.netns.display(), "port forwarder stopped");
}

/// Binds `ports` in the pod namespace and starts their accept loops.
async fn bind_mirrors(
    target: &Arc<Target>,
    ports: &[u16],
    unbound: &mut BTreeSet<u16>,
    slots: &Arc<Semaphore>,
    stopped: &watch::Receiver<bool>,
) -> Vec<(u16, Mirror)> {
    let netns = target.netns.clone();
    let wanted = ports.to_vec();
    let bound = tokio::task::spawn_blocking(move || netns::bind_in_netns(&netns, &wanted)).await;
    let bound = match bound {
        Ok(Ok(bound)) => bound,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot mirror guest ports");
            return Vec::new();
        }
        Err(err) => {
            tracing::warn!(%err, "cannot mirror guest ports");
            return Vec::new();
        }
    };
    let mut mirrors = Vec::new();
    for (port, result) in bound {
        let first_failure = unbound.insert(port);
        for (address, err) in &result.errors {
            // No IPv6 in the pod namespace is common; a taken port is worth a warning.
            if first_failure && err.kind() != std::io::ErrorKind::AddrNotAvailable {
                tracing::warn!(%address, %err, "cannot mirror a guest port in the pod netns");
            } else {
                tracing::debug!(%address, %err, "cannot mirror a guest port in the pod netns");
            }
        }
        let mut accepts = Vec::new();
        for listener in result.listeners {
            match TcpListener::from_std(listener) {
                Ok(listener) => accepts.push(tokio::spawn(accept_loop(
                    listener,
                    port,
                    Arc::clone(target),
                    Arc::clone(slots),
                    stopped.clone(),
                ))),
                Err(err) => tracing::warn!(port, %err, "registering a mirror listener"),
            }
        }
        if !accepts.is_empty() {
            unbound.remove(&port);
            tracing::debug!(port, listeners = accepts.len(), "mirroring a guest port");
            mirrors.push((port, Mirror { accepts }));
        }
    }
    mirrors
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    target: Arc<Target>,
    slots: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(err) => {
                tracing::debug!(port, %err, "accepting a port-forward connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(port, "too many port-forward connections; closed");
            continue;
        };
        let target = Arc::clone(&target);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => {}
                () = forward(client, port, &target) => {}
            }
            drop(slot);
        });
    }
}

/// One connection: hybrid vsock to the agent's port-forward port, `TCP <port>`, splice.
async fn forward(mut client: TcpStream, port: u16, target: &Target) {
    let _ = client.set_nodelay(true);
    let guest = hull_proto::client::open_hybrid_vsock_stream(
        &target.vsock_socket,
        hull_proto::PORT_FORWARD_PORT,
        HANDSHAKE_TIMEOUT,
    )
    .await;
    let mut guest = match guest {
        Ok(guest) => guest,
        Err(err) => {
            tracing::warn!(port, %err, "port forward: reaching the agent");
            return;
        }
    };
    let line = hull_proto::handshake::tcp_line(port);
    if let Err(err) = guest.write_all(line.as_bytes()).await {
        tracing::debug!(port, %err, "port forward: sending the TCP line");
        return;
    }
    let copied =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut guest, COPY_BUFFER, COPY_BUFFER)
            .await;
    match copied {
        Ok((to_guest, to_client)) => {
            tracing::debug!(port, to_guest, to_client, "port forward finished")
        }
        Err(err) => tracing::debug!(port, %err, "port forward ended with an error"),
    }
}
