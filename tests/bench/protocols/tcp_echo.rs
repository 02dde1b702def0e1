//! TCP line echo through `tcp::server`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Protocol, Rx, Tx};
use crate::relay::Transport;

/// TCP line echo: each message goes out with a `\n`, which is how our TCP
/// server knows where it ends.
#[derive(Debug)]
pub struct Tcp;

#[derive(Debug)]
pub struct TcpTx(OwnedWriteHalf);

#[derive(Debug)]
pub struct TcpRx(BufReader<OwnedReadHalf>);

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
        "TCP".to_string()
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // `connect` returns when SYN, SYN-ACK and ACK are done.
        let start = Instant::now();
        let _stream = tcp_connect(addr).await?;
        Ok(Some(start.elapsed()))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(TcpTx, TcpRx)> {
        let (read, write) = tcp_connect(addr).await?.into_split();
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
