//! Task events to containerd (`containerd.services.events.ttrpc.v1.Events/Forward`), delivered
//! in order and at least once, also across a containerd restart.
//!
//! [`EventPublisher::publish`] never blocks: it stamps the event (time, namespace, topic) into an
//! envelope and appends it to a bounded FIFO queue. One background task sends the queue in
//! order over one ttrpc connection. When a send fails for any reason other than containerd
//! rejecting the event (an error status such as `INVALID_ARGUMENT`), the task drops the
//! connection, reconnects (with a backoff while containerd is away) and sends the same event
//! again; events published meanwhile wait in the queue. When the queue is full, the oldest
//! queued event is dropped (and counted in the log). [`EventPublisher::flush`] waits until
//! what was published before it is out, so the last events leave before the shim exits.
//!
//! An event whose send failed after containerd had received it (the connection broke before
//! the reply) is sent again: containerd may see it twice, never not at all while the shim lives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use tokio::sync::{watch, Notify};
use ttrpc::asynchronous::transport::Socket;
use ttrpc::asynchronous::Client;
use ttrpc::Code;

use crate::events::TaskEvent;

#[cfg(test)]
mod tests;

/// Queue bound of [`PublisherOptions::default`].
pub const DEFAULT_CAPACITY: usize = 4096;

/// Tuning of an [`EventPublisher`].
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Most events waiting to be sent (besides the one being sent); beyond it the oldest is
    /// dropped.
    pub capacity: usize,
    /// First wait between connection attempts while containerd is away.
    pub backoff_min: Duration,
    /// Longest wait between connection attempts (the wait doubles up to it).
    pub backoff_max: Duration,
    /// Longest wait for one connection attempt or one Forward reply before the connection is
    /// given up and made again.
    pub send_timeout: Duration,
}

impl Default for PublisherOptions {
    fn default() -> PublisherOptions {
        PublisherOptions {
            capacity: DEFAULT_CAPACITY,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            send_timeout: Duration::from_secs(5),
        }
    }
}

/// Failures of [`EventPublisher::flush`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// Events were still queued or being sent when the time was up.
    #[error("{pending} event(s) not yet delivered to containerd after {timeout:?}")]
    FlushTimeout {
        /// Events queued or being sent at the time-out.
        pending: usize,
        /// The time waited.
        timeout: Duration,
    },
}

/// Publishes events to containerd's ttrpc Events service; cheap to clone (clones share the
/// queue). The background sender stops when the last clone is dropped.
#[derive(Clone)]
pub struct EventPublisher {
    handle: Arc<Handle>,
}

