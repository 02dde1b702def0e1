//! The subscriber: print every message on the chosen topics, and keep going
//! when the broker goes away and comes back.
//!
//! rumqttc reconnects whenever `poll()` is called after a failure, but does
//! nothing else for us: polled in a loop, it retries as fast as the CPU goes,
//! and on the new connection we have no subscriptions unless the broker kept
//! our session. So [`run`] waits between attempts (backing off from 250 ms to
//! 5 s) and subscribes after every CONNACK, even one that resumes a session,
//! as `mosquitto_sub -c` does: the kept session holds the filters and QoS of
//! an earlier run, which need not be this run's `-t` and `-q`.
//!
//! The same loop speaks MQTT 3.1.1 and MQTT 5 (`-V 5`) through
//! [`crate::client`]; with MQTT 5, [`run_with`] adds subscription options
//! (`--nl`, `--rap`, `--rh`) and can print each message's properties.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rumqttc::{Outgoing, QoS};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::client::{self, Client, Event, Message};
use crate::format::Format;
use crate::v5::{SubscribeOptions, SubscribeProperties, describe_properties};
use crate::{ClientConfig, Version};

/// What to subscribe to and how to print it.
#[derive(Debug, Clone)]
pub struct SubscribeConfig {
    pub client: ClientConfig,
    /// Topic filters; `+` matches one level (`home/+/temp`), `#` all the
    /// levels below (`home/#`).
    pub filters: Vec<String>,
    /// The highest QoS we want messages delivered with.
    pub qos: QoS,
    /// Print `topic payload` instead of the payload alone.
    pub verbose: bool,
    /// `-F`: print each message in this format instead (see
    /// [`crate::format`]).
    pub format: Option<Format>,
    /// End each message with a newline (`-N` turns it off, for binary
    /// payloads piped to a file).
    pub newline: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// `-R`: leave out the retained messages the broker sends on
    /// subscribing (their RETAIN flag is set).
    pub skip_retained: bool,
    /// `--retained-only`: print only retained messages, and stop at the
    /// first live one (which is not printed).
    pub retained_only: bool,
    /// `-T`: leave out messages whose topic matches one of these filters.
    pub hide: Vec<String>,
    /// `-E`: stop once the broker has answered the SUBSCRIBE.
    pub exit_when_subscribed: bool,
    /// `-U`: filters to unsubscribe from on connecting: a persistent
    /// session's, kept from an earlier run. With no `filters`, we stop once
    /// the broker has answered.
    pub unsubscribe: Vec<String>,
    /// Fail if no message arrives for this long.
    pub timeout: Option<Duration>,
    /// Print every packet on stderr as it is sent or received.
    pub show_packets: bool,
}

/// With `-C`, how long we wait for the broker's PUBREL of the last QoS 2
/// messages before we disconnect anyway.
const FINISH_WAIT: Duration = Duration::from_secs(5);

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// Subscribes and writes each message to `out` as one line, until `count`
/// messages arrived (then disconnects politely and returns), or an error.
///
/// Failing to connect the first time is an error (wrong port, bad password);
/// losing a working connection is not: we reconnect until the broker is back.
pub async fn run(config: SubscribeConfig, out: impl AsyncWrite + Unpin) -> anyhow::Result<u64> {
    run_with(config, Mqtt5::default(), out).await
}

/// What only an MQTT 5 subscriber does (`-V 5`).
#[derive(Debug, Clone, Default)]
pub struct Mqtt5 {
    /// The subscription options sent with every filter.
    pub options: SubscribeOptions,
    /// `-D SUBSCRIBE ...`: the SUBSCRIBE's properties.
    pub properties: SubscribeProperties,
    /// Print each message's properties after its payload, in brackets, in
    /// the words of `-D PUBLISH`: `[user-property sensor kitchen]`.
    pub show_properties: bool,
}

