//! The stages of one hull container start, as the shim logs them, and the parser `hull bench`
//! reads them back with.
//!
//! The shim logs one line per stage into its log (containerd's log, through the bundle's log
//! FIFO): `hull-stage stage=<name> id=<sandbox or container id> unix_us=<wall clock, µs>`.
//! "kernel entry" is the time stamp of the line hull-vmm already logs at the guest's first exit
//! (`vmm_to_first_exit_us=N`), "vmm main" that time stamp less N: when hull-vmm's `main`
//! began, i.e. the jail was entered and the binary executed; "vmm ready" adds the set-up time
//! hull-vmm logs once its vCPUs run (`set-up took N us`). The bench adds what only the client sees: `ctr` started, first output, `ctr`
//! returned.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The marker every stage line carries.
pub const MARK: &str = "hull-stage";

/// A stage of a hull container's life, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The bench started `ctr run` (client side).
    CtrStarted,
    /// The shim daemon serves its task API.
    ShimStart,
    /// The shim claimed a pre-booted VM from the pool (VM mode with `hull pool run`).
    PoolClaimed,
    /// hull-vmm was spawned (VM mode), beside virtiofsd.
    VmmSpawn,
    /// hull-vmm's `main` began: the jail is set up and the binary executed (VM mode; from
    /// hull-vmm's log).
    VmmMain,
    /// hull-vmm's set-up is done (KVM, guest RAM, the kernel loaded, devices) and its vCPUs run
    /// (VM mode; from hull-vmm's log).
    VmmReady,
    /// virtiofsd's socket is there and handed to the VMM (VM mode).
    VirtiofsdReady,
    /// The guest's first exit to the VMM (VM mode; from hull-vmm's log).
    KernelEntry,
    /// The agent answered Version (guest agent, or the host agent).
    AgentReady,
    /// The agent set the sandbox up (CreateSandbox, then the guest's network where the pod has
    /// one).
    SandboxReady,
    /// CreateContainer done (the task's Create answered).
    CreateContainer,
    /// StartContainer done (the task's Start answered).
    StartContainer,
    /// The container's first output reached `ctr` (client side).
    FirstOutput,
    /// The shim saw the container's init exit.
    ExitSeen,
    /// The sandbox is torn down (processes stopped, directory removed).
    TeardownDone,
    /// `ctr run --rm` returned (client side).
    CtrReturned,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 16] = [
        Stage::CtrStarted,
        Stage::ShimStart,
        Stage::PoolClaimed,
        Stage::VmmSpawn,
        Stage::VmmMain,
        Stage::VmmReady,
        Stage::VirtiofsdReady,
        Stage::KernelEntry,
        Stage::AgentReady,
        Stage::SandboxReady,
        Stage::CreateContainer,
        Stage::StartContainer,
        Stage::FirstOutput,
        Stage::ExitSeen,
        Stage::TeardownDone,
        Stage::CtrReturned,
    ];

    /// The name in log lines and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::CtrStarted => "ctr-started",
            Stage::ShimStart => "shim-start",
            Stage::PoolClaimed => "pool-claimed",
            Stage::VirtiofsdReady => "virtiofsd-ready",
            Stage::VmmSpawn => "vmm-spawn",
            Stage::VmmMain => "vmm-main",
            Stage::VmmReady => "vmm-ready",
            Stage::KernelEntry => "kernel-entry",
            Stage::AgentReady => "agent-ready",
            Stage::SandboxReady => "sandbox-ready",
            Stage::CreateContainer => "create-container",
            Stage::StartContainer => "start-container",
            Stage::FirstOutput => "first-output",
            Stage::ExitSeen => "exit-seen",
            Stage::TeardownDone => "teardown-done",
            Stage::CtrReturned => "ctr-returned",
        }
    }

    /// The stage called `name`.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether only a VM has this stage (none in host-agent mode).
    pub fn vm_only(self) -> bool {
        matches!(
            self,
            Stage::PoolClaimed
                | Stage::VirtiofsdReady
                | Stage::VmmSpawn
                | Stage::VmmMain
                | Stage::VmmReady
                | Stage::KernelEntry
        )
    }
}

