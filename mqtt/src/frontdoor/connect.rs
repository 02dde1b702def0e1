//! The CONNECT packet: read it, check every rule of spec §3.1, and decide
//! between accepting, refusing with a CONNACK return code, and closing.
//!
//! The spec gives two kinds of "no". Where the client asked for something we
//! will not give (a protocol level, a client id, a login), the server answers
//! CONNACK with a non-zero return code and then closes [MQTT-3.2.2-5]. Where
//! the CONNECT itself is malformed, the server closes without a word
//! [MQTT-3.1.4-1]: a client that breaks the protocol gets no explanation.

use bytes::Bytes;

use super::logins::Logins;
use crate::wire::properties::{allowed, id};
use crate::wire::{self, ConnackCode, Frame, Reader, Violation, kind};

/// A last will: what the broker publishes for a client whose connection ends
/// without a DISCONNECT (spec §3.1.2.5).
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5: the will's PUBLISH properties as the client sent them
    /// (spec §3.1.3.2), without the Will Delay Interval; empty for 3.1.1.
    pub properties: Vec<u8>,
    /// MQTT 5: seconds the broker waits before it publishes the will
    /// (Will Delay Interval, §3.1.3.2.2); 0 for 3.1.1.
    pub delay: u32,
}

/// A CONNECT that passed every check.
#[derive(Debug, Clone)]
pub struct Connect {
    /// As the client sent it; may be empty (then the broker assigns one).
    pub client_id: String,
    /// 3.1.1's Clean Session flag, or MQTT 5's Clean Start: a session kept
    /// under the client id ends now [MQTT-3.1.2-4].
    pub clean_session: bool,
    /// The protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub version: u8,
    /// Seconds the session outlives the connection (MQTT 5 Session Expiry
    /// Interval, spec §3.1.2.11.2; 0xFFFF_FFFF never ends). For 3.1.1, 0
    /// with a clean session and 0xFFFF_FFFF without.
    pub session_expiry: u32,
    /// MQTT 5: the largest packet the client takes, in bytes (Maximum
    /// Packet Size, §3.1.2.11.4); `None` is no limit but the protocol's.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: how many QoS 1 and 2 PUBLISHes the client takes before it
    /// has acknowledged them (Receive Maximum, §3.1.2.11.3); 65,535 if it
    /// does not say, and for 3.1.1.
    pub receive_maximum: u16,
    /// MQTT 5: how many topic aliases the client takes from the broker
    /// (Topic Alias Maximum, §3.1.2.11.5); 0, none, if it does not say, and
    /// for 3.1.1.
    pub topic_alias_maximum: u16,
    /// Seconds; 0 means the client asked for no keep-alive (spec §3.1.2.10).
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

/// Why a CONNECT was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answer CONNACK with this code (for MQTT 5, its version 5 number,
    /// [`ConnackCode::v5`]), then close.
    Connack(ConnackCode, String),
    /// An MQTT 5 refusal that 3.1.1 has no code for: CONNACK with this
    /// reason code, then close.
    ConnackV5(u8, String),
    /// Close without a CONNACK: the packet broke the protocol.
    Close(Violation),
}

impl From<Violation> for Refusal {
    fn from(violation: Violation) -> Self {
        Refusal::Close(violation)
    }
}

/// CONNACK 0x8C, Bad authentication method (spec §3.2.2.2).
const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// The protocol level a CONNECT asks for, if it has one: how to answer a
/// refusal (3.1.1 and 5 lay CONNACK out differently).
pub fn level(frame: &Frame) -> Option<u8> {
    let body = frame.body();
    let name_length = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_length).copied()
}

