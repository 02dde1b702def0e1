//! What a [`Connection`] is made of, and how one is put together at
//! CONNACK (`connack.rs` fills in the parts).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::acl::Acl;
use super::super::aliases::OutgoingAliases;
use super::super::congestion::Pressure;
use super::super::dispatch::Shared;
use super::super::router::Router;
use super::super::session::Session;
use super::buffers::Outbox;
use super::{Connection, Layer, Limits};

/// What a [`Connection`] is made of.
#[derive(Debug)]
pub struct Parts<'a> {
    pub socket: &'a TcpStream,
    pub layer: Layer,
    pub router: &'a Router,
    pub shared: &'a Shared,
    pub limits: &'a Limits,
    pub name: &'a str,
    pub username: Option<&'a str>,
    pub acl: Option<&'a Acl>,
    pub session_expiry: u32,
    pub version: u8,
    pub max_packet_size: Option<u32>,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub keep_alive: u16,
    pub session: Session,
    pub pressure: Pressure,
}

impl<'a> Connection<'a> {
    pub fn new(parts: Parts<'a>) -> Self {
        Connection {
            socket: parts.socket,
            layer: parts.layer,
            router: parts.router,
            shared: parts.shared,
            limits: parts.limits,
            name: parts.name,
            username: parts.username,
            acl: parts.acl,
            denial_logged: false,
            clean_session: parts.session_expiry == 0,
            session_expiry: parts.session_expiry,
            version: parts.version,
            max_packet_size: parts.max_packet_size,
            aliases: HashMap::new(),
            receive_maximum: parts.receive_maximum,
            outgoing_aliases: OutgoingAliases::new(parts.topic_alias_maximum),
            waiting: VecDeque::new(),
            grace: (parts.keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(parts.keep_alive)).mul_f32(1.5)),
            for_router: Vec::new(),
            session: parts.session,
            from_client: BytesMut::new(),
            to_client: Outbox::default(),
            deliveries: Vec::new(),
            last_heard: Instant::now(),
            pressure: parts.pressure,
            dropped: 0,
            dropped_logged: None,
        }
    }
}
