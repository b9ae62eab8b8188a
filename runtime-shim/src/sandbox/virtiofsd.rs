//! Starting virtiofsd, the vhost-user back-end of the virtio-fs device.
//!
//! The VMM does not own virtiofsd: the sandbox owner (the shim; hull-vmm's own virtio-fs tests
//! use the same command) starts it with [`virtiofsd_command`], waits for its socket (the VMM's
//! device also retries the connection while it appears) and stops it when the VM is gone. virtiofsd serves exactly one connection and exits
//! when the VMM closes it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable that names the virtiofsd binary to run (overrides the search).
pub const VIRTIOFSD_ENV: &str = "HULL_VIRTIOFSD";

/// Where virtiofsd is looked for after `$HULL_VIRTIOFSD`: `cargo install` puts it in
/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), distribution packages in /usr/libexec or /usr/lib/qemu.
const KNOWN_LOCATIONS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// Finds the virtiofsd binary: `$HULL_VIRTIOFSD`, then `virtiofsd` on `$PATH`, then
/// `$CARGO_HOME/bin` or `~/.cargo/bin`, then the distribution locations. `None` if none exists.
pub fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(VIRTIOFSD_ENV) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    path_dirs
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("virtiofsd"))
        .chain(KNOWN_LOCATIONS.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The virtiofsd command line that serves `shared_dir` on the vhost-user socket `socket`, with its
/// sandboxing on. Runs the binary [`find_virtiofsd`] finds (plain `virtiofsd` if none).
///
/// Flags and why:
/// - `--socket-path`: virtiofsd creates and listens on this socket; the VMM connects to it.
/// - `--shared-dir`: the only directory the guest can see (containers' rootfs are bind-mounted
///   under it).
/// - `--sandbox namespace`: virtiofsd moves into new mount, PID and network namespaces and
///   pivot_roots into the shared directory, so even a path-handling bug cannot reach host files
///   outside it, and it has no network. Needs root (the shim runs as root) or user namespaces.
/// - `--seccomp kill`: a system call outside virtiofsd's allow-list kills it instead of running (the
///   default today, spelled out so a changed default cannot weaken it).
/// - `--announce-submounts`: bind mounts under the shared directory (one per container rootfs)
///   show up in the guest as separate mounts with their own device numbers, so inode numbers of
///   two rootfs cannot collide in the guest.
/// - `--cache auto`: the guest caches metadata and data for a short time and revalidates; a host
///   side change becomes visible to the guest (needed for the host-side writes of the shim).
/// - `--inode-file-handles=prefer`: reference inodes by file handle where the file system
///   supports it, so virtiofsd does not keep one O_PATH descriptor per inode the guest knows.
/// - `--log-level warn`: only problems reach the owner's log.
pub fn virtiofsd_command(shared_dir: &Path, socket: &Path) -> Command {
    let binary = find_virtiofsd().unwrap_or_else(|| PathBuf::from("virtiofsd"));
    let mut command = Command::new(binary);
    command.args(virtiofsd_args(shared_dir, socket));
    command
}

/// The arguments of [`virtiofsd_command`].
pub fn virtiofsd_args(shared_dir: &Path, socket: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        shared_dir.into(),
    ];
    args.extend(
        [
            "--sandbox",
            "namespace",
            "--seccomp",
            "kill",
            "--announce-submounts",
            "--cache",
            "auto",
            "--inode-file-handles=prefer",
            "--log-level",
            "warn",
        ]
        .map(OsString::from),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_has_paths_and_sandboxing() {
        let cmd = virtiofsd_command(
            Path::new("/run/hull/sb1/shared"),
            Path::new("/run/hull/sb1/fs.sock"),
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| {
            let i = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} missing"));
            args[i + 1].clone()
        };
        assert_eq!(after("--socket-path"), "/run/hull/sb1/fs.sock");
        assert_eq!(after("--shared-dir"), "/run/hull/sb1/shared");
        assert_eq!(after("--sandbox"), "namespace");
        assert_eq!(after("--seccomp"), "kill");
        assert!(args.iter().any(|a| a == "--announce-submounts"));
        assert!(cmd.get_program().to_string_lossy().ends_with("virtiofsd"));
    }
}
