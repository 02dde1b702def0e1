//! The servers under test, each started as a process of its own, exactly as
//! a user starts it, so that its memory is its own and can be read from
//! `/proc/<pid>/status`. Every process is killed when its measurement ends
//! (and, should the bench itself fail, when its handle is dropped).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// How to start one server.
#[derive(Debug, Clone)]
pub enum Program {
    /// One of this workspace's binaries, with its arguments.
    Ours(&'static str, &'static [&'static str]),
    /// A bare tokio baseline: `loadgen serve-tcp-echo` or `serve-ws-echo`.
    Loadgen(&'static str),
    /// Mosquitto, the C broker most people run, with these lines added to
    /// its configuration file.
    Mosquitto(&'static str),
}

/// A server process and the address it listens on.
#[derive(Debug)]
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
}

/// How long a server may take to start listening.
const START_WAIT: Duration = Duration::from_secs(10);

impl Running {
    /// Starts `program` on a free port of 127.0.0.1, allowing it
    /// `max_connections` clients where it has such a limit.
    pub async fn start(program: &Program, max_connections: usize) -> anyhow::Result<Running> {
        let max = max_connections.to_string();
        match program {
            Program::Ours(bin, args) => {
                let path = binary(bin)?;
                let mut command = Command::new(&path);
                command.args(["--port", "0"]).args(*args);
                if accepts(&path, "--max-connections").await {
                    command.args(["--max-connections", &max]);
                }
                // Per-connection log lines would be part of what we time; a
                // user who wants them pays for them, the bench does not.
                command.env("RUST_LOG", "warn");
                Running::listening(command).await
            }
            Program::Loadgen(mode) => {
                let mut command = Command::new(loadgen()?);
                command.args([mode, "--addr", "127.0.0.1:0"]);
                Running::listening(command).await
            }
            Program::Mosquitto(lines) => Running::mosquitto(lines).await,
        }
    }

    /// Spawns `command` and reads its `listening on <addr>` line.
    async fn listening(mut command: Command) -> anyhow::Result<Running> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.as_std().get_program()))?;
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
        Ok(Running { child, addr })
    }

    /// Mosquitto prints no address: we give it a free port in a config file
    /// (127.0.0.1 only; and TCP_NODELAY, as our servers set it), with
    /// `lines` after, and connect until it answers.
    async fn mosquitto(lines: &str) -> anyhow::Result<Running> {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let config = target_dir().join(format!("bench-mosquitto-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{lines}"
            ),
        )?;
        let mut last = anyhow!("not installed");
        for program in ["mosquitto", "/usr/sbin/mosquitto"] {
            let spawned = Command::new(program)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    last = anyhow!("not installed ({error}): apt-get install mosquitto");
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
            let _ = std::fs::remove_file(&config);
            return Ok(Running { child, addr });
        }
        let _ = std::fs::remove_file(&config);
        Err(last)
    }

    /// The server's resident memory, in bytes (Linux only).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the server has exited")?;
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

    /// Kills the server and waits for it to be gone.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether `--help` of the program at `path` lists `flag`. The broker is a
/// black box to this bench: we pass a flag only where it is offered.
async fn accepts(path: &Path, flag: &str) -> bool {
    match Command::new(path).arg("--help").output().await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).contains(flag),
        Err(_) => false,
    }
}

/// `target/`, where the bench itself runs from (`target/release/deps/`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The path of one of the workspace's binaries, in release build, built once.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = crate::cargo::command()
            .args(["build", "--quiet", "--release", "--workspace", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("cargo build --release --bins: {status}")),
            Err(error) => Err(format!("cannot run cargo: {error}")),
        }
    });
    built.clone().map_err(|error| anyhow!(error))?;
    Ok(target_dir().join("release").join(name))
}

/// The loadgen binary: `LOADGEN`, or `target/loadgen/release/loadgen`.
fn loadgen() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("LOADGEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("loadgen/release/loadgen"));
    if !path.exists() {
        // loadgen is a separate tool, not in this repository.
        bail!(
            "no loadgen at {}: set LOADGEN to its binary (a separate load-testing tool)",
            path.display()
        );
    }
    Ok(path)
}
