//! A client's session (spec §4.1): its subscriptions with the QoS it asked
//! for, the messages routed to it and not yet sent (its mailbox), the QoS 1
//! and 2 messages it has not yet acknowledged, and the QoS 2 packet ids it
//! has not yet released.
//!
//! The subscriptions are in the broker's topic tree too (`topics.rs`), under
//! the session's key; the session keeps its own list, to end them all with
//! it. For a client with a persistent session (clean session 0) all of it
//! outlives the connection, in [`Sessions`], and its mailbox keeps filling
//! until the client comes back or connects with a clean session; `sweep`
//! ends it when its MQTT 5 expiry comes, and publishes delayed wills.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::protocol::Packet;
use tokio::sync::Notify;

use super::Door;
use super::mailbox::Mailbox;
use super::topics::ClientKey;

/// Where one of our QoS 1 or 2 deliveries stands with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1, sent: waiting for PUBACK.
    AwaitingPuback,
    /// QoS 2, sent: waiting for PUBREC.
    AwaitingPubrec,
    /// QoS 2, PUBREC in, PUBREL sent: waiting for PUBCOMP.
    AwaitingPubcomp,
}

/// One delivery the client has not yet acknowledged.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub stage: Stage,
    /// The PUBLISH as sent, for a persistent session to send again (with
    /// DUP set) when the client reconnects [MQTT-4.4.0-1]; `None` for a
    /// clean session, which ends with its connection.
    pub packet: Option<Bytes>,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// The session's key in the topic tree.
    pub key: ClientKey,
    /// Messages routed to the session, not yet taken by its connection.
    pub mailbox: Arc<Mailbox>,
    /// Filters and the QoS the client asked for each.
    pub subscriptions: HashMap<String, u8>,
    /// Our deliveries not yet acknowledged, by packet id, in the order sent
    /// (ids wrap around; a BTreeMap keeps them sorted, and `resend` starts
    /// after the newest).
    in_flight: BTreeMap<u16, InFlight>,
    /// The last packet id we used.
    last_id: u16,
    /// QoS 2 PUBLISHes from the client that we passed on and acknowledged
    /// (PUBREC), whose PUBREL has not come yet: a PUBLISH again with one of
    /// these ids is the same message sent again, not a new one [MQTT-4.3.3-2].
    pub awaiting_pubrel: HashSet<u16>,
    /// MQTT 5: a will whose Will Delay Interval runs while the client is
    /// away: published when it runs out or the session ends, whichever
    /// comes first, and never if the client comes back to the session
    /// before [MQTT-3.1.3-9].
    pub will: Option<DelayedWill>,
}

/// A will waiting for its delay to run out.
#[derive(Debug)]
pub struct DelayedWill {
    /// The will, as the router takes a message.
    pub packet: Packet,
    pub due: Instant,
}

impl Session {
    /// A session with nothing in it yet, known in the topic tree as `key`.
    pub fn new(key: ClientKey, mailbox: Arc<Mailbox>) -> Self {
        Session {
            key,
            mailbox,
            subscriptions: HashMap::new(),
            in_flight: BTreeMap::new(),
            last_id: 0,
            awaiting_pubrel: HashSet::new(),
            will: None,
        }
    }

