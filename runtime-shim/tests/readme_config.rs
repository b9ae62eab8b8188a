//! README.md's configuration reference lists every key of the config file with the default
//! that `hull install` writes (`hull_runtime::config::DEFAULT_CONFIG_TOML`), and nothing else.

use std::collections::BTreeMap;

use hull_runtime::config::DEFAULT_CONFIG_TOML;

/// `key` (or `table.key`) -> the value's text, from the `key = value` lines of the TOML text.
fn keys_and_defaults(toml_text: &str) -> BTreeMap<String, String> {
    let mut table = String::new();
    let mut found = BTreeMap::new();
    for line in toml_text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = format!("{name}.");
            continue;
        }
        let (key, value) = line.split_once(" = ").expect("a `key = value` line");
        found.insert(format!("{table}{key}"), value.to_string());
    }
    found
}

/// The rows of the README's configuration reference table: key -> default cell.
fn readme_rows(readme: &str) -> BTreeMap<String, String> {
    let section = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .expect("README.md has a `## Configuration reference` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (key, rest) = l.split_once("` | `")?;
            let (default, _) = rest.split_once("` |")?;
            Some((key.to_string(), default.to_string()))
        })
        .collect()
}

#[test]
fn readme_lists_every_config_key_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the workspace root");
    let expected = keys_and_defaults(DEFAULT_CONFIG_TOML);
    // The line scan agrees with a real TOML parser on which keys exist.
    let parsed: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    let parsed_count: usize = parsed
        .values()
        .map(|v| v.as_table().map_or(1, |t| t.len()))
        .sum();
    assert_eq!(expected.len(), parsed_count, "{expected:?}");

    let rows = readme_rows(&readme);
    assert_eq!(
        rows, expected,
        "README.md's configuration reference (left) must list every key of DEFAULT_CONFIG_TOML \
         (right) with the same default"
    );
}
