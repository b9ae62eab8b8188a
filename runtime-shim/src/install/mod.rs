//! `hull install` / `hull uninstall`: put the binaries, the guest image, the config and the
//! containerd drop-in in place (recording exactly what was created), and take them away again.
//!
//! Layout under the prefix (`/` by default): `usr/local/bin/{containerd-shim-hull-v2,hull-vmm,
//! hull}`, `usr/share/hull/{vmlinux,rootfs.img,initramfs.cpio,install-manifest}`, `etc/hull/config.toml`,
//! `etc/containerd/conf.d/hull.toml` (and `etc/containerd/config.toml` when there was none).
//! The paths written into the files name the prefix, so an installation under a prefix is
//! complete on its own. Nothing is restarted.

pub mod containerd;
pub mod manifest;

use std::path::{Path, PathBuf};

use containerd::ContainerdPlan;
use manifest::Entry;

/// The binaries installed into `usr/local/bin`.
pub const BINARIES: [&str; 3] = ["containerd-shim-hull-v2", "hull-vmm", "hull"];
/// The guest image files installed into `usr/share/hull`.
pub const GUEST_FILES: [&str; 3] = ["vmlinux", "rootfs.img", "initramfs.cpio"];

/// The RuntimeClass to apply (README.md's Kubernetes section shows the same text; a unit test
/// checks it).
pub const RUNTIME_CLASS_YAML: &str = r#"apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: hull
handler: hull
overhead:
  podFixed:
    memory: "160Mi"
    cpu: "250m"
"#;

/// Where things go under a prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The prefix (`/` for a real installation).
    pub prefix: PathBuf,
}

impl Layout {
    /// The layout under `prefix`.
    pub fn new(prefix: &Path) -> Layout {
        Layout {
            prefix: prefix.to_path_buf(),
        }
    }
    /// `<prefix>/usr/local/bin`.
    pub fn bin_dir(&self) -> PathBuf {
        self.prefix.join("usr/local/bin")
    }
    /// `<prefix>/usr/share/hull`.
    pub fn share_dir(&self) -> PathBuf {
        self.prefix.join("usr/share/hull")
    }
    /// `<prefix>/etc/hull/config.toml`.
    pub fn config(&self) -> PathBuf {
        self.prefix.join("etc/hull/config.toml")
    }
    /// `<prefix>/etc/containerd/config.toml`.
    pub fn containerd_main(&self) -> PathBuf {
        self.prefix.join("etc/containerd/config.toml")
    }
    /// `<prefix>/etc/containerd/conf.d`.
    pub fn conf_d(&self) -> PathBuf {
        self.prefix.join("etc/containerd/conf.d")
    }
    /// `<prefix>/etc/containerd/conf.d/hull.toml`.
    pub fn drop_in(&self) -> PathBuf {
        self.conf_d().join("hull.toml")
    }
    /// `<prefix>/usr/share/hull/install-manifest`.
    pub fn manifest(&self) -> PathBuf {
        self.share_dir().join("install-manifest")
    }
}

/// What `hull install` takes.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where to install (`/`).
    pub prefix: PathBuf,
    /// The directory holding `vmlinux`, `rootfs.img` and `initramfs.cpio` (`build/guest`).
    pub guest_dir: PathBuf,
    /// The directory holding the three binaries (the running `hull`'s directory).
    pub bin_dir: PathBuf,
    /// A config file to install instead of the commented defaults.
    pub config_from: Option<PathBuf>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something to install is missing.
    #[error("{0}")]
    Missing(String),
    /// Install would overwrite files it did not create.
    #[error("{0}")]
    Conflict(String),
    /// The manifest is unreadable or damaged.
    #[error("manifest {}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The config to install does not parse.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What install did, for the operator.
#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    /// Everything created, in order.
    pub created: Vec<Entry>,
    /// Notes: kept files, why containerd was not changed, ...
    pub notes: Vec<String>,
    /// The tables to add to containerd's config by hand, when install did not.
    pub snippet: Option<String>,
}

/// Records what is created so that a failure half-way can undo it.
struct Creator {
    created: Vec<Entry>,
}

