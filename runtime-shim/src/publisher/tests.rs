//! The publisher against a fake containerd Events service on a temporary Unix socket.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use tokio::sync::Notify;
use ttrpc::asynchronous::transport::Listener;
use ttrpc::asynchronous::Server;
use ttrpc::Code;

use super::*;
use crate::exit::ExitRecord;

/// Topic the fake containerd refuses with INVALID_ARGUMENT.
const REFUSED_TOPIC: &str = "/refused";

/// Every Forward the fake containerd received (across its restarts), in arrival order.
#[derive(Default)]
struct Received {
    envelopes: Mutex<Vec<Envelope>>,
    changed: Notify,
}

impl Received {
    fn topics(&self) -> Vec<String> {
        let envelopes = self.envelopes.lock().unwrap();
        envelopes.iter().map(|e| e.topic.clone()).collect()
    }

    /// Waits until `count` Forwards arrived (panics after 10 s).
    async fn wait_for(&self, count: usize) -> Vec<String> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                let topics = self.topics();
                if topics.len() >= count {
                    return topics;
                }
                changed.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(topics) => topics,
            Err(_) => panic!("only {:?} arrived, wanted {count}", self.topics()),
        }
    }
}

struct FakeEvents {
    received: Arc<Received>,
}

#[async_trait]
impl Events for FakeEvents {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let envelope = req.envelope.into_option().unwrap_or_default();
        let refused = envelope.topic == REFUSED_TOPIC;
        self.received.envelopes.lock().unwrap().push(envelope);
        self.received.changed.notify_waiters();
        if refused {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::INVALID_ARGUMENT,
                "refused topic",
            )));
        }
        Ok(Empty::default())
    }
}

/// A fake containerd: the Events service on `path`.
struct FakeContainerd {
    server: Server,
    path: PathBuf,
}

impl FakeContainerd {
    async fn start(path: &Path, received: &Arc<Received>) -> FakeContainerd {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let listener = Listener::try_from(listener).unwrap();
        let service = create_events(Arc::new(FakeEvents {
            received: received.clone(),
        }));
        let mut server = Server::new()
            .add_listener(listener)
            .register_service(service);
        server.start().await.unwrap();
        FakeContainerd {
            server,
            path: path.to_path_buf(),
        }
    }

    /// As containerd dying: connections closed, the socket file gone.
    async fn kill(mut self) {
        self.server.shutdown().await.unwrap();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Fast retries so the tests do not wait for the production backoff.
fn quick(capacity: usize) -> PublisherOptions {
    PublisherOptions {
        capacity,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        send_timeout: Duration::from_secs(2),
    }
}

fn oom(id: &str) -> Box<dyn MessageDyn> {
    Box::new(TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    })
}

fn topics(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("/test/{i}")).collect()
}

#[tokio::test]
async fn envelope_carries_namespace_topic_time_and_typed_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let server = FakeContainerd::start(&path, &received).await;
    let address = format!("unix://{}", path.display());
    let publisher = EventPublisher::with_options(&address, quick(16));

    let before = crate::exit::now().seconds;
    publisher.publish_task_event(
        "k8s.io",
        &TaskEvent::Exit {
            container_id: "c1".into(),
            exec_id: String::new(),
            pid: 42,
            exit: ExitRecord {
                status: 137,
                exited_at: crate::exit::now(),
            },
        },
    );
    assert_eq!(received.wait_for(1).await, ["/tasks/exit"]);

    let envelope = received.envelopes.lock().unwrap()[0].clone();
    assert_eq!(envelope.namespace, "k8s.io");
    assert!(envelope.timestamp.seconds >= before);
    assert_eq!(envelope.event.type_url, "containerd.events.TaskExit");
    let exit = TaskExit::parse_from_bytes(&envelope.event.value).unwrap();
    assert_eq!(
        (exit.container_id.as_str(), exit.pid, exit.exit_status),
        ("c1", 42, 137)
    );
    server.kill().await;
}

