//! Accepting connections when the process runs out of file descriptors, and
//! warnings that repeat at most once a second.
//!
//! Every connection costs the server one file descriptor, and a process may
//! hold only so many (`ulimit -n`; see [`raise_open_file_limit`]). When none
//! is left, `accept` fails with `EMFILE` ("too many open files") and the
//! waiting connection stays queued in the kernel: its client has connected
//! (the kernel completed the TCP handshake) and now waits for an answer that
//! never comes. Retrying at once would fail the same way, in a busy loop.
//!
//! The way out, used by servers such as nginx and libev's users: keep one
//! descriptor in reserve. When `accept` fails for want of descriptors, we
//! close the spare, accept the waiting connection with the descriptor that
//! frees, and hand it to the server marked [`Incoming::OutOfDescriptors`], so
//! it can answer "busy" in its own protocol and close it at once. The next
//! call takes the spare back.
//!
//! [`raise_open_file_limit`]: crate::raise_open_file_limit

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// A listener that keeps answering when the process has no file descriptors
/// left; see the [module documentation](self).
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    /// The descriptor held in reserve; `None` while it is lent out (or could
    /// not be opened again yet).
    spare: Option<std::fs::File>,
    /// Accept failures, logged at most once a second.
    failures: Throttle,
}

/// A connection from [`Acceptor::accept`].
#[derive(Debug)]
pub enum Incoming {
    /// A connection to serve as usual (or to refuse at the connection limit).
    Open(TcpStream, SocketAddr),
    /// A connection accepted with the spare descriptor while the process has
    /// no other. Answer it "busy" at once, without waiting for the peer, and
    /// drop it: until then, no other connection can be accepted.
    OutOfDescriptors(TcpStream, SocketAddr),
}

/// After an accept error we cannot answer (no spare descriptor either), we
/// wait this long before trying again, so that we do not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

impl Acceptor {
    /// Wraps a bound listener and sets a descriptor aside.
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener,
            spare: open_spare(),
            failures: Throttle::default(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Never fails: errors are logged (at most once a
    /// second) and accepting goes on. Cancel-safe, so it can race a shutdown
    /// signal in `tokio::select!`.
    pub async fn accept(&mut self) -> Incoming {
        loop {
            if self.spare.is_none() {
                self.spare = open_spare();
            }
            let error = match self.listener.accept().await {
                Ok((socket, peer)) => return Incoming::Open(socket, peer),
                Err(error) => error,
            };
            if is_out_of_descriptors(&error)
                && let Some(spare) = self.spare.take()
            {
                // Closing the spare frees one descriptor: the connection
                // that failed is still queued, and takes it now.
                drop(spare);
                match self.listener.accept().await {
                    Ok((socket, peer)) => {
                        if let Some(held_back) = self.failures.allow() {
                            warn!(
                                %error,
                                held_back,
                                "out of file descriptors: refusing new connections"
                            );
                        }
                        return Incoming::OutOfDescriptors(socket, peer);
                    }
                    Err(error) => self.failed(&error),
                }
            } else {
                self.failed(&error);
            }
            // Some errors concern one connection only (the client reset it
            // before we accepted it); others last (out of memory, or out of
            // descriptors with no spare). A short pause costs little either
            // way and never spins.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn failed(&mut self, error: &io::Error) {
        if let Some(held_back) = self.failures.allow() {
            warn!(%error, held_back, "accept failed");
        }
    }
}

/// A descriptor to hold in reserve. Any kind will do; `/dev/null` is one
/// every Unix has. Elsewhere there is no descriptor limit to work around.
fn open_spare() -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        std::fs::File::open("/dev/null").ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `EMFILE`: this process holds as many descriptors as its limit allows;
/// `ENFILE`: the whole system does.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// Lets a repeated warning through at most once a second, and counts the ones
/// it held back in between: a flood of refused clients makes one log line a
/// second, not one per client.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(n)` when a line may be logged now, `n` being how many were held
    /// back since the last one; `None` when this one should stay quiet.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    /// A burst of warnings lets the first through and counts the rest.
    #[test]
    fn throttle_lets_one_line_a_second_through() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        assert_eq!(throttle.held_back, 5);
    }
}
