//! The commands that bring a sandbox up, one set per mode: virtiofsd and hull-vmm for a VM, or
//! hull-agent on the host for tests.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::jail::plan::{
    CONSOLE_IN_JAIL, GUEST_ROOT_IN_JAIL, KERNEL_IN_JAIL, VIRTIOFSD_IN_JAIL, VMM_IN_JAIL,
    VSOCK_IN_JAIL,
};
use super::jail::{Jail, JailContents, JailSettings};
use super::priority::BootPriority;
use super::processes::{spawn_logged, write_pids_file, ProcessRecord, HULL_VMM, VIRTIOFSD};
use super::ready::ReadySignal;
use super::{SandboxError, SandboxPaths, GUEST_CID, SHARED_FS_TAG};
use crate::bench::stages::{self, Stage};
use crate::config::{resolve_binary, Config};
use crate::cri::sizing::VmSize;

/// The guest kernel command line the shim starts from (`quiet` and the config's
/// `kernel_params` are appended).
///
/// `percpu_alloc=page`: by default x86 embeds the per-CPU areas in 2 MiB units, and with few
/// vCPUs every unit is a whole 2 MiB; each further per-CPU chunk the guest needs (its cgroups'
/// statistics fill the first) then gets a 4 MiB zeroed array for memory-cgroup accounting
/// (one pointer per 4 bytes of the unit). Page-sized units make those arrays small: in the lab an
/// idle guest's vmalloc went from 4.2 MiB (1063 pages, `pcpu_mem_zalloc` in /proc/vmallocinfo)
/// to 0.3 MiB, and hull-vmm's PSS per idle pod from 35.2 to 31.0 MiB (5 pods).
///
/// `slub_max_order=0`: every slab cache takes single pages instead of up to 32 KiB at a time, so a
/// small guest's hundred-odd caches leave less half-used memory: in the lab the idle guest held
/// 22.0 -> 21.7 MiB (slab 4.46 -> 4.16 MiB). Objects larger than a page still get what they need.
pub const GUEST_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 percpu_alloc=page slub_max_order=0";

