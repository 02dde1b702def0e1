//! Connection errors, explained: what failed, and the likely fix.
//!
//! rumqttc has one error type per protocol version
//! ([`rumqttc::ConnectionError`] for MQTT 3.1.1,
//! [`rumqttc::v5::ConnectionError`] for MQTT 5), with different variants for
//! the same troubles. We first reduce either one to the `Facts` that
//! matter to a user (an I/O error and its kind, a refusal, a packet too
//! large...), so the explanations themselves are written once.

use std::fmt::Display;
use std::io::{self, ErrorKind};

use anyhow::anyhow;
use networking_protocols::tls;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code5;
use rumqttc::{ConnectReturnCode, ConnectionError, StateError, TlsError, mqttbytes, v5};

use crate::MAX_PACKET_BYTES;

/// What a user needs to know about one connection error, from either version.
struct Facts<'a> {
    /// The socket error underneath, if any.
    io: Option<&'a io::Error>,
    /// Its kind; also set without an `io::Error` for an aborted connection.
    io_kind: Option<ErrorKind>,
    /// The error happened inside the TLS handshake.
    in_tls_handshake: bool,
    /// The broker's CONNACK refused us: its code, and the likely fix.
    refused: Option<(String, &'static str)>,
    /// The broker sent a packet larger than our limit, of this many bytes.
    too_large: Option<usize>,
    /// No CONNACK within the connection timeout.
    timeout: bool,
    /// What answered was not MQTT (a packet we cannot read, or no CONNACK).
    not_mqtt: bool,
    /// MQTT 5: the broker sent DISCONNECT with this reason (and its text).
    server_disconnect: Option<String>,
    /// rumqttc's own words, for everything else.
    display: &'a dyn Display,
}

impl<'a> Facts<'a> {
    fn new(display: &'a dyn Display) -> Self {
        Facts {
            io: None,
            io_kind: None,
            in_tls_handshake: false,
            refused: None,
            too_large: None,
            timeout: false,
            not_mqtt: false,
            server_disconnect: None,
            display,
        }
    }
}

/// An MQTT 3.1.1 connection error, explained. `connected` says whether we
/// ever got a CONNACK: failing before it means the broker was unreachable or
/// refused us; after it, the connection broke.
pub fn explain(error: &ConnectionError, addr: &str, connected: bool) -> anyhow::Error {
    let mut facts = Facts::new(error);
    match error {
        ConnectionError::Tls(TlsError::Io(io)) => facts.io = Some(io),
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => {
            facts.io = Some(io);
        }
        // rumqttc's reads and writes report socket errors as codec errors.
        // A half packet cut off by the server's close is also "not MQTT".
        ConnectionError::MqttState(StateError::Deserialization(mqttbytes::Error::Io(io))) => {
            facts.io = Some(io);
            facts.not_mqtt = true;
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            facts.io_kind = Some(ErrorKind::ConnectionAborted);
        }
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                    "bad username or password; check -u and -P"
                }
                ConnectReturnCode::BadClientId => "client id rejected; try another -i",
                ConnectReturnCode::ServiceUnavailable => "broker unavailable (too many clients?)",
                _ => "refused",
            };
            facts.refused = Some((format!("{code:?}"), why));
        }
        ConnectionError::MqttState(StateError::Deserialization(
            mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => facts.too_large = Some(*size),
        ConnectionError::NetworkTimeout => facts.timeout = true,
        ConnectionError::NotConnAck(_)
        | ConnectionError::MqttState(StateError::Deserialization(_)) => {
            facts.not_mqtt = true;
        }
        _ => {}
    }
    facts.in_tls_handshake = matches!(error, ConnectionError::Tls(_));
    explain_facts(facts, addr, connected)
}

