//! CONNACK, and the session a client gets with it (spec §3.2, §4.1).
//!
//! A persistent session (clean session 0) continues the one kept under
//! the client id, if any: the session present flag says so [MQTT-3.2.2-2],
//! its unacknowledged messages go again [MQTT-4.4.0-1], and what its mailbox
//! gathered while the client was away follows. A clean session ends any
//! session kept under its id [MQTT-3.1.2-6] and gets session present 0
//! [MQTT-3.2.2-1]. The router hears of neither: it keeps nothing per
//! client (see `router.rs`).

use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Door;
use super::aliases::TOPIC_ALIAS_MAXIMUM;
use super::connect::Connect;
use super::handshake::{ClientStream, write_flushed};
use super::relay::tls::TlsSession;
use super::relay::{Connection, Layer, Parts};
use super::session::{Resend, Session};
use crate::wire::properties::{Builder, id};
use crate::wire::{self, ConnackCode, kind};

/// A client whose CONNECT we accepted, on its way to CONNACK.
#[derive(Debug)]
pub(super) struct Admitted<'a> {
    pub(super) stream: ClientStream,
    /// The client id, or the one we assigned [MQTT-3.1.3-6].
    pub(super) name: &'a str,
    pub(super) connect: &'a Connect,
    /// Bytes the client sent after its CONNECT.
    pub(super) early: BytesMut,
    /// Cancelled when another connection takes the client id over, or the
    /// broker stops.
    pub(super) kick: &'a CancellationToken,
}

/// The keep-alive an MQTT 5 client is told to use instead of its own
/// (Server Keep Alive, spec §3.2.2.3.14), which it must keep to
/// [MQTT-3.2.2-21] and the broker holds it to: `--max-keep-alive`, for a
/// client that asked for more, or for none. `None` if it keeps its own: a
/// 3.1.1 client always does, since 3.1.1 has no way to tell it (Mosquitto
/// 2.0.11 lets it, too).
fn server_keep_alive(connect: &Connect, max: Option<u16>) -> Option<u16> {
    let max = max.filter(|_| connect.version == wire::V5)?;
    (connect.keep_alive == 0 || connect.keep_alive > max).then_some(max)
}

impl Door {
    /// An MQTT 5 CONNACK's properties (spec §3.2.2.3): what this broker
    /// allows that differs from the protocol's defaults, and the client id
    /// it assigned, if it did [MQTT-3.2.2-16].
    fn connack_properties(&self, name: &str, connect: &Connect) -> Vec<u8> {
        let max_packet = u32::try_from(self.config.limits.max_packet_bytes).unwrap_or(u32::MAX);
        let mut properties = Builder::default()
            .two(id::TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS_MAXIMUM)
            .four(id::MAXIMUM_PACKET_SIZE, max_packet);
        if let Some(seconds) = server_keep_alive(connect, self.config.limits.max_keep_alive) {
            properties = properties.two(id::SERVER_KEEP_ALIVE, seconds);
        }
        // Subscription identifiers, shared subscriptions, wildcards and
        // retained messages are all available: the defaults, left unsaid.
        if connect.client_id.is_empty() {
            properties = properties.string(id::ASSIGNED_CLIENT_IDENTIFIER, name);
        }
        properties.finish()
    }

    /// Answers CONNACK, serves the client, and ends its session, or keeps
    /// a persistent one for the client's return.
    pub(super) async fn session(&self, client: Admitted<'_>) -> io::Result<()> {
        let Admitted { name, connect, .. } = client;
        let kept = self.sessions.take(name);
        let kept = match kept {
            Some(old) if connect.clean_session => {
                self.end_session(old);
                None
            }
            Some(mut old) => {
                // Back before its will's delay ran out: the will is not
                // sent [MQTT-3.1.3-9].
                if old.will.take().is_some() {
                    info!(
                        client = name,
                        "the client came back: its delayed will is not sent"
                    );
                }
                Some(old)
            }
            None => None,
        };
        let outcome = self.connected(client, kept).await;
        if let Some((session, expiry)) = outcome?
            && let Some(replaced) = self.sessions.keep(name, session, expiry)
        {
            // Two connections of one client id overlapped (a takeover that
            // waited longer than it may): the older session ends, so that
            // its subscriptions do not outlive it.
            self.end_session(replaced);
        }
        Ok(())
    }

