use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::*;

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
    let (mut agent, mut host) = UnixStream::pair().unwrap();
    assert_eq!(
        read_first_request(&mut agent, Duration::from_millis(50)).await,
        FirstRequest::TimedOut
    );
    host.write_all(b"x").await.unwrap();
    assert_eq!(
        read_first_request(&mut agent, Duration::from_secs(5)).await,
        FirstRequest::Arrived(b"x".to_vec())
    );

    let (mut agent, host) = UnixStream::pair().unwrap();
    drop(host);
    assert_eq!(
        read_first_request(&mut agent, Duration::from_secs(5)).await,
        FirstRequest::Closed
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_api_connection_replays_the_first_bytes_then_reads_and_writes_the_stream() {
    let (mut agent, mut host) = UnixStream::pair().unwrap();
    host.write_all(b"first").await.unwrap();
    let FirstRequest::Arrived(first) = read_first_request(&mut agent, Duration::from_secs(5)).await
    else {
        panic!("no first bytes");
    };
    let slots = Slots::new("test connections", 1);
    let mut connection = ApiConnection::new(agent, first, slots.take().unwrap());
    host.write_all(b" then more").await.unwrap();
    drop(host.shutdown().await);
    // A small buffer: the replay goes out in pieces.
    let mut got = Vec::new();
    let mut piece = [0u8; 3];
    loop {
        let n = connection.read(&mut piece).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
    }
    assert_eq!(got, b"first then more");
    connection.write_all(b"reply").await.unwrap();
    let mut reply = [0u8; 5];
    host.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
    assert_eq!(slots.in_use(), 1, "the connection holds its slot");
    drop(connection);
    assert_eq!(slots.in_use(), 0, "and frees it when dropped");
}

/// `accept_api_connections` on a real Unix listener: the cap, the first-request timeout and
/// the replay, as the `unix://` and vsock listen modes use it.
#[tokio::test(flavor = "current_thread")]
async fn the_direct_accept_loop_caps_times_out_and_admits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(s, _)| s), listener))
    });
    let limits = ConnectionLimits {
        first_request_timeout: Duration::from_millis(300),
        max_api: 2,
        ..ConnectionLimits::default()
    };
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(accept_api_connections(Box::pin(incoming), limits, tx));

    let mut silent = UnixStream::connect(&path).await.unwrap();
    let mut talking = UnixStream::connect(&path).await.unwrap();
    talking.write_all(b"req").await.unwrap();
    let mut admitted = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    // Both slots are taken (one silent, one admitted): a third is closed at once.
    let mut third = UnixStream::connect(&path).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "third not closed: {closed:?}"
    );
    // The silent one is closed after the first-request timeout...
    let closed = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent not closed: {closed:?}"
    );
    // ... the admitted one replays what was sent, and its slot outlives the timeout.
    let mut got = [0u8; 3];
    admitted.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"req");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The silent one's slot is free again: a new connection is admitted.
    let mut fourth = UnixStream::connect(&path).await.unwrap();
    fourth.write_all(b"x").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .is_some());
    drop(talking);
}
