//! What only MQTT 5 has, as our clients use it (`-V 5`).
//!
//! MQTT 5 keeps the packets of 3.1.1 and adds to most of them a list of
//! *properties* (MQTT 5 §2.2.2): numbered, typed fields such as a message's
//! expiry, its content type, or any number of `user-property` pairs of your
//! own. It also adds *reason codes* to every acknowledgement, so a broker can
//! say why it refused something, and options to each subscription.
//!
//! - [`Version`]: `-V 311` or `-V 5`, spelled as mosquitto spells them;
//! - [`mqtt_options`]: the CONNECT of MQTT 5, with a session expiry (`-x`);
//! - [`Properties`]: every `-D COMMAND name value` of the command line, as
//!   mosquitto's clients take them: [`ConnectProperties`],
//!   [`PublishProperties`], [`SubscribeProperties`];
//! - [`SubscribeOptions`]: `--nl`, `--rap` and `--rh`;
//! - [`describe_properties`]: a message's properties, for output.

use anyhow::{anyhow, bail};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{
    Filter, PublishProperties as Wire, RetainForwardRule, SubscribeProperties as WireSubscribe,
};
use rumqttc::v5::{MqttOptions, mqttbytes::v5::LastWill};
use rumqttc::{QoS, TlsConfiguration, Transport};

use crate::{ClientConfig, MAX_INFLIGHT, MAX_PACKET_BYTES};

/// The MQTT version a client speaks: the Protocol Level byte of CONNECT,
/// 4 for 3.1.1 and 5 for MQTT 5 (MQTT 5 §3.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// MQTT 3.1.1, which every broker speaks.
    #[default]
    V311,
    /// MQTT 5: properties, reason codes, subscription options.
    V5,
}

impl Version {
    /// Reads `-V`: `311` or `mqttv311`, `5` or `mqttv5`.
    ///
    /// Errors: any other text (MQTT 3.1, `31`, is not supported by rumqttc).
    pub fn parse(text: &str) -> Result<Version, String> {
        match text {
            "311" | "mqttv311" => Ok(Version::V311),
            "5" | "mqttv5" => Ok(Version::V5),
            _ => Err("the MQTT version is 311 (or mqttv311) or 5 (or mqttv5)".to_string()),
        }
    }
}

/// The MQTT 5 QoS for our (3.1.1-typed) QoS: the same three numbers.
pub fn qos5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

