//! `mqtt_broker --tls`: MQTT over TLS on port 8883, as Mosquitto and the
//! cloud brokers serve it.
//!
//! TLS ends here. Each client's TLS connection is accepted on the public
//! port, and its decrypted bytes are carried to the front door, listening
//! on an internal loopback port, and back: the front door checks an MQTT
//! client the same way whether it came with TLS or not. (The handshake, the
//! certificate and what `--require-client-cert` adds are explained in
//! `src/tls.rs` and the README's TLS section.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use networking_protocols::tls::server::{self as tls, Handshake};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Accepts TLS clients on `listener` and carries each one's bytes to the
/// front door at `front_door`, until `shutdown` is cancelled. At most
/// `max_connections` at once; one more is closed at once (the front door's
/// own limit answers CONNACK 3 to those that get through).
pub async fn terminate(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    front_door: SocketAddr,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let tasks = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "cannot accept a TLS connection; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tls::accept(&acceptor, tcp).await {
                Handshake::Done(mut client) => {
                    let Ok(mut plain) = TcpStream::connect(front_door).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    // Both ways until either side closes, or the broker stops.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut *client, &mut plain) => {}
                        () = stop.cancelled() => {}
                    }
                }
                Handshake::NotTls(_) => warn!(
                    %peer,
                    "a client without TLS at the TLS port: it needs --tls (mosquitto_pub: \
                     --cafile) or the plaintext port"
                ),
                Handshake::Failed(why) => info!(%peer, "TLS handshake failed: {why}"),
            }
            drop(slot);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
}
