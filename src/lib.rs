//! The few conventions that every binary in this workspace shares.
//!
//! Nothing here is about a protocol: each protocol's lesson lives in its own
//! crate (`tcp/`, `udp/`, `websocket/`, `mqtt/`). What lives here is what a
//! person sees the same way from all nine programs:
//!
//! - diagnostics go to stderr through [`tracing`], and `RUST_LOG` controls them
//!   ([`init_logging`]);
//! - a server announces itself with `listening on <ip:port>` as its first line
//!   on stdout, so scripts and tests can start it on port 0 and read where it is
//!   ([`print_listening`]);
//! - Ctrl-C or SIGTERM asks a program to stop cleanly ([`shutdown_signal`]);
//! - a failure prints one `error: ...` line on stderr and exits non-zero
//!   ([`exit`], and [`bind_error`] for the most common failure of all);
//! - a server may hold as many connections as the system lets it
//!   ([`raise_open_file_limit`]), and when it runs out of file descriptors it
//!   still answers new clients, with a refusal ([`accept`]);
//! - TLS, for the protocols that run on TCP, takes the same flags and explains
//!   its failures the same way everywhere ([`tls`]);
//! - a server's last words to a client (a refusal, a goodbye) are read, not
//!   lost to a reset ([`close_gently`]).

pub mod accept;
pub mod tls;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Sends diagnostics to stderr, leaving stdout for the data a program was asked
/// to show.
///
/// `default_filter` applies when `RUST_LOG` is unset; binaries pass `"info"`,
/// so a learner sees connects and disconnects without setting anything. Try
/// `RUST_LOG=debug` to see more.
pub fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    install(filter);
}

/// Like [`init_logging`], but when `RUST_LOG` is unset, `default` picks the
/// lines to show from each call site's metadata alone (target, level, name):
/// tracing asks once per call site and remembers the answer, so the lines it
/// turns off cost nothing at run time. (An `EnvFilter` that names spans, such
/// as `rumqttd[incoming_connect]=info`, must instead check every span and event
/// of that crate as it happens.)
pub fn init_logging_with(default: fn(&tracing::Metadata<'_>) -> bool) {
    match EnvFilter::try_from_default_env() {
        Ok(filter) => install(filter),
        Err(_) => install(tracing_subscriber::filter::filter_fn(default)),
    }
}

fn install<F>(filter: F)
where
    F: Filter<Registry> + Send + Sync + 'static,
{
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not for a file or a test's pipe.
        .with_ansi(std::io::stderr().is_terminal())
        // Seconds since the program started: enough to see what came when.
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(stderr).init();
}

/// Prints the first stdout line of every server: `listening on <ip:port>`.
///
/// `addr` must be the address the socket really bound (from `local_addr()`), so
/// that `--port 0`, which asks the operating system for any free port, tells
/// the user which port it got. `println!` flushes at the newline, so a script
/// reading our stdout through a pipe sees the line at once.
pub fn print_listening(addr: SocketAddr) {
    println!("listening on {addr}");
}

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the new soft limit (`None` where the platform has no such limit
/// or it cannot be read).
///
/// Every connection is a file descriptor, and the usual soft limit is 1024:
/// a server that keeps it cannot hold more than about a thousand clients,
/// however much memory it has. The hard limit (often 524,288 on Linux) is
/// the most an unprivileged process may raise it to. Servers call this once
/// at start, after [`init_logging`]: if the limit cannot be raised, a warning
/// says so, and the server runs with the limit it has.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    }
}

/// Explains why a server could not bind its address, with the fix where one
/// is obvious: `cannot listen on 127.0.0.1:9999: Address already in use (os
/// error 98); is another server on that port? pass --port`.
pub fn bind_error(addr: SocketAddr, error: std::io::Error) -> anyhow::Error {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => "; is another server on that port? pass --port",
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges: pass --port",
        std::io::ErrorKind::AddrNotAvailable => {
            "; that address is not on this machine: check --host"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr}: {error}{hint}")
}

/// Resolves when the user asks the program to stop: Ctrl-C (SIGINT) in the
/// terminal, or SIGTERM from `kill` or a service manager.
///
/// The handlers are installed when this function is called, not when the
/// future is first polled: until a handler is installed, the signal's default
/// action applies and kills the process. So a server calls this *before* it
/// prints `listening on`, since from that line on a script may signal it.
/// Servers then race the future against their accept loop with
/// `tokio::select!`, so they can stop accepting, let open connections finish,
/// and exit 0. Call it from inside the tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // If a handler cannot be installed, that branch never resolves and
        // the signal keeps its default action (ending the process).
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let ctrl_c = async {
                match interrupt {
                    Ok(mut signal) => signal.recv().await,
                    Err(_) => std::future::pending().await,
                }
            };
            let term = async {
                match terminate {
                    Ok(mut signal) => signal.recv().await,
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
                _ = term => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// The last thing every `main` does: turns the program's result into an exit
/// status, printing `error: <what failed>: <cause>` for a failure.
///
/// `{:#}` prints an [`anyhow::Error`] with its whole chain of causes on one
/// line, e.g. `error: cannot listen on 127.0.0.1:9999: Address already in use
/// (os error 98); is another server on that port? pass --port`.
///
/// We end the process here rather than returning from `main`: a program that
/// reads stdin has a read parked on a blocking thread, and tokio's runtime
/// would wait for that read (for the user to press Enter) before letting the
/// process go.
pub fn exit(result: anyhow::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    // `std::process::exit` skips destructors, so flush stdout ourselves.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// How long a server waits, after its last words to a client, for the
/// client to close first (see [`close_gently`]).
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Closes a connection without losing what we sent it.
///
/// Closing a socket while the client's bytes still sit unread in our receive
/// buffer makes the kernel answer with a reset (RST) instead of a normal
/// close (FIN), and a reset can destroy our last words before the client
/// reads them. So we close our sending side (with TLS, after `close_notify`),
/// then read and discard whatever the client still sends until it closes
/// too, for at most [`LINGER`].
pub async fn close_gently(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, async {
        stream.shutdown().await?;
        // On the heap, not in the future: every connection's task is as large
        // as its largest future, and most connections never come here.
        let mut sink = vec![0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
