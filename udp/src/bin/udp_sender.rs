//! # udp_sender: send datagrams, and find out what became of them
//!
//! Each datagram is one message: one `send`, one payload, delivered whole or
//! not at all. The send succeeds as soon as our own kernel has the datagram,
//! whether or not anybody listens: UDP sends nothing back by itself. To learn
//! whether datagrams arrive, you ask the receiver to answer
//! (`udp_receiver --echo`) and wait for the answers (`--wait-reply-ms`).
//!
//! ## Try it
//!
//! Terminal 1: `cargo run -p udp --bin udp_receiver -- --echo`
//!
//! Terminal 2, one datagram, or one per line of input (Ctrl-D to finish):
//!
//! ```text
//! cargo run -p udp --bin udp_sender -- -m hello
//! cargo run -p udp --bin udp_sender
//! ```
//!
//! Numbered datagrams and their round trips: with
//! `--count 200 --interval-ms 1 --size 100 --wait-reply-ms 500` the last line
//! reads like `sent=200 answered=200 lost=0 rtt_p50_us=58 rtt_p99_us=131`, and
//! the receiver's summary counts any loss, duplication and reordering.
//!
//! Now stop the receiver and send again. `-m hello` still succeeds: nobody
//! said no. With `--wait-reply-ms 500` you see how a sender can find out: the
//! other kernel answered with an ICMP "port unreachable", which a *connected*
//! UDP socket reports as "connection refused" on its next receive (or send).
//! Across a real network, a firewall may drop that ICMP, and then the
//! datagram just vanishes.
//!
//! `--broadcast --host 127.255.255.255` reaches every receiver bound to
//! 0.0.0.0 on that port; without `--broadcast` the kernel refuses to send.
//!
//! ## Read next
//!
//! `udp/src/sender.rs` (connected sockets, ICMP errors, waiting for answers).

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use tracing::info;
use udp::MAX_DATAGRAM_V6;
use udp::sender::{self, Options, Sender};

/// A UDP sender: sends one datagram (-m), one per stdin line, or numbered ones
/// (--count), and can wait for echoes to count losses and time round trips.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to send: a name, an IP address, a broadcast address or a multicast group
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Destination port
    #[arg(long, default_value_t = 12345, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Send this text as one datagram instead of reading stdin
    #[arg(short, long, conflicts_with = "count")]
    message: Option<String>,
    /// Send this many numbered datagrams (`seq 0`, `seq 1`, ...) instead of reading stdin
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// With --count: wait this long between datagrams
    #[arg(long, default_value_t = 10, requires = "count")]
    interval_ms: u64,
    /// With --count: pad each datagram with dots to this many bytes (0: no padding;
    /// at most 65507 over IPv4, 65527 over IPv6)
    #[arg(long, default_value_t = 0, requires = "count", value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_DATAGRAM_V6 as u64))]
    size: usize,
    /// After each datagram, wait up to this long for an answer; print a summary at the end
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    wait_reply_ms: Option<u64>,
    /// Allow sending to a broadcast address (SO_BROADCAST)
    #[arg(long)]
    broadcast: bool,
    /// For a multicast group: the interface to send from (default: the system's choice)
    #[arg(long)]
    multicast_interface: Option<Ipv4Addr>,
    /// For a multicast group: how many routers it may cross (1: this network only)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    multicast_ttl: u32,
}

// One socket and one datagram at a time: the current-thread runtime is all
// we need (udp_receiver.rs explains why it is also the fastest).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(send(args).await)
}

async fn send(args: Args) -> anyhow::Result<()> {
    let options = Options {
        broadcast: args.broadcast,
        multicast_interface: args.multicast_interface,
        multicast_ttl: args.multicast_ttl,
    };
    let sender = Sender::open(&args.host, args.port, &options).await?;
    info!(
        "sending to {} from {}",
        sender.target(),
        sender.local_addr()?
    );

    let wait = args.wait_reply_ms.map(Duration::from_millis);
    let stdout = tokio::io::stdout();
    let shutdown = networking_protocols::shutdown_signal();
    let report = match (&args.message, args.count) {
        (Some(message), _) => {
            let one = futures_util::stream::iter([Ok(message.clone().into())]);
            sender::run(&sender, one, wait, stdout, shutdown).await?
        }
        (None, Some(count)) => {
            let interval = Duration::from_millis(args.interval_ms);
            let numbered = sender::sequenced(count, args.size, interval);
            sender::run(&sender, numbered, wait, stdout, shutdown).await?
        }
        (None, None) => {
            let max = udp::max_datagram(sender.target().ip());
            let lines = sender::lines(tokio::io::stdin(), max);
            sender::run(&sender, lines, wait, stdout, shutdown).await?
        }
    };
    if wait.is_some() {
        println!("{report}");
    } else {
        info!("sent {} datagram(s) to {}", report.sent, sender.target());
    }
    Ok(())
}
