//! The routing table's tests: retained messages, sessions, routing.

use bytes::Bytes;

use super::*;
use crate::wire::{self, kind};

/// A PUBLISH packet comes back as the message it carries, at each QoS.
#[test]
fn parses_what_clients_publish() {
    for (qos, retain) in [(0, false), (1, true), (2, false)] {
        let mut body = vec![0, 3, b'a', b'/', b'b'];
        if qos > 0 {
            body.extend([0, 7]);
        }
        body.extend([b'x'; 200]);
        let packet = wire::packet(kind::PUBLISH << 4 | qos << 1 | u8::from(retain), &body);
        let message = parse(&packet).unwrap();
        assert_eq!(&message.topic[..], b"a/b");
        assert_eq!(message.payload.len(), 200);
        assert_eq!((message.qos, message.retain), (qos, retain));
    }
    assert!(parse(&Bytes::from_static(&[0x30, 5, 0, 9])).is_none());
}

/// A new subscription gets the retained messages; routing keeps and
/// clears them; a session that closes is gone from the tree.
#[test]
fn retained_messages_and_sessions() {
    let mut table = Table::default();
    let message = |payload: &'static [u8], retain| Message {
        properties: Bytes::new(),
        publisher: None,
        expires: None,
        topic: Bytes::from_static(b"a/b"),
        payload: Bytes::from_static(payload),
        qos: 1,
        retain,
    };
    table.dispatch(message(b"kept", true));
    let (key, mailbox) = table.open("c", 1 << 20, 1000);
    assert!(table.subscribe(key, "a/+", Subscription::with(2), Retain::Send));
    assert!(!table.subscribe(key, "a/+", Subscription::with(0), Retain::Send));
    table.dispatch(message(b"live", false));
    table.dispatch(message(b"", true));
    let mut out = Vec::new();
    mailbox.take(10, &mut out);
    let seen: Vec<_> = out
        .iter()
        .map(|d| (&d.message.payload[..], d.qos, d.retain))
        .collect();
    assert_eq!(
        seen,
        [
            (&b"kept"[..], 1, true),
            (b"kept", 0, true),
            (b"live", 0, false),
            (b"", 0, false)
        ]
    );
    assert_eq!(table.counts(), (1, 1, 0));
    table.close(key, ["a/+"]);
    assert_eq!(table.counts(), (0, 0, 0));
}
