//! The dispatcher: where each message the router carries is routed to the
//! sessions that subscribed to it.
//!
//! Every client's PUBLISH reaches rumqttd's router as it was sent (its
//! bytes, under one topic of ours, [`ROUTER_TOPIC`]): the router appends it
//! to its log, in the order it takes them from all the clients' links, and
//! forwards it to one reader, this dispatcher. The dispatcher looks the
//! topic up in the front door's topic tree ([`Topics`]), keeps or clears
//! the topic's retained message, and puts a [`Delivery`] in the mailbox of
//! each session it goes to (`mailbox.rs`).
//!
//! Why not let rumqttd route, as it can? It keeps a log for every filter
//! and a record for every topic it has ever seen, and never forgets one: a
//! client that subscribes to 10,000 filters and leaves costs the broker
//! about 75 MB for as long as it runs. With one filter and one topic, what
//! the router keeps is fixed, and what the tree keeps goes when the
//! subscriptions that need it go.
//!
//! The table (tree, retained messages, mailboxes) is behind one lock, taken
//! by the dispatcher once per batch and by a connection once per SUBSCRIBE
//! or UNSUBSCRIBE. So a new subscription gets the retained messages from
//! before it, and the live ones from after it, never one message twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, warn};

use super::carry::parse;
use super::link::{Failed, Link};
use super::mailbox::{Delivery, Mailbox, Message};
use super::retained::Retained;
use super::router::{ROUTER_TOPIC, Router, pipe_cost, router_subscribe};
use super::sys::{self, Stats};
use super::topics::options::{NO_LOCAL, QOS, RETAIN_AS_PUBLISHED};
use super::topics::{ClientKey, Route, Subscription, Topics};

/// Notifications taken from the router per batch.
const TAKE_PER_TURN: usize = 1024;

/// What the broker knows about who gets what: every session's mailbox and
/// subscriptions, and the retained messages.
#[derive(Debug, Default)]
pub struct Table {
    topics: Topics,
    retained: Retained<Message>,
    mailboxes: HashMap<ClientKey, Arc<Mailbox>>,
    next_key: ClientKey,
    /// How many times a retained message was set or cleared, for the
    /// persistence file's saver (`persist.rs`).
    retained_changes: u64,
    /// Scratch space, kept to save an allocation per message.
    routes: Vec<Route>,
    found: Vec<Message>,
}

impl Table {
    /// A new session for client `name`: its key and its mailbox (see
    /// [`Mailbox::new`] for `limit` and `largest`).
    pub fn open(&mut self, name: &str, limit: usize, largest: usize) -> (ClientKey, Arc<Mailbox>) {
        self.next_key += 1;
        let mailbox = Arc::new(Mailbox::new(name, limit, largest));
        self.mailboxes.insert(self.next_key, mailbox.clone());
        (self.next_key, mailbox)
    }