/// The 3.1.1-typed QoS of an MQTT 5 QoS.
pub fn qos311(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// rumqttc's MQTT 5 options for `config`, as [`ClientConfig::mqtt_options`]
/// builds them for 3.1.1, with `will` as the last will.
///
/// The session: `clean_session: false` becomes Clean Start 0, and with it a
/// session that never expires unless `session_expiry` says otherwise, as
/// `mosquitto_sub -c` does. Errors: a session that outlives the connection
/// with an empty client id (the broker finds a session by its client id).
pub fn mqtt_options(config: &ClientConfig, will: Option<LastWill>) -> anyhow::Result<MqttOptions> {
    let expiry = match (config.session_expiry, config.clean_session) {
        (Some(seconds), _) => seconds,
        (None, false) => u32::MAX,
        (None, true) => 0,
    };
    if config.client_id.is_empty() && (expiry > 0 || !config.clean_session) {
        bail!(
            "a session that outlives the connection needs a client id: the broker finds \
             the session by it; pass a non-empty -i"
        );
    }
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    // Keep-alive, packet size and in-flight limits: see `ClientConfig::mqtt_options`.
    options.set_keep_alive(std::time::Duration::from_secs(30));
    // MQTT 5 splits "clean session" in two: Clean Start says whether to
    // discard an existing session now (MQTT 5 §3.1.2.4), the Session Expiry
    // Interval how long to keep this one after we leave (§3.1.2.11.2).
    options.set_clean_start(config.clean_session);
    if expiry > 0 {
        options.set_session_expiry_interval(Some(expiry));
    }
    // In MQTT 5 the limit travels in CONNECT as the Maximum Packet Size
    // property: the broker must not send us a larger packet [MQTT-3.1.2-24].
    // `-D CONNECT` may ask for a smaller one, and for the rest.
    let asked = &config.connect_properties;
    let max_packet = asked
        .maximum_packet_size
        .or(u32::try_from(MAX_PACKET_BYTES).ok());
    options.set_max_packet_size(max_packet);
    options.set_receive_maximum(asked.receive_maximum);
    options.set_request_response_info(asked.request_response_information);
    options.set_request_problem_info(asked.request_problem_information);
    options.set_user_properties(asked.user_properties.clone());
    options.set_outgoing_inflight_upper_limit(MAX_INFLIGHT);
    options.set_network_options(config.network_options());
    options.set_connection_timeout(5);
    if let Some((username, password)) = &config.login {
        options.set_credentials(username, password);
    }
    if let Some(will) = will {
        options.set_last_will(will);
    }
    if let Some(tls) = &config.tls {
        let tls = TlsConfiguration::Rustls(tls.clone());
        options.set_transport(Transport::tls_with_config(tls));
    }
    Ok(options)
}

/// The MQTT 5 last will for a 3.1.1 one: the same topic, message, QoS and
/// retain flag, with no properties.
pub fn last_will(will: &rumqttc::LastWill) -> LastWill {
    let message = Bytes::copy_from_slice(&will.message);
    LastWill::new(&will.topic, message, qos5(will.qos), will.retain, None)
}

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

/// The subscription options of MQTT 5 (MQTT 5 §3.8.3.1), from `--nl`,
/// `--rap` and `--rh`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// No Local: do not send us the messages we publish ourselves
    /// [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Retain As Published: keep the retain flag of a forwarded message as
    /// its publisher set it, instead of clearing it [MQTT-3.3.1-12].
    pub retain_as_published: bool,
    /// Retain Handling: send the retained messages on every subscribe (0),
    /// only when the subscription is new (1), or never (2).
    pub retain_handling: u8,
}

impl SubscribeOptions {
    /// rumqttc's MQTT 5 filter for `filter` at `qos` with these options.
    pub fn filter(&self, filter: &str, qos: QoS) -> Filter {
        let mut wire = Filter::new(filter, qos5(qos));
        wire.nolocal = self.no_local;
        wire.preserve_retain = self.retain_as_published;
        wire.retain_forward_rule = match self.retain_handling {
            0 => RetainForwardRule::OnEverySubscribe,
            1 => RetainForwardRule::OnNewSubscribe,
            _ => RetainForwardRule::Never,
        };
        wire
    }
}

/// A message's properties in the words `-D PUBLISH` takes, so what you see
/// is what you would type: `user-property sensor kitchen, content-type
/// text/plain`. Empty when the message has none.
pub fn describe_properties(properties: Option<&Wire>) -> String {
    let Some(p) = properties else {
        return String::new();
    };
    let mut words = Vec::new();
    for (key, value) in &p.user_properties {
        words.push(format!("user-property {key} {value}"));
    }
    if let Some(seconds) = p.message_expiry_interval {
        // What is left of it: the broker counts down while it holds the
        // message [MQTT-3.3.2-6].
        words.push(format!("message-expiry-interval {seconds}"));
    }
    if let Some(text) = &p.content_type {
        words.push(format!("content-type {text}"));
    }
    if let Some(topic) = &p.response_topic {
        words.push(format!("response-topic {topic}"));
    }
    if let Some(data) = &p.correlation_data {
        words.push(format!(
            "correlation-data {}",
            String::from_utf8_lossy(data)
        ));
    }
    if let Some(format) = p.payload_format_indicator {
        words.push(format!("payload-format-indicator {format}"));
    }
    for id in &p.subscription_identifiers {
        words.push(format!("subscription-identifier {id}"));
    }
    if let Some(alias) = p.topic_alias {
        words.push(format!("topic-alias {alias}"));
    }
    words.join(", ")
}
