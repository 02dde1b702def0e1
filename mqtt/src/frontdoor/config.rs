//! The front door's settings, one field per thing a broker operator
//! chooses (`broker.rs` fills them in from the command line).

use std::sync::Arc;
use std::time::Duration;

use ::websocket::origin::AllowedOrigins;

use super::acl::Acl;
use super::logins::Logins;
use super::persist::Persistence;
use super::relay::Limits;

/// The front door's settings.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    /// Most clients connected at once; one more gets CONNACK 3.
    pub max_connections: usize,
    /// Who may log in (`logins.rs`); with nobody required, everybody.
    pub logins: Arc<Logins>,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Duration,
    /// The limits on packet size and queued bytes per client.
    pub limits: Limits,
    /// With `Some`, clients speak MQTT over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The web pages whose WebSocket may connect at the WebSocket port,
    /// besides programs and the broker's own (see `websocket.rs`).
    pub websocket_origins: AllowedOrigins,
    /// With `Some`, retained messages are kept in a file across restarts
    /// (`persist.rs`).
    pub persistence: Option<Persistence>,
    /// How often the `$SYS` statistics are published (`sys.rs`); `None`
    /// for never.
    pub sys_interval: Option<Duration>,
    /// With `Some`, what each client may read and write (`acl.rs`).
    pub acl: Option<Arc<Acl>>,
}
