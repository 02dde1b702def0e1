//! The sender: datagrams out, and (if asked) their echoes back in.
//!
//! Sending a datagram only hands it to our kernel. `send` succeeds whether or
//! not anybody listens at the other end, because nothing comes back to say so:
//! UDP has no handshake and no acknowledgement. What can come back is an ICMP
//! "port unreachable" message from the other host's kernel when no socket is
//! bound to the port. A *connected* UDP socket keeps that as a pending error
//! and reports it, as "connection refused", from its *next* `send` or `recv`:
//! never from the send that caused it. [`Sender`] shows you that report.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tracing::{debug, warn};

use crate::{MAX_DATAGRAM_V6, family, max_datagram, sequence};

/// How the socket is set up for broadcast and multicast; [`Options::default`]
/// gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Allow sending to a broadcast address (SO_BROADCAST).
    pub broadcast: bool,
    /// The interface multicast datagrams leave by (`None`: the system's choice).
    pub multicast_interface: Option<Ipv4Addr>,
    /// How many routers a multicast datagram may cross; 1 keeps it on the
    /// local network.
    pub multicast_ttl: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            broadcast: false,
            multicast_interface: None,
            multicast_ttl: 1,
        }
    }
}

/// A UDP socket aimed at one address.
#[derive(Debug)]
pub struct Sender {
    socket: UdpSocket,
    target: SocketAddr,
    /// Whether the socket is connected to `target` (see [`Sender::open`]).
    connected: bool,
}

impl Sender {
    /// Resolves `host:port` and opens a socket for it.
    ///
    /// For one unicast address we `connect` the socket. A UDP connect sends
    /// nothing: it only fixes the destination, makes the kernel drop datagrams
    /// from anyone else, and lets ICMP errors reach us. Answers to a broadcast
    /// or multicast come from the receivers' own addresses, so for those we
    /// stay unconnected and accept answers from anyone.
    pub async fn open(host: &str, port: u16, options: &Options) -> anyhow::Result<Sender> {
        let target = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}:{port}"))?
            .next()
            .with_context(|| format!("cannot resolve {host}:{port}: no address"))?;
        let socket = socket_for(target, options)
            .with_context(|| format!("cannot open a UDP socket for {target}"))?;

        let connected = !options.broadcast && !target.ip().is_multicast();
        if connected {
            socket
                .connect(target)
                .await
                .map_err(|error| explain(target, error))?;
        }
        Ok(Sender {
            socket,
            target,
            connected,
        })
    }

    /// The address we send to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Our own address: the port the kernel chose, and the source address if
    /// connected (an unconnected socket shows 0.0.0.0: the kernel picks the
    /// source address per datagram, by route).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram.
    ///
    /// If the kernel reports that an *earlier* datagram was refused (an ICMP
    /// port unreachable came back), this one was not sent: we say so and send
    /// it again, since a receiver may have started in the meantime.
    pub async fn send(&self, payload: &[u8]) -> anyhow::Result<()> {
        let max = max_datagram(self.target.ip());
        if payload.len() > max {
            bail!(
                "cannot send {} bytes to {}: a UDP datagram over {} holds at most {max}",
                payload.len(),
                self.target,
                family(self.target.ip()),
            );
        }
        let result = match self.send_once(payload).await {
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                self.warn_refused();
                self.send_once(payload).await
            }
            result => result,
        };
        result.map_err(|error| explain(self.target, error))?;
        debug!(to = %self.target, bytes = payload.len(), "datagram sent");
        Ok(())
    }

    async fn send_once(&self, payload: &[u8]) -> io::Result<()> {
        if self.connected {
            self.socket.send(payload).await?;
        } else {
            self.socket.send_to(payload, self.target).await?;
        }
        Ok(())
    }

    /// Waits up to `wait` for an answer, reads it into `buffer` and returns
    /// its length. With `expected`, only an answer carrying that sequence
    /// number counts: a late answer to an earlier datagram is skipped.
    /// `None`: no answer in time, or the target refused the datagram.
    pub async fn reply(
        &self,
        buffer: &mut [u8],
        wait: Duration,
        expected: Option<u64>,
    ) -> anyhow::Result<Option<usize>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // A connected socket receives only from its target.
            let received = if self.connected {
                tokio::time::timeout_at(deadline, self.socket.recv(buffer))
                    .await
                    .map(|result| result.map(|len| (len, self.target)))
            } else {
                tokio::time::timeout_at(deadline, self.socket.recv_from(buffer)).await
            };
            let (len, from) = match received {
                Err(_elapsed) => return Ok(None),
                Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    self.warn_refused();
                    return Ok(None);
                }
                Ok(Err(error)) => return Err(explain(self.target, error)),
                Ok(Ok(received)) => received,
            };
            debug!(%from, bytes = len, "datagram received");
            if expected.is_none() || sequence::parse(&buffer[..len]) == expected {
                return Ok(Some(len));
            }
        }
    }

    fn warn_refused(&self) {
        warn!(
            "{} refused a datagram (ICMP port unreachable): nobody is listening on that port",
            self.target
        );
    }
}

