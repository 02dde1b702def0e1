//! The client's packets: each one checked against the spec, then passed on
//! to rumqttd, answered by us, or the reason to close.

use bytes::{Bytes, BytesMut};
use tracing::info;

use super::buffers::release_if_empty;
use super::{End, Relay, State};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// A SUBSCRIBE we passed on changed (without its `$` filters, or at QoS 0
/// for a clean session): how to answer the client when rumqttd's SUBACK
/// comes back.
#[derive(Debug)]
pub(super) struct PendingSuback {
    pub(super) packet_id: u16,
    /// One entry per filter the client sent.
    pub(super) answers: Vec<Answer>,
}

/// The SUBACK return code for one filter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    /// Ours: rumqttd never saw this filter.
    Ours(u8),
    /// rumqttd's code; if it granted the filter, report this QoS instead
    /// (the one the client asked for, which we deliver at).
    Theirs(Option<u8>),
}

/// SUBACK's failure return code (spec §3.9.3).
pub(super) const SUBACK_FAILURE: u8 = 0x80;

/// The packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP, whose body must be
/// exactly that id (spec §3.4-3.7).
pub(super) fn only_packet_id(frame: &Frame) -> Result<u16, End> {
    match frame.body() {
        &[high, low] => Ok(u16::from_be_bytes([high, low])),
        _ => Err(End::Violation(Violation(format!(
            "packet type {} with a body of {} bytes, not 2",
            frame.kind,
            frame.body().len()
        )))),
    }
}

pub(super) fn nonzero_packet_id(reader: &mut Reader<'_>) -> Result<u16, End> {
    match reader.u16().map_err(End::Violation)? {
        0 => Err(End::Violation(Violation(
            "packet id 0 [MQTT-2.3.1-1]".into(),
        ))),
        id => Ok(id),
    }
}

pub(super) fn empty_body(frame: &Frame) -> Result<(), End> {
    if frame.body().is_empty() {
        Ok(())
    } else {
        Err(End::Violation(Violation(format!(
            "packet type {} must have no body",
            frame.kind
        ))))
    }
}

