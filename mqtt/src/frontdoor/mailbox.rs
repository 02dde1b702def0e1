//! A session's mailbox: the messages routed to it that its connection has
//! not yet taken.
//!
//! The dispatcher (`dispatch.rs`) puts each message a session's
//! subscriptions match into its mailbox and wakes the connection, which
//! takes them in batches, gives each a packet id and writes it out
//! (`deliver.rs`). While the client of a persistent session is away, its
//! mailbox keeps filling, and the client gets what it holds when it comes
//! back.
//!
//! A mailbox holds at most `--max-queued-bytes` (counted as each message's
//! PUBLISH would be, without its packet id) for a client that is not reading:
//! one that is away, or has taken nothing for
//! [`STALL`](super::congestion::STALL). Past that, new messages are dropped,
//! and the log says how many, naming the client, at most once a second and
//! once more when the connection next takes from the mailbox, so every
//! dropped message is counted in the log. A client that is reading may go
//! past the limit: the congestion it causes holds publishers back
//! (`congestion.rs`), but what was already on its way still comes. That is
//! at most the router's pipe ([`PIPE_BYTES`]) and one message as large as
//! the broker takes; past twice the limit and that, even a reading client
//! loses messages.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::warn;

use super::router::PIPE_BYTES;
use super::topics::ClientKey;

/// A message as the broker routes it: the parts of its PUBLISH that every
/// delivery shares.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    /// The QoS it was published at.
    pub qos: u8,
    /// Whether the publisher set RETAIN.
    pub retain: bool,
    /// MQTT 5: the PUBLISH's properties as the publisher sent them, but its
    /// Topic Alias (spec §3.3.2.3), without their length; empty from a
    /// 3.1.1 publisher. An MQTT 5 subscriber gets them [MQTT-3.3.2-17,
    /// MQTT-3.3.2-18]; a 3.1.1 subscriber gets the message without them.
    pub properties: Bytes,
    /// The session that published it, for MQTT 5's No Local; `None` for a
    /// 3.1.1 publisher, which cannot subscribe with No Local.
    pub publisher: Option<ClientKey>,
    /// MQTT 5: when the message stops being worth delivering (its Message
    /// Expiry Interval after the broker routed it), if it says.
    pub expires: Option<std::time::Instant>,
}

impl Message {
    /// The bytes a PUBLISH of this message takes on the wire at most: fixed
    /// header, topic length, topic, packet id, payload, and the properties
    /// with their length if it has any (an MQTT 5 subscriber gets one byte
    /// more, a zero length, for a message without).
    pub fn size(&self) -> usize {
        let properties = match self.properties.len() {
            0 => 0,
            length => length + 4,
        };
        self.topic.len() + self.payload.len() + 9 + properties
    }
}

/// One message on its way to one client.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    /// The QoS it goes out at: the lower of its own and the subscription's
    /// [MQTT-3.8.4-6].
    pub qos: u8,
    /// RETAIN as the client sees it: set only on a retained message sent
    /// because of a new subscription [MQTT-3.3.1-8, MQTT-3.3.1-9].
    pub retain: bool,
    /// MQTT 5: the Subscription Identifiers of the client's subscriptions
    /// that brought it [MQTT-3.3.4-4]; empty (no allocation) for most.
    pub subscription_ids: Box<[u32]>,
}

/// The messages waiting for one session.
#[derive(Debug)]
pub struct Mailbox {
    /// The client id, for log lines.
    name: Box<str>,
    /// Bytes a mailbox holds for a client that is not reading.
    limit: usize,
    /// Bytes it holds for a client that is reading.
    reading_limit: usize,
    queue: Mutex<Queue>,
    /// Wakes the connection when a message arrives.
    arrived: Notify,
    /// Whether a connected client is taking messages.
    reading: AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    deliveries: VecDeque<Delivery>,
    bytes: usize,
    /// Messages dropped since the last log line about them.
    dropped: u64,
    logged: Option<Instant>,
}

