//! `--issue-client-cert NAME`: a server makes a client certificate from its
//! local CA, and a client that presents it passes `--require-client-cert`.
//! (A module of tests/tls.rs, so `cargo test --test tls` runs it.)

use std::path::Path;

use crate::common::tls::TempDir;
use crate::common::{Server, run, wait_stderr};
use crate::error_line;

/// Starts `bin` with its local CA in `dir/local`, issuing a client
/// certificate for alice and requiring one from that CA.
async fn issuing_server(bin: &str, dir: &TempDir) -> Server {
    let (local, cafile) = (dir.path("local"), dir.path("local/ca.pem"));
    let args = [
        "--tls",
        "--tls-dir",
        &local,
        "--issue-client-cert",
        "alice",
        "--require-client-cert",
        &cafile,
    ];
    Server::start(bin, &args).await
}

/// What the server logs for alice in `dir/local`: where the files are, the
/// flags a client passes, and the flag the server needs.
fn issued_line(how: &str, dir: &TempDir) -> String {
    let local = dir.path("local");
    format!(
        "TLS: {how} a client certificate for alice in {local}: a client passes \
         --cert {local}/alice.pem --key {local}/alice-key.pem, to a server started with \
         --require-client-cert {local}/ca.pem"
    )
}

/// Mutual TLS with a certificate the server issued, through the real
/// binaries: the server says which flags use it; a client that passes
/// them gets its line back, and one without a certificate is refused with
/// exit 1.
#[tokio::test]
async fn a_client_with_the_issued_certificate_gets_its_echo() {
    let dir = TempDir::new();
    let server = issuing_server("tcp_server", &dir).await;
    wait_stderr(&server.process, &issued_line("made", &dir), 1).await;
    let port = server.port();
    let (cafile, cert, key) = (
        dir.path("local/ca.pem"),
        dir.path("local/alice.pem"),
        dir.path("local/alice-key.pem"),
    );
    let tls = ["--port", &port, "-m", "hi", "--tls", "--cafile", &cafile];
    let mut with_cert = tls.to_vec();
    with_cert.extend(["--cert", &cert, "--key", &key]);
    let (status, out, err) = run("tcp_client", &with_cert, b"").await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "hi\n");

    let (status, out, err) = run("tcp_client", &tls, b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(error_line(&err).ends_with("pass --cert and --key"), "{err}");
}

/// The keys stay their owner's: the CA's key (which can sign certificates
/// that the server trusts) and alice's are mode 0600, in a 0700 directory.
#[cfg(unix)]
#[tokio::test]
async fn the_private_keys_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let _server = issuing_server("tcp_server", &dir).await;
    let mode = |name: &str| {
        let metadata = std::fs::metadata(dir.path(name)).unwrap();
        metadata.permissions().mode() & 0o777
    };
    assert_eq!(mode("local/alice-key.pem"), 0o600);
    assert_eq!(mode("local/ca-key.pem"), 0o600);
    assert_eq!(mode("local"), 0o700);
    // The certificates are public: whoever checks them needs to read them.
    assert_eq!(mode("local/alice.pem"), 0o644);
}

/// A second start reuses alice's certificate and key, byte for byte (and
/// the CA's), and says it is using them.
#[tokio::test]
async fn a_second_start_reuses_the_client_certificate() {
    let dir = TempDir::new();
    let files = ["alice.pem", "alice-key.pem", "ca.pem", "ca-key.pem"];
    let read = || files.map(|file| std::fs::read(dir.path(&format!("local/{file}"))).unwrap());
    let first = issuing_server("tcp_server", &dir).await;
    wait_stderr(&first.process, &issued_line("made", &dir), 1).await;
    let before = read();
    first.process.signal("INT");
    let (status, _, log) = first.process.finish().await;
    assert!(status.success(), "{log}");

    let again = issuing_server("tcp_server", &dir).await;
    wait_stderr(&again.process, &issued_line("using", &dir), 1).await;
    assert!(before == read(), "the files are reused, not made again");
}

