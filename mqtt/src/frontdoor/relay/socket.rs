//! The client's socket: what it sent, cut into packets, and what is queued
//! for it, written as far as the socket takes it now. With TLS, `tls.rs`
//! decrypts and encrypts on the way.

use std::io;

use tokio::time::Instant;

use super::buffers::{read_some, release_if_empty};
use super::tls::TlsSession;
use super::{Connection, End};
use crate::wire;

impl Connection<'_> {
    /// Writes what is queued for the client as far as its socket takes it,
    /// and tells the congestion tracker how full the queue is.
    pub(super) fn write_client(&mut self) -> Result<(), End> {
        let mut progressed = false;
        let tls_waiting = self.tls.as_ref().is_some_and(TlsSession::wants_write);
        if !self.to_client.is_empty() || tls_waiting {
            let written = match &mut self.tls {
                Some(tls) => tls.write(self.socket, &mut self.to_client),
                None => self.to_client.write_to(self.socket),
            };
            match written {
                Ok(n) => progressed = n > 0,
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
        let read = match &mut self.tls {
            Some(tls) => tls.read(self.socket, &mut self.from_client),
            None => read_some(self.socket, &mut self.from_client),
        };
        match read {
            Ok(0) => return Err(End::ClientGone(None)),
            Ok(_) => self.last_heard = Instant::now(),
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
