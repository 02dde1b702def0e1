//! MQTT, taught by an embedded broker, a publisher and a subscriber.
//!
//! MQTT is publish/subscribe through a broker: clients never talk to each
//! other. A publisher sends a message to a *topic* (`home/kitchen/temp`), a
//! subscriber asks for a *filter* (`home/+/temp`, `home/#`), and the broker
//! forwards each message to every matching subscription. Each side picks a
//! quality of service: QoS 0 (at most once: PUBLISH), QoS 1 (at least once:
//! PUBLISH, PUBACK) or QoS 2 (exactly once: PUBLISH, PUBREC, PUBREL, PUBCOMP).
//!
//! The binaries in `src/bin/` are the story a learner reads first; this
//! library is the machinery they share with the tests:
//!
//! - [`broker`] starts rumqttd's router, configured in code, behind
//!   [`frontdoor`], our own code that checks every client and hands the
//!   router only what it must know (and
//!   [`wire`], the packet framing it reads and writes);
//! - [`publisher::run`] publishes messages and waits until the broker has
//!   acknowledged every one of them;
//! - [`subscriber::run`] prints what arrives, and rides out broker restarts;
//! - [`packets`] prints the packets as they cross the wire (`--show-packets`);
//! - [`client`] is one client over rumqttc's two, for MQTT 3.1.1 and
//!   MQTT 5 (`-V 5`), and [`v5`] holds what only MQTT 5 has: properties,
//!   subscription options, a session expiry;
//! - [`explain`](mod@explain) turns a connection error into its likely cause and fix;
//! - this file holds what both clients share: connection options.
//!
//! Both clients use [rumqttc](https://docs.rs/rumqttc), whose design has one
//! rule that every user meets: an [`rumqttc::AsyncClient`] only puts requests
//! in a queue; the [`rumqttc::EventLoop`] does all the network work, and only
//! while somebody calls its `poll()` in a loop.

pub mod broker;
pub mod client;
pub mod explain;
pub mod format;
pub mod frontdoor;
pub mod packets;
pub mod publisher;
pub mod subscriber;
pub mod v5;
pub mod wire;

pub use explain::{explain, explain_v5};
pub use v5::Version;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use networking_protocols::tls;
use rumqttc::{EventLoop, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport};

/// The port MQTT brokers listen on for plain MQTT.
pub const DEFAULT_PORT: u16 = 1883;

/// The port MQTT brokers listen on for MQTT over TLS (Mosquitto, cloud
/// brokers): the same packets, inside TLS records.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// The largest packet our clients send or accept: the embedded broker's
/// default limit. rumqttc's own default, 10 KiB, is smaller than many real
/// messages.
pub const MAX_PACKET_BYTES: usize = broker::DEFAULT_MAX_PAYLOAD_BYTES;

/// Most QoS 1 and 2 publishes in flight (sent, not yet acknowledged) at once.
/// Mosquitto allows 20 by default and silently drops QoS 2 publishes beyond
/// that, so a client that wants to lose nothing stays within 20.
pub const MAX_INFLIGHT: u16 = 20;

/// How a client connects: the same for the publisher and the subscriber.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Username and password, if the broker wants them.
    pub login: Option<(String, String)>,
    /// With `false`, the broker keeps this client's subscriptions and queues
    /// its QoS 1 and 2 messages while it is away (a persistent session).
    pub clean_session: bool,
    /// With a TLS config, we speak MQTT inside TLS (and our password, if any,
    /// travels encrypted instead of readable by anyone on the path).
    pub tls: Option<Arc<tls::ClientConfig>>,
    /// MQTT 3.1.1 (the default) or MQTT 5.
    pub version: Version,
    /// MQTT 5 only: how many seconds the broker keeps our session after we
    /// disconnect (`u32::MAX`: for ever). `None` sends no property, which
    /// means 0: the session ends with the connection (MQTT 5 §3.1.2.11.2).
    pub session_expiry: Option<u32>,
    /// MQTT 5 only: what `-D CONNECT ...` asks for.
    pub connect_properties: v5::ConnectProperties,
}

/// The flags both clients use to reach a broker.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Broker to connect to (a name or an IP address)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port [default: 1883, or 8883 with --tls]
    #[arg(long)]
    pub port: Option<u16>,
    /// MQTT version: 311 (or mqttv311) or 5 (or mqttv5), as mosquitto_pub spells them
    #[arg(short = 'V', long, value_name = "VERSION", default_value = "311", value_parser = Version::parse)]
    pub protocol_version: Version,
    /// MQTT 5: keep our session this many seconds after we disconnect
    /// (4294967295: for ever) [default: 0, or for ever with mqtt_subscriber --persistent]
    #[arg(short = 'x', long, value_name = "SECONDS")]
    pub session_expiry_secs: Option<u32>,
    /// Speak MQTT over TLS: check the broker's certificate, then encrypt
    /// everything (the password too)
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub tls_options: tls::client::ClientTlsArgs,
}

