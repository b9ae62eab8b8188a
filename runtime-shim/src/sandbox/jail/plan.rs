//! What goes into a jail root, as a pure plan: the VMM binary and the shared libraries `ldd`
//! names, the guest kernel and root file (read-only binds), the device nodes made on a private
//! /dev, the files and directory the VMM may write, and the host-side links that keep the
//! sandbox's socket paths where the shim looks for them.
//!
//! Layout inside the jail (the host sees it at `<sandbox-dir>/root`):
//!
//! - `/hull-vmm`, `/lib...` (the libraries at the paths `ldd` gives): read-only binds
//! - `/kernel`, `/guest-root` (the initramfs or the pmem image): read-only binds
//! - `/dev/kvm`, `/dev/null` (+ `/dev/net/tun` if asked): nodes on a small tmpfs, owned by the
//!   jail user
//! - `/console.log`: the serial log, a file owned by the jail user (the root itself is not
//!   writable by it, so it cannot swap the file for a link)
//! - `/run/`: owned by the jail user, where the VMM creates its hybrid-vsock socket and where
//!   virtiofsd's socket is placed
//! - `/ram/` (when asked): a tmpfs owned by the jail user, as large as the guest RAM and mounted
//!   `huge=always`, where the VMM keeps its guest RAM as an unlinked file

use std::path::{Component, Path, PathBuf};

/// Sub-directory of the sandbox directory that becomes the jail's root.
pub const ROOT_DIR: &str = "root";
/// The VMM binary inside the jail.
pub const VMM_IN_JAIL: &str = "/hull-vmm";
/// The guest kernel inside the jail.
pub const KERNEL_IN_JAIL: &str = "/kernel";
/// The guest root (the initramfs or the pmem image) inside the jail.
pub const GUEST_ROOT_IN_JAIL: &str = "/guest-root";
/// The serial log inside the jail.
pub const CONSOLE_IN_JAIL: &str = "/console.log";
/// The directory the jailed VMM may create sockets in.
pub const RUN_IN_JAIL: &str = "/run";
/// The tmpfs directory for the VMM's guest RAM inside the jail (`hull-vmm --mem-dir`).
pub const RAM_IN_JAIL: &str = "/ram";
/// The VMM's hybrid-vsock socket inside the jail.
pub const VSOCK_IN_JAIL: &str = "/run/vsock.sock";
/// virtiofsd's socket inside the jail.
pub const VIRTIOFSD_IN_JAIL: &str = "/run/virtiofsd.sock";
/// Device nodes every jailed VMM gets.
pub const BASE_DEVICES: &[&str] = &["/dev/kvm", "/dev/null"];
/// The tun device, for a VMM that opens its taps by name (the shim passes tap fds instead).
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// A read-only bind of a host file into the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host file.
    pub source: PathBuf,
    /// Absolute path inside the jail.
    pub target: PathBuf,
}

/// Everything the jail root holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPlan {
    /// The root on the host (`<sandbox-dir>/root`).
    pub root: PathBuf,
    /// Read-only binds, the VMM binary first.
    pub binds: Vec<Bind>,
    /// Device nodes made inside (absolute jail paths, same as the host node they copy).
    pub devices: Vec<PathBuf>,
    /// Host-side links: `<sandbox-dir>/<name>` -> the file inside the root.
    pub host_links: Vec<(PathBuf, PathBuf)>,
}

/// A plan that cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `ldd` reported a library it could not find.
    #[error("the VMM needs {0}, which ldd could not find")]
    LibraryNotFound(String),
    /// A path that must be absolute and plain (no `..`) is not.
    #[error("{0}: not an absolute, normal path")]
    BadPath(PathBuf),
}

/// What to put in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailContents {
    /// The VMM binary (host path).
    pub vmm: PathBuf,
    /// `ldd`'s output for it.
    pub ldd_output: String,
    /// Guest kernel (host path).
    pub kernel: PathBuf,
    /// The guest root file (initramfs or pmem image; host path), if any.
    pub guest_root: Option<PathBuf>,
    /// Whether the VMM opens taps by name (then it needs /dev/net/tun).
    pub needs_tun: bool,
}

/// The shared libraries in `ldd` output: the path after `=>`, or the first word when it is a
/// path (the ELF interpreter); the vDSO has no file and is skipped.
pub fn libraries_from_ldd(output: &str) -> Result<Vec<PathBuf>, PlanError> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") || line.contains("not a dynamic executable") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(PlanError::LibraryNotFound(name.trim().to_string()));
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            let path = PathBuf::from(path);
            if !is_plain_absolute(&path) {
                return Err(PlanError::BadPath(path));
            }
            if !libs.contains(&path) {
                libs.push(path);
            }
        }
    }
    Ok(libs)
}

/// Whether an ELF image (its first bytes: the header and program headers) asks for a program
/// interpreter (PT_INTERP), i.e. is dynamically linked. `None` if it is not a 64-bit
/// little-endian ELF or its program headers are not within `head`.
pub fn elf_has_interpreter(head: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(head.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// Absolute, and made only of normal components (no `.`, `..`).
pub fn is_plain_absolute(path: &Path) -> bool {
    let mut components = path.components();
    components.next() == Some(Component::RootDir)
        && components.all(|c| matches!(c, Component::Normal(_)))
        && path.components().count() > 1
}

impl JailPlan {
    /// The plan for a VMM jailed in `sandbox_dir/root`.
    pub fn new(sandbox_dir: &Path, contents: &JailContents) -> Result<JailPlan, PlanError> {
        let mut binds = vec![Bind {
            source: contents.vmm.clone(),
            target: VMM_IN_JAIL.into(),
        }];
        binds.extend(
            libraries_from_ldd(&contents.ldd_output)?
                .into_iter()
                .map(|lib| Bind {
                    source: lib.clone(),
                    target: lib,
                }),
        );
        binds.push(Bind {
            source: contents.kernel.clone(),
            target: KERNEL_IN_JAIL.into(),
        });
        if let Some(guest_root) = &contents.guest_root {
            binds.push(Bind {
                source: guest_root.clone(),
                target: GUEST_ROOT_IN_JAIL.into(),
            });
        }
        let mut devices: Vec<PathBuf> = BASE_DEVICES.iter().map(PathBuf::from).collect();
        if contents.needs_tun {
            devices.push(TUN_DEVICE.into());
        }
        let root = sandbox_dir.join(ROOT_DIR);
        let host_links = [
            ("vsock.sock", VSOCK_IN_JAIL),
            ("virtiofsd.sock", VIRTIOFSD_IN_JAIL),
            ("console.log", CONSOLE_IN_JAIL),
        ]
        .iter()
        .map(|(name, inside)| (sandbox_dir.join(name), host_path(&root, Path::new(inside))))
        .collect();
        Ok(JailPlan {
            root,
            binds,
            devices,
            host_links,
        })
    }

    /// Where the host sees `inside` (an absolute path in the jail).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        host_path(&self.root, inside)
    }

    /// Directories to create under the root (host paths), parents first: those holding the
    /// binds' targets and /dev (the tmpfs mount point).
    pub fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let targets = self.binds.iter().map(|b| b.target.as_path());
        for target in targets.chain([Path::new("/dev/null")]) {
            let mut ancestors: Vec<&Path> = target
                .ancestors()
                .skip(1)
                .filter(|a| *a != Path::new("/"))
                .collect();
            ancestors.reverse();
            for dir in ancestors {
                let host = self.host_path(dir);
                if !dirs.contains(&host) {
                    dirs.push(host);
                }
            }
        }
        dirs
    }
}

fn host_path(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}
