//! The two brokers, each started as a process of its own, so that its
//! memory is its own and can be read from `/proc/<pid>/status`: our
//! `mqtt_broker` (release build) and Mosquitto, where it is installed. The
//! scale bench's `scale/servers.rs` starts them.

use std::net::SocketAddr;

use crate::servers::{Program, Running};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    MqttBroker,
    Mosquitto,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::MqttBroker => "mqtt_broker",
            Server::Mosquitto => "Mosquitto",
        }
    }
}

/// mqtt_broker's limits, raised above what the rows use: 10,000 filters
/// for one client (its default allows 1000) and 2050 clients at once (its
/// default allows 1000). Mosquitto has neither limit by default.
const OUR_FLAGS: &[&str] = &["--max-subscriptions", "20000"];
const MAX_CONNECTIONS: usize = 5000;

/// A broker process and the address it listens on. Dropping it kills the
/// process, so a failed measurement leaves nothing running.
#[derive(Debug)]
pub struct Broker {
    running: Running,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts `server` on a free port of 127.0.0.1.
    pub async fn start(server: Server) -> anyhow::Result<Broker> {
        Broker::start_with(server, "").await
    }

    /// Starts `server`; `mosquitto_lines` go into Mosquitto's config file
    /// (mqtt_broker takes what it needs as flags).
    pub async fn start_with(
        server: Server,
        mosquitto_lines: &'static str,
    ) -> anyhow::Result<Broker> {
        let program = match server {
            Server::MqttBroker => Program::Ours("mqtt_broker", OUR_FLAGS),
            Server::Mosquitto => Program::Mosquitto(mosquitto_lines),
        };
        let running = Running::start(&program, MAX_CONNECTIONS).await?;
        let addr = running.addr;
        Ok(Broker { running, addr })
    }

    /// The broker's resident memory (RSS), in bytes (Linux only).
    pub fn rss(&self) -> anyhow::Result<u64> {
        self.running.rss()
    }

    /// Kills the broker and waits until it is gone.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}
