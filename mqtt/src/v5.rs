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
//!   [`PublishProperties`], [`SubscribeProperties`] (`v5/properties.rs`);
//! - [`SubscribeOptions`]: `--nl`, `--rap` and `--rh`;
//! - [`describe_properties`]: a message's properties, for output.

use anyhow::bail;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties as Wire, RetainForwardRule};
use rumqttc::v5::{MqttOptions, mqttbytes::v5::LastWill};
use rumqttc::{QoS, TlsConfiguration, Transport};

use crate::{ClientConfig, MAX_INFLIGHT, MAX_PACKET_BYTES};

mod properties;

pub use properties::{ConnectProperties, Properties, PublishProperties, SubscribeProperties};

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
