//! One upgraded connection: messages in, answers out, pings, and the close.
//!
//! After the upgrade, both sides may send at any moment. A session waits for
//! whichever comes first: a message from its client, a message from another
//! client (chat), the keep-alive timer, or the server shutting down. Every
//! way it can end is an [`End`], and each end closes the connection in the
//! way RFC 6455 asks for (see [`close::finish`]).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::close::{self, End};
use crate::{CloseFrame, Message, Stream};

/// What the server does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send every message back to its sender, unchanged.
    Echo,
    /// Send every message to every other client.
    Chat,
}

/// How many messages we take from the socket in a row before we look at the
/// timer, the shutdown signal and the chat again.
const BATCH: usize = 64;

type Ws = WebSocketStream<Stream>;

/// A chat message on its way to every connection, with who sent it (so the
/// sender's own session can skip it).
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub from: SocketAddr,
    pub message: Message,
}

/// What a session needs from the server.
#[derive(Debug)]
pub struct Shared {
    pub mode: Mode,
    pub ping_interval: Duration,
    /// Cancelled when the server shuts down.
    pub stop: CancellationToken,
    /// Every chat message goes through this channel.
    pub chat: broadcast::Sender<ChatMessage>,
}

/// Serves one upgraded connection until it ends, then closes it. In chat
/// mode, `chat` is this connection's place in the chat channel.
pub async fn serve(
    ws: WebSocketStream<Stream>,
    peer: SocketAddr,
    shared: &Shared,
    chat: Option<broadcast::Receiver<ChatMessage>>,
) {
    let started = Instant::now();
    info!(%peer, "connected");
    let mut session = Session {
        ws,
        peer,
        shared,
        // The upgrade itself is a sign of life: the first ping gets two
        // whole intervals to be answered.
        heard: true,
        silent_ticks: 0,
        messages: 0,
        closing: None,
    };
    let end = session.run(chat).await;
    let (messages, duration) = (session.messages, started.elapsed());
    let code = close::finish(session.ws, peer, end).await;
    info!(%peer, messages, ?duration, close = %code, "disconnected");
}

struct Session<'a> {
    ws: Ws,
    peer: SocketAddr,
    shared: &'a Shared,
    /// Whether the peer sent anything (a message, a ping, a pong) since the
    /// last tick of the keep-alive timer...
    heard: bool,
    /// ...and for how many ticks in a row it sent nothing.
    silent_ticks: u32,
    /// Messages received, for the disconnect log.
    messages: u64,
    /// The peer's Close frame, once it arrives (it may carry no code).
    closing: Option<Option<CloseFrame>>,
}

