//! TLS against independent implementations: OpenSSL's `s_client` against
//! `tcp_server --tls`, OpenSSL's view of a certificate that
//! `--issue-client-cert` made, Python's `ssl` and `websockets` on both sides of
//! `wss://`, and our MQTT clients against a Mosquitto TLS listener, with and
//! without a client certificate. Ignored unless the peers are installed
//! (`.ci/run` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::mqtt::program;
use common::tls::{Ca, TempDir};
use common::{Server, free_port, run, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// `tcp_server --tls` with its local certificate made in `dir/local`.
async fn tls_server(bin: &str, dir: &TempDir, extra: &[&str]) -> Server {
    let tls_dir = dir.path("local");
    let mut args = vec!["--tls", "--tls-dir", &tls_dir];
    args.extend_from_slice(extra);
    Server::start(bin, &args).await
}

/// Runs `openssl s_client` against `server`, sends `hello`, and returns the
/// first line it prints after the handshake, or its stderr if it fails.
async fn s_client(server: &Server, extra: &[&str]) -> Result<String, String> {
    let connect = server.addr.to_string();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-quiet",
            "-verify_return_error",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl; apt-get install openssl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within("s_client's output", lines.next_line())
        .await
        .unwrap();
    let _ = child.kill().await;
    match line {
        Some(line) => Ok(line),
        None => {
            let output = child.wait_with_output().await.unwrap();
            Err(String::from_utf8_lossy(&output.stderr).to_string())
        }
    }
}

/// OpenSSL's client verifies tcp_server's local certificate with the CA the
/// server made, gets its echo, and fails verification without it; with
/// --require-client-cert it must present a certificate.
#[tokio::test]
#[ignore = "needs openssl: apt-get install openssl"]
async fn openssl_s_client_against_tcp_server() {
    let dir = TempDir::new();
    let cafile = dir.path("local/ca.pem");
    let server = tls_server("tcp_server", &dir, &[]).await;
    let trusted = ["-CAfile", &cafile, "-verify_hostname", "localhost"];
    assert_eq!(s_client(&server, &trusted).await.unwrap(), "hello");
    let clients = Ca::new(&dir, "clients");
    let untrusted = s_client(&server, &["-CAfile", &clients.cafile()]).await;
    let untrusted = untrusted.unwrap_err();
    assert!(untrusted.contains("verify error"), "{untrusted}");

    let (cert, key) = clients.issue("alice", &["alice"], false);
    let mutual = tls_server(
        "tcp_server",
        &dir,
        &["--require-client-cert", &clients.cafile()],
    )
    .await;
    let with_cert = ["-CAfile", &cafile, "-cert", &cert, "-key", &key];
    assert_eq!(s_client(&mutual, &with_cert).await.unwrap(), "hello");
    assert!(s_client(&mutual, &["-CAfile", &cafile]).await.is_err());
}

/// Runs `openssl ARGS` and returns its stdout, failing the test if it fails.
async fn openssl(args: &[&str]) -> String {
    let run = Command::new("openssl")
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = within("openssl", run)
        .await
        .expect("openssl; apt-get install openssl");
    let (out, err) = (&output.stdout, &output.stderr);
    let (out, err) = (String::from_utf8_lossy(out), String::from_utf8_lossy(err));
    assert!(output.status.success(), "openssl {args:?}: {err}");
    out.to_string()
}

/// OpenSSL agrees that what `--issue-client-cert alice` makes is a client
/// certificate from the local CA: `openssl verify` follows its chain to
/// ca.pem, `openssl x509 -purpose` finds it fit to be an "SSL client" and
/// not an "SSL server", and s_client presenting it gets its echo from a
/// server that requires one.
#[tokio::test]
#[ignore = "needs openssl: apt-get install openssl"]
async fn openssl_accepts_an_issued_client_certificate() {
    let dir = TempDir::new();
    let (cafile, cert, key) = (
        dir.path("local/ca.pem"),
        dir.path("local/alice.pem"),
        dir.path("local/alice-key.pem"),
    );
    let issuing = ["--issue-client-cert", "alice", "--require-client-cert"];
    let mut args = issuing.to_vec();
    args.push(&cafile);
    let server = tls_server("tcp_server", &dir, &args).await;

    let verified = openssl(&["verify", "-CAfile", &cafile, &cert]).await;
    assert_eq!(verified, format!("{cert}: OK\n"));
    let purposes = openssl(&["x509", "-in", &cert, "-noout", "-subject", "-purpose"]).await;
    assert!(purposes.contains("subject=CN = alice\n"), "{purposes}");
    assert!(purposes.contains("\nSSL client : Yes\n"), "{purposes}");
    assert!(purposes.contains("\nSSL server : No\n"), "{purposes}");

    let with_cert = ["-CAfile", &cafile, "-cert", &cert, "-key", &key];
    assert_eq!(s_client(&server, &with_cert).await.unwrap(), "hello");
}

/// A Python client with an `ssl` context that trusts our CA (and checks the
/// name) talks to websocket_server --tls over wss://.
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn python_websockets_client_against_wss_server() {
    let dir = TempDir::new();
    let server = tls_server("websocket_server", &dir, &[]).await;
    let script = r#"
import asyncio, ssl, sys, websockets
async def main(url, cafile):
    context = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=context) as ws:
        await ws.send("hello over wss")
        print(await ws.recv())
    print("closed", ws.close_code)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let url = format!("wss://localhost:{}/", server.port());
    let output = within(
        "the python client",
        Command::new("python3")
            .args(["-c", script, &url, &dir.path("local/ca.pem")])
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello over wss\nclosed 1000\n"
    );
}

