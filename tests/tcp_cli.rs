//! `tcp_server` and `tcp_client` as a user runs them: real processes, real
//! ports (picked with `--port 0`), piped stdin, stdout, stderr and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;

use common::{Process, Server, run, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::Command;

/// `tcp_client -m` sends one line and prints exactly the echoed answer.
#[tokio::test]
async fn client_message_gets_its_echo() {
    let server = Server::start("tcp_server", &[]).await;
    let (status, out, err) = run(
        "tcp_client",
        &["--port", &server.port(), "-m", "hello"],
        b"",
    )
    .await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "hello\n");
}

/// `--count` repeats the line, each answer on its own line.
#[tokio::test]
async fn client_count_repeats() {
    let server = Server::start("tcp_server", &[]).await;
    let args = [
        "--port",
        &server.port(),
        "-m",
        "tick",
        "--count",
        "3",
        "--interval-ms",
        "10",
    ];
    let (status, out, err) = run("tcp_client", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "tick\ntick\ntick\n");
}

/// Piped stdin: every line is sent, and every answer is printed before the
/// client exits at EOF (`printf 'a\nb\n' | tcp_client`).
#[tokio::test]
async fn client_pipes_stdin_and_prints_every_answer() {
    let server = Server::start("tcp_server", &[]).await;
    let (status, out, err) = run("tcp_client", &["--port", &server.port()], b"a\nb\n").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "a\nb\n");
}

/// Nobody listening: one `error:` line naming the address, exit code 1.
#[tokio::test]
async fn client_without_server_fails_clearly() {
    // A socket that is bound but not listening holds the port (no other test
    // can take it) and makes our kernel refuse connections to it.
    let held = TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = held.local_addr().expect("addr").port();
    let (status, out, err) =
        run("tcp_client", &["--port", &port.to_string(), "-m", "x"], b"").await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    assert!(
        lines[0].starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: ")),
        "{err}"
    );
}

/// A server past `--max-connections` refuses with one line and closes: the
/// client makes that line its one `error:` line, prints nothing, and exits
/// 1; a refusal is a failure. An echo of a line that merely starts like a
/// refusal, followed by more, is printed as it is.
#[tokio::test]
async fn a_refusal_is_a_failure() {
    let server = Server::start("tcp_server", &["--max-connections", "1"]).await;
    let port = server.port();
    let mut holder = Process::spawn("tcp_client", &["--port", &port]);
    holder.write_stdin(b"hold\n").await;
    assert_eq!(holder.line().await.as_deref(), Some("hold"));
    let (status, out, err) = run("tcp_client", &["--port", &port, "-m", "hi"], b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        errors,
        [format!(
            "error: 127.0.0.1:{port} refused us: server busy (1 connection); try again later"
        )]
    );
    holder.close_stdin();
    let (status, _, _) = holder.finish().await;
    assert!(status.success());

    let lookalike = "error: server busy (not really)\nsecond\n";
    let (status, out, err) = run("tcp_client", &["--port", &port], lookalike.as_bytes()).await;
    assert!(status.success(), "{err}");
    assert_eq!(out, lookalike);
}

/// Ctrl-C ends the client's input as Ctrl-D does: it half-closes (the
/// server reads EOF while stdin is still open), prints what the server sends
/// after that, and exits 0 when the server closes.
#[tokio::test]
async fn client_ctrl_c_half_closes_and_prints_the_last_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let mut client = Process::spawn("tcp_client", &["--port", &port]);
    let (mut socket, _) = within("accept", listener.accept()).await.expect("accept");
    client.write_stdin(b"hello\n").await;
    let mut hello = [0u8; 6];
    within("the client's line", socket.read_exact(&mut hello))
        .await
        .expect("read");
    assert_eq!(&hello, b"hello\n");
    client.signal("INT");
    let mut rest = Vec::new();
    within("the client's FIN", socket.read_to_end(&mut rest))
        .await
        .expect("read");
    assert_eq!(rest, b"", "nothing after the line, then EOF");
    socket.write_all(b"last words\n").await.expect("write");
    drop(socket);
    assert_eq!(client.line().await.as_deref(), Some("last words"));
    let (status, out, err) = client.finish().await;
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(out, "");
}

