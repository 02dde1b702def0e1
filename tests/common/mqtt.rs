//! Raw MQTT packets, for tests that must see exactly which bytes a broker
//! answers (rumqttc hides a broker that closes without a CONNACK), and a
//! Mosquitto of the test's own to compare with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::within;

/// A raw MQTT packet: first byte, then the remaining length (spec §2.2.3),
/// then `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// One whole packet off the front of `buffer`: first byte, body, bytes used;
/// `None` until a whole packet is in.
pub fn split(buffer: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (mut length, mut at) = (0usize, 1);
    loop {
        let byte = *buffer.get(at)?;
        length |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let body = buffer.get(at..at + length)?.to_vec();
    Some((buffer[0], body, at + length))
}

/// Reads what `stream` has into `buffer`, within the tests' timeout:
/// `false` once the peer has closed (or the read failed or timed out).
pub async fn read_more(stream: &mut (impl AsyncRead + Unpin), buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match within("a packet or a close", stream.read(&mut chunk)).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The next whole packet from `stream` (first byte, body), reading into
/// `buffer` as needed, within the tests' timeout per read. Panics if the
/// peer closes first.
pub async fn next_packet(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
) -> (u8, Vec<u8>) {
    loop {
        if let Some((first, body, used)) = split(buffer) {
            buffer.drain(..used);
            return (first, body);
        }
        assert!(
            read_more(stream, buffer).await,
            "closed before a whole packet"
        );
    }
}

/// An MQTT string: two-byte length, then the bytes (spec §1.5.3).
pub fn string(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

/// A raw MQTT 3.1.1 CONNECT with a clean session, keep-alive 60 s, and a
/// username and password.
pub fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    connect_packet_with_keep_alive(client_id, username, password, 60)
}

/// The same CONNECT with a chosen keep-alive, in seconds (0: none).
pub fn connect_packet_with_keep_alive(
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive: u16,
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for field in [client_id, username, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128, "one-byte remaining length");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// The full path of an installed program: found on `PATH`, or in the sbin
/// folders where Debian puts `mosquitto` (not on a normal user's `PATH`).
pub fn program(name: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').chain(["/usr/sbin", "/usr/local/sbin"]);
    dirs.map(|dir| std::path::Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found; apt-get install -y mosquitto mosquitto-clients")
        })
        .display()
        .to_string()
}

/// A Mosquitto broker of our own, stopped when dropped.
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Mosquitto {
    /// Starts Mosquitto on a free loopback port, configured as the benchmark
    /// configures it; with `user`, it requires that name and password.
    pub async fn start(user: Option<(&str, &str)>) -> Mosquitto {
        Self::start_with(user, "").await
    }

    /// The same, with more lines for its configuration file.
    pub async fn start_with(user: Option<(&str, &str)>, extra: &str) -> Mosquitto {
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!("mqtt-interop-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            "listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 1000000\n\
             max_inflight_messages 20\nlog_dest stderr\n"
        );
        match user {
            None => config.push_str("allow_anonymous true\n"),
            Some((name, password)) => {
                let file = dir.join("passwords");
                let status = std::process::Command::new(program("mosquitto_passwd"))
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([name, password])
                    .status()
                    .unwrap();
                assert!(status.success(), "mosquitto_passwd failed");
                config.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        config.push_str(extra);
        let config_file = dir.join("mosquitto.conf");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(program("mosquitto"))
            .arg("-c")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Ready when it accepts a connection; retry until then.
        within("mosquitto to listen", async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Mosquitto { child, addr, dir }
    }

    /// The password file `start` made with `mosquitto_passwd` (there is
    /// one only when it was given a user).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("passwords")
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("mosquitto runs")
    }
}
