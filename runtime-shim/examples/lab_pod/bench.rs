//! Figures of the pod step (never judged): pod start and the network, hull vs runc.

use std::collections::BTreeMap;

use crate::l1::wait_clean;
use crate::{sleep_command, Run};

/// Pod start (RunPodSandbox + CreateContainer + StartContainer of one container), hull vs
/// runc, interleaved, `n` each. Figures only.
pub fn bench(run: &mut Run, n: usize) {
    let mut figures: BTreeMap<&str, Vec<[u128; 3]>> = BTreeMap::new();
    let mut errors = Vec::new();
    for i in 0..n {
        for handler in ["hull", "runc"] {
            let cfg = run.pod_config(&format!("bench-{handler}-{i}"));
            match run.start_pod(&cfg, handler, &[("c", sleep_command())]) {
                Ok((pod, _, t)) => {
                    figures.entry(handler).or_default().push(t);
                    if let Err(e) = run.stop_remove(&pod) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for handler in ["hull", "runc"] {
        let f = figures.get(handler).cloned().unwrap_or_default();
        let list = |k: Option<usize>| {
            f.iter()
                .map(|t| match k {
                    Some(k) => t[k].to_string(),
                    None => t.iter().sum::<u128>().to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        run.line(
            "LAB-POD-BENCH",
            &format!(
                "runtime={handler} total_ms=\"{}\" run_ms=\"{}\" create_ms=\"{}\" start_ms=\"{}\"",
                list(None),
                list(Some(0)),
                list(Some(1)),
                list(Some(2))
            ),
        );
    }
    // The figures are never judged; a pod that would not start is.
    run.check(
        "bench-pods",
        if errors.is_empty() {
            Ok(format!("{n} pods each with hull and runc"))
        } else {
            Err(errors.join("; "))
        },
    );
    let left = wait_clean(&run.args);
    run.check(
        "nothing-left-after-bench",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, pod cgroup, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}