/// Reads a CONNECT packet's fields and checks them against spec §3.1.
pub fn parse(frame: &Frame) -> Result<Connect, Refusal> {
    if frame.kind != kind::CONNECT {
        return Err(Violation::protocol(format!(
            "the first packet is type {}, not CONNECT [MQTT-3.1.0-1]",
            frame.kind
        ))
        .into());
    }
    wire::check_flags(frame)?;
    let mut body = Reader::new(frame.body(), "CONNECT");

    // §3.1.2.1-2: "MQTT" and level 4 is MQTT 3.1.1, level 5 is MQTT 5. We
    // also take MQTT 3.1 ("MQIsdp", level 3), whose CONNECT has the same
    // layout as 3.1.1's, as Mosquitto does. A name we do not know is not
    // MQTT at all: close [MQTT-3.1.2-1].
    let name = body.bytes()?;
    let level = body.u8()?;
    match (name, level) {
        (b"MQTT", 4 | wire::V5) | (b"MQIsdp", 3) => {}
        (b"MQTT" | b"MQIsdp", _) => {
            return Err(Refusal::Connack(
                ConnackCode::UnacceptableProtocolVersion,
                format!("protocol level {level}; this broker speaks MQTT 3.1.1 (level 4) and 5"),
            ));
        }
        _ => {
            return Err(Violation::protocol(format!(
                "protocol name {:?} is not MQTT [MQTT-3.1.2-1]",
                String::from_utf8_lossy(name)
            ))
            .into());
        }
    }

    let flags = body.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(Violation::protocol("CONNECT's reserved flag is set [MQTT-3.1.2-3]").into());
    }
    let clean_session = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(Violation::protocol(
            "will QoS or will retain set without a will [MQTT-3.1.2-13, MQTT-3.1.2-15]",
        )
        .into());
    }
    if will_qos == 3 {
        return Err(Violation::protocol("will QoS 3 [MQTT-3.1.2-14]").into());
    }
    // MQTT 5 allows a password alone (spec §3.1.2.9), for schemes that
    // need no name; with `--user`, it matches no user, and gets 0x86.
    if password_flag && !username_flag && level != wire::V5 {
        return Err(Violation::protocol("a password without a user name [MQTT-3.1.2-22]").into());
    }
    let keep_alive = body.u16()?;
    let v5 = level == wire::V5;

    // MQTT 5: the CONNECT's properties (spec §3.1.2.11).
    let mut session_expiry = if clean_session { 0 } else { u32::MAX };
    let mut max_packet_size = None;
    let mut receive_maximum = u16::MAX;
    let mut topic_alias_maximum = 0;
    if v5 {
        let properties = body.properties(allowed::CONNECT)?;
        session_expiry = properties.u32(id::SESSION_EXPIRY_INTERVAL).unwrap_or(0);
        match properties.u16(id::RECEIVE_MAXIMUM) {
            Some(0) => {
                return Err(Violation::protocol("Receive Maximum 0 (spec §3.1.2.11.3)").into());
            }
            Some(most) => receive_maximum = most,
            None => {}
        }
        match properties.u32(id::MAXIMUM_PACKET_SIZE) {
            Some(0) => {
                return Err(Violation::protocol("Maximum Packet Size 0 (spec §3.1.2.11.4)").into());
            }
            size => max_packet_size = size,
        }
        topic_alias_maximum = properties.u16(id::TOPIC_ALIAS_MAXIMUM).unwrap_or(0);
        for flag in [
            id::REQUEST_PROBLEM_INFORMATION,
            id::REQUEST_RESPONSE_INFORMATION,
        ] {
            if properties.u8(flag).is_some_and(|value| value > 1) {
                return Err(Violation::protocol(format!(
                    "property {flag:#04x} is neither 0 nor 1"
                ))
                .into());
            }
        }
        if properties.get(id::AUTHENTICATION_DATA).is_some()
            && properties.get(id::AUTHENTICATION_METHOD).is_none()
        {
            return Err(Violation::protocol(
                "Authentication Data without an Authentication Method (spec §3.1.2.11.10)",
            )
            .into());
        }
        // Enhanced authentication (§4.12) needs a method both sides know;
        // this broker knows none, and says so as the spec names it.
        if properties.get(id::AUTHENTICATION_METHOD).is_some() {
            return Err(Refusal::ConnackV5(
                BAD_AUTHENTICATION_METHOD,
                "an authentication method; this broker has none".into(),
            ));
        }
    }

    // The payload's fields come in this order, each only if its flag is set
    // [MQTT-3.1.3-1]; strings must be UTF-8 without U+0000 [MQTT-1.5.3].
    let client_id = body.string("the client id")?.to_string();
    let will = if will_flag {
        let (properties, delay) = if v5 {
            let properties = body.properties(allowed::WILL)?;
            let delay = properties.u32(id::WILL_DELAY_INTERVAL).unwrap_or(0);
            (properties.raw_except(&[id::WILL_DELAY_INTERVAL]), delay)
        } else {
            (Vec::new(), 0)
        };
        let topic = body.string("the will topic")?.to_string();
        wire::check_topic_name(&topic)?;
        let payload = Bytes::copy_from_slice(body.bytes()?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
            delay,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(body.string("the user name")?.to_string())
    } else {
        None
    };
    let password = if password_flag {
        Some(Bytes::copy_from_slice(body.bytes()?))
    } else {
        None
    };
    if !body.is_empty() {
        return Err(Violation::protocol("CONNECT has bytes after its last field").into());
    }

    // [MQTT-3.1.3-8]: under 3.1.1, an empty client id is only for a clean
    // session, which the broker then names itself [MQTT-3.1.3-6]; a
    // persistent session needs a name to be found again. MQTT 5 lets any
    // client leave it to the broker, which says the name it assigned in
    // CONNACK [MQTT-3.1.3-7].
    if client_id.is_empty() && !clean_session && !v5 {
        return Err(Refusal::Connack(
            ConnackCode::IdentifierRejected,
            "an empty client id with a persistent session (clean session 0)".into(),
        ));
    }

    Ok(Connect {
        client_id,
        clean_session,
        version: level,
        session_expiry,
        max_packet_size,
        receive_maximum,
        topic_alias_maximum,
        keep_alive,
        will,
        username,
        password,
    })
}

/// Checks a login against the broker's users (name, password); with no
/// users, everybody gets in, with or without a login.
///
/// Mosquitto answers a missing or wrong login with return code 5 (not
/// authorized) under MQTT 3.1.1, and so do we; code 4 is for a user name
/// or password that is malformed, which UTF-8 checks already close on.
pub fn check_login(connect: &Connect, logins: &Logins) -> Result<(), Refusal> {
    if !logins.required() {
        return Ok(());
    }
    let given = connect.username.as_deref().zip(connect.password.as_deref());
    let known = given.is_some_and(|(name, password)| logins.check(name, password));
    if known {
        return Ok(());
    }
    let who = connect.username.as_deref().unwrap_or("(no user name)");
    Err(Refusal::Connack(
        ConnackCode::NotAuthorized,
        format!("bad user name or password for {who:?}"),
    ))
}
