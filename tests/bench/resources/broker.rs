//! The two brokers, each started as a process of its own, so that its
//! memory is its own and can be read from `/proc/<pid>/status`: our
//! `mqtt_broker` (release build) and Mosquitto, where it is installed.
//!
//! `scale/servers.rs` starts processes the same way; this bench has its own
//! copy because one row needs a line in Mosquitto's config file
//! (`max_queued_messages`) that the scale bench has no reason to offer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    MqttBroker,
    Mosquitto,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::MqttBroker => "mqtt_broker",
            Server::Mosquitto => "Mosquitto",
        }
    }
}

/// mqtt_broker's limits, raised above what the rows use: 10,000 filters
/// for one client (its default allows 1000) and 2050 clients at once (its
/// default allows 1000). Mosquitto has neither limit by default.
const OUR_FLAGS: [&str; 6] = [
    "--port",
    "0",
    "--max-subscriptions",
    "20000",
    "--max-connections",
    "5000",
];

/// How long a broker may take to start listening.
const START_WAIT: Duration = Duration::from_secs(10);

/// A broker process and the address it listens on. Dropping it kills the
/// process, so a failed measurement leaves nothing running.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts `server` on a free port of 127.0.0.1.
    pub async fn start(server: Server) -> anyhow::Result<Broker> {
        Broker::start_with(server, "").await
    }

    /// Starts `server`; `mosquitto_lines` go into Mosquitto's config file
    /// (mqtt_broker takes what it needs as flags).
    pub async fn start_with(server: Server, mosquitto_lines: &str) -> anyhow::Result<Broker> {
        match server {
            Server::MqttBroker => Broker::ours().await,
            Server::Mosquitto => Broker::mosquitto(mosquitto_lines).await,
        }
    }

    /// Our broker prints `listening on <addr>` first; we read it.
    async fn ours() -> anyhow::Result<Broker> {
        let mut command = Command::new(mqtt_broker()?);
        // Per-connection log lines would be part of what we measure.
        command.args(OUR_FLAGS).env("RUST_LOG", "warn");
        let mut child = spawn(&mut command, Stdio::piped())?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_WAIT, lines.next_line())
            .await
            .context("no `listening on` line")??
            .context("exited before listening")?;
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("first line was {first:?}"))?;
        Ok(Broker { child, addr })
    }

    /// Mosquitto prints no address: we give it a free port in a config file
    /// (127.0.0.1 only, and TCP_NODELAY as our broker sets it) and connect
    /// until it answers.
    async fn mosquitto(lines: &str) -> anyhow::Result<Broker> {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let config = target_dir().join(format!("resources-mosquitto-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{lines}"
            ),
        )?;
        let started = Broker::mosquitto_on(port, &config).await;
        let _ = std::fs::remove_file(&config);
        started
    }

    async fn mosquitto_on(port: u16, config: &Path) -> anyhow::Result<Broker> {
        let mut last = anyhow!("not installed");
        for program in ["mosquitto", "/usr/sbin/mosquitto"] {
            let mut command = Command::new(program);
            command.arg("-c").arg(config);
            let child = match spawn(&mut command, Stdio::null()) {
                Ok(child) => child,
                Err(error) => {
                    last = error.context("not installed? apt-get install mosquitto");
                    continue;
                }
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + START_WAIT;
            while TcpStream::connect(addr).await.is_err() {
                if Instant::now() > deadline {
                    bail!("mosquitto did not listen on {addr}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Ok(Broker { child, addr });
        }
        Err(last)
    }

    /// The broker's resident memory (RSS), in bytes (Linux only).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the broker has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading /proc (this bench measures memory on Linux only)")?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .context("no VmRSS line")?;
        Ok(kib * 1024)
    }

    /// Kills the broker and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn spawn(command: &mut Command, stdout: Stdio) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.as_std().get_program()))
}

/// `target/`, where the bench itself runs from.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// `target/release/mqtt_broker`, built once per run so that we never
/// measure a stale binary; or the binary that `MQTT_BROKER` names, to
/// measure another build (an older commit's, say) as it is.
fn mqtt_broker() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MQTT_BROKER") {
        return Ok(PathBuf::from(path));
    }
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "mqtt",
                "--bin",
                "mqtt_broker",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("cargo build --release -p mqtt: {status}")),
            Err(error) => Err(format!("cannot run cargo: {error}")),
        }
    });
    built.clone().map_err(|error| anyhow!(error))?;
    Ok(target_dir().join("release").join("mqtt_broker"))
}
