//! What `-D COMMAND NAME VALUE` asks for, as mosquitto's clients spell it:
//! the properties of CONNECT, PUBLISH and SUBSCRIBE that a user sets from
//! the command line, each checked against its property's range before
//! anything connects (MQTT 5 §2.2.2.2 lists them all).

use anyhow::{anyhow, bail};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{PublishProperties as Wire, SubscribeProperties as WireSubscribe};

/// Every `-D COMMAND NAME VALUE` of a command line (`-D COMMAND
/// user-property KEY VALUE` for a user property), by the packet it goes
/// in: mosquitto's spelling, so a mosquitto_pub or mosquitto_sub habit works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub connect: ConnectProperties,
    pub publish: PublishProperties,
    pub subscribe: SubscribeProperties,
}

impl Properties {
    /// Reads every `-D` of the command line, their words one after another
    /// (clap hands them to us so): a user property takes four words, the
    /// others three, which is how we tell where the next one starts. Only
    /// the commands in `commands` (`"CONNECT"`, `"PUBLISH"`, `"SUBSCRIBE"`)
    /// are taken: a subscriber publishes nothing.
    ///
    /// Errors: another command, an unknown property name, a value that does
    /// not fit the property, or a wrong number of words.
    pub fn from_words(words: &[String], commands: &[&str]) -> anyhow::Result<Properties> {
        let mut properties = Properties::default();
        let mut rest = words;
        while !rest.is_empty() {
            let user_property = rest.get(1).is_some_and(|name| name == "user-property");
            let (one, after) = rest.split_at(rest.len().min(if user_property { 4 } else { 3 }));
            let command = one[0].to_ascii_uppercase();
            if !commands.contains(&command.as_str()) {
                bail!(
                    "-D {}: this client takes -D {} properties",
                    one[0],
                    commands.join(" and -D ")
                );
            }
            match command.as_str() {
                "CONNECT" => properties.connect.add(&one[1..])?,
                "SUBSCRIBE" => properties.subscribe.add(&one[1..])?,
                _ => properties.publish.add(one)?,
            }
            rest = after;
        }
        Ok(properties)
    }

    /// Whether no property was asked for.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// The words of `-D ... user-property KEY VALUE` after the command, if
/// `words` is one.
fn user_property(words: &[&str]) -> Option<(String, String)> {
    match words {
        ["user-property", key, value] => Some((key.to_string(), value.to_string())),
        _ => None,
    }
}

/// A number for `-D COMMAND name N`, from `low` to `high`.
fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    command: &str,
    name: &str,
    text: &str,
    low: T,
    high: T,
) -> anyhow::Result<T> {
    match text.parse::<T>() {
        Ok(n) if n >= low && n <= high => Ok(n),
        _ => bail!("-D {command} {name} takes {low} to {high}, not {text:?}"),
    }
}

/// What `-D CONNECT ...` asks for (MQTT 5 §3.1.2.11): how this client wants
/// the broker to treat it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// `session-expiry-interval N`: the same as `-x N`.
    pub session_expiry: Option<u32>,
    /// `receive-maximum N`: at most N unacknowledged QoS 1 and 2 messages
    /// from the broker at once (1 to 65,535) [MQTT-3.3.4-9].
    pub receive_maximum: Option<u16>,
    /// `maximum-packet-size N`: the broker sends no larger packet, in bytes
    /// (it drops, for us, a message that would make one) [MQTT-3.1.2-25].
    pub maximum_packet_size: Option<u32>,
    /// `request-response-information 0|1`: ask for Response Information in
    /// CONNACK (a broker may give none).
    pub request_response_information: Option<u8>,
    /// `request-problem-information 0|1`: 0 asks the broker to leave Reason
    /// Strings and User Properties out of most packets.
    pub request_problem_information: Option<u8>,
    /// `user-property KEY VALUE`: pairs of your own in CONNECT.
    pub user_properties: Vec<(String, String)>,
}

impl ConnectProperties {
    /// Reads one `-D CONNECT name value` (the words after CONNECT).
    ///
    /// Errors: an unknown name or a value out of the property's range.
    fn add(&mut self, words: &[String]) -> anyhow::Result<()> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        if let Some(pair) = user_property(&words) {
            self.user_properties.push(pair);
            return Ok(());
        }
        let flag = |text: &str, name: &str| number("CONNECT", name, text, 0u8, 1u8);
        match words[..] {
            ["session-expiry-interval", n] => {
                self.session_expiry = Some(number("CONNECT", words[0], n, 0, u32::MAX)?);
            }
            ["receive-maximum", n] => {
                self.receive_maximum = Some(number("CONNECT", words[0], n, 1, u16::MAX)?);
            }
            ["maximum-packet-size", n] => {
                self.maximum_packet_size = Some(number("CONNECT", words[0], n, 1, u32::MAX)?);
            }
            ["request-response-information", n] => {
                self.request_response_information = Some(flag(n, words[0])?);
            }
            ["request-problem-information", n] => {
                self.request_problem_information = Some(flag(n, words[0])?);
            }
            _ => bail!(
                "-D CONNECT {}: expected user-property KEY VALUE, session-expiry-interval N, \
                 receive-maximum N, maximum-packet-size N, request-response-information 0|1 \
                 or request-problem-information 0|1",
                words.join(" ")
            ),
        }
        Ok(())
    }
}

/// What `-D SUBSCRIBE ...` asks for (MQTT 5 §3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// `subscription-identifier N` (1 to 268,435,455): every message the
    /// subscription brings carries N back (print it with `-F %S`).
    pub subscription_identifier: Option<usize>,
    /// `user-property KEY VALUE`: pairs of your own in SUBSCRIBE.
    pub user_properties: Vec<(String, String)>,
}

