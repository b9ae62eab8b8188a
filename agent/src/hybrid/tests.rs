use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;

use super::limits::*;

#[test]
fn limits_default_to_the_contract_and_take_timeouts_from_the_environment() {
    let none = ConnectionLimits::with_overrides(|_| None);
    assert_eq!(none, ConnectionLimits::default());
    assert_eq!(
        none.max_api,
        hull_proto::contract::MAX_API_CONNECTIONS,
        "cap from the contract"
    );
    let set = ConnectionLimits::with_overrides(|name| match name {
        HANDSHAKE_TIMEOUT_ENV => Some("250".into()),
        FIRST_REQUEST_TIMEOUT_ENV => Some(" 1500 ".into()),
        _ => None,
    });
    assert_eq!(set.handshake_timeout, Duration::from_millis(250));
    assert_eq!(set.first_request_timeout, Duration::from_millis(1500));
    for bad in ["", "0", "-3", "soon", "1.5"] {
        let limits = ConnectionLimits::with_overrides(|_| Some(bad.into()));
        assert_eq!(limits, ConnectionLimits::default(), "{bad:?} is ignored");
    }
}

#[test]
fn slots_refuse_beyond_the_limit_and_free_on_drop() {
    let slots = Slots::new("test connections", 2);
    let a = slots.take().expect("first");
    let _b = slots.take().expect("second");
    assert!(slots.take().is_none(), "third is refused");
    assert_eq!(slots.in_use(), 2);
    drop(a);
    assert!(slots.take().is_some(), "a freed slot is taken again");
}

#[test]
fn refusal_warnings_are_rate_limited() {
    let warning = RateLimitedWarning::new(Duration::from_millis(200));
    assert!(warning.note("things", 1));
    assert!(!warning.note("things", 1));
    assert!(!warning.note("things", 1));
    std::thread::sleep(Duration::from_millis(250));
    assert!(warning.note("things", 1), "logged again after the interval");
}

#[tokio::test(flavor = "current_thread")]
async fn first_request_wait_sees_bytes_eof_and_silence() {
    let (agent, mut host) = UnixStream::pair().unwrap();
    assert_eq!(
        wait_for_first_request(&agent, Duration::from_millis(50)).await,
        FirstRequest::TimedOut
    );
    host.write_all(b"x").await.unwrap();
    assert_eq!(
        wait_for_first_request(&agent, Duration::from_secs(5)).await,
        FirstRequest::Arrived
    );
    // Peeked, not consumed: the byte is still there for ttrpc.
    let mut byte = [0u8; 1];
    agent.try_read(&mut byte).unwrap();
    assert_eq!(&byte, b"x");

    let (agent, host) = UnixStream::pair().unwrap();
    drop(host);
    assert_eq!(
        wait_for_first_request(&agent, Duration::from_secs(5)).await,
        FirstRequest::Closed
    );
}
