//! # mqtt_subscriber: print the messages on some topics, like `mosquitto_sub`
//!
//! A subscriber sends SUBSCRIBE with one or more topic *filters*, and from then
//! on the broker forwards every matching message. Filters may hold wildcards:
//! `+` matches exactly one level (`sensors/+/temp` matches `sensors/kitchen/temp`)
//! and `#`, only at the end, matches any number of levels (`sensors/#`). Each
//! subscription also names a QoS: the most the subscriber wants to pay for.
//!
//! ## Try it
//!
//! Terminal 1: `cargo run -p mqtt --bin mqtt_broker`
//!
//! Terminal 2 waits for messages on `topic/learning`:
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_subscriber
//! ```
//!
//! Terminal 3: `cargo run -p mqtt --bin mqtt_publisher`, and terminal 2
//! prints `Hello MQTT!`. With flags, `-t 'sensors/#' -t alerts -v -q 1`
//! listens on two filters and prints `topic payload`; a retained message shows
//! ` (retained)` at the end. Stop and restart the broker: the subscriber
//! reconnects and subscribes again. With `--persistent -i me -q 1`, stop the
//! *subscriber* instead, publish with `-q 1`, start it again: the broker kept
//! the message for it. `--show-packets` shows every packet on stderr.
//!
//! `-F FORMAT` prints each message your way, in mosquitto_sub's spelling:
//! `-F '%t %q %p'` is topic, QoS and payload (`mqtt/src/format.rs` lists
//! the fields); `-N` leaves out the newline, for binary payloads. `-R` leaves
//! out retained messages, `--retained-only` prints only those, `-T FILTER`
//! leaves out matching topics. With `--persistent -i me`, `-E` subscribes and
//! exits, leaving a session that collects messages, and `-U FILTER` takes a
//! subscription out of it.
//!
//! MQTT 5 (`mqtt_broker` and Mosquitto speak it): `-V 5 -v
//! --show-properties` prints each message's properties after its payload, as
//! `topic/learning 21.5 [user-property sensor kitchen]` (send one with
//! `mqtt_publisher -V 5 -m 21.5 -D PUBLISH user-property sensor kitchen`).
//! MQTT 5 also gives each subscription options: `--nl` (no local: not the
//! messages this client id publishes), `--rap` (retain as published: keep
//! their retain flag) and `--rh 2` (retain handling: no retained messages at
//! all; 1: only on a new subscription). With `--persistent`, the broker keeps
//! the session for ever, or for `-x SECONDS` after we leave. `-D SUBSCRIBE
//! subscription-identifier 7 -F '%S %t'` numbers the subscription, and each
//! message it brings says so; `-D CONNECT maximum-packet-size 1000` asks the
//! broker for nothing larger.
//!
//! Request/response, MQTT 5's remote call, with the two binaries: a
//! responder prints each request's Response Topic and Correlation Data and
//! answers there, with the same data,
//!
//! ```text
//! mqtt_subscriber -V 5 -t svc/time -F '%R %D' | while read -r topic data; do
//!     mqtt_publisher -V 5 -t "$topic" -D PUBLISH correlation-data "$data" -m "$(date +%T)"
//! done
//! ```
//!
//! and a requester asks, and waits for the answer that carries its data:
//! `mqtt_subscriber -V 5 -t replies/me -F '%D %p' -C 1` beside
//! `mqtt_publisher -V 5 -t svc/time -m 'time?' -D PUBLISH response-topic
//! replies/me -D PUBLISH correlation-data 42`.
//!
//! ## Read next
//!
//! `mqtt/src/subscriber.rs` (polling, reconnecting, resubscribing), then
//! `mqtt/src/packets.rs` (`--show-packets`) and `mqtt/src/lib.rs` (what both
//! clients share: how they connect).

use std::time::Duration;

use clap::Parser;
use mqtt::BrokerArgs;
use mqtt::format::Format;
use mqtt::subscriber::{self, Mqtt5, SubscribeConfig};
use mqtt::v5::{Properties, SubscribeOptions};
use tracing::info;

