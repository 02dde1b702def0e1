//! Retained messages (spec §3.3.1.3), in a tree of topic levels like the
//! subscriptions' (`topics.rs`), walked the other way: a new
//! subscription's filter is matched against the topics that hold one, so
//! the work grows with the levels and the messages that match, not with
//! how many retained messages there are. A topic's nodes go when its
//! retained message is cleared.

use std::collections::HashMap;

use super::topics::shrink_if_sparse;

/// Retained messages by topic (spec §3.3.1.3), in a tree of levels like
/// [`Topics`](super::topics::Topics): a new subscription gets those its filter matches.
#[derive(Debug)]
pub struct Retained<T> {
    root: RetainedNode<T>,
    count: usize,
}

impl<T> Default for Retained<T> {
    fn default() -> Self {
        Retained {
            root: RetainedNode::default(),
            count: 0,
        }
    }
}

#[derive(Debug)]
struct RetainedNode<T> {
    children: HashMap<Box<str>, RetainedNode<T>>,
    message: Option<T>,
}

impl<T> Default for RetainedNode<T> {
    fn default() -> Self {
        RetainedNode {
            children: HashMap::new(),
            message: None,
        }
    }
}

impl<T: Clone> Retained<T> {
    /// Keeps `message` as `topic`'s retained message, or with `None` clears
    /// it [MQTT-3.3.1-10].
    pub fn set(&mut self, topic: &str, message: Option<T>) {
        let levels: Vec<&str> = topic.split('/').collect();
        match message {
            Some(message) => {
                let mut node = &mut self.root;
                for level in levels {
                    node = node.children.entry(level.into()).or_default();
                }
                if node.message.replace(message).is_none() {
                    self.count += 1;
                }
            }
            None => {
                if clear(&mut self.root, &levels) {
                    self.count -= 1;
                }
            }
        }
    }

    /// How many topics hold a retained message.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no topic holds a retained message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every retained message, added to `out`.
    pub fn all(&self, out: &mut Vec<T>) {
        everything(&self.root, out);
    }

    /// The retained messages whose topics `filter` matches (§4.7), added to
    /// `out`.
    pub fn matching(&self, filter: &str, out: &mut Vec<T>) {
        let levels: Vec<&str> = filter.split('/').collect();
        find(&self.root, &levels, true, out);
    }
}

/// Adds the messages below `node` that `levels` of a filter match.
fn find<T: Clone>(node: &RetainedNode<T>, levels: &[&str], first: bool, out: &mut Vec<T>) {
    let Some((level, below)) = levels.split_first() else {
        out.extend(node.message.iter().cloned());
        return;
    };
    match *level {
        "#" => {
            // `a/#` matches `a` too.
            out.extend(node.message.iter().cloned());
            for (name, child) in &node.children {
                if !(first && name.starts_with('$')) {
                    everything(child, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if !(first && name.starts_with('$')) {
                    find(child, below, false, out);
                }
            }
        }
        level => {
            if let Some(child) = node.children.get(level) {
                find(child, below, false, out);
            }
        }
    }
}

/// Adds every message at and below `node`.
fn everything<T: Clone>(node: &RetainedNode<T>, out: &mut Vec<T>) {
    out.extend(node.message.iter().cloned());
    for child in node.children.values() {
        everything(child, out);
    }
}

/// Clears the message at `levels` below `node`, pruning what empties.
/// Returns whether there was one.
fn clear<T>(node: &mut RetainedNode<T>, levels: &[&str]) -> bool {
    let Some((level, below)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let cleared = clear(child, below);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*level);
        shrink_if_sparse(&mut node.children);
    }
    cleared
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retained messages are set, replaced, cleared and found by filter.
    #[test]
    fn retained_messages_by_filter() {
        let mut retained = Retained::default();
        retained.set("a/b", Some(1));
        retained.set("a/b", Some(2));
        retained.set("a", Some(3));
        retained.set("$SYS/x", Some(4));
        assert_eq!(retained.len(), 3);
        let mut found = Vec::new();
        retained.matching("a/#", &mut found);
        found.sort_unstable();
        assert_eq!(found, [2, 3]);
        found.clear();
        retained.matching("#", &mut found);
        assert_eq!(found.len(), 2);
        retained.set("a/b", None);
        retained.set("a", None);
        retained.set("$SYS/x", None);
        assert!(retained.is_empty());
        assert!(retained.root.children.is_empty());
    }
}
