//! Who gets a message: the broker's topic tree (spec §4.7).
//!
//! Topic names and filters are paths of levels: `home/kitchen/temp` is the
//! levels `home`, `kitchen`, `temp`. Every filter some client holds is a
//! path in one tree, one node per level, and the node where a filter ends
//! lists the clients that hold it, each with the QoS it asked for. So a
//! message on `home/kitchen/temp` is matched by walking that path once,
//! taking at each level the child named like the level, the `+` child (any
//! one level) and the `#` child (everything below): the work grows with the
//! topic's levels and the subscriptions that match, not with how many
//! filters exist. When the last client leaves a filter, its nodes go, and
//! so does their memory.
//!
//! A client whose filters overlap (`home/#` and `home/+/temp`) gets one
//! copy of a message that matches both, at the higher of the two QoS
//! [MQTT-3.3.5-1]. A shared subscription, `$share/group/filter` (an MQTT 5
//! feature that brokers also offer to 3.1.1 clients), hangs a *group* on
//! the filter's node: each message goes to one member of the group, in
//! turn.
//!
//! `retained.rs` keeps retained messages in the same kind of tree.

use std::collections::HashMap;

/// How the broker tells its clients' sessions apart in the tree.
pub type ClientKey = u64;

/// What the tree keeps for each subscription: its options byte as SUBSCRIBE
/// carries it (spec §3.8.3.1): the QoS in bits 0-1 and, from MQTT 5, No
/// Local (bit 2) and Retain As Published (bit 3). Retain Handling only
/// matters at SUBSCRIBE time, and is not kept.
pub mod options {
    pub const QOS: u8 = 0b11;
    pub const NO_LOCAL: u8 = 0b100;
    pub const RETAIN_AS_PUBLISHED: u8 = 0b1000;
}

/// One subscription as the tree keeps it: 16 bytes with its client key,
/// as the options byte alone took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    /// Its options byte (see [`options`]).
    pub options: u8,
    /// MQTT 5's Subscription Identifier (1 to 268,435,455), which every
    /// message it brings carries back (spec §3.8.2.1.2); 0 for none.
    pub id: u32,
}

impl Subscription {
    /// A subscription with `options` and no identifier.
    pub fn with(options: u8) -> Self {
        Subscription { options, id: 0 }
    }
}

/// One client a message goes to, as [`Topics::route`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub key: ClientKey,
    /// Its matching subscriptions' options, combined.
    pub options: u8,
    /// The identifiers of its matching subscriptions that have one, for
    /// the single copy it gets [MQTT-3.3.4-4]; empty (no allocation) for
    /// most.
    pub ids: Vec<u32>,
}

/// One level of the tree: its children by level name (`+` and `#` are
/// names like any other here), and the subscriptions that end at it.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Clients that hold the filter ending here, with their options.
    subscribers: HashMap<ClientKey, Subscription>,
    /// `$share/<group>/...` subscriptions to the filter ending here.
    groups: HashMap<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// The members of one share group, who take turns.
#[derive(Debug, Default)]
struct Group {
    members: Vec<(ClientKey, Subscription)>,
    /// The member who gets the next message.
    next: usize,
}

/// Every subscription of every session, connected or away.
#[derive(Debug, Default)]
pub struct Topics {
    root: Node,
    /// Filters held, counting each client's separately.
    count: usize,
}

/// A filter as the tree stores it: its levels, and the share group for a
/// `$share/<group>/<filter>`.
fn parse(filter: &str) -> (Option<&str>, std::str::Split<'_, char>) {
    match filter.strip_prefix("$share/") {
        Some(rest) => {
            let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
            (Some(group), filter.split('/'))
        }
        None => (None, filter.split('/')),
    }
}

impl Topics {
    /// Adds `client`'s subscription to `filter` (already checked, spec
    /// §4.7.1), or gives the one it has the new options and identifier
    /// [MQTT-3.8.4-3]. Returns whether it is new.
    pub fn subscribe(
        &mut self,
        client: ClientKey,
        filter: &str,
        subscription: Subscription,
    ) -> bool {
        let (group, levels) = parse(filter);
        let mut node = &mut self.root;
        for level in levels {
            node = node.children.entry(level.into()).or_default();
        }
        let new = match group {
            None => node.subscribers.insert(client, subscription).is_none(),
            Some(group) => {
                let members = &mut node.groups.entry(group.into()).or_default().members;
                match members.iter_mut().find(|(key, _)| *key == client) {
                    Some(member) => {
                        member.1 = subscription;
                        false
                    }
                    None => {
                        members.push((client, subscription));
                        true
                    }
                }
            }
        };
        self.count += usize::from(new);
        new
    }

    /// Removes `client`'s subscription to `filter`, and every node no
    /// subscription needs any more. Returns whether it had one.
    pub fn unsubscribe(&mut self, client: ClientKey, filter: &str) -> bool {
        let (group, levels) = parse(filter);
        let levels: Vec<&str> = levels.collect();
        let removed = remove(&mut self.root, &levels, group, client);
        self.count -= usize::from(removed);
        removed
    }

