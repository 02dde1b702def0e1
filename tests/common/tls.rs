//! Certificates for the TLS tests: a temporary directory, a test
//! certificate authority that signs server and client certificates, and a
//! TLS connection from the test itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use networking_protocols::tls::client::{ClientTlsArgs, TlsStream};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
use tokio::net::TcpStream;

use super::within;

/// The TLS handshake over `tcp` with a server whose certificate names
/// `localhost`, trusting `cafile`.
pub async fn connect(tcp: TcpStream, cafile: &str) -> TlsStream<TcpStream> {
    let options = ClientTlsArgs {
        cafile: Some(cafile.into()),
        ..ClientTlsArgs::default()
    };
    let handshake =
        networking_protocols::tls::client::connect(options.config().unwrap(), "localhost", tcp);
    within("the TLS handshake", handshake).await.unwrap()
}

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tls-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test certificate authority that writes PEM files into a directory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    /// A new CA; its certificate is `<name>.pem` in `dir`.
    pub fn new(dir: &TempDir, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (params.distinguished_name).push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.0.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            dir: dir.0.clone(),
            name: name.to_string(),
        }
    }

    pub fn cafile(&self) -> String {
        path(&self.dir.join(format!("{}.pem", self.name)))
    }

    /// Signs a certificate for `names`; writes `<file>.pem` and
    /// `<file>-key.pem` and returns their paths.
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (path(&cert_path), path(&key_path))
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}
