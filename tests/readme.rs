//! README.md as written: every command works, and MQTT's reading order is one list.
//!
//! We find each command for one of our binaries in the README, in its code
//! blocks and in its inline code: `cargo run -p <crate> --bin <binary> --
//! ARGS` and the short form `<binary> ARGS`. Each binary is then run with the
//! README's ARGS and `--help` after them. clap reads the arguments in order,
//! so an unknown flag or a bad value (`-q 3`, `--port x`) fails before it
//! reaches `--help`; with every argument accepted, `--help` prints the help
//! and exits 0. (What `--help` cannot catch is a combination clap checks at
//! the end, such as a flag that needs another.)
//!
//! The README also says in which order to read the source. MQTT's order is
//! written in three places (the learning path, the MQTT section, and the
//! `## Read next` of each MQTT binary): we check that all three name the
//! same files in the same order, and that each file exists.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// Our binaries, and the crate each belongs to.
const BINARIES: [(&str, &str); 9] = [
    ("tcp_server", "tcp"),
    ("tcp_client", "tcp"),
    ("udp_receiver", "udp"),
    ("udp_sender", "udp"),
    ("websocket_server", "websocket"),
    ("websocket_client", "websocket"),
    ("mqtt_broker", "mqtt"),
    ("mqtt_publisher", "mqtt"),
    ("mqtt_subscriber", "mqtt"),
];

/// One command found in the README.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Command {
    binary: String,
    /// The `-p` of a `cargo run`, if the command is one.
    package: Option<String>,
    args: Vec<String>,
    /// The README text it came from, for failure messages.
    source: String,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The pieces of the README that may hold commands: every line of a code
/// block (except Mermaid diagrams) and every inline code span.
fn snippets(markdown: &str) -> Vec<String> {
    let mut snippets = Vec::new();
    let mut fence: Option<String> = None;
    // The paragraph so far, lines joined: inline code may wrap to the next line.
    let mut paragraph = String::new();
    let inline = |paragraph: &mut String, snippets: &mut Vec<String>| {
        // Inline code: the text between pairs of backticks.
        snippets.extend(paragraph.split('`').skip(1).step_by(2).map(str::to_string));
        paragraph.clear();
    };
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            inline(&mut paragraph, &mut snippets);
            fence = match fence {
                None => Some(info.trim().to_string()),
                Some(_) => None,
            };
            continue;
        }
        match &fence {
            Some(language) if language == "mermaid" => {}
            Some(_) => snippets.push(line.to_string()),
            None if trimmed.is_empty() => inline(&mut paragraph, &mut snippets),
            None => {
                paragraph.push(' ');
                paragraph.push_str(trimmed);
            }
        }
    }
    inline(&mut paragraph, &mut snippets);
    snippets
}

/// The commands for our binaries in one snippet of shell.
fn commands(snippet: &str) -> Vec<Command> {
    let names: Vec<&str> = BINARIES.iter().map(|(name, _)| *name).collect();
    let Some(words) = shlex::split(snippet) else {
        // Unbalanced quotes: fine in prose, a bug in a command.
        assert!(
            !names
                .iter()
                .any(|name| snippet.contains(&format!("{name} "))),
            "cannot split {snippet:?} into words as a shell would"
        );
        return Vec::new();
    };
    let mut found = Vec::new();
    for command in words.split(|w| ["|", ";", "&&", "||", "&"].contains(&w.as_str())) {
        // `RUST_LOG=debug cargo run ...`: skip the variables.
        let command: Vec<&str> = command
            .iter()
            .map(String::as_str)
            .skip_while(|word| word.contains('=') && !word.starts_with('-'))
            .collect();
        let command = without_redirections(&command);
        let Some((&first, rest)) = command.split_first() else {
            continue;
        };
        if first == "cargo" && rest.first() == Some(&"run") {
            let (options, args) = match rest.iter().position(|w| *w == "--") {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let after = |flag: &str| {
                let at = options.iter().position(|w| *w == flag)?;
                options.get(at + 1).map(|w| w.to_string())
            };
            let binary = after("--bin")
                .unwrap_or_else(|| panic!("`cargo run` without --bin in {snippet:?}"));
            // `cargo run -p <crate> --bin <binary>` is a template, not a command.
            if !binary
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            found.push(Command {
                binary,
                package: after("-p"),
                args: args.iter().map(|w| w.to_string()).collect(),
                source: snippet.to_string(),
            });
        } else if names.contains(&first) {
            found.push(Command {
                binary: first.to_string(),
                package: None,
                args: rest.iter().map(|w| w.to_string()).collect(),
                source: snippet.to_string(),
            });
        }
    }
    found
}

/// A command's words without its redirections (`< file`, `> file`,
/// `2> file`, `2>&1`): the shell handles those, the program never sees them.
fn without_redirections<'a>(words: &[&'a str]) -> Vec<&'a str> {
    let mut kept = Vec::new();
    let mut words = words.iter();
    while let Some(&word) = words.next() {
        match word {
            "<" | ">" | ">>" | "2>" | "2>>" => {
                words.next();
            }
            _ if word.starts_with("2>&") => {}
            _ => kept.push(word),
        }
    }
    kept
}

