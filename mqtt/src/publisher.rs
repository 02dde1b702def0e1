//! The publisher: send messages to one topic, and do not leave before the
//! broker has them.
//!
//! The classic MQTT bug is a publisher that calls `publish` and exits. With
//! rumqttc, `publish` only puts the message in a queue; it reaches the wire
//! later, when the event loop is polled. Exit right after `publish` and the
//! message is lost, even at QoS 2. So [`run`] keeps polling until every
//! message is out and, at QoS 1 and 2, acknowledged; only then does it send
//! DISCONNECT, the polite goodbye that also tells the broker *not* to publish
//! our last will.

use std::io;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use rumqttc::{AsyncClient, Event, LastWill, Outgoing, Packet, QoS};
use tokio::io::AsyncRead;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tracing::info;

use crate::{ClientConfig, MAX_PACKET_BYTES, explain, packets};

/// What to publish and how.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub client: ClientConfig,
    pub topic: String,
    pub qos: QoS,
    /// Ask the broker to keep the last message on this topic and hand it to
    /// every future subscriber; an empty retained message clears it.
    pub retain: bool,
    /// A message the broker publishes for us if we vanish without DISCONNECT.
    pub will: Option<LastWill>,
    /// How long to wait for an acknowledgement before giving up.
    pub ack_timeout: Duration,
    /// Print every packet on stderr as it is sent or received.
    pub show_packets: bool,
}

/// How many messages went out and how many the broker acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub published: u64,
    pub acknowledged: u64,
}

/// Connects, publishes every message from `messages` to `config.topic`, waits
/// for their acknowledgements, disconnects.
///
/// Fails with one explained error if the broker is unreachable, refuses us,
/// drops the connection, or does not acknowledge within `ack_timeout`. If the
/// input fails (a message too large, say), the messages before it are still
/// acknowledged and the connection closed politely before the error returns.
pub async fn run<M>(config: PublishConfig, messages: M) -> anyhow::Result<Summary>
where
    M: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    if !rumqttc::valid_topic(&config.topic) {
        bail!(
            "cannot publish to {:?}: a topic is not empty and has no + or # \
             (those are for subscribing)",
            config.topic
        );
    }
    let addr = config.client.addr();
    let mut options = config.client.mqtt_options()?;
    if let Some(will) = config.will.clone() {
        options.set_last_will(will);
    }
    // The request queue between `client` and `eventloop` holds 10 requests;
    // when it is full, `publish().await` waits for the event loop to take one.
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    eventloop.set_network_options(config.client.network_options());

    // Connect before reading any input, so an unreachable broker or a bad
    // password is reported at once, not after the user typed a line.
    let show = |event: &Event| {
        if config.show_packets
            && let Some(line) = packets::describe(event, config.qos)
        {
            eprintln!("{line}");
        }
    };
    if config.show_packets {
        let options = &eventloop.mqtt_options;
        eprintln!(
            "{}",
            packets::connect_line(&options.client_id(), options.clean_session())
        );
    }
    let connack = eventloop
        .poll()
        .await
        .map_err(|error| explain(&error, &addr, false))?;
    show(&connack);
    info!("connected to {addr} as {}", config.client.client_id);

    // THE RUMQTTC TRAP: `publish().await` waits while the request queue is
    // full, and only `eventloop.poll()` empties it. Publishing from the loop
    // that polls would wait for itself forever once the queue fills up. So the
    // messages go in from a task of their own, and this task only polls.
    let mut feeder = tokio::spawn(feed(client.clone(), config.clone(), messages));
    let mut total: Option<u64> = None;
    let mut summary = Summary {
        published: 0,
        acknowledged: 0,
    };
    let mut disconnecting = false;
    let mut input = Ok(());
    let qos0 = config.qos == QoS::AtMostOnce;

    loop {
        if let Some(total) = total
            && !disconnecting
            && summary.published == total
            && (qos0 || summary.acknowledged == total)
        {
            // Everything is out and acknowledged. `try_disconnect` because
            // here, too, an `.await` on the queue could wait for ourselves.
            client.try_disconnect().context("cannot queue DISCONNECT")?;
            disconnecting = true;
        }
        // While acknowledgements are due, silence from the broker is an error
        // after `ack_timeout`; otherwise we wait as long as input takes.
        let waiting = !qos0 && summary.acknowledged < summary.published;
        let patience = if waiting {
            config.ack_timeout
        } else {
            Duration::MAX
        };
        let event = tokio::select! {
            fed = &mut feeder, if total.is_none() => {
                // Even when the input failed, the messages before the failure
                // are finished properly (acknowledged, then DISCONNECT), and
                // the error is reported after that.
                let (count, ended) = fed.map_err(|error| anyhow!("the publishing task failed: {error}"))?;
                total = Some(count);
                input = ended;
                continue;
            }
            event = tokio::time::timeout(patience, eventloop.poll()) => match event {
                Ok(event) => event.map_err(|error| explain(&error, &addr, true))?,
                Err(_) => bail!(
                    "{addr} acknowledged {} of {} publishes and then nothing for {:?}",
                    summary.acknowledged, summary.published, config.ack_timeout
                ),
            },
        };
        show(&event);
        match event {
            Event::Outgoing(Outgoing::Publish(_)) => summary.published += 1,
            // QoS 1 ends with PUBACK; QoS 2 with PUBCOMP (after PUBREC and
            // our PUBREL, which rumqttc sends by itself).
            Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) => summary.acknowledged += 1,
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    crate::await_close(&mut eventloop).await;
    if qos0 {
        // Nothing acknowledges QoS 0: "0 acknowledged" would read like a loss.
        info!(
            "published {} message(s) at QoS 0 (no acknowledgements at QoS 0); disconnected",
            summary.published
        );
    } else {
        info!(
            "published {} message(s), {} acknowledged; disconnected",
            summary.published, summary.acknowledged
        );
    }
    input.map(|()| summary)
}

