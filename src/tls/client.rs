//! The client side of TLS: whom to trust, what to present, and what each
//! failure means.
//!
//! A client checks the server's certificate in two ways. The *chain*: it must
//! be signed by a certificate authority the client trusts (the system's list,
//! or `--cafile`). The *name*: it must be for the host the client asked for, so
//! that a certificate bought for one site cannot stand in for another. Only
//! then do the encrypted bytes go to the server we meant, and not to someone
//! on the path who answers in its place.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
pub use tokio_rustls::client::TlsStream;
use tracing::warn;

use super::{cert_and_key_error, provider, read_certificates, read_private_key, read_roots};

/// The TLS flags every client shares (named as `mosquitto_pub`'s and
/// `curl`'s are).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Trust the server's certificate if this CA (PEM) signed it, instead of
    /// the system's CAs: for a local server, the ca.pem it printed
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Present this certificate (PEM) to a server that asks for one (mutual
    /// TLS), with --key
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// With --cert: its private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Do not check the server's certificate. The connection is still
    /// encrypted, but to whoever answers: anyone on the path can pose as the
    /// server and read everything. For tests only
    #[arg(long, conflicts_with = "cafile")]
    pub insecure: bool,
}

impl ClientTlsArgs {
    /// The first of these flags that was given, for an error when TLS is off
    /// (`--cafile needs --tls`).
    pub fn first_given(&self) -> Option<&'static str> {
        if self.cafile.is_some() {
            Some("--cafile")
        } else if self.cert.is_some() {
            Some("--cert")
        } else if self.insecure {
            Some("--insecure")
        } else {
            None
        }
    }

    /// The rustls config these flags ask for.
    ///
    /// Trusts `--cafile`, or else the operating system's CAs; presents
    /// `--cert` if given; with `--insecure`, logs a warning that says what it
    /// gives up. Errors: a file cannot be read, holds no certificate or key,
    /// or the key does not belong to the certificate.
    pub fn config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?;
        let builder = if self.insecure {
            warn!(
                "--insecure: the server's certificate is not checked, so the connection is \
                 encrypted but maybe to an impostor: anyone on the path can read and change it"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates("--cert", cert)?;
                let private_key = read_private_key("--key", key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|error| cert_and_key_error(error, cert, key))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The CAs we trust: `--cafile`'s, or the system's (on Linux, the
    /// bundle in /etc/ssl/certs that the distribution keeps up to date).
    fn roots(&self) -> anyhow::Result<RootCertStore> {
        if let Some(cafile) = &self.cafile {
            return read_roots("--cafile", cafile);
        }
        let mut roots = RootCertStore::empty();
        // Unreadable entries are skipped: one bad file in the system's store
        // should not stop us trusting the others.
        let system = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(system.certs);
        if added == 0 {
            bail!("found no trusted CAs on this system; pass --cafile FILE");
        }
        Ok(roots)
    }
}

/// How long the TLS handshake may take once TCP is connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the client's side of the TLS handshake on `tcp`, checking that the
/// server's certificate is valid for `host` (a name or an IP address).
///
/// Errors, each explained with its fix: the certificate is not trusted, is
/// for another name, has expired; the server does not speak TLS; the server
/// wants a client certificate; no answer within [`HANDSHAKE_TIMEOUT`].
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> anyhow::Result<TlsStream<TcpStream>> {
    // Brackets belong to URLs, not to the address: `[::1]` is `::1`.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string())
        .map_err(|_| anyhow!("{host:?} is neither a host name nor an IP address"))?;
    let server = tcp.peer_addr().map_or(host.to_string(), |a| a.to_string());
    let handshake = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => Err(anyhow!(
            "TLS handshake with {server} failed: {}",
            explain(&error, host)
        )),
        Err(_) => bail!(
            "TLS handshake with {server}: no answer within {HANDSHAKE_TIMEOUT:?}; \
             does the server speak TLS? (start it with --tls, or connect without TLS)"
        ),
    }
}

/// Explains a TLS failure on the client's side, with the fix: during the
/// handshake, or on a later read (in TLS 1.3 the server checks our
/// certificate after our side of the handshake is done).
pub fn explain(error: &io::Error, host: &str) -> String {
    let Some(tls) = super::rustls_error(error) else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the server closed the connection during the TLS handshake; \
                 does it speak TLS? (start it with --tls, or connect without TLS)"
                    .to_string()
            }
            _ => error.to_string(),
        };
    };
    match tls {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the server's certificate is not signed by a CA we trust; for a local \
             server, pass --cafile <the ca.pem the server printed>"
            .to_string(),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate is not for {host:?} ({tls}); connect by a name \
             the certificate holds (a local server's: localhost, 127.0.0.1, ::1)"
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!(
            "the server's certificate has expired ({tls}); the server needs a new one \
             (check this machine's clock too)"
        ),
        Error::InvalidCertificate(why) => format!("the server's certificate is not valid: {why}"),
        Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => format!(
            "the server refused us ({tls}): it asks for a client certificate; \
             pass --cert and --key"
        ),
        Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError),
        ) => format!(
            "the server refused our certificate (alert: {alert:?}); it must be signed \
             by the CA the server trusts (its --require-client-cert)"
        ),
        tls if super::is_not_tls(tls) => format!(
            "the answer is not TLS ({tls}); is the server started with --tls? \
             (or connect without TLS)"
        ),
        tls => tls.to_string(),
    }
}

/// Adds the explanation of a TLS failure to an error from a TLS connection
/// that was already up: a read or write that failed with a TLS alert (the
/// server refusing our certificate, say) gets the fix appended. Other errors
/// come back unchanged.
pub fn explain_failure(error: anyhow::Error, host: &str) -> anyhow::Error {
    let tls_cause = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .find(|cause| super::rustls_error(cause).is_some());
    match tls_cause {
        Some(cause) => anyhow!("{error}: {}", explain(cause, host)),
        None => error,
    }
}

/// A certificate verifier that accepts any certificate (`--insecure`).
///
/// It still checks the handshake's signatures, so the server must hold the
/// private key of the certificate it sent; it just does not ask who that
/// certificate belongs to, which is the whole point of a certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
