//! A pool of pre-booted sandbox VMs (`hull pool run`), off by default.
//!
//! The pool daemon keeps `size` VMs of the default size booted to a ready agent, each in a
//! sandbox directory of its own under `<run_dir>/.pool/`:
//!
//! - `.pool/boot/<slot>/`  a VM booting (or being retired); no shim touches it
//! - `.pool/ready/<slot>/` a VM whose agent answered; any shim may claim it
//!
//! A shim claims a slot with one `rename(2)` of `ready/<slot>` to `<run_dir>/<sandbox-id>`
//! (`RENAME_NOREPLACE`): the rename is atomic, so of two shims racing for a slot exactly one
//! gets it, and from then on the directory is an ordinary sandbox directory (pids file, jail,
//! cgroups, sockets) that the shim tears down like one it booted. The slot's processes stay
//! the daemon's children (it reaps them); the shim watches them through pidfds. The VM runs
//! jailed (the pool needs the jail) in a network namespace of its own, with one NIC on the tap
//! [`POOL_TAP`] there with MAC [`POOL_MAC`]; a pod's shim moves that tap into the pod's
//! namespace, wires it to the pod's interface, and has the agent give the guest NIC the pod
//! interface's MAC ([`crate::network::adopt_tap`]). A pod with more than one interface, a VM
//! size other than the default, or a missing pool boots its own VM as without a pool.

pub mod daemon;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{resolve_binary, Config};
use crate::cri::sizing::VmSize;
use crate::network::MacAddr;
use crate::sandbox::SandboxPaths;

/// The pool's directory under the run directory (a leading dot: no sandbox id has one).
pub const POOL_DIR: &str = ".pool";
/// The tap of a pool VM's one NIC, in the VM's own network namespace.
pub const POOL_TAP: &str = "hulltap0";
/// The MAC a pool VM's NIC boots with (locally administered); the guest takes the pod
/// interface's MAC when a pod claims it.
pub const POOL_MAC: MacAddr = MacAddr([0x02, 0x48, 0x55, 0x4c, 0x00, 0x01]);
/// The MTU a pool VM's NIC boots with (the pod's is set when a pod claims it).
pub const POOL_MTU: u32 = 1500;

/// The pool's directories under a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDirs {
    /// Slots booting or being retired.
    pub boot: PathBuf,
    /// Slots ready to be claimed.
    pub ready: PathBuf,
}

impl PoolDirs {
    /// The pool directories of `run_dir`.
    pub fn new(run_dir: &Path) -> PoolDirs {
        let pool = run_dir.join(POOL_DIR);
        PoolDirs {
            boot: pool.join("boot"),
            ready: pool.join("ready"),
        }
    }

    /// The ready slots whose VM was booted with `profile` ([`boot_profile`]), sorted.
    pub fn ready_for(&self, profile: &str) -> Vec<String> {
        self.ready_slots()
            .into_iter()
            .filter(|slot| {
                std::fs::read_to_string(self.ready.join(slot).join(PROFILE_FILE))
                    .is_ok_and(|p| p == profile)
            })
            .collect()
    }

    /// How many slots are booting (or being retired).
    pub fn booting(&self) -> usize {
        std::fs::read_dir(&self.boot).map_or(0, |entries| entries.count())
    }

    /// The names of the ready slots, sorted.
    pub fn ready_slots(&self) -> Vec<String> {
        let mut slots: Vec<String> = std::fs::read_dir(&self.ready)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| hull_proto::valid_id(name))
                    .collect()
            })
            .unwrap_or_default();
        slots.sort();
        slots
    }
}

/// File in a claimed sandbox's directory naming the pool slot it was.
pub const SLOT_FILE: &str = "pool-slot";
/// File in a pool slot: what its VM was booted with ([`boot_profile`]).
pub const PROFILE_FILE: &str = "pool-profile";

