//! MQTT over WebSocket (MQTT spec §6) through the real `mqtt_broker
//! --ws-port`: a WebSocket client written here with tokio-tungstenite sends
//! raw MQTT packets in binary messages, and meets clients on the plain MQTT
//! port in the same broker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;

use common::chromium::Chromium;
use common::mqtt::{connect_packet, packet, read_more, split, string};
use common::{Server, within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `mqtt_broker --port 0 --ws-port 0` and the extra `args`: the broker, and
/// the WebSocket port's address from its second line.
async fn broker(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--ws-port", "0"];
    all.extend_from_slice(args);
    let mut server = Server::start("mqtt_broker", &all).await;
    let line = server.process.line().await.expect("a second line");
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("the second line was {line:?}"));
    assert_eq!(
        line,
        format!("listening on {addr} for MQTT over WebSocket: ws://{addr}/mqtt")
    );
    (server, addr)
}

/// Opens `ws://addr{path}`, offering `protocols` (a comma list) and
/// sending `origin`, as a browser would.
async fn open(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    origin: Option<&str>,
) -> Result<(Ws, Option<String>), Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(protocols) = protocols {
        let value = protocols.parse().expect("a header value");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    if let Some(origin) = origin {
        let value = origin.parse().expect("a header value");
        request.headers_mut().insert("origin", value);
    }
    let (ws, response) = within("the upgrade", tokio_tungstenite::connect_async(request)).await?;
    let agreed = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|value| value.to_str().expect("text").to_string());
    Ok((ws, agreed))
}

