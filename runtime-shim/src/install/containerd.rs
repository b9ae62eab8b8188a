//! containerd's configuration as `hull install` and `hull check` see it: the main config, the
//! files its `imports` name, and whether the `hull` runtime is declared.
//!
//! containerd 1.6 merges an imported file by REPLACING each plugin's whole table with the
//! imported one (measured with `containerd config dump`): a drop-in declaring
//! `plugins."io.containerd.grpc.v1.cri"` drops every CRI setting of the main config, and even
//! containerd's default `runc` runtime. So a drop-in is only written when no other loaded file
//! has a CRI table, and it declares `runc` again beside `hull`.

use std::path::{Path, PathBuf};

/// The CRI plugin's table name in containerd's version 2 config.
pub const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// The hull shim's runtime type.
pub const RUNTIME_TYPE: &str = "io.containerd.hull.v2";
/// The CRI runtime handler name (RuntimeClass `handler`).
pub const HANDLER: &str = "hull";

/// The tables that declare the `hull` runtime handler, as they go into containerd's main
/// config (README.md shows them with `config_path` = `/etc/hull/config.toml`).
pub fn runtime_snippet(config_path: &Path) -> String {
    format!(
        r#"[plugins."{CRI_PLUGIN}".containerd.runtimes.{HANDLER}]
  runtime_type = "{RUNTIME_TYPE}"
  pod_annotations = []
  privileged_without_host_devices = true
[plugins."{CRI_PLUGIN}".containerd.runtimes.{HANDLER}.options]
  ConfigPath = "{}"
"#,
        config_path.display()
    )
}

/// The drop-in `hull install` writes into `conf.d/`: the hull runtime, and containerd's
/// default runc runtime (which the imported table would otherwise replace).
pub fn drop_in_text(config_path: &Path) -> String {
    format!(
        r#"# Written by `hull install`; `hull uninstall` removes it.
# containerd 1.6 replaces a plugin's whole table with an imported one, so containerd's default
# runc runtime is declared here again, next to hull.
version = 2

[plugins."{CRI_PLUGIN}".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{}"#,
        runtime_snippet(config_path)
    )
}

/// A minimal main config that imports `conf_d/*.toml` (written when there is none).
pub fn minimal_main_config(conf_d: &Path) -> String {
    format!(
        "# Written by `hull install` (there was no containerd config); `hull uninstall` removes it.\n\
         version = 2\nimports = [\"{}/*.toml\"]\n",
        conf_d.display()
    )
}

/// Whether `name` matches the shell pattern `pattern` (`*`, `?`, literal characters; a `[`
/// class is taken literally, as no file `hull install` writes has one in its name).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether the path pattern matches `path`, component by component (`*` does not cross `/`).
pub fn path_matches(pattern: &Path, path: &Path) -> bool {
    let p: Vec<_> = pattern.components().collect();
    let f: Vec<_> = path.components().collect();
    p.len() == f.len()
        && p.iter().zip(&f).all(|(a, b)| {
            glob_match(
                &a.as_os_str().to_string_lossy(),
                &b.as_os_str().to_string_lossy(),
            )
        })
}

/// One parsed config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its content, or why it could not be read or parsed.
    pub table: Result<toml::Table, String>,
}

impl ConfigFile {
    /// Parses `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> ConfigFile {
        ConfigFile {
            path: path.to_path_buf(),
            table: text.parse::<toml::Table>().map_err(|e| e.to_string()),
        }
    }

    /// The `imports` patterns, relative ones resolved against the file's directory.
    pub fn imports(&self) -> Vec<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        self.table
            .as_ref()
            .ok()
            .and_then(|t| t.get("imports"))
            .and_then(|v| v.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| dir.join(s))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The schema version (containerd 1.6 reads a file without one as version 1).
    pub fn version(&self) -> i64 {
        self.table
            .as_ref()
            .ok()
            .and_then(|t| t.get("version"))
            .and_then(|v| v.as_integer())
            .unwrap_or(1)
    }

    /// The CRI plugin's table, if this file has one.
    pub fn cri_table(&self) -> Option<&toml::Table> {
        self.table
            .as_ref()
            .ok()?
            .get("plugins")?
            .as_table()?
            .get(CRI_PLUGIN)?
            .as_table()
    }
}

