//! # websocket_server: an echo (or chat) server that a browser can talk to
//!
//! WebSocket gives a browser and a server one long-lived connection on which
//! both send *messages* whenever they like. It starts as an HTTP request that
//! asks to "upgrade"; once the server agrees (`101 Switching Protocols`) the
//! same TCP connection carries framed messages, text or binary, in both
//! directions at once, plus small control frames: ping and pong to check the
//! peer is alive, and close, with a code that says why the connection ends.
//!
//! This server sends every message back to its sender, unchanged (text as
//! text, bytes as bytes). With `--chat`, every message goes to every other
//! client instead. Open `http://127.0.0.1:8765/` in a browser for a page that
//! talks to it.
//!
//! ## Try it
//!
//! Terminal 1 starts the server; it prints `listening on 127.0.0.1:8765`:
//!
//! ```text
//! cargo run -p websocket --bin websocket_server
//! ```
//!
//! Terminal 2 connects; type lines and each comes back (Ctrl-D to finish):
//!
//! ```text
//! cargo run -p websocket --bin websocket_client
//! ```
//!
//! A chat on another port:
//!
//! ```text
//! cargo run -p websocket --bin websocket_server -- --chat --port 9000
//! ```
//!
//! then open `http://127.0.0.1:9000/` in two browser tabs, or run
//! `cargo run -p websocket --bin websocket_client -- --url ws://127.0.0.1:9000`
//! in two terminals. What one types, the others see as
//! `[127.0.0.1:50312] hello`. Terminal 1 logs each connect and disconnect with
//! its close code; Ctrl-C there sends every client Close 1001 and exits.
//!
//! Any web page you visit could try to open `ws://127.0.0.1:8765/` from your
//! browser; the server lets in only its own page (and programs, which send no
//! `Origin` header). Another site's page gets `403 Forbidden`, and terminal 1
//! logs why; `--allow-origin http://localhost:3000` lets that page in too.
//!
//! With `--tls`, the same over TLS: the page at `https://localhost:8765/`
//! connects with `wss://`. The server makes a local certificate authority
//! once and logs where its `ca.pem` is; a browser warns about it unless you
//! import that CA (or click through).
//!
//! ## Read next
//!
//! `websocket/src/server.rs` (one task per connection, the connection limit,
//! shutdown), `websocket/src/http.rs` (the upgrade), `websocket/src/origin.rs`
//! (which pages may connect), `websocket/src/session.rs` (one connection:
//! echo, chat, pings, closing), `websocket/src/close.rs` (close codes), then
//! `websocket/src/bin/websocket_client.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use networking_protocols::tls::server::ServerTlsArgs;
use tokio::net::TcpListener;
use websocket::origin::{self, AllowedOrigins};
use websocket::server::{self, Config, Mode};

/// A WebSocket server: echoes every message back to its sender, or with
/// --chat relays it to every other client; serves a browser page at /.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; 0.0.0.0 accepts connections from other machines too
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on the first line)
    #[arg(long, default_value_t = websocket::DEFAULT_PORT)]
    port: u16,
    /// Relay each message to every other client instead of echoing it
    #[arg(long)]
    chat: bool,
    /// Largest message accepted, in bytes; a larger one gets Close 1009
    #[arg(long, default_value_t = 1024 * 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    max_message_bytes: usize,
    /// Most connections at once (at most a million); one more gets HTTP 503 instead of an upgrade
    #[arg(long, default_value_t = 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_connections: usize,
    /// Ping every client this often (at most once a day); one silent for two intervals is dropped
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ping_interval_secs: u64,
    /// Also accept WebSockets opened by web pages from this origin
    /// (http://host:port; repeat for more; '*' accepts every page). Pages of
    /// this server and programs that send no Origin are always accepted
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = origin::parse)]
    allow_origins: Vec<String>,
    /// A subprotocol we speak (repeatable): of those a client offers
    /// (Sec-WebSocket-Protocol), the first we speak is agreed on; none, and
    /// the client decides whether to go on
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
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
    // Certificates first: a bad --cert is reported before we take the port.
    let tls = args.tls.config()?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| networking_protocols::bind_error(addr, error))?;
    // Ctrl-C and SIGTERM are ours before anyone can learn where we listen.
    let shutdown = networking_protocols::shutdown_signal();
    networking_protocols::print_listening(listener.local_addr()?);

    let config = Config {
        mode: if args.chat { Mode::Chat } else { Mode::Echo },
        max_message_bytes: args.max_message_bytes,
        max_connections: args.max_connections,
        ping_interval: Duration::from_secs(args.ping_interval_secs),
        allowed_origins: AllowedOrigins::new(args.allow_origins),
        protocols: args.protocols,
        tls,
        ..Config::default()
    };
    // The server runs until Ctrl-C or SIGTERM, then closes every connection
    // with 1001 ("going away") and exits.
    server::run(listener, config, shutdown).await?;
    Ok(())
}
