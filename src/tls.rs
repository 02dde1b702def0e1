//! TLS for the TCP-based lessons: the same flags, certificates and error
//! messages for every server and client.
//!
//! TLS (RFC 8446 for version 1.3) runs between TCP and the protocol above it.
//! Before the first byte of data, client and server do a handshake: they agree
//! on keys (an ephemeral Diffie-Hellman exchange, so a recording of the
//! traffic stays unreadable even if a key leaks later), and the server proves
//! who it is with a *certificate*: its public key and names, signed by a
//! certificate authority (CA) that the client already trusts. From then on
//! every record is encrypted and carries a tag that detects any change.
//!
//! We use [rustls](https://docs.rs/rustls) with the `ring` cryptography, and
//! [tokio-rustls](https://docs.rs/tokio-rustls), which wraps a `TcpStream` in
//! a `TlsStream` that reads and writes like the stream it wraps: the code of a
//! lesson above it does not change.
//!
//! - [`server`]: `--tls`, `--cert`/`--key`, `--require-client-cert`,
//!   `--issue-client-cert`, and the handshake on an accepted connection
//!   ([`server::accept`]);
//! - [`client`]: `--cafile`, `--cert`/`--key`, `--insecure`, and the
//!   handshake after connecting ([`client::connect`]);
//! - [`local`]: the local certificate authority and `localhost` certificate a
//!   server makes for itself when given none;
//! - [`client_cert`]: a client certificate for mutual TLS, signed by that
//!   local CA (`--issue-client-cert NAME`);
//! - this file: reading PEM files, and explaining rustls's errors.

pub mod client;
pub mod client_cert;
pub mod local;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use rustls::RootCertStore;
pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What a finished handshake agreed on, in words for a log line:
/// `TLS 1.3, TLS13_AES_256_GCM_SHA384` (the version, then the cipher suite:
/// key exchange and cipher in TLS 1.2's names, the cipher and hash in 1.3's).
pub fn agreed(session: &rustls::CommonState) -> String {
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "no version yet".to_string(),
    };
    match session.negotiated_cipher_suite() {
        Some(suite) => format!("{version}, {:?}", suite.suite()),
        None => version,
    }
}

/// The cryptography every TLS config here uses: `ring`.
///
/// rustls leaves the choice to the program. Its default, `aws-lc-rs`, is a C
/// library that adds about 40 s to a fresh build; `ring` has what TLS 1.2
/// and 1.3 need.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (`-----BEGIN CERTIFICATE-----`).
///
/// `flag` names where the path came from (`--cert`), for the error message.
/// Errors: the file cannot be read, or holds no certificate.
pub fn read_certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{flag} {}: not a valid PEM file: {error}", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{flag} {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

/// Reads the first private key of a PEM file (PKCS #8, PKCS #1 or SEC1).
///
/// Errors: the file cannot be read, or holds no private key.
pub fn read_private_key(flag: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        anyhow!(
            "{flag} {}: no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----)",
            path.display()
        )
    })
}

/// The CAs of a PEM file, as a store to verify the other side against.
///
/// Errors: as [`read_certificates`], or a certificate rustls cannot use as a CA.
pub fn read_roots(flag: &str, path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in read_certificates(flag, path)? {
        roots
            .add(ca)
            .map_err(|error| anyhow!("{flag} {}: {error}", path.display()))?;
    }
    Ok(roots)
}

/// The error for a certificate and key rustls would not pair: the one
/// mistake with a clear fix (a key made with another certificate) says so.
pub fn cert_and_key_error(error: rustls::Error, cert: &Path, key: &Path) -> anyhow::Error {
    match error {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "--key {} does not belong to the certificate in --cert {}: \
             pass the key that was made with that certificate",
            key.display(),
            cert.display()
        ),
        error => anyhow!(
            "--cert {} with --key {}: {error}",
            cert.display(),
            key.display()
        ),
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| anyhow!("cannot read {flag} {}: {error}", path.display()))
}

/// The rustls error inside an I/O error, if there is one: tokio-rustls
/// reports a failed handshake or a TLS alert as an `io::Error` that wraps it.
pub fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Whether a failed read means "the peer does not speak TLS": its bytes do not
/// parse as TLS records (a plaintext answer, or an echo of our own hello).
pub fn is_not_tls(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
    )
}