impl Creator {
    fn mkdirs(&mut self, dir: &Path) -> Result<(), InstallError> {
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.exists() {
            missing.push(d.to_path_buf());
            d = match d.parent() {
                Some(p) => p,
                None => break,
            };
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).map_err(io("creating", &d))?;
            self.created.push(Entry::Dir(d));
        }
        Ok(())
    }

    fn write(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mkdirs(path.parent().unwrap_or(Path::new("/")))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io("creating", path))?;
        self.created.push(Entry::File {
            path: path.to_path_buf(),
            sha256: String::new(),
        });
        file.write_all(data).map_err(io("writing", path))?;
        file.sync_all().map_err(io("writing", path))?;
        // The umask may have narrowed the mode.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io("chmod", path))?;
        let sha256 = manifest::sha256_file(path).map_err(io("reading", path))?;
        if let Some(Entry::File { sha256: s, .. }) = self.created.last_mut() {
            *s = sha256;
        }
        Ok(())
    }

    fn copy(&mut self, from: &Path, to: &Path, mode: u32) -> Result<(), InstallError> {
        let data = std::fs::read(from).map_err(io("reading", from))?;
        self.write(to, &data, mode)
    }

    /// Removes everything created so far (newest first).
    fn undo(&mut self) {
        for entry in self.created.drain(..).rev() {
            match entry {
                Entry::File { path, .. } => {
                    let _ = std::fs::remove_file(path);
                }
                Entry::Dir(path) => {
                    let _ = std::fs::remove_dir(path);
                }
            }
        }
    }
}

/// Installs Hull under `opts.prefix` (see the module docs). On failure nothing is left behind.
pub fn install(opts: &InstallOptions) -> Result<InstallReport, InstallError> {
    let layout = Layout::new(&opts.prefix);
    if opts.prefix.to_string_lossy().contains('\n') {
        return Err(InstallError::Missing(
            "the prefix has a newline in it".into(),
        ));
    }
    let sources: Vec<(PathBuf, PathBuf, u32)> = BINARIES
        .iter()
        .map(|b| (opts.bin_dir.join(b), layout.bin_dir().join(b), 0o755))
        .chain(
            GUEST_FILES
                .iter()
                .map(|g| (opts.guest_dir.join(g), layout.share_dir().join(g), 0o644)),
        )
        .collect();
    let missing: Vec<String> = sources
        .iter()
        .filter(|(from, _, _)| !from.is_file())
        .map(|(from, _, _)| from.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(InstallError::Missing(format!(
            "not found: {} (build with `make static-bins guest`, or use --from / --bin-dir)",
            missing.join(", ")
        )));
    }
    if layout.manifest().exists() {
        return Err(InstallError::Conflict(format!(
            "Hull is already installed here ({} exists): run `hull uninstall` first",
            layout.manifest().display()
        )));
    }
    let taken: Vec<String> = sources
        .iter()
        .map(|(_, to, _)| to)
        .filter(|to| to.symlink_metadata().is_ok())
        .map(|to| to.display().to_string())
        .collect();
    if !taken.is_empty() {
        return Err(InstallError::Conflict(format!(
            "these files exist and were not installed by `hull install`: {} (remove them first)",
            taken.join(", ")
        )));
    }
    let config_text = match &opts.config_from {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
            crate::config::Config::parse(&text, path)?;
            text
        }
        None => crate::config::config_file_text(&opts.prefix),
    };
    let mut creator = Creator {
        created: Vec::new(),
    };
    let mut report = InstallReport::default();
    match install_steps(&layout, &sources, &config_text, &mut creator, &mut report) {
        Ok(()) => {
            report.created = creator.created;
            Ok(report)
        }
        Err(e) => {
            creator.undo();
            Err(e)
        }
    }
}

