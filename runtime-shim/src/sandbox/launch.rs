//! The commands that bring a sandbox up, one set per mode: virtiofsd and hull-vmm for a VM, or
//! hull-agent on the host for tests.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{SandboxError, SandboxPaths, GUEST_CID, SHARED_FS_TAG};
use crate::config::{resolve_binary, Config};
use crate::cri::sizing::VmSize;

/// The guest kernel command line the shim starts from (`quiet` and the config's
/// `kernel_params` are appended).
pub const GUEST_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// hull-agent on the host serving the sandbox's hybrid-vsock socket (test-only mode).
pub fn host_agent_command(
    config: &Config,
    paths: &SandboxPaths,
) -> (PathBuf, tokio::process::Command) {
    let agent = resolve_binary(&config.sandbox.agent).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&agent);
    cmd.arg("--listen")
        .arg(format!("hybrid://{}", paths.vsock_socket.display()))
        .arg("--shared-dir")
        .arg(&paths.shared);
    (agent, cmd)
}

/// virtiofsd serving the shared directory (the config's binary, or the one the search finds).
pub fn virtiofsd_command(
    config: &Config,
    paths: &SandboxPaths,
) -> (PathBuf, tokio::process::Command) {
    let mut std_cmd = super::virtiofsd::virtiofsd_command(&paths.shared, &paths.virtiofsd_socket);
    if !config.virtiofsd.as_os_str().is_empty() {
        let args: Vec<_> = std_cmd.get_args().map(|a| a.to_owned()).collect();
        std_cmd = std::process::Command::new(&config.virtiofsd);
        std_cmd.args(args);
    }
    let binary = PathBuf::from(std_cmd.get_program());
    (binary, tokio::process::Command::from(std_cmd))
}

/// The guest kernel command line for `config`.
pub fn guest_cmdline(config: &Config) -> String {
    let mut cmdline = GUEST_CMDLINE.to_string();
    if !config.debug {
        cmdline.push_str(" quiet");
    }
    if !config.kernel_params.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&config.kernel_params);
    }
    cmdline
}

/// hull-vmm booting the guest with `size`, the sandbox's vsock socket and shared directory.
pub fn vmm_command(
    config: &Config,
    paths: &SandboxPaths,
    size: VmSize,
    nets: &[(RawFd, String)],
) -> (PathBuf, tokio::process::Command) {
    let vmm = resolve_binary(&config.vmm).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&vmm);
    for (_, arg) in nets {
        cmd.arg("--net").arg(arg);
    }
    let inherited: Vec<RawFd> = nets.iter().map(|(fd, _)| *fd).collect();
    if !inherited.is_empty() {
        // SAFETY: the closure runs in the child between fork and exec and only calls fcntl(2),
        // which is async-signal-safe; it clears close-on-exec on the tap descriptors the VMM
        // inherits under the same numbers (named in its --net fd= arguments).
        unsafe {
            cmd.pre_exec(move || {
                for fd in &inherited {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    cmd.arg("--kernel")
        .arg(&config.kernel)
        .arg("--initrd")
        .arg(&config.initramfs)
        .arg("--cmdline")
        .arg(guest_cmdline(config))
        .arg("--mem-mib")
        .arg(size.mem_mib.to_string())
        .arg("--vcpus")
        .arg(size.vcpus.to_string())
        .arg("--serial-log")
        .arg(paths.dir.join("console.log"))
        .arg("--vsock-cid")
        .arg(GUEST_CID.to_string())
        .arg("--vsock-uds")
        .arg(&paths.vsock_socket)
        .arg("--fs")
        .arg(format!(
            "tag={SHARED_FS_TAG},socket={}",
            paths.virtiofsd_socket.display()
        ));
    (vmm, cmd)
}

/// Waits until `path` exists, at most `timeout`.
pub async fn wait_for_socket(path: &Path, timeout: Duration) {
    let started = Instant::now();
    while !path.exists() && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes `shared` a mount point with shared propagation, so the mounts made under it after
/// virtiofsd started also appear in virtiofsd's (slave) mount namespace.
pub fn make_shared_mount(shared: &Path) -> Result<(), SandboxError> {
    use nix::mount::{mount, MsFlags};
    let err = |source: nix::errno::Errno| SandboxError::Io {
        action: "making a shared mount of",
        path: shared.to_path_buf(),
        source: source.into(),
    };
    mount(
        Some(shared),
        shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    mount(
        None::<&str>,
        shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(err)
}
