//! `hull bench`: the cost of isolation, hull against runc, measured through a real containerd.
//!
//! Both runtimes run in the same call, interleaved (hull, runc, hull, runc, ...) after warm-up
//! rounds, on an image already imported into containerd. Each group ([`groups`]) yields metrics
//! with hull's and runc's samples summarized (median, p90, min, max) and their ratio; the report
//! ([`report`]) prints one table per group, writes `bench.json` and draws SVG plots
//! ([`plots`]). Every table and the JSON say where the run happened ([`location`]): a run with
//! hull in host-agent mode is labelled "host-agent mode (no VM)", never a VM figure.
//!
//! - [`runner`]: `ctr` calls (timed, detached containers, execs, clean-up)
//! - [`stats`]: median / p90 / min / max
//! - [`stages`]: the stage lines the shim logs, and their parser
//! - [`pods`]: pods through CRI (the `pod` and `network` groups)
//! - [`netprobe`]: what the network group runs in a pod and measures from outside
//! - [`pss`]: PSS of a container's shim and everything below it
//! - [`progress`]: the progress line on stderr

pub mod groups;
pub mod guest_memory;
pub mod location;
pub mod netprobe;
pub mod plots;
pub mod pods;
pub mod progress;
pub mod pss;
pub mod report;
pub mod runner;
pub mod stages;
pub mod stats;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use location::Location;
use progress::Progress;
use runner::Ctr;
use stats::Summary;

/// Every group, in the order they run.
pub const ALL_GROUPS: [&str; 9] = [
    "start", "pod", "pool", "stages", "exec", "work", "memory", "noisy", "network",
];

/// `hull bench`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub address: PathBuf,
    /// containerd namespace the image is in and the containers run in.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// An image already imported into that namespace (busybox-like: sh, sleep, dd, true).
    #[arg(long)]
    pub image: String,
    /// Snapshotter for the containers (`ctr run --snapshotter`; the lab uses `native`).
    #[arg(long)]
    pub snapshotter: Option<String>,
    /// Measured repetitions per metric and runtime.
    #[arg(long, default_value_t = 10)]
    pub n: usize,
    /// Unmeasured rounds first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Groups to run, comma-separated (start,pod,pool,stages,exec,work,memory,noisy,network).
    #[arg(long, value_delimiter = ',', default_values_t = ALL_GROUPS.map(String::from))]
    pub groups: Vec<String>,
    /// Directory for bench.json and the SVG plots.
    #[arg(long, default_value = "hull-bench")]
    pub out: PathBuf,
    /// hull's runtime type.
    #[arg(long, default_value = "io.containerd.hull.v2")]
    pub hull_runtime: String,
    /// The baseline's runtime type.
    #[arg(long, default_value = "io.containerd.runc.v2")]
    pub runc_runtime: String,
    /// hull's configuration (its sandbox mode labels the run); default $HULL_CONFIG, then
    /// /etc/hull/config.toml.
    #[arg(long)]
    pub hull_config: Option<PathBuf>,
    /// containerd's log file: the stage breakdown reads the shim's stage lines there.
    #[arg(long)]
    pub containerd_log: Option<PathBuf>,
    /// Where this runs when the bench cannot see it: `lab` inside the nested lab (the lab also
    /// sets HULL_BENCH_WHERE=lab).
    #[arg(long = "where")]
    pub where_: Option<String>,
    /// Idle pod counts for the memory group.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 5, 10])]
    pub pods: Vec<usize>,
    /// Memory budget (MiB) for the density figure.
    #[arg(long, default_value_t = 4096)]
    pub budget_mib: u64,
    /// Seconds the idle pods of the memory group settle before they are measured. A VM pod's
    /// guest hands the memory it freed while booting back to the host a little later (free page
    /// reporting waits 2 s, then works in batches); in the lab 10 s measured the same as 2 s.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// The pool group's `hull pool run --refill-delay-ms` (0: the replacement VM boots while
    /// the start that took one goes on).
    #[arg(long, default_value_t = 0)]
    pub pool_refill_delay_ms: u64,
    /// Scales the work loops (0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seconds before one `ctr` call is killed.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// CRI's socket for the `pod` and `network` groups (default: --address; containerd serves
    /// CRI on its own socket). Those groups use images of namespace k8s.io.
    #[arg(long)]
    pub cri_address: Option<PathBuf>,
    /// hull's CRI runtime handler (a RuntimeClass's `handler`).
    #[arg(long, default_value = "hull")]
    pub hull_handler: String,
    /// The baseline's CRI runtime handler.
    #[arg(long, default_value = "runc")]
    pub runc_handler: String,
    /// The pods' cgroup parent (as kubelet gives it; cgroupfs driver).
    #[arg(long, default_value = "/hull-bench")]
    pub cgroup_parent: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// A bench that could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `ctr` call failed.
    #[error("{call}: {detail}")]
    Ctr {
        /// The call.
        call: String,
        /// What went wrong.
        detail: String,
    },
    /// A pod could not be started, reached or removed through CRI.
    #[error("pod: {detail}")]
    Pod {
        /// What went wrong.
        detail: String,
    },
    /// The pool group's `hull pool run` failed.
    #[error("pool: {detail}")]
    Pool {
        /// What went wrong.
        detail: String,
    },
    /// The arguments do not make sense.
    #[error("{0}")]
    Usage(String),
    /// hull's configuration could not be read.
    #[error("hull config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// A workload printed no figure.
    #[error("{what}: no figure in the output {output:?}")]
    NoFigure {
        /// The workload.
        what: String,
        /// What it printed.
        output: String,
    },
    /// Writing the results failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {detail}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// The error.
        detail: String,
    },
}

