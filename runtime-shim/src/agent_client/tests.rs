use super::*;

fn status(code: Code, message: &str) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, message.to_string()))
}

#[test]
fn agent_status_codes_pass_through_named_by_call() {
    let e = AgentError {
        call: "StartContainer",
        source: status(Code::FAILED_PRECONDITION, "stdio not connected"),
    };
    assert_eq!(e.code(), Some(Code::FAILED_PRECONDITION));
    match TtrpcError::from(e) {
        TtrpcError::RpcStatus(s) => {
            assert_eq!(s.code(), Code::FAILED_PRECONDITION);
            assert_eq!(s.message, "agent StartContainer: stdio not connected");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn transport_errors_become_unavailable() {
    let e = AgentError {
        call: "WaitProcess",
        source: TtrpcError::RemoteClosed,
    };
    assert_eq!(e.code(), None);
    match e.to_status() {
        TtrpcError::RpcStatus(s) => {
            assert_eq!(s.code(), Code::UNAVAILABLE);
            assert!(s.message.contains("WaitProcess"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_replies_are_refused() {
    assert_eq!(check_guest_pid("StartContainer", 42).unwrap(), 42);
    for bad in [0, 4_194_305, u32::MAX] {
        let e = check_guest_pid("StartContainer", bad).unwrap_err();
        assert_eq!(e.code(), Some(Code::INTERNAL));
        assert!(e.to_string().contains("bad reply"), "{e}");
    }
    assert_eq!(truncated(&"x".repeat(1000)).len(), 64);
}
