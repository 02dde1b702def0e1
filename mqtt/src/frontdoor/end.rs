//! How a connection ends: keep-alive [MQTT-3.1.2-24], the reasons and
//! their log lines, the last will (spec §3.1.2.5), and what a persistent
//! session keeps.

use std::time::Duration;

use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Door;
use super::connect::{Connect, Will};
use super::link::Link;
use super::publish;
use super::relay::{Connection, End};
use super::session::Session;

impl Connection<'_> {
    /// Whether we are not reading the client for now: another client is
    /// congested, or the router has not confirmed our last syncs. Time held
    /// is not the client's silence.
    pub(super) fn held(&self) -> bool {
        self.pressure.paused() || self.link.as_ref().is_some_and(Link::behind)
    }

    /// When the timer must next look: the client's keep-alive deadline, or
    /// when a congested client that stopped reading must stop holding
    /// publishers.
    pub(super) fn deadline(&self) -> Instant {
        // Nothing to check: look again in a day.
        let mut deadline = Instant::now() + Duration::from_secs(24 * 3600);
        if let Some(grace) = self.grace
            && !self.held()
        {
            deadline = deadline.min(self.last_heard + grace);
        }
        if let Some(check) = self.pressure.next_check() {
            deadline = deadline.min(check);
        }
        deadline
    }

    /// The timer fired: the client's keep-alive may have run out, and a
    /// congested client's standing is looked at again.
    pub(super) fn on_timer(&mut self) -> Result<(), End> {
        if let Some(grace) = self.grace
            && !self.held()
            && Instant::now() >= self.last_heard + grace
        {
            return Err(End::KeepAliveExpired(grace));
        }
        let (queued, max) = (self.to_client.bytes, self.limits.max_queued_bytes);
        self.pressure.update(queued, max, false);
        Ok(())
    }
}

impl Door {
    /// After the client's connection has ended with `end`: its will goes
    /// to the router unless it sent DISCONNECT, with what it sent before it
    /// left (a PUBLISH followed at once by DISCONNECT, say); the link ends;
    /// and a persistent session is returned, to keep, with the messages
    /// still on their way to it.
    pub(super) async fn finish(
        &self,
        mut connection: Connection<'_>,
        connect: &Connect,
        end: End,
    ) -> Option<Session> {
        let name = connection.name;
        log_end(name, &end);
        let will = connect.will.as_ref().filter(|_| end.publishes_will());
        if let Some(will) = will {
            info!(
                client = name,
                topic = will.topic,
                "publishing the client's will"
            );
            connection.queue_for_router(will_publish(will), 0);
        }
        // What the client sent before it left (a PUBLISH followed at once by
        // DISCONNECT, say) still goes to the router; a SUBSCRIBE of a client
        // that left need not.
        if connection.link.is_none() {
            connection
                .for_router
                .retain(|(packet, _)| matches!(packet, Packet::Publish(..)));
        }
        if !matches!(end, End::RouterGone) {
            let _ = connection.hand_over().await;
        }
        if let Some(link) = connection.link.take() {
            if connect.clean_session {
                link.close(|_| {}).await;
            } else {
                // Messages still on their way to a persistent session are
                // kept with it, to be sent when the client comes back.
                let mut late = Vec::new();
                link.close(|forward| late.push(forward)).await;
                for forward in late {
                    connection.deliver(forward);
                }
            }
        }
        (!connect.clean_session).then(|| std::mem::take(&mut connection.session))
    }
}

/// Says in the log how a client's connection ended.
fn log_end(name: &str, end: &End) {
    match end {
        End::Disconnect => info!(client = name, "client disconnected"),
        End::ClientGone(None) => info!(client = name, "client closed the connection"),
        End::ClientGone(Some(error)) => info!(client = name, %error, "client connection failed"),
        End::Violation(violation) => warn!(client = name, "closing the connection: {violation}"),
        End::KeepAliveExpired(grace) => warn!(
            client = name,
            "closing the connection: nothing from the client for {grace:?}, 1.5 x its keep-alive [MQTT-3.1.2-24]"
        ),
        End::Kicked => info!(
            client = name,
            "closing the connection: taken over, or the broker stops"
        ),
        End::RouterGone => warn!(client = name, "the router dropped the client"),
    }
}

/// The will as a PUBLISH for the router, marked with its QoS like any
/// other message (see `publish.rs`).
fn will_publish(will: &Will) -> Packet {
    let empty = will.payload.is_empty() && !will.retain;
    let payload = if empty {
        Bytes::from_static(b"\0")
    } else {
        will.payload.clone()
    };
    let message = Publish::new(
        Bytes::copy_from_slice(will.topic.as_bytes()),
        payload,
        will.retain,
    );
    Packet::Publish(message, publish::marks(will.qos, empty))
}