/// websocket_client with --cafile talks to a Python `websockets` server that
/// serves wss:// with a certificate from our test CA.
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn websocket_client_against_python_wss_server() {
    let dir = TempDir::new();
    let ca = Ca::new(&dir, "ca");
    let (cert, key) = ca.issue("server", &["localhost", "127.0.0.1"], false);
    let script = r#"
import asyncio, ssl, sys, websockets
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    async with websockets.serve(echo, "127.0.0.1", 0, ssl=context) as server:
        print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let mut python = Command::new("python3")
        .args(["-c", script, &cert, &key])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut stdout = BufReader::new(python.stdout.take().unwrap()).lines();
    let first = within("python's listening line", stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr = first.strip_prefix("listening on ").unwrap();
    let url = format!("wss://{addr}");
    let args = ["--url", &url, "--cafile", &ca.cafile(), "-m", "hello ✓"];
    let (status, out, err) = run("websocket_client", &args, b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello ✓\n");
    let (status, _, err) = run("websocket_client", &["--url", &url, "-m", "x"], b"").await;
    assert!(!status.success());
    assert!(err.contains("pass --cafile"), "{err}");
}

/// Mosquitto with two TLS listeners, both presenting `localhost.pem` from
/// `dir/local`: the first asks nothing of clients, the second requires a
/// certificate signed by `clients_ca`. Returns the broker and both ports.
async fn mosquitto_tls(dir: &TempDir, clients_ca: &str) -> (Child, u16, u16) {
    networking_protocols::tls::local::ensure(std::path::Path::new(&dir.path("local"))).unwrap();
    let (cert, key) = (
        dir.path("local/localhost.pem"),
        dir.path("local/localhost-key.pem"),
    );
    let (open, mutual) = (free_port(), free_port());
    let config = format!(
        // Started as root, Mosquitto switches to its own user, which cannot
        // read our private key (0600 in a 0700 directory): stay as we are.
        // (Not started as root, it ignores `user`.)
        "user root\npersistence false\nlog_dest stderr\nallow_anonymous true\n\
         listener {open} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
         listener {mutual} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
         cafile {clients_ca}\nrequire_certificate true\n"
    );
    let file = dir.path("mosquitto.conf");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(program("mosquitto"))
        .args(["-c", &file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto; apt-get install mosquitto");
    for port in [open, mutual] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        within("mosquitto to listen", async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    (child, open, mutual)
}

/// Our MQTT clients over TLS against Mosquitto: a message through its TLS
/// listener with --cafile; at the listener that requires a client
/// certificate, refused without one and delivered with one.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn our_mqtt_clients_against_mosquitto_tls() {
    let dir = TempDir::new();
    let clients = Ca::new(&dir, "clients");
    let (_mosquitto, open, mutual) = mosquitto_tls(&dir, &clients.cafile()).await;
    let cafile = dir.path("local/ca.pem");
    let (cert, key) = clients.issue("device", &["device-1"], false);

    for (port, client_cert) in [(open, None), (mutual, Some((&cert, &key)))] {
        let port = port.to_string();
        let mut tls = vec!["--port", &port, "--tls", "--cafile", &cafile];
        if let Some((cert, key)) = client_cert {
            tls.extend(["--cert", cert, "--key", key]);
        }
        let mut sub_args = tls.clone();
        sub_args.extend(["-t", "tls/interop", "-q", "1", "-C", "1", "--show-packets"]);
        let sub = common::Process::spawn("mqtt_subscriber", &sub_args);
        within("the subscription", async {
            while !sub.stderr().contains("<- SUBACK") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let mut pub_args = tls.clone();
        pub_args.extend(["-t", "tls/interop", "-q", "1", "-m", "via mosquitto"]);
        let (status, _, err) = run("mqtt_publisher", &pub_args, b"").await;
        assert!(status.success(), "{err}");
        let (status, out, err) = sub.finish().await;
        assert!(status.success(), "{err}");
        assert_eq!(out, "via mosquitto\n");
    }

    let port = mutual.to_string();
    let args = ["--port", &port, "--tls", "--cafile", &cafile];
    let (status, _, err) = run("mqtt_publisher", &args, b"").await;
    assert!(!status.success());
    assert!(err.contains("pass --cert and --key"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Mosquitto's own clients against `mqtt_broker --tls`: `mosquitto_sub` and
/// `mosquitto_pub` with `--cafile` (the CA the broker printed) exchange a
/// retained QoS 1 message; `mosquitto_pub` without TLS does not get in.
#[tokio::test]
#[ignore = "needs mosquitto-clients: apt-get install -y mosquitto-clients"]
async fn mosquitto_clients_against_mqtt_broker_tls() {
    let dir = TempDir::new();
    let local = dir.path("local");
    let broker = Server::start("mqtt_broker", &["--tls", "--tls-dir", &local]).await;
    let port = broker.addr.port().to_string();
    let cafile = dir.path("local/ca.pem");
    let common = [
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        &cafile,
        "-q",
        "1",
    ];
    // Retained, so the subscriber that comes after gets it: no waiting for
    // its SUBACK (mosquitto_sub buffers its stdout in a pipe).
    let mut pub_args = common.to_vec();
    pub_args.extend(["-t", "tls/mosquitto", "-r", "-m", "to our broker over tls"]);
    let (status, _, err) = run(&program("mosquitto_pub"), &pub_args, b"").await;
    assert!(status.success(), "{err}");
    let mut sub_args = common.to_vec();
    sub_args.extend(["-t", "tls/mosquitto", "-C", "1"]);
    let (status, out, err) = run(&program("mosquitto_sub"), &sub_args, b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "to our broker over tls\n");

    let plain = ["-h", "localhost", "-p", &port, "-t", "x", "-m", "no tls"];
    let (status, _, _) = run(&program("mosquitto_pub"), &plain, b"").await;
    assert!(!status.success(), "a plaintext mosquitto_pub got in");
}
