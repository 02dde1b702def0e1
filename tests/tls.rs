//! TLS, as a user runs it: the real binaries with `--tls`, certificates made
//! on the spot, and every mistake's one `error:` line with its fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;
// `--issue-client-cert`, in a file of its own (tests/tls/ holds no main.rs,
// so cargo does not take it for another test).
#[path = "tls/client_cert.rs"]
mod client_cert;

use common::tls::{Ca, TempDir};
use common::{Process, Server, run, within};
use networking_protocols::tls::client::TlsStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts `tcp_server --tls` with its local certificate made in `dir`.
async fn tls_tcp_server(dir: &TempDir, extra: &[&str]) -> Server {
    let tls_dir = dir.path("local");
    let mut args = vec!["--tls", "--tls-dir", &tls_dir];
    args.extend_from_slice(extra);
    Server::start("tcp_server", &args).await
}

async fn tcp_client(server: &Server, extra: &[&str]) -> (bool, String, String) {
    let port = server.port();
    let mut args = vec!["--port", &port, "-m", "hello"];
    args.extend_from_slice(extra);
    let (status, out, err) = run("tcp_client", &args, b"").await;
    (status.success(), out, err)
}

/// The first `error:` line of a program's stderr, and that there is one only.
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0]
}

/// With its local CA passed as --cafile, a TLS client's line comes back; the
/// server made the CA once, says where, and reuses it on the next start.
#[tokio::test]
async fn tcp_echo_over_tls_with_the_local_ca() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let server = tls_tcp_server(&dir, &[]).await;
    let (ok, out, err) = tcp_client(&server, &["--tls", "--cafile", &cafile]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "hello\n");
    assert!(err.contains("TLS handshake done: TLS 1.3, TLS13_"), "{err}");
    let ca = std::fs::read(&cafile).unwrap();
    let server_log = |server: Server| async move {
        server.process.signal("INT");
        let (status, _, log) = server.process.finish().await;
        assert!(status.success(), "{log}");
        log
    };
    let log = server_log(server).await;
    assert!(
        log.contains(&format!(
            "TLS: made a local certificate for localhost, 127.0.0.1, ::1 in {}",
            dir.path("local")
        )) && log.contains(&format!("clients trust it with --cafile {cafile}")),
        "{log}"
    );

    let again = tls_tcp_server(&dir, &[]).await;
    let (ok, out, err) = tcp_client(
        &again,
        &["--tls", "--cafile", &cafile, "--host", "localhost"],
    )
    .await;
    assert!(ok && out == "hello\n", "{err}");
    assert!(
        server_log(again)
            .await
            .contains("TLS: using a local certificate")
    );
    assert_eq!(
        std::fs::read(&cafile).unwrap(),
        ca,
        "the CA is reused, not made again"
    );
}

/// Without --cafile the client trusts the system's CAs only, which did not
/// sign the local certificate: one error line says to pass --cafile, and the
/// server logs that the client did not trust it.
#[tokio::test]
async fn verification_fails_without_cafile() {
    let dir = TempDir::new();
    let server = tls_tcp_server(&dir, &[]).await;
    let (ok, out, err) = tcp_client(&server, &["--tls"]).await;
    assert!(!ok && out.is_empty());
    assert!(
        error_line(&err).contains("not signed by a CA we trust; for a local server, pass --cafile"),
        "{err}"
    );
    // --insecure gets through, with a warning that says what it gives up.
    let (ok, out, err) = tcp_client(&server, &["--tls", "--insecure"]).await;
    assert!(ok && out == "hello\n", "{err}");
    assert!(
        err.contains("--insecure: the server's certificate is not checked"),
        "{err}"
    );
    server.process.signal("INT");
    let (_, _, log) = server.process.finish().await;
    assert!(
        log.contains("the client does not trust the CA that signed our certificate"),
        "{log}"
    );
}

/// A client that trusts our CA but connects by an address the certificate
/// does not hold (127.0.0.2; the local certificate holds 127.0.0.1) is
/// refused on its side, and the server's log says it was the name, not
/// the missing --cafile.
#[tokio::test]
async fn the_server_says_when_the_name_did_not_match() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let server = tls_tcp_server(&dir, &["--host", "127.0.0.2"]).await;
    let port = server.port();
    let args = [
        "--host",
        "127.0.0.2",
        "--port",
        &port,
        "-m",
        "hello",
        "--tls",
        "--cafile",
        &cafile,
    ];
    let (status, out, err) = run("tcp_client", &args, b"").await;
    assert!(!status.success() && out.is_empty(), "{err}");
    server.process.signal("INT");
    let (_, _, log) = server.process.finish().await;
    assert!(
        log.contains("the client refused our certificate (alert: BadCertificate): most likely it connected by a name"),
        "{log}"
    );
}

