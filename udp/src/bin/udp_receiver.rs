//! # udp_receiver: see every datagram that arrives, and where it came from
//!
//! UDP has no connection: a socket bound to a port receives every datagram
//! sent there, from anyone, each one whole and labelled with its sender's
//! address. Nothing guarantees that a datagram arrives, arrives once, or
//! arrives in order, and a sender that is faster than us simply loses
//! datagrams: there is no flow control. This receiver prints one line per
//! datagram and, when the sender numbers them (`udp_sender --count`), counts
//! what was lost, duplicated or reordered on the way.
//!
//! ## Try it
//!
//! Terminal 1 prints `listening on 127.0.0.1:12345`:
//!
//! ```text
//! cargo run -p udp --bin udp_receiver
//! ```
//!
//! Terminal 2: `cargo run -p udp --bin udp_sender -- -m hello`. Terminal 1
//! shows `[127.0.0.1:50312] 5 bytes: hello`: the sender's address and port
//! (a new port each run) and the payload. (`RUST_LOG=debug` also logs each
//! datagram as the socket hands it over, before it is printed.)
//!
//! With flags, echo every datagram and stop after 100 of them, printing a
//! summary such as `received=100 unique=100 lost=0 duplicated=0 reordered=0`:
//!
//! ```text
//! cargo run -p udp --bin udp_receiver -- --echo --count 100
//! cargo run -p udp --bin udp_sender -- --count 100 --interval-ms 5 --wait-reply-ms 500
//! ```
//!
//! Two receivers at once, sharing a port through a multicast group: run
//! `udp_receiver --multicast 239.1.2.3` in two terminals, then
//! `udp_sender --host 239.1.2.3 -m hi`; both print it. That datagram also
//! goes out on your local network (no router passes it on: `--multicast-ttl`
//! is 1); add `--interface 127.0.0.1` to the receivers and
//! `--multicast-interface 127.0.0.1` to the sender to keep it on this machine.
//! Broadcasts reach a receiver bound to 0.0.0.0 (`--host 0.0.0.0`), never one
//! bound to 127.0.0.1.
//!
//! ## Read next
//!
//! `udp/src/receiver.rs` (one loop, truncation, multicast), then
//! `udp/src/sequence.rs` and `udp/src/bin/udp_sender.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::anyhow;
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use tokio::net::UdpSocket;
use udp::MAX_DATAGRAM_V6;
use udp::receiver::{self, Config};

/// A UDP receiver: prints every datagram with its sender's address, and can
/// echo them, join a multicast group and count lost, duplicated and reordered
/// datagrams.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to bind; 0.0.0.0 also receives from other machines, and broadcasts
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind; 0 picks a free one (printed on the first line)
    #[arg(long, default_value_t = 12345)]
    port: u16,
    /// Send every datagram back to its sender, unchanged
    #[arg(long)]
    echo: bool,
    /// Exit after this many datagrams
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Largest datagram accepted, in bytes; a larger one is reported as truncated
    /// (UDP carries at most 65507 bytes over IPv4, 65527 over IPv6)
    #[arg(long, default_value_t = MAX_DATAGRAM_V6, value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_DATAGRAM_V6 as u64))]
    max_size: usize,
    /// Show payloads as hexadecimal bytes instead of text
    #[arg(long)]
    hex: bool,
    /// Join this IPv4 multicast group; binds the group address instead of --host, port shared
    #[arg(long, value_parser = multicast_group)]
    multicast: Option<Ipv4Addr>,
    /// With --multicast: the interface to join on (default: the system's choice)
    #[arg(long, requires = "multicast")]
    interface: Option<Ipv4Addr>,
}

/// Parses `--multicast`: an IPv4 address in 224.0.0.0/4, the multicast range.
fn multicast_group(text: &str) -> Result<Ipv4Addr, String> {
    let group: Ipv4Addr = text
        .parse()
        .map_err(|error: std::net::AddrParseError| error.to_string())?;
    if group.is_multicast() {
        Ok(group)
    } else {
        Err("not a multicast group (224.0.0.0 to 239.255.255.255)".to_string())
    }
}

// One socket, one loop: there is nothing here for a second thread to do. The
// default, multi-threaded runtime would still use one: a worker thread waits
// for the socket to become readable, then wakes our main task on another
// thread, two context switches for every burst of datagrams. That is why a
// blocking loop in Python beats a bare `#[tokio::main]` UDP echo (30,000 to
// 60,000 context switches for 80,000 echoed datagrams, against under a
// thousand here and for Python's loop). On the current-thread runtime, the
// thread that waits for the socket is the one that answers, as in the
// blocking loop, and we keep async for Ctrl-C. (A blocking std::net loop is
// as fast, but needs extra machinery to stop on Ctrl-C.)
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(receive(args).await)
}

async fn receive(args: Args) -> anyhow::Result<()> {
    let socket = match args.multicast {
        Some(group) => {
            let addr = SocketAddr::new(group.into(), args.port);
            // The unspecified address lets the system pick the interface.
            let interface = args.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
            receiver::multicast_socket(group, args.port, interface).map_err(|error| {
                // Shared only with sockets that also allow it (SO_REUSEADDR):
                // a plain receiver on that port keeps it for itself.
                if error.kind() == std::io::ErrorKind::AddrInUse {
                    return networking_protocols::bind_error(addr, error);
                }
                anyhow!("cannot join {addr} on interface {interface}: {error}")
            })?
        }
        None => {
            let addr = SocketAddr::new(args.host, args.port);
            UdpSocket::bind(addr)
                .await
                .map_err(|error| networking_protocols::bind_error(addr, error))?
        }
    };
    // Ctrl-C and SIGTERM are ours before anyone can learn where we listen.
    let shutdown = networking_protocols::shutdown_signal();
    networking_protocols::print_listening(socket.local_addr()?);

    let config = Config {
        echo: args.echo,
        count: args.count,
        max_size: args.max_size,
        hex: args.hex,
    };
    // A plain, blocking stdout: a write to a terminal, file or pipe takes
    // microseconds, and meanwhile this thread has nothing else to do. tokio's
    // async stdout would hand every write to a helper thread and back.
    let stdout = std::io::stdout().lock();
    let summary = receiver::run(&socket, &config, stdout, shutdown).await?;
    // The last line: how many datagrams came, and what happened to the
    // numbered ones on the way.
    println!("{summary}");
    Ok(())
}
