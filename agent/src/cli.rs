//! Command line of the host mode: `hull-agent --listen ADDR`.

use std::path::PathBuf;
use std::str::FromStr;

/// `VMADDR_CID_ANY`: listen on every CID of the guest.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// Where the API server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `unix:///path/agent.sock`: a Unix socket (host mode, tests).
    Unix(PathBuf),
    /// `hybrid:///path/agent.sock`: a Unix socket speaking hull-vmm's hybrid-vsock handshake
    /// (`CONNECT <port>\n` / `OK <port>\n`): port 1024 is the API, stdio ports the streams.
    Hybrid(PathBuf),
    /// `vsock://CID:PORT`, CID a number or `ANY`.
    Vsock {
        /// Local CID to bind, [`VSOCK_CID_ANY`] for any.
        cid: u32,
        /// vsock port.
        port: u32,
    },
}

/// A malformed command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// The listen address is not `unix://PATH` or `vsock://CID:PORT`.
    #[error(
        "bad listen address {address:?}: {reason} (expected unix:///path or vsock://ANY:1024)"
    )]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option this program does not know.
    #[error("unknown argument {0:?} (try --help)")]
    UnknownArgument(String),
    /// `--listen` without a value.
    #[error("--listen and --shared-dir need a value")]
    MissingValue,
    /// Host mode was started without `--listen`.
    #[error("not running as PID 1, so --listen ADDR is required (try --help)")]
    MissingListen,
}

impl FromStr for ListenAddress {
    type Err = CliError;

    fn from_str(address: &str) -> Result<Self, Self::Err> {
        let bad = |reason| CliError::BadAddress {
            address: address.to_string(),
            reason,
        };
        if let Some(path) = address.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            if path.contains('\0') {
                return Err(bad("NUL byte in socket path"));
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        if let Some(path) = address.strip_prefix("hybrid://") {
            if path.is_empty() || path.contains('\0') {
                return Err(bad("empty socket path or NUL byte"));
            }
            return Ok(ListenAddress::Hybrid(PathBuf::from(path)));
        }
        if let Some(rest) = address.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or_else(|| bad("missing ':PORT'"))?;
            let cid = if cid.eq_ignore_ascii_case("any") {
                VSOCK_CID_ANY
            } else {
                cid.parse().map_err(|_| bad("CID is not ANY or a number"))?
            };
            let port = port.parse().map_err(|_| bad("port is not a number"))?;
            return Ok(ListenAddress::Vsock { cid, port });
        }
        Err(bad("unknown scheme"))
    }
}

impl ListenAddress {
    /// The address in the form `ttrpc`'s `Server::bind` takes.
    pub fn ttrpc_address(&self) -> String {
        match self {
            ListenAddress::Unix(path) | ListenAddress::Hybrid(path) => {
                format!("unix://{}", path.display())
            }
            ListenAddress::Vsock { cid, port } => format!("vsock://{cid}:{port}"),
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            ListenAddress::Hybrid(path) => write!(f, "hybrid://{}", path.display()),
            ListenAddress::Vsock { cid, port } if *cid == VSOCK_CID_ANY => {
                write!(f, "vsock://ANY:{port}")
            }
            ListenAddress::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve the API on this address (containers under the shared dir) until PowerOff or
    /// SIGTERM/SIGINT.
    Serve(ListenAddress, Option<PathBuf>),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: hull-agent --listen ADDR
  As PID 1 of a Hull guest it takes no arguments: it sets the guest up and serves the agent
  API on vsock port 1024. Elsewhere (tests) it serves the API on ADDR until PowerOff:
    --listen unix:///path/agent.sock | hybrid:///path/agent.sock | vsock://ANY:1024
    --shared-dir DIR   container rootfs paths are relative to DIR
    --version, --help";

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let mut listen = None;
    let mut shared_dir = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--listen" => {
                let value = args.next().ok_or(CliError::MissingValue)?;
                listen = Some(value.parse()?);
            }
            "--shared-dir" => {
                shared_dir = Some(PathBuf::from(args.next().ok_or(CliError::MissingValue)?));
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = Some(value.parse()?),
                None => return Err(CliError::UnknownArgument(other.to_string())),
            },
        }
    }
    listen
        .map(|l| Command::Serve(l, shared_dir))
        .ok_or(CliError::MissingListen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn unix_listen_address() {
        assert_eq!(
            parse(&["--listen", "unix:///tmp/a.sock"]),
            Ok(Command::Serve(
                ListenAddress::Unix("/tmp/a.sock".into()),
                None
            ))
        );
        assert_eq!(
            parse(&["--listen=unix:///tmp/a.sock"]),
            Ok(Command::Serve(
                ListenAddress::Unix("/tmp/a.sock".into()),
                None
            ))
        );
    }

    #[test]
    fn vsock_listen_address_any_and_numeric() {
        let any: ListenAddress = "vsock://ANY:1024".parse().unwrap();
        assert_eq!(
            any,
            ListenAddress::Vsock {
                cid: VSOCK_CID_ANY,
                port: 1024
            }
        );
        assert_eq!(any.ttrpc_address(), "vsock://4294967295:1024");
        assert_eq!(any.to_string(), "vsock://ANY:1024");
        let three: ListenAddress = "vsock://3:5000".parse().unwrap();
        assert_eq!(three, ListenAddress::Vsock { cid: 3, port: 5000 });
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "unix://",
            "tcp://1.2.3.4:5",
            "vsock://ANY",
            "vsock://x:1",
            "vsock://1:99999999999",
            "/tmp/a.sock",
        ] {
            assert!(
                matches!(
                    bad.parse::<ListenAddress>(),
                    Err(CliError::BadAddress { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_or_unknown_arguments() {
        assert_eq!(parse(&[]), Err(CliError::MissingListen));
        assert_eq!(parse(&["--listen"]), Err(CliError::MissingValue));
        assert_eq!(
            parse(&["--frobnicate"]),
            Err(CliError::UnknownArgument("--frobnicate".into()))
        );
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
    }
}