impl Relay<'_> {
    /// Handles each whole packet the client has sent so far.
    pub(super) fn client_packets(&self, state: &mut State) -> Result<(), End> {
        loop {
            let frame = match wire::next_frame(&mut state.from_client, self.limits.max_packet_bytes)
            {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(violation) => return Err(End::Violation(violation)),
            };
            self.client_packet(state, frame)?;
        }
        release_if_empty(&mut state.from_client);
        Ok(())
    }

    /// One packet from the client: check it, then pass it on, answer it, or
    /// end the connection.
    fn client_packet(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        wire::check_flags(&frame).map_err(End::Violation)?;
        let body = frame.body();
        match frame.kind {
            kind::PUBLISH => {
                let mut reader = Reader::new(body, "PUBLISH");
                let topic = reader.string("the topic name").map_err(End::Violation)?;
                wire::check_topic_name(topic).map_err(End::Violation)?;
                if frame.qos() > 0 && reader.u16().map_err(End::Violation)? == 0 {
                    return Err(End::Violation(Violation(
                        "PUBLISH with packet id 0 [MQTT-2.3.1-1]".into(),
                    )));
                }
                let qos = frame.qos();
                let bytes = frame.bytes.len();
                state.to_upstream.push(frame.bytes.freeze());
                if qos == 0 {
                    self.count_unacknowledged(state, bytes);
                }
            }
            kind::PUBACK | kind::PUBREC | kind::PUBCOMP | kind::PUBREL => {
                let id = only_packet_id(&frame)?;
                match (self.own_acks, frame.kind) {
                    // The client's side of our own deliveries (see the
                    // module comment): rumqttd was acknowledged already.
                    (true, kind::PUBACK | kind::PUBCOMP) => state.ids.release(id),
                    (true, kind::PUBREC) => state
                        .to_client
                        .push(Bytes::copy_from_slice(&wire::ack(kind::PUBREL, id))),
                    _ => state.to_upstream.push(frame.bytes.freeze()),
                }
            }
            kind::SUBSCRIBE => self.subscribe(state, frame)?,
            kind::UNSUBSCRIBE => self.unsubscribe(state, frame)?,
            kind::PINGREQ => {
                empty_body(&frame)?;
                if state.upstream.is_none() && state.to_upstream.is_empty() {
                    // Nothing is on its way to rumqttd: we answer.
                    state.to_client.push(Bytes::from_static(&wire::PINGRESP));
                } else {
                    // Through rumqttd, so the PINGRESP comes after the
                    // answers to what the client sent before it.
                    state.to_upstream.push(frame.bytes.freeze());
                }
            }
            kind::DISCONNECT => {
                empty_body(&frame)?;
                return Err(End::Disconnect);
            }
            kind::CONNECT => {
                return Err(End::Violation(Violation(
                    "a second CONNECT [MQTT-3.1.0-2]".into(),
                )));
            }
            other => {
                return Err(End::Violation(Violation(format!(
                    "packet type {other} is not one a client sends"
                ))));
            }
        }
        Ok(())
    }

    /// SUBSCRIBE (spec §3.8): every filter checked; `$` filters other than
    /// `$share/...` answered with a failure code by us; for a clean session,
    /// the rest subscribed at QoS 0 (see `super::subscriptions`).
    fn subscribe(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "SUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut answers = Vec::new();
        let mut passed = BytesMut::new();
        passed.extend_from_slice(&packet_id.to_be_bytes());
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            let requested = reader.u8().map_err(End::Violation)?;
            if requested > 2 {
                return Err(End::Violation(Violation(format!(
                    "SUBSCRIBE asks for QoS byte {requested:#04x} [MQTT-3.8.3-4]"
                ))));
            }
            if filter.starts_with('$') && !filter.starts_with("$share/") {
                info!(
                    client = self.name,
                    filter, "no such topics here: SUBACK failure"
                );
                answers.push(Answer::Ours(SUBACK_FAILURE));
                continue;
            }
            wire::put_string(&mut passed, filter.as_bytes());
            if self.own_acks {
                state.subs.set(filter, requested);
                passed.extend_from_slice(&[0]);
                answers.push(Answer::Theirs(Some(requested)));
            } else {
                passed.extend_from_slice(&[requested]);
                answers.push(Answer::Theirs(None));
            }
        }
        if answers.is_empty() {
            return Err(End::Violation(Violation(
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]".into(),
            )));
        }
        let unchanged = answers.iter().all(|a| matches!(a, Answer::Theirs(None)));
        let all_ours = answers.iter().all(|a| matches!(a, Answer::Ours(_)));
        if unchanged {
            state.to_upstream.push(frame.bytes.freeze());
        } else if all_ours {
            let mut body = packet_id.to_be_bytes().to_vec();
            body.extend(answers.iter().map(|_| SUBACK_FAILURE));
            state.to_client.push(wire::packet(kind::SUBACK << 4, &body));
        } else {
            state
                .to_upstream
                .push(wire::packet(kind::SUBSCRIBE << 4 | 0b0010, &passed));
            state.subacks.push(PendingSuback { packet_id, answers });
        }
        Ok(())
    }

    /// UNSUBSCRIBE (spec §3.10): filters checked; `$` filters, which no
    /// subscription can hold here, are left out of what rumqttd sees.
    fn unsubscribe(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "UNSUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut count = 0;
        let mut passed = BytesMut::new();
        passed.extend_from_slice(&packet_id.to_be_bytes());
        let mut kept = 0;
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            count += 1;
            state.subs.remove(filter);
            if !filter.starts_with('$') || filter.starts_with("$share/") {
                wire::put_string(&mut passed, filter.as_bytes());
                kept += 1;
            }
        }
        if count == 0 {
            return Err(End::Violation(Violation(
                "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]".into(),
            )));
        }
        if kept == count {
            state.to_upstream.push(frame.bytes.freeze());
        } else if kept == 0 {
            let ack = wire::ack(kind::UNSUBACK, packet_id);
            state.to_client.push(Bytes::copy_from_slice(&ack));
        } else {
            state
                .to_upstream
                .push(wire::packet(kind::UNSUBSCRIBE << 4 | 0b0010, &passed));
        }
        Ok(())
    }
}
