//! # mqtt_publisher: publish messages to a topic, like `mosquitto_pub`
//!
//! A publisher names a *topic* (`topic/learning`) and sends messages to it;
//! it never knows who, if anyone, is subscribed. The broker acknowledges each
//! message as its QoS level asks: QoS 0 not at all (at most once), QoS 1 with
//! PUBACK (at least once), QoS 2 with PUBREC, PUBREL, PUBCOMP (exactly once).
//! This publisher exits only after every acknowledgement is in, then sends
//! DISCONNECT: a message it published is a message the broker has.
//!
//! ## Try it
//!
//! Terminal 1: `cargo run -p mqtt --bin mqtt_broker`
//!
//! Terminal 2: `cargo run -p mqtt --bin mqtt_subscriber -- -v`
//!
//! Terminal 3 sends `Hello MQTT!` to `topic/learning`, which terminal 2 prints:
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_publisher
//! ```
//!
//! See the QoS 2 handshake, packet by packet:
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_publisher -- -q 2 -m hi --show-packets
//! ```
//!
//! prints `-> PUBLISH id=1 qos=2`, `<- PUBREC id=1`, `-> PUBREL id=1`,
//! `<- PUBCOMP id=1`. More: `-l` publishes each line you type (or pipe in);
//! `-f photo.jpg` a file's bytes as one message, and `-s` all of stdin;
//! `--count 5 --interval-ms 500` repeats `-m`; `-r` asks the broker to keep the
//! message for future subscribers and `--clear-retained` removes it; the
//! `--will-*` flags leave a message the broker publishes if we vanish
//! (try `--will-topic gone -l`, then kill this program with `kill -9`).
//! Ctrl-C ends the input; what was published is still acknowledged first.
//!
//! MQTT 5: `-V 5` speaks MQTT 5, whose packets carry *properties*. Send a
//! user property and a content type, and see them arrive with
//! `mqtt_subscriber -V 5 -v --show-properties` (against a broker that speaks
//! MQTT 5, such as Mosquitto):
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_publisher -- -V 5 -m 21.5 \
//!     -D PUBLISH user-property sensor kitchen -D PUBLISH content-type text/plain
//! ```
//!
//! The subscriber prints
//! `topic/learning 21.5 [user-property sensor kitchen, content-type text/plain]`.
//! `-D PUBLISH` also takes `message-expiry-interval SECONDS` (the broker
//! drops the message if nobody takes it in time), `response-topic TOPIC` and
//! `correlation-data DATA` (request and response); `-x SECONDS` asks the
//! broker to keep our session that long after we leave. With
//! `--show-packets`, MQTT 5 acknowledgements show their reason code in
//! words: `<- PUBACK id=1 Success`, or `NoMatchingSubscribers`.
//!
//! MQTT over TLS, as cloud brokers want it: `--tls` connects to port 8883 and
//! checks the broker's certificate against the system's CAs (`--cafile` for a
//! local CA); `--cert` and `--key` answer a broker that asks for a client
//! certificate. Then `-u` and `-P` travel encrypted, not readable on the wire.
//!
//! ## Read next
//!
//! `mqtt/src/publisher.rs` (why a publisher must keep polling until its acks
//! are in), then `mqtt/src/bin/mqtt_subscriber.rs`.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use mqtt::BrokerArgs;
use mqtt::publisher::{self, PublishConfig};
use mqtt::v5::Properties;
use rumqttc::LastWill;