/// Microseconds since the Unix epoch of `t`.
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The stage line for `stage` of `id` at `at`.
pub fn line(stage: Stage, id: &str, at: SystemTime) -> String {
    format!(
        "{MARK} stage={} id={id} unix_us={}",
        stage.name(),
        unix_us(at)
    )
}

/// Logs `stage` of `id` now (info level: the shim's log, i.e. containerd's).
pub fn mark(stage: Stage, id: &str) {
    mark_at(stage, id, SystemTime::now());
}

/// Logs `stage` of `id` at `at`.
pub fn mark_at(stage: Stage, id: &str, at: SystemTime) {
    tracing::info!("{}", line(stage, id, at));
}

/// Logs "vmm main", "vmm ready" and "kernel entry" from hull-vmm's log; nothing when the VMM
/// has not logged its first guest exit.
pub fn mark_vmm_stages(id: &str, vmm_log: &Path) {
    let text = std::fs::read_to_string(vmm_log).unwrap_or_default();
    if let Some(times) = vmm_times(&text) {
        let at = |us| UNIX_EPOCH + Duration::from_micros(us);
        mark_at(Stage::VmmMain, id, at(times.main_us));
        if let Some(ready_us) = times.ready_us {
            mark_at(Stage::VmmReady, id, at(ready_us));
        }
        mark_at(Stage::KernelEntry, id, at(times.exit_us));
    }
}

/// hull-vmm's milestones from its log, in wall-clock µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmTimes {
    /// When hull-vmm's `main` began: the time stamp of its line `first guest exit:
    /// vmm_to_first_exit_us=N` less N.
    pub main_us: u64,
    /// When its set-up was done: `main_us` plus the N of its line `microVM started: ...
    /// set-up took N us` (`None` without that line).
    pub ready_us: Option<u64>,
    /// The first-exit line's time stamp: the guest's first exit.
    pub exit_us: u64,
}

/// The number after `key` in the first line of `log` that has it, and that line.
fn logged_number<'a>(log: &'a str, key: &str) -> Option<(u64, &'a str)> {
    let line = log.lines().find(|l| l.contains(key))?;
    let number = line
        .split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((number, line))
}

/// hull-vmm's milestones in its log.
pub fn vmm_times(vmm_log: &str) -> Option<VmmTimes> {
    let (since_main, line) = logged_number(vmm_log, "vmm_to_first_exit_us=")?;
    let exit_us = parse_rfc3339_us(line.split_whitespace().next()?)?;
    let main_us = exit_us.checked_sub(since_main)?;
    let ready_us = logged_number(vmm_log, "set-up took ").map(|(setup, _)| main_us + setup);
    Some(VmmTimes {
        main_us,
        ready_us,
        exit_us,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, as tracing's default timer writes it) in µs since
/// the epoch.
pub fn parse_rfc3339_us(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let micros: String = fraction.chars().chain("000000".chars()).take(6).collect();
    let micros: i64 = micros.parse().ok()?;
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The stage times (µs since the epoch) of `id` found in `log` (containerd's log, or any text
/// holding stage lines); the first line of each stage counts.
pub fn parse(log: &str, id: &str) -> BTreeMap<Stage, u64> {
    let mut found = BTreeMap::new();
    for l in log.lines().filter(|l| l.contains(MARK)) {
        let Some(rest) = l.split(MARK).nth(1) else {
            continue;
        };
        let field = |key: &str| {
            rest.split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        if field("id=").as_deref() != Some(id) {
            continue;
        }
        let stage = field("stage=").and_then(|s| Stage::from_name(&s));
        let at = field("unix_us=").and_then(|s| s.parse::<u64>().ok());
        if let (Some(stage), Some(at)) = (stage, at) {
            found.entry(stage).or_insert(at);
        }
    }
    found
}

/// The length of the log at `path` now (0 if unreadable): where the next run's lines start.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of `path` from byte `offset` on (empty if unreadable; at most 64 MiB).
pub fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(std::io::SeekFrom::Start(offset));
        let _ = file.take(64 << 20).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}
