use super::stats::{percentile, ratio, Summary};

#[test]
fn summary_of_odd_and_even_counts() {
    let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
    assert_eq!(
        (s.n, s.median, s.min, s.max, s.p90),
        (3, 3.0, 1.0, 5.0, 5.0)
    );
    assert_eq!(s.samples, vec![5.0, 1.0, 3.0]);
    let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
    assert_eq!(s.median, 2.5);
}

#[test]
fn p90_is_nearest_rank() {
    let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 90.0), 9.0);
    assert_eq!(percentile(&sorted, 100.0), 10.0);
    assert_eq!(percentile(&[7.0], 90.0), 7.0);
}

#[test]
fn no_samples_or_nan_give_no_summary() {
    assert!(Summary::of(&[]).is_none());
    assert!(Summary::of(&[1.0, f64::NAN]).is_none());
}

#[test]
fn ratio_needs_a_positive_baseline() {
    assert_eq!(ratio(3.0, 1.5), Some(2.0));
    assert_eq!(ratio(1.0, 0.0), None);
    assert_eq!(ratio(f64::INFINITY, 1.0), None);
}

use super::stages::{self, Stage};

#[test]
fn stage_lines_round_trip_through_a_containerd_log() {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
    let line = stages::line(Stage::AgentReady, "c1", at);
    // As containerd's log holds it: the shim's logfmt line with the message quoted.
    let log = format!(
        "time=\"2026-12-03T13:00:00Z\" level=info msg=\"{line}\"\n\
         time=\"2026-12-03T13:00:00Z\" level=info msg=\"{}\"\n\
         time=\"2026-12-03T13:00:00Z\" level=info msg=\"{}\"\n",
        stages::line(Stage::AgentReady, "c2", at),
        stages::line(
            Stage::ExitSeen,
            "c1",
            at + std::time::Duration::from_millis(5)
        ),
    );
    let found = stages::parse(&log, "c1");
    assert_eq!(found.len(), 2);
    assert_eq!(found[&Stage::AgentReady], 1_700_000_000_123_456);
    assert_eq!(found[&Stage::ExitSeen], 1_700_000_000_128_456);
    assert!(stages::parse(&log, "c").is_empty());
}

#[test]
fn every_stage_name_parses_back() {
    for stage in Stage::ALL {
        assert_eq!(Stage::from_name(stage.name()), Some(stage));
    }
    assert_eq!(Stage::from_name("boot"), None);
}

#[test]
fn vmm_stages_come_from_the_vmm_log_lines() {
    let log = "2026-12-03T13:50:01.000100Z  INFO kernel loaded\n\
               2026-12-03T13:50:01.250000Z  INFO first guest exit: vmm_to_first_exit_us=1234\n\
               2026-12-03T13:50:01.260000Z  INFO microVM started: 1 vCPU(s), 256 MiB, 3 virtio \
               device(s), set-up took 900 us\n";
    let times = stages::vmm_times(log).unwrap();
    let exit = stages::parse_rfc3339_us("2026-12-03T13:50:01.25Z").unwrap();
    assert_eq!(times.exit_us, exit);
    assert_eq!(times.main_us, exit - 1234);
    assert_eq!(times.ready_us, Some(exit - 1234 + 900));
    let without_setup =
        stages::vmm_times(log.lines().take(2).collect::<Vec<_>>().join("\n").as_str());
    assert_eq!(without_setup.unwrap().ready_us, None);
    assert_eq!(
        stages::vmm_times(
            "2026-12-03T13:50:01.250000Z  INFO first guest exit: vmm_to_first_exit_us=x\n"
        ),
        None
    );
    // 2026-12-03T00:00:00Z is 1_796_256_000 s after the epoch.
    assert_eq!(
        stages::parse_rfc3339_us("2026-12-03T00:00:00Z"),
        Some(1_796_256_000_000_000)
    );
    assert_eq!(
        stages::parse_rfc3339_us("1970-01-01T00:00:01.5Z"),
        Some(1_500_000)
    );
    assert_eq!(stages::parse_rfc3339_us("2026-13-03T00:00:00Z"), None);
    assert_eq!(stages::vmm_times("no such line"), None);
}