/// Closes the queue when the last [`EventPublisher`] clone goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// State shared by the publishing handles and the sender task.
struct Shared {
    /// containerd's ttrpc socket path (`unix://` prefix removed).
    path: String,
    options: PublisherOptions,
    queue: Mutex<Queue>,
    /// Wakes the sender when an event is queued or the queue closes.
    wake: Notify,
    /// Sequence number of the last event the sender finished (delivered or rejected).
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct Queue {
    /// Waiting events with their sequence numbers, oldest first.
    items: VecDeque<(u64, Envelope)>,
    /// Sequence number of the last event queued (the first is 1).
    last_seq: u64,
    /// The sender holds an event it has not finished.
    in_flight: bool,
    /// Events dropped because the queue was full.
    dropped: u64,
    /// No publisher handle is left.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves a consistent queue: keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventPublisher {
    /// A publisher for containerd's ttrpc socket at `address` (a path, optionally with a
    /// `unix://` prefix; the shim receives it as `$TTRPC_ADDRESS`). Never fails: the connection
    /// is made when the first event is sent, and made again whenever it breaks.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime (it spawns the sender task).
    pub fn connect(address: &str) -> EventPublisher {
        EventPublisher::with_options(address, PublisherOptions::default())
    }

    /// [`EventPublisher::connect`] with explicit tuning.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime (it spawns the sender task).
    pub fn with_options(address: &str, mut options: PublisherOptions) -> EventPublisher {
        options.capacity = options.capacity.max(1);
        options.backoff_max = options.backoff_max.max(options.backoff_min);
        let shared = Arc::new(Shared {
            path: address
                .strip_prefix("unix://")
                .unwrap_or(address)
                .to_string(),
            options,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            done: watch::Sender::new(0),
        });
        tokio::spawn(send_loop(shared.clone()));
        EventPublisher {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Queues `event` under `topic` in `namespace`, stamped with the current time. Never blocks;
    /// an event that cannot be encoded is logged and dropped.
    pub fn publish(&self, topic: &str, namespace: &str, event: Box<dyn MessageDyn>) {
        let any = match encode_any(event.as_ref()) {
            Ok(any) => any,
            Err(e) => {
                tracing::error!(topic, %e, "cannot encode the event; dropping it");
                return;
            }
        };
        let envelope = Envelope {
            timestamp: MessageField::some(crate::exit::now()),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: MessageField::some(any),
            ..Default::default()
        };
        self.enqueue(envelope);
    }

    /// Queues a task event (its topic and message) in `namespace`. Never blocks.
    pub fn publish_task_event(&self, namespace: &str, event: &TaskEvent) {
        self.publish(event.topic(), namespace, event.to_message());
    }

    /// Waits until every event published before this call was delivered (or rejected by
    /// containerd), at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let shared = &self.handle.shared;
        let target = shared.lock().last_seq;
        let mut done = shared.done.subscribe();
        // The sender lives in `shared`, which we hold: `wait_for` cannot fail.
        let finished = tokio::time::timeout(timeout, done.wait_for(|seq| *seq >= target))
            .await
            .is_ok();
        if finished {
            return Ok(());
        }
        Err(PublishError::FlushTimeout {
            pending: self.pending(),
            timeout,
        })
    }

    /// Events queued or being sent.
    pub fn pending(&self) -> usize {
        let queue = self.handle.shared.lock();
        queue.items.len() + usize::from(queue.in_flight)
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.lock().dropped
    }

    fn enqueue(&self, envelope: Envelope) {
        let shared = &self.handle.shared;
        let mut queue = shared.lock();
        let mut dropped = None;
        if queue.items.len() >= shared.options.capacity {
            if let Some((_, old)) = queue.items.pop_front() {
                queue.dropped += 1;
                dropped = Some((queue.dropped, old.topic));
            }
        }
        queue.last_seq += 1;
        let seq = queue.last_seq;
        queue.items.push_back((seq, envelope));
        drop(queue);
        shared.wake.notify_one();
        // Logged once, then every 100th: a long outage must not flood the log.
        if let Some((dropped_total, topic)) = dropped {
            if dropped_total == 1 || dropped_total.is_multiple_of(100) {
                tracing::warn!(
                    dropped_total,
                    capacity = shared.options.capacity,
                    topic,
                    "event queue full (containerd unreachable?); dropped the oldest event"
                );
            }
        }
    }
}

/// The event as a protobuf `Any` the way containerd's `typeurl` reads it: the type URL is the
/// message's full name (`containerd.events.TaskExit`), with no `type.googleapis.com/` prefix.
fn encode_any(event: &dyn MessageDyn) -> Result<Any, protobuf::Error> {
    Ok(Any {
        type_url: event.descriptor_dyn().full_name().to_string(),
        value: event.write_to_bytes_dyn()?,
        ..Default::default()
    })
}

/// Whether containerd received and refused the event: sending it again would be refused again.
/// Statuses meaning "not now" are retried like a broken connection.
fn rejected(error: &ttrpc::Error) -> bool {
    match error {
        ttrpc::Error::RpcStatus(status) => !matches!(
            status.code(),
            Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED | Code::RESOURCE_EXHAUSTED | Code::ABORTED
        ),
        _ => false,
    }
}

/// The sender: takes events in order, sends each until containerd answers.
async fn send_loop(shared: Arc<Shared>) {
    let mut client: Option<EventsClient> = None;
    let mut backoff = shared.options.backoff_min;
    // Set while containerd is unreachable; its start time is logged on recovery.
    let mut outage: Option<tokio::time::Instant> = None;
    while let Some((seq, envelope)) = next_event(&shared).await {
        let request = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        let topic = request.envelope.topic.clone();
        // Wait before the next attempt. Not after a send failed on a connection made for an
        // earlier event: that is containerd having restarted, and a new connection may work
        // at once.
        let mut wait = false;
        loop {
            if shared.lock().closed {
                return;
            }
            if wait {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.options.backoff_max);
            }
            wait = true;
            let (events, fresh) = match &client {
                Some(c) => (c, false),
                None => match connect(&shared.path, shared.options.send_timeout).await {
                    Ok(c) => (&*client.insert(c), true),
                    Err(e) => {
                        if outage.is_none() {
                            outage = Some(tokio::time::Instant::now());
                            tracing::warn!(path = shared.path, %e,
                                "cannot reach containerd's event socket; queueing events and retrying");
                        } else {
                            tracing::debug!(path = shared.path, %e, "reconnecting to containerd");
                        }
                        continue;
                    }
                },
            };
            let sent = tokio::time::timeout(
                shared.options.send_timeout,
                events.forward(ttrpc::context::Context::default(), &request),
            )
            .await;
            match sent {
                Ok(Ok(_)) => {
                    backoff = shared.options.backoff_min;
                    if let Some(since) = outage.take() {
                        tracing::info!(
                            path = shared.path,
                            away_ms = since.elapsed().as_millis() as u64,
                            queued = shared.lock().items.len(),
                            "containerd's event socket is back; delivering queued events"
                        );
                    }
                    break;
                }
                Ok(Err(e)) if rejected(&e) => {
                    tracing::warn!(topic, %e, "containerd rejected the event; dropping it");
                    break;
                }
                result => {
                    let error = match result {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no reply in {:?}", shared.options.send_timeout),
                    };
                    if outage.is_none() {
                        outage = Some(tokio::time::Instant::now());
                        tracing::warn!(
                            topic,
                            error,
                            "sending the event to containerd failed; reconnecting to send it again"
                        );
                    } else {
                        tracing::debug!(topic, error, "sending the event failed again");
                    }
                    client = None;
                    wait = fresh;
                }
            }
        }
        let mut queue = shared.lock();
        queue.in_flight = false;
        shared.done.send_replace(seq);
    }
}

/// The oldest queued event (now in flight), waiting for one; `None` once the queue is closed.
async fn next_event(shared: &Shared) -> Option<(u64, Envelope)> {
    loop {
        {
            let mut queue = shared.lock();
            if queue.closed {
                return None;
            }
            if let Some(item) = queue.items.pop_front() {
                queue.in_flight = true;
                return Some(item);
            }
        }
        // `notify_one` keeps a permit when nobody waits: a wake-up between the check above
        // and this wait is not lost.
        shared.wake.notified().await;
    }
}

/// A new ttrpc connection to containerd's socket at `path`.
async fn connect(path: &str, timeout: Duration) -> std::io::Result<EventsClient> {
    let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(EventsClient::new(Client::new(Socket::from(stream))))
}