    /// How many of our QoS 1 and 2 deliveries the client has not yet
    /// acknowledged (for MQTT 5's Receive Maximum, `publish5.rs`).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A free packet id for a new delivery, 1 to 65535 [MQTT-2.3.1-1], or
    /// `None` if all 65,535 are waiting for the client.
    pub fn next_id(&mut self) -> Option<u16> {
        if self.in_flight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_id = self.last_id % u16::MAX + 1;
            if !self.in_flight.contains_key(&self.last_id) {
                return Some(self.last_id);
            }
        }
    }

    /// Records a delivery sent with `id`.
    pub fn sent(&mut self, id: u16, stage: Stage, packet: Option<Bytes>) {
        self.in_flight.insert(id, InFlight { stage, packet });
    }

    /// The client acknowledged `id` with PUBACK or PUBCOMP: it is done.
    /// Returns whether we were waiting for that.
    pub fn done(&mut self, id: u16, expected: Stage) -> bool {
        match self.in_flight.get(&id) {
            Some(entry) if entry.stage == expected => {
                self.in_flight.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// The client sent PUBREC for `id`: the message is delivered, and we
    /// answer PUBREL. Returns whether `id` was one of ours awaiting it.
    pub fn received(&mut self, id: u16) -> bool {
        match self.in_flight.get_mut(&id) {
            Some(entry) if entry.stage != Stage::AwaitingPuback => {
                entry.stage = Stage::AwaitingPubcomp;
                entry.packet = None;
                true
            }
            _ => false,
        }
    }

    /// On a reconnect with the session kept: what to send again, in the
    /// order first sent [MQTT-4.4.0-1]: each unacknowledged PUBLISH with
    /// DUP set [MQTT-3.3.1-1], and a PUBREL for each PUBREC we had.
    pub fn resend(&self) -> Vec<Resend> {
        // Ids after the last one used were sent before it wrapped around.
        let (newer, older): (Vec<_>, Vec<_>) = self
            .in_flight
            .iter()
            .partition(|(id, _)| **id <= self.last_id);
        older
            .into_iter()
            .chain(newer)
            .map(|(id, entry)| match (&entry.packet, entry.stage) {
                (Some(packet), Stage::AwaitingPuback | Stage::AwaitingPubrec) => {
                    Resend::Publish(with_dup(packet))
                }
                _ => Resend::Pubrel(*id),
            })
            .collect()
    }
}

/// What [`Session::resend`] sends again.
#[derive(Debug)]
pub enum Resend {
    Publish(Bytes),
    Pubrel(u16),
}

/// A PUBLISH with its DUP flag (fixed header bit 3) set.
fn with_dup(packet: &Bytes) -> Bytes {
    let mut copy = packet.to_vec();
    if let Some(first) = copy.first_mut() {
        *first |= 0b1000;
    }
    Bytes::from(copy)
}

/// The persistent sessions of clients that are away, by client id.
#[derive(Debug, Default)]
pub struct Sessions {
    kept: Mutex<HashMap<String, Kept>>,
    /// Wakes the sweeper (`frontdoor.rs`) when a session with an expiry
    /// or a delayed will is kept.
    changed: Notify,
}

/// A session kept for its client's return, and when it ends if the client
/// does not come back (`None`: never).
#[derive(Debug)]
struct Kept {
    session: Session,
    expires: Option<Instant>,
}

impl Sessions {
    /// The table; a poisoned lock (a panic elsewhere) still holds a whole
    /// table, so we go on with it.
    fn kept(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        match self.kept.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes the session kept for `id`, if any.
    pub fn take(&self, id: &str) -> Option<Session> {
        self.kept().remove(id).map(|kept| kept.session)
    }

    /// Keeps `session` for `id` until the client comes back, or for
    /// `expiry_secs` seconds (MQTT 5's Session Expiry Interval, spec
    /// §3.1.2.11.2; `u32::MAX` is for ever, as for every 3.1.1 persistent
    /// session). Returns the session it replaces, if one was kept for `id`
    /// already (its client reconnected before the old connection had
    /// finished), to be ended.
    pub fn keep(&self, id: &str, session: Session, expiry_secs: u32) -> Option<Session> {
        let expires = (expiry_secs != u32::MAX)
            .then(|| Instant::now() + Duration::from_secs(u64::from(expiry_secs)));
        if expires.is_some() || session.will.is_some() {
            self.changed.notify_one();
        }
        self.kept()
            .insert(id.to_string(), Kept { session, expires })
            .map(|kept| kept.session)
    }

    /// Resolves when a session with an expiry or a delayed will has been
    /// kept since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The next moment a kept session expires or a delayed will is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.kept()
            .values()
            .flat_map(|kept| {
                [
                    kept.expires,
                    kept.session.will.as_ref().map(|will| will.due),
                ]
            })
            .flatten()
            .min()
    }

    /// Takes the delayed wills that are due by `now` from the sessions kept
    /// (see [`Session::will`]).
    pub fn due_wills(&self, now: Instant) -> Vec<Packet> {
        let mut kept = self.kept();
        let mut due = Vec::new();
        for kept in kept.values_mut() {
            if kept
                .session
                .will
                .as_ref()
                .is_some_and(|will| will.due <= now)
                && let Some(will) = kept.session.will.take()
            {
                due.push(will.packet);
            }
        }
        due
    }

    /// Removes and returns the sessions whose expiry has come by `now`, to
    /// be ended: the interval a client gave is how long its session outlives
    /// the connection (spec §3.1.2.11.2), and no longer.
    pub fn expired(&self, now: Instant) -> Vec<Session> {
        let mut kept = self.kept();
        let due: Vec<String> = kept
            .iter()
            .filter(|(_, kept)| kept.expires.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        due.iter()
            .filter_map(|id| kept.remove(id))
            .map(|kept| kept.session)
            .collect()
    }
}

/// Ends the sessions whose expiry has come and publishes the wills whose
/// delay has run out, each at its moment, until the broker stops. An idle
/// broker with nothing to expire never wakes for it.
pub(super) async fn sweep(door: Arc<Door>) {
    loop {
        let next = door.sessions.next_deadline();
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = door.stop.cancelled() => return,
            () = door.sessions.changed() => {}
            () = wait => {}
        }
        let now = std::time::Instant::now();
        for session in door.sessions.expired(now) {
            door.end_session(session);
        }
        for will in door.sessions.due_wills(now) {
            door.publish_will(will);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(1, Arc::new(Mailbox::new("c", 1000, 100)))
    }

    /// Packet ids skip the ones still in flight, and wrap from 65535 to 1.
    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut session = session();
        let first = session.next_id().unwrap();
        session.sent(first, Stage::AwaitingPuback, None);
        session.last_id = u16::MAX - 1;
        assert_eq!(session.next_id(), Some(u16::MAX));
        session.last_id = 0;
        assert_eq!(session.next_id(), Some(2));
        assert!(session.done(first, Stage::AwaitingPuback));
        assert!(!session.done(first, Stage::AwaitingPuback));
    }

    /// A reconnect resends in the order first sent, across the wrap.
    #[test]
    fn resends_in_the_order_sent() {
        let mut session = session();
        let packet = Bytes::from_static(&[0x32, 5, 0, 1, b't', 0, 9]);
        session.sent(65_000, Stage::AwaitingPuback, Some(packet.clone()));
        session.sent(1, Stage::AwaitingPubcomp, None);
        session.last_id = 1;
        let resent = session.resend();
        assert!(matches!(&resent[0], Resend::Publish(p) if p[0] == 0x3a));
        assert!(matches!(resent[1], Resend::Pubrel(1)));
    }
}
