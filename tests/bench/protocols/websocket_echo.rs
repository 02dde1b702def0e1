//! WebSocket echo through `websocket::server`, with the crate's
//! `client::connect`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use networking_protocols::tls::client::ClientTlsArgs;
use websocket::Message;

use super::{Protocol, Rx, Tx};
use crate::relay::Transport;

/// WebSocket echo: each message is one binary message. With `tls`, over
/// TLS (`wss://`, `websocket_server --tls`).
#[derive(Debug, Default)]
pub struct WebSocket {
    pub tls: Option<ClientTlsArgs>,
}

impl WebSocket {
    async fn connect(&self, addr: SocketAddr) -> anyhow::Result<websocket::client::Socket> {
        match &self.tls {
            None => websocket::client::connect(&format!("ws://{addr}/"), CONNECT_WAIT).await,
            Some(tls) => {
                let url = format!("wss://{addr}/");
                websocket::client::connect_with(&url, CONNECT_WAIT, tls, &Default::default()).await
            }
        }
    }
}

pub struct WsTx(SplitSink<websocket::client::Socket, Message>);

pub struct WsRx(SplitStream<websocket::client::Socket>);

/// The longest a connection set-up may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

impl Protocol for WebSocket {
    type Tx = WsTx;
    type Rx = WsRx;
    fn name(&self) -> String {
        match self.tls {
            None => "WebSocket".to_string(),
            Some(_) => "WebSocket+TLS".to_string(),
        }
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // A TCP connect, then GET with `Upgrade: websocket`, then 101.
        let start = Instant::now();
        let _socket = self.connect(addr).await?;
        Ok(Some(start.elapsed()))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(WsTx, WsRx)> {
        let socket = self.connect(addr).await?;
        let (sink, stream) = socket.split();
        Ok((WsTx(sink), WsRx(stream)))
    }
}

impl Tx for WsTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.0.send(Message::Binary(payload)).await?;
        Ok(())
    }
}

impl Rx for WsRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Binary(payload))) => return Ok(payload),
                Some(Ok(Message::Close(frame))) => bail!("the server closed: {frame:?}"),
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => bail!("the WebSocket connection ended"),
            }
        }
    }
}