impl Session<'_> {
    async fn run(&mut self, mut chat: Option<broadcast::Receiver<ChatMessage>>) -> End {
        let period = self.shared.ping_interval;
        let mut pings = interval_at(Instant::now() + period, period);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if chat.is_some() {
            // Chat lines are tagged with their sender's address, and a client
            // cannot see its own (a browser's page never learns its port):
            // we tell it, so it can tell its own lines from the others'.
            let welcome = format!("[server] you are {}", self.peer);
            if let Err(end) = self.send(Message::text(welcome)).await {
                return end;
            }
            self.say(format!("[server] {} joined", self.peer));
        }
        // We make the shutdown wait once, outside the loop: making it
        // registers us with the token, which is worth doing once, not once
        // per message.
        let shared = self.shared;
        let stopped = shared.stop.cancelled();
        tokio::pin!(stopped);
        let mut batch = 0;
        let end = loop {
            // Answers are batched: while more messages are already waiting we
            // only queue answers in tungstenite's write buffer, and write them
            // all (`flush`, one system call) when the input runs dry.
            // `now_or_never` asks "is another message ready right now?"
            // without waiting.
            let ready = if batch < BATCH && !self.shared.stop.is_cancelled() {
                self.ws.next().now_or_never()
            } else {
                None
            };
            batch += 1;
            let next = match ready {
                Some(next) => next,
                None => {
                    batch = 0;
                    if let Err(end) = self.flush().await {
                        break end;
                    }
                    // `select!` waits for whichever comes first.
                    // https://docs.rs/tokio/latest/tokio/macro.select.html
                    tokio::select! {
                        next = self.ws.next() => next,
                        _ = pings.tick() => match self.keep_alive().await {
                            Ok(()) => continue,
                            Err(end) => break end,
                        },
                        heard = hear(&mut chat) => match self.relay(heard).await {
                            Ok(()) => continue,
                            Err(end) => break end,
                        },
                        () = &mut stopped => break End::Shutdown,
                    }
                }
            };
            match next {
                Some(Ok(message)) => {
                    self.heard = true;
                    if let Err(end) = self.on_message(message).await {
                        break end;
                    }
                }
                // The stream ends after tungstenite has sent its answer to
                // the peer's Close frame.
                None => break End::PeerClosed(self.closing.take().flatten()),
                Some(Err(error)) => break End::from(error),
            }
        };
        if chat.is_some() {
            self.say(format!("[server] {} left", self.peer));
        }
        end
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        match (message, self.shared.mode) {
            // After a Close, the peer's data is not answered: we may not send.
            (Message::Text(_) | Message::Binary(_), _) if self.closing.is_some() => Ok(()),
            // Echo: the same message goes back, text as text, bytes as bytes.
            (message @ (Message::Text(_) | Message::Binary(_)), Mode::Echo) => {
                self.messages += 1;
                self.send(message).await
            }
            // Chat: text is tagged with the sender; bytes travel as they are.
            (Message::Text(text), Mode::Chat) => {
                self.messages += 1;
                self.say(format!("[{}] {}", self.peer, text.as_str()));
                Ok(())
            }
            (message @ Message::Binary(_), Mode::Chat) => {
                self.messages += 1;
                let _ = self.shared.chat.send(ChatMessage {
                    from: self.peer,
                    message,
                });
                Ok(())
            }
            // tungstenite has already queued the Pong (and for a Close, our
            // answering Close); it goes out with our next read or flush. The
            // trap: it answers pings only while someone reads.
            (Message::Ping(_) | Message::Pong(_) | Message::Frame(_), _) => Ok(()),
            (Message::Close(frame), _) => {
                self.closing = Some(frame);
                Ok(())
            }
        }
    }

    /// Puts a text message in the chat, for everyone but us.
    fn say(&self, text: String) {
        // `send` fails only when nobody listens, which is fine for a chat.
        let _ = self.shared.chat.send(ChatMessage {
            from: self.peer,
            message: Message::text(text),
        });
    }

    /// Passes on what another client said.
    async fn relay(&mut self, heard: Result<ChatMessage, RecvError>) -> Result<(), End> {
        match heard {
            _ if self.closing.is_some() => Ok(()),
            Ok(chat) if chat.from == self.peer => Ok(()),
            Ok(chat) => self.send(chat.message).await,
            // This client reads slower than the others talk: the channel
            // dropped the oldest messages for it. Say so instead of hiding it.
            Err(RecvError::Lagged(n)) => {
                let notice = format!("[server] you are reading too slowly: {n} message(s) skipped");
                self.send(Message::text(notice)).await
            }
            Err(RecvError::Closed) => Err(End::Shutdown),
        }
    }

    /// Pings the peer, or gives up on it. A live peer answers a Ping with a
    /// Pong; one that sent nothing at all for two intervals is gone (its
    /// machine crashed, its network dropped) even if TCP has not noticed.
    async fn keep_alive(&mut self) -> Result<(), End> {
        if self.closing.is_some() {
            return Ok(());
        }
        self.silent_ticks = if self.heard { 0 } else { self.silent_ticks + 1 };
        self.heard = false;
        if self.silent_ticks >= 2 {
            return Err(End::Dead);
        }
        self.send(Message::Ping(Bytes::new())).await
    }

    /// Queues a message in tungstenite's write buffer.
    async fn send(&mut self, message: Message) -> Result<(), End> {
        self.write_step(|ws, cx| ws.poll_ready_unpin(cx)).await?;
        self.ws.start_send_unpin(message).map_err(End::from)
    }

    /// Writes every queued message to the socket.
    async fn flush(&mut self) -> Result<(), End> {
        self.write_step(|ws, cx| ws.poll_flush_unpin(cx)).await
    }

    /// Drives one write step: making room for a message, or flushing. It
    /// usually completes at once. It does not when the socket takes no more:
    /// the peer stopped reading and its TCP window filled. Then we wait, and
    /// after two ping intervals we give up on it.
    async fn write_step(
        &mut self,
        mut step: impl FnMut(&mut Ws, &mut Context<'_>) -> Poll<Result<(), WsError>>,
    ) -> Result<(), End> {
        let ws = &mut self.ws;
        let result = match poll_fn(|cx| step(ws, cx)).now_or_never() {
            Some(result) => result,
            None => {
                let stall = 2 * self.shared.ping_interval;
                tokio::select! {
                    result = timeout(stall, poll_fn(|cx| step(ws, cx))) => {
                        result.map_err(|_| End::Stalled)?
                    }
                    () = self.shared.stop.cancelled() => return Err(End::Shutdown),
                }
            }
        };
        result.map_err(End::from)
    }
}

/// The next chat message, or never (in echo mode).
async fn hear(
    chat: &mut Option<broadcast::Receiver<ChatMessage>>,
) -> Result<ChatMessage, RecvError> {
    match chat {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