/// A NAME that is not a safe file name is refused before anything happens
/// (clap: exit 2, one line that says why); a directory made before the CA
/// kept its key (no ca-key.pem) is one line that says to delete it and
/// that clients then need the new ca.pem (exit 1, no certificate made).
#[tokio::test]
async fn bad_names_and_a_directory_without_the_ca_key_are_one_error_line() {
    let dir = TempDir::new();
    let local = dir.path("local");
    let names = [
        ("../alice", "'/' is not allowed"),
        (".alice", "may not start with '.'"),
        ("", "give a name"),
        (
            "ca",
            "ca.pem is one of the local CA's or the server's own files",
        ),
        // NAME-key.pem or NAME.pem would be the CA's or the server's key.
        ("ca-key", "ca-key.pem is one of the local CA's"),
        (
            "Localhost-KEY",
            "localhost-key.pem is one of the local CA's",
        ),
        ("localhost", "localhost.pem is one of the local CA's"),
    ];
    for (name, says) in names {
        let flag = format!("--issue-client-cert={name}");
        let args = ["--port", "0", "--tls", "--tls-dir", &local, &flag];
        let (status, out, err) = run("tcp_server", &args, b"").await;
        assert_eq!(status.code(), Some(2), "{name}: {err}");
        assert!(out.is_empty(), "{out}");
        let line = error_line(&err);
        assert!(line.starts_with("error: invalid value"), "{err}");
        assert!(line.contains(says), "{name}: {err}");
    }
    assert!(!Path::new(&local).exists(), "nothing made for a bad name");

    // What an earlier version left: ca.pem and the localhost pair.
    networking_protocols::tls::local::ensure(Path::new(&local)).unwrap();
    std::fs::remove_file(dir.path("local/ca-key.pem")).unwrap();
    let args = ["--port", "0", "--tls", "--tls-dir", &local];
    let mut issuing = args.to_vec();
    issuing.extend(["--issue-client-cert", "alice"]);
    let (status, out, err) = run("tcp_server", &issuing, b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(out.is_empty(), "no listening line: {out}");
    assert_eq!(
        error_line(&err),
        format!(
            "error: the local CA in {local} has no ca-key.pem (versions before \
             --issue-client-cert did not keep the CA's key), so it cannot issue client \
             certificates: delete {local} and start the server again to make a new CA \
             (clients then need the new {local}/ca.pem)"
        )
    );
    assert!(!Path::new(&dir.path("local/alice.pem")).exists());
    // Without the flag, that directory still serves as it did.
    Server::start("tcp_server", &args[2..]).await;
}

/// websocket_server and mqtt_broker share the flag: a wss:// client and an
/// MQTT publisher get in with the certificate each issued.
#[tokio::test]
async fn websocket_server_and_mqtt_broker_issue_them_too() {
    for bin in ["websocket_server", "mqtt_broker"] {
        let dir = TempDir::new();
        let server = issuing_server(bin, &dir).await;
        wait_stderr(&server.process, &issued_line("made", &dir), 1).await;
        let (cafile, cert, key) = (
            dir.path("local/ca.pem"),
            dir.path("local/alice.pem"),
            dir.path("local/alice-key.pem"),
        );
        let (port, url) = (server.port(), format!("wss://localhost:{}", server.port()));
        let mut args = match bin {
            "websocket_server" => vec!["websocket_client", "--url", &url],
            _ => vec!["mqtt_publisher", "--port", &port, "--tls", "-q", "1"],
        };
        args.extend([
            "-m", "hi", "--cafile", &cafile, "--cert", &cert, "--key", &key,
        ]);
        let (status, out, err) = run(args[0], &args[1..], b"").await;
        assert_eq!(status.code(), Some(0), "{bin}: {err}");
        if bin == "websocket_server" {
            assert_eq!(out, "hi\n");
        }
    }
}