/// Subscribes to MQTT topics and prints every message that arrives, one per line.
///
/// -V 5 speaks MQTT 5: subscription options (--nl, --rap, --rh) and message
/// properties (--show-properties, or -F with %R, %D, %P...).
#[derive(Debug, Parser)]
// `-V` is the MQTT version, as in mosquitto_sub: clap's own `-V` (print the
// version) would catch a mosquitto user's `-V 5`, so only `--version` prints it.
#[command(version, disable_version_flag = true)]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Topic filter, with wildcards + (one level) and # (the rest); repeat for
    /// more [default: topic/learning, unless -U is given]
    #[arg(short, long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Leave out retained messages (those the broker kept, sent on subscribing)
    #[arg(short = 'R', long, conflicts_with = "retained_only")]
    no_retained: bool,
    /// Print only retained messages; stop at the first live one
    #[arg(long)]
    retained_only: bool,
    /// Leave out messages whose topic matches FILTER (repeatable)
    #[arg(short = 'T', long = "filter-out", value_name = "FILTER")]
    filter_out: Vec<String>,
    /// Exit once subscribed (with --persistent: leave a session that collects
    /// messages until we come back)
    #[arg(short = 'E', long)]
    exit_when_subscribed: bool,
    /// Unsubscribe from FILTER on connecting (repeatable): a persistent
    /// session's, from an earlier run; with no -t, exit once done
    #[arg(short = 'U', long, value_name = "FILTER")]
    unsubscribe: Vec<String>,
    /// Highest quality of service wanted: 0, 1 or 2
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Print "topic payload" instead of the payload alone; retained messages end in " (retained)"
    #[arg(short, long, conflicts_with = "format")]
    verbose: bool,
    /// Print each message in this format, as mosquitto_sub -F does: %t topic,
    /// %p payload, %x/%X payload in hex, %l length, %q QoS, %r retained (1/0),
    /// %m packet id, %U Unix time; MQTT 5: %C content type, %D correlation
    /// data, %E expiry left, %F payload format, %P user properties (key:value),
    /// %R response topic, %S subscription identifiers; %% a %; \n \t \0 \e
    /// \\ escapes. A property a message lacks prints nothing
    #[arg(short = 'F', long, value_name = "FORMAT", value_parser = Format::parse)]
    format: Option<Format>,
    /// No newline after each message (binary payloads piped to a file)
    #[arg(short = 'N', long)]
    no_newline: bool,
    /// Exit after this many messages
    #[arg(short = 'C', long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit with an error when no message arrives for this many seconds
    #[arg(short = 'W', long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: Option<u64>,
    /// Client id [default: mqtt_subscriber-PID, with our process id]; two clients with the
    /// same id knock each other off the broker
    #[arg(short = 'i', long)]
    client_id: Option<String>,
    /// Username to log in with
    #[arg(short, long, requires = "password")]
    username: Option<String>,
    /// Password to log in with
    #[arg(short = 'P', long, requires = "username")]
    password: Option<String>,
    /// Keep our session (subscriptions and queued QoS 1/2 messages) while we are
    /// away; needs a non-empty -i, since the broker finds the session by client id.
    /// We subscribe to -t on every connection, as `mosquitto_sub -c` does
    #[arg(long, requires = "client_id")]
    persistent: bool,
    /// Print each MQTT packet sent and received (on stderr)
    #[arg(long)]
    show_packets: bool,
    /// MQTT 5: after each payload, print the message's properties in brackets:
    /// [user-property KEY VALUE, content-type TYPE, ...]
    #[arg(long, conflicts_with = "format")]
    show_properties: bool,
    /// MQTT 5 no local: do not send us the messages our own client id publishes
    #[arg(long = "nl")]
    no_local: bool,
    /// MQTT 5 retain as published: keep the retain flag of forwarded messages
    /// (brokers clear it otherwise)
    #[arg(long = "rap")]
    retain_as_published: bool,
    /// MQTT 5 retain handling: retained messages on every subscribe (0), only
    /// on a new subscription (1), or never (2)
    #[arg(long = "rh", value_name = "0|1|2", value_parser = clap::value_parser!(u8).range(0..=2))]
    retain_handling: Option<u8>,
    /// MQTT 5: a property, as mosquitto_sub takes it: -D SUBSCRIBE
    /// subscription-identifier N (print it with -F %S), -D SUBSCRIBE
    /// user-property KEY VALUE; for the connection, -D CONNECT user-property
    /// KEY VALUE, receive-maximum N, maximum-packet-size BYTES,
    /// session-expiry-interval SECONDS (as -x), request-response-information
    /// 0|1, request-problem-information 0|1
    #[arg(short = 'D', long = "property", num_args = 3..=4, value_names = ["COMMAND", "NAME", "VALUE"])]
    properties: Vec<String>,
    /// Print the version
    #[arg(long, action = clap::ArgAction::Version)]
    version: (),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(subscribe(args).await)
}

async fn subscribe(args: Args) -> anyhow::Result<()> {
    let client_id =
        (args.client_id).unwrap_or_else(|| format!("mqtt_subscriber-{}", std::process::id()));
    // MQTT's own port: 1883 for plain MQTT, 8883 for MQTT over TLS.
    let mut client = args.broker.client_config(&client_id)?;
    client.login = args.username.zip(args.password);
    let properties = Properties::from_words(&args.properties, &["CONNECT", "SUBSCRIBE"])?;
    client.take_properties(&properties)?;
    client.clean_session = !args.persistent;
    // The lesson's topic, unless the run only unsubscribes.
    let filters = if args.topics.is_empty() && args.unsubscribe.is_empty() {
        vec!["topic/learning".to_string()]
    } else {
        args.topics
    };
    let config = SubscribeConfig {
        client,
        filters,
        skip_retained: args.no_retained,
        retained_only: args.retained_only,
        hide: args.filter_out,
        exit_when_subscribed: args.exit_when_subscribed,
        unsubscribe: args.unsubscribe,
        qos: mqtt::qos(args.qos)?,
        verbose: args.verbose,
        format: args.format,
        newline: !args.no_newline,
        count: args.count,
        timeout: args.timeout_secs.map(Duration::from_secs),
        show_packets: args.show_packets,
    };
    let mqtt5 = Mqtt5 {
        options: SubscribeOptions {
            no_local: args.no_local,
            retain_as_published: args.retain_as_published,
            retain_handling: args.retain_handling.unwrap_or(0),
        },
        show_properties: args.show_properties,
        properties: properties.subscribe,
    };
    if args.retain_handling.is_some() && config.client.version == mqtt::Version::V311 {
        anyhow::bail!("--rh is MQTT 5: add -V 5");
    }
    tokio::select! {
        result = subscriber::run_with(config, mqtt5, tokio::io::stdout()) => {
            result?;
        }
        // Ctrl-C: we stop without DISCONNECT. The broker notices the closed
        // connection at once; for a persistent session it keeps queueing.
        () = networking_protocols::shutdown_signal() => info!("stopped"),
    }
    Ok(())
}