impl Mailbox {
    /// An empty mailbox for client `name`, holding at most `limit` bytes
    /// while the client is not reading, and, while it is, twice that and
    /// what may be on its way for messages of up to `largest` bytes (see
    /// the module documentation).
    pub fn new(name: &str, limit: usize, largest: usize) -> Self {
        Mailbox {
            name: name.into(),
            limit,
            reading_limit: limit
                .saturating_mul(2)
                .saturating_add(PIPE_BYTES)
                .saturating_add(largest),
            queue: Mutex::new(Queue::default()),
            arrived: Notify::new(),
            reading: AtomicBool::new(true),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A poisoned lock (a panic elsewhere) still holds a whole queue.
        match self.queue.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a delivery, or drops it (counted, and logged at most once a
    /// second) if the mailbox is full: see the module documentation.
    pub fn push(&self, delivery: Delivery) {
        let size = delivery.message.size();
        let mut queue = self.queue();
        let over = queue.bytes + size;
        let reading = self.reading.load(Ordering::Relaxed);
        let most = if reading {
            self.reading_limit
        } else {
            self.limit
        };
        if over > most {
            queue.dropped += 1;
            let now = Instant::now();
            if queue
                .logged
                .is_none_or(|at| now >= at + Duration::from_secs(1))
            {
                self.log_dropped(&mut queue, now);
            }
            return;
        }
        let was_empty = queue.deliveries.is_empty();
        queue.bytes = over;
        queue.deliveries.push_back(delivery);
        drop(queue);
        if was_empty {
            self.arrived.notify_one();
        }
    }

    /// Says in the log how many messages were dropped since it last did.
    fn log_dropped(&self, queue: &mut Queue, now: Instant) {
        warn!(
            client = &*self.name,
            dropped = queue.dropped,
            queued_bytes = queue.bytes,
            // The words of the connection's own line (`deliver.rs`): one
            // line to look for, whichever queue was full.
            "client is not reading: its queue is full (--max-queued-bytes), messages dropped"
        );
        queue.dropped = 0;
        queue.logged = Some(now);
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn take(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut queue = self.queue();
        if queue.dropped > 0 {
            self.log_dropped(&mut queue, Instant::now());
        }
        let count = max.min(queue.deliveries.len());
        let mut taken = 0;
        for delivery in queue.deliveries.drain(..count) {
            taken += delivery.message.size();
            out.push(delivery);
        }
        queue.bytes -= taken;
        if queue.deliveries.is_empty() {
            if queue.deliveries.capacity() > 64 {
                queue.deliveries.shrink_to(16);
            }
        } else {
            // More is waiting: the next turn takes it.
            self.arrived.notify_one();
        }
    }

    /// Bytes waiting in the mailbox.
    pub fn bytes(&self) -> usize {
        self.queue().bytes
    }

    /// Resolves when a delivery has arrived since the last [`Mailbox::take`]
    /// (or one was left behind by it). Cancel-safe.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Records whether a connected client is taking messages: not while it
    /// is away, or stalled (see the module documentation).
    pub fn set_reading(&self, reading: bool) {
        self.reading.store(reading, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(bytes: usize) -> Delivery {
        Delivery {
            message: Message {
                properties: Bytes::new(),
                publisher: None,
                expires: None,
                topic: Bytes::from_static(b"t"),
                payload: Bytes::from(vec![0; bytes - 10]),
                qos: 1,
                retain: false,
            },
            qos: 1,
            retain: false,
            subscription_ids: Box::default(),
        }
    }

    /// A mailbox of a client that is away keeps `limit` bytes; one of a
    /// client that reads keeps up to twice that, the pipe and one message.
    #[test]
    fn holds_to_its_limit() {
        let mailbox = Mailbox::new("c", 1000, 100);
        mailbox.set_reading(false);
        for _ in 0..20 {
            mailbox.push(delivery(100));
        }
        assert_eq!(mailbox.bytes(), 1000);
        mailbox.set_reading(true);
        for _ in 0..(PIPE_BYTES / 100 + 100) {
            mailbox.push(delivery(100));
        }
        let most = 2000 + PIPE_BYTES + 100;
        let full = mailbox.bytes();
        assert!(full <= most && full > most - 100, "{full}");
        let mut out = Vec::new();
        mailbox.take(5, &mut out);
        assert_eq!((out.len(), mailbox.bytes()), (5, full - 500));
    }
}
