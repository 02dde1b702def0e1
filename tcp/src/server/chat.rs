//! Chat mode: every line from one client goes to all the others.
//!
//! A [`broadcast`] channel is a queue that every connection reads at its own
//! pace: each line is stored once, and each receiver keeps its own position.
//! <https://docs.rs/tokio/latest/tokio/sync/broadcast/index.html>

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::connection::{Connection, End, is_tls_hello, next_line};
use super::stream::Split;
use crate::LineError;

/// A line on its way through the chat, with who sent it (so the sender's own
/// task can skip it).
#[derive(Debug, Clone)]
pub(super) struct ChatLine {
    pub(super) from: SocketAddr,
    pub(super) text: Bytes,
}

impl<S: Split> Connection<S> {
    /// Chat: lines from this client go to the others; lines from the others
    /// come to this client, as they happen, in any order with its own input.
    pub(super) async fn chat(&mut self, chat: broadcast::Sender<ChatLine>) -> End {
        let mut others = chat.subscribe();
        let peer = self.peer;
        let say = |text: String| ChatLine {
            from: peer,
            text: Bytes::from(text),
        };
        // `send` fails only when nobody listens, which is fine for a chat.
        let _ = chat.send(say(format!("[server] {peer} joined\n")));
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let end = loop {
            tokio::select! {
                () = self.stop.cancelled() => break End::Shutdown,
                () = &mut idle => break End::Idle,
                next = next_line::<S>(&mut self.lines) => match next {
                    Some(Ok(line)) if self.count == 0 && is_tls_hello(&line) => {
                        break End::TlsClient;
                    }
                    Some(Ok(line)) => {
                        self.count += 1;
                        // A fresh timer: unlike `now + idle_timeout`, `sleep`
                        // accepts any duration, even one past the clock's end.
                        idle.set(tokio::time::sleep(self.idle_timeout));
                        let mut text = format!("[{peer}] ").into_bytes();
                        text.extend_from_slice(&line);
                        if !text.ends_with(b"\n") {
                            text.push(b'\n');
                        }
                        let _ = chat.send(ChatLine { from: peer, text: Bytes::from(text) });
                    }
                    None => break End::ClientClosed,
                    Some(Err(error)) => break End::from(error),
                },
                heard = others.recv() => {
                    if let Err(end) = self.relay(heard, &mut others).await {
                        break end;
                    }
                }
            }
        };
        // At shutdown everyone leaves at once; announcing each would be noise.
        if !matches!(end, End::Shutdown) {
            let _ = chat.send(say(format!("[server] {peer} left\n")));
        }
        end
    }

    /// Writes one chat line, plus any others already waiting, in one flush.
    async fn relay(
        &mut self,
        mut heard: Result<ChatLine, broadcast::error::RecvError>,
        others: &mut broadcast::Receiver<ChatLine>,
    ) -> Result<(), End> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            let text = match heard {
                Ok(line) if line.from == self.peer => None,
                Ok(line) => Some(line.text),
                // This client reads slower than the others talk: the channel
                // dropped the oldest lines for it. Say so instead of hiding it.
                Err(RecvError::Lagged(n)) => Some(Bytes::from(format!(
                    "[server] you are reading too slowly: {n} line(s) skipped\n"
                ))),
                Err(RecvError::Closed) => return Err(End::Shutdown),
            };
            if let Some(text) = text {
                // `feed` writes out the queue when it is full.
                let fed = self.answers.feed(text);
                bounded(&self.stop, self.idle_timeout, fed).await?;
            }
            heard = match others.try_recv() {
                Ok(line) => Ok(line),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => {
                    let flushed = self.answers.flush();
                    bounded(&self.stop, self.idle_timeout, flushed).await?;
                    // All sent: a reader that now waits holds no buffer.
                    *self.answers.write_buffer_mut() = BytesMut::new();
                    return Ok(());
                }
            };
        }
    }
}

/// Waits for a write of our answers to a client. One that stops reading fills
/// its TCP window, then our send buffer, and the write waits: we give up after
/// `idle_timeout`, and at once when shutdown begins (the connection's own
/// loop cannot see shutdown while it waits here).
async fn bounded(
    stop: &CancellationToken,
    idle_timeout: Duration,
    write: impl Future<Output = Result<(), LineError>>,
) -> Result<(), End> {
    tokio::select! {
        () = stop.cancelled() => Err(End::Shutdown),
        written = timeout(idle_timeout, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::from(error)),
            Err(_) => Err(End::Idle),
        },
    }
}
