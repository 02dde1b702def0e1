//! websocket_server and websocket_client against independent implementations:
//! Python's `websockets` library on both sides, Chromium running the browser
//! page, and the Autobahn|Testsuite fuzzing client, the industry's RFC 6455
//! conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::chromium::Chromium;
use common::{Server, run, within};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVER: &str = "websocket_server";
const CLIENT: &str = "websocket_client";

fn url(server: &Server) -> String {
    format!("ws://{}", server.addr)
}

/// A Python `websockets` echo server on a free port; it answers "bye" by
/// closing with code 4000 and reason "bye bye".
const PYTHON_ECHO_SERVER: &str = r#"
import asyncio, websockets
async def echo(ws):
    async for message in ws:
        if message == "bye":
            await ws.close(4000, "bye bye")
            return
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// Starts a Python script and reads its `listening on` line.
async fn python_server(script: &str) -> (Child, String) {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("python's listening line", stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    (child, format!("ws://{addr}"))
}

/// websocket_client talks to a Python `websockets` server: text, binary (as
/// hex), stdin lines, and the server's own close code.
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn client_against_python_websockets_server() {
    let (_python, url) = python_server(PYTHON_ECHO_SERVER).await;
    let (status, out, err) = run(CLIENT, &["--url", &url, "-m", "hello ✓"], b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello ✓\n");
    let (status, out, err) = run(CLIENT, &["--url", &url, "--binary", "-m", "AB"], b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "4142\n");
    let (status, out, err) = run(CLIENT, &["--url", &url], b"one\ntwo\n").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "one\ntwo\n");
    let (status, out, err) = run(CLIENT, &["--url", &url], b"kept\nbye\n").await;
    assert!(!status.success());
    assert_eq!(out, "kept\n");
    assert!(
        err.ends_with(&format!(
            "error: {url} closed the connection: 4000 (other) \"bye bye\"\n"
        )),
        "{err}"
    );
}

/// A Python `websockets` client: echo of text, binary and a fragmented
/// message, ping/pong, a clean close, then 1009 for a message over the limit.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main(url):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("hello ✓")
        print(await ws.recv())
        await ws.send(bytes([0, 1, 255]))
        print((await ws.recv()).hex())
        await ws.send(["frag", "ment", "ed"])
        print(await ws.recv())
        await (await ws.ping(b"xyz"))
        print("pong")
    print("closed", ws.close_code)
    async with websockets.connect(url) as ws:
        await ws.send("x" * 2000)
        try:
            await ws.recv()
        except websockets.ConnectionClosed as closed:
            print("closed", closed.rcvd.code, closed.rcvd.reason)
asyncio.run(main(sys.argv[1]))
"#;

/// websocket_server driven by an independent client (Python `websockets`).
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn server_against_python_websockets_client() {
    let server = Server::start(SERVER, &["--max-message-bytes", "1000"]).await;
    let output = within(
        "the python client",
        Command::new("python3")
            .args(["-c", PYTHON_CLIENT, &url(&server)])
            .output(),
    )
    .await
    .expect("python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello ✓\n0001ff\nfragmented\npong\nclosed 1000\n\
         closed 1009 message too big: the limit is 1000 bytes\n"
    );
}

/// The page at `/` in headless Chromium: it connects back over WebSocket,
/// typing a message and pressing Enter shows its echo, and the server's
/// shutdown shows as close 1001.
#[tokio::test]
#[ignore = "needs chromium: apt-get install chromium"]
async fn page_works_in_headless_chromium() {
    let server = Server::start(SERVER, &[]).await;
    let page = format!("http://{}/", server.addr);
    let mut chromium = Chromium::start().await;
    chromium.open(&page).await;
    let log = chromium.log_with("connected to").await;
    assert_eq!(log, format!("connected to ws://{}/", server.addr));

    chromium.type_line("hello from chromium").await;
    let log = chromium.log_with("|hello from chromium").await;
    assert_eq!(
        log,
        format!(
            "connected to ws://{}/|> hello from chromium|hello from chromium",
            server.addr
        )
    );

    server.process.signal("INT");
    let log = chromium.log_with("closed:").await;
    assert!(log.ends_with("|closed: 1001 server shutting down"), "{log}");
    let (status, _, stderr) = server.process.finish().await;
    assert!(status.success());
    assert!(
        stderr.contains("answered HTTP 200 OK") && stderr.contains("close=1001 (going away)"),
        "{stderr}"
    );
}

/// The page over https with `websocket_server --tls`: it connects back with
/// `wss://` and echoes through it. (Chromium is told to accept our local CA's
/// certificate through DevTools: verification itself is tested with clients
/// that take a CA file.)
#[tokio::test]
#[ignore = "needs chromium: apt-get install chromium"]
async fn page_works_over_https_in_headless_chromium() {
    let dir = common::tls::TempDir::new();
    let tls_dir = dir.path("local");
    let server = Server::start(SERVER, &["--tls", "--tls-dir", &tls_dir]).await;
    let origin = format!("localhost:{}", server.addr.port());
    let mut chromium = Chromium::start().await;
    chromium
        .call("Security.setIgnoreCertificateErrors", r#"{"ignore":true}"#)
        .await;
    chromium.open(&format!("https://{origin}/")).await;
    let log = chromium.log_with("connected to").await;
    assert_eq!(log, format!("connected to wss://{origin}/"));
    chromium.type_line("hello over wss").await;
    let log = chromium.log_with("|hello over wss").await;
    assert_eq!(
        log,
        format!("connected to wss://{origin}/|> hello over wss|hello over wss")
    );
}

/// The wstest command, from `WSTEST` or the PATH.
fn wstest() -> String {
    std::env::var("WSTEST").unwrap_or_else(|_| "wstest".to_string())
}

/// RFC 6455 conformance: the Autobahn|Testsuite fuzzing client runs all its
/// cases (compression, 12.* and 13.*, excluded: not offered) against
/// websocket_server, and none fails. NON-STRICT and INFORMATIONAL are
/// Autobahn's own passing grades.
#[tokio::test]
#[ignore = "needs Autobahn|Testsuite wstest (Python 2.7): python2.7 -m pip install autobahntestsuite"]
async fn autobahn_fuzzingclient_finds_no_failure() {
    // The 9.* cases send messages up to 16 MiB.
    let server = Server::start(SERVER, &["--max-message-bytes", "20000000"]).await;
    let dir = std::env::temp_dir().join(format!("websocket-autobahn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!(
        r#"{{"outdir": "{}", "servers": [{{"agent": "websocket_server", "url": "{}"}}],
            "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {{}}}}"#,
        dir.join("reports").display(),
        url(&server)
    );
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let wstest = Command::new(wstest())
        .args(["-m", "fuzzingclient", "-s", "spec.json"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .output();
    // The whole suite takes about half a minute; allow for a slow machine.
    let output = tokio::time::timeout(Duration::from_secs(600), wstest)
        .await
        .expect("wstest finished")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Summarise the JSON report with Python (no JSON parser in our dependencies).
    let summary = r#"
import json, sys
cases = json.load(open(sys.argv[1]))["websocket_server"]
bad = [k for k, v in sorted(cases.items())
       if v["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
       or v["behaviorClose"] not in ("OK", "INFORMATIONAL")]
print(len(cases), " ".join(bad))
"#;
    let report = dir.join("reports").join("index.json");
    let summary = Command::new("python3")
        .args(["-c", summary])
        .arg(&report)
        .output()
        .await
        .unwrap();
    let summary = String::from_utf8(summary.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (count, failed) = summary
        .trim_end()
        .split_once(' ')
        .unwrap_or((summary.trim(), ""));
    assert_eq!(failed, "", "failed Autobahn cases: {failed}");
    assert!(
        count.parse::<u32>().unwrap() >= 300,
        "only {count} cases ran"
    );
}

/// A Python `websockets` server that offers subprotocol `chat.v1` and
/// answers the first message with the request's Authorization and Cookie
/// headers and the subprotocol it agreed on.
const PYTHON_HEADER_SERVER: &str = r#"
import asyncio, websockets
async def tell(ws):
    await ws.recv()
    h = ws.request.headers
    await ws.send("%s|%s|%s" % (h.get("Authorization"), h.get("Cookie"), ws.subprotocol))
async def main():
    async with websockets.serve(tell, "127.0.0.1", 0, subprotocols=["chat.v1"]) as server:
        print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// `websocket_client -H` puts headers in the upgrade request and
/// `--protocol` offers subprotocols: an independent server (Python
/// `websockets`) sees the headers and agrees on the one it knows.
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn client_headers_and_subprotocol_reach_python_websockets() {
    let (_python, url) = python_server(PYTHON_HEADER_SERVER).await;
    let args = [
        "--url",
        &url,
        "-H",
        "Authorization: Bearer t0k",
        "-H",
        "Cookie: session=42",
        "--protocol",
        "mqtt",
        "--protocol",
        "chat.v1",
        "-m",
        "hi",
    ];
    let (status, out, err) = run(CLIENT, &args, b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "Bearer t0k|session=42|chat.v1\n");
    assert!(
        err.contains("the server chose subprotocol \"chat.v1\""),
        "{err}"
    );
    let (status, _, err) = run(CLIENT, &["--url", &url, "-H", "no colon"], b"").await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("expected 'Name: value'"), "{err}");
}

/// `websocket_server --protocol chat.v1`, and a Python `websockets` client
/// that offers `mqtt` and `chat.v1`: they agree on `chat.v1`.
#[tokio::test]
#[ignore = "needs python3 websockets: pip install websockets"]
async fn server_subprotocol_with_python_websockets() {
    let server = Server::start("websocket_server", &["--protocol", "chat.v1"]).await;
    let script = r#"
import asyncio, sys, websockets
async def main(url):
    async with websockets.connect(url, subprotocols=["mqtt", "chat.v1"]) as ws:
        print(ws.subprotocol)
asyncio.run(main(sys.argv[1]))
"#;
    let output = within(
        "the Python client",
        Command::new("python3")
            .args(["-c", script, &url(&server)])
            .output(),
    )
    .await
    .expect("python3");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "chat.v1\n");
}
