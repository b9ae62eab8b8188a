//! CreateSandbox (hostname, the shared virtio-fs directory, DNS, sysctls) and DestroySandbox.

use std::path::PathBuf;

use hull_proto::agent::CreateSandboxRequest;
use ttrpc::Code;

use crate::runtime::{Failure, Runtime};

/// Applies a sandbox request. Outside PID 1 (host mode) only the shared directory of the
/// command line is used: the host's hostname, mounts, resolv.conf and sysctls are not touched.
pub fn create(req: &CreateSandboxRequest, runtime: &Runtime) -> Result<(), Failure> {
    if !crate::is_pid1() {
        return Ok(());
    }
    let fail = |what: &str, e: &dyn std::fmt::Display| (Code::INTERNAL, format!("{what}: {e}"));
    nix::unistd::sethostname(&req.hostname).map_err(|e| fail("sethostname", &e))?;
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
