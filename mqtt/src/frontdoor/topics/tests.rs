//! The topic tree's tests: matching as spec §4.7 says, one copy per
//! client, share groups taking turns, and pruning.

use super::super::retained::Retained;
use super::*;

fn routed(topics: &mut Topics, topic: &str) -> Vec<(ClientKey, u8)> {
    let mut out = Vec::new();
    topics.route(topic, &mut out);
    let mut out: Vec<_> = out.iter().map(|route| (route.key, route.options)).collect();
    out.sort_unstable();
    out
}

/// The examples of spec §4.7.1 and §4.7.2, each as a one-filter tree.
#[test]
fn matches_as_the_spec_says() {
    let matching = [
        ("sport/tennis/player1/#", "sport/tennis/player1"),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
        ("sport/#", "sport"),
        ("#", "a/b"),
        ("sport/tennis/+", "sport/tennis/player1"),
        ("+/+", "/finance"),
        ("/+", "/finance"),
        ("$SYS/#", "$SYS/x"),
        ("$SYS/+", "$SYS/x"),
        ("$share/g/a/+", "a/b"),
        ("a//b", "a//b"),
    ];
    let not_matching = [
        ("sport/tennis/+", "sport/tennis/player1/ranking"),
        ("sport/+", "sport"),
        ("+", "/finance"),
        ("#", "$SYS/x"),
        ("+/monitor/Clients", "$SYS/monitor/Clients"),
        ("a/b", "a/b/c"),
        ("a/b/c", "a/b"),
    ];
    for (filter, topic, expected) in matching
        .iter()
        .map(|(f, t)| (f, t, true))
        .chain(not_matching.iter().map(|(f, t)| (f, t, false)))
    {
        let mut topics = Topics::default();
        topics.subscribe(1, filter, Subscription::with(1));
        assert_eq!(
            !routed(&mut topics, topic).is_empty(),
            expected,
            "{filter} {topic}"
        );
        let mut retained = Retained::default();
        retained.set(topic, Some(7));
        let mut found = Vec::new();
        retained.matching(
            filter.strip_prefix("$share/g/").unwrap_or(filter),
            &mut found,
        );
        assert_eq!(!found.is_empty(), expected, "retained {filter} {topic}");
    }
}

/// Overlapping filters give one copy at the highest QoS; each client
/// gets its own.
#[test]
fn one_copy_per_client_at_the_highest_qos() {
    let mut topics = Topics::default();
    topics.subscribe(1, "a/#", Subscription::with(0));
    topics.subscribe(1, "a/+/c", Subscription::with(2));
    topics.subscribe(1, "a/b/c", Subscription::with(1));
    topics.subscribe(2, "#", Subscription::with(1));
    assert_eq!(routed(&mut topics, "a/b/c"), [(1, 2), (2, 1)]);
    assert_eq!(routed(&mut topics, "a/x"), [(1, 0), (2, 1)]);
    assert!(!topics.subscribe(1, "a/#", Subscription::with(1)));
    assert_eq!(routed(&mut topics, "a/x"), [(1, 1), (2, 1)]);
    assert_eq!(topics.len(), 4);
}

/// A share group's members take turns; a member that leaves is skipped.
#[test]
fn share_groups_take_turns() {
    let mut topics = Topics::default();
    for client in 1..=3 {
        topics.subscribe(client, "$share/g/t/+", Subscription::with(1));
    }
    topics.subscribe(9, "$share/other/t/+", Subscription::with(0));
    let firsts: Vec<_> = (0..6).map(|_| routed(&mut topics, "t/x")[0].0).collect();
    assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
    assert!(routed(&mut topics, "t/x").contains(&(9, 0)));
    assert!(topics.unsubscribe(2, "$share/g/t/+"));
    let firsts: Vec<_> = (0..4).map(|_| routed(&mut topics, "t/x")[0].0).collect();
    assert!(!firsts.contains(&2));
}

/// Once every subscription is gone, so is every node.
#[test]
fn unsubscribing_everything_leaves_an_empty_tree() {
    let mut topics = Topics::default();
    for id in 0..1000 {
        assert!(topics.subscribe(id % 7, &format!("devices/{id}/cmd"), Subscription::with(1)));
        topics.subscribe(id % 7, &format!("$share/g{id}/x/#"), Subscription::with(0));
    }
    assert_eq!(topics.len(), 2000);
    for id in 0..1000 {
        assert!(topics.unsubscribe(id % 7, &format!("devices/{id}/cmd")));
        assert!(topics.unsubscribe(id % 7, &format!("$share/g{id}/x/#")));
    }
    assert!(!topics.unsubscribe(0, "devices/0/cmd"));
    assert!(topics.is_empty());
    assert!(topics.root.is_empty());
    assert!(topics.root.children.capacity() <= 64);
}

/// [MQTT-3.3.4-4]: the one copy a client gets carries the identifiers of
/// all its matching subscriptions that have one; a share group's member
/// gets its own subscription's.
#[test]
fn one_copy_carries_every_matching_identifier() {
    let mut topics = Topics::default();
    let with_id = |options, id| Subscription { options, id };
    topics.subscribe(1, "a/#", with_id(0, 5));
    topics.subscribe(1, "a/+", with_id(1, 7));
    topics.subscribe(1, "a/b", Subscription::with(2));
    topics.subscribe(2, "$share/g/a/b", with_id(1, 9));
    let mut out = Vec::new();
    topics.route("a/b", &mut out);
    out.sort_unstable_by_key(|route| route.key);
    out[0].ids.sort_unstable();
    assert_eq!(
        out,
        [
            Route {
                key: 1,
                options: 2,
                ids: vec![5, 7]
            },
            Route {
                key: 2,
                options: 1,
                ids: vec![9]
            },
        ]
    );
    // A repeated SUBSCRIBE replaces the identifier too [MQTT-3.8.4-3].
    assert!(!topics.subscribe(1, "a/#", Subscription::with(0)));
    topics.route("a/c", &mut out);
    assert_eq!(
        out,
        [Route {
            key: 1,
            options: 1,
            ids: vec![7]
        }]
    );
}
