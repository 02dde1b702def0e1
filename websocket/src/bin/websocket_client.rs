//! # websocket_client: a full-duplex WebSocket client, like a small `websocat`
//!
//! Once the HTTP upgrade is done, a WebSocket carries whole messages both
//! ways at the same time. This client sends each line you type (or pipe in)
//! as one text message while printing every message from the server as it
//! arrives, one per line: text as it is, binary messages as hex. At the end of
//! your input it waits for the answers, sends Close 1000, waits for the
//! server's Close, and exits.
//!
//! ## Try it
//!
//! Terminal 1: `cargo run -p websocket --bin websocket_server`
//!
//! Terminal 2, one message and its answer:
//!
//! ```text
//! cargo run -p websocket --bin websocket_client -- -m hello
//! ```
//!
//! or type lines yourself (Ctrl-D ends input), or pipe them in:
//! `printf 'a\nb\n' | cargo run -p websocket --bin websocket_client` prints
//! `a` and `b`. `-m hi --binary` sends bytes and prints `6869`;
//! `-m ping --count 5 --interval-ms 200` sends five messages 200 ms apart.
//!
//! Press Ctrl-C in terminal 1 while the client is connected: the client
//! logs `server closed the connection: 1001 (going away) "server shutting
//! down"`. Run it with `--url ws://127.0.0.1:8765/nope` to see a server that
//! refuses to upgrade (HTTP 404).
//!
//! WebSocket over TLS: start the server with `--tls` and connect to
//! `--url wss://localhost:8765 --cafile <the ca.pem the server printed>`.
//!
//! ## Read next
//!
//! `websocket/src/client.rs`: splitting one connection into a sending and a
//! receiving half, and the closing handshake.

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use networking_protocols::tls::client::ClientTlsArgs;
use tracing::info;
use websocket::client::{self, Ending};
use websocket::{CloseCode, CloseFrame, close};

/// A WebSocket client: sends lines from stdin (or one message with -m) and
/// prints every message from the server, until the connection closes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server to connect to
    #[arg(long, default_value = "ws://127.0.0.1:8765")]
    url: String,
    /// Send this one message instead of reading stdin, print the answer, exit
    #[arg(short, long)]
    message: Option<String>,
    /// With -m: send the message this many times
    #[arg(long, default_value_t = 1, requires = "message", value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// With -m and --count: wait this long between messages
    #[arg(long, default_value_t = 1000, requires = "message")]
    interval_ms: u64,
    /// Send binary messages (the line's bytes) instead of text
    #[arg(long)]
    binary: bool,
    /// At the end of input, stop waiting for answers once none has come for this long
    #[arg(long, default_value_t = 1000)]
    answer_wait_ms: u64,
    /// Give up connecting after this many seconds
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout_secs: u64,
    /// Add a header to the upgrade request, as 'Name: value' (repeatable):
    /// an Authorization token, a Cookie
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// Offer a subprotocol (Sec-WebSocket-Protocol; repeatable, in order of
    /// preference); the server picks one or none
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// TLS options, for a wss:// URL
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Parses `-H 'Name: value'`, splitting at the first colon.
fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err("expected 'Name: value', like 'Authorization: Bearer abc'".to_string()),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging("info");
    networking_protocols::exit(talk(args).await)
}

async fn talk(args: Args) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.connect_timeout_secs);
    let upgrade = client::Upgrade {
        headers: args.headers.clone(),
        protocols: args.protocols.clone(),
    };
    let socket = client::connect_with(&args.url, wait, &args.tls, &upgrade).await?;
    // Our own address is what a chat server tags our messages with.
    let local = socket.get_ref().tcp().local_addr()?;
    info!("connected to {} from {local}", args.url);

    let stdout = tokio::io::stdout();
    let answer_wait = Duration::from_millis(args.answer_wait_ms);
    // Ctrl-C sends Close 1001 ("going away") and still waits for the answer.
    let stop = networking_protocols::shutdown_signal();
    let ending = match &args.message {
        Some(text) => {
            let interval = Duration::from_millis(args.interval_ms);
            let input = client::repeat(text, args.binary, args.count, interval);
            client::run(socket, input, stdout, answer_wait, stop).await
        }
        None => {
            let input = client::lines(tokio::io::stdin(), args.binary);
            client::run(socket, input, stdout, answer_wait, stop).await
        }
    };
    // The exit status tells a script how the server ended the conversation.
    match ending.map_err(|error| error.context(format!("connection to {}", args.url)))? {
        Ending::WeClosed(frame) => info!("closed: server answered {}", show(&frame)),
        Ending::ServerClosed(Some(frame)) if is_polite(frame.code) => {
            info!("server closed the connection: {}", show(&Some(frame)));
        }
        Ending::ServerClosed(frame) => {
            bail!("{} closed the connection: {}", args.url, show(&frame))
        }
    }
    Ok(())
}

/// 1000 (normal) and 1001 (going away) end a conversation without a fault.
fn is_polite(code: CloseCode) -> bool {
    matches!(code, CloseCode::Normal | CloseCode::Away)
}

/// A Close frame's code and reason: `1009 (message too big) "..."`.
fn show(frame: &Option<CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => close::describe(frame.code),
        Some(frame) => format!(
            "{} {:?}",
            close::describe(frame.code),
            frame.reason.as_str()
        ),
        None => "a Close frame without a code".to_string(),
    }
}