/// Publishes every message, in order. Returns how many it queued and, if
/// the input failed (unreadable, or a message too large), why it stopped.
async fn feed<M>(client: AsyncClient, config: PublishConfig, messages: M) -> Fed
where
    M: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let mut count = 0;
    let mut messages = std::pin::pin!(messages);
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                return (
                    count,
                    Err(anyhow!(error).context("cannot read the message")),
                );
            }
        };
        // Check the size here, where we can say so clearly, the way rumqttc
        // checks it: the whole PUBLISH packet. That is a 1-byte header, the
        // remaining length (1 to 4 bytes), then the remaining bytes: the topic
        // and its 2-byte length, a 2-byte packet id (QoS 1 and 2 only) and
        // the payload.
        let packet_id = if config.qos == QoS::AtMostOnce { 0 } else { 2 };
        let remaining = 2 + config.topic.len() + packet_id + message.len();
        let length_bytes = match remaining {
            0..128 => 1,
            128..16_384 => 2,
            16_384..2_097_152 => 3,
            _ => 4,
        };
        let size = 1 + length_bytes + remaining;
        if size > MAX_PACKET_BYTES {
            let error = anyhow!(
                "message {} is too large: a {size}-byte PUBLISH, the limit is {MAX_PACKET_BYTES}",
                count + 1
            );
            return (count, Err(error));
        }
        let queued = client
            .publish_bytes(&config.topic, config.qos, config.retain, message)
            .await;
        if queued.is_err() {
            return (count, Err(anyhow!("the connection ended while publishing")));
        }
        count += 1;
    }
    (count, Ok(()))
}

/// What [`feed`] returns: how many messages it queued, and how the input ended.
type Fed = (u64, anyhow::Result<()>);

/// A stream of messages to publish, as [`run`] takes it.
pub type Messages = Box<dyn Stream<Item = io::Result<Bytes>> + Send + Unpin>;

/// Each line of `input` as one message (`mosquitto_pub -l`), until its end.
///
/// Lines are split at `\n` without requiring UTF-8, since MQTT payloads are
/// bytes; a trailing `\r` (a Windows line ending) is not part of the message.
pub fn lines(input: impl AsyncRead + Send + Unpin + 'static) -> Messages {
    let codec =
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_PACKET_BYTES);
    Box::new(FramedRead::new(input, codec).map(|line| {
        let line = line.map_err(|error| match error {
            AnyDelimiterCodecError::Io(error) => error,
            AnyDelimiterCodecError::MaxChunkLengthExceeded => io::Error::other(format!(
                "a line is longer than the {MAX_PACKET_BYTES}-byte packet limit"
            )),
        })?;
        Ok(match line.strip_suffix(b"\r") {
            Some(without) => line.slice_ref(without),
            None => line,
        })
    }))
}

/// `message`, `count` times, with `interval` between them.
pub fn repeat(message: Bytes, count: u64, interval: Duration) -> Messages {
    Box::new(Box::pin(stream::iter(0..count).then(move |i| {
        let message = message.clone();
        async move {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Ok(message)
        }
    })))
}