/// Starts a sandbox VM in `paths` (its directory made): the jail, virtiofsd on the shared
/// directory, then hull-vmm with the NICs `nets` (inherited tap descriptors and their `--net`
/// arguments) in the network namespace `netns` (a new, empty one for `None`). Returns the
/// processes, hull-vmm last, and the listener for the agent's ready signal (bound before the
/// VMM starts). The pod cgroup gets the CPU weight of `priority`. Each process is recorded in
/// the pids file as soon as it runs, so crash clean-up finds it even when its starter is gone
/// before the VM is up. On failure what was started is stopped; the caller removes the
/// directory.
///
/// hull-vmm is spawned right after virtiofsd, not once virtiofsd's socket is there: it retries
/// its connection until the socket exists and is handed to the jail user (done here as soon as
/// it appears), so the VMM's own set-up (jail, KVM, guest RAM, the kernel) runs while virtiofsd
/// starts.
pub async fn start_vm(
    config: &Config,
    sandbox_id: &str,
    paths: &SandboxPaths,
    size: VmSize,
    nets: &[(RawFd, String)],
    netns: Option<&Path>,
    priority: BootPriority,
) -> Result<(Vec<(&'static str, tokio::process::Child)>, ReadySignal), SandboxError> {
    let jail = prepare_jail(config, sandbox_id, paths, size, priority)?;
    let ready = bind_ready_signal(paths, jail.as_ref())?;
    make_shared_mount(&paths.shared)?;
    let (binary, cmd) = virtiofsd_command(config, paths, jail.as_ref())?;
    let mut virtiofsd = spawn_logged(VIRTIOFSD, binary, cmd, &paths.dir.join("virtiofsd.log"))?;
    let mut records: Vec<(&'static str, ProcessRecord)> = Vec::new();
    let mut record = |(name, child): &(&'static str, tokio::process::Child)| {
        if let Some(r) = child.id().and_then(ProcessRecord::of) {
            records.push((name, r));
        }
        write_pids_file(&paths.pids_file, &records).map_err(|source| SandboxError::Io {
            action: "writing",
            path: paths.pids_file.clone(),
            source,
        })
    };
    let vmm = async {
        record(&virtiofsd)?;
        tracing::info!(
            sandbox = sandbox_id,
            vcpus = size.vcpus,
            mem_mib = size.mem_mib,
            "booting the sandbox VM"
        );
        let jailed = jail.as_ref().map(|j| (j, netns));
        let (vmm, cmd) = vmm_command(config, paths, size, nets, jailed)?;
        let log = paths.dir.join("vmm.log");
        let spawn = || spawn_logged(HULL_VMM, vmm, cmd, &log);
        let mut spawned = match &jail {
            Some(jail) => jail.spawn(spawn)??,
            None => spawn()?,
        };
        stages::mark(Stage::VmmSpawn, sandbox_id);
        let ready = async {
            record(&spawned)?;
            wait_for_socket(&paths.virtiofsd_socket, Duration::from_secs(5)).await;
            grant_virtiofsd_socket(jail.as_ref())?;
            stages::mark(Stage::VirtiofsdReady, sandbox_id);
            Ok::<_, SandboxError>(())
        };
        if let Err(e) = ready.await {
            let _ = spawned.1.start_kill();
            let _ = spawned.1.wait().await;
            return Err(e);
        }
        Ok::<_, SandboxError>(spawned)
    };
    match vmm.await {
        Ok(vmm) => Ok((vec![virtiofsd, vmm], ready)),
        Err(e) => {
            let _ = virtiofsd.1.start_kill();
            let _ = virtiofsd.1.wait().await;
            Err(e)
        }
    }
}

/// Listens for the agent's ready signal where hull-vmm forwards it: beside the VMM's vsock
/// socket, which is in the jail's `/run` when jailed (the socket file then belongs to the jail
/// user, who must be able to connect to it).
fn bind_ready_signal(
    paths: &SandboxPaths,
    jail: Option<&Jail>,
) -> Result<ReadySignal, SandboxError> {
    match jail {
        Some(jail) => {
            let ready = ReadySignal::bind(&jail.host_path(Path::new(VSOCK_IN_JAIL)))?;
            jail.grant(ready.path())?;
            Ok(ready)
        }
        None => ReadySignal::bind(&paths.vsock_socket),
    }
}

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

/// The VMM's jail for a sandbox of `size` (root and pod cgroup made, the cgroup's CPU weight
/// that of `priority`), or `None` (with a warning) when the configuration turns it off.
pub fn prepare_jail(
    config: &Config,
    sandbox_id: &str,
    paths: &SandboxPaths,
    size: VmSize,
    priority: BootPriority,
) -> Result<Option<Jail>, SandboxError> {
    if !config.jail {
        tracing::warn!(
            sandbox = sandbox_id,
            "jail = false: hull-vmm runs as root in the host's namespaces (debugging only)"
        );
        return Ok(None);
    }
    let vmm = resolve_binary(&config.vmm).unwrap_or_default();
    let root = config.guest_root().path();
    let contents = JailContents::for_vmm(&vmm, &config.kernel, Some(root), false)?;
    let mut settings = JailSettings::for_vm(config, size.vcpus, size.mem_mib);
    settings.limits.priority = priority;
    Ok(Some(Jail::prepare(
        &settings, sandbox_id, &paths.dir, &contents,
    )?))
}

/// virtiofsd serving the shared directory (the config's binary, or the one the search finds);
/// with a jail, its socket is in the jail's /run and it starts in the pod cgroup.
pub fn virtiofsd_command(
    config: &Config,
    paths: &SandboxPaths,
    jail: Option<&Jail>,
) -> Result<(PathBuf, tokio::process::Command), SandboxError> {
    let socket = jail.map_or(paths.virtiofsd_socket.clone(), |j| {
        j.host_path(Path::new(VIRTIOFSD_IN_JAIL))
    });
    let mut std_cmd = super::virtiofsd::virtiofsd_command(&paths.shared, &socket);
    if !config.virtiofsd.as_os_str().is_empty() {
        let args: Vec<_> = std_cmd.get_args().map(|a| a.to_owned()).collect();
        std_cmd = std::process::Command::new(&config.virtiofsd);
        std_cmd.args(args);
    }
    if let Some(jail) = jail {
        jail.join_cgroup(&mut std_cmd)?;
    }
    let binary = PathBuf::from(std_cmd.get_program());
    Ok((binary, tokio::process::Command::from(std_cmd)))
}

/// With a jail: lets the jailed VMM connect to virtiofsd's socket (made by root).
pub fn grant_virtiofsd_socket(jail: Option<&Jail>) -> Result<(), SandboxError> {
    match jail {
        Some(jail) => Ok(jail.grant(&jail.host_path(Path::new(VIRTIOFSD_IN_JAIL)))?),
        None => Ok(()),
    }
}

/// The guest kernel command line for `config`.
pub fn guest_cmdline(config: &Config) -> String {
    let mut cmdline = GUEST_CMDLINE.to_string();
    if let Some(params) = config.guest_root().kernel_params() {
        cmdline.push(' ');
        cmdline.push_str(params);
    }
    if !config.debug {
        cmdline.push_str(" quiet");
    }
    if !config.kernel_params.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&config.kernel_params);
    }
    cmdline
}

