//! The server side of TLS: which certificate to present, whether to ask the
//! client for one, and the handshake on each accepted connection.
//!
//! A server builds a [`TlsAcceptor`] once, from the command line
//! ([`ServerTlsArgs::acceptor`]), and hands each accepted `TcpStream` to
//! [`accept`] inside that connection's own task: a handshake takes a round
//! trip or two, and a slow client must not hold up the accept loop.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, Error, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;
use tracing::info;

use super::{
    cert_and_key_error, client_cert, local, provider, read_certificates, read_private_key,
    read_roots,
};

/// The TLS flags every server shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Speak TLS: clients must connect with TLS (and trust our certificate)
    #[arg(long)]
    pub tls: bool,
    /// With --tls: our certificate chain (PEM), instead of the local one made
    /// for localhost
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// With --cert: its private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// With --tls: ask every client for a certificate signed by this CA
    /// (mutual TLS), and refuse clients without one
    #[arg(long, value_name = "CAFILE", requires = "tls")]
    pub require_client_cert: Option<PathBuf>,
    /// With --tls and no --cert: where the local CA and certificate are made
    /// once and kept [default: ~/.local/share/networking-protocols/tls]
    #[arg(long, value_name = "DIR", requires = "tls", conflicts_with = "cert")]
    pub tls_dir: Option<PathBuf>,
    /// With --tls and no --cert: also make a client certificate for mutual
    /// TLS, signed by the local CA, as NAME.pem and NAME-key.pem in the TLS
    /// directory (once; later starts reuse it), and log the flags that use it
    #[arg(
        long,
        value_name = "NAME",
        requires = "tls",
        conflicts_with = "cert",
        value_parser = client_cert::parse_name
    )]
    pub issue_client_cert: Option<String>,
}

impl ServerTlsArgs {
    /// The acceptor for `--tls`, or `None` without it.
    ///
    /// Without `--cert`, uses the local certificate in `--tls-dir`, making it
    /// first if needed, and logs where the CA is, for clients' `--cafile`;
    /// with `--issue-client-cert NAME`, also makes (or reuses) a client
    /// certificate there and logs the flags that use it.
    /// Errors: a file cannot be read or holds no certificate or key, or the
    /// key does not belong to the certificate; a client certificate cannot
    /// be issued ([`client_cert::issue`]).
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        Ok(self.config()?.map(TlsAcceptor::from))
    }

    /// The rustls config behind [`Self::acceptor`].
    pub fn config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        if !self.tls {
            return Ok(None);
        }
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                let dir = match &self.tls_dir {
                    Some(dir) => dir.clone(),
                    None => local::default_dir()?,
                };
                let made = local::ensure(&dir)?;
                let ca = dir.join(local::CA_FILE);
                let how = if made { "made" } else { "using" };
                info!(
                    "TLS: {how} a local certificate for {} in {}; clients trust it with --cafile {}",
                    local::NAMES.join(", "),
                    dir.display(),
                    ca.display()
                );
                if let Some(name) = &self.issue_client_cert {
                    let issued = client_cert::issue(&dir, name)?;
                    let how = if issued.made { "made" } else { "using" };
                    info!(
                        "TLS: {how} a client certificate for {name} in {}: a client passes \
                         --cert {} --key {}, to a server started with --require-client-cert {}",
                        dir.display(),
                        issued.cert.display(),
                        issued.key.display(),
                        ca.display()
                    );
                }
                (dir.join(local::CERT_FILE), dir.join(local::KEY_FILE))
            }
        };
        let chain = read_certificates("--cert", &cert)?;
        let private_key = read_private_key("--key", &key)?;

        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?;
        let builder = match &self.require_client_cert {
            None => builder.with_no_client_auth(),
            Some(cafile) => {
                let roots = read_roots("--require-client-cert", cafile)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .map_err(|error| {
                            anyhow!("--require-client-cert {}: {error}", cafile.display())
                        })?;
                info!(
                    "TLS: clients must present a certificate signed by {}",
                    cafile.display()
                );
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, private_key)
            .map_err(|error| cert_and_key_error(error, &cert, &key))?;
        Ok(Some(Arc::new(config)))
    }
}

/// How long a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What came of a TLS handshake on a newly accepted connection.
#[derive(Debug)]
pub enum Handshake {
    /// The handshake is done: reads and writes are now encrypted.
    Done(Box<TlsStream<TcpStream>>),
    /// The client's first byte is not a TLS handshake record (content type
    /// 22): it speaks plaintext. The connection is handed back untouched, so
    /// the server can answer in its own plaintext protocol that it wants TLS.
    NotTls(TcpStream),
    /// The handshake failed: why, explained, with the fix where one is clear.
    Failed(String),
}

/// Runs the server's side of the TLS handshake on `tcp`, for at most
/// [`HANDSHAKE_TIMEOUT`].
pub async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream) -> Handshake {
    // Every TLS connection starts with a record of type 22 (handshake) that
    // holds the ClientHello. `peek` looks at the first byte without taking
    // it, so a plaintext client's bytes stay in place for our answer.
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    match peeked {
        Err(_) => {
            return Handshake::Failed(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"));
        }
        Ok(Err(error)) => return Handshake::Failed(error.to_string()),
        Ok(Ok(0)) => return Handshake::Failed("closed before the TLS handshake".to_string()),
        Ok(Ok(_)) if first[0] != 22 => return Handshake::NotTls(tcp),
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Handshake::Done(Box::new(tls)),
        Ok(Err(error)) => Handshake::Failed(explain(&error)),
        Err(_) => Handshake::Failed(format!("not done within {HANDSHAKE_TIMEOUT:?}")),
    }
}

/// Explains why a client's handshake (or a later read) failed, from the
/// server's side.
pub fn explain(error: &io::Error) -> String {
    let Some(tls) = super::rustls_error(error) else {
        return error.to_string();
    };
    match tls {
        // The client's alert says why it refused our certificate, as well
        // as one alert can: a rustls client (ours) sends UnknownCA for a CA
        // it does not trust, and BadCertificate for a name the certificate
        // does not hold; others say CertificateUnknown for either.
        Error::AlertReceived(AlertDescription::UnknownCA) => {
            "the client does not trust the CA that signed our certificate (alert: \
             UnknownCA); it needs --cafile with that CA"
                .to_string()
        }
        Error::AlertReceived(AlertDescription::BadCertificate) => {
            "the client refused our certificate (alert: BadCertificate): most likely \
             it connected by a name or address the certificate does not hold (the \
             local one holds localhost, 127.0.0.1 and ::1)"
                .to_string()
        }
        Error::AlertReceived(alert @ AlertDescription::CertificateUnknown) => format!(
            "the client does not trust our certificate (alert: {alert:?}): it needs \
             --cafile with the CA that signed it, and to connect by a name the \
             certificate holds"
        ),
        Error::NoCertificatesPresented => "the client sent no certificate, and \
             --require-client-cert asks for one (a client passes --cert and --key)"
            .to_string(),
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the client's certificate is not signed by the --require-client-cert CA".to_string(),
        Error::InvalidCertificate(why) => format!("the client's certificate is not valid: {why}"),
        error => error.to_string(),
    }
}