    /// Ends session `key`: its `filters` and its mailbox go.
    pub fn close<'f>(&mut self, key: ClientKey, filters: impl IntoIterator<Item = &'f str>) {
        for filter in filters {
            self.topics.unsubscribe(key, filter);
        }
        self.mailboxes.remove(&key);
    }

    /// Subscribes session `key` to `filter` (checked) with `subscription`'s
    /// options (the QoS and MQTT 5's flags, see [`super::topics::options`])
    /// and identifier, or gives its subscription the new ones
    /// [MQTT-3.8.4-3]; either way the retained
    /// messages the filter matches go to its mailbox [MQTT-3.3.1-6,
    /// MQTT-3.8.4-3], except for a shared subscription, whose members
    /// get only what is published after (as with Mosquitto). Returns whether
    /// the subscription is new.
    /// MQTT 5's Retain Handling option can ask for less ([`Retain`]).
    pub fn subscribe(
        &mut self,
        key: ClientKey,
        filter: &str,
        subscription: Subscription,
        retain: Retain,
    ) -> bool {
        let new = self.topics.subscribe(key, filter, subscription);
        let send = match retain {
            Retain::Send => true,
            Retain::SendIfNew => new,
            Retain::DontSend => false,
        };
        if !send || filter.starts_with("$share/") {
            return new;
        }
        let Some(mailbox) = self.mailboxes.get(&key) else {
            return new;
        };
        self.found.clear();
        self.retained.matching(filter, &mut self.found);
        for message in self.found.drain(..) {
            mailbox.push(Delivery {
                qos: message.qos.min(subscription.options & QOS),
                retain: true,
                message,
                subscription_ids: match subscription.id {
                    0 => Box::default(),
                    id => Box::new([id]),
                },
            });
        }
        new
    }

    /// Removes session `key`'s subscription to `filter`; returns whether it
    /// had one.
    pub fn unsubscribe(&mut self, key: ClientKey, filter: &str) -> bool {
        self.topics.unsubscribe(key, filter)
    }

    /// Whether a message to `topic` would reach any session now.
    pub fn any_subscriber(&self, topic: &str) -> bool {
        self.topics.any_match(topic)
    }

    /// Routes one message: a retained one replaces the topic's retained
    /// message, or with an empty payload clears it [MQTT-3.3.1-10]; then it
    /// goes to every session that subscribed, once each, with RETAIN clear
    /// [MQTT-3.3.1-9].
    pub fn dispatch(&mut self, message: Message) {
        let topic = std::str::from_utf8(&message.topic).unwrap_or("");
        if message.retain {
            let kept = (!message.payload.is_empty()).then(|| message.clone());
            self.retained.set(topic, kept);
            // `$SYS` is the broker's own, made anew at every start.
            if !topic.starts_with(sys::PREFIX) {
                self.retained_changes += 1;
            }
        }
        self.topics.route(topic, &mut self.routes);
        for Route { key, options, ids } in self.routes.drain(..) {
            // MQTT 5's No Local: not to the session that published it
            // [MQTT-3.8.3-3]; Retain As Published: RETAIN as it came
            // [MQTT-3.3.1-12, MQTT-3.3.1-13].
            if options & NO_LOCAL != 0 && message.publisher == Some(key) {
                continue;
            }
            if let Some(mailbox) = self.mailboxes.get(&key) {
                mailbox.push(Delivery {
                    message: message.clone(),
                    qos: message.qos.min(options & QOS),
                    retain: options & RETAIN_AS_PUBLISHED != 0 && message.retain,
                    subscription_ids: ids.into_boxed_slice(),
                });
            }
        }
    }

    /// How many times a retained message was set or cleared so far.
    pub fn retained_changes(&self) -> u64 {
        self.retained_changes
    }

    /// Every retained message, but those whose Message Expiry has passed
    /// and `$SYS`'s.
    pub fn retained_messages(&self) -> Vec<Message> {
        let mut all = Vec::new();
        self.retained.all(&mut all);
        let now = std::time::Instant::now();
        all.retain(|message| {
            message.expires.is_none_or(|at| at > now) && !message.topic.starts_with(b"$SYS/")
        });
        all
    }

    /// How many topics hold a retained message, but `$SYS`'s.
    pub fn retained_count_without_sys(&self) -> usize {
        let mut sys = Vec::new();
        self.retained.matching("$SYS/#", &mut sys);
        self.retained.len() - sys.len()
    }

    /// Puts back retained messages read from the persistence file.
    pub fn restore_retained(&mut self, messages: Vec<Message>) {
        for message in messages {
            let topic = String::from_utf8_lossy(&message.topic).into_owned();
            self.retained.set(&topic, Some(message));
        }
    }

    /// How much the table holds: sessions, subscriptions, retained messages.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.mailboxes.len(), self.topics.len(), self.retained.len())
    }
}

/// The table, shared by the dispatcher and every connection.
#[derive(Debug, Default)]
pub struct Shared {
    table: Mutex<Table>,
    /// The counters behind `$SYS` (`sys.rs`).
    pub stats: Stats,
}

impl Shared {
    /// The table, locked.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock (a panic elsewhere) still holds a whole table.
        match self.table.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Which retained messages a new subscription brings: MQTT 5's Retain
/// Handling subscription option (spec §3.8.3.1); 3.1.1 always sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// 0: those matching the filter, at every SUBSCRIBE [MQTT-3.3.1-9].
    Send,
    /// 1: only if the subscription did not exist [MQTT-3.3.1-10].
    SendIfNew,
    /// 2: none [MQTT-3.3.1-11].
    DontSend,
}

/// The dispatcher's link, subscribed to every message: returns once the
/// router has answered the SUBSCRIBE, so that no message can reach the
/// router before the filter that keeps it for the dispatcher (rumqttd
/// keeps a message only in the logs of filters that exist when it comes).
/// Errors if the router refuses the link or has stopped.
pub async fn subscribe(router: &Router) -> Result<Link, Failed> {
    let mut link = router.link("%dispatcher").await?;
    link.push(router_subscribe(ROUTER_TOPIC));
    link.flush().await?;
    // Nothing is published yet, so the first notification is the SUBACK.
    let mut none = Vec::new();
    link.take(1, &mut none).await?;
    Ok(link)
}

/// Reads every message from the router and routes it, until the router
/// ends; returns why. Gives each message's room in the pipe back once it
/// is routed ([`Router::pipe`]).
pub async fn run(router: Router, mut link: Link, shared: Arc<Shared>) -> Failed {
    let pipe = router.pipe();
    let mut forwards = Vec::new();
    let mut next_offset = None;
    loop {
        let paused = match link.take(TAKE_PER_TURN, &mut forwards).await {
            Ok(paused) => paused,
            Err(failed) => return failed,
        };
        let mut routed = 0usize;
        {
            let mut table = shared.table();
            for forward in forwards.drain(..) {
                if let Some((_, offset)) = forward.cursor {
                    let skipped = next_offset.map_or(0, |next: u64| offset.saturating_sub(next));
                    if skipped > 0 {
                        error!(
                            skipped,
                            "the router's log dropped messages before they were routed"
                        );
                    }
                    next_offset = Some(offset + 1);
                }
                routed += pipe_cost(forward.publish.payload.len()) as usize;
                match parse(&forward.publish.payload) {
                    Some(message) => table.dispatch(message),
                    None => warn!("the router carried something that is not a PUBLISH"),
                }
            }
        }
        pipe.add_permits(routed);
        if paused && let Err(failed) = link.resume().await {
            return failed;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests;