    /// Ends a session: its subscriptions leave the topic tree, its mailbox
    /// goes, and a will still waiting for its delay is published.
    pub(super) fn end_session(&self, mut session: Session) {
        if let Some(will) = session.will.take() {
            self.publish_will(will.packet);
        }
        let filters = session.subscriptions.keys().map(String::as_str);
        self.shared.table().close(session.key, filters);
    }

    /// From CONNACK to the end of the connection. Returns the session to
    /// keep, for a persistent one.
    async fn connected(
        &self,
        client: Admitted<'_>,
        kept: Option<Session>,
    ) -> io::Result<Option<(Session, u32)>> {
        let Admitted {
            stream: mut client,
            name,
            connect,
            mut early,
            kick,
        } = client;
        let session_present = kept.is_some();
        let connack = if connect.version == wire::V5 {
            wire::connack_v5(session_present, 0, &self.connack_properties(name, connect))
        } else {
            Bytes::copy_from_slice(&wire::connack(session_present, ConnackCode::Accepted))
        };
        if write_flushed(&mut client, &connack).await.is_err() {
            // The client left before its CONNACK: a kept session stays kept
            // (a clean session has none).
            return Ok(kept.map(|session| (session, connect.session_expiry)));
        }
        let keep_alive = server_keep_alive(connect, self.config.limits.max_keep_alive)
            .unwrap_or(connect.keep_alive);
        info!(
            client = name,
            keep_alive,
            clean_session = connect.clean_session,
            "client connected"
        );

        // From here on the connection reads and writes the socket itself,
        // with rustls's state beside it for a TLS client, and tungstenite's
        // for a WebSocket client.
        let (socket, layer) = match client {
            Either::Left(Either::Left(tcp)) => (tcp, Layer::Plain),
            Either::Left(Either::Right(tls)) => {
                let (tcp, conn) = tls.into_inner();
                (tcp, Layer::Tls(TlsSession::new(conn)))
            }
            Either::Right(ws) => {
                let (tcp, session, unread) = ws.into_parts();
                early.extend_from_slice(&unread);
                (tcp, Layer::WebSocket(session))
            }
        };
        let session = kept.unwrap_or_else(|| {
            let limits = &self.config.limits;
            let (key, mailbox) =
                self.shared
                    .table()
                    .open(name, limits.max_queued_bytes, limits.max_packet_bytes);
            Session::new(key, mailbox)
        });
        let mut connection = Connection::new(Parts {
            socket: &socket,
            layer,
            router: &self.router,
            shared: &self.shared,
            limits: &self.config.limits,
            name,
            username: connect.username.as_deref(),
            acl: self.config.acl.as_deref(),
            session_expiry: connect.session_expiry,
            version: connect.version,
            max_packet_size: connect.max_packet_size,
            receive_maximum: connect.receive_maximum,
            topic_alias_maximum: connect.topic_alias_maximum,
            keep_alive,
            session,
            pressure: self.congestion.pressure(),
        });
        // [MQTT-4.4.0-1]: a kept session's unacknowledged messages go again.
        for resend in connection.session.resend() {
            match resend {
                Resend::Publish(packet) => connection.queue(packet),
                Resend::Pubrel(id) => {
                    connection.queue(Bytes::copy_from_slice(&wire::ack(kind::PUBREL, id)))
                }
            }
        }
        let end = connection.run(early, kick, &self.stop).await;
        Ok(Box::pin(self.finish(connection, connect, end)).await)
    }
}
