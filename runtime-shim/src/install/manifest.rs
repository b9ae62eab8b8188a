//! The install manifest: every file `hull install` created (with its SHA-256) and every
//! directory it created, in creation order; `hull uninstall` undoes exactly that.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The first line of a manifest.
const HEADER: &str =
    "# hull install manifest: what `hull install` created; `hull uninstall` removes it";

/// One thing install created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory that did not exist before.
    Dir(PathBuf),
    /// A file, with the SHA-256 (hex) of what was written.
    File {
        /// Where.
        path: PathBuf,
        /// Lower-case hex SHA-256.
        sha256: String,
    },
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The manifest's text.
pub fn render(entries: &[Entry]) -> String {
    let mut text = format!("{HEADER}\n");
    for entry in entries {
        match entry {
            Entry::Dir(path) => text.push_str(&format!("dir {}\n", path.display())),
            Entry::File { path, sha256 } => {
                text.push_str(&format!("file {sha256} {}\n", path.display()))
            }
        }
    }
    text
}

/// Parses a manifest; `Err` names the first line that is not an entry.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || format!("line {}: {line:?}", n + 1);
        let entry = if let Some(path) = line.strip_prefix("dir ") {
            Entry::Dir(PathBuf::from(path))
        } else if let Some(rest) = line.strip_prefix("file ") {
            let (sha256, path) = rest.split_once(' ').ok_or_else(bad)?;
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            Entry::File {
                path: PathBuf::from(path),
                sha256: sha256.to_string(),
            }
        } else {
            return Err(bad());
        };
        let path = match &entry {
            Entry::Dir(p) | Entry::File { path: p, .. } => p,
        };
        if !path.is_absolute() {
            return Err(bad());
        }
        entries.push(entry);
    }
    Ok(entries)
}
