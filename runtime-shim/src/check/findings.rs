//! The findings of `hull check` as pure functions of what was read from the machine.

use std::path::{Path, PathBuf};

use super::{Finding, Status};
use crate::config::SandboxMode;
use crate::install::containerd::{hull_runtime, ConfigFile};

/// What kind of KVM this host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// Hardware-assisted KVM (vmx/svm).
    Real,
    /// PVM (`kvm_pvm`, no vmx/svm): only PVM-aware guests run, not a stock Linux kernel.
    Pvm,
    /// No `/dev/kvm`.
    Missing,
}

/// The KVM kind from `/dev/kvm`'s existence, `/sys/module/kvm_pvm`'s, and `/proc/cpuinfo`.
pub fn kvm_kind(dev_kvm: bool, pvm_module: bool, cpuinfo: &str) -> KvmKind {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (dev_kvm, pvm_module || !hw) {
        (false, _) => KvmKind::Missing,
        (true, true) => KvmKind::Pvm,
        (true, false) => KvmKind::Real,
    }
}

/// `/dev/kvm`: its kind, and whether this user may open it (`access` = access(2)'s verdict,
/// `perms` = mode, uid, gid).
pub fn kvm(
    kind: KvmKind,
    mode: SandboxMode,
    access: Result<(), String>,
    perms: Option<(u32, u32, u32)>,
) -> Finding {
    let bad = if mode == SandboxMode::Vm {
        Status::Fail
    } else {
        Status::Warn
    };
    let perms = perms.map_or(String::new(), |(m, u, g)| {
        format!(" (mode {:o}, owner {u}:{g})", m & 0o7777)
    });
    match (kind, access) {
        (KvmKind::Missing, _) => Finding::new(
            "kvm",
            bad,
            "/dev/kvm missing: load kvm_intel/kvm_amd, or run on a host with KVM",
        ),
        (_, Err(e)) => Finding::new(
            "kvm",
            bad,
            format!(
                "/dev/kvm{perms} cannot be opened read-write: {e} (run as root or join its group)"
            ),
        ),
        (KvmKind::Pvm, Ok(())) => Finding::new(
            "kvm",
            bad,
            format!(
                "/dev/kvm{perms} is PVM (kvm_pvm, no vmx/svm): Linux guests do not boot here; use \
                 the nested lab, or sandbox.mode = \"host-agent\" for tests"
            ),
        ),
        (KvmKind::Real, Ok(())) => {
            Finding::new("kvm", Status::Ok, format!("real KVM, /dev/kvm{perms}"))
        }
    }
}

/// A guest image file.
pub fn image_file(what: &'static str, path: &Path, exists: bool) -> Finding {
    if exists {
        Finding::new(what, Status::Ok, path.display().to_string())
    } else {
        Finding::new(
            what,
            Status::Fail,
            format!(
                "{} missing (`make guest`, then `hull install`)",
                path.display()
            ),
        )
    }
}

/// The agent inside the initramfs (`initramfs` = the archive's bytes, or why it was not read)
/// against this build's agent API version.
pub fn agent_in_image(initramfs: Result<&[u8], String>, host_api: u32) -> Finding {
    let archive = match initramfs {
        Ok(a) => a,
        Err(e) => return Finding::new("agent", Status::Fail, format!("initramfs not read: {e}")),
    };
    let init = match super::image::cpio_file(archive, "init") {
        Ok(Some(init)) => init,
        Ok(None) => {
            return Finding::new(
                "agent",
                Status::Fail,
                "the initramfs has no /init (the agent)",
            )
        }
        Err(e) => return Finding::new("agent", Status::Fail, format!("initramfs: {e}")),
    };
    agent_api_finding(super::image::agent_api_versions(init), host_api)
}

/// The agent inside a pmem root image (`image` = the file's bytes, or why it was not read):
/// its API marker is looked for in the whole image (the agent is the only file carrying one).
pub fn agent_in_pmem_image(image: Result<&[u8], String>, host_api: u32) -> Finding {
    match image {
        Ok(bytes) => agent_api_finding(super::image::agent_api_versions(bytes), host_api),
        Err(e) => Finding::new("agent", Status::Fail, format!("image not read: {e}")),
    }
}

/// The agent API versions found in the guest image, against this build's.
fn agent_api_finding(versions: Vec<u32>, host_api: u32) -> Finding {
    match versions.as_slice() {
        [v] if *v == host_api => {
            Finding::new("agent", Status::Ok, format!("/init serves agent API {v}"))
        }
        [] => Finding::new(
            "agent",
            Status::Fail,
            "/init carries no agent API marker: not a hull-agent, or built before markers; \
             rebuild the image (`make guest`)",
        ),
        other => Finding::new(
            "agent",
            Status::Fail,
            format!(
                "/init serves agent API {other:?}, this hull speaks {host_api}: rebuild the \
                 image (`make guest`) and reinstall"
            ),
        ),
    }
}