/// [`run`], with the MQTT 5 extras in `mqtt5`.
///
/// Errors: as [`run`]; also any MQTT 5 extra with MQTT 3.1.1.
pub async fn run_with(
    config: SubscribeConfig,
    mqtt5: Mqtt5,
    mut out: impl AsyncWrite + Unpin,
) -> anyhow::Result<u64> {
    let extras = mqtt5.show_properties
        || mqtt5.options != SubscribeOptions::default()
        || mqtt5.properties != SubscribeProperties::default();
    if config.client.version == Version::V311 && extras {
        bail!("--nl, --rap, --rh, --show-properties and -D are MQTT 5: add -V 5");
    }
    for filter in config
        .filters
        .iter()
        .chain(&config.hide)
        .chain(&config.unsubscribe)
    {
        if !rumqttc::valid_filter(filter) {
            bail!("{filter:?} is not a topic filter: # may only come last, as a whole level");
        }
    }
    let addr = config.client.addr();
    let show = config.show_packets.then_some(config.qos);
    let (client, mut eventloop) = client::new(&config.client, None, show)?;

    let mut connected = false;
    let mut retry = FIRST_RETRY;
    // When the current connection got its CONNACK, if it is up.
    let mut up_since: Option<Instant> = None;
    let mut received = 0;
    // `-W`: the moment after which silence is an error, moved on by every message.
    let mut quiet_until = deadline_after(config.timeout);
    // QoS 2 messages we printed and answered with PUBREC whose exchange is not
    // over: the broker still owes us PUBREL, and we owe it PUBCOMP. With `-C`
    // we disconnect only once they are done (or after FINISH_WAIT).
    let mut unfinished: HashSet<u16> = HashSet::new();
    let mut finish_by: Option<Instant> = None;
    loop {
        let poll = eventloop.poll();
        let deadline = match (quiet_until, finish_by) {
            (Some(quiet), Some(finish)) => Some(quiet.min(finish)),
            (quiet, finish) => quiet.or(finish),
        };
        let polled = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, poll).await,
            None => Ok(poll.await),
        };
        let event = match polled {
            Ok(Ok(event)) => event,
            Ok(Err(error)) if !connected => return Err(error.explain(&addr, false)),
            Ok(Err(error)) => {
                let cause = error.explain(&addr, true);
                // A connection that lasted starts the backoff over. One that
                // broke at once (another client with our id knocking us off,
                // a message too large for us) would break again at once: we
                // keep backing off instead of reconnecting 4 times a second.
                if up_since
                    .take()
                    .is_some_and(|up| up.elapsed() >= LONGEST_RETRY)
                {
                    retry = FIRST_RETRY;
                }
                let wake = Instant::now() + retry;
                // `-W` holds while the broker is away too: if the silence
                // would outlast it before our next attempt, we stop.
                if let Some(quiet) = quiet_until.filter(|quiet| *quiet <= wake) {
                    warn!("{cause}");
                    tokio::time::sleep_until(quiet).await;
                    return Err(silence(&config, received));
                }
                // Without this pause, the next `poll()` would retry at once,
                // fail at once, and spin.
                warn!("{cause}; reconnecting in {retry:?}");
                tokio::time::sleep_until(wake).await;
                retry = (retry * 2).min(LONGEST_RETRY);
                continue;
            }
            // The broker did not finish the last QoS 2 exchanges in time:
            // every message is printed, so we leave anyway.
            Err(_) if finish_by.take().is_some() => {
                warn!(
                    "no PUBREL for {} message(s); disconnecting",
                    unfinished.len()
                );
                client.try_disconnect()?;
                continue;
            }
            Err(_) => return Err(silence(&config, received)),
        };
        match event {
            Event::ConnAck { session_present } => {
                connected = true;
                up_since = Some(Instant::now());
                if !config.unsubscribe.is_empty() {
                    client.try_unsubscribe(&config.unsubscribe)?;
                }
                if !config.filters.is_empty() {
                    subscribe(&client, &config, &mqtt5, session_present, &addr)?;
                }
            }
            // `-U` alone: done once the broker has answered.
            Event::UnsubAck if config.filters.is_empty() => {
                info!("unsubscribed from {}", config.unsubscribe.join(", "));
                client.try_disconnect()?;
            }
            // `--retained-only`: the first live message ends the run.
            Event::Publish(publish) if config.retained_only && !publish.retain => {
                finish_by.get_or_insert_with(|| Instant::now() + FINISH_WAIT);
            }
            // `-R` and `-T`: received (and acknowledged), not printed.
            Event::Publish(publish)
                if (config.skip_retained && publish.retain)
                    || hidden(&config.hide, &publish.topic) =>
            {
                // A QoS 2 one still owes its PUBREL before we may leave.
                unfinished.extend((publish.qos == QoS::ExactlyOnce).then_some(publish.pkid));
            }
            // After the last wanted message, stragglers that arrive before our
            // DISCONNECT goes out are not printed.
            Event::Publish(_) if config.count == Some(received) => {}
            Event::Publish(publish) => {
                // rumqttc has already acknowledged this message (PUBACK at
                // QoS 1, PUBREC at QoS 2) before handing it to us: if we
                // crashed right now, the broker would not send it again.
                print(&mut out, &publish, &config, mqtt5.show_properties).await?;
                received += 1;
                quiet_until = deadline_after(config.timeout);
                if publish.qos == QoS::ExactlyOnce {
                    unfinished.insert(publish.pkid);
                }
                if config.count == Some(received) {
                    finish_by = Some(Instant::now() + FINISH_WAIT);
                }
            }
            // We sent PUBCOMP: that QoS 2 exchange is over.
            Event::Sent(Outgoing::PubComp(pkid)) => {
                unfinished.remove(&pkid);
            }
            Event::SubAck { refused: true } => {
                bail!("{addr} refused the subscription to {:?}", config.filters);
            }
            Event::SubAck { refused: false } if config.exit_when_subscribed => {
                client.try_disconnect()?;
            }
            Event::Sent(Outgoing::Disconnect) => {
                eventloop.await_close().await;
                return Ok(received);
            }
            _ => {}
        }
        // After the last wanted message, once no QoS 2 exchange is pending,
        // we say goodbye. (Leaving right after PUBREC would not lose the
        // message, but would leave the broker holding an unfinished one.)
        if finish_by.is_some() && unfinished.is_empty() {
            finish_by = None;
            client.try_disconnect()?;
        }
    }
}

