//! The client's socket: what it sent, cut into packets, and what is queued
//! for it, written as far as the socket takes it now. With TLS, `tls.rs`
//! decrypts and encrypts on the way; over WebSocket, `websocket.rs` unwraps
//! and wraps messages.

use std::io;

use tokio::time::Instant;

use super::buffers::{read_some, release_if_empty};
use super::tls::TlsSession;
use super::websocket::WsSession;
use super::{Connection, End};
use crate::frontdoor::sys::Stats;
use crate::wire;

/// What lies between a client's socket and its MQTT bytes.
#[derive(Debug)]
pub enum Layer {
    /// Plain TCP: the socket's bytes are MQTT's.
    Plain,
    /// TLS: records, decrypted and encrypted in `relay/tls.rs`.
    Tls(TlsSession),
    /// WebSocket: binary messages, unwrapped and wrapped in
    /// `relay/websocket.rs`.
    WebSocket(WsSession),
}

impl Layer {
    /// Whether bytes wait in the layer for the socket.
    pub(super) fn wants_write(&self) -> bool {
        match self {
            Layer::Plain => false,
            Layer::Tls(tls) => tls.wants_write(),
            Layer::WebSocket(ws) => ws.wants_write(),
        }
    }
}

impl Connection<'_> {
    /// Writes what is queued for the client as far as its socket takes it,
    /// and tells the congestion tracker how full the queue is.
    pub(super) fn write_client(&mut self) -> Result<(), End> {
        let mut progressed = false;
        if !self.to_client.is_empty() || self.layer.wants_write() {
            let written = match &mut self.layer {
                Layer::Plain => self.to_client.write_to(self.socket),
                Layer::Tls(tls) => tls.write(self.socket, &mut self.to_client),
                Layer::WebSocket(ws) => ws.write(self.socket, &mut self.to_client),
            };
            match written {
                Ok(n) => {
                    progressed = n > 0;
                    Stats::add(&self.shared.stats.bytes_sent, n as u64);
                }
                Err(error) => return Err(End::ClientGone(Some(error))),
            }
        }
        if self.to_client.is_empty() {
            // Nothing waits for the client: it is not behind.
            self.pressure.caught_up();
        }
        self.update_pressure(progressed);
        Ok(())
    }

    /// Reads what the client sent and handles each whole packet.
    pub(super) fn read_client(&mut self) -> Result<(), End> {
        let read = match &mut self.layer {
            Layer::Plain => read_some(self.socket, &mut self.from_client),
            Layer::Tls(tls) => tls.read(self.socket, &mut self.from_client),
            Layer::WebSocket(ws) => ws.read(self.socket, &mut self.from_client),
        };
        match read {
            Ok(0) => return Err(End::ClientGone(None)),
            Ok(n) => {
                self.last_heard = Instant::now();
                Stats::add(&self.shared.stats.bytes_received, n as u64);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(End::ClientGone(Some(error))),
        }
        self.client_packets()
    }

    /// Handles each whole packet the client has sent so far.
    pub(super) fn client_packets(&mut self) -> Result<(), End> {
        loop {
            let frame = match wire::next_frame(&mut self.from_client, self.limits.max_packet_bytes)
            {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(violation) => return Err(End::Violation(violation)),
            };
            self.client_packet(frame)?;
        }
        release_if_empty(&mut self.from_client);
        Ok(())
    }
}
