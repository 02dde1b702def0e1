//! `mqtt_broker --password-file` in `mosquitto_passwd`'s format: a file
//! Mosquitto's tool wrote works here, one `--add-user` wrote works in
//! Mosquitto (ignored: needs mosquitto), each login gets the CONNACK code
//! Mosquitto gives it, and a malformed line stops the start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;

use common::mqtt::{Mosquitto, connect_packet, read_more};
use common::tls::TempDir;
use common::{Server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The CONNACK return code for a 3.1.1 CONNECT with `name` and `password`.
async fn login(addr: SocketAddr, name: &str, password: &str) -> u8 {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(&connect_packet("login", name, password))
        .await
        .expect("write");
    let mut buffer = Vec::new();
    while buffer.len() < 4 {
        assert!(
            read_more(&mut stream, &mut buffer).await,
            "closed before CONNACK"
        );
    }
    assert_eq!(buffer[..2], [0x20, 2], "not a CONNACK: {buffer:?}");
    buffer[3]
}

/// The logins the tests try, and the CONNACK code each must get: 0
/// accepted, 5 not authorized (Mosquitto's answer to a wrong login).
const LOGINS: [(&str, &str, u8); 4] = [
    ("alice", "secret", 0),
    ("alice", "Secret", 5),
    ("alice", "", 5),
    ("mallory", "secret", 5),
];

/// `--add-user` writes a `$7$` line to a new file, readable by its owner
/// only, and the broker then lets that user in, and no one else.
#[tokio::test]
async fn add_user_then_log_in() {
    let dir = TempDir::new();
    let file = dir.path("passwords");
    let broker = Server::start(
        "mqtt_broker",
        &["--password-file", &file, "--add-user", "alice:secret"],
    )
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$7$101$"), "{text}");
    assert_eq!(text.lines().count(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for (name, password, code) in LOGINS {
        assert_eq!(
            login(broker.addr, name, password).await,
            code,
            "{name}/{password}"
        );
    }
    drop(broker);

    // A second user, and a new password for the first: one line each.
    let broker = Server::start(
        "mqtt_broker",
        &["--password-file", &file, "--add-user", "alice:changed"],
    )
    .await;
    assert_eq!(login(broker.addr, "alice", "secret").await, 5);
    assert_eq!(login(broker.addr, "alice", "changed").await, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
}

/// A line that is not `NAME:$7$...` (or `$6$`) names the file and the line,
/// and the broker does not start: it would otherwise let in fewer users
/// than the file lists, or, with none left, everyone.
#[tokio::test]
async fn a_malformed_line_stops_the_start() {
    let dir = TempDir::new();
    let file = dir.path("passwords");
    std::fs::write(&file, "# users\n\nbob secret\n").unwrap();
    let (status, out, err) = common::run(
        "mqtt_broker",
        &["--port", "0", "--password-file", &file],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err.lines().last(),
        Some(format!("error: {file}:3: expected NAME:HASH, as mosquitto_passwd writes").as_str())
    );
    std::fs::write(&file, "bob:secret\n").unwrap();
    let (status, _, err) = common::run(
        "mqtt_broker",
        &["--port", "0", "--password-file", &file],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {file}:1: the password of \"bob\" is not a hash"
        )),
        "{err}"
    );
}

/// A password file that lists nobody yet lets nobody in, as Mosquitto's
/// does: not everybody, as no file at all would.
#[tokio::test]
async fn a_password_file_with_no_users_lets_nobody_in() {
    let dir = TempDir::new();
    let file = dir.path("passwords");
    std::fs::write(&file, "# nobody yet\n").unwrap();
    let broker = Server::start("mqtt_broker", &["--password-file", &file]).await;
    assert_eq!(login(broker.addr, "alice", "secret").await, 5);
    assert_eq!(login(broker.addr, "", "").await, 5);
}

/// The same password file, written by `mosquitto_passwd`, in both brokers:
/// every login gets the same CONNACK code. Then a file our `--add-user`
/// wrote lets its user into Mosquitto.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto"]
async fn mosquitto_and_we_read_each_others_password_files() {
    let mosquitto = Mosquitto::start(Some(("alice", "secret"))).await;
    let file = mosquitto.password_file();
    let file = file.to_str().unwrap();
    let ours = Server::start("mqtt_broker", &["--password-file", file]).await;
    for (name, password, code) in LOGINS {
        assert_eq!(
            login(mosquitto.addr, name, password).await,
            code,
            "Mosquitto: {name}/{password}"
        );
        assert_eq!(
            login(ours.addr, name, password).await,
            code,
            "ours: {name}/{password}"
        );
    }
    drop(ours);
    drop(mosquitto);

    let dir = TempDir::new();
    let ours_file = dir.path("ours");
    let ours = Server::start(
        "mqtt_broker",
        &["--password-file", &ours_file, "--add-user", "bob:hunter2"],
    )
    .await;
    drop(ours);
    // Mosquitto started as root runs as the user `mosquitto`, which must be
    // able to read the file; ours is the owner's only (0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&ours_file, readable).unwrap();
    }
    let mosquitto = Mosquitto::start_with(
        None,
        &format!("allow_anonymous false\npassword_file {ours_file}\n"),
    )
    .await;
    assert_eq!(login(mosquitto.addr, "bob", "hunter2").await, 0);
    assert_eq!(login(mosquitto.addr, "bob", "hunter3").await, 5);
}