/// An MQTT 5 connection error, explained, as [`explain`] does for 3.1.1.
pub fn explain_v5(error: &v5::ConnectionError, addr: &str, connected: bool) -> anyhow::Error {
    use v5::{ConnectionError as Error, StateError as State, mqttbytes::Error as Codec};
    let mut facts = Facts::new(error);
    match error {
        Error::Tls(v5::TlsError::Io(io)) | Error::Io(io) | Error::MqttState(State::Io(io)) => {
            facts.io = Some(io);
        }
        Error::MqttState(State::Deserialization(Codec::Io(io))) => {
            facts.io = Some(io);
            facts.not_mqtt = true;
        }
        Error::MqttState(State::ConnectionAborted) => {
            facts.io_kind = Some(ErrorKind::ConnectionAborted);
        }
        // An MQTT 5 CONNACK refuses with a reason code of 0x80 or more
        // (MQTT 5 §3.2.2.2): 0x86 bad login, 0x84 unsupported version...
        Error::ConnectionRefused(code) | Error::MqttState(State::ConnFail { reason: code }) => {
            let why = match code {
                Code5::BadUserNamePassword | Code5::NotAuthorized => {
                    "bad username or password; check -u and -P"
                }
                Code5::ClientIdentifierNotValid | Code5::BadClientId => {
                    "client id rejected; try another -i"
                }
                Code5::ServerUnavailable | Code5::ServerBusy | Code5::QuotaExceeded => {
                    "broker unavailable (too many clients?)"
                }
                Code5::UnsupportedProtocolVersion | Code5::RefusedProtocolVersion => {
                    "the broker does not speak MQTT 5; try -V 311"
                }
                _ => "refused",
            };
            facts.refused = Some((format!("{code:?}"), why));
        }
        Error::MqttState(State::IncomingPacketTooLarge { pkt_size, .. })
        | Error::MqttState(State::Deserialization(Codec::PayloadSizeLimitExceeded {
            pkt_size,
            ..
        })) => facts.too_large = Some(*pkt_size),
        Error::Timeout(_) => facts.timeout = true,
        Error::MqttState(State::ServerDisconnect {
            reason_code,
            reason_string,
        }) => {
            let text = reason_string.as_deref().map(|text| format!(": {text}"));
            facts.server_disconnect = Some(format!("{reason_code:?}{}", text.unwrap_or_default()));
        }
        Error::NotConnAck(_) | Error::MqttState(State::Deserialization(_)) => {
            facts.not_mqtt = true;
        }
        _ => {}
    }
    facts.in_tls_handshake = matches!(error, Error::Tls(_));
    explain_facts(facts, addr, connected)
}

/// The explanation itself, the same for both versions.
fn explain_facts(facts: Facts, addr: &str, connected: bool) -> anyhow::Error {
    let io_kind = facts.io_kind.or(facts.io.map(io::Error::kind));
    // A TLS failure: a rustls error inside the I/O error, or a server that
    // does not speak TLS, which shows up as an end of stream in the handshake.
    let tls_cause = facts
        .io
        .filter(|io| tls::rustls_error(io).is_some() || facts.in_tls_handshake);
    if let Some(cause) = tls_cause {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let why = tls::client::explain(cause, host);
        return match connected {
            false => anyhow!("cannot connect to {addr}: {why}"),
            true => anyhow!("connection to {addr} failed: {why}"),
        };
    }
    if let Some((code, why)) = facts.refused {
        return anyhow!("broker at {addr} refused the connection (CONNACK {code}): {why}");
    }
    if let Some(size) = facts.too_large {
        return anyhow!(
            "{addr} sent a packet of {size} bytes, more than our limit of {MAX_PACKET_BYTES}"
        );
    }
    if facts.timeout {
        return anyhow!("cannot connect to {addr}: no answer within 5 s; check --host and --port");
    }
    if let Some(reason) = facts.server_disconnect {
        // An MQTT 5 broker may say why it ends the connection, with one of
        // the DISCONNECT reason codes [MQTT-3.14.2-1].
        return anyhow!("broker at {addr} disconnected us (DISCONNECT {reason})");
    }
    let closed = matches!(
        io_kind,
        Some(ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
    );
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => {
            anyhow!("cannot connect to {addr}: connection refused; is a broker running there?")
        }
        // A broker that wants TLS closes a plaintext CONNECT without a word
        // (MQTT has no code for "use TLS"), and some brokers answer a bad
        // login, or one client too many, the same way (rumqttd alone does;
        // our mqtt_broker answers CONNACK 5 or 3), so we name all three.
        _ if closed && !connected => anyhow!(
            "broker at {addr} closed the connection before accepting it: does it want \
             TLS (--tls)? some brokers also close for a bad login (-u, -P) or too many clients"
        ),
        _ if closed => anyhow!(
            "broker at {addr} closed the connection; a broker does that when it stops, \
             when another client connects with our client id (-i), or when our packet \
             exceeds its size limit"
        ),
        // Something answered our CONNECT, but not with a CONNACK: an HTTP or
        // WebSocket server, say, whose reply rumqttc reads as a random packet
        // (or as half of one, cut off when the server closes).
        _ if facts.not_mqtt && !connected => anyhow!(
            "cannot connect to {addr}: the answer is not MQTT; is that port an MQTT \
             broker? check --host and --port"
        ),
        _ if !connected => anyhow!("cannot connect to {addr}: {}", facts.display),
        _ => anyhow!("connection to {addr} failed: {}", facts.display),
    }
}
