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
//! - this file holds what both clients share: connection options and the
//!   explanation of connection errors.
//!
//! Both clients use [rumqttc](https://docs.rs/rumqttc), whose design has one
//! rule that every user meets: an [`rumqttc::AsyncClient`] only puts requests
//! in a queue; the [`rumqttc::EventLoop`] does all the network work, and only
//! while somebody calls its `poll()` in a loop.

pub mod broker;
pub mod frontdoor;
pub mod packets;
pub mod publisher;
pub mod subscriber;
pub mod wire;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use networking_protocols::tls;
use rumqttc::{
    ConnectReturnCode, ConnectionError, EventLoop, MqttOptions, NetworkOptions, QoS, StateError,
    TlsConfiguration, TlsError, Transport, mqttbytes,
};

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
    /// Errors: a TLS option without `--tls`, or a certificate file that
    /// cannot be read.
    pub fn client_config(&self, client_id: &str) -> anyhow::Result<ClientConfig> {
        let default_port = if self.tls {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let port = self.port.unwrap_or(default_port);
        let mut config = ClientConfig::new(&self.host, port, client_id);
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
        }
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

/// The I/O error of a failed TLS handshake, or of a TLS alert later on.
fn tls_cause(error: &ConnectionError) -> Option<&io::Error> {
    let io = match error {
        ConnectionError::Tls(TlsError::Io(io)) => io,
        ConnectionError::Tls(_) => return None,
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => io,
        ConnectionError::MqttState(StateError::Deserialization(mqttbytes::Error::Io(io))) => io,
        _ => return None,
    };
    // A server that does not speak TLS shows up as an end of stream in the
    // handshake, with no rustls error inside.
    let in_handshake = matches!(error, ConnectionError::Tls(_));
    (tls::rustls_error(io).is_some() || in_handshake).then_some(io)
}

/// Reads a QoS level as MQTT numbers it: 0, 1 or 2.
pub fn qos(level: u8) -> anyhow::Result<QoS> {
    rumqttc::qos(level).map_err(|_| anyhow!("QoS must be 0, 1 or 2, not {level}"))
}

/// The QoS level as a number, for output.
pub fn qos_number(qos: QoS) -> u8 {
    qos as u8
}

/// A connection error, explained: what failed, and the likely fix.
///
/// `connected` says whether we ever got a CONNACK: failing before it means
/// the broker was unreachable or refused us; after it, the connection broke.
pub fn explain(error: &ConnectionError, addr: &str, connected: bool) -> anyhow::Error {
    use std::io::ErrorKind;
    let io_kind = match error {
        ConnectionError::Io(io) => Some(io.kind()),
        ConnectionError::MqttState(StateError::Io(io)) => Some(io.kind()),
        // rumqttc's reads and writes report socket errors as codec errors.
        ConnectionError::MqttState(StateError::Deserialization(mqttbytes::Error::Io(io))) => {
            Some(io.kind())
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            Some(ErrorKind::ConnectionAborted)
        }
        _ => None,
    };
    if let Some(cause) = tls_cause(error) {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        return match connected {
            false => anyhow!(
                "cannot connect to {addr}: {}",
                tls::client::explain(cause, host)
            ),
            true => anyhow!(
                "connection to {addr} failed: {}",
                tls::client::explain(cause, host)
            ),
        };
    }
    match (error, io_kind) {
        (ConnectionError::ConnectionRefused(code), _) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                    "bad username or password; check -u and -P"
                }
                ConnectReturnCode::BadClientId => "client id rejected; try another -i",
                ConnectReturnCode::ServiceUnavailable => "broker unavailable (too many clients?)",
                _ => "refused",
            };
            anyhow!("broker at {addr} refused the connection (CONNACK {code:?}): {why}")
        }
        (
            ConnectionError::MqttState(StateError::Deserialization(
                mqttbytes::Error::PayloadSizeLimitExceeded(size),
            )),
            _,
        ) => anyhow!(
            "{addr} sent a packet of {size} bytes, more than our limit of {MAX_PACKET_BYTES}"
        ),
        (ConnectionError::NetworkTimeout, _) => {
            anyhow!("cannot connect to {addr}: no answer within 5 s; check --host and --port")
        }
        (_, Some(ErrorKind::ConnectionRefused)) => {
            anyhow!("cannot connect to {addr}: connection refused; is a broker running there?")
        }
        // A broker that wants TLS closes a plaintext CONNECT without a word
        // (MQTT has no code for "use TLS"), and some brokers answer a bad
        // login, or one client too many, the same way (rumqttd alone does;
        // our mqtt_broker answers CONNACK 5 or 3), so we name all three.
        (
            _,
            Some(ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        ) if !connected => {
            anyhow!(
                "broker at {addr} closed the connection before accepting it: does it want \
                 TLS (--tls)? some brokers also close for a bad login (-u, -P) or too many clients"
            )
        }
        (
            _,
            Some(ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        ) => anyhow!(
            "broker at {addr} closed the connection; a broker does that when it stops, \
             when another client connects with our client id (-i), or when our packet \
             exceeds its size limit"
        ),
        // Something answered our CONNECT, but not with a CONNACK: an HTTP or
        // WebSocket server, say, whose reply rumqttc reads as a random packet
        // (or as half of one, cut off when the server closes).
        (
            ConnectionError::NotConnAck(_)
            | ConnectionError::MqttState(StateError::Deserialization(_)),
            _,
        ) if !connected => anyhow!(
            "cannot connect to {addr}: the answer is not MQTT; is that port an MQTT \
             broker? check --host and --port"
        ),
        _ if !connected => anyhow!("cannot connect to {addr}: {error}"),
        _ => anyhow!("connection to {addr} failed: {error}"),
    }
}
