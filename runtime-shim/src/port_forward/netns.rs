//! Creating the mirror listeners inside the pod's network namespace: a fresh thread enters the
//! namespace (setns), binds, and exits; the sockets stay in that namespace for life, whichever
//! thread later uses them. Nothing is ever bound in the shim's own namespace: if the
//! namespace cannot be entered, nothing is bound at all.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

/// The loopback addresses a guest port is mirrored on (containerd dials `localhost`).
pub const MIRROR_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Entering the pod's network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("opening the pod network namespace {path}: {source}")]
    Open {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// setns failed.
    #[error("entering the pod network namespace {path}: {source}")]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The binding thread could not start or panicked.
    #[error("the thread binding in {0} failed")]
    Thread(PathBuf),
}

/// What binding one port gave: a listener per address that worked, an error per one that did
/// not.
#[derive(Debug, Default)]
pub struct BoundPort {
    /// Non-blocking listeners (hand them to tokio).
    pub listeners: Vec<TcpListener>,
    /// The addresses that failed, with why.
    pub errors: Vec<(SocketAddr, io::Error)>,
}

/// Binds every port of `ports` on [`MIRROR_ADDRESSES`] inside the network namespace `netns`
/// (blocking: run it off the async threads).
pub fn bind_in_netns(netns: &Path, ports: &[u16]) -> Result<Vec<(u16, BoundPort)>, NetnsError> {
    let file = File::open(netns).map_err(|source| NetnsError::Open {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("hull-pf-bind".into())
            .spawn_scoped(scope, || {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| NetnsError::Enter {
                        path: netns.to_path_buf(),
                        source: e.into(),
                    },
                )?;
                Ok(ports.iter().map(|&port| (port, bind_port(port))).collect())
            })
            .map_err(|_| NetnsError::Thread(netns.to_path_buf()))?;
        thread
            .join()
            .map_err(|_| NetnsError::Thread(netns.to_path_buf()))?
    })
}

fn bind_port(port: u16) -> BoundPort {
    let mut bound = BoundPort::default();
    for ip in MIRROR_ADDRESSES {
        let address = SocketAddr::new(ip, port);
        match TcpListener::bind(address).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => bound.listeners.push(listener),
            Err(err) => bound.errors.push((address, err)),
        }
    }
    bound
}
