//! # tcp_server: a line echo (or chat) server, and a first lesson in TCP
//!
//! TCP gives two programs a reliable, ordered stream of bytes in each
//! direction. Reliable and ordered: the kernel numbers every byte, resends what
//! is lost and reorders what arrives out of order. A stream of *bytes*: TCP
//! keeps no message boundaries, so a protocol on top must mark them itself.
//! This server's protocol is the simplest one there is: every line that ends in
//! a newline is answered with the same line, byte for byte (the Echo protocol
//! of RFC 862, framed by lines). With `--chat`, every line goes to every other
//! client instead, tagged with the sender's address.
//!
//! ## Try it
//!
//! Terminal 1 starts the server; it prints `listening on 127.0.0.1:9999`:
//!
//! ```text
//! cargo run -p tcp --bin tcp_server
//! ```
//!
//! Terminal 2 connects; type lines and each comes back (Ctrl-D to finish):
//!
//! ```text
//! cargo run -p tcp --bin tcp_client
//! ```
//!
//! A chat: start the server with
//! `cargo run -p tcp --bin tcp_server -- --chat --port 7000`, then run
//! `cargo run -p tcp --bin tcp_client -- --port 7000` in two more terminals.
//! What one types, the other sees as `[127.0.0.1:50312] hello`. Terminal 1
//! logs each connect and disconnect, with how long it lasted and how many lines
//! it sent; Ctrl-C there stops the server cleanly (chat clients get
//! `[server] shutting down` and exit 0). Start the server with
//! `RUST_LOG=debug` to see the byte stream at work: each read's size and how
//! many line ends it held.
//!
//! The same over TLS: `cargo run -p tcp --bin tcp_server -- --tls` makes a
//! local certificate authority once and logs where its `ca.pem` is; then
//! `cargo run -p tcp --bin tcp_client -- --tls --cafile <that ca.pem>`. The
//! lines are the same; on the wire they are now encrypted records.
//!
//! Bytes instead of lines: `cargo run -p tcp --bin tcp_server -- --stdio`
//! serves one client as `nc -l` does, its bytes to stdout and stdin's bytes
//! to it, exactly (`listening on` goes to stderr then, since stdout is the
//! data). `-x` on either binary shows every chunk that crosses, in hex.
//!
//! ## Read next
//!
//! `tcp/src/lib.rs` (how lines are found in a byte stream),
//! `tcp/src/server.rs` (the accept loop, one task per connection, shutdown),
//! `tcp/src/server/connection.rs` (echo with batched answers, limits),
//! `tcp/src/server/chat.rs` (one line to every other client), then
//! `tcp/src/bin/tcp_client.rs` and `tcp/src/client.rs`; for `--stdio` and
//! `-x`, `tcp/src/server/stdio.rs` and `tcp/src/hexdump.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use networking_protocols::tls::server::ServerTlsArgs;
use tcp::server::{self, Config, Mode};
use tokio::net::TcpListener;

/// A TCP line server: echoes every line back to its sender, or with --chat
/// relays it to every other client.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; 0.0.0.0 accepts connections from other machines too
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on the first line)
    #[arg(long, default_value_t = 9999)]
    port: u16,
    /// Relay each line to every other client, tagged with the sender's address
    #[arg(long)]
    chat: bool,
    /// Longest line accepted, in bytes; a longer one gets an error and the connection closes
    #[arg(long, default_value_t = 64 * 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    max_line_bytes: usize,
    /// Most clients served at once (at most a million); one more gets "server busy" and is closed
    #[arg(long, default_value_t = 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_connections: usize,
    /// Disconnect a client that sends nothing (or reads nothing) for this many seconds
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Show every chunk received (<) and sent (>) in hex on stderr, as socat -x does
    #[arg(short = 'x', long)]
    hex_dump: bool,
    /// Serve one client as `nc -l` does: its bytes to stdout, stdin's bytes to it,
    /// no lines; then exit ("listening on" goes to stderr, stdout is the data)
    #[arg(long, conflicts_with_all = ["chat", "max_line_bytes", "max_connections", "idle_timeout_secs"])]
    stdio: bool,
    #[command(flatten)]
    tls: ServerTlsArgs,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // rustls's own warnings repeat ours (the alert a failed handshake
    // sends) or are about a client's quirks, in hex; `RUST_LOG=info` shows them.
    networking_protocols::init_logging("info,rustls=error");
    networking_protocols::exit(serve(args).await)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Every connection is an open file descriptor: we take as many as the
    // system allows this process (often 1024 until a program asks for more).
    networking_protocols::raise_open_file_limit();
    // Binding claims the address; the kernel accepts connections on it from
    // now on, even before our first `accept`, and queues them for us.
    // Certificates first: a bad --cert is reported before we take the port.
    let tls = args.tls.config()?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| networking_protocols::bind_error(addr, error))?;
    if args.stdio {
        return one_client(listener, tls, args.hex_dump).await;
    }
    // Ctrl-C and SIGTERM are ours from here on, before anyone can learn
    // where we listen: then the server runs until one of them comes, and
    // shuts down gracefully.
    let shutdown = networking_protocols::shutdown_signal();
    networking_protocols::print_listening(listener.local_addr()?);

    let config = Config {
        mode: if args.chat { Mode::Chat } else { Mode::Echo },
        max_line_bytes: args.max_line_bytes,
        max_connections: args.max_connections,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        tls,
        hex_dump: args.hex_dump,
        ..Config::default()
    };
    server::run(listener, config, shutdown).await?;
    Ok(())
}

/// `--stdio`: one client, joined to stdin and stdout (see
/// `tcp/src/server/stdio.rs`). Ctrl-C ends our input, as Ctrl-D does, and
/// we still take the rest of what the client sends; a second Ctrl-C, or
/// SIGTERM (`kill`), quits at once. Before a client comes, Ctrl-C quits.
async fn one_client(
    listener: TcpListener,
    tls: Option<std::sync::Arc<networking_protocols::tls::ServerConfig>>,
    hex_dump: bool,
) -> anyhow::Result<()> {
    // The handlers are in place before anyone can learn where we listen.
    let mut signals = Signals::install()?;
    // stdout is the client's data: the address goes to stderr.
    eprintln!("listening on {}", listener.local_addr()?);
    let input_done = tokio_util::sync::CancellationToken::new();
    let (input, output) = (tokio::io::stdin(), tokio::io::stdout());
    let session =
        server::stdio::one_client(listener, tls, hex_dump, input, output, input_done.clone());
    tokio::pin!(session);
    tokio::select! {
        biased;
        signal = signals.next() => match signal {
            Signal::Terminate => return Ok(()),
            Signal::Interrupt => {
                tracing::info!("Ctrl-C: our input ends (Ctrl-C again quits now)");
                input_done.cancel();
            }
        },
        result = &mut session => return result,
    }
    tokio::select! {
        biased;
        _ = signals.next() => Ok(()),
        result = session => result,
    }
}

/// Which signal came.
enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM, as `kill` sends.
    Terminate,
}

/// Ctrl-C and SIGTERM, told apart (`networking_protocols::shutdown_signal`
/// takes either as "stop").
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}