/// A certificate for another name, or one that has expired, is refused with
/// its own explanation.
#[tokio::test]
async fn name_mismatch_and_expiry_are_explained() {
    let dir = TempDir::new();
    let ca = Ca::new(&dir, "ca");
    let (cert, key) = ca.issue("elsewhere", &["elsewhere.example"], false);
    let server = Server::start("tcp_server", &["--tls", "--cert", &cert, "--key", &key]).await;
    let (ok, _, err) = tcp_client(&server, &["--tls", "--cafile", &ca.cafile()]).await;
    assert!(!ok);
    assert!(
        error_line(&err).contains("the server's certificate is not for \"127.0.0.1\""),
        "{err}"
    );

    let (cert, key) = ca.issue("old", &["127.0.0.1"], true);
    let server = Server::start("tcp_server", &["--tls", "--cert", &cert, "--key", &key]).await;
    let (ok, _, err) = tcp_client(&server, &["--tls", "--cafile", &ca.cafile()]).await;
    assert!(!ok);
    assert!(
        error_line(&err).contains("the server's certificate has expired"),
        "{err}"
    );
}

/// Mutual TLS: with --require-client-cert, a client without a certificate is
/// refused (and told to pass --cert and --key), one with a certificate from
/// another CA too, and one with a certificate from that CA gets its echo.
#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = TempDir::new();
    let clients = Ca::new(&dir, "clients");
    let server = tls_tcp_server(&dir, &["--require-client-cert", &clients.cafile()]).await;
    let cafile = dir.path("local/ca.pem");

    let (ok, out, err) = tcp_client(&server, &["--tls", "--cafile", &cafile]).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        error_line(&err).contains("asks for a client certificate; pass --cert and --key"),
        "{err}"
    );

    let strangers = Ca::new(&dir, "strangers");
    let (cert, key) = strangers.issue("stranger", &["stranger"], false);
    let args = ["--tls", "--cafile", &cafile, "--cert", &cert, "--key", &key];
    let (ok, out, err) = tcp_client(&server, &args).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        error_line(&err).contains("the server refused our certificate"),
        "{err}"
    );

    let (cert, key) = clients.issue("alice", &["alice"], false);
    let args = ["--tls", "--cafile", &cafile, "--cert", &cert, "--key", &key];
    let (ok, out, err) = tcp_client(&server, &args).await;
    assert!(ok && out == "hello\n", "{err}");

    server.process.signal("INT");
    let (_, _, log) = server.process.finish().await;
    assert!(log.contains("the client sent no certificate"), "{log}");
    assert!(
        log.contains("not signed by the --require-client-cert CA"),
        "{log}"
    );
}

/// A plaintext client at a TLS port is told, in a line it can read, to use
/// --tls; a TLS client at a plaintext port is told the server does not seem
/// to speak TLS. Both servers log why, and keep serving.
#[tokio::test]
async fn plaintext_and_tls_mixed_up_are_explained_on_both_sides() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let tls_server = tls_tcp_server(&dir, &[]).await;
    // The server's line is the client's one error, and a failure.
    let (ok, out, err) = tcp_client(&tls_server, &[]).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        error_line(&err).ends_with("refused us: this server speaks TLS; connect with --tls"),
        "{err}"
    );
    let (ok, out, err) = tcp_client(&tls_server, &["--tls", "--cafile", &cafile]).await;
    assert!(ok && out == "hello\n", "{err}");

    let plain_server = Server::start("tcp_server", &[]).await;
    let (ok, out, err) = tcp_client(&plain_server, &["--tls", "--cafile", &cafile]).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        error_line(&err)
            .contains("does it speak TLS? (start it with --tls, or connect without TLS)"),
        "{err}"
    );
    let (ok, out, err) = tcp_client(&plain_server, &[]).await;
    assert!(ok && out == "hello\n", "{err}");

    for (server, says) in [
        (
            tls_server,
            "refused: not TLS, and this server speaks TLS only",
        ),
        (
            plain_server,
            "refused: a TLS handshake, and this server speaks plain TCP (start it with --tls)",
        ),
    ] {
        server.process.signal("INT");
        let (_, _, log) = server.process.finish().await;
        assert!(log.contains(says), "{log}");
    }
}

