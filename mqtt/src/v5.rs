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
//! - [`PublishProperties`]: `-D PUBLISH name value` from the command line;
//! - [`SubscribeOptions`]: `--nl`, `--rap` and `--rh`;
//! - [`describe_properties`]: a message's properties, for output.

use anyhow::{anyhow, bail};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties as Wire, RetainForwardRule};
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
    options.set_max_packet_size(u32::try_from(MAX_PACKET_BYTES).ok());
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
    /// Reads every `-D` of the command line, their words one after another
    /// (clap hands them to us so): each is `PUBLISH name value`, or
    /// `PUBLISH user-property key value`, which is how we tell where the next
    /// one starts.
    ///
    /// Errors: as [`PublishProperties::add`].
    pub fn from_words(words: &[String]) -> anyhow::Result<PublishProperties> {
        let mut properties = PublishProperties::default();
        let mut rest = words;
        while !rest.is_empty() {
            let user_property = rest.get(1).is_some_and(|name| name == "user-property");
            let (one, after) = rest.split_at(rest.len().min(if user_property { 4 } else { 3 }));
            properties.add(one)?;
            rest = after;
        }
        Ok(properties)
    }

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