#[tokio::test]
async fn events_published_while_containerd_is_away_arrive_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let server = FakeContainerd::start(&path, &received).await;
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(64));

    // Connected and delivering.
    for topic in topics(0..3) {
        publisher.publish(&topic, "default", oom("c"));
    }
    assert_eq!(received.wait_for(3).await, topics(0..3));

    // containerd dies; the publisher still holds the old connection.
    server.kill().await;
    for topic in topics(3..8) {
        publisher.publish(&topic, "default", oom("c"));
    }
    // Let the sender fail on the dead connection and retry a few times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.topics().len(), 3);
    assert_eq!(publisher.pending(), 5);

    // containerd comes back on the same path.
    let server = FakeContainerd::start(&path, &received).await;
    assert_eq!(received.wait_for(8).await, topics(0..8));
    for topic in topics(8..10) {
        publisher.publish(&topic, "default", oom("c"));
    }
    assert_eq!(received.wait_for(10).await, topics(0..10));
    publisher.flush(Duration::from_secs(5)).await.unwrap();
    // Nothing more (no duplicate) arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.topics(), topics(0..10));
    assert_eq!(publisher.dropped(), 0);
    server.kill().await;
}

#[tokio::test]
async fn containerd_may_appear_after_the_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(64));
    for topic in topics(0..4) {
        publisher.publish(&topic, "default", oom("c"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = FakeContainerd::start(&path, &received).await;
    assert_eq!(received.wait_for(4).await, topics(0..4));
    server.kill().await;
}

#[tokio::test]
async fn full_queue_drops_the_oldest_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(4));
    // The sender takes the first event and keeps retrying it.
    publisher.publish("/test/0", "default", oom("c"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(publisher.pending(), 1);
    for topic in topics(1..11) {
        publisher.publish(&topic, "default", oom("c"));
    }
    // Four waiting plus the one being sent; events 1 to 6 were dropped.
    assert_eq!(publisher.pending(), 5);
    assert_eq!(publisher.dropped(), 6);

    let server = FakeContainerd::start(&path, &received).await;
    let mut expected = topics(0..1);
    expected.extend(topics(7..11));
    assert_eq!(received.wait_for(5).await, expected);
    publisher.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(received.topics(), expected);
    server.kill().await;
}

#[tokio::test]
async fn flush_waits_for_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let server = FakeContainerd::start(&path, &received).await;
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(1024));
    publisher.flush(Duration::from_millis(1)).await.unwrap();
    for topic in topics(0..200) {
        publisher.publish(&topic, "default", oom("c"));
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(received.topics(), topics(0..200));
    assert_eq!(publisher.pending(), 0);
    server.kill().await;
}

#[tokio::test]
async fn flush_gives_up_while_containerd_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(16));
    publisher.publish("/test/0", "default", oom("c"));
    publisher.publish("/test/1", "default", oom("c"));
    let timeout = Duration::from_millis(200);
    assert_eq!(
        publisher.flush(timeout).await,
        Err(PublishError::FlushTimeout {
            pending: 2,
            timeout
        })
    );
}

#[tokio::test]
async fn a_rejected_event_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let received = Arc::new(Received::default());
    let server = FakeContainerd::start(&path, &received).await;
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(16));
    publisher.publish("/test/0", "default", oom("c"));
    publisher.publish(REFUSED_TOPIC, "default", oom("c"));
    publisher.publish("/test/1", "default", oom("c"));
    publisher.flush(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.topics(), ["/test/0", REFUSED_TOPIC, "/test/1"]);
    server.kill().await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock.ttrpc");
    let publisher = EventPublisher::with_options(path.to_str().unwrap(), quick(16));
    let shared = Arc::downgrade(&publisher.handle.shared);
    publisher.publish("/test/0", "default", oom("c"));
    let clone = publisher.clone();
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(shared.upgrade().is_some(), "a clone is still alive");
    drop(clone);
    let stopped = async {
        while shared.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the sender task ended");
}

#[test]
fn only_error_statuses_that_mean_no_are_rejections() {
    let status = |code| ttrpc::Error::RpcStatus(ttrpc::get_status(code, "x"));
    assert!(rejected(&status(Code::INVALID_ARGUMENT)));
    assert!(rejected(&status(Code::NOT_FOUND)));
    assert!(!rejected(&status(Code::UNAVAILABLE)));
    assert!(!rejected(&ttrpc::Error::RemoteClosed));
    assert!(!rejected(&ttrpc::Error::LocalClosed));
    assert!(!rejected(&ttrpc::Error::Others("channel closed".into())));
}
