//! Guest network configuration over rtnetlink: UpdateInterface ([`update_interface`]),
//! UpdateRoutes ([`update_routes`]), ListInterfaces ([`list_interfaces`]) and bringing a link
//! up ([`set_link_up`], used for `lo` at CreateSandbox).
//!
//! Every function takes the network namespace it works in ([`Netns`]). The agent configures
//! the namespace it runs in (the guest's root netns); a pod's containers may live in another
//! one, so a namespace file can be given too. The netlink socket is opened inside that
//! namespace on a short-lived thread: a socket belongs to the namespace it was created in,
//! and neither the caller's thread nor the runtime ever changes namespace.
//!
//! Requests are expected to be validated already (see [`crate::validate`]); what the kernel
//! refuses comes back as a [`NetError`] naming the interface or route and the kernel's errno.

mod link;
mod route;

pub use link::{list_interfaces, set_link_up, update_interface};
pub use route::update_routes;

use std::os::fd::{AsFd as _, FromRawFd as _, IntoRawFd as _};
use std::path::PathBuf;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use ttrpc::Code;

/// The network namespace a function works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of the agent process.
    Current,
    /// The namespace behind a file: `/proc/<pid>/ns/net`, a bind mount such as
    /// `/run/netns/<name>`, or a file descriptor path (`/proc/self/fd/<n>`).
    Path(PathBuf),
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netns::Current => f.write_str("the agent's network namespace"),
            Netns::Path(path) => write!(f, "network namespace {}", path.display()),
        }
    }
}

/// Why a network operation failed. `what` names the interface, address or route.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The named link does not exist.
    #[error("{what}: no such interface")]
    NotFound {
        /// The link looked for, e.g. "interface eth1" or "interface with MAC aa:...".
        what: String,
    },
    /// The kernel refused a request with an errno.
    #[error("{what}: {source}")]
    Kernel {
        /// What was asked, e.g. "adding address 10.88.0.5/16 to eth0".
        what: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be carried out as given (e.g. a MAC that several links share).
    #[error("{what}: {reason}")]
    Invalid {
        /// The part of the request.
        what: String,
        /// Why.
        reason: String,
    },
    /// A netlink failure that is not a kernel errno (an unexpected or unparsable message).
    #[error("{what}: netlink: {message}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The netlink library's description.
        message: String,
    },
    /// The netlink socket could not be opened in the namespace.
    #[error("opening a netlink socket in {netns}: {source}")]
    Socket {
        /// The namespace.
        netns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// The RPC status code for this failure: NOT_FOUND for a missing link, INVALID_ARGUMENT
    /// for what the request asked wrongly (the kernel refused the values), INTERNAL otherwise.
    pub fn code(&self) -> Code {
        match self {
            NetError::NotFound { .. } => Code::NOT_FOUND,
            NetError::Invalid { .. } => Code::INVALID_ARGUMENT,
            NetError::Kernel { source, .. } => match source.raw_os_error() {
                Some(libc::ENODEV) => Code::NOT_FOUND,
                Some(
                    libc::EINVAL
                    | libc::ERANGE
                    | libc::EEXIST
                    | libc::ENETUNREACH
                    | libc::EHOSTUNREACH
                    | libc::EADDRNOTAVAIL
                    | libc::EAFNOSUPPORT
                    | libc::EOPNOTSUPP
                    | libc::ESRCH,
                ) => Code::INVALID_ARGUMENT,
                _ => Code::INTERNAL,
            },
            NetError::Netlink { .. } | NetError::Socket { .. } => Code::INTERNAL,
        }
    }
}

/// Maps an rtnetlink error for the operation `what`.
pub(crate) fn netlink_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |err| {
        let what = what.into();
        match err {
            rtnetlink::Error::NetlinkError(message) => NetError::Kernel {
                what,
                source: message.to_io(),
            },
            other => NetError::Netlink {
                what,
                message: other.to_string(),
            },
        }
    }
}

/// The errno of a kernel refusal, if `err` is one.
pub(crate) fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// An rtnetlink connection in one namespace; its background task stops when this is dropped.
pub(crate) struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Opens a connection whose socket lives in `netns`. Must run inside a tokio runtime.
    pub(crate) fn open(netns: &Netns) -> Result<Self, NetError> {
        let socket_error = |source| NetError::Socket {
            netns: netns.to_string(),
            source,
        };
        let socket = match netns {
            Netns::Current => Socket::new(NETLINK_ROUTE).map_err(socket_error)?,
            Netns::Path(path) => socket_in(path).map_err(socket_error)?,
        };
        socket.set_non_blocking(true).map_err(socket_error)?;
        // SAFETY: the descriptor was just released by `into_raw_fd`; TokioSocket owns it now.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates a NETLINK_ROUTE socket inside the namespace at `path`, on a thread of its own
/// that enters the namespace and ends right after (only that thread ever changes namespace).
fn socket_in(path: &std::path::Path) -> std::io::Result<Socket> {
    let file = std::fs::File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                Socket::new(NETLINK_ROUTE)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the netns thread panicked")))
    })
}

#[cfg(test)]
mod tests;
