//! CreateSandbox (hostname, the shared virtio-fs directory, DNS, sysctls) and DestroySandbox.

use std::path::PathBuf;

use hull_proto::agent::CreateSandboxRequest;
use ttrpc::Code;

use crate::runtime::{Failure, Runtime};

/// In host mode the pod's /dev/shm is this sibling of the shared directory (the shim removes
/// it with the sandbox directory).
pub const HOST_MODE_POD_SHM_NAME: &str = "pod-shm";

/// Mounts the pod's /dev/shm: a tmpfs of `size` bytes, mode 1777 as /dev/shm always is.
fn mount_pod_shm(dir: &std::path::Path, size: u64) -> nix::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={size}").as_str()),
    )
}

/// Applies a sandbox request. Outside PID 1 (host mode) only the shared directory of the
/// command line is used: the host's hostname, mounts, resolv.conf, sysctls and loopback are
/// not touched.
pub async fn create(req: &CreateSandboxRequest, runtime: &Runtime) -> Result<(), Failure> {
    let fail = |what: &str, e: &dyn std::fmt::Display| (Code::INTERNAL, format!("{what}: {e}"));
    if !crate::is_pid1() {
        // Host mode: the pod's /dev/shm beside the shared directory, nothing else of the host.
        if req.shm_size_bytes > 0 {
            let shared = runtime
                .configured_shared_dir()
                .ok_or_else(|| fail("pod /dev/shm", &"the agent has no --shared-dir"))?;
            let dir = shared.with_file_name(HOST_MODE_POD_SHM_NAME);
            mount_pod_shm(&dir, req.shm_size_bytes).map_err(|e| fail("pod /dev/shm", &e))?;
            runtime.set_pod_shm(dir);
        }
        return Ok(());
    }
    nix::unistd::sethostname(&req.hostname).map_err(|e| fail("sethostname", &e))?;
    crate::network::set_link_up(&crate::network::Netns::Current, "lo")
        .await
        .map_err(|e| (e.code(), format!("loopback: {e}")))?;
    if let Some(shared) = req.shared_fs.as_ref() {
        let mount_point = PathBuf::from(&shared.mount_point);
        std::fs::create_dir_all(&mount_point).map_err(|e| fail("creating the mount point", &e))?;
        nix::mount::mount(
            Some(shared.tag.as_str()),
            &mount_point,
            Some("virtiofs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| fail(&format!("mounting virtio-fs tag {}", shared.tag), &e))?;
        runtime.set_shared_mount(mount_point);
    }
    if let Some(dns) = req.dns.as_ref() {
        let mut text = String::new();
        for server in &dns.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !dns.searches.is_empty() {
            text.push_str(&format!("search {}\n", dns.searches.join(" ")));
        }
        if !dns.options.is_empty() {
            text.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        std::fs::write("/etc/resolv.conf", text)
            .map_err(|e| fail("writing /etc/resolv.conf", &e))?;
    }
    if req.shm_size_bytes > 0 {
        let dir = PathBuf::from(hull_proto::POD_SHM_SOURCE);
        mount_pod_shm(&dir, req.shm_size_bytes).map_err(|e| fail("pod /dev/shm", &e))?;
        runtime.set_pod_shm(dir);
    }
    for (key, value) in &req.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| fail(&format!("sysctl {key}"), &e))?;
    }
    Ok(())
}

/// Tears the sandbox down: every container and exec is killed and reaped, their cgroups and
/// mounts removed (see [`Runtime::destroy_all`]), then the shared directory is unmounted if
/// CreateSandbox mounted it. Returns when all of it is done.
pub async fn destroy(runtime: &Runtime) -> Result<(), Failure> {
    let containers = runtime.destroy_all().await;
    if let Some(shm) = runtime.take_pod_shm() {
        if let Err(e) = nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(%e, dir = %shm.display(), "unmounting the pod /dev/shm");
        }
        let _ = std::fs::remove_dir(&shm);
    }
    if let Some(mount_point) = runtime.take_shared_mount() {
        crate::mounts::unmount_all_under(&mount_point).map_err(|e| {
            (
                Code::INTERNAL,
                format!("unmounting the shared directory: {e}"),
            )
        })?;
    }
    containers
}
