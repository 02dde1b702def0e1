//! The connections still sending their HTTP request, counted apart from the
//! upgraded ones.
//!
//! A connection takes one of the server's `--max-connections` slots only once
//! it is upgraded. Before that it waits here, in a table of its own with a
//! bound of its own: when one more connection arrives with the table full,
//! the one that has waited longest is cut off. A client that opens
//! connections and never finishes its request (by mistake, or to lock
//! everyone else out) only pushes out its own, while a real client, which
//! sends its whole request at once, is upgraded long before its turn comes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use networking_protocols::accept::Throttle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The table of unfinished handshakes; see the module documentation.
#[derive(Debug)]
pub(super) struct Handshakes {
    limit: usize,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// The number the next handshake gets: numbers grow with age, so the
    /// first entry of the map is the oldest handshake.
    next: u64,
    /// How to cut off each handshake, by number.
    cut: BTreeMap<u64, CancellationToken>,
    /// Cut-offs are logged at most once a second.
    log: Throttle,
}

/// One connection's place in [`Handshakes`]; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Handshake {
    table: Arc<Handshakes>,
    number: u64,
    cut: CancellationToken,
}

impl Handshakes {
    /// A table for at most `limit` unfinished handshakes (at least one).
    pub(super) fn new(limit: usize) -> Self {
        Handshakes {
            limit: limit.max(1),
            waiting: Mutex::default(),
        }
    }

    /// Gives a new connection its place, cutting off the oldest handshake if
    /// the table is full.
    pub(super) fn begin(self: &Arc<Self>) -> Handshake {
        let mut waiting = self.lock();
        if waiting.cut.len() >= self.limit {
            if let Some((_, oldest)) = waiting.cut.pop_first() {
                oldest.cancel();
            }
            if let Some(held_back) = waiting.log.allow() {
                warn!(
                    held_back,
                    "{} unfinished handshakes: cutting off the oldest", self.limit
                );
            }
        }
        let number = waiting.next;
        waiting.next += 1;
        let cut = CancellationToken::new();
        waiting.cut.insert(number, cut.clone());
        Handshake {
            table: self.clone(),
            number,
            cut,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock leaves the table as it was: a
        // consistent map, safe to go on using.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handshake {
    /// Resolves when a newer connection has taken this one's place.
    pub(super) async fn cut_off(&self) {
        self.cut.cancelled().await;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.table.lock().cut.remove(&self.number);
    }
}
