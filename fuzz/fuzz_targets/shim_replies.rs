//! The shim's handling of agent replies (the guest is hostile): each reply decoded with protobuf
//! as ttrpc hands it over, then the checks the shim applies (pids, ports, container ids, exit
//! records, API version, stats -> containerd metrics). Also containerd's runtime options, which
//! the shim parses by hand.
//!
//! Input: one selector byte, then the reply bytes.
#![no_main]

use hull_proto::agent::*;
use hull_runtime::agent_client::fuzzing;
use hull_runtime::convert::{config_path_from_options, metrics_any, metrics_from_agent};
use hull_runtime::exit::exit_record_from_agent;
use libfuzzer_sys::fuzz_target;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 10 {
        0 => {
            if let Ok(r) = StartContainerResponse::parse_from_bytes(rest) {
                if let Ok(pid) = fuzzing::start_container(&r) {
                    assert!((1..=4_194_304).contains(&pid));
                }
            }
        }
        1 => {
            if let Ok(r) = StartExecResponse::parse_from_bytes(rest) {
                if let Ok(pid) = fuzzing::start_exec(&r) {
                    assert!((1..=4_194_304).contains(&pid));
                }
            }
        }
        2 => {
            if let Ok(r) = WaitProcessResponse::parse_from_bytes(rest) {
                let rec = exit_record_from_agent(r.exit_status, r.exited_at.as_ref());
                assert!(rec.status <= 255);
                assert!(rec.exited_at.seconds > 0);
                assert!((0..1_000_000_000).contains(&rec.exited_at.nanos));
            }
        }
        3 => {
            if let Ok(r) = ListProcessesResponse::parse_from_bytes(rest) {
                let pids = fuzzing::list_processes(&r);
                assert!(pids.len() <= hull_runtime::agent_client::MAX_LISTED_PROCESSES);
            }
        }
        4 => {
            if let Ok(r) = ListTcpListenersResponse::parse_from_bytes(rest) {
                if let Ok(ports) = fuzzing::list_tcp_listeners(&r) {
                    assert!(ports.len() <= hull_runtime::agent_client::MAX_TCP_LISTENERS);
                    assert!(ports.windows(2).all(|w| w[0] < w[1]));
                    assert!(!ports.contains(&0));
                }
            }
        }
        5 => {
            if let Ok(r) = GetOOMEventResponse::parse_from_bytes(rest) {
                if let Ok(id) = fuzzing::get_oom_event(r) {
                    assert!(hull_proto::valid_id(&id));
                }
            }
        }
        6 => {
            if let Ok(r) = VersionResponse::parse_from_bytes(rest) {
                let _ = hull_proto::check_api_version(&r).map_err(|e| e.to_string());
            }
        }
        7 => {
            if let Ok(r) = StatsContainerResponse::parse_from_bytes(rest) {
                let metrics = metrics_from_agent(&r.stats.unwrap_or_default());
                let any = metrics_any(&metrics).expect("encoding metrics");
                assert_eq!(any.type_url, hull_runtime::convert::CGROUPS_V2_METRICS_URL);
            }
        }
        8 => {
            // CreateContainer / ExecProcess: the shim connects to the stdio ports it is given.
            if let Ok(r) = CreateContainerResponse::parse_from_bytes(rest) {
                let _ = r.stdio_ports.unwrap_or_default();
            }
            if let Ok(r) = ExecProcessResponse::parse_from_bytes(rest) {
                let _ = r.stdio_ports.unwrap_or_default();
            }
        }
        _ => {
            // containerd's runtime options (stdin of `start`), parsed field by field.
            let any = Any {
                type_url: "type.googleapis.com/runtimeoptions.v1.Options".to_string(),
                value: rest.to_vec(),
                ..Default::default()
            };
            if let Some(path) = config_path_from_options(&any) {
                assert!(!path.is_empty());
            }
        }
    }
});