impl SubscribeProperties {
    /// Reads one `-D SUBSCRIBE name value` (the words after SUBSCRIBE).
    ///
    /// Errors: an unknown name or a value out of the property's range.
    fn add(&mut self, words: &[String]) -> anyhow::Result<()> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        if let Some(pair) = user_property(&words) {
            self.user_properties.push(pair);
            return Ok(());
        }
        match words[..] {
            ["subscription-identifier", n] => {
                // A variable byte integer's range, 0 excluded (§3.8.2.1.2).
                let id = number("SUBSCRIBE", words[0], n, 1, 268_435_455)?;
                self.subscription_identifier = Some(id);
            }
            _ => bail!(
                "-D SUBSCRIBE {}: expected user-property KEY VALUE or subscription-identifier N",
                words.join(" ")
            ),
        }
        Ok(())
    }

    /// rumqttc's SUBSCRIBE properties for these, `None` if there are none.
    pub fn to_wire(&self) -> Option<WireSubscribe> {
        (*self != SubscribeProperties::default()).then(|| WireSubscribe {
            id: self.subscription_identifier,
            user_properties: self.user_properties.clone(),
        })
    }
}

/// The properties `-D PUBLISH ...` asks for, sent with every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// `user-property KEY VALUE`: pairs of your own, repeatable (a key may
    /// come twice); the broker forwards them unaltered [MQTT-3.3.2-17] and
    /// in order [MQTT-3.3.2-18].
    pub user_properties: Vec<(String, String)>,
    /// `message-expiry-interval N`: the broker drops the message if it
    /// cannot deliver it within N seconds (MQTT 5 §3.3.2.3.3).
    pub message_expiry: Option<u32>,
    /// `content-type T`: a MIME type such as `application/json`.
    pub content_type: Option<String>,
    /// `response-topic T`: where a responder should publish its answer.
    pub response_topic: Option<String>,
    /// `correlation-data D`: bytes the responder copies into its answer, so
    /// the requester can tell which request it answers.
    pub correlation_data: Option<Bytes>,
    /// `payload-format-indicator 0|1`: 1 says the payload is UTF-8 text,
    /// 0 (as if absent) unspecified bytes (MQTT 5 §3.3.2.3.2).
    pub payload_format: Option<u8>,
}

impl PublishProperties {
    /// Reads one `-D` occurrence: `PUBLISH name value` or, for a user
    /// property, `PUBLISH user-property key value`.
    ///
    /// Errors: a command other than PUBLISH, an unknown property name, a
    /// value that does not fit the property, or a wrong number of words.
    pub fn add(&mut self, words: &[String]) -> anyhow::Result<()> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (command, rest) = words.split_first().unwrap_or((&"", &[]));
        if !command.eq_ignore_ascii_case("publish") {
            bail!("-D {command}: only PUBLISH properties are supported, as -D PUBLISH NAME VALUE");
        }
        match rest {
            ["user-property", key, value] => {
                self.user_properties
                    .push((key.to_string(), value.to_string()));
            }
            ["message-expiry-interval", seconds] => {
                let seconds = seconds.parse().map_err(|_| {
                    anyhow!("-D PUBLISH message-expiry-interval takes 0 to 4294967295 seconds, not {seconds:?}")
                })?;
                self.message_expiry = Some(seconds);
            }
            ["content-type", text] => self.content_type = Some(text.to_string()),
            ["response-topic", topic] if rumqttc::valid_topic(topic) => {
                self.response_topic = Some(topic.to_string());
            }
            ["response-topic", topic] => {
                // [MQTT-3.3.2-14]: the Response Topic is a topic name, no wildcards.
                bail!("-D PUBLISH response-topic {topic:?}: a topic has no + or #");
            }
            ["correlation-data", data] => {
                self.correlation_data = Some(Bytes::copy_from_slice(data.as_bytes()));
            }
            ["payload-format-indicator", indicator @ ("0" | "1")] => {
                self.payload_format = Some(u8::from(*indicator == "1"));
            }
            ["payload-format-indicator", other] => {
                bail!(
                    "-D PUBLISH payload-format-indicator is 0 (bytes) or 1 (UTF-8 text), not {other:?}"
                );
            }
            _ => bail!(
                "-D PUBLISH {}: expected user-property KEY VALUE, message-expiry-interval N, \
                 content-type T, response-topic T, correlation-data D or \
                 payload-format-indicator 0|1",
                rest.join(" ")
            ),
        }
        Ok(())
    }

    /// Whether no property was asked for.
    pub fn is_empty(&self) -> bool {
        *self == PublishProperties::default()
    }

    /// rumqttc's PUBLISH properties for these.
    pub fn to_wire(&self) -> Wire {
        Wire {
            message_expiry_interval: self.message_expiry,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            content_type: self.content_type.clone(),
            payload_format_indicator: self.payload_format,
            ..Wire::default()
        }
    }

    /// How many bytes these properties add to a PUBLISH, after its property
    /// length: each property is a 1-byte identifier and its value, a string
    /// or binary with a 2-byte length, a 4-byte integer (MQTT 5 §2.2.2.2).
    pub fn wire_len(&self) -> usize {
        let pairs: usize = (self.user_properties.iter())
            .map(|(key, value)| 1 + 2 + key.len() + 2 + value.len())
            .sum();
        let strings = [&self.content_type, &self.response_topic]
            .into_iter()
            .flatten()
            .map(|text| 3 + text.len())
            .sum::<usize>();
        let data = self
            .correlation_data
            .as_ref()
            .map_or(0, |data| 3 + data.len());
        let expiry = self.message_expiry.map_or(0, |_| 5);
        let format = self.payload_format.map_or(0, |_| 2);
        pairs + strings + data + expiry + format
    }
}
