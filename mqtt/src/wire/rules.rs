//! What the spec allows in a packet beyond its framing: topic names and
//! filters (spec §4.7), and the fixed header's reserved flags (§2.2.2).
//! A packet that breaks one of these is a [`Violation`]: the connection is
//! closed.

use super::{Frame, Violation, kind, violation};

/// A PUBLISH's topic name as the spec allows it: at least one character
/// [MQTT-4.7.3-1] and no wildcard [MQTT-3.3.2-2]. The packet is well
/// formed either way: MQTT 5 calls both a Protocol Error (§3.3.2.1), 0x82.
pub fn check_topic_name(topic: &str) -> Result<(), Violation> {
    if topic.is_empty() {
        return Err(Violation::protocol(
            "PUBLISH to an empty topic name, without a Topic Alias [MQTT-4.7.3-1]",
        ));
    }
    if topic.contains(['+', '#']) {
        return Err(Violation::protocol(format!(
            "PUBLISH topic name {topic:?} contains a wildcard [MQTT-3.3.2-2]"
        )));
    }
    Ok(())
}

/// A topic filter as the spec allows it: at least one character
/// [MQTT-4.7.3-1]; `#` only as the whole last level [MQTT-4.7.1-2]; `+` only
/// as a whole level [MQTT-4.7.1-3]; a shared one, `$share/<group>/<filter>`,
/// with a group name of at least one character, then `/` and a filter
/// [MQTT-4.8.2-1, MQTT-4.8.2-2].
pub fn check_topic_filter(filter: &str) -> Result<(), Violation> {
    if filter.is_empty() {
        return Err(violation("empty topic filter [MQTT-4.7.3-1]"));
    }
    if let Some(shared) = filter.strip_prefix("$share/") {
        match shared.split_once('/') {
            Some((group, rest)) if !group.is_empty() && !rest.is_empty() => {}
            _ => {
                return Err(violation(format!(
                    "shared subscription {filter:?} needs $share/<group>/<filter> \
                     [MQTT-4.8.2-1, MQTT-4.8.2-2]"
                )));
            }
        }
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || index + 1 != levels.len()) {
            return Err(violation(format!(
                "topic filter {filter:?}: '#' must be the whole last level [MQTT-4.7.1-2]"
            )));
        }
        if level.contains('+') && *level != "+" {
            return Err(violation(format!(
                "topic filter {filter:?}: '+' must be a whole level [MQTT-4.7.1-3]"
            )));
        }
    }
    Ok(())
}

/// Checks a fixed header's flags against the spec: they are reserved (and
/// must be as Table 2.2 gives them) for every packet but PUBLISH
/// [MQTT-2.2.2-1, MQTT-2.2.2-2].
pub fn check_flags(frame: &Frame) -> Result<(), Violation> {
    let expected = match frame.kind {
        kind::PUBLISH => {
            if frame.qos() == 3 {
                return Err(violation("PUBLISH with QoS 3 [MQTT-3.3.1-4]"));
            }
            return Ok(());
        }
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    if frame.flags != expected {
        return Err(violation(format!(
            "packet type {} with reserved flags {:#06b} [MQTT-2.2.2-2]",
            frame.kind, frame.flags
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters §4.7.1 allows and the ones it forbids.
    #[test]
    fn checks_topic_filters() {
        for good in ["#", "+", "a/#", "a/+/c", "+/+", "/", "$SYS/#", "a//b"] {
            assert!(check_topic_filter(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a/b#",
            "a+/b",
            "a/+b",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/g+/a",
        ] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }
}