impl BrokerArgs {
    /// A client config for these flags: `--port` if given, else MQTT's own
    /// port, 1883, or 8883 with `--tls`; with `--tls`, the TLS options.
    /// Errors: a TLS option without `--tls`, `-x` without `-V 5`, or a
    /// certificate file that cannot be read.
    pub fn client_config(&self, client_id: &str) -> anyhow::Result<ClientConfig> {
        let default_port = if self.tls {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let port = self.port.unwrap_or(default_port);
        let mut config = ClientConfig::new(&self.host, port, client_id);
        config.version = self.protocol_version;
        config.session_expiry = self.session_expiry_secs;
        if config.version == Version::V311 && config.session_expiry.is_some() {
            bail!("-x (session expiry) is an MQTT 5 property: add -V 5");
        }
        config.tls = match (self.tls, self.tls_options.first_given()) {
            (true, _) => Some(self.tls_options.config()?),
            (false, Some(flag)) => bail!("{flag} is a TLS option: add --tls"),
            (false, None) => None,
        };
        Ok(config)
    }
}

impl ClientConfig {
    /// A config for `host:port` with a clean session and no login.
    pub fn new(host: &str, port: u16, client_id: &str) -> Self {
        ClientConfig {
            host: host.to_string(),
            port,
            client_id: client_id.to_string(),
            login: None,
            clean_session: true,
            tls: None,
            version: Version::V311,
            session_expiry: None,
            connect_properties: v5::ConnectProperties::default(),
        }
    }

    /// Takes the `-D` properties: those for CONNECT are kept here, and
    /// `-D CONNECT session-expiry-interval N` is `-x N`.
    ///
    /// Errors: any `-D` without `-V 5` (3.1.1 has no properties), or both
    /// `-x` and `-D CONNECT session-expiry-interval`.
    pub fn take_properties(&mut self, properties: &v5::Properties) -> anyhow::Result<()> {
        if self.version == Version::V311 && !properties.is_empty() {
            bail!("-D properties are MQTT 5: add -V 5");
        }
        if let Some(seconds) = properties.connect.session_expiry {
            if self.session_expiry.is_some() {
                bail!("-x and -D CONNECT session-expiry-interval say the same: give one");
            }
            self.session_expiry = Some(seconds);
        }
        self.connect_properties = properties.connect.clone();
        Ok(())
    }

    /// The broker's address as people write it, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// rumqttc's options for this config.
    ///
    /// Errors: a persistent session (`clean_session: false`) with an empty
    /// client id. The broker finds a session by the client id, so an empty id
    /// must come with a clean session [MQTT-3.1.3-7] (rumqttc would panic).
    pub fn mqtt_options(&self) -> anyhow::Result<MqttOptions> {
        if self.client_id.is_empty() && !self.clean_session {
            bail!(
                "a persistent session needs a client id: the broker finds the session \
                 by it; pass a non-empty -i"
            );
        }
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        // The broker drops us if it hears nothing for 1.5 x this, so rumqttc
        // sends a PINGREQ every 30 s (busy or idle: it does not track our
        // traffic). 0 would mean "never"; brokers then cannot tell a
        // silent client from a vanished one.
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(self.clean_session);
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        options.set_inflight(MAX_INFLIGHT);
        if let Some((username, password)) = &self.login {
            options.set_credentials(username, password);
        }
        if let Some(config) = &self.tls {
            // rumqttc does the TLS handshake with our rustls config (ring, and
            // the CAs the flags chose), checking the certificate against `host`.
            let tls = TlsConfiguration::Rustls(config.clone());
            options.set_transport(Transport::tls_with_config(tls));
        }
        Ok(options)
    }

    /// rumqttc's socket options: a bounded connect, and no Nagle delay.
    pub fn network_options(&self) -> NetworkOptions {
        let mut network = NetworkOptions::new();
        // Nagle's algorithm holds back a small packet while an earlier one is
        // unacknowledged. MQTT packets are small and each waits for an answer,
        // so Nagle would add delays of up to 40 ms per round trip.
        network.set_tcp_nodelay(true);
        // Give up on an unreachable broker after 5 s instead of hanging.
        network.set_connection_timeout(5);
        network
    }
}

/// After our DISCONNECT has gone out, waits (at most a second) for the
/// broker to close the connection, rather than closing it first.
///
/// The spec has the client close the connection after DISCONNECT, and the
/// server close it if the client has not. Closing first can hurt with
/// rumqttd: it then handles our goodbye twice, once for the DISCONNECT and
/// once for the closed socket, and if a new client has taken our
/// connection's slot in between, the second goodbye disconnects *that*
/// client. Letting the broker close first avoids this, and costs nothing.
pub async fn await_close(eventloop: &mut EventLoop) {
    let closed = async { while eventloop.poll().await.is_ok() {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
}

/// Reads a QoS level as MQTT numbers it: 0, 1 or 2.
pub fn qos(level: u8) -> anyhow::Result<QoS> {
    rumqttc::qos(level).map_err(|_| anyhow!("QoS must be 0, 1 or 2, not {level}"))
}

/// The QoS level as a number, for output.
pub fn qos_number(qos: QoS) -> u8 {
    qos as u8
}
