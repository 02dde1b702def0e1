//! MQTT publisher to subscriber through the embedded broker, with rumqttc
//! and the crate's connection options.

use std::sync::Arc;

use networking_protocols::tls::ClientConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Protocol, Rx, Tx};
use crate::relay::Transport;

/// MQTT at one QoS: a publisher and a subscriber on a topic of their own,
/// both connected to the embedded broker, which forwards each message. With
/// `tls`, over TLS (`mqtt_broker --tls`).
#[derive(Debug)]
pub struct Mqtt {
    pub qos: QoS,
    pub tls: Option<Arc<ClientConfig>>,
    /// Numbers client ids and topics, so that no two sessions share one.
    next: AtomicU64,
}

impl Mqtt {
    pub fn new(qos: QoS) -> Mqtt {
        Mqtt {
            qos,
            tls: None,
            next: AtomicU64::new(0),
        }
    }

    /// A client connected to `addr`; its event loop runs in a task that
    /// hands us every event. Returns once CONNACK has arrived.
    async fn client(
        &self,
        addr: SocketAddr,
        role: &str,
    ) -> anyhow::Result<(AsyncClient, mpsc::UnboundedReceiver<Event>, JoinHandle<()>)> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        // Fixed-length ids and topics, so every run counts the same bytes.
        let id = format!("bench-{role}-{number:04}");
        // The same options as our binaries: at most 20 publishes in flight,
        // no Nagle delay.
        let mut config = mqtt::ClientConfig::new(&addr.ip().to_string(), addr.port(), &id);
        config.tls = self.tls.clone();
        let (client, mut eventloop) = AsyncClient::new(config.mqtt_options()?, 100);
        eventloop.set_network_options(config.network_options());
        let (events, mut received) = mpsc::unbounded_channel();
        let (failed_tx, failed) = tokio::sync::oneshot::channel();
        // rumqttc does all network work inside `poll`, so something must
        // poll it for as long as the client lives. Its first error ends the
        // client, explained the way our binaries explain it.
        let task = tokio::spawn(async move {
            let mut connected = false;
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        connected |= matches!(event, Event::Incoming(Packet::ConnAck(_)));
                        if events.send(event).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = failed_tx.send(mqtt::explain(&error, &addr.to_string(), connected));
                        return;
                    }
                }
            }
        });
        loop {
            match received.recv().await {
                Some(Event::Incoming(Packet::ConnAck(_))) => break,
                Some(_) => {}
                None => {
                    return Err(failed.await.unwrap_or_else(|_| {
                        anyhow!("the broker at {addr} closed the connection")
                    }));
                }
            }
        }
        Ok((client, received, task))
    }
}

pub struct MqttTx {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    sent: u64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2) so far.
    acked: watch::Receiver<u64>,
    tasks: [JoinHandle<()>; 2],
}

pub struct MqttRx {
    messages: mpsc::UnboundedReceiver<Bytes>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for MqttTx {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Drop for MqttRx {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Protocol for Mqtt {
    type Tx = MqttTx;
    type Rx = MqttRx;
    fn name(&self) -> String {
        let tls = if self.tls.is_some() { "+TLS" } else { "" };
        format!("MQTT{tls} QoS {}", self.qos as u8)
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // A TCP connect, then CONNECT and CONNACK.
        let start = Instant::now();
        let (_client, _events, task) = self.client(addr, "connect").await?;
        let took = start.elapsed();
        task.abort();
        Ok(Some(took))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(MqttTx, MqttRx)> {
        let topic = format!("bench/{:04}", self.next.fetch_add(1, Ordering::Relaxed));

        // The subscriber first: the broker forwards only to subscriptions
        // that exist when a message arrives.
        let (subscriber, mut sub_events, sub_task) = self.client(addr, "sub").await?;
        subscriber.subscribe(&topic, self.qos).await?;
        loop {
            match sub_events.recv().await {
                Some(Event::Incoming(Packet::SubAck(_))) => break,
                Some(_) => {}
                None => bail!("the broker at {addr} closed the subscriber's connection"),
            }
        }
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let sub_forward = tokio::spawn(async move {
            while let Some(event) = sub_events.recv().await {
                if let Event::Incoming(Packet::Publish(publish)) = event
                    && messages_tx.send(publish.payload).is_err()
                {
                    return;
                }
            }
        });

        let (publisher, mut pub_events, pub_task) = self.client(addr, "pub").await?;
        let (acked_tx, acked) = watch::channel(0u64);
        let pub_acks = tokio::spawn(async move {
            while let Some(event) = pub_events.recv().await {
                if let Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) = event {
                    acked_tx.send_modify(|acked| *acked += 1);
                }
            }
        });

        let tx = MqttTx {
            client: publisher,
            topic,
            qos: self.qos,
            sent: 0,
            acked,
            tasks: [pub_task, pub_acks],
        };
        let rx = MqttRx {
            messages,
            tasks: [sub_task, sub_forward],
        };
        Ok((tx, rx))
    }
}

impl Tx for MqttTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        // `publish` only queues the message; the event loop task sends it.
        self.client
            .publish_bytes(self.topic.as_str(), self.qos, false, payload)
            .await?;
        self.sent += 1;
        Ok(())
    }

    async fn settle(&mut self) -> anyhow::Result<()> {
        if self.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let sent = self.sent;
        self.acked
            .wait_for(|acked| *acked >= sent)
            .await
            .map_err(|_| anyhow!("the publisher's connection ended before its acknowledgements"))?;
        Ok(())
    }
}

impl Rx for MqttRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        self.messages
            .recv()
            .await
            .context("the subscriber's connection ended")
    }
}
