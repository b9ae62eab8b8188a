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

#[test]
fn listener_ports_are_checked_sorted_and_deduplicated() {
    assert_eq!(
        check_listener_ports(&[8080, 22, 8080, 65535, 1]).unwrap(),
        vec![1, 22, 8080, 65535]
    );
    assert!(check_listener_ports(&[]).unwrap().is_empty());
    for bad in [&[0u32][..], &[65536], &[80, u32::MAX]] {
        let err = check_listener_ports(bad).unwrap_err();
        assert_eq!(err.code(), Some(Code::INTERNAL), "{bad:?}");
    }
    let too_many: Vec<u32> = (1..=MAX_TCP_LISTENERS as u32 + 1).collect();
    assert!(check_listener_ports(&too_many).is_err());
    let most: Vec<u32> = (1..=MAX_TCP_LISTENERS as u32).collect();
    assert_eq!(
        check_listener_ports(&most).unwrap().len(),
        MAX_TCP_LISTENERS
    );
}
