//! A link to the router: packets in, notifications out.
//!
//! The front door hands a link a batch of packets at a time
//! ([`Link::flush`]) and takes the router's notifications in batches
//! ([`Link::take`]). See `router.rs` for the links there are, and why the
//! router must only ever see what these allow.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rumqttd::Notification;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::Packet;

/// Asks whether rumqttd's channel to its router is full (1000 events).
pub(super) type IsFull = dyn Fn() -> bool + Send + Sync;

/// Why the router did not take a link or a packet: it refused the client
/// (its connection limit), or it has stopped.
#[derive(Debug)]
pub struct Failed(pub(super) String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

impl From<LinkError> for Failed {
    fn from(error: LinkError) -> Self {
        Failed(error.to_string())
    }
}

/// A link to the router.
pub struct Link {
    tx: LinkTx,
    rx: LinkRx,
    /// Whether the router's channel is full (see [`Link::flush`]).
    router_full: Arc<IsFull>,
    /// Packets for the router not yet handed over (see [`Link::flush`]).
    pending: Vec<Packet>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Link {
    pub(super) fn new(tx: LinkTx, rx: LinkRx, router_full: Arc<IsFull>) -> Self {
        Link {
            tx,
            rx,
            router_full,
            pending: Vec::new(),
        }
    }

    /// Queues a packet for the router; [`Link::flush`] hands it over.
    pub fn push(&mut self, packet: Packet) {
        self.pending.push(packet);
    }

    /// Hands the queued packets to the router.
    ///
    /// A link's packets wait in a shared queue that the router empties
    /// whole each time it is told there is data (`LinkTx::send` adds one
    /// packet and tells it). If the queue is not empty, the router has been
    /// told and not yet looked, so the new packets join it without a word;
    /// only a batch that finds it empty tells the router, with its last
    /// packet. So each link has at most one notice waiting in the router's
    /// channel (1000 places), and we wait while that channel is full rather
    /// than block a worker thread on it.
    pub async fn flush(&mut self) -> Result<(), Failed> {
        let Some(last) = self.pending.pop() else {
            return Ok(());
        };
        let last = {
            let mut queue = self.tx.buffer();
            let was_empty = queue.is_empty();
            queue.extend(self.pending.drain(..));
            if was_empty {
                Some(last)
            } else {
                queue.push_back(last);
                None
            }
        };
        let Some(last) = last else {
            return Ok(());
        };
        while (self.router_full)() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.tx.send(last).await?;
        Ok(())
    }

    /// The next batch of notifications: waits for the first, then takes
    /// what else is ready, at most `limit` in all, and appends the messages
    /// to `messages`. Acknowledgements (of the dispatcher's SUBSCRIBE) are
    /// dropped. Returns whether the router stopped forwarding to us
    /// because our queue in it was full (then [`Link::resume`]); errors when
    /// the router has dropped the link.
    /// Cancel-safe: nothing is taken until the first notification is.
    pub async fn take(
        &mut self,
        limit: usize,
        messages: &mut Vec<rumqttd::Forward>,
    ) -> Result<bool, Failed> {
        let mut paused = false;
        let mut next = self.rx.next().await.map_err(Failed::from)?;
        let mut count = 0;
        loop {
            if let Some(notification) = next {
                count += 1;
                match notification {
                    Notification::Forward(message) => messages.push(message),
                    Notification::Unschedule => paused = true,
                    Notification::Disconnect(..) => {
                        return Err(Failed("the router disconnected the link".into()));
                    }
                    _ => {}
                }
            }
            if count >= limit {
                break;
            }
            next = match self.rx.next().now_or_never() {
                Some(Ok(notification)) => notification,
                Some(Err(error)) => return Err(error.into()),
                None => break,
            };
        }
        Ok(paused)
    }

    /// Tells the router to forward to us again after [`Link::take`] found
    /// that it had stopped.
    pub async fn resume(&mut self) -> Result<(), Failed> {
        Ok(self.rx.wake().await?)
    }
}
