//! The properties a client may send in each packet (spec §3.x.2.3), so that
//! one it may not send is caught.

use super::id::*;

pub const CONNECT: &[u8] = &[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    REQUEST_PROBLEM_INFORMATION,
    USER_PROPERTY,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
];
/// A will's properties: those of the PUBLISH it becomes, and its delay.
pub const WILL: &[u8] = &[
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
];
/// PUBLISH, as Table 2-4 lists its properties. A Subscription Identifier
/// only goes server to client: from a client it is a Protocol Error
/// [MQTT-3.3.4-6] (`frontdoor/publish.rs`), not a property out of place.
pub const PUBLISH: &[u8] = &[
    SUBSCRIPTION_IDENTIFIER,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    CONTENT_TYPE,
];
/// PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBSCRIBE.
pub const ACK: &[u8] = &[REASON_STRING, USER_PROPERTY];
pub const UNSUBSCRIBE: &[u8] = &[USER_PROPERTY];
pub const SUBSCRIBE: &[u8] = &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY];
pub const DISCONNECT: &[u8] = &[
    SESSION_EXPIRY_INTERVAL,
    REASON_STRING,
    USER_PROPERTY,
    SERVER_REFERENCE,
];
