//! The agent's request handling before it acts: protobuf decoding of each request message it
//! serves, its `Validate`, and the JSON payloads (CreateContainer's OCI spec, ExecProcess's
//! process, UpdateContainer's resources) as the agent parses and checks them.
//!
//! Input: one selector byte, then the message bytes (selectors past the request list feed the
//! rest straight to the JSON checks, so the JSON grammar is reached without protobuf framing).
#![no_main]

use hull_agent::runtime::fuzzing::{check_oci_process, check_oci_resources, check_oci_spec};
use hull_agent::validate::Validate;
use hull_proto::agent::*;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;

/// Decodes `bytes` as `M` and validates it; the message when both succeed.
fn decode<M: Message + Validate>(bytes: &[u8]) -> Option<M> {
    let msg = M::parse_from_bytes(bytes).ok()?;
    msg.validate().ok()?;
    Some(msg)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 32 {
        0 => drop(decode::<HealthRequest>(rest)),
        1 => drop(decode::<VersionRequest>(rest)),
        2 => drop(decode::<GuestDetailsRequest>(rest)),
        3 => drop(decode::<CreateSandboxRequest>(rest)),
        4 => drop(decode::<DestroySandboxRequest>(rest)),
        5 => {
            // The agent parses the spec only after validation; the fuzzer checks it either way.
            if let Ok(req) = CreateContainerRequest::parse_from_bytes(rest) {
                let _ = req.validate();
                let _ = check_oci_spec(&req.oci_spec_json);
            }
        }
        6 => drop(decode::<StartContainerRequest>(rest)),
        7 => drop(decode::<RemoveContainerRequest>(rest)),
        8 => {
            if let Ok(req) = ExecProcessRequest::parse_from_bytes(rest) {
                let _ = req.validate();
                let _ = check_oci_process(&req.oci_process_json);
            }
        }
        9 => drop(decode::<StartExecRequest>(rest)),
        10 => drop(decode::<RemoveProcessRequest>(rest)),
        11 => drop(decode::<SignalProcessRequest>(rest)),
        12 => drop(decode::<WaitProcessRequest>(rest)),
        13 => drop(decode::<ListProcessesRequest>(rest)),
        14 => drop(decode::<StatsContainerRequest>(rest)),
        15 => drop(decode::<PauseContainerRequest>(rest)),
        16 => drop(decode::<ResumeContainerRequest>(rest)),
        17 => {
            if let Ok(req) = UpdateContainerRequest::parse_from_bytes(rest) {
                let _ = req.validate();
                let _ = check_oci_resources(&req.oci_resources_json);
            }
        }
        18 => drop(decode::<TtyWinResizeRequest>(rest)),
        19 => drop(decode::<CloseStdinRequest>(rest)),
        20 => drop(decode::<GetOOMEventRequest>(rest)),
        21 => drop(decode::<UpdateInterfaceRequest>(rest)),
        22 => drop(decode::<UpdateRoutesRequest>(rest)),
        23 => drop(decode::<ListInterfacesRequest>(rest)),
        24 => drop(decode::<ListTcpListenersRequest>(rest)),
        25 => drop(decode::<SetGuestDateTimeRequest>(rest)),
        26 => drop(decode::<PowerOffRequest>(rest)),
        27 | 28 => drop(check_oci_spec(rest)),
        29 => drop(check_oci_process(rest)),
        30 => drop(check_oci_resources(rest)),
        _ => {
            // A validated message re-encodes and decodes to itself.
            if let Some(req) = decode::<CreateSandboxRequest>(rest) {
                let bytes = req.write_to_bytes().expect("re-encoding a decoded message");
                assert_eq!(
                    CreateSandboxRequest::parse_from_bytes(&bytes).ok(),
                    Some(req)
                );
            }
        }
    }
});
