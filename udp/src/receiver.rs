//! The receiver: take datagrams off a socket, show them, maybe echo them.
//!
//! There is no `accept` in UDP and no connection per client: one socket
//! receives every datagram sent to its address, from anyone, and each one
//! arrives with the address it came from. So [`run`] is a single loop, and
//! an echo is a `send_to` back to that address.

use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::sequence::{Summary, Tally};
use crate::{MAX_DATAGRAM_V6, show_hex, show_text};

/// The receiver's settings; [`Config::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Send every datagram back to its sender, unchanged.
    pub echo: bool,
    /// Stop after this many datagrams.
    pub count: Option<u64>,
    /// The largest datagram we accept, in bytes (at most [`MAX_DATAGRAM_V6`],
    /// the most any IP version carries); a larger one is reported as truncated.
    pub max_size: usize,
    /// Show payloads as hexadecimal bytes instead of text.
    pub hex: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            echo: false,
            count: None,
            max_size: MAX_DATAGRAM_V6,
            hex: false,
        }
    }
}

/// Receives datagrams on `socket` until `shutdown` resolves or
/// `config.count` datagrams have arrived, writing one line per datagram to
/// `output`: `[127.0.0.1:50312] 5 bytes: hello`. Returns the counts.
///
/// `output` is a plain blocking writer. While a write waits (a terminal
/// paused with Ctrl-S, a pipe nobody reads), datagrams queue in the kernel's
/// receive buffer, and once it is full the kernel drops new ones without a
/// word to anybody: UDP has no flow control to slow the sender down. A stop
/// signal waits too, until the write returns: Ctrl-C in a terminal also
/// resumes output that Ctrl-S paused, but a pipe nobody reads holds SIGTERM
/// off until its reader reads or exits.
pub async fn run(
    socket: &UdpSocket,
    config: &Config,
    mut output: impl Write,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Summary> {
    // UDP delivers a datagram whole or truncates it to fit our buffer, and
    // truncation is silent. So we read into one byte more than we accept: if
    // that byte gets filled, the datagram was larger than `max_size`.
    let max_size = config.max_size.min(MAX_DATAGRAM_V6);
    let mut buffer = vec![0u8; max_size + 1];
    let mut lines = String::new();
    let mut tally = Tally::default();
    tokio::pin!(shutdown);

    'serve: while !done(config, &tally) {
        // Wait until at least one datagram is queued (or we are told to stop).
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            ready = socket.readable() => ready?,
        }
        // Then take what is queued, without waiting, up to BATCH datagrams:
        // one write to `output` per burst instead of one per datagram, and a
        // look at `shutdown` between bursts even when a sender never pauses.
        for _ in 0..BATCH {
            let (len, from) = match socket.try_recv_from(&mut buffer) {
                Ok(received) => received,
                // The queue is empty; `readable` will wait for the next one.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error for an earlier echo can surface here (on some
                // systems); it concerns that sender only, so we keep serving.
                Err(error) if is_about_a_peer(&error) => {
                    warn!(%error, "an earlier datagram was refused");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let truncated = len > max_size;
            // `RUST_LOG=debug`: what the socket handed us, before we print it.
            debug!(%from, bytes = len, truncated, "datagram received");
            let payload = &buffer[..len.min(max_size)];
            tally.count(from, payload, truncated);
            show(&mut lines, config, from, payload, truncated);
            // A truncated datagram cannot be echoed unchanged, so it gets no
            // echo at all: its sender will count it as lost.
            if config.echo
                && !truncated
                && let Err(error) = socket.send_to(payload, from).await
            {
                warn!(%from, %error, "echo failed");
            }
            if done(config, &tally) {
                break 'serve;
            }
        }
        write_out(&mut output, &mut lines)?;
    }
    write_out(&mut output, &mut lines)?;
    Ok(tally.summary())
}

/// Writes the lines we have, if any, and empties the buffer.
fn write_out(output: &mut impl Write, lines: &mut String) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let written = output
        .write_all(lines.as_bytes())
        .and_then(|()| output.flush());
    lines.clear();
    // Say which side failed: `udp_receiver | head -1` ends with a broken pipe.
    written.map_err(|error| io::Error::new(error.kind(), format!("cannot write output: {error}")))
}

/// How many queued datagrams we take before we write their lines.
const BATCH: usize = 64;

fn done(config: &Config, tally: &Tally) -> bool {
    config.count.is_some_and(|count| tally.received() >= count)
}

/// Appends the line for one datagram: `[127.0.0.1:50312] 5 bytes: hello`.
fn show(lines: &mut String, config: &Config, from: SocketAddr, payload: &[u8], truncated: bool) {
    let len = payload.len();
    let unit = if len == 1 { "byte" } else { "bytes" };
    // `write!` to a String cannot fail.
    let _ = if truncated {
        warn!(%from, "datagram larger than {len} bytes: truncated");
        write!(
            lines,
            "[{from}] truncated to {len} {unit} (over --max-size): "
        )
    } else {
        write!(lines, "[{from}] {len} {unit}: ")
    };
    if config.hex {
        show_hex(payload, lines);
    } else {
        show_text(payload, lines);
    }
    lines.push('\n');
}

/// Errors that report something about one peer (an ICMP message about an
/// earlier datagram), not about our socket.
fn is_about_a_peer(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Opens a socket that receives the IPv4 multicast `group` on `port`, sharing
/// the port with any other receiver of the same group on this machine.
///
/// Three things make that work:
///
/// - **SO_REUSEADDR** lets several sockets bind the same address and port;
///   each gets its own copy of every multicast datagram. It must be set before
///   `bind`, which is why we build the socket with `socket2` rather than
///   `UdpSocket::bind`, which binds at once.
/// - **Binding the group address**, not `--host`: the kernel delivers a
///   datagram to a socket only if its destination matches the bound address,
///   and a multicast datagram's destination is the group. A socket bound to
///   127.0.0.1 never sees group traffic. (Binding 0.0.0.0 would work too, but
///   would also receive unicast and broadcast datagrams for that port.)
/// - **Joining** the group (IP_ADD_MEMBERSHIP) on `interface` tells the kernel,
///   and the routers on that network, that this host wants the group's
///   traffic. `0.0.0.0` lets the system choose the interface; the tests pass
///   127.0.0.1 so that nothing leaves the machine.
pub fn multicast_socket(group: Ipv4Addr, port: u16, interface: Ipv4Addr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(group, port)).into())?;
    socket.join_multicast_v4(&group, &interface)?;
    // tokio needs a non-blocking socket: its reads return "would block"
    // instead of stopping the thread, and tokio waits for readiness instead.
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}
