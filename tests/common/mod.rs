//! What the integration tests share: running the real binaries as a user
//! would, with a timeout on every wait.
//!
//! Servers start with `--port 0` and we read the port they got from their
//! first stdout line, `listening on <ip:port>`: no fixed ports, no sleeping
//! until a server is probably ready.

#![allow(dead_code)] // Each test file uses its own share of these helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

pub mod cargo;
pub mod chromium;
pub mod hexdump;
pub mod mqtt;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single network or process wait may take before the test
/// fails. Generous, so a loaded CI machine does not fail a correct program.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits until `process` has printed `text` on stderr `times` times.
pub async fn wait_stderr(process: &Process, text: &str, times: usize) {
    within(text, async {
        while process.stderr().matches(text).count() < times {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A free loopback port, for a peer that cannot report the port it picked
/// (socat, Mosquitto): the operating system's pick, released at once.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// The path of one of the workspace's binaries, built on first use.
///
/// Integration tests of the root package cannot see other packages' binaries
/// through `CARGO_BIN_EXE_*`, so we ask cargo to build them all once (a no-op
/// when they are fresh) and find them beside the test executable.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf();
        let mut build = cargo::command();
        build.args(["build", "--quiet", "--workspace", "--bins"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        dir
    });
    dir.join(name)
}

/// A running binary with its stdout lines and a copy of its stderr.
pub struct Process {
    pub child: Child,
    pub stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_copier: Option<tokio::task::JoinHandle<()>>,
}

/// A server started with `--port 0`, and the address it reported.
pub struct Server {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `bin` with `args`; stdin is a pipe the test may write to.
    pub fn spawn(bin: &str, args: &[&str]) -> Process {
        let mut command = Command::new(binary(bin));
        command.args(args);
        Process::spawn_command(command, bin)
    }

    /// Starts `command` (which runs `bin`) with its three standard streams
    /// piped.
    pub fn spawn_command(mut command: Command, bin: &str) -> Process {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let copy = stderr.clone();
        let stderr_copier = tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                copy.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Process {
            child,
            stdout,
            stderr,
            stderr_copier: Some(stderr_copier),
        }
    }

    /// The next line the program prints on stdout (`None` at its end).
    pub async fn line(&mut self) -> Option<String> {
        within("a line on stdout", self.stdout.next_line())
            .await
            .expect("read stdout")
    }

    /// Everything the program has printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Writes `bytes` to the program's stdin.
    pub async fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin still open");
        within("writing stdin", stdin.write_all(bytes))
            .await
            .expect("write stdin");
    }

    /// Closes the program's stdin (end of input, like Ctrl-D).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Sends a Unix signal by name (`INT` for Ctrl-C, `TERM`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("process still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(
            status.expect("run kill").success(),
            "kill -{name} {pid} failed"
        );
    }

    /// Waits for the program to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        within("the process to exit", self.child.wait())
            .await
            .expect("wait")
    }

    /// Waits for the program to exit and returns its status with all of its
    /// remaining stdout.
    pub async fn finish(mut self) -> (ExitStatus, String, String) {
        self.close_stdin();
        let mut out = String::new();
        while let Some(line) = self.line().await {
            out.push_str(&line);
            out.push('\n');
        }
        let status = self.exit().await;
        // The copier ends when the pipe closes, after the last bytes.
        if let Some(copier) = self.stderr_copier.take() {
            within("the end of stderr", copier)
                .await
                .expect("stderr copier");
        }
        (status, out, self.stderr())
    }
}

impl Server {
    /// Starts server `bin` on a free port (`--port 0` is added) and waits for
    /// its `listening on <addr>` line.
    pub async fn start(bin: &str, args: &[&str]) -> Server {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        Server::listening(Process::spawn(bin, &all), bin).await
    }

    /// Like [`Server::start`], with `env` added to the server's environment.
    pub async fn start_with_env(bin: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut command = Command::new(binary(bin));
        command
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().copied());
        Server::listening(Process::spawn_command(command, bin), bin).await
    }

    /// Like [`Server::start`], but the server may have at most `open_files`
    /// file descriptors open: `ulimit -n` sets both the soft and the hard
    /// limit, so the server cannot raise it. Unix only (it runs `sh`).
    pub async fn start_with_file_limit(bin: &str, open_files: u32, args: &[&str]) -> Server {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(binary(bin))
            .args(["--port", "0"])
            .args(args);
        Server::listening(Process::spawn_command(command, bin), bin).await
    }

    /// Waits for the `listening on <addr>` line of a server just started.
    async fn listening(mut process: Process, bin: &str) -> Server {
        let first = process.line().await.unwrap_or_else(|| {
            panic!(
                "{bin} exited before listening; stderr:\n{}",
                process.stderr()
            )
        });
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{bin}'s first line was {first:?}"));
        Server { process, addr }
    }

    /// The port as a command-line argument.
    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

/// Runs a client binary to completion with `stdin` as its input, and returns
/// its exit status, stdout and stderr.
pub async fn run(bin: &str, args: &[&str], stdin: &[u8]) -> (ExitStatus, String, String) {
    let mut process = Process::spawn(bin, args);
    process.write_stdin(stdin).await;
    process.finish().await
}

/// What a server's `run` function gets as its shutdown signal in tests: it
/// resolves when the test calls [`InProcess::shutdown`] or [`InProcess::stop`].
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running inside the test process through its crate's library
/// (`server::run(listener, config, shutdown)`), and the means to stop it as
/// Ctrl-C would.
pub struct InProcess {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl InProcess {
    /// Binds 127.0.0.1:0 and runs `serve(listener, shutdown)` on it.
    pub async fn start<F, Fut>(serve: F) -> InProcess
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        InProcess::start_on(listener, serve)
    }

    /// Runs `serve(listener, shutdown)` on a listener the test bound itself.
    pub fn start_on<F, Fut>(listener: TcpListener, serve: F) -> InProcess
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        InProcess {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Fires the shutdown signal without waiting for the server to return.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Fires the shutdown signal and waits for `run` to return `Ok`.
    pub async fn stop(mut self) {
        self.shutdown();
        within("the server to return", self.task)
            .await
            .expect("join")
            .expect("server result");
    }
}

/// Writes `input` to the child's stdin and closes it, while reading all of
/// its stdout (both at once: a child blocked on a full stdout pipe reads no
/// more stdin). Returns its exit code and stdout.
pub async fn feed_and_collect(
    mut child: tokio::process::Child,
    input: Vec<u8>,
) -> (Option<i32>, Vec<u8>) {
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let write = tokio::spawn(async move {
        stdin.write_all(&input).await.expect("write stdin");
    });
    let mut out = Vec::new();
    within("stdout to end", stdout.read_to_end(&mut out))
        .await
        .expect("read stdout");
    write.await.expect("stdin writer");
    let status = within("exit", child.wait()).await.expect("wait");
    (status.code(), out)
}

/// `tcp_server --stdio --port 0`, with raw pipes: stdout is data, and the
/// address comes on stderr. Returns the child, its address, and its stderr.
pub async fn stdio_server(
    args: &[&str],
) -> (
    tokio::process::Child,
    SocketAddr,
    BufReader<tokio::process::ChildStderr>,
) {
    let mut server = Command::new(binary("tcp_server"))
        .args(["--stdio", "--port", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tcp_server --stdio");
    let mut stderr = BufReader::new(server.stderr.take().expect("stderr"));
    let mut first = String::new();
    within("listening on", stderr.read_line(&mut first))
        .await
        .expect("read stderr");
    let addr = first
        .trim_end()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("the first stderr line was {first:?}"));
    (server, addr, stderr)
}
