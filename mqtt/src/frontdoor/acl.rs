//! Who may read and write which topics: `--acl-file PATH`, in Mosquitto's
//! `acl_file` syntax, with the outcomes Mosquitto 2.0.11 gives (measured
//! with raw packets against it; `tests/mqtt_acl.rs` runs the cases against
//! both brokers).
//!
//! ```text
//! # before any `user` line: clients that log in without a user name
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic read sensors/#
//! topic deny sensors/secret
//! # every client: %c is its client id, %u its user name
//! pattern readwrite devices/%c/#
//! ```
//!
//! What the rules decide, as Mosquitto does:
//! - **Writing** is checked on each PUBLISH, against its topic. A denied
//!   message is dropped. An MQTT 5 client is told (PUBACK or PUBREC 0x87,
//!   Not authorized); a 3.1.1 client cannot be, and gets the usual
//!   acknowledgement. A will whose topic the client may not write is never
//!   published. Nobody writes under `$SYS/`.
//! - **Reading** is checked on each message about to go to a subscriber,
//!   against the message's topic: a SUBSCRIBE is always granted (Mosquitto
//!   grants every filter and filters what it delivers), and a message the
//!   subscriber may not read is left out for it alone.
//! - **One check**: a client's own rules first (its `user` block; without a
//!   user name, the lines before the first `user`), `deny` lines before the
//!   rest; the first rule that matches the topic and grants the access
//!   decides. Then the `pattern` lines the same way. Nothing matched: denied.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, anyhow};

use super::sys;

/// The access one check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, want: Want) -> bool {
        matches!(
            (self, want),
            (Access::ReadWrite, _) | (Access::Read, Want::Read) | (Access::Write, Want::Write)
        )
    }
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    filter: String,
}

/// The rules of an ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// The lines before the first `user`: clients without a user name.
    anonymous: Vec<Rule>,
    /// Each `user` block (blocks of one name merged).
    users: HashMap<String, Vec<Rule>>,
    /// `pattern` lines, for every client.
    patterns: Vec<Rule>,
}

