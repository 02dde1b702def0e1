//! A client certificate for mutual TLS, issued by the local CA.
//!
//! With `--require-client-cert CAFILE` a server asks every client for a
//! certificate signed by that CA. A client gets one from whoever holds the
//! CA's key: a device maker, a company's CA, or, for the local CA that
//! [`super::local`] makes, you. `--issue-client-cert NAME` signs one with the
//! CA's key (`ca-key.pem`), as `mkcert -client` does, into the same
//! directory: `NAME.pem`, and its key in `NAME-key.pem` (readable by you
//! only). They are made once and reused on later starts.
//!
//! What rustls's `WebPkiClientVerifier`, behind `--require-client-cert`,
//! asks of a client certificate, and how ours answers:
//!
//! - a chain to a CA in CAFILE, with signatures that check out, and dates
//!   that include today: the local CA signs it, valid until the year 4096
//!   (rcgen's default; deleting the directory is how you revoke it);
//! - not a CA itself (RFC 5280 §4.2.1.9: BasicConstraints cA false or
//!   absent): we leave BasicConstraints out;
//! - Extended Key Usage, if the certificate has one, must include
//!   id-kp-clientAuth (RFC 5280 §4.2.1.12, OID 1.3.6.1.5.5.7.3.2): ours
//!   holds that purpose and no other, so it cannot pass for a server's
//!   certificate. OpenSSL calls this purpose "SSL client".
//!
//! rustls does not read Key Usage; OpenSSL does, so we set digitalSignature,
//! what the client's key does in the handshake (it signs CertificateVerify,
//! RFC 8446 §4.4.3). The verifier checks no name either: NAME goes in the
//! subject (CN=NAME) for people and for servers that want to know who
//! connected, and the certificate has no subjectAltName.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow, bail};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::{local, provider, read_certificates, read_roots};

/// The longest NAME, in bytes: RFC 5280's upper bound for a common name
/// (ub-common-name, 64 characters; every character we allow is one byte).
pub const MAX_NAME: usize = 64;

/// A client certificate and its key, in the local CA's directory.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// `<dir>/NAME.pem`, for a client's `--cert`.
    pub cert: PathBuf,
    /// `<dir>/NAME-key.pem` (mode 0600), for a client's `--key`.
    pub key: PathBuf,
    /// Whether it was made now; `false`: an earlier start made it.
    pub made: bool,
}

/// Checks `--issue-client-cert NAME` (clap calls this): NAME becomes a file
/// name and the certificate's common name, so it holds ASCII letters,
/// digits, `-`, `_` and `.` only, at most [`MAX_NAME`] of them, and does not
/// start with `.` (a hidden file) or `-` (`rm -x.pem` reads as an option).
/// `ca` and `localhost` are refused: those files are the CA's and the
/// server's own.
///
/// Errors: a message for clap to print after `invalid value`.
pub fn parse_name(name: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() {
        return Err("give a name, such as alice".to_string());
    }
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "{c:?} is not allowed: a name holds letters, digits, '-', '_' and '.' only"
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err("a name may not start with '.' or '-'".to_string());
    }
    // Neither file NAME makes (NAME.pem, NAME-key.pem) may be one of the
    // local CA's or the server's own: `ca-key` would name the CA's key.
    // Compared without case: on a case-insensitive file system (macOS,
    // Windows) CA.pem is ca.pem.
    let ours = [
        local::CA_FILE,
        local::CA_KEY_FILE,
        local::CERT_FILE,
        local::KEY_FILE,
    ];
    for made in [format!("{name}.pem"), format!("{name}-key.pem")] {
        if let Some(taken) = ours.iter().find(|taken| taken.eq_ignore_ascii_case(&made)) {
            return Err(format!(
                "{taken} is one of the local CA's or the server's own files: choose another name"
            ));
        }
    }
    Ok(name.to_string())
}

