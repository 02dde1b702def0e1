//! UDP echo through `udp::receiver` with `echo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Protocol, Rx, Tx};
use crate::relay::Transport;

/// UDP echo: each message is one datagram, and so is its echo.
#[derive(Debug)]
pub struct Udp;

#[derive(Debug)]
pub struct UdpTx(Arc<UdpSocket>);

#[derive(Debug)]
pub struct UdpRx(Arc<UdpSocket>, Vec<u8>);

impl Protocol for Udp {
    type Tx = UdpTx;
    type Rx = UdpRx;
    fn name(&self) -> String {
        "UDP".to_string()
    }
    fn transport(&self) -> Transport {
        Transport::Udp
    }
    async fn handshake(&self, _addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // Nothing to set up: the first datagram can carry data.
        Ok(None)
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(UdpTx, UdpRx)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        // A UDP connect sends nothing; it only fixes the destination.
        socket.connect(addr).await?;
        let socket = Arc::new(socket);
        Ok((UdpTx(socket.clone()), UdpRx(socket, vec![0; 65_536])))
    }
}

impl Tx for UdpTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.0.send(&payload).await?;
        Ok(())
    }
}

impl Rx for UdpRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        let n = self.0.recv(&mut self.1).await?;
        Ok(Bytes::copy_from_slice(&self.1[..n]))
    }
}
