//! The report: one text table per group (hull and runc side by side, with their ratio) and the
//! JSON file.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::Summary;
use super::{BenchError, GroupResult, Report};

/// The table of one group.
pub fn table(group: &GroupResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== {}: {}\n   where: {}",
        group.name, group.title, group.where_
    );
    if let Some(reason) = &group.skipped {
        let _ = writeln!(out, "   skipped: {reason}");
        return out;
    }
    let width = group
        .metrics
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:<width$} {:>6} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9} | {:>9}",
        "metric",
        "unit",
        "hull med",
        "p90",
        "min",
        "max",
        "runc med",
        "p90",
        "min",
        "max",
        "hull/runc",
    );
    for m in &group.metrics {
        let ratio = m.ratio.map_or("-".into(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "{:<width$} {:>6} | {} | {} | {:>9}",
            m.name,
            m.unit,
            cells(m.hull.as_ref()),
            cells(m.runc.as_ref()),
            ratio
        );
        if let Some(note) = &m.note {
            let _ = writeln!(out, "{:<width$}   ({note})", "");
        }
    }
    for note in &group.notes {
        let _ = writeln!(out, "   note: {note}");
    }
    for plot in &group.plots {
        let _ = writeln!(out, "   plot: {plot}");
    }
    out
}

fn cells(s: Option<&Summary>) -> String {
    match s {
        Some(s) => format!(
            "{:>9} {:>9} {:>9} {:>9}",
            num(s.median),
            num(s.p90),
            num(s.min),
            num(s.max)
        ),
        None => format!("{:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-"),
    }
}

/// A figure with three significant-ish digits.
pub fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Writes the report as pretty JSON to `path`.
pub fn write_json(report: &Report, path: &Path) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(report).map_err(|e| BenchError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text + "\n").map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}