/// A binary's version from its `--version` output (`output` = stdout, or why it did not run):
/// the first line's last word. `want` is the version it must have, if any.
pub fn binary_version(
    what: &'static str,
    path: Option<&Path>,
    output: Result<String, String>,
    want: Option<&str>,
) -> Finding {
    let Some(path) = path else {
        return Finding::new(what, Status::Fail, "not found");
    };
    let line = match output {
        Ok(out) => out.lines().next().unwrap_or("").trim().to_string(),
        Err(e) => return Finding::new(what, Status::Fail, format!("{}: {e}", path.display())),
    };
    let version = line.split_whitespace().last().unwrap_or("");
    match want {
        Some(want) if version != want => Finding::new(
            what,
            Status::Fail,
            format!("{} is {line:?}, expected version {want}", path.display()),
        ),
        _ => Finding::new(what, Status::Ok, format!("{version} ({})", path.display())),
    }
}

/// Host devices: `/dev/net/tun` (pod networking) is required; vhost devices are reported only.
pub fn devices(present: &[(&str, bool)]) -> Finding {
    let missing: Vec<&str> = present
        .iter()
        .filter(|(_, p)| !p)
        .map(|(d, _)| *d)
        .collect();
    let listed = present
        .iter()
        .map(|(d, p)| format!("{d} {}", if *p { "yes" } else { "no" }))
        .collect::<Vec<_>>()
        .join(", ");
    let status = if missing.contains(&"/dev/net/tun") {
        Status::Fail
    } else if missing.is_empty() {
        Status::Ok
    } else {
        Status::Warn
    };
    Finding::new("devices", status, listed)
}

/// Whether `/sys/fs/cgroup` is the cgroup v2 hierarchy, from `/proc/self/mounts`. v1 (or a
/// hybrid with v2 elsewhere) is a warning: containerd and the shim work on it (this project's
/// own test hosts are hybrid), but Kubernetes is moving to v2 only.
pub fn cgroup(mounts: &str) -> Finding {
    let v2_at: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2] == "cgroup2").then_some(f[1])
        })
        .collect();
    if v2_at.contains(&"/sys/fs/cgroup") {
        Finding::new("cgroup", Status::Ok, "v2 (/sys/fs/cgroup)")
    } else if let Some(at) = v2_at.first() {
        Finding::new(
            "cgroup",
            Status::Warn,
            format!("hybrid: v1 controllers, v2 only at {at} (unified hierarchy recommended)"),
        )
    } else {
        Finding::new(
            "cgroup",
            Status::Warn,
            "v1 only (unified hierarchy recommended: systemd.unified_cgroup_hierarchy=1)",
        )
    }
}

/// containerd's version from `containerd --version` (third word).
pub fn containerd_version(output: Result<String, String>) -> Finding {
    let out = match output {
        Ok(out) => out,
        Err(e) => return Finding::new("containerd", Status::Fail, format!("not usable: {e}")),
    };
    let version = out.split_whitespace().nth(2).unwrap_or("?").to_string();
    let supported = version.starts_with("1.6.") || version.starts_with("1.7.");
    Finding::new(
        "containerd",
        if supported { Status::Ok } else { Status::Warn },
        if supported {
            version
        } else {
            format!("{version} (Hull is tested with 1.6; its config snippet is version 2)")
        },
    )
}

/// Whether the `hull` runtime is declared in containerd's config (`files` as loaded from
/// `main`; `config_path` = the hull config it should name).
pub fn runtime_configured(main: &Path, files: &[ConfigFile], config_path: &Path) -> Finding {
    if files.is_empty() {
        return Finding::new(
            "runtime",
            Status::Fail,
            format!("{} missing: run `hull install`", main.display()),
        );
    }
    match hull_runtime(files) {
        None => Finding::new(
            "runtime",
            Status::Fail,
            format!(
                "no `hull` runtime (io.containerd.hull.v2) in {} or what it imports: run `hull \
                 install`, or add the snippet it prints",
                main.display()
            ),
        ),
        Some(r) => {
            let named = r.config_path.as_deref().map(PathBuf::from);
            let status = if named.as_deref() == Some(config_path) {
                Status::Ok
            } else {
                Status::Warn
            };
            Finding::new(
                "runtime",
                status,
                format!(
                    "hull in {}, ConfigPath {} (restart containerd after a change)",
                    r.file.display(),
                    r.config_path.as_deref().unwrap_or("unset")
                ),
            )
        }
    }
}

