//! Which web pages may open a WebSocket to this server: the `Origin` check.
//!
//! A browser lets any page open a WebSocket to any address, including
//! `ws://127.0.0.1:8765/` on your own machine: the same-origin rules that keep
//! one site from reading another's pages do not apply to WebSocket. So a page
//! on any site you visit could join this server's chat from inside your
//! browser and read what you type. What the browser does do is say which page
//! asks: every WebSocket request from a browser carries an `Origin` header
//! (`Origin: https://evil.example`) that the page cannot change. RFC 6455
//! §10.2 leaves the rest to the server: check the Origin you expect, and
//! answer any other with `403 Forbidden` (§4.2.2).
//!
//! We accept an upgrade when:
//!
//! - it carries no `Origin`: it comes from a program, not from a page in a
//!   browser (our client, websocat, Python's `websockets`), and a program can
//!   send whatever headers it likes anyway, so the check could not stop it;
//! - its `Origin` is this server's own page: `http://` (or `https://` with
//!   TLS) followed by the `Host` the request was sent to, when that host is
//!   `localhost` or an IP address;
//! - its `Origin` is listed with `--allow-origin`, or the list holds `*`.
//!
//! Why not every page whose Origin matches its `Host`? Because a name in DNS
//! belongs to whoever controls that name: `evil.example` can first point at
//! the attacker's server, serve its page, then point at `127.0.0.1` (DNS
//! rebinding). The page's WebSocket then reaches us with `Origin:
//! http://evil.example:8765` and `Host: evil.example:8765`, which match. An IP
//! address cannot be re-pointed, and browsers resolve `localhost` themselves,
//! so only those stand for "this machine". To serve the page under another
//! name, list it: `--allow-origin http://mybox.local:8765`.

use std::net::{Ipv4Addr, Ipv6Addr};

use tokio_tungstenite::tungstenite::handshake::server::Request;

/// The pages allowed to open a WebSocket here, besides the server's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// `--allow-origin '*'`: every page may connect.
    any: bool,
    /// Origins as browsers write them: lowercase `scheme://host[:port]`.
    listed: Vec<String>,
}

/// Why an upgrade was refused: the `Origin` it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignOrigin(pub String);

impl AllowedOrigins {
    /// The server's own page only (the default).
    pub fn own_only() -> Self {
        AllowedOrigins::default()
    }

    /// The server's own page and each of `origins`: values of `--allow-origin`
    /// (check each with [`parse`] first); `*` allows every page.
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        let mut allowed = AllowedOrigins::default();
        for origin in origins {
            if origin == "*" {
                allowed.any = true;
            } else {
                allowed.listed.push(normalize(&origin));
            }
        }
        allowed
    }

    /// Decides whether `request`, which arrived over TLS if `tls`, may be
    /// upgraded. Returns the foreign `Origin` when it may not.
    pub fn check(&self, request: &Request, tls: bool) -> Result<(), ForeignOrigin> {
        let headers = request.headers();
        let Some(origin) = headers.get("origin") else {
            return Ok(());
        };
        // A header that is not text is no origin we could have allowed.
        let origin = origin.to_str().unwrap_or("").trim();
        if self.any {
            return Ok(());
        }
        let normalized = normalize(origin);
        if self.listed.contains(&normalized) {
            return Ok(());
        }
        let host = headers.get("host").and_then(|h| h.to_str().ok());
        if let Some(host) = host.map(str::trim)
            && names_this_machine(host)
        {
            // The page's origin is the scheme and the host:port it was
            // loaded from; browsers leave out a default port, as in `Host`.
            let scheme = if tls { "https" } else { "http" };
            if normalized == normalize(&format!("{scheme}://{host}")) {
                return Ok(());
            }
        }
        Err(ForeignOrigin(origin.to_string()))
    }
}

/// Checks one `--allow-origin` value: `*`, `null` (the origin of local files
/// and sandboxed pages), or `scheme://host[:port]` with no path, as a browser
/// sends it (`http://localhost:3000`).
pub fn parse(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" || value == "null" {
        return Ok(value.to_string());
    }
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        value
            .to_ascii_lowercase()
            .strip_prefix(scheme)
            .map(String::from)
    });
    match rest.as_deref().map(|r| r.strip_suffix('/').unwrap_or(r)) {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {
            Ok(value.to_string())
        }
        _ => Err(format!(
            "expected an origin such as http://localhost:3000 \
             (http:// or https://, a host, an optional port, no path), or '*'; not {value:?}"
        )),
    }
}

/// An origin as browsers serialize it (RFC 6454 §6.2): lowercase, no path,
/// and no port when it is the scheme's default.
fn normalize(origin: &str) -> String {
    let origin = origin.trim().to_ascii_lowercase();
    let origin = origin.strip_suffix('/').unwrap_or(&origin);
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme)
            && let Some(bare) = origin.strip_suffix(port)
        {
            return bare.to_string();
        }
    }
    origin.to_string()
}

/// Whether a `Host` header (`127.0.0.1:8765`, `[::1]:8765`, `localhost:8765`)
/// names this machine in a way that no DNS record can change.
fn names_this_machine(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 address is written in brackets, so its colons are not
        // mistaken for the port's.
        Some(bracketed) => {
            return bracketed
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok()
}