/// Whether `topic` matches one of the `-T` filters.
fn hidden(hide: &[String], topic: &[u8]) -> bool {
    let topic = String::from_utf8_lossy(topic);
    hide.iter().any(|filter| rumqttc::matches(&topic, filter))
}

/// The `-W` error: no message for the whole timeout.
fn silence(config: &SubscribeConfig, received: u64) -> anyhow::Error {
    let timeout = config.timeout.unwrap_or_default();
    anyhow!("no message for {timeout:?} ({received} received)")
}

/// `timeout` from now, or no deadline at all for a timeout beyond the end of
/// the clock (`-W 18446744073709551615`): `Instant + Duration` would panic.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
}

/// Subscribes to every filter, also when the broker kept our session from a
/// previous connection: that session's subscriptions are whatever an earlier
/// run asked for. A SUBSCRIBE for a filter the session already has replaces
/// that subscription, with our QoS, and brings the filter's retained
/// messages again [MQTT-3.8.4-3] (rumqttd keeps delivering at the first QoS,
/// one of its departures); the session's other filters stay.
fn subscribe(
    client: &Client,
    config: &SubscribeConfig,
    mqtt5: &Mqtt5,
    session_present: bool,
    addr: &str,
) -> anyhow::Result<()> {
    let filters_list = config.filters.join(", ");
    if session_present {
        info!(
            "connected to {addr}; the broker kept our session and subscriptions; \
             subscribing to {filters_list}"
        );
    } else {
        info!("connected to {addr}; subscribing to {filters_list}");
    }
    // THE RUMQTTC TRAP, again: we are the task that polls the event loop, so
    // `subscribe().await` could wait for queue space that only our next
    // `poll()` would make. `try_subscribe_many` never waits; the queue holds 10
    // requests and this is the only one we make here.
    client.try_subscribe(
        &config.filters,
        config.qos,
        mqtt5.options,
        &mqtt5.properties,
    )
}

/// Writes one message: the payload (`-v`: `topic payload`), with `-v` a
/// ` (retained)` mark for a message the broker kept from before we
/// subscribed, and with `--show-properties` its MQTT 5 properties, if any,
/// in brackets: ` [user-property sensor kitchen]`; or, with `-F`, as the
/// format says. Then a newline, unless `-N`.
async fn print(
    out: &mut (impl AsyncWrite + Unpin),
    publish: &Message,
    config: &SubscribeConfig,
    show_properties: bool,
) -> anyhow::Result<()> {
    let verbose = config.verbose;
    let mut line = Vec::with_capacity(publish.topic.len() + publish.payload.len() + 16);
    if let Some(format) = &config.format {
        format.write(publish, &mut line);
        return write_line(out, line, config.newline).await;
    }
    if verbose {
        line.extend_from_slice(&publish.topic);
        line.push(b' ');
    }
    line.extend_from_slice(&publish.payload);
    if verbose && publish.retain {
        line.extend_from_slice(b" (retained)");
    }
    let properties = describe_properties(publish.properties.as_ref());
    if show_properties && !properties.is_empty() {
        line.extend_from_slice(format!(" [{properties}]").as_bytes());
    }
    write_line(out, line, config.newline).await
}

/// Writes `line` and, with `newline`, a newline, and flushes.
async fn write_line(
    out: &mut (impl AsyncWrite + Unpin),
    mut line: Vec<u8>,
    newline: bool,
) -> anyhow::Result<()> {
    if newline {
        line.push(b'\n');
    }
    out.write_all(&line)
        .await
        .context("cannot write to stdout")?;
    // Flush every line, so a pipe (`| grep`) sees each message as it comes.
    out.flush().await.context("cannot write to stdout")?;
    Ok(())
}
