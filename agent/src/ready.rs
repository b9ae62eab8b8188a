//! The ready signal: once the API is served the agent opens one connection to the host's
//! [`hull_proto::AGENT_READY_PORT`] and closes it again, so the host calls Version when the agent
//! answers instead of polling the API port while the guest boots. Best effort: when nobody
//! listens (a pool VM whose daemon is gone, a host that polls) the host only keeps polling.

use std::path::PathBuf;
use std::time::Duration;

use tracing::debug;

use crate::cli::ListenAddress;

/// Longest the agent tries to reach the host's ready listener.
pub const READY_SIGNAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the ready signal of an agent listening on some address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyTarget {
    /// The host (CID 2) at [`hull_proto::AGENT_READY_PORT`], through the guest's vsock.
    HostVsock,
    /// A Unix socket beside the agent's hybrid-vsock socket (host mode): where hull-vmm would
    /// forward the same guest connection.
    Unix(PathBuf),
}

/// The ready signal's target for an agent serving `listen`; `None` on a plain Unix socket,
/// whose clients connect when they like.
pub fn target(listen: &ListenAddress) -> Option<ReadyTarget> {
    match listen {
        ListenAddress::Vsock { .. } => Some(ReadyTarget::HostVsock),
        ListenAddress::Hybrid(path) => Some(ReadyTarget::Unix(
            hull_proto::handshake::guest_connection_path(path, hull_proto::AGENT_READY_PORT),
        )),
        ListenAddress::Unix(_) => None,
    }
}

/// Sends the ready signal for an agent serving `listen` (at most [`READY_SIGNAL_TIMEOUT`]).
/// Returns whether a host listener took it.
pub async fn announce(listen: &ListenAddress) -> bool {
    let Some(target) = target(listen) else {
        return false;
    };
    match tokio::time::timeout(READY_SIGNAL_TIMEOUT, connect(&target)).await {
        Ok(Ok(())) => {
            debug!(?target, "ready signal sent");
            true
        }
        Ok(Err(err)) => {
            debug!(?target, %err, "nobody took the ready signal; the host polls instead");
            false
        }
        Err(_) => {
            debug!(
                ?target,
                "the ready signal timed out; the host polls instead"
            );
            false
        }
    }
}

/// Opens the connection and drops it: the connection is the whole message.
async fn connect(target: &ReadyTarget) -> std::io::Result<()> {
    match target {
        ReadyTarget::HostVsock => {
            let address =
                tokio_vsock::VsockAddr::new(libc::VMADDR_CID_HOST, hull_proto::AGENT_READY_PORT);
            tokio_vsock::VsockStream::connect(address).await.map(drop)
        }
        ReadyTarget::Unix(path) => tokio::net::UnixStream::connect(path).await.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_listen_address() {
        assert_eq!(
            target(&ListenAddress::Vsock {
                cid: crate::cli::VSOCK_CID_ANY,
                port: hull_proto::AGENT_API_PORT
            }),
            Some(ReadyTarget::HostVsock)
        );
        assert_eq!(
            target(&ListenAddress::Hybrid("/run/s/vsock.sock".into())),
            Some(ReadyTarget::Unix("/run/s/vsock.sock_1028".into()))
        );
        assert_eq!(target(&ListenAddress::Unix("/run/a.sock".into())), None);
    }

    #[tokio::test]
    async fn a_hybrid_agent_connects_to_the_ready_socket_beside_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let listen = dir.path().join("vsock.sock");
        let ready = tokio::net::UnixListener::bind(hull_proto::handshake::guest_connection_path(
            &listen,
            hull_proto::AGENT_READY_PORT,
        ))
        .unwrap();
        let hybrid = ListenAddress::Hybrid(listen);
        let (sent, accepted) = tokio::join!(announce(&hybrid), ready.accept());
        assert!(sent);
        accepted.unwrap();
    }

    #[tokio::test]
    async fn nobody_listening_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let hybrid = ListenAddress::Hybrid(dir.path().join("vsock.sock"));
        assert!(!announce(&hybrid).await);
        assert!(!announce(&ListenAddress::Unix(dir.path().join("a.sock"))).await);
    }
}