/// hull-vmm booting the guest with `size`, the sandbox's vsock socket and shared directory;
/// with `jail` (and the pod's network namespace), jailed and given the paths inside the jail.
pub fn vmm_command(
    config: &Config,
    paths: &SandboxPaths,
    size: VmSize,
    nets: &[(RawFd, String)],
    jail: Option<(&Jail, Option<&Path>)>,
) -> Result<(PathBuf, tokio::process::Command), SandboxError> {
    let vmm = resolve_binary(&config.vmm).unwrap_or_default();
    let console = paths.dir.join("console.log");
    let guest_root = config.guest_root();
    let host_paths = [
        vmm.as_path(),
        config.kernel.as_path(),
        guest_root.path(),
        console.as_path(),
        paths.vsock_socket.as_path(),
        paths.virtiofsd_socket.as_path(),
    ];
    let jail_paths = [
        VMM_IN_JAIL,
        KERNEL_IN_JAIL,
        GUEST_ROOT_IN_JAIL,
        CONSOLE_IN_JAIL,
        VSOCK_IN_JAIL,
        VIRTIOFSD_IN_JAIL,
    ]
    .map(Path::new);
    let [program, kernel, root, console, vsock, virtiofsd] = match jail {
        Some(_) => jail_paths,
        None => host_paths,
    };
    let mut cmd = tokio::process::Command::new(program);
    // SAFETY: one prctl between fork and exec: the shim keeps huge pages off for itself
    // (`threads::no_huge_pages`), the guest RAM wants them.
    unsafe {
        cmd.pre_exec(crate::threads::allow_huge_pages);
    }
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
        .arg(kernel)
        .arg(guest_root.vmm_flag())
        .arg(root)
        .arg("--cmdline")
        .arg(guest_cmdline(config))
        .arg("--mem-mib")
        .arg(size.mem_mib.to_string())
        .arg("--vcpus")
        .arg(size.vcpus.to_string())
        .arg("--serial-log")
        .arg(console)
        .arg("--vsock-cid")
        .arg(GUEST_CID.to_string())
        .arg("--vsock-uds")
        .arg(vsock)
        .arg("--fs")
        .arg(format!(
            "tag={SHARED_FS_TAG},socket={}",
            virtiofsd.display()
        ));
    if config.free_page_reporting {
        cmd.arg("--free-page-reporting");
    }
    if let Some((jail, netns)) = jail {
        if let Some(ram_dir) = jail.ram_dir() {
            cmd.arg("--mem-dir").arg(ram_dir);
        }
        jail.confine(cmd.as_std_mut(), netns)?;
    }
    Ok((vmm, cmd))
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