/// Free memory (`MemAvailable` in `/proc/meminfo`) against one default VM plus its host
/// processes (hull-vmm, virtiofsd: ~32 MiB).
pub fn memory(meminfo: &str, vm_mib: u64) -> Finding {
    let need = vm_mib + 32;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib / 1024);
    match available {
        None => Finding::new(
            "memory",
            Status::Warn,
            "MemAvailable not found in /proc/meminfo",
        ),
        Some(mib) if mib >= need => Finding::new(
            "memory",
            Status::Ok,
            format!("{mib} MiB available, a default VM needs ~{need} MiB"),
        ),
        Some(mib) => Finding::new(
            "memory",
            Status::Fail,
            format!("{mib} MiB available, a default VM needs ~{need} MiB"),
        ),
    }
}

/// Whether guest RAM can get 2 MiB host pages. With `own_tmpfs` (a jailed VMM and
/// `guest_ram_huge_pages = true`, the default) guest RAM lives on the jail's own tmpfs mounted
/// `huge=always`, so only the host-wide overrides of /sys/kernel/mm/transparent_hugepage/
/// shmem_enabled matter (`deny` turns it off, a warning). Otherwise guest RAM is a memfd and
/// that file's active value (in brackets) decides: `never` (the usual default) is a warning:
/// every 4 KiB page the guest touches costs a fault, and under nesting a boot to the agent took
/// 1234 ms instead of 939 ms (issue 15; Firecracker, whose private RAM gets huge pages by
/// default, 996 ms). With free page reporting huge pages cost no measurable memory at idle (lab,
/// 5 idle pods: 30.6 MiB PSS per pod with 4 KiB pages, 30.3 MiB with huge pages).
pub fn guest_ram_pages(shmem_enabled: Option<&str>, own_tmpfs: bool) -> Finding {
    let active = shmem_enabled.and_then(|s| {
        let start = s.find('[')?;
        let end = s[start..].find(']')? + start;
        Some(s[start + 1..end].to_string())
    });
    let huge = |how: String| Finding::new("guest ram", Status::Ok, how);
    let small = |how: String| Finding::new("guest ram", Status::Warn, how);
    match (own_tmpfs, active.as_deref()) {
        (true, Some("deny")) => small(
            "shared-memory huge pages 'deny' turns huge pages off for every tmpfs, the jail's \
             guest RAM tmpfs too: 4 KiB pages, slower boots; for faster boots: \
             echo never > /sys/kernel/mm/transparent_hugepage/shmem_enabled"
                .into(),
        ),
        (_, None) => small(
            "no /sys/kernel/mm/transparent_hugepage/shmem_enabled (no transparent huge pages in \
             this kernel): guest RAM gets 4 KiB pages"
                .into(),
        ),
        (true, _) => huge(
            "guest RAM on the jail's own huge=always tmpfs: 2 MiB pages whatever \
             shmem_enabled says (guest_ram_huge_pages = true)"
                .into(),
        ),
        (false, Some(mode @ ("advise" | "always" | "within_size" | "force"))) => huge(format!(
            "shared-memory huge pages '{mode}': guest RAM (a memfd) gets 2 MiB pages"
        )),
        (false, Some(other)) => small(format!(
            "shared-memory huge pages '{other}': guest RAM (a memfd without the jail's tmpfs) gets \
             4 KiB pages and boots slower; for faster boots: jail = true with \
             guest_ram_huge_pages = true, or \
             echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled"
        )),
    }
}

/// The VMM jail (VM mode): off is a warning (hull-vmm then runs as root in the host's
/// namespaces); on without a cgroup hierarchy for the pod cgroups fails (a sandbox would not
/// start). `cgroup_layout` is "v1", "v2" or `None` when none was found.
pub fn jail(
    mode: SandboxMode,
    enabled: bool,
    uid: u32,
    gid: u32,
    cgroup_parent: &Path,
    cgroup_layout: Option<&str>,
) -> Finding {
    if mode == SandboxMode::HostAgent {
        return Finding::new("jail", Status::Ok, "not used in host-agent mode");
    }
    if !enabled {
        return Finding::new(
            "jail",
            Status::Warn,
            "jail = false: hull-vmm runs as root with every capability, the host's file system \
             and namespaces, outside any pod cgroup (debugging only: set jail = true)",
        );
    }
    match cgroup_layout {
        Some(layout) => Finding::new(
            "jail",
            Status::Ok,
            format!(
                "hull-vmm jailed as {uid}:{gid}, pod cgroups under {} (cgroup {layout})",
                cgroup_parent.display()
            ),
        ),
        None => Finding::new(
            "jail",
            Status::Fail,
            "no cgroup hierarchy with the memory, cpu and pids controllers under /sys/fs/cgroup \
             for the pod cgroups (mount cgroup2 there, or the v1 controllers)",
        ),
    }
}