fn all_commands() -> Vec<Command> {
    let set: BTreeSet<Command> = snippets(&readme())
        .iter()
        .flat_map(|snippet| commands(snippet))
        .collect();
    set.into_iter().collect()
}

/// The parser finds both forms, with quoted arguments kept whole, and
/// leaves out what is not ours.
#[test]
fn finds_commands_in_shell_lines() {
    let found = commands(
        "printf 'a\\nb\\n' | RUST_LOG=debug cargo run -p udp --bin udp_sender -- -m 'two words'   # a comment",
    );
    assert_eq!(
        found,
        [Command {
            binary: "udp_sender".to_string(),
            package: Some("udp".to_string()),
            args: vec!["-m".to_string(), "two words".to_string()],
            source: found[0].source.clone(),
        }]
    );
    let found = commands("cargo run -p tcp --bin tcp_server -- --stdio > copy.bin 2>&1 < in");
    assert_eq!(found[0].args, ["--stdio"]);
    let found =
        commands("head -c 10 /dev/zero | tcp_client --port 9 && ls tcp/src/bin/tcp_client.rs");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].binary, "tcp_client");
    assert_eq!(found[0].args, ["--port", "9"]);
    assert_eq!(
        snippets("a `mqtt_broker --port 1` b\n```mermaid\ntcp_client\n```\n```sh\nx\n```"),
        ["mqtt_broker --port 1", "x"]
    );
}

/// Every `cargo run` names a binary of the crate it names, and every
/// binary of the workspace appears in the README.
#[test]
fn readme_commands_name_real_binaries() {
    let commands = all_commands();
    assert!(
        commands.len() >= 60,
        "only {} commands found in README.md: is the parser still finding them?",
        commands.len()
    );
    for command in &commands {
        let crate_of = BINARIES
            .iter()
            .find(|(name, _)| *name == command.binary)
            .map(|(_, package)| *package)
            .unwrap_or_else(|| panic!("no binary {:?} in {:?}", command.binary, command.source));
        if let Some(package) = &command.package {
            assert_eq!(package, crate_of, "wrong -p in {:?}", command.source);
        }
    }
    for (name, _) in BINARIES {
        assert!(
            commands.iter().any(|c| c.binary == name),
            "README.md never shows how to run {name}"
        );
    }
}

/// Each binary accepts every flag and value the README gives it.
#[tokio::test]
async fn readme_commands_are_accepted() {
    let commands = all_commands();
    let mut failures = Vec::new();
    for command in &commands {
        let mut args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        args.push("--help");
        // Shown with `cargo test --test readme -- --nocapture`.
        eprintln!("{} {}", command.binary, args.join(" "));
        let (status, stdout, stderr) = common::run(&command.binary, &args, b"").await;
        if !status.success() || !stdout.contains("Usage:") {
            failures.push(format!(
                "{} {:?} (from {:?}): {status}\n{stderr}",
                command.binary, command.args, command.source
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The benchmark the README tells you to run exists.
#[test]
fn readme_bench_command_names_a_bench() {
    let readme = readme();
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let benches: Vec<&str> = readme
        .split("cargo bench --bench ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
        })
        .collect();
    assert!(
        !benches.is_empty(),
        "README.md shows no `cargo bench --bench` command"
    );
    for bench in benches {
        assert!(
            manifest.contains(&format!("[[bench]]\nname = \"{bench}\"")),
            "README.md runs bench {bench:?}, which Cargo.toml does not declare"
        );
    }
}

/// The source files a piece of prose names, in order: its inline code spans
/// that are paths of `.rs` files (`mqtt/src/broker.rs`, not `--show-packets`).
fn rs_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.ends_with(".rs") && span.contains('/') && !span.contains(' '))
        .map(str::to_string)
        .collect()
}

/// The README's section that starts with the heading `## {title}...`, up to
/// the next `## ` heading (its `### ` subsections included).
fn section<'a>(markdown: &'a str, title: &str) -> &'a str {
    let heading = format!("\n## {title}");
    let start = markdown
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"))
        + 1;
    let end = markdown[start..]
        .find("\n## ")
        .map_or(markdown.len(), |at| start + at);
    &markdown[start..end]
}