/// Certificate files that are missing, not certificates, or a key that does
/// not belong to its certificate: one error line before listening, exit 1.
#[tokio::test]
async fn bad_certificate_files_are_one_error_line() {
    let dir = TempDir::new();
    let ca = Ca::new(&dir, "ca");
    let (cert, key) = ca.issue("server", &["localhost"], false);
    let (_, other_key) = ca.issue("other", &["localhost"], false);
    let missing = dir.path("missing.pem");
    let not_pem = dir.path("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--cert", &missing, "--key", &key], "cannot read --cert"),
        (&["--cert", &not_pem, "--key", &key], "no certificate in it"),
        (&["--cert", &cert, "--key", &cert], "no private key in it"),
        (
            &["--cert", &cert, "--key", &other_key],
            "does not belong to the certificate in --cert",
        ),
        (
            &["--require-client-cert", &missing],
            "cannot read --require-client-cert",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["--port", "0", "--tls"];
        all.extend_from_slice(args);
        let (status, out, err) = run("tcp_server", &all, b"").await;
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        assert!(out.is_empty(), "no listening line: {out}");
        assert!(error_line(&err).contains(says), "{args:?}: {err}");
    }
    // The client's own files are checked the same way, before connecting.
    let args = ["--port", "1", "--tls", "--cert", &cert, "--key", &other_key];
    let (status, _, err) = run("tcp_client", &args, b"").await;
    assert_eq!(status.code(), Some(1));
    assert!(
        error_line(&err).contains("does not belong to the certificate"),
        "{err}"
    );
    let (status, _, err) = run("tcp_client", &["--port", "1", "--cafile", &missing], b"").await;
    assert_eq!(status.code(), Some(1));
    assert!(
        error_line(&err).contains("--cafile is a TLS option: add --tls"),
        "{err}"
    );
}

/// Starts `websocket_server --tls` with its local certificate made in `dir`.
async fn tls_websocket_server(dir: &TempDir, extra: &[&str]) -> Server {
    let tls_dir = dir.path("local");
    let mut args = vec!["--tls", "--tls-dir", &tls_dir];
    args.extend_from_slice(extra);
    Server::start("websocket_server", &args).await
}

async fn websocket_client(url: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["--url", url, "-m", "hello"];
    args.extend_from_slice(extra);
    let (status, out, err) = run("websocket_client", &args, b"").await;
    (status.success(), out, err)
}

/// A TLS connection to `server` from the test, trusting `cafile`.
async fn tls_connect(server: &Server, cafile: &str) -> TlsStream<TcpStream> {
    let tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .unwrap();
    common::tls::connect(tcp, cafile).await
}

/// wss://: the client's message comes back over TLS, trusting the local CA;
/// without --cafile, one error line says to pass it.
#[tokio::test]
async fn websocket_echo_over_wss() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let server = tls_websocket_server(&dir, &[]).await;
    let url = format!("wss://localhost:{}", server.port());
    let (ok, out, err) = websocket_client(&url, &["--cafile", &cafile]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "hello\n");
    let (ok, out, err) = websocket_client(&url, &[]).await;
    assert!(!ok && out.is_empty());
    assert!(error_line(&err).contains("pass --cafile"), "{err}");
    let plain = format!("ws://127.0.0.1:{}", server.port());
    let (ok, _, err) = websocket_client(&plain, &["--cafile", &cafile]).await;
    assert!(!ok);
    assert!(
        error_line(&err).contains("--cafile is a TLS option: use a wss:// URL"),
        "{err}"
    );
}

/// With --tls the page is served over https, and its own https origin may
/// upgrade while the http one may not (it would be another page).
#[tokio::test]
async fn page_over_https_and_its_origin() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let server = tls_websocket_server(&dir, &[]).await;
    let port = server.port();

    let mut tls = tls_connect(&server, &cafile).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    within("the page", tls.read_to_end(&mut page))
        .await
        .unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.ends_with(websocket::http::PAGE));

    for (origin, status) in [
        (
            format!("https://localhost:{port}"),
            "HTTP/1.1 101 Switching Protocols\r\n",
        ),
        (
            format!("http://localhost:{port}"),
            "HTTP/1.1 403 Forbidden\r\n",
        ),
    ] {
        let mut tls = tls_connect(&server, &cafile).await;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; status.len()];
        within("the answer", tls.read_exact(&mut head))
            .await
            .unwrap();
        assert_eq!(String::from_utf8(head).unwrap(), status, "{origin}");
    }
}

