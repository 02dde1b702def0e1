//! Back-pressure: why a broker sometimes stops reading from publishers.
//!
//! A broker acknowledges a QoS 1 PUBLISH as soon as it has taken the
//! message; delivering it to the subscribers comes after. When publishers
//! send faster than a subscriber reads, the difference piles up somewhere,
//! and memory is finite. (rumqttd, routing by itself, keeps a fixed amount
//! per topic filter and silently drops the oldest messages beyond it, so a
//! subscriber that read as fast as it could still lost 4 in 10
//! acknowledged messages in a test where the publisher was a little
//! faster.)
//!
//! The front door makes the difference visible and bounded instead:
//! - each client has a mailbox and a queue of encoded packets, together of
//!   at most `--max-queued-bytes` ([`super::mailbox`]);
//! - when a client that is reading has more than half of that queued, it is
//!   *congested*, and while any client is congested the front door stops
//!   reading from every other client, so publishers wait (TCP's own flow
//!   control makes their writes block) until it is down to an eighth;
//! - a client that has read nothing for [`STALL`] is not reading at all: it
//!   no longer holds publishers back, its queue overflows, and the messages
//!   that do not fit are dropped and logged. A broker cannot let one
//!   client that never reads stop everybody.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A client that takes no bytes for this long is treated as not reading.
pub const STALL: Duration = Duration::from_secs(5);

/// The broker-wide count of congested clients, shared by every connection.
#[derive(Debug, Clone)]
pub struct Congestion {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    congested: Mutex<usize>,
    paused: watch::Sender<bool>,
}

impl Default for Congestion {
    fn default() -> Self {
        Congestion {
            inner: Arc::new(Inner {
                congested: Mutex::new(0),
                paused: watch::Sender::new(false),
            }),
        }
    }
}

impl Congestion {
    /// One connection's view and share of the congestion.
    pub fn pressure(&self) -> Pressure {
        Pressure {
            congestion: self.clone(),
            paused: self.inner.paused.subscribe(),
            congested: false,
            last_progress: Instant::now(),
        }
    }

    fn count(&self, delta: isize) {
        // A poisoned lock only means another connection panicked while
        // counting; the count itself is still whole.
        let mut congested = match self.inner.congested.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *congested = congested.saturating_add_signed(delta);
        self.inner.paused.send_replace(*congested > 0);
    }
}

/// One connection's part in [`Congestion`].
#[derive(Debug)]
pub struct Pressure {
    congestion: Congestion,
    paused: watch::Receiver<bool>,
    /// Whether this connection is counted as congested.
    congested: bool,
    /// When the client last took bytes from its queue.
    last_progress: Instant,
}

impl Pressure {
    /// Whether this connection should stop reading from its client: some
    /// other client is congested.
    pub fn paused(&self) -> bool {
        *self.paused.borrow() && !self.congested
    }

    /// Resolves when the broker-wide state changes.
    pub async fn changed(&mut self) {
        // The sender lives as long as any `Pressure`, so this never errs.
        let _ = self.paused.changed().await;
    }

    /// Records that the client's queue is empty: whatever comes next, the
    /// client has not been slow yet.
    pub fn caught_up(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Whether the client has taken nothing from a non-empty queue for [`STALL`].
    pub fn stalled(&self, now: Instant) -> bool {
        now >= self.last_progress + STALL
    }

    /// When [`Pressure::update`] must next run even if nothing happens: a
    /// congested client that stops reading must stop holding publishers.
    pub fn next_check(&self) -> Option<Instant> {
        self.congested.then_some(self.last_progress + STALL)
    }

    /// Records the client's queue after a turn: `queued` bytes of at most
    /// `max`, and whether the client took any bytes in this turn.
    pub fn update(&mut self, queued: usize, max: usize, progressed: bool) {
        let now = Instant::now();
        if progressed || queued == 0 {
            self.last_progress = now;
        }
        let reading = !self.stalled(now);
        let congested = reading
            && if self.congested {
                queued > max / 8
            } else {
                queued >= max / 2
            };
        if congested != self.congested {
            self.congested = congested;
            self.congestion.count(if congested { 1 } else { -1 });
        }
    }
}

impl Drop for Pressure {
    fn drop(&mut self) {
        if self.congested {
            self.congestion.count(-1);
        }
    }
}
