//! TCP line echo through `tcp::server`, in plain TCP or over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use networking_protocols::tls::{self, ClientConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Protocol, Rx, Tx};
use crate::relay::Transport;

/// TCP line echo: each message goes out with a `\n`, which is how our TCP
/// server knows where it ends. With `tls`, over TLS (`tcp_server --tls`).
#[derive(Debug, Default)]
pub struct Tcp {
    pub tls: Option<Arc<ClientConfig>>,
}

pub struct TcpTx(Box<dyn AsyncWrite + Send + Unpin>);

pub struct TcpRx(BufReader<Box<dyn AsyncRead + Send + Unpin>>);

impl Tcp {
    /// Connects, and with TLS also runs the TLS handshake: the set-up.
    async fn open_stream(
        &self,
        addr: SocketAddr,
    ) -> anyhow::Result<(
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    )> {
        let tcp = tcp_connect(addr).await?;
        match &self.tls {
            None => {
                let (read, write) = tcp.into_split();
                Ok((Box::new(read), Box::new(write)))
            }
            Some(config) => {
                let host = addr.ip().to_string();
                let stream = tls::client::connect(config.clone(), &host, tcp).await?;
                let (read, write) = tokio::io::split(stream);
                Ok((Box::new(read), Box::new(write)))
            }
        }
    }
}

async fn tcp_connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Small messages go out at once, not held back by Nagle's algorithm.
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Protocol for Tcp {
    type Tx = TcpTx;
    type Rx = TcpRx;
    fn name(&self) -> String {
        match self.tls {
            None => "TCP".to_string(),
            Some(_) => "TCP+TLS".to_string(),
        }
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // `connect` returns when SYN, SYN-ACK and ACK are done; TLS adds
        // its own handshake on top.
        let start = Instant::now();
        let _stream = self.open_stream(addr).await?;
        Ok(Some(start.elapsed()))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(TcpTx, TcpRx)> {
        let (read, write) = self.open_stream(addr).await?;
        Ok((TcpTx(write), TcpRx(BufReader::new(read))))
    }
}

impl Tx for TcpTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        // One write per message, newline included: one segment, not two.
        let mut line = BytesMut::with_capacity(payload.len() + 1);
        line.put(payload);
        line.put_u8(b'\n');
        self.0.write_all(&line).await?;
        // TLS buffers a record until flushed; plain TCP has nothing to flush.
        self.0.flush().await?;
        Ok(())
    }
}

impl Rx for TcpRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line).await? == 0 {
            bail!("the TCP server closed the connection");
        }
        line.pop();
        Ok(line.into())
    }
}