/// The client certificate NAME in `dir`: made now, signed by the local CA
/// there, if `NAME.pem` does not exist yet, reused otherwise. `name` must
/// have passed [`parse_name`], and the CA must exist ([`local::ensure`]).
///
/// Either way the certificate is checked as a server started with
/// `--require-client-cert <dir>/ca.pem` will check it. Errors: the CA
/// cannot sign (no `ca-key.pem`: a directory made by an earlier version);
/// one of the two files exists without the other; the certificate does not
/// verify against `ca.pem`; a file cannot be read or written. Where a file
/// is wrong, the message says which to delete.
pub fn issue(dir: &Path, name: &str) -> anyhow::Result<ClientCert> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let delete_both = format!(
        "delete {} and {} to issue a new one",
        cert.display(),
        key.display()
    );
    if cert.exists() {
        if !key.exists() {
            bail!(
                "{} has no key beside it ({}): delete it to issue a new one",
                cert.display(),
                key.display()
            );
        }
        let chain = read_certificates("--issue-client-cert", &cert)
            .map_err(|error| anyhow!("{error}: {delete_both}"))?;
        verify(verifier(dir)?.as_ref(), &chain).map_err(|why| {
            anyhow!(
                "{} does not verify against {}: {why}: {delete_both}",
                cert.display(),
                dir.join(local::CA_FILE).display()
            )
        })?;
        return Ok(ClientCert {
            cert,
            key,
            made: false,
        });
    }
    if key.exists() {
        bail!(
            "{} exists without {} (a start that was interrupted, or another server \
             issuing {name} at this moment): delete it and start again",
            key.display(),
            cert.display()
        );
    }
    make(dir, name, &cert, &key)?;
    Ok(ClientCert {
        cert,
        key,
        made: true,
    })
}

/// Signs a new certificate for `name`, checks it, and writes it to `cert`
/// and its key to `key`.
fn make(dir: &Path, name: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let issuer = local::issuer(dir)?;
    let failed = |error: rcgen::Error| anyhow!("cannot make a client certificate: {error}");
    let mut params = CertificateParams::default();
    (params.distinguished_name).push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().map_err(failed)?;
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(failed)?;
    // A key that does not belong to ca.pem signs certificates no server
    // accepts: we find out here, before writing anything.
    verify(verifier(dir)?.as_ref(), std::slice::from_ref(leaf.der())).map_err(|why| {
        anyhow!(
            "a certificate signed with {} does not verify against {} ({why}): the two do \
             not belong together; delete {} to make a new CA",
            dir.join(local::CA_KEY_FILE).display(),
            dir.join(local::CA_FILE).display(),
            dir.display()
        )
    })?;

    // The key first, then the certificate, whole, by a rename: a NAME.pem
    // that exists has its key beside it. `write_file` refuses to replace a
    // file, so of two servers issuing NAME at once, one writes the key and
    // the other stops with an error.
    local::write_file(key, leaf_key.serialize_pem().as_bytes(), true)?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let staging = dir.join(format!(".{name}-{}-{n}.pem", std::process::id()));
    let written = local::write_file(&staging, leaf.pem().as_bytes(), false).and_then(|()| {
        std::fs::rename(&staging, cert).with_context(|| format!("cannot write {}", cert.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
        let _ = std::fs::remove_file(key);
    }
    written
}

/// The check a server started with `--require-client-cert <dir>/ca.pem`
/// makes of a client's certificate: the same verifier, from the same file.
fn verifier(dir: &Path) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let cafile = dir.join(local::CA_FILE);
    let roots = read_roots("--require-client-cert", &cafile)?;
    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
        .build()
        .map_err(|error| anyhow!("{}: {error}", cafile.display()))
}

/// Runs `verifier` on `chain`, the client's certificate first.
fn verify(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(rustls::Error::NoCertificatesPresented);
    };
    verifier.verify_client_cert(end_entity, intermediates, UnixTime::now())?;
    Ok(())
}
