//! The CONNECT packet: read it, check every rule of spec §3.1, and decide
//! between accepting, refusing with a CONNACK return code, and closing.
//!
//! The spec gives two kinds of "no". Where the client asked for something we
//! will not give (a protocol level, a client id, a login), the server answers
//! CONNACK with a non-zero return code and then closes [MQTT-3.2.2-5]. Where
//! the CONNECT itself is malformed, the server closes without a word
//! [MQTT-3.1.4-1]: a client that breaks the protocol gets no explanation.

use bytes::Bytes;

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
}

/// A CONNECT that passed every check.
#[derive(Debug, Clone)]
pub struct Connect {
    /// As the client sent it; may be empty (then the broker assigns one).
    pub client_id: String,
    pub clean_session: bool,
    /// Seconds; 0 means the client asked for no keep-alive (spec §3.1.2.10).
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

/// Why a CONNECT was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answer CONNACK with this code, then close.
    Connack(ConnackCode, String),
    /// Close without a CONNACK: the packet broke the protocol.
    Close(Violation),
}

impl From<Violation> for Refusal {
    fn from(violation: Violation) -> Self {
        Refusal::Close(violation)
    }
}

/// Reads a CONNECT packet's fields and checks them against spec §3.1.
pub fn parse(frame: &Frame) -> Result<Connect, Refusal> {
    if frame.kind != kind::CONNECT {
        return Err(Violation(format!(
            "the first packet is type {}, not CONNECT [MQTT-3.1.0-1]",
            frame.kind
        ))
        .into());
    }
    wire::check_flags(frame)?;
    let mut body = Reader::new(frame.body(), "CONNECT");

    // §3.1.2.1-2: "MQTT" and level 4 is MQTT 3.1.1. We also take MQTT 3.1
    // ("MQIsdp", level 3), whose CONNECT has the same layout, as Mosquitto
    // does. A name we do not know is not MQTT at all: close [MQTT-3.1.2-1].
    let name = body.bytes()?;
    let level = body.u8()?;
    match (name, level) {
        (b"MQTT", 4) | (b"MQIsdp", 3) => {}
        (b"MQTT" | b"MQIsdp", _) => {
            return Err(Refusal::Connack(
                ConnackCode::UnacceptableProtocolVersion,
                format!("protocol level {level}; this broker speaks MQTT 3.1.1 (level 4)"),
            ));
        }
        _ => {
            return Err(Violation(format!(
                "protocol name {:?} is not MQTT [MQTT-3.1.2-1]",
                String::from_utf8_lossy(name)
            ))
            .into());
        }
    }

    let flags = body.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(Violation("CONNECT's reserved flag is set [MQTT-3.1.2-3]".into()).into());
    }
    let clean_session = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(Violation(
            "will QoS or will retain set without a will [MQTT-3.1.2-13, MQTT-3.1.2-15]".into(),
        )
        .into());
    }
    if will_qos == 3 {
        return Err(Violation("will QoS 3 [MQTT-3.1.2-14]".into()).into());
    }
    if password_flag && !username_flag {
        return Err(Violation("a password without a user name [MQTT-3.1.2-22]".into()).into());
    }
    let keep_alive = body.u16()?;

    // The payload's fields come in this order, each only if its flag is set
    // [MQTT-3.1.3-1]; strings must be UTF-8 without U+0000 [MQTT-1.5.3].
    let client_id = body.string("the client id")?.to_string();
    let will = if will_flag {
        let topic = body.string("the will topic")?.to_string();
        wire::check_topic_name(&topic)?;
        let payload = Bytes::copy_from_slice(body.bytes()?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
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
        return Err(Violation("CONNECT has bytes after its last field".into()).into());
    }

    // [MQTT-3.1.3-8]: an empty client id is only for a clean session, which
    // the broker then names itself [MQTT-3.1.3-6]; a persistent session
    // needs a name to be found again.
    if client_id.is_empty() && !clean_session {
        return Err(Refusal::Connack(
            ConnackCode::IdentifierRejected,
            "an empty client id with a persistent session (clean session 0)".into(),
        ));
    }

    Ok(Connect {
        client_id,
        clean_session,
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
pub fn check_login(connect: &Connect, users: &[(String, String)]) -> Result<(), Refusal> {
    if users.is_empty() {
        return Ok(());
    }
    let given = connect.username.as_deref().zip(connect.password.as_deref());
    let known = given.is_some_and(|(name, password)| {
        users
            .iter()
            .any(|(user, secret)| user == name && secret.as_bytes() == password)
    });
    if known {
        return Ok(());
    }
    let who = connect.username.as_deref().unwrap_or("(no user name)");
    Err(Refusal::Connack(
        ConnackCode::NotAuthorized,
        format!("bad user name or password for {who:?}"),
    ))
}
