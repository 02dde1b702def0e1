//! The publisher: send messages to one topic, and do not leave before the
//! broker has them.
//!
//! The classic MQTT bug is a publisher that calls `publish` and exits. With
//! [rumqttc](https://docs.rs/rumqttc), our MQTT client library, `publish`
//! only puts the message in a queue; it reaches the wire later, when the
//! event loop is polled. Exit right after `publish` and the message is lost,
//! even at QoS 2. So [`run`] keeps polling until every message is out and,
//! at QoS 1 and 2, acknowledged; only then does it send DISCONNECT, the
//! polite goodbye that also tells the broker *not* to publish our last will.
//!
//! The same loop speaks MQTT 3.1.1 and MQTT 5 (`-V 5`) through
//! [`crate::client`]; with MQTT 5, [`run_with`] sends properties with every
//! message, and a broker can refuse a message with a reason code in its
//! PUBACK or PUBREC, which [`run_with`] reports as an error.

use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use rumqttc::{LastWill, Outgoing, QoS};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tracing::{info, warn};

use crate::client::{self, Client, Event};
use crate::v5::PublishProperties;
use crate::{ClientConfig, MAX_PACKET_BYTES, Version};

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
    run_with(config, PublishProperties::default(), messages).await
}

/// [`run`], with MQTT 5 `properties` on every message (`-D PUBLISH ...`).
///
/// Errors: as [`run`]; also properties with MQTT 3.1.1 (it has none), and,
/// after the rest is done, messages the broker refused with an MQTT 5 reason
/// code (0x87 "not authorized", say).
pub async fn run_with<M>(
    config: PublishConfig,
    properties: PublishProperties,
    messages: M,
) -> anyhow::Result<Summary>
where
    M: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    if config.client.version == Version::V311 && !properties.is_empty() {
        bail!("-D PUBLISH properties are MQTT 5: add -V 5");
    }
    if !rumqttc::valid_topic(&config.topic) {
        bail!(
            "cannot publish to {:?}: a topic is not empty and has no + or # \
             (those are for subscribing)",
            config.topic
        );
    }
    let addr = config.client.addr();
    // The request queue between `client` and `eventloop` holds 10 requests;
    // when it is full, `publish().await` waits for the event loop to take one.
    let show = config.show_packets.then_some(config.qos);
    let (client, mut eventloop) = client::new(&config.client, config.will.clone(), show)?;

    // Connect before reading any input, so an unreachable broker or a bad
    // password is reported at once, not after the user typed a line.
    eventloop
        .poll()
        .await
        .map_err(|error| error.explain(&addr, false))?;
    info!("connected to {addr} as {}", config.client.client_id);

    // THE RUMQTTC TRAP: `publish().await` waits while the request queue is
    // full, and only `eventloop.poll()` empties it. Publishing from the loop
    // that polls would wait for itself forever once the queue fills up. So the
    // messages go in from a task of their own, and this task only polls.
    let feeding = feed(client.clone(), config.clone(), properties, messages);
    let mut feeder = tokio::spawn(feeding);
    let mut total: Option<u64> = None;
    let mut summary = Summary {
        published: 0,
        acknowledged: 0,
    };
    let mut disconnecting = false;
    let mut input = Ok(());
    // MQTT 5: the reason codes of the messages the broker did not take.
    let mut refused: Vec<String> = Vec::new();
    let qos0 = config.qos == QoS::AtMostOnce;

    loop {
        if let Some(total) = total
            && !disconnecting
            && summary.published == total
            && (qos0 || summary.acknowledged == total)
        {
            // Everything is out and acknowledged. `try_disconnect` because
            // here, too, an `.await` on the queue could wait for ourselves.
            client.try_disconnect()?;
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
                Ok(event) => event.map_err(|error| error.explain(&addr, true))?,
                Err(_) => bail!(
                    "{addr} acknowledged {} of {} publishes and then nothing for {:?}",
                    summary.acknowledged, summary.published, config.ack_timeout
                ),
            },
        };
        match event {
            Event::Sent(Outgoing::Publish(_)) => summary.published += 1,
            // QoS 1 ends with PUBACK; QoS 2 with PUBCOMP (after PUBREC and
            // our PUBREL, which rumqttc sends by itself).
            Event::Acked { refused: reason } => {
                summary.acknowledged += 1;
                if let Some(reason) = reason {
                    warn!("{addr} refused message {}: {reason}", summary.acknowledged);
                    refused.push(reason);
                }
            }
            Event::Sent(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    eventloop.await_close().await;
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
    input?;
    if let Some(first) = refused.first() {
        bail!(
            "{addr} refused {} of {} message(s) ({first})",
            refused.len(),
            summary.published
        );
    }
    Ok(summary)
}

/// Publishes every message, in order. Returns how many it queued and, if
/// the input failed (unreadable, or a message too large), why it stopped.
async fn feed<M>(
    client: Client,
    config: PublishConfig,
    properties: PublishProperties,
    messages: M,
) -> Fed
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
        // the payload. MQTT 5 adds the properties, after their own length
        // (a variable byte integer too, MQTT 5 §3.3.2.3.1).
        let packet_id = if config.qos == QoS::AtMostOnce { 0 } else { 2 };
        let properties_len = match config.client.version {
            Version::V311 => 0,
            Version::V5 => length_bytes(properties.wire_len()) + properties.wire_len(),
        };
        let remaining = 2 + config.topic.len() + packet_id + properties_len + message.len();
        let size = 1 + length_bytes(remaining) + remaining;
        if size > MAX_PACKET_BYTES {
            let error = anyhow!(
                "message {} is too large: a {size}-byte PUBLISH, the limit is {MAX_PACKET_BYTES}",
                count + 1
            );
            return (count, Err(error));
        }
        let (topic, qos, retain) = (&config.topic, config.qos, config.retain);
        let queued = client
            .publish(topic, qos, retain, message, &properties)
            .await;
        if let Err(error) = queued {
            return (count, Err(error));
        }
        count += 1;
    }
    (count, Ok(()))
}

/// How many bytes MQTT's variable byte integer takes for `n`: 7 bits a byte.
fn length_bytes(n: usize) -> usize {
    match n {
        0..128 => 1,
        128..16_384 => 2,
        16_384..2_097_152 => 3,
        _ => 4,
    }
}

/// What [`feed`] returns: how many messages it queued, and how the input ended.
type Fed = (u64, anyhow::Result<()>);

/// A stream of messages to publish, as [`run`] takes it.
pub type Messages = Box<dyn Stream<Item = io::Result<Bytes>> + Send + Unpin>;

/// All of `input`, read to its end, as one message (`mosquitto_pub -s`, and
/// `-f FILE` with a file): any bytes, an image or a JSON document alike.
/// More than [`MAX_PACKET_BYTES`] is an error, before anything is sent.
pub fn whole(input: impl AsyncRead + Send + Unpin + 'static) -> Messages {
    Box::new(Box::pin(stream::once(async move {
        let mut bytes = Vec::new();
        let most = MAX_PACKET_BYTES as u64;
        input.take(most + 1).read_to_end(&mut bytes).await?;
        if bytes.len() as u64 > most {
            return Err(io::Error::other(format!(
                "the message is longer than the {MAX_PACKET_BYTES}-byte packet limit"
            )));
        }
        Ok(Bytes::from(bytes))
    })))
}

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
