//! WebSocket, taught by an echo/chat server (with a browser page) and a
//! full-duplex client.
//!
//! A WebSocket connection starts life as an HTTP request. The client asks to
//! "upgrade" the TCP connection; the server agrees with `101 Switching
//! Protocols`, and from then on both sides send *messages* (text or binary),
//! each framed with its length, in both directions at once. Small control
//! frames travel in between: ping and pong check that the peer is alive, and
//! close ends the conversation with a numeric code that says why.
//!
//! The binaries in `src/bin/` are the story a learner reads first; this
//! library is the machinery they share with the tests:
//!
//! - [`http`] reads the HTTP request and either upgrades it or answers it
//!   (the browser page, a 404, a refusal);
//! - [`origin`] decides which web pages may open a WebSocket here;
//! - [`server::run`] accepts connections until told to stop;
//! - [`session`] is one upgraded connection: echo or chat, keep-alive pings,
//!   and the closing handshake;
//! - [`close`] is how a connection ends: which close code tells the peer
//!   why, and the closing handshake;
//! - [`client`] connects to a `ws://` URL and moves messages both ways.
//!
//! The protocol itself (framing, masking, UTF-8 checks, answering pings) is
//! done by [tungstenite](https://docs.rs/tungstenite), through its tokio
//! adapter [tokio-tungstenite](https://docs.rs/tokio-tungstenite).

pub mod client;
pub mod close;
pub mod http;
pub mod origin;
pub mod server;
pub mod session;

/// The port the server listens on and the client connects to by default.
pub const DEFAULT_PORT: u16 = 8765;

/// A connection the server serves: plain TCP (`ws://`, the page over
/// `http://`), or TLS over TCP (`wss://`, `https://`). The TLS side is boxed:
/// its session state is large, and plain connections need not carry room
/// for it.
pub type Stream = tokio_util::either::Either<
    tokio::net::TcpStream,
    Box<networking_protocols::tls::server::TlsStream<tokio::net::TcpStream>>,
>;

pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