fn install_steps(
    layout: &Layout,
    sources: &[(PathBuf, PathBuf, u32)],
    config_text: &str,
    creator: &mut Creator,
    report: &mut InstallReport,
) -> Result<(), InstallError> {
    for (from, to, mode) in sources {
        creator.copy(from, to, *mode)?;
    }
    let config = layout.config();
    if config.symlink_metadata().is_ok() {
        report.notes.push(format!(
            "kept the existing {} (not overwritten; the commented defaults are in `hull install`'s \
             source, runtime-shim/src/config.rs)",
            config.display()
        ));
    } else {
        creator.write(&config, config_text.as_bytes(), 0o644)?;
    }
    let files = containerd::load_configs(&layout.containerd_main());
    let drop_in = containerd::drop_in_text(&config);
    match containerd::plan(&files, &layout.drop_in()) {
        ContainerdPlan::WriteMainAndDropIn => {
            creator.write(
                &layout.containerd_main(),
                containerd::minimal_main_config(&layout.conf_d()).as_bytes(),
                0o644,
            )?;
            creator.write(&layout.drop_in(), drop_in.as_bytes(), 0o644)?;
        }
        ContainerdPlan::WriteDropIn => {
            creator.write(&layout.drop_in(), drop_in.as_bytes(), 0o644)?;
        }
        ContainerdPlan::PrintSnippet(reason) => {
            report.notes.push(format!(
                "containerd's config was not changed: {reason}. Add the runtime yourself (below)"
            ));
            report.snippet = Some(containerd::runtime_snippet(&config));
        }
    }
    let manifest_path = layout.manifest();
    // Everything but the manifest itself, which uninstall removes after the others.
    let text = manifest::render(&creator.created);
    creator.write(&manifest_path, text.as_bytes(), 0o644)?;
    Ok(())
}

/// What uninstall did.
#[derive(Debug, Clone, Default)]
pub struct UninstallReport {
    /// Removed files and directories.
    pub removed: Vec<PathBuf>,
    /// Files kept because they changed since install.
    pub kept: Vec<PathBuf>,
    /// Directories kept because they are not empty.
    pub kept_dirs: Vec<PathBuf>,
}

/// Removes what the manifest under `prefix` lists: unchanged files, then the directories install
/// created if they are empty, then the manifest.
pub fn uninstall(prefix: &Path) -> Result<UninstallReport, InstallError> {
    let path = Layout::new(prefix).manifest();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::Missing(format!(
                "{} not found: nothing was installed here by `hull install`",
                path.display()
            ))
        } else {
            io("reading", &path)(e)
        }
    })?;
    let entries = manifest::parse(&text).map_err(|message| InstallError::Manifest {
        path: path.clone(),
        message,
    })?;
    let mut report = UninstallReport::default();
    for entry in &entries {
        if let Entry::File { path, sha256 } = entry {
            match manifest::sha256_file(path) {
                Ok(now) if &now == sha256 => {
                    std::fs::remove_file(path).map_err(io("removing", path))?;
                    report.removed.push(path.clone());
                }
                Ok(_) => report.kept.push(path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("reading", path)(e)),
            }
        }
    }
    std::fs::remove_file(&path).map_err(io("removing", &path))?;
    report.removed.push(path.clone());
    for entry in entries.iter().rev() {
        if let Entry::Dir(dir) = entry {
            match std::fs::remove_dir(dir) {
                Ok(()) => report.removed.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => report.kept_dirs.push(dir.clone()),
            }
        }
    }
    Ok(report)
}

impl InstallReport {
    /// What to tell the operator.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for entry in &self.created {
            if let Entry::File { path, .. } = entry {
                out.push_str(&format!("installed {}\n", path.display()));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        if let Some(snippet) = &self.snippet {
            out.push_str(&format!(
                "\n# Add to containerd's config (version 2), then restart containerd:\n{snippet}"
            ));
        } else {
            out.push_str(
                "\ncontainerd: restart it to load the `hull` runtime (nothing was restarted)\n",
            );
        }
        out.push_str(&format!(
            "\n# Kubernetes: apply this RuntimeClass; pods opt in with runtimeClassName: hull\n{RUNTIME_CLASS_YAML}"
        ));
        out.push_str("\nCheck the host with `hull check`.\n");
        out
    }
}

impl UninstallReport {
    /// What to tell the operator.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for path in &self.removed {
            out.push_str(&format!("removed {}\n", path.display()));
        }
        for path in &self.kept {
            out.push_str(&format!(
                "kept {} (changed since install; remove it yourself if unwanted)\n",
                path.display()
            ));
        }
        for path in &self.kept_dirs {
            out.push_str(&format!("kept {} (not empty)\n", path.display()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
