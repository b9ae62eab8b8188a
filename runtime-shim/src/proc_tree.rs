//! Processes seen through /proc: a process and everything below it, and what their memory
//! costs (PSS). Used by `hull ps` (a sandbox's processes) and `hull bench` (a pod's).

/// `pid` and every process below it (from /proc/<pid>/task/*/children), at most 4096.
pub fn with_descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 4096 {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", all[i])) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// The `Pss:` line of a smaps_rollup text, in KiB.
pub fn parse_pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// PSS of `pid` in KiB (0 if unreadable: gone, or not ours to read).
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| parse_pss_kib(&t))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_own_tree_and_has_a_pss() {
        let me = std::process::id();
        assert!(with_descendants(me).contains(&me));
        assert!(pss_kib(me) > 0);
        assert_eq!(parse_pss_kib("Rss: 1 kB\nPss:   1536 kB\n"), Some(1536));
        assert_eq!(parse_pss_kib("Rss: 1 kB\n"), None);
    }
}
