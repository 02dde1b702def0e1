//! CONNACK, and the session a client gets with it (spec §3.2, §4.1).
//!
//! A persistent session (clean session 0) is linked to the router at once,
//! since the router may hold messages for it; the session present flag
//! says whether we kept one [MQTT-3.2.2-2], and a kept session's
//! unacknowledged messages go again [MQTT-4.4.0-1]. A clean session ends
//! any session kept under its id [MQTT-3.1.2-6], gets session present 0
//! [MQTT-3.2.2-1], and is linked to the router only once it publishes or
//! subscribes, under an id from the front door's pool (`LinkIds`).

use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::connect::{self, Connect};
use super::handshake::{ClientStream, write_flushed};
use super::relay::tls::TlsSession;
use super::relay::{Connection, Parts};
use super::session::{Resend, Session};
use super::{Door, lock};
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

impl Door {
    /// Answers CONNACK, serves the client, and ends its session.
    ///
    /// A persistent session is linked to the router at once (it may hold
    /// messages for the client); the session present flag says whether we
    /// kept one [MQTT-3.2.2-2]. A clean session ends any session kept under
    /// its id [MQTT-3.1.2-6] and gets session present 0 [MQTT-3.2.2-1].
    pub(super) async fn session(&self, client: Admitted<'_>) -> io::Result<()> {
        let Admitted { name, connect, .. } = client;
        let kept_id = connect::router_id(name);
        let kept = self.sessions.take(&kept_id);
        let (link_id, pooled) = if connect.clean_session {
            if kept.is_some() {
                // The router's half of the old session ends too.
                let link = self
                    .router
                    .link(&kept_id, true)
                    .await
                    .map_err(io::Error::other)?;
                link.close(|_| {}).await;
            }
            let number = lock(&self.link_ids).take();
            (format!("%c{number}"), Some(number))
        } else {
            (kept_id.clone(), None)
        };
        let outcome = self.connected(client, &link_id, kept).await;
        if let Some(number) = pooled {
            lock(&self.link_ids).free.push(number);
        }
        if let Some(session) = outcome? {
            self.sessions.keep(&kept_id, session);
        }
        Ok(())
    }

    /// From CONNACK to the end of the connection, with the router id
    /// `link_id`. Returns the session to keep, for a persistent one.
    async fn connected(
        &self,
        client: Admitted<'_>,
        link_id: &str,
        kept: Option<Session>,
    ) -> io::Result<Option<Session>> {
        let Admitted {
            stream: mut client,
            name,
            connect,
            early,
            kick,
        } = client;
        let session_present = kept.is_some() && !connect.clean_session;
        let link = if connect.clean_session {
            None
        } else {
            match Box::pin(self.router.link(link_id, false)).await {
                Ok(link) => Some(link),
                Err(error) => {
                    // The router did not take the client: we are unavailable.
                    let refusal = wire::connack(false, ConnackCode::ServerUnavailable);
                    let _ = write_flushed(&mut client, &refusal).await;
                    return Err(io::Error::other(error));
                }
            }
        };
        let connack = wire::connack(session_present, ConnackCode::Accepted);
        if write_flushed(&mut client, &connack).await.is_err() {
            // The client left before its CONNACK.
            if let Some(link) = link {
                Box::pin(link.close(|_| {})).await;
            }
            return Ok(kept.filter(|_| !connect.clean_session));
        }
        info!(
            client = name,
            keep_alive = connect.keep_alive,
            clean_session = connect.clean_session,
            "client connected"
        );

        // From here on the connection reads and writes the socket itself,
        // with rustls's state beside it for a TLS client.
        let (socket, tls) = match client {
            Either::Left(tcp) => (tcp, None),
            Either::Right(tls) => {
                let (tcp, conn) = tls.into_inner();
                (tcp, Some(TlsSession::new(conn)))
            }
        };
        let session = if connect.clean_session {
            Session::default()
        } else {
            kept.unwrap_or_default()
        };
        let mut connection = Connection::new(Parts {
            socket: &socket,
            tls,
            router: &self.router,
            limits: &self.config.limits,
            name,
            link_id,
            clean_session: connect.clean_session,
            keep_alive: connect.keep_alive,
            link,
            session,
            pressure: self.congestion.pressure(),
        });
        if session_present {
            connection.resubscribe();
        }
        // [MQTT-4.4.0-1]: a kept session's unacknowledged messages go again.
        for resend in connection.session.resend() {
            match resend {
                Resend::Publish(packet) => connection.queue(packet),
                Resend::Pubrel(id) => {
                    connection.queue(Bytes::copy_from_slice(&wire::ack(kind::PUBREL, id)))
                }
            }
        }
        let end = connection.run(early, kick).await;
        Ok(Box::pin(self.finish(connection, connect, end)).await)
    }
}
