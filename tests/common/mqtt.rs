//! Raw MQTT packets, for tests that must see exactly which bytes a broker
//! answers (rumqttc hides a broker that closes without a CONNACK).

/// A raw MQTT 3.1.1 CONNECT with a clean session, keep-alive 60 s, and a
/// username and password.
pub fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    connect_packet_with_keep_alive(client_id, username, password, 60)
}

/// The same CONNECT with a chosen keep-alive, in seconds (0: none).
pub fn connect_packet_with_keep_alive(
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive: u16,
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for field in [client_id, username, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128, "one-byte remaining length");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}