    /// How many subscriptions the tree holds, counting each client's.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The clients a message on `topic` goes to, each once, with the
    /// highest QoS of its subscriptions that match [MQTT-3.3.5-1] and all
    /// their identifiers [MQTT-3.3.4-4]: written to `out` (cleared first),
    /// in no particular order. For each share group that matches, the
    /// member whose turn it is.
    pub fn route(&mut self, topic: &str, out: &mut Vec<Route>) {
        out.clear();
        let levels: Vec<&str> = topic.split('/').collect();
        // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match
        // a topic starting with `$`.
        let dollar = topic.starts_with('$');
        collect(&mut self.root, &levels, dollar, out);
        if out.len() > 1 {
            out.sort_unstable_by_key(|route| route.key);
            // Sorted by client: one entry per client, at the highest QoS of
            // its matching subscriptions [MQTT-3.3.4-2], held back from its
            // own messages only if every one of them says No Local, and
            // keeping RETAIN if any says Retain As Published.
            out.dedup_by(|later, earlier| {
                if later.key == earlier.key {
                    earlier.options = combine(earlier.options, later.options);
                    earlier.ids.append(&mut later.ids);
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// Two matching subscriptions' options, as one delivery keeps to them.
fn combine(a: u8, b: u8) -> u8 {
    use options::*;
    ((a & QOS).max(b & QOS)) | (a & b & NO_LOCAL) | ((a | b) & RETAIN_AS_PUBLISHED)
}

impl Topics {
    /// Whether any session holds a filter that matches `topic`, without
    /// routing anything (share groups keep their turn): what MQTT 5's
    /// PUBACK 0x10, No matching subscribers, needs (spec §3.4.2.1).
    pub fn any_match(&self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();
        any_below(&self.root, &levels, topic.starts_with('$'))
    }
}

/// Whether a subscription under `node` matches `levels` (as [`collect`]).
fn any_below(node: &Node, levels: &[&str], dollar: bool) -> bool {
    let held = |node: &Node| !node.subscribers.is_empty() || !node.groups.is_empty();
    if !dollar && node.children.get("#").is_some_and(held) {
        return true;
    }
    let Some((level, below)) = levels.split_first() else {
        return held(node);
    };
    node.children
        .get(*level)
        .is_some_and(|child| any_below(child, below, false))
        || (!dollar
            && node
                .children
                .get("+")
                .is_some_and(|child| any_below(child, below, false)))
}

/// Adds the subscriptions under `node` that match `levels` to `out`.
fn collect(node: &mut Node, levels: &[&str], dollar: bool, out: &mut Vec<Route>) {
    // `a/#` matches `a` itself as well as everything below it (§4.7.1.2).
    if let Some(rest) = node.children.get_mut("#")
        && !dollar
    {
        take(rest, out);
    }
    let Some((level, below)) = levels.split_first() else {
        take(node, out);
        return;
    };
    if let Some(child) = node.children.get_mut(*level) {
        collect(child, below, false, out);
    }
    if !dollar && let Some(child) = node.children.get_mut("+") {
        collect(child, below, false, out);
    }
}

/// Adds the subscriptions that end at `node` to `out`.
fn take(node: &mut Node, out: &mut Vec<Route>) {
    let route = |key: ClientKey, subscription: Subscription| Route {
        key,
        options: subscription.options,
        ids: match subscription.id {
            0 => Vec::new(),
            id => vec![id],
        },
    };
    out.extend(
        node.subscribers
            .iter()
            .map(|(&key, &subscription)| route(key, subscription)),
    );
    for group in node.groups.values_mut() {
        if let Some(&(key, subscription)) =
            group.members.get(group.next % group.members.len().max(1))
        {
            out.push(route(key, subscription));
            group.next = (group.next + 1) % group.members.len();
        }
    }
}

/// Removes one subscription below `node`, pruning what empties.
fn remove(node: &mut Node, levels: &[&str], group: Option<&str>, client: ClientKey) -> bool {
    let Some((level, below)) = levels.split_first() else {
        return match group {
            None => node.subscribers.remove(&client).is_some(),
            Some(name) => {
                let Some(group) = node.groups.get_mut(name) else {
                    return false;
                };
                let before = group.members.len();
                group.members.retain(|(key, _)| *key != client);
                let removed = group.members.len() < before;
                if group.members.is_empty() {
                    node.groups.remove(name);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let removed = remove(child, below, group, client);
    if child.is_empty() {
        node.children.remove(*level);
        // A level that once had many children (`devices/<id>`) gives its
        // table back when most have gone.
        shrink_if_sparse(&mut node.children);
    }
    removed
}

/// Gives back most of a table's room once three quarters of it are empty
/// (a `HashMap` keeps its largest size otherwise): a level that had many
/// children, a client that had many subscriptions.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(table: &mut HashMap<K, V>) {
    if table.capacity() > 64 && table.len() < table.capacity() / 4 {
        table.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