impl Acl {
    /// Reads the ACL file at `path`.
    ///
    /// Errors: the file cannot be read, or a line is not a comment (`#` in
    /// the first column), `user NAME`, `topic [read|write|readwrite|deny]
    /// FILTER` or `pattern [...] FILTER` with a valid filter: the error
    /// names the file and the line, and the broker does not start.
    pub fn read_file(path: &Path) -> anyhow::Result<Acl> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the ACL file {}", path.display()))?;
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            let at = |why: String| anyhow!("{}:{}: {why}", path.display(), number + 1);
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let line = line.trim_start_matches(' ');
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            match keyword {
                "user" => {
                    let name = rest.trim_start_matches(' ').trim_end();
                    if name.is_empty() {
                        return Err(at("`user` without a user name".into()));
                    }
                    user = Some(name.to_string());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(at)?;
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(name)) => acl.users.entry(name.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                _ => {
                    return Err(at(format!(
                        "expected user, topic or pattern, not {keyword:?} \
                         (a comment needs # in the first column)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// Whether the client `client_id`, logged in as `username` (`None` or
    /// empty: without one), may have `want` on `topic`.
    pub fn allows(&self, username: Option<&str>, client_id: &str, topic: &str, want: Want) -> bool {
        if want == Want::Write && topic.starts_with("$SYS/") {
            return false;
        }
        let username = username.filter(|name| !name.is_empty());
        let own = match username {
            Some(name) => self.users.get(name).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        let own = own.iter().map(|rule| (rule.access, rule.filter.as_str()));
        if let Some(decided) = decide(own, topic, want) {
            return decided;
        }
        // A `+` or `#` in the client id or user name could widen a pattern
        // into a wildcard: then no pattern applies to that client.
        let dangerous = |text: &str| text.contains(['+', '#']);
        if dangerous(client_id) || username.is_some_and(dangerous) {
            return false;
        }
        let patterns: Vec<(Access, String)> = self
            .patterns
            .iter()
            .filter_map(|rule| {
                let filter = substitute(&rule.filter, client_id, username)?;
                Some((rule.access, filter))
            })
            .collect();
        let patterns = patterns
            .iter()
            .map(|(access, filter)| (*access, filter.as_str()));
        decide(patterns, topic, want).unwrap_or(false)
    }
}

/// A pattern with `%c` and `%u` replaced, in one pass (a client id that
/// holds `%u` stays as it is); `None` for a `%u` pattern and a client
/// without a user name, which it does not apply to.
fn substitute(pattern: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("%c") {
            out.push_str(client_id);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("%u") {
            out.push_str(username?);
            rest = tail;
        } else {
            out.push('%');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Whether a client may publish to `topic` (a PUBLISH, or its will):
/// never under `$SYS/`, which is the broker's own (`sys.rs`), with an ACL
/// or without, as in Mosquitto; elsewhere as `acl` says (everywhere,
/// without one).
pub fn may_publish(
    acl: Option<&Acl>,
    username: Option<&str>,
    client_id: &str,
    topic: &str,
) -> bool {
    !topic.starts_with(sys::PREFIX)
        && acl.is_none_or(|acl| acl.allows(username, client_id, topic, Want::Write))
}

/// `[ACCESS] FILTER`: an access word and the rest of the line, or one
/// word alone (then the topic itself, read and written: Mosquitto reads
/// `topic read` so too).
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let rest = rest.trim_start_matches(' ').trim_end();
    if rest.is_empty() {
        return Err("a rule without a topic".into());
    }
    let (access, filter) = match rest.split_once(' ') {
        None => (Access::ReadWrite, rest),
        Some((word, filter)) => {
            let access = match word {
                "read" => Access::Read,
                "write" => Access::Write,
                "readwrite" => Access::ReadWrite,
                "deny" => Access::Deny,
                _ => {
                    return Err(format!(
                        "{word:?} is no access type: read, write, readwrite or deny"
                    ));
                }
            };
            (access, filter.trim_start_matches(' '))
        }
    };
    check_filter(filter)?;
    Ok(Rule {
        access,
        filter: filter.to_string(),
    })
}

/// A topic filter's wildcards where the spec allows them (§4.7.1).
fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        let alone = *level == "+" || (*level == "#" && i == levels.len() - 1);
        if wild && !alone {
            return Err(format!("{filter:?} is no valid topic filter"));
        }
    }
    Ok(())
}

/// One list's decision for `topic`: a matching `deny` refuses; else the
/// first matching rule that grants `want` allows; else undecided.
fn decide<'r>(
    rules: impl Iterator<Item = (Access, &'r str)> + Clone,
    topic: &str,
    want: Want,
) -> Option<bool> {
    let mut matching = rules.filter(|(_, filter)| matches(filter, topic));
    if matching.clone().any(|(access, _)| access == Access::Deny) {
        return Some(false);
    }
    matching
        .any(|(access, _)| access.grants(want))
        .then_some(true)
}

/// Whether `filter` matches `topic` (§4.7): `+` one level, `#` the rest;
/// neither at the start matches a topic that starts with `$` [MQTT-4.7.2-1].
fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (level, Some(name)) if level == name => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# anonymous\ntopic read public/#\nuser alice\ntopic readwrite alice/#\n\
         topic read sensors/#\ntopic write cmd/alice\ntopic deny sensors/secret\n\
         pattern readwrite devices/%c/#\npattern read users/%u/inbox\n";

    fn acl() -> Acl {
        let dir = std::env::temp_dir().join(format!("acl-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("acl");
        let _ = std::fs::write(&path, FILE);
        let acl = Acl::read_file(&path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        acl
    }

    #[test]
    fn the_measured_cases() {
        let acl = acl();
        let alice = |topic: &str, want| acl.allows(Some("alice"), "alice-1", topic, want);
        assert!(alice("sensors/temp", Want::Read));
        assert!(!alice("sensors/secret", Want::Read));
        assert!(alice("sensors/secret/sub", Want::Read));
        assert!(!alice("sensors/temp", Want::Write));
        assert!(alice("cmd/alice", Want::Write));
        assert!(!alice("cmd/alice", Want::Read));
        assert!(!alice("public/x", Want::Read));
        assert!(alice("devices/alice-1/x", Want::Write));
        assert!(!alice("devices/other/x", Want::Read));
        assert!(alice("users/alice/inbox", Want::Read));
        assert!(!alice("$SYS/broker/x", Want::Write));
        let anonymous = |topic: &str, want| acl.allows(None, "anon", topic, want);
        assert!(anonymous("public/x", Want::Read));
        assert!(!anonymous("public/x", Want::Write));
        assert!(!anonymous("users//inbox", Want::Read));
        assert!(anonymous("devices/anon/x", Want::Read));
        // One pass: a client id holding %u is not substituted again.
        assert_eq!(
            substitute("d/%c/%u", "x%u", Some("bob")).as_deref(),
            Some("d/x%u/bob")
        );
        // A wildcard in the client id: no pattern applies.
        assert!(!acl.allows(Some("alice"), "a+", "devices/a+/x", Want::Read));
        assert!(acl.allows(Some("alice"), "a+", "alice/x", Want::Read));
    }

    #[test]
    fn filters_match_as_the_spec_says() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(parse_rule("readwrte x").is_err());
        assert!(parse_rule("read a/#/b").is_err());
        assert!(parse_rule("read x # comment").is_err());
        let rule = parse_rule("read").unwrap_or(Rule {
            access: Access::Deny,
            filter: String::new(),
        });
        // Mosquitto takes one word as the topic itself.
        assert_eq!(
            (rule.access, rule.filter.as_str()),
            (Access::ReadWrite, "read")
        );
    }
}
