//! A client's subscriptions, as the front door keeps them: each filter
//! with the QoS the client asked for, so that each message can be delivered
//! at the lower of its own QoS and the subscription's [MQTT-3.8.4-6].
//!
//! Each subscription has a number, which the router gets with the filter as
//! an MQTT 5 *subscription identifier* (spec 5.0 §3.8.2.1.2) and puts on every
//! message it forwards for that filter. So we know, for each message, which
//! subscription it came through: its QoS, without matching the topic
//! against every filter, and its place in that filter's log, which shows
//! when the router's log dropped messages before the client read them.

use std::collections::HashMap;

/// One subscription.
#[derive(Debug)]
pub struct Subscription {
    pub filter: String,
    /// The QoS the client asked for.
    pub qos: u8,
    /// The offset in the router's log that the next message should have.
    next: Option<u64>,
}

/// A client's subscriptions, by filter and by identifier.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Slot `id - 1` holds subscription `id` (identifiers start at 1).
    slots: Vec<Option<Subscription>>,
    ids: HashMap<String, usize>,
    /// Identifiers free for reuse.
    free: Vec<usize>,
}

impl Subscriptions {
    /// Adds a filter, or replaces its QoS [MQTT-3.8.4-3]. Returns the new
    /// subscription's identifier, or `None` if the filter was there already.
    pub fn set(&mut self, filter: &str, qos: u8) -> Option<usize> {
        if let Some(&id) = self.ids.get(filter) {
            if let Some(Some(subscription)) = self.slots.get_mut(id - 1) {
                subscription.qos = qos;
            }
            return None;
        }
        let subscription = Subscription {
            filter: filter.to_string(),
            qos,
            next: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id - 1] = Some(subscription);
                id
            }
            None => {
                self.slots.push(Some(subscription));
                self.slots.len()
            }
        };
        self.ids.insert(filter.to_string(), id);
        Some(id)
    }

    /// Removes a filter; returns whether the client had it.
    pub fn remove(&mut self, filter: &str) -> bool {
        let Some(id) = self.ids.remove(filter) else {
            return false;
        };
        self.slots[id - 1] = None;
        self.free.push(id);
        true
    }

    /// The subscription with identifier `id`.
    pub fn get(&self, id: usize) -> Option<&Subscription> {
        self.slots.get(id.checked_sub(1)?)?.as_ref()
    }

    /// Every subscription, with its identifier.
    pub fn all(&self) -> impl Iterator<Item = (usize, &Subscription)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| Some((slot + 1, s.as_ref()?)))
    }

    /// Records that a message at `offset` of subscription `id`'s log has
    /// come, and returns how many messages the log skipped before it: the
    /// router dropped them before this client read them. (A shared
    /// subscription's members take turns, so their offsets skip by design:
    /// none are counted.)
    pub fn arrived(&mut self, id: usize, offset: u64) -> u64 {
        let Some(Some(subscription)) = id.checked_sub(1).and_then(|slot| self.slots.get_mut(slot))
        else {
            return 0;
        };
        let skipped = match subscription.next {
            Some(next) if !subscription.filter.starts_with("$share/") => {
                offset.saturating_sub(next)
            }
            _ => 0,
        };
        subscription.next = Some(offset + 1);
        skipped
    }

    /// Another filter of the client's that reads the same topics as
    /// `filter` in a different way: `a/b` and `$share/g/a/b`, or two share
    /// groups of `a/b`. rumqttd keeps one log per topic filter and would
    /// give one client two readers of the same log.
    pub fn shares_log_with(&self, filter: &str) -> Option<&str> {
        let log = log_of(filter);
        self.ids
            .keys()
            .map(String::as_str)
            .find(|f| *f != filter && log_of(f) == log)
    }

    /// The one subscription whose filter matches `topic`, if exactly one
    /// does.
    pub fn only_match(&self, topic: &str) -> Option<usize> {
        let mut matching = self.all().filter(|(_, s)| matches(&s.filter, topic));
        let (id, _) = matching.next()?;
        matching.next().is_none().then_some(id)
    }

    /// The QoS a message on `topic` may be delivered at when it comes
    /// without a subscription identifier: the highest of the client's
    /// matching filters, or 0 if none matches any more.
    pub fn qos_for(&self, topic: &str) -> u8 {
        self.all()
            .filter(|(_, s)| matches(&s.filter, topic))
            .map(|(_, s)| s.qos)
            .max()
            .unwrap_or(0)
    }
}

/// The filter whose log a subscription reads: `$share/group/filter` reads
/// `filter`'s.
fn log_of(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(filter, |(_, filter)| filter),
        None => filter,
    }
}

/// Whether `topic` matches `filter` (spec §4.7): `+` is one whole level,
/// `#` the rest, and wildcards at the start do not match `$` topics
/// [MQTT-4.7.2-1]. A shared subscription `$share/group/filter` matches as
/// its filter.
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, filter)| filter),
        None => filter,
    };
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            level => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identifiers start at 1, are reused once free, and find their filter;
    /// a gap in a filter's offsets is counted, a shared one's is not.
    #[test]
    fn identifiers_and_offsets() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.set("a/+", 1), Some(1));
        assert_eq!(subs.set("$share/g/b", 0), Some(2));
        assert_eq!(subs.set("a/+", 2), None);
        assert_eq!(subs.get(1).map(|s| s.qos), Some(2));
        assert_eq!(subs.only_match("a/x"), Some(1));
        assert_eq!(subs.arrived(1, 10), 0);
        assert_eq!(subs.arrived(1, 11), 0);
        assert_eq!(subs.arrived(1, 15), 3);
        assert_eq!(subs.arrived(2, 4), 0);
        assert_eq!(subs.arrived(2, 9), 0);
        assert!(subs.remove("a/+"));
        assert!(!subs.remove("a/+"));
        assert_eq!(subs.set("c", 0), Some(1));
        assert_eq!(subs.shares_log_with("b"), Some("$share/g/b"));
    }

    /// The examples of spec §4.7.1 and §4.7.2.
    #[test]
    fn matches_as_the_spec_says() {
        for (filter, topic) in [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            ("sport/#", "sport"),
            ("#", "a/b"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("$SYS/#", "$SYS/x"),
            ("$share/g/a/+", "a/b"),
        ] {
            assert!(matches(filter, topic), "{filter} {topic}");
        }
        for (filter, topic) in [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("#", "$SYS/x"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("a/b", "a/b/c"),
        ] {
            assert!(!matches(filter, topic), "{filter} {topic}");
        }
    }
}