/// The files an `imports` pattern names: the pattern itself if it has no wildcard, else the
/// entries of its directory whose names match (sorted, as containerd's glob is). Wildcards in
/// directory components are not expanded.
pub fn expand_import(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Reads the main config at `main` and every file it imports (recursively, each once), in
/// containerd's merge order. Empty if `main` does not exist.
pub fn load_configs(main: &Path) -> Vec<ConfigFile> {
    let mut files: Vec<ConfigFile> = Vec::new();
    let mut pending = vec![main.to_path_buf()];
    while !pending.is_empty() {
        let path = pending.remove(0);
        if files.iter().any(|f| f.path == path) {
            continue;
        }
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => ConfigFile::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == main => return files,
            Err(e) => ConfigFile {
                path: path.clone(),
                table: Err(e.to_string()),
            },
        };
        for pattern in file.imports() {
            pending.extend(expand_import(&pattern));
        }
        files.push(file);
    }
    files
}

/// Where and how the hull runtime is declared in the effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HullRuntime {
    /// The file whose CRI table is in effect.
    pub file: PathBuf,
    /// Its `ConfigPath` option, if any.
    pub config_path: Option<String>,
}

/// The `hull` runtime handler of the CRI table in effect: containerd 1.6 uses the CRI table of
/// the LAST loaded file that has one (an imported table replaces the earlier one whole).
pub fn hull_runtime(files: &[ConfigFile]) -> Option<HullRuntime> {
    let (file, cri) = files
        .iter()
        .rev()
        .find_map(|f| f.cri_table().map(|t| (f, t)))?;
    let runtime = cri
        .get("containerd")?
        .get("runtimes")?
        .get(HANDLER)?
        .as_table()?;
    if runtime.get("runtime_type").and_then(|v| v.as_str()) != Some(RUNTIME_TYPE) {
        return None;
    }
    Some(HullRuntime {
        file: file.path.clone(),
        config_path: runtime
            .get("options")
            .and_then(|o| o.get("ConfigPath"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}

/// What `hull install` does about containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerdPlan {
    /// No main config: write a minimal one importing `conf.d/*.toml`, and the drop-in.
    WriteMainAndDropIn,
    /// The main config imports the drop-in's path: write the drop-in only.
    WriteDropIn,
    /// Change nothing; print the snippet to add by hand, and why.
    PrintSnippet(String),
}

/// Decides what to do given the loaded configs (`files[0]` is the main one; empty when there is
/// none) and the drop-in's path.
pub fn plan(files: &[ConfigFile], drop_in: &Path) -> ContainerdPlan {
    let Some(main) = files.first() else {
        return ContainerdPlan::WriteMainAndDropIn;
    };
    let main_name = main.path.display();
    if let Err(e) = &main.table {
        return ContainerdPlan::PrintSnippet(format!("{main_name} cannot be parsed: {e}"));
    }
    if main.version() != 2 {
        return ContainerdPlan::PrintSnippet(format!(
            "{main_name} is config version {} (Hull's snippet is for version 2, containerd 1.6/1.7)",
            main.version()
        ));
    }
    if !main.imports().iter().any(|p| path_matches(p, drop_in)) {
        return ContainerdPlan::PrintSnippet(format!(
            "{main_name} has no `imports` covering {}",
            drop_in.display()
        ));
    }
    if drop_in.exists() {
        return ContainerdPlan::PrintSnippet(format!(
            "{} already exists and is not Hull's",
            drop_in.display()
        ));
    }
    if let Some(other) = files.iter().find(|f| f.cri_table().is_some()) {
        return ContainerdPlan::PrintSnippet(format!(
            "{} has a [plugins.\"{CRI_PLUGIN}\"] table: containerd 1.6 would replace it whole \
             with a drop-in's, losing those settings",
            other.path.display()
        ));
    }
    ContainerdPlan::WriteDropIn
}