use super::location::{locate, HostKind, HOST_AGENT_LABEL};
use crate::config::SandboxMode;

#[test]
fn a_host_agent_run_is_never_called_a_vm() {
    for host in [HostKind::Pvm, HostKind::RealKvm, HostKind::NoKvm] {
        for lab in [false, true] {
            let l = locate(SandboxMode::HostAgent, host, lab);
            assert!(!l.vm);
            assert_eq!(l.kind, "host-agent");
            assert!(l.label.starts_with(HOST_AGENT_LABEL), "{}", l.label);
        }
    }
    let l = locate(SandboxMode::Vm, HostKind::RealKvm, true);
    assert_eq!((l.kind.as_str(), l.vm), ("vm-nested-lab", true));
    assert!(!l.label.contains("host-agent"));
    assert_eq!(locate(SandboxMode::Vm, HostKind::Pvm, false).kind, "vm-pvm");
    assert_eq!(
        locate(SandboxMode::Vm, HostKind::RealKvm, false).kind,
        "vm-real-kvm"
    );
}

use super::pss::{component, is_shim_of, parse_pss_kib};

#[test]
fn shim_daemons_are_told_from_their_start_and_delete_calls() {
    let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    let daemon =
        args("/usr/bin/containerd-shim-runc-v2 -namespace ns1 -id c1 -address /run/c.sock");
    assert!(is_shim_of(&daemon, "ns1", "c1"));
    assert!(!is_shim_of(&daemon, "ns1", "c10"));
    assert!(!is_shim_of(&daemon, "ns2", "c1"));
    let start = args("containerd-shim-hull-v2 -namespace ns1 -address /a -id c1 start");
    assert!(!is_shim_of(&start, "ns1", "c1"));
    assert!(!is_shim_of(
        &args("sleep -namespace ns1 -id c1"),
        "ns1",
        "c1"
    ));
}

#[test]
fn pss_and_components() {
    let rollup = "00400000-7fff rw-p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1536 kB\n";
    assert_eq!(parse_pss_kib(rollup), Some(1536));
    assert_eq!(parse_pss_kib("Rss: 1 kB\n"), None);
    assert_eq!(component("containerd-shim\n"), "shim");
    assert_eq!(component("hull-vmm"), "hull-vmm");
    assert_eq!(component("virtiofsd"), "virtiofsd");
    assert_eq!(component("hull-agent"), "hull-agent");
    assert_eq!(component("sleep"), "container");
}

use super::groups::{parse_timed, timed_script};
use super::plots::pod_count;

#[test]
fn timed_scripts_print_a_figure_that_parses() {
    let script = timed_script("true");
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let ms = parse_timed("true", &String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!((0.0..1000.0).contains(&ms), "{ms}");
    assert!(parse_timed("x", "nothing").is_err());
    assert_eq!(pod_count("PSS per idle pod, 5 pod(s)"), Some(5.0));
}

#[test]
fn the_pool_group_counts_the_claims_the_daemon_logged() {
    use crate::bench::groups::pool::count_claims;
    let claimed = crate::pool::daemon::CLAIMED;
    let log = format!(
        "2026-12-04T21:00:00Z  INFO hull_runtime::pool::daemon: pool VM ready slot=pool-1-1\n\
         2026-12-04T21:00:01Z  INFO hull_runtime::pool::daemon: {claimed} slot=pool-1-1\n\
         2026-12-04T21:00:03Z  INFO hull_runtime::pool::daemon: {claimed} slot=pool-1-2\n"
    );
    assert_eq!(count_claims(&log), 2);
    assert_eq!(count_claims(""), 0);
}