/// A closed stdout (as in `tcp_client | head -1`) is reported as an output
/// error, not as a failed connection.
#[tokio::test]
async fn client_reports_a_closed_output() {
    let server = Server::start("tcp_server", &[]).await;
    let mut client = Command::new(common::binary("tcp_client"))
        .args(["--port", &server.port()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tcp_client");
    // Close our end of its stdout first; only then send the line to echo.
    drop(client.stdout.take());
    let mut stdin = client.stdin.take().expect("stdin");
    within("writing stdin", stdin.write_all(b"hello\n"))
        .await
        .expect("write");
    drop(stdin);
    let output = within("the client", client.wait_with_output())
        .await
        .expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert_eq!(
        err.lines().last(),
        Some("error: cannot write output: Broken pipe (os error 32)"),
        "{err}"
    );
}

/// A port already in use: the second server explains and exits 1.
#[tokio::test]
async fn server_on_a_busy_port_fails_clearly() {
    let first = Server::start("tcp_server", &[]).await;
    let mut second = Process::spawn("tcp_server", &["--port", &first.port()]);
    assert_eq!(second.exit().await.code(), Some(1));
    let (_, out, err) = second.finish().await;
    assert_eq!(out, "");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: cannot listen on {}: Address already in use (os error 98); \
             is another server on that port? pass --port",
            first.addr
        )
    );
}

/// Ctrl-C (SIGINT) and SIGTERM each stop the server with exit code 0, after
/// it has closed its open connections; connects and disconnects are logged.
#[tokio::test]
async fn server_stops_cleanly_on_ctrl_c_and_sigterm() {
    for signal in ["INT", "TERM"] {
        let server = Server::start("tcp_server", &[]).await;
        let socket = within("connect", TcpStream::connect(server.addr))
            .await
            .expect("connect");
        let mut conn = BufReader::new(socket);
        conn.get_mut().write_all(b"hi\n").await.expect("write");
        let mut answer = String::new();
        within("echo", conn.read_line(&mut answer))
            .await
            .expect("read");
        assert_eq!(answer, "hi\n");
        let process = server.process;
        process.signal(signal);
        // The server closes our connection (EOF) as part of shutting down.
        answer.clear();
        within("close", conn.read_line(&mut answer))
            .await
            .expect("read");
        assert_eq!(answer, "");
        drop(conn);
        let (status, _, err) = process.finish().await;
        assert_eq!(status.code(), Some(0), "SIG{signal}; stderr: {err}");
        assert!(err.contains(" connected peer=127.0.0.1:"), "{err}");
        assert!(err.contains(" disconnected peer=127.0.0.1:"), "{err}");
    }
}

/// `--chat` through the real binaries: what one client sends, the other
/// prints, tagged with the sender's address.
#[tokio::test]
async fn chat_between_two_real_clients() {
    let server = Server::start("tcp_server", &["--chat"]).await;
    let port = server.port();
    let mut alice = Process::spawn("tcp_client", &["--port", &port]);
    let mut bob = Process::spawn("tcp_client", &["--port", &port]);
    // Each hears the other join; the first to join hears it on its stdout.
    let joined = within("a join", async {
        tokio::select! {
            line = alice.line() => ("alice", line),
            line = bob.line() => ("bob", line),
        }
    })
    .await;
    let (listener, speaker) = match joined {
        ("alice", Some(line)) if line.ends_with(" joined") => (alice, bob),
        ("bob", Some(line)) if line.ends_with(" joined") => (bob, alice),
        other => panic!("expected a join notice, got {other:?}"),
    };
    let (mut listener, mut speaker) = (listener, speaker);
    speaker
        .write_stdin(b"hello from the other terminal\n")
        .await;
    let heard = listener.line().await.expect("a chat line");
    assert!(heard.starts_with("[127.0.0.1:"), "{heard}");
    assert!(
        heard.ends_with("] hello from the other terminal"),
        "{heard}"
    );
    speaker.close_stdin();
    let (status, out, err) = speaker.finish().await;
    assert!(status.success(), "stderr: {err}");
    assert!(
        !out.contains("hello from the other terminal"),
        "the sender hears no echo: {out}"
    );
    listener.close_stdin();
    assert!(listener.finish().await.0.success());
}

/// An idle timeout of 0 would drop every client at once: it is refused as a
/// bad flag (clap's exit code 2) instead.
#[tokio::test]
async fn server_refuses_a_zero_idle_timeout() {
    let (status, out, err) = run("tcp_server", &["--idle-timeout-secs", "0"], b"").await;
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert_eq!(out, "");
    assert!(
        err.starts_with("error: invalid value '0' for '--idle-timeout-secs"),
        "{err}"
    );
}