/// A UDP socket set up to send to `target`, bound to any local address.
fn socket_for(target: SocketAddr, options: &Options) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // Without SO_BROADCAST, the kernel refuses to send to a broadcast address
    // ("permission denied"): one stray datagram would reach every host on the
    // network, so you have to ask for it.
    socket.set_broadcast(options.broadcast)?;
    if let IpAddr::V4(group) = target.ip()
        && group.is_multicast()
    {
        if let Some(interface) = options.multicast_interface {
            socket.set_multicast_if_v4(&interface).map_err(|error| {
                io::Error::new(error.kind(), format!("interface {interface}: {error}"))
            })?;
        }
        socket.set_multicast_ttl_v4(options.multicast_ttl)?;
    }
    // Port 0: the kernel picks our port, as it does for a TCP client.
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    socket.bind(&SocketAddr::new(any, 0).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Names the address, with the fix where one is obvious.
fn explain(target: SocketAddr, error: io::Error) -> anyhow::Error {
    let hint = match error.kind() {
        io::ErrorKind::PermissionDenied => "; to send to a broadcast address, pass --broadcast",
        io::ErrorKind::ConnectionRefused => "; is udp_receiver running on that port?",
        _ => "",
    };
    anyhow::anyhow!("cannot send to {target}: {error}{hint}")
}

/// What the sender counted, printed as its last line with `--wait-reply-ms`:
/// `sent=200 answered=198 lost=2 rtt_p50_us=61 rtt_p99_us=140`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: u64,
    /// Round-trip times of the answered datagrams, in microseconds.
    pub rtts_us: Vec<u64>,
}

impl Report {
    /// The round trip below which `p` (0 to 1) of the answers came back
    /// (nearest rank), or `None` without answers.
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        let mut sorted = self.rtts_us.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.max(1) - 1).copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered = self.rtts_us.len() as u64;
        let show = |p| {
            self.percentile_us(p)
                .map_or("-".to_string(), |us| us.to_string())
        };
        write!(
            f,
            "sent={} answered={answered} lost={} rtt_p50_us={} rtt_p99_us={}",
            self.sent,
            self.sent.saturating_sub(answered),
            show(0.50),
            show(0.99),
        )
    }
}

/// Sends each payload of `datagrams` as one datagram until the input ends or
/// `shutdown` resolves.
///
/// With `wait`, after each datagram we wait that long for an answer and time
/// the round trip; answers to text datagrams are written to `output`, one per
/// line, while answers to sequenced ones are only counted. A sequenced
/// datagram's answer is matched by its number; for text, the first datagram
/// that comes back is the answer, so an echo that arrives after its wait has
/// ended stands in for the next line's.
pub async fn run<D, O>(
    sender: &Sender,
    datagrams: D,
    wait: Option<Duration>,
    mut output: O,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report>
where
    D: Stream<Item = io::Result<Bytes>>,
    O: AsyncWrite + Unpin,
{
    let mut report = Report::default();
    let mut buffer = vec![0u8; MAX_DATAGRAM_V6 + 1];
    tokio::pin!(datagrams, shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => break,
            next = datagrams.next() => next,
        };
        let Some(payload) = next else { break };
        let payload = payload.context("cannot read input")?;
        let sent_at = Instant::now();
        sender.send(&payload).await?;
        report.sent += 1;

        let Some(wait) = wait else { continue };
        let expected = sequence::parse(&payload);
        let answer = tokio::select! {
            () = &mut shutdown => break,
            answer = sender.reply(&mut buffer, wait, expected) => answer?,
        };
        if let Some(len) = answer {
            report.rtts_us.push(sent_at.elapsed().as_micros() as u64);
            if expected.is_none() {
                output.write_all(&buffer[..len]).await?;
                output.write_all(b"\n").await?;
                output.flush().await?;
            }
        }
    }
    Ok(report)
}

/// Each line of `input` (without its `\n`) as one datagram: a datagram keeps
/// its boundaries, so unlike TCP we need no newline on the wire. A line longer
/// than `max` bytes (what a datagram can hold: see [`max_datagram`]) is an
/// error.
pub fn lines<R: AsyncRead>(input: R, max: usize) -> impl Stream<Item = io::Result<Bytes>> {
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max);
    FramedRead::new(input, codec).map(move |line| {
        line.map_err(|error| match error {
            AnyDelimiterCodecError::Io(error) => error,
            AnyDelimiterCodecError::MaxChunkLengthExceeded => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than the {max} bytes a datagram can hold"),
            ),
        })
    })
}

/// `count` sequenced datagrams (see [`sequence`]) of `size` bytes, `interval`
/// apart.
pub fn sequenced(
    count: u64,
    size: usize,
    interval: Duration,
) -> impl Stream<Item = io::Result<Bytes>> {
    futures_util::stream::iter(0..count).then(move |number| async move {
        if number > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        Ok(Bytes::from(sequence::payload(number, size)))
    })
}