/// The paragraphs of some Markdown, each with its lines joined by spaces.
fn paragraphs(markdown: &str) -> Vec<String> {
    markdown
        .split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|paragraph| !paragraph.is_empty())
        .collect()
}

/// The files a source file's `## Read next` names, in order; `None` when its
/// opening `//!` block has no such heading.
fn read_next(path: &str) -> Option<Vec<String>> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let source = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{path} is on a reading list, but: {e}"));
    let doc: Vec<&str> = source
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let at = doc.iter().position(|line| *line == "## Read next")?;
    let text: Vec<&str> = doc[at + 1..]
        .iter()
        .take_while(|line| !line.starts_with('#'))
        .copied()
        .collect();
    Some(rs_paths(&text.join(" ")))
}

/// The reading order that `## Read next` sections give, from `start`: each
/// file's list, then the list of its last file, and so on. Only the last file
/// of a list may have a `## Read next` of its own, or the order would fork.
fn read_next_walk(start: &str) -> Vec<String> {
    let mut walk = vec![start.to_string()];
    let mut at = start.to_string();
    while let Some(next) = read_next(&at) {
        assert!(!next.is_empty(), "{at}: its `## Read next` names no file");
        for (i, file) in next.iter().enumerate() {
            assert!(
                !walk.contains(file),
                "{at}: its `## Read next` names {file}, which comes earlier"
            );
            assert!(
                i + 1 == next.len() || read_next(file).is_none(),
                "{at}: {file} has a `## Read next` of its own, so it must come last"
            );
            walk.push(file.clone());
        }
        at = walk.last().cloned().unwrap_or_default();
    }
    walk
}

/// The MQTT reading order is one list: the learning path's step 4, the
/// README's MQTT section and the `## Read next` of each MQTT binary, followed
/// from `mqtt_broker`, name the same files in the same order, and each exists.
#[test]
fn mqtt_reading_order_is_the_same_everywhere() {
    let readme = readme();
    let step: Vec<String> = paragraphs(section(&readme, "Learning path"))
        .into_iter()
        .filter(|paragraph| {
            paragraph
                .strip_prefix("**")
                .and_then(|rest| rest.split("**").next())
                .is_some_and(|title| title.contains("MQTT"))
        })
        .collect();
    assert_eq!(step.len(), 1, "one learning path step for MQTT: {step:?}");
    let learning_path = rs_paths(&step[0]);

    let reads: Vec<String> = paragraphs(section(&readme, "MQTT:"))
        .into_iter()
        .filter(|paragraph| paragraph.starts_with("Read `"))
        .collect();
    assert_eq!(
        reads.len(),
        1,
        "one `Read ...` paragraph in the MQTT section: {reads:?}"
    );
    let mqtt_section = rs_paths(&reads[0]);

    assert!(
        learning_path.len() >= 5,
        "only {learning_path:?} found in the learning path: is the parser still finding them?"
    );
    for path in &learning_path {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(path).is_file(),
            "the MQTT reading order names {path}, which does not exist"
        );
    }
    assert_eq!(
        learning_path, mqtt_section,
        "README.md: the learning path (left) and the MQTT section (right) differ"
    );
    let binaries = read_next_walk(&learning_path[0]);
    assert_eq!(
        learning_path, binaries,
        "README.md's MQTT reading order (left) and the binaries' `## Read next` (right) differ"
    );
}
