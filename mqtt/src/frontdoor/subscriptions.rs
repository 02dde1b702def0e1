//! A client's subscriptions, as the front door keeps them: each filter
//! with the QoS the client asked for, so that each message can be delivered
//! at the lower of its own QoS and the subscription's [MQTT-3.8.4-6].

/// Filters and the QoS the client asked for each.
#[derive(Debug, Default)]
pub struct Subscriptions {
    filters: Vec<(String, u8)>,
}

impl Subscriptions {
    /// Adds a filter, or replaces its QoS [MQTT-3.8.4-3]. Returns whether
    /// the filter is new.
    pub fn set(&mut self, filter: &str, qos: u8) -> bool {
        match self.filters.iter_mut().find(|(f, _)| f == filter) {
            Some(entry) => {
                entry.1 = qos;
                false
            }
            None => {
                self.filters.push((filter.to_string(), qos));
                true
            }
        }
    }

    /// Removes a filter; returns whether the client had it.
    pub fn remove(&mut self, filter: &str) -> bool {
        let before = self.filters.len();
        self.filters.retain(|(f, _)| f != filter);
        self.filters.len() != before
    }

    /// Another filter of the client's that reads the same topics as
    /// `filter` in a different way: `a/b` and `$share/g/a/b`, or two share
    /// groups of `a/b`. rumqttd keeps one log per topic filter and would
    /// give one client two readers of the same log.
    pub fn shares_log_with(&self, filter: &str) -> Option<&str> {
        let log = log_of(filter);
        self.filters
            .iter()
            .map(|(f, _)| f.as_str())
            .find(|f| *f != filter && log_of(f) == log)
    }

    /// The QoS a message on `topic` may be delivered at: the highest of the
    /// client's matching filters (the router sends one copy per filter, and
    /// we cannot tell which copy is for which), or 0 if none matches any
    /// more.
    pub fn qos_for(&self, topic: &str) -> u8 {
        self.filters
            .iter()
            .filter(|(filter, _)| matches(filter, topic))
            .map(|(_, qos)| *qos)
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