/// `--help` documents every flag with its default.
#[tokio::test]
async fn help_shows_flags_and_defaults() {
    let (status, out, _) = run("tcp_server", &["--help"], b"").await;
    assert!(status.success());
    for needle in [
        "--host",
        "[default: 127.0.0.1]",
        "[default: 9999]",
        "--chat",
        "--max-line-bytes",
        "[default: 65536]",
        "--max-connections",
        "[default: 1024]",
        "--idle-timeout-secs",
        "[default: 300]",
    ] {
        assert!(
            out.contains(needle),
            "tcp_server --help lacks {needle}:\n{out}"
        );
    }
    let (status, out, _) = run("tcp_client", &["--help"], b"").await;
    assert!(status.success());
    for needle in ["--host", "--port", "--message", "--count", "--interval-ms"] {
        assert!(
            out.contains(needle),
            "tcp_client --help lacks {needle}:\n{out}"
        );
    }
}

/// A chat server's Ctrl-C is an announced, orderly end: every client prints
/// the server's `[server] shutting down` and exits 0, although its input
/// (a terminal nobody typed into) had not ended.
#[tokio::test]
async fn chat_clients_exit_0_when_the_server_shuts_down() {
    let server = Server::start("tcp_server", &["--chat"]).await;
    let port = server.port();
    let mut alice = Process::spawn("tcp_client", &["--port", &port]);
    let mut bob = Process::spawn("tcp_client", &["--port", &port]);
    // The first to connect hears the other join: then both are connected.
    let joined = within("a join", async {
        tokio::select! {
            line = alice.line() => line,
            line = bob.line() => line,
        }
    })
    .await
    .expect("a join notice");
    assert!(joined.ends_with(" joined"), "{joined}");
    let mut server = server.process;
    server.signal("INT");
    assert_eq!(server.exit().await.code(), Some(0));
    for client in [alice, bob] {
        // We keep stdin open (`Child::wait` would close it): only the
        // server ends the session.
        let mut client = client;
        let _stdin = client.child.stdin.take();
        let status = client.exit().await;
        let (_, out, err) = client.finish().await;
        assert_eq!(status.code(), Some(0), "stderr: {err}");
        assert!(out.ends_with("[server] shutting down\n"), "{out}");
        assert!(!err.contains("error:"), "{err}");
    }
}

/// A server that closes while our input goes on, without the shutdown
/// notice (here: the idle timeout, whose `error:` line is the server's data,
/// on stdout), is still an error of the client's own: exit 1.
#[tokio::test]
async fn client_reports_an_unannounced_close() {
    let server = Server::start("tcp_server", &["--idle-timeout-secs", "1"]).await;
    let mut client = Process::spawn("tcp_client", &["--port", &server.port()]);
    // We keep stdin open (`Child::wait` would close it).
    let _stdin = client.child.stdin.take();
    let status = client.exit().await;
    let (_, out, err) = client.finish().await;
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert_eq!(out, "error: idle for 1s; closing connection\n");
    assert!(
        err.ends_with(&format!(
            "error: {} closed the connection before our input ended\n",
            server.addr
        )),
        "{err}"
    );
}

/// `RUST_LOG=debug` shows the byte stream at work: three lines written at
/// once reach the server in one read of 6 bytes holding 3 line ends, and the
/// client logs the size of each read too.
#[tokio::test]
async fn debug_log_shows_each_read() {
    let mut server = Command::new(common::binary("tcp_server"))
        .args(["--port", "0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tcp_server");
    let mut stdout = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = within("listening", stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let client = Command::new(common::binary("tcp_client"))
        .args(["--port", &port])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcp_client");
    let mut stdin = client.stdin.unwrap();
    // One write of three lines; the client sends it in one write too.
    stdin.write_all(b"a\nb\nc\n").await.unwrap();
    drop(stdin);
    let mut client_err = String::new();
    let mut pipe = client.stderr.unwrap();
    within("the client's log", pipe.read_to_string(&mut client_err))
        .await
        .unwrap();
    assert!(client_err.contains(" read bytes=6"), "{client_err}");
    assert!(client_err.contains(" read bytes=0"), "{client_err}");
    let mut server_err = server.stderr.take().unwrap();
    kill_and_wait(&mut server).await;
    let mut log = String::new();
    within("the server's log", server_err.read_to_string(&mut log))
        .await
        .unwrap();
    assert!(log.contains(" read peer=127.0.0.1:"), "{log}");
    assert!(log.contains(" bytes=6 line_ends=3"), "{log}");
    assert!(log.contains(" bytes=0 line_ends=0"), "{log}");
}

async fn kill_and_wait(child: &mut tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    within("the server to exit", child.wait()).await.unwrap();
}