/// ws:// to a TLS port gets a plain 400 that says to use wss://; wss:// to a
/// plain port is told the server does not seem to speak TLS; both servers
/// log it and keep serving.
#[tokio::test]
async fn websocket_plaintext_and_tls_mixed_up() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let tls_server = tls_websocket_server(&dir, &[]).await;
    let (ok, _, err) =
        websocket_client(&format!("ws://127.0.0.1:{}", tls_server.port()), &[]).await;
    assert!(!ok);
    assert!(
        error_line(&err)
            .contains("HTTP 400 Bad Request; if the server speaks TLS, use a wss:// URL"),
        "{err}"
    );
    let plain_server = Server::start("websocket_server", &[]).await;
    let url = format!("wss://127.0.0.1:{}", plain_server.port());
    let (ok, _, err) = websocket_client(&url, &["--cafile", &cafile]).await;
    assert!(!ok);
    assert!(error_line(&err).contains("does it speak TLS?"), "{err}");
    let (ok, out, err) =
        websocket_client(&format!("ws://127.0.0.1:{}", plain_server.port()), &[]).await;
    assert!(ok && out == "hello\n", "{err}");
    let url = format!("wss://127.0.0.1:{}", tls_server.port());
    let (ok, out, err) = websocket_client(&url, &["--cafile", &cafile]).await;
    assert!(ok && out == "hello\n", "{err}");

    for (server, says) in [
        (
            tls_server,
            "refused: plain HTTP, and this server speaks TLS only",
        ),
        (
            plain_server,
            "a TLS handshake, and this server speaks plain HTTP (start it with --tls)",
        ),
    ] {
        server.process.signal("INT");
        let (_, _, log) = server.process.finish().await;
        assert!(log.contains(says), "{log}");
    }
}

/// MQTT over TLS: the subscriber and the publisher, with --tls and the CA,
/// exchange a QoS 1 message through `mqtt_broker --tls`. Without --cafile,
/// with --tls at a plain broker, or without --tls at the TLS broker, one
/// error line says why, and the TLS broker logs the plaintext client.
#[tokio::test]
async fn mqtt_clients_over_tls() {
    let dir = TempDir::new();
    let local = dir.path("local");
    let broker = Server::start("mqtt_broker", &["--tls", "--tls-dir", &local]).await;
    let port = broker.port();
    let cafile = dir.path("local/ca.pem");

    let tls = ["--port", &port, "--tls", "--cafile", &cafile];
    let mut sub_args = tls.to_vec();
    sub_args.extend(["-t", "secure", "-q", "1", "-C", "1", "--show-packets"]);
    let sub = Process::spawn("mqtt_subscriber", &sub_args);
    within("the subscription", async {
        while !sub.stderr().contains("<- SUBACK") {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut pub_args = tls.to_vec();
    pub_args.extend([
        "-t", "secure", "-q", "1", "-m", "over tls", "-u", "alice", "-P", "secret",
    ]);
    let (status, _, err) = run("mqtt_publisher", &pub_args, b"").await;
    assert!(status.success(), "{err}");
    let (status, out, err) = sub.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "over tls\n");

    let (status, _, err) = run("mqtt_publisher", &["--port", &port, "--tls"], b"").await;
    assert!(!status.success());
    assert!(error_line(&err).contains("pass --cafile"), "{err}");

    let plain_broker = Server::start("mqtt_broker", &[]).await;
    let plain = plain_broker.port();
    let args = ["--port", &plain, "--tls", "--cafile", &cafile];
    let (status, _, err) = run("mqtt_publisher", &args, b"").await;
    assert!(!status.success());
    assert!(error_line(&err).contains("does it speak TLS?"), "{err}");
    within("the plaintext broker's log line", async {
        while !plain_broker.process.stderr().contains(
            "refused: a TLS handshake, and this port speaks MQTT without TLS: start the broker with --tls",
        ) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    let (status, _, err) = run("mqtt_publisher", &["--port", &port], b"").await;
    assert!(!status.success());
    assert!(
        error_line(&err).contains("does it want TLS (--tls)?"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    within("the broker's log line", async {
        while !broker
            .process
            .stderr()
            .contains("refused: not TLS, and this port speaks MQTT over TLS only")
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A broker front that requires client certificates refuses our publisher
/// without one (telling it to pass --cert and --key), and takes it with one.
#[tokio::test]
async fn mqtt_mutual_tls() {
    let dir = TempDir::new();
    let clients = Ca::new(&dir, "clients");
    let local = dir.path("local");
    let clients_ca = clients.cafile();
    let args = [
        "--tls",
        "--tls-dir",
        &local,
        "--require-client-cert",
        &clients_ca,
    ];
    let broker = Server::start("mqtt_broker", &args).await;
    let port = broker.port();
    let cafile = dir.path("local/ca.pem");
    let args = ["--port", &port, "--tls", "--cafile", &cafile];
    let (status, _, err) = run("mqtt_publisher", &args, b"").await;
    assert!(!status.success());
    assert!(error_line(&err).contains("pass --cert and --key"), "{err}");

    let (cert, key) = clients.issue("device", &["device-1"], false);
    let mut with_cert = args.to_vec();
    with_cert.extend(["--cert", &cert, "--key", &key, "-q", "1"]);
    let (status, _, err) = run("mqtt_publisher", &with_cert, b"").await;
    assert!(status.success(), "{err}");
}