/// The two runtimes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rt {
    /// io.containerd.hull.v2.
    Hull,
    /// io.containerd.runc.v2.
    Runc,
}

impl Rt {
    /// Both, in the order each round runs them.
    pub const BOTH: [Rt; 2] = [Rt::Hull, Rt::Runc];

    /// Short name (ids, tables).
    pub fn short(self) -> &'static str {
        match self {
            Rt::Hull => "hull",
            Rt::Runc => "runc",
        }
    }
}

/// One measured figure of a group, hull against runc.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// What was measured.
    pub name: String,
    /// The unit of the samples (ms, MiB, pods, x).
    pub unit: String,
    /// hull's samples.
    pub hull: Option<Summary>,
    /// runc's samples.
    pub runc: Option<Summary>,
    /// hull's median / runc's median.
    pub ratio: Option<f64>,
    /// Anything the figure needs said with it.
    pub note: Option<String>,
}

impl Metric {
    /// A metric from both runtimes' samples.
    pub fn pair(name: &str, unit: &str, hull: &[f64], runc: &[f64]) -> Metric {
        let hull = Summary::of(hull);
        let runc = Summary::of(runc);
        let ratio = match (&hull, &runc) {
            (Some(h), Some(r)) => stats::ratio(h.median, r.median),
            _ => None,
        };
        Metric {
            name: name.into(),
            unit: unit.into(),
            hull,
            runc,
            ratio,
            note: None,
        }
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Metric {
        self.note = Some(note.into());
        self
    }
}

/// One group's results.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    /// The group's name (`start`, `memory`, ...).
    pub name: String,
    /// Its table's title.
    pub title: String,
    /// Where it ran (the location's label, repeated so a table never travels without it).
    #[serde(rename = "where")]
    pub where_: String,
    /// Its figures.
    pub metrics: Vec<Metric>,
    /// What the reader must know (how it was measured, what could not run).
    pub notes: Vec<String>,
    /// Set when the group did not run, with the reason.
    pub skipped: Option<String>,
    /// Plot files drawn for it (names in the output directory).
    pub plots: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "hull bench".
    pub tool: String,
    /// hull's version.
    pub version: String,
    /// Where it ran.
    #[serde(rename = "where")]
    pub location: Location,
    /// Runtime types compared: hull's, then the baseline's.
    pub runtimes: Vec<String>,
    /// The image.
    pub image: String,
    /// Measured repetitions.
    pub n: usize,
    /// Warm-up rounds.
    pub warmup: usize,
    /// Start of the run, seconds since the epoch.
    pub started_unix: u64,
    /// The groups.
    pub groups: Vec<GroupResult>,
}

