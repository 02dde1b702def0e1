//! # tcp_client: a full-duplex TCP client, like a small `nc`
//!
//! Once connected, a TCP connection carries bytes both ways at the same time.
//! This client sends what you type (or pipe in) while printing whatever the
//! server sends, as it arrives, so it works for an echo server, where each
//! line has one answer, and for a chat, where lines arrive at any moment.
//! When your input ends it closes only its sending direction and keeps
//! reading until the server closes, so no answer is lost.
//!
//! ## Try it
//!
//! Terminal 1: `cargo run -p tcp --bin tcp_server`
//!
//! Terminal 2, one line and its answer:
//!
//! ```text
//! cargo run -p tcp --bin tcp_client -- -m hello
//! ```
//!
//! or type lines yourself (Ctrl-D or Ctrl-C ends input; a second Ctrl-C
//! quits without waiting for the server), or pipe them in:
//! `printf 'a\nb\n' | cargo run -p tcp --bin tcp_client` prints `a` and `b`.
//! `-m ping --count 5 --interval-ms 200` sends five lines, 200 ms apart.
//! Only what the server sends goes to stdout; status goes to stderr.
//!
//! `-x` shows the bytes themselves: `-m hi -x` prints on stderr
//!
//! ```text
//! > 127.0.0.1:9999 length=3 from=0 to=2
//!  68 69 0a                                         hi.
//! < 127.0.0.1:9999 length=3 from=0 to=2
//!  68 69 0a                                         hi.
//! ```
//!
//! three bytes out (`>`) and the same three back (`<`), the newline as `0a`.
//!
//! Stop the server and run the client again to see what "nobody listening"
//! looks like: the server's kernel answers our SYN with a reset, and we print
//! `error: cannot connect to 127.0.0.1:9999: Connection refused ...`.
//!
//! ## Read next
//!
//! `tcp/src/client.rs`: the two directions of one connection, and half-close.

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use futures_util::{FutureExt, StreamExt, TryFutureExt};
use networking_protocols::tls::client::{self as tls, ClientTlsArgs};
use tcp::client;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A TCP client: sends lines from stdin (or one line with -m) and prints
/// everything the server sends, until the server closes the connection.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server to connect to (a name or an IP address)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port
    #[arg(long, default_value_t = 9999)]
    port: u16,
    /// Send this one line instead of reading stdin, print the answer, exit
    #[arg(short, long)]
    message: Option<String>,
    /// With -m: send the line this many times
    #[arg(long, default_value_t = 1, requires = "message", value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// With -m and --count: wait this long between lines
    #[arg(long, default_value_t = 1000, requires = "message")]
    interval_ms: u64,
    /// Give up connecting after this many seconds
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout_secs: u64,
    /// Speak TLS: check the server's certificate, then encrypt everything
    #[arg(long)]
    tls: bool,
    /// Show every chunk sent (>) and received (<) in hex on stderr, as socat -x does
    #[arg(short = 'x', long)]
    hex_dump: bool,
    #[command(flatten)]
    tls_options: ClientTlsArgs,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(talk(args).await)
}

async fn talk(args: Args) -> anyhow::Result<()> {
    let tls_config = match (args.tls, args.tls_options.first_given()) {
        (true, _) => Some(args.tls_options.config()?),
        (false, Some(flag)) => bail!("{flag} is a TLS option: add --tls"),
        (false, None) => None,
    };
    let wait = Duration::from_secs(args.connect_timeout_secs);
    let stream = client::connect(&args.host, args.port, wait).await?;
    info!(
        "connected to {} from {}",
        stream.peer_addr()?,
        stream.local_addr()?
    );
    // Both inputs are streams of byte chunks: a repeated line for -m, or
    // whatever arrives on stdin (a terminal hands over one line at a time).
    let input = match &args.message {
        Some(message) => {
            let interval = Duration::from_millis(args.interval_ms);
            client::repeat_line(message, args.count, interval).left_stream()
        }
        None => ReaderStream::new(tokio::io::stdin()).right_stream(),
    };
    // Ctrl-C ends the input, as Ctrl-D does: we half-close and still print
    // the answers on their way. A second Ctrl-C quits without waiting.
    let ctrl_c = CancellationToken::new();
    let input = input.take_until(ctrl_c.clone().cancelled_owned());
    let stdout = tokio::io::stdout();
    let session = match tls_config {
        None => client::run(stream, input, stdout, args.hex_dump).left_future(),
        // With TLS, the handshake comes first: the server proves who it is
        // with its certificate, and both sides agree on keys.
        Some(config) => {
            let tls = tls::connect(config, &args.host, stream).await?;
            let session = tls.get_ref().1;
            info!(
                "TLS handshake done: {}",
                networking_protocols::tls::agreed(session)
            );
            client::run_tls(tls, input, stdout, args.hex_dump).right_future()
        }
    };
    // A TLS alert that arrives later (a server refusing our certificate
    // does so after our side of the handshake) gets its fix explained.
    let host = args.host.clone();
    let session = session.map_err(|error| tls::explain_failure(error, &host));
    tokio::pin!(session);
    tokio::select! {
        // The Ctrl-C handler is installed when `shutdown_signal()` is called,
        // before the session first runs; `biased` checks it first each time.
        biased;
        () = networking_protocols::shutdown_signal() => ctrl_c.cancel(),
        result = &mut session => return result,
    }
    info!("input ended; waiting for the server to close (Ctrl-C again quits now)");
    tokio::select! {
        biased;
        () = networking_protocols::shutdown_signal() => Ok(()),
        result = session => result,
    }
}