/// Publishes MQTT messages to one topic and waits until the broker has
/// acknowledged them all.
///
/// -V 5 speaks MQTT 5, with properties (-D PUBLISH ...) and reason codes.
#[derive(Debug, Parser)]
// `-V` is the MQTT version, as in mosquitto_pub: clap's own `-V` (print the
// version) would catch a mosquitto user's `-V 5`, so only `--version` prints it.
#[command(version, disable_version_flag = true)]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Topic to publish to (no wildcards)
    #[arg(short, long, default_value = "topic/learning")]
    topic: String,
    /// Message to publish
    #[arg(
        short,
        long,
        default_value = "Hello MQTT!",
        conflicts_with_all = ["stdin_lines", "file", "stdin_file"]
    )]
    message: String,
    /// Publish the bytes of FILE as one message (an image, a JSON document)
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["stdin_lines", "stdin_file", "count"])]
    file: Option<std::path::PathBuf>,
    /// Publish all of standard input, to its end, as one message
    #[arg(short = 's', long, conflicts_with_all = ["stdin_lines", "count"])]
    stdin_file: bool,
    /// Quality of service: 0 at most once, 1 at least once, 2 exactly once
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Ask the broker to keep the message and give it to future subscribers
    #[arg(short, long)]
    retain: bool,
    /// Publish each line of standard input as a message, until end of input
    #[arg(short = 'l', long)]
    stdin_lines: bool,
    /// Publish the message this many times
    #[arg(long, default_value_t = 1, conflicts_with = "stdin_lines", value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// With --count: wait this long between messages
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Client id [default: mqtt_publisher-PID, with our process id]; two clients with the
    /// same id knock each other off the broker
    #[arg(short = 'i', long)]
    client_id: Option<String>,
    /// Username to log in with
    #[arg(short, long, requires = "password")]
    username: Option<String>,
    /// Password to log in with
    #[arg(short = 'P', long, requires = "username")]
    password: Option<String>,
    /// Topic of the last will, published by the broker if we vanish without DISCONNECT
    #[arg(long)]
    will_topic: Option<String>,
    /// Message of the last will
    #[arg(long, default_value = "", requires = "will_topic")]
    will_message: String,
    /// QoS of the last will
    #[arg(long, default_value_t = 0, requires = "will_topic", value_parser = clap::value_parser!(u8).range(0..=2))]
    will_qos: u8,
    /// Retain the last will
    #[arg(long, requires = "will_topic")]
    will_retain: bool,
    /// Remove the topic's retained message (publishes an empty retained message)
    #[arg(long, conflicts_with_all = ["message", "stdin_lines", "count", "file", "stdin_file"])]
    clear_retained: bool,
    /// Print each MQTT packet sent and received (on stderr)
    #[arg(long)]
    show_packets: bool,
    /// MQTT 5: a property, as mosquitto_pub takes it. For every message:
    /// -D PUBLISH user-property KEY VALUE (repeatable), -D PUBLISH
    /// message-expiry-interval SECONDS, content-type TYPE, response-topic
    /// TOPIC, correlation-data DATA, payload-format-indicator 0|1. For the
    /// connection: -D CONNECT user-property KEY VALUE, receive-maximum N,
    /// maximum-packet-size BYTES, session-expiry-interval SECONDS (as -x),
    /// request-response-information 0|1, request-problem-information 0|1
    #[arg(short = 'D', long = "property", num_args = 3..=4, value_names = ["COMMAND", "NAME", "VALUE"])]
    properties: Vec<String>,
    /// Give up when the broker sends no acknowledgement for this many seconds
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ack_timeout_secs: u64,
    /// Print the version
    #[arg(long, action = clap::ArgAction::Version)]
    version: (),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(publish(args).await)
}

async fn publish(args: Args) -> anyhow::Result<()> {
    let client_id = (args.client_id.clone())
        .unwrap_or_else(|| format!("mqtt_publisher-{}", std::process::id()));
    // MQTT's own port: 1883 for plain MQTT, 8883 for MQTT over TLS.
    let mut client = args.broker.client_config(&client_id)?;
    client.login = args.username.clone().zip(args.password.clone());
    let properties = Properties::from_words(&args.properties, &["CONNECT", "PUBLISH"])?;
    client.take_properties(&properties)?;
    // The last will travels in our CONNECT. `LastWill` is rumqttc's type:
    // rumqttc (https://docs.rs/rumqttc) is the MQTT client library both our
    // clients are built on; `mqtt/src/publisher.rs` shows how it is driven.
    let will = match &args.will_topic {
        Some(topic) => {
            let (message, qos) = (args.will_message.clone(), mqtt::qos(args.will_qos)?);
            Some(LastWill::new(topic, message, qos, args.will_retain))
        }
        None => None,
    };
    let config = PublishConfig {
        client,
        topic: args.topic.clone(),
        qos: mqtt::qos(args.qos)?,
        // A retained message with an empty payload is how MQTT clears one.
        retain: args.retain || args.clear_retained,
        will,
        ack_timeout: Duration::from_secs(args.ack_timeout_secs),
        show_packets: args.show_packets,
    };
    // Ctrl-C (or SIGTERM) ends the input early; what was already published is
    // still acknowledged before we disconnect, so nothing sent is lost.
    let until_stopped = messages(&args)
        .await?
        .take_until(networking_protocols::shutdown_signal());
    publisher::run_with(config, properties.publish, until_stopped).await?;
    Ok(())
}

/// The messages to publish: lines of stdin with `-l`, all of it with `-s`,
/// a file with `-f`, one empty message with `--clear-retained`, otherwise
/// `-m`, `--count` times.
async fn messages(args: &Args) -> anyhow::Result<publisher::Messages> {
    if let Some(path) = &args.file {
        // Opened before we connect: a wrong name fails at once.
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        return Ok(publisher::whole(file));
    }
    Ok(if args.stdin_file {
        publisher::whole(tokio::io::stdin())
    } else if args.stdin_lines {
        publisher::lines(tokio::io::stdin())
    } else if args.clear_retained {
        publisher::repeat(Bytes::new(), 1, Duration::ZERO)
    } else {
        let interval = Duration::from_millis(args.interval_ms);
        publisher::repeat(Bytes::from(args.message.clone()), args.count, interval)
    })
}