/// What a VM of `size` that `config` boots is made of: the size, the guest kernel, its root
/// (initramfs or pmem image), hull-vmm and virtiofsd (each path with its length and
/// modification time), the kernel command line, free page reporting and the jail settings. A shim takes only a pool VM whose
/// profile is the one it would boot itself, so a changed config or an upgraded binary is never
/// served by a VM booted before.
pub fn boot_profile(config: &Config, size: VmSize) -> String {
    let identity = |path: &Path| {
        let meta = std::fs::metadata(path);
        let len = meta.as_ref().map(|m| m.len()).ok();
        let modified = meta.and_then(|m| m.modified()).ok();
        format!("{} {len:?} {modified:?}", path.display())
    };
    let vmm = resolve_binary(&config.vmm).unwrap_or_else(|| config.vmm.clone());
    let virtiofsd = if config.virtiofsd.as_os_str().is_empty() {
        crate::sandbox::virtiofsd::find_virtiofsd().unwrap_or_default()
    } else {
        config.virtiofsd.clone()
    };
    let root = config.guest_root();
    [
        format!("size {} vcpus {} MiB", size.vcpus, size.mem_mib),
        format!("kernel {}", identity(&config.kernel)),
        format!("{} {}", root.key(), identity(root.path())),
        format!("vmm {}", identity(&vmm)),
        format!("virtiofsd {}", identity(&virtiofsd)),
        format!("cmdline {}", crate::sandbox::launch::guest_cmdline(config)),
        format!("free_page_reporting {}", config.free_page_reporting),
        format!("guest_ram_huge_pages {}", config.guest_ram_huge_pages),
        format!(
            "jail {} {} {} {} {} {}",
            config.jail,
            config.jail_uid,
            config.jail_gid,
            config.jail_nofile,
            config.jail_fsize_mib,
            config.pod_cgroup_parent.display()
        ),
    ]
    .join("\n")
        + "\n"
}

/// The pool slot a sandbox directory was (its [`SLOT_FILE`]), if it was one.
pub fn recorded_slot(sandbox_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sandbox_dir.join(SLOT_FILE)).ok()?;
    let slot = text.trim();
    hull_proto::valid_id(slot).then(|| slot.to_string())
}

/// Asks `daemon`, a `hull pool run` this process started, to stop (SIGTERM: it retires its
/// unclaimed VMs), if it still runs.
pub fn ask_to_stop(daemon: &mut std::process::Child) {
    if let Ok(None) = daemon.try_wait() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// [`ask_to_stop`], then waits for the daemon to exit.
pub fn stop_and_wait(daemon: &mut std::process::Child) -> io::Result<std::process::ExitStatus> {
    ask_to_stop(daemon);
    daemon.wait()
}

/// Renames the slot directory `from` to `to` unless `to` exists (`RENAME_NOREPLACE`): the one
/// atomic step by which a slot changes hands (claim, retire, take back), so of two racing for
/// it exactly one succeeds; `ENOENT` when the other was first.
pub fn move_slot(from: &Path, to: &Path) -> nix::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

/// Claims a ready slot booted with `profile` ([`boot_profile`]) for sandbox `sandbox_id`:
/// renames it to the sandbox's directory under `run_dir`, records the slot's name there
/// ([`SLOT_FILE`]) and returns the sandbox's paths; `None` when no ready slot has that profile
/// (or another shim took each first). A sandbox directory that already exists is an error (the
/// slot stays in the pool).
pub fn claim(
    run_dir: &Path,
    sandbox_id: &str,
    profile: &str,
) -> Result<Option<SandboxPaths>, io::Error> {
    let dirs = PoolDirs::new(run_dir);
    let paths = SandboxPaths::new(run_dir, sandbox_id);
    for slot in dirs.ready_for(profile) {
        let from = dirs.ready.join(&slot);
        match move_slot(&from, &paths.dir) {
            Ok(()) => {
                tracing::info!(slot, sandbox = sandbox_id, "claimed a pre-booted VM");
                let _ = std::fs::write(paths.dir.join(SLOT_FILE), format!("{slot}\n"));
                return Ok(Some(paths));
            }
            // Another shim claimed it, or the daemon retired it.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "claiming pool slot {} as {}: {e}",
                        from.display(),
                        paths.dir.display()
                    ),
                ))
            }
        }
    }
    Ok(None)
}