/// What every group gets: the options, `ctr`, where it runs, the progress line.
pub struct Bench {
    /// The arguments.
    pub args: BenchArgs,
    /// containerd through `ctr`.
    pub ctr: Ctr,
    /// Where this runs.
    pub location: Location,
    /// hull's sandbox run directory (from its config): where the memory group finds each hull
    /// pod's agent socket.
    pub hull_run_dir: PathBuf,
    /// The progress line.
    pub progress: Progress,
}

impl Bench {
    /// The runtime type of `rt`.
    pub fn runtime(&self, rt: Rt) -> &str {
        match rt {
            Rt::Hull => &self.args.hull_runtime,
            Rt::Runc => &self.args.runc_runtime,
        }
    }

    /// Runs `measure` for warm-up + n rounds, hull then runc in each round, and returns the
    /// measured samples of each (warm-up dropped).
    pub fn interleaved(
        &mut self,
        group: &str,
        what: &str,
        mut measure: impl FnMut(&mut Bench, Rt) -> Result<f64, BenchError>,
    ) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
        let rounds = self.args.warmup + self.args.n;
        let (mut hull, mut runc) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for rt in Rt::BOTH {
                self.progress
                    .show(group, what, round * 2 + rt as usize, rounds * 2);
                let value = measure(self, rt)?;
                if round >= self.args.warmup {
                    match rt {
                        Rt::Hull => hull.push(value),
                        Rt::Runc => runc.push(value),
                    }
                }
            }
        }
        Ok((hull, runc))
    }

    /// A group result with this run's location.
    pub fn group(&self, name: &str, title: &str) -> GroupResult {
        GroupResult {
            name: name.into(),
            title: title.into(),
            where_: self.location.label.clone(),
            metrics: Vec::new(),
            notes: Vec::new(),
            skipped: None,
            plots: Vec::new(),
        }
    }
}

/// Runs the bench: checks the arguments and the image, runs the groups, prints the tables and
/// writes the JSON and the plots. Returns the report.
pub fn run(args: BenchArgs) -> Result<Report, BenchError> {
    if args.n == 0 {
        return Err(BenchError::Usage("--n must be at least 1".into()));
    }
    if let Some(bad) = args
        .groups
        .iter()
        .find(|g| !ALL_GROUPS.contains(&g.as_str()))
    {
        return Err(BenchError::Usage(format!(
            "unknown group {bad:?} (groups: {})",
            ALL_GROUPS.join(",")
        )));
    }
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        return Err(BenchError::Usage(
            "--scale must be a positive number".into(),
        ));
    }
    let config = Config::load(args.hull_config.as_deref())?;
    let location = location::detect(&config, args.where_.as_deref());
    let ctr = Ctr::new(
        args.address.clone(),
        args.namespace.clone(),
        args.snapshotter.clone(),
        Duration::from_secs(args.timeout),
    );
    if !ctr.has_image(&args.image)? {
        return Err(BenchError::Usage(format!(
            "image {} is not in namespace {} of {} (import it with `ctr -n {} image import`)",
            args.image,
            args.namespace,
            args.address.display(),
            args.namespace
        )));
    }
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Write {
        path: args.out.clone(),
        source,
    })?;
    let started_unix = stages::unix_us(std::time::SystemTime::now()) / 1_000_000;
    let mut bench = Bench {
        progress: Progress::new(args.quiet),
        args,
        ctr,
        location,
        hull_run_dir: config.sandbox.run_dir.clone(),
    };
    let mut results = Vec::new();
    for name in bench.args.groups.clone() {
        let result = groups::run(&mut bench, &name);
        bench.ctr.remove_all();
        let mut result = result?;
        plots::draw(&bench.args.out, &mut result)?;
        bench.progress.finish();
        print!("{}", report::table(&result));
        results.push(result);
    }
    bench.progress.finish();
    let report = Report {
        tool: "hull bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        location: bench.location.clone(),
        runtimes: vec![
            bench.args.hull_runtime.clone(),
            bench.args.runc_runtime.clone(),
        ],
        image: bench.args.image.clone(),
        n: bench.args.n,
        warmup: bench.args.warmup,
        started_unix,
        groups: results,
    };
    let json = bench.args.out.join("bench.json");
    report::write_json(&report, &json)?;
    println!("results: {} (plots beside it)", json.display());
    Ok(report)
}
