//! `tcp_server --stdio`: one client, joined to our standard input and
//! output, as `nc -l` does.
//!
//! No lines here: the client's bytes go to stdout exactly as they arrive,
//! and stdin's bytes go to the client exactly as we read them, so
//! `tcp_server --stdio > copy` receives a file that a client sends, and
//! `tcp_server --stdio < file` hands one out, byte for byte.
//!
//! The two directions end separately, which is what TCP's half-close is
//! for. When the client closes its sending side (its FIN), we have
//! everything it will send; when our stdin ends, we have sent everything
//! we will send. Only when both have happened do we close the connection.
//! We do not send our FIN when our stdin ends, as OpenBSD's `nc -l` does
//! not without `-N` (ncat and GNU netcat do): many
//! clients (`tcp_client` among them) take a FIN that comes while they are
//! still sending as the end of the conversation, and a client still
//! sending a file would stop halfway.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use networking_protocols::tls::server::Handshake;
use networking_protocols::tls::{ServerConfig, TlsAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::io::{InspectReader, InspectWriter};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::close_gently;
use crate::TLS_ONLY_NOTICE;
use crate::hexdump::Dump;

/// How many bytes we move at a time, in each direction.
const CHUNK_BYTES: usize = 8 * 1024;

/// Waits for one client on `listener` (over TLS with `tls`), then copies its
/// bytes to `output` and `input`'s bytes to it until both directions have
/// ended (see the module's doc). The listener closes once a client is
/// served: later clients are refused by the kernel. `input_done` ends our
/// input early, as if it had ended (Ctrl-C); before a client comes, it ends
/// the wait, and we return `Ok`. With `hex_dump`, both
/// directions are also shown in hex on stderr (`-x`).
///
/// A client that fails its TLS handshake, or speaks plain TCP to a TLS
/// server, is refused with a log line, and we wait for the next.
///
/// Errors: accepting failed, the connection broke (reset), or writing
/// `output` failed. A client that goes away while our input still has bytes
/// is an error too: those bytes were not delivered.
pub async fn one_client<I, O>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    hex_dump: bool,
    input: I,
    output: O,
    input_done: CancellationToken,
) -> anyhow::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            () = input_done.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            // A client that gave up while queued: wait for the next.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error).context("cannot accept"),
        };
        info!(%peer, "connected");
        let Some(acceptor) = &acceptor else {
            drop(listener);
            return copy_both_ways(socket, peer, hex_dump, input, output, input_done).await;
        };
        match networking_protocols::tls::server::accept(acceptor, socket).await {
            Handshake::Done(tls) => {
                drop(listener);
                return copy_both_ways(*tls, peer, hex_dump, input, output, input_done).await;
            }
            Handshake::NotTls(socket) => {
                warn!(%peer, "refused: not TLS, and this server speaks TLS only");
                let dump = hex_dump.then(|| Dump::sent(peer));
                close_gently(socket, TLS_ONLY_NOTICE.into(), dump).await;
            }
            Handshake::Failed(why) => warn!(%peer, "TLS handshake failed: {why}"),
        }
    }
}

/// The session: both directions at once, each ending on its own.
async fn copy_both_ways<S, I, O>(
    stream: S,
    peer: SocketAddr,
    hex_dump: bool,
    mut input: I,
    mut output: O,
    input_done: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    info!("one client only: the port is closed now");
    let (from_client, to_client) = tokio::io::split(stream);
    let mut received = hex_dump.then(|| Dump::received(peer));
    let mut from_client = InspectReader::new(from_client, move |bytes: &[u8]| {
        if let Some(dump) = &mut received {
            dump.chunk(bytes);
        }
    });
    let mut sent = hex_dump.then(|| Dump::sent(peer));
    let mut to_client = InspectWriter::new(to_client, move |bytes: &[u8]| {
        if let Some(dump) = &mut sent {
            dump.chunk(bytes);
        }
    });

    // The copying borrows both halves; the block gives them back after.
    let (received, sent) = {
        // The client's bytes to our output, each chunk flushed as it comes, so
        // a pipe on our stdout sees them at once.
        let receive = async {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let mut total = 0u64;
            loop {
                let n = from_client
                    .read(&mut chunk)
                    .await
                    .with_context(|| format!("connection to {peer} failed"))?;
                if n == 0 {
                    return Ok::<_, anyhow::Error>(total);
                }
                total += n as u64;
                output
                    .write_all(&chunk[..n])
                    .await
                    .context("cannot write output")?;
                output.flush().await.context("cannot write output")?;
            }
        };
        // Our input's bytes to the client, until it ends or is ended.
        let send = async {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let mut total = 0u64;
            loop {
                let n = tokio::select! {
                    () = input_done.cancelled() => return Ok::<_, anyhow::Error>(total),
                    n = input.read(&mut chunk) => n.context("cannot read input")?,
                };
                if n == 0 {
                    return Ok(total);
                }
                to_client.write_all(&chunk[..n]).await.with_context(|| {
                    format!("{peer} is gone; cannot send the rest of our input")
                })?;
                total += n as u64;
            }
        };
        tokio::pin!(receive, send);

        // Whichever direction ends first, we log it and wait for the other; an
        // error in either ends the session at once.
        tokio::select! {
            received = &mut receive => {
                let received = received?;
                info!(%peer, "the client has sent all it will send (FIN); we send until our input ends");
                (received, send.await?)
            }
            sent = &mut send => {
                let sent = sent?;
                info!(%peer, "our input ended; waiting for the client to finish sending");
                (receive.await?, sent)
            }
        }
    };
    // Both are done: close our side (over TLS, a close_notify alert first).
    let mut stream = from_client.into_inner().unsplit(to_client.into_inner());
    if let Err(error) = stream.shutdown().await {
        bail!("cannot close the connection to {peer}: {error}");
    }
    info!(%peer, received, sent, "disconnected");
    Ok(())
}