/// The HTTP status of a refused upgrade.
async fn refused(result: Result<(Ws, Option<String>), Error>) -> u16 {
    match result {
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("not an HTTP refusal: {error}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The next whole MQTT packet from the binary messages the broker sends
/// (a packet may span messages, and a message may hold several).
async fn next_packet(ws: &mut Ws, buffer: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if let Some((first, body, used)) = split(buffer) {
            buffer.drain(..used);
            return (first, body);
        }
        match within("a message", ws.next()).await {
            Some(Ok(Message::Binary(payload))) => buffer.extend_from_slice(&payload),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("not a binary message: {other:?}"),
        }
    }
}

/// A SUBSCRIBE for `filter` at `qos`, with packet id `id`.
fn subscribe(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&string(filter.as_bytes()));
    body.push(qos);
    packet(0x82, &body)
}

/// A client at the WebSocket port and one at the MQTT port exchange
/// messages both ways. The WebSocket client's CONNECT comes in two binary
/// messages [MQTT-6.0.0-2], and its SUBSCRIBE and PINGREQ in one
/// [MQTT-6.0.0-3]; the subprotocol agreed is `mqtt` [MQTT-6.0.0-4].
#[tokio::test]
async fn websocket_and_tcp_clients_meet_in_one_broker() {
    let (server, ws_addr) = broker(&[]).await;
    let (mut ws, agreed) = open(ws_addr, "/mqtt", Some("mqtt"), None)
        .await
        .expect("upgrade");
    assert_eq!(agreed.as_deref(), Some("mqtt"));

    let connect = connect_packet("ws-client", "u", "p");
    let (first, rest) = connect.split_at(7);
    ws.send(Message::binary(first.to_vec()))
        .await
        .expect("send");
    ws.send(Message::binary(rest.to_vec())).await.expect("send");
    let mut from_ws = Vec::new();
    assert_eq!(next_packet(&mut ws, &mut from_ws).await, (0x20, vec![0, 0]));

    let mut both = subscribe(1, "to/ws", 1);
    both.extend_from_slice(&packet(0xc0, &[]));
    ws.send(Message::binary(both)).await.expect("send");
    assert_eq!(
        next_packet(&mut ws, &mut from_ws).await,
        (0x90, vec![0, 1, 1])
    );
    assert_eq!(next_packet(&mut ws, &mut from_ws).await, (0xd0, vec![]));

    // A TCP client subscribes, and publishes to the WebSocket client.
    let mut tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    tcp.write_all(&connect_packet("tcp-client", "u", "p"))
        .await
        .expect("write");
    tcp.write_all(&subscribe(1, "to/tcp", 0))
        .await
        .expect("write");
    let mut from_tcp = Vec::new();
    for expected in [(0x20, vec![0, 0]), (0x90, vec![0, 1, 0])] {
        while split(&from_tcp).is_none() {
            assert!(read_more(&mut tcp, &mut from_tcp).await, "closed");
        }
        let (first, body, used) = split(&from_tcp).expect("a packet");
        from_tcp.drain(..used);
        assert_eq!((first, body), expected);
    }
    let mut publish = string(b"to/ws");
    publish.extend_from_slice(b"from tcp \x00\xff");
    tcp.write_all(&packet(0x30, &publish)).await.expect("write");
    let (first, body) = next_packet(&mut ws, &mut from_ws).await;
    assert_eq!((first, body), (0x30, publish));

    // The WebSocket client publishes at QoS 1: PUBACK, and the TCP client
    // has it.
    let mut publish = string(b"to/tcp");
    publish.extend_from_slice(&7u16.to_be_bytes());
    publish.extend_from_slice(b"from the web");
    ws.send(Message::binary(packet(0x32, &publish)))
        .await
        .expect("send");
    assert_eq!(next_packet(&mut ws, &mut from_ws).await, (0x40, vec![0, 7]));
    while split(&from_tcp).is_none() {
        assert!(read_more(&mut tcp, &mut from_tcp).await, "closed");
    }
    let (first, body, _) = split(&from_tcp).expect("a packet");
    let mut expected = string(b"to/tcp");
    expected.extend_from_slice(b"from the web");
    assert_eq!((first, body), (0x30, expected));

    // A ping frame gets its pong from the WebSocket layer, beside MQTT.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("send");
    match within("the pong", ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("no pong: {other:?}"),
    }
    // DISCONNECT, then the broker's close.
    ws.send(Message::binary(packet(0xe0, &[])))
        .await
        .expect("send");
    match within("the close", ws.next()).await {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("after DISCONNECT: {other:?}"),
    }
    server.process.signal("TERM");
    let (_, _, log) = server.process.finish().await;
    assert!(
        log.contains("client connected client=\"ws-client\""),
        "{log}"
    );
}

/// What an upgrade we refuse gets: 404 for another path, 400 for
/// subprotocols of which none is MQTT's, 403 for another site's page (and
/// `--allow-origin` lets it in); no subprotocol at all, as a WebSocket tool
/// sends, is MQTT all the same, and `/` serves too.
#[tokio::test]
async fn upgrades_we_refuse_get_their_http_status() {
    let (_server, addr) = broker(&["--allow-origin", "http://allowed.example"]).await;
    assert_eq!(
        refused(open(addr, "/chat", Some("mqtt"), None).await).await,
        404
    );
    assert_eq!(
        refused(open(addr, "/mqtt", Some("chat, json"), None).await).await,
        400
    );
    let foreign = open(addr, "/mqtt", Some("mqtt"), Some("http://evil.example")).await;
    assert_eq!(refused(foreign).await, 403);

    let (_, agreed) = open(addr, "/mqtt", Some("mqtt"), Some("http://allowed.example"))
        .await
        .expect("an allowed origin");
    assert_eq!(agreed.as_deref(), Some("mqtt"));
    let (_, agreed) = open(addr, "/mqtt", Some("mqttv3.1"), None)
        .await
        .expect("the older name");
    assert_eq!(agreed.as_deref(), Some("mqttv3.1"));
    let (mut ws, agreed) = open(addr, "/", None, None).await.expect("no subprotocol");
    assert_eq!(agreed, None);
    ws.send(Message::binary(connect_packet("tool", "u", "p")))
        .await
        .expect("send");
    assert_eq!(
        next_packet(&mut ws, &mut Vec::new()).await,
        (0x20, vec![0, 0])
    );

    // A plain GET, as a browser asking for a page sends.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within("the answer", tcp.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("this port speaks MQTT over WebSocket"),
        "{answer}"
    );
}

