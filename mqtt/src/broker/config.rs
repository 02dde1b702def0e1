//! The broker's settings: one field per flag of `mqtt_broker`, and the
//! binary's defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use websocket::origin::AllowedOrigins;

/// The broker's settings; [`BrokerConfig::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen. Port 0 means "any free port".
    pub addr: SocketAddr,
    /// The largest packet accepted, in bytes after the fixed header (for a
    /// PUBLISH: topic, packet id and payload); a client that sends a larger
    /// one is disconnected.
    pub max_payload_bytes: usize,
    /// Most clients connected at once; one more gets CONNACK 3.
    pub max_connections: usize,
    /// Logins (name, password) clients may use. With some, or with a
    /// password file, clients must log in with one of them or one of the
    /// file's; anyone else gets CONNACK 5.
    pub users: Vec<(String, String)>,
    /// A password file in `mosquitto_passwd`'s format, whose users may log
    /// in too (see `frontdoor/logins.rs`); with one, even an empty one, a
    /// login is required.
    pub password_file: Option<PathBuf>,
    /// Bytes queued for one client that reads slower than messages arrive;
    /// past this, a client that is not reading loses messages (logged). See
    /// `frontdoor/congestion.rs`. A TLS client's encrypted records waiting
    /// for its socket (up to about 64 KiB, rustls's limit) are not counted.
    pub max_queued_bytes: usize,
    /// Most subscriptions one client may hold; a SUBSCRIBE to a new filter
    /// past it gets the failure code 0x80, and the log says so.
    pub max_subscriptions: usize,
    /// The longest keep-alive, in seconds, that an MQTT 5 client may use:
    /// one that asks for more, or for none, is told this one in CONNACK
    /// (Server Keep Alive, spec §3.2.2.3.14) and held to it. `None`: each
    /// client's own. A 3.1.1 client cannot be told, and keeps its own.
    pub max_keep_alive: Option<u16>,
    /// With `Some`, clients speak MQTT over TLS (see `frontdoor/relay/tls.rs`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `Some`, a second port where clients speak MQTT over WebSocket
    /// (`ws://`, see `frontdoor/websocket.rs`). Port 0 means "any free port".
    pub websocket_addr: Option<SocketAddr>,
    /// The web pages whose WebSocket may connect there, besides programs
    /// and the broker's own (`--allow-origin`).
    pub allowed_origins: AllowedOrigins,
    /// With `Some`, retained messages are saved to this file within a
    /// second of a change and read back at start (see
    /// `frontdoor/persist.rs`).
    pub persistence_file: Option<PathBuf>,
    /// How often the `$SYS/broker/...` statistics are published; `None` for
    /// never (see `frontdoor/sys.rs`).
    pub sys_interval: Option<Duration>,
    /// An ACL file in Mosquitto's syntax: what each client may read and
    /// write (see `frontdoor/acl.rs`).
    pub acl_file: Option<PathBuf>,
}

/// The default for `--max-queued-bytes`: 8 MiB per client.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// The default for `--max-subscriptions`: 1,000 filters per client. Each
/// costs the broker a few hundred bytes (see the README's "How far one
/// machine goes"); a device needs a handful, a dashboard perhaps hundreds.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1000;

/// The default for `--max-payload-bytes`: 1 MiB. MQTT allows 256 MiB, but a
/// learner's broker that buffers messages in memory does better with a
/// limit that a mistake (say, publishing a whole file) cannot blow through.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], crate::DEFAULT_PORT)),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: 1000,
            users: Vec::new(),
            password_file: None,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_keep_alive: None,
            tls: None,
            websocket_addr: None,
            allowed_origins: AllowedOrigins::own_only(),
            persistence_file: None,
            sys_interval: Some(Duration::from_secs(10)),
            acl_file: None,
        }
    }
}