/// MQTT travels in binary messages only: a text message closes the
/// connection [MQTT-6.0.0-1], with close code 1003, and the broker says why.
#[tokio::test]
async fn a_text_message_closes_the_connection() {
    let (server, addr) = broker(&[]).await;
    let (mut ws, _) = open(addr, "/mqtt", Some("mqtt"), None)
        .await
        .expect("upgrade");
    ws.send(Message::binary(connect_packet("texter", "u", "p")))
        .await
        .expect("send");
    assert_eq!(
        next_packet(&mut ws, &mut Vec::new()).await,
        (0x20, vec![0, 0])
    );
    ws.send(Message::text("hello")).await.expect("send");
    // The Close says why: 1003, a kind of data we do not take (RFC 6455
    // §7.4.1).
    match within("the close", ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1003),
        other => panic!("after a text message: {other:?}"),
    }
    common::wait_stderr(&server.process, "a text message", 1).await;
    let log = server.process.stderr();
    assert!(log.contains("MQTT-6.0.0-1"), "{log}");
}

/// MQTT.js, the MQTT client web pages use (from npm), over `ws://` with
/// MQTT 3.1.1 and MQTT 5: one MQTT.js client subscribes, another publishes
/// at QoS 1 and 2, and `mqtt_publisher` over TCP publishes a third message;
/// the subscriber gets all three.
#[tokio::test]
#[ignore = "needs MQTT.js: npm install --prefix DIR mqtt@5, then MQTTJS_NODE_PATH=DIR/node_modules"]
async fn mqttjs_over_websocket() {
    let node_path = std::env::var("MQTTJS_NODE_PATH")
        .expect("MQTTJS_NODE_PATH: the node_modules folder that holds mqtt (npm install mqtt@5)");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqttjs/exchange.js");
    let (server, ws_addr) = broker(&[]).await;
    for version in ["4", "5"] {
        let mut node = tokio::process::Command::new("node");
        node.arg(&script)
            .arg(format!("ws://{ws_addr}/mqtt"))
            .arg(version)
            .env("NODE_PATH", &node_path);
        let mut node = common::Process::spawn_command(node, "node");
        let first = node.line().await;
        assert_eq!(
            first.as_deref(),
            Some("subscribed [1]"),
            "MQTT.js {version}: {}",
            node.stderr()
        );
        let (status, _, err) = common::run(
            "mqtt_publisher",
            &[
                "--port",
                &server.port(),
                "-t",
                "mqttjs/from-rust",
                "-m",
                "from rust",
                "-q",
                "1",
            ],
            b"",
        )
        .await;
        assert!(status.success(), "{err}");
        let (status, out, err) = node.finish().await;
        assert!(status.success(), "MQTT.js {version}: {err}");
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "mqttjs/from-rust from rust",
                "mqttjs/qos1 one",
                "mqttjs/qos2 two"
            ],
            "MQTT.js {version}"
        );
    }
}

/// The page at `GET /` of the WebSocket port, in headless Chromium: its
/// hand-written MQTT client connects back over `/mqtt`, subscribes to the
/// filter typed in, shows what `mqtt_publisher` sends over TCP, and
/// publishes what is typed (which comes back to it, being subscribed).
#[tokio::test]
#[ignore = "needs chromium: apt-get install chromium"]
async fn page_speaks_mqtt_in_headless_chromium() {
    let (server, ws_addr) = broker(&[]).await;
    let mut chromium = Chromium::start().await;
    chromium.open(&format!("http://{ws_addr}/")).await;
    let log = chromium.log_with("connected to").await;
    assert!(
        log.starts_with(&format!("connected to ws://{ws_addr}/mqtt as page-")),
        "{log}"
    );
    chromium.type_into("filter", "page/#").await;
    chromium.log_with("subscribed to page/#").await;

    let (status, _, err) = common::run(
        "mqtt_publisher",
        &[
            "--port",
            &server.port(),
            "-t",
            "page/news",
            "-m",
            "from tcp",
        ],
        b"",
    )
    .await;
    assert!(status.success(), "{err}");
    chromium.log_with("|page/news: from tcp").await;

    chromium.type_into("topic", "page/typed").await;
    chromium.type_into("text", "hello from chromium").await;
    let log = chromium.log_with("|page/typed: hello from chromium").await;
    assert!(log.contains("|> page/typed: hello from chromium|"), "{log}");
}
