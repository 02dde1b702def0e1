//! A local certificate authority, and a certificate for this machine.
//!
//! A TLS server needs a certificate that its clients trust. Public servers
//! get one from a public CA, which first checks that they own the name; no
//! public CA will sign `localhost`. So, like `mkcert`, a server started with
//! `--tls` and no `--cert` makes its own: a CA certificate (`ca.pem`), and a
//! certificate for `localhost`, `127.0.0.1` and `::1` signed by it
//! (`localhost.pem`, with its key in `localhost-key.pem`). Clients trust the
//! CA with `--cafile <dir>/ca.pem`, which the server prints.
//!
//! The CA's own private key is kept beside them, in `ca-key.pem`, because it
//! is what signs the client certificates for mutual TLS that
//! `--issue-client-cert NAME` makes ([`super::client_cert`]), as `mkcert
//! -client` signs with the CA key it keeps. (Earlier versions used the key
//! once and never wrote it down; they could sign nothing later.) The key is
//! as private as the directory: readable by you only (mode 0600, in a
//! directory that only you may enter, 0700), and whoever reads it can make
//! certificates for any name that `--cafile ca.pem` and
//! `--require-client-cert ca.pem` trust. To revoke everything the CA ever
//! signed, delete the directory: the next server started with `--tls` makes
//! a new CA, and clients then need the new `ca.pem`.
//!
//! The files are made once and reused, so a client keeps trusting the server
//! across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The CA's certificate, which clients pass to `--cafile`.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key, which signs client certificates; mode 0600.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The server's certificate, signed by the CA.
pub const CERT_FILE: &str = "localhost.pem";
/// The server certificate's private key.
pub const KEY_FILE: &str = "localhost-key.pem";

/// The names the local certificate holds: a client must reach the server by
/// one of them, or verification fails with a name mismatch.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Where the local certificates live when `--tls-dir` is not given:
/// `$XDG_DATA_HOME/networking-protocols/tls`, else
/// `~/.local/share/networking-protocols/tls`.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    let data = match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
        (Some(data), _) if !data.is_empty() => PathBuf::from(data),
        (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".local/share"),
        _ => {
            return Err(anyhow!(
                "no home directory for the local certificates: pass --tls-dir DIR, or --cert and --key"
            ));
        }
    };
    Ok(data.join("networking-protocols").join("tls"))
}

/// The local certificates in `dir`: made now if the directory does not
/// exist yet, reused otherwise. Returns whether they were made now.
///
/// Two servers starting at once make one set between them: each writes its
/// files to a directory of its own, then renames that into place, which the
/// file system does atomically; the one that loses uses the winner's files.
pub fn ensure(dir: &Path) -> anyhow::Result<bool> {
    if dir.join(CA_FILE).exists() {
        return Ok(false);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // A staging name no other server (and no other call in this process)
    // uses at the same time.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = dir
        .file_name()
        .map_or("tls".into(), |name| name.to_string_lossy());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let staging = parent.join(format!(".{name}-{}-{n}", std::process::id()));
    let made = write_new(&staging).and_then(|()| {
        std::fs::rename(&staging, dir).with_context(|| format!("cannot create {}", dir.display()))
    });
    match made {
        Ok(()) => Ok(true),
        // Another server got there first: its files are as good as ours.
        Err(_) if dir.join(CA_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(false)
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(error)
        }
    }
}

/// Makes a CA and a certificate for [`NAMES`] signed by it, into `dir`.
fn write_new(dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    create_private_dir(dir)?;
    let failed = |error: rcgen::Error| anyhow!("cannot make a local certificate: {error}");

    // The CA: a self-signed certificate that may sign others. Every key here
    // is ECDSA P-256, rcgen's default: small, fast, and understood by every
    // TLS library and browser.
    let ca_key = KeyPair::generate().map_err(failed)?;
    let ca = ca_params();
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    // Written now, while we hold it; `ca_key` moves into the issuer below.
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    // The server's certificate: its names (IP addresses become IP entries),
    // its public key, and the CA's signature over both.
    let names: Vec<String> = NAMES.iter().map(|name| name.to_string()).collect();
    let mut leaf = CertificateParams::new(names).map_err(failed)?;
    (leaf.distinguished_name).push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().map_err(failed)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(failed)?;

    write_file(&dir.join(CA_FILE), ca_cert.pem().as_bytes(), false)?;
    write_file(&dir.join(CA_KEY_FILE), ca_key_pem.as_bytes(), true)?;
    write_file(&dir.join(CERT_FILE), leaf_cert.pem().as_bytes(), false)?;
    write_file(
        &dir.join(KEY_FILE),
        leaf_key.serialize_pem().as_bytes(),
        true,
    )
}

/// What the CA certificate says about itself. The issuer of every
/// certificate it signs is this subject, so [`issuer`] rebuilds it from
/// here, byte for byte, to sign more.
fn ca_params() -> CertificateParams {
    let mut ca = CertificateParams::default();
    // pathLenConstraint 0: it signs end-entity certificates only, no other CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.distinguished_name).push(DnType::CommonName, "networking-protocols local CA");
    ca
}

/// The local CA in `dir`, ready to sign: its subject and its key from
/// [`CA_KEY_FILE`].
///
/// Errors: the directory holds no CA (run [`ensure`] first); it has no
/// [`CA_KEY_FILE`], as a directory made by an earlier version (the message
/// says to delete the directory); the key file cannot be read or holds no key.
pub fn issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_path = dir.join(CA_KEY_FILE);
    if !dir.join(CA_FILE).exists() {
        return Err(anyhow!("no local CA in {}", dir.display()));
    }
    if !key_path.exists() {
        return Err(anyhow!(
            "the local CA in {dir} has no {CA_KEY_FILE} (versions before --issue-client-cert \
             did not keep the CA's key), so it cannot issue client certificates: delete {dir} \
             and start the server again to make a new CA (clients then need the new {ca})",
            dir = dir.display(),
            ca = dir.join(CA_FILE).display(),
        ));
    }
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the local CA's key {}", key_path.display()))?;
    let key = KeyPair::from_pem(&pem).map_err(|error| {
        anyhow!(
            "{}: not the local CA's key ({error}): delete {} to make a new CA",
            key_path.display(),
            dir.display()
        )
    })?;
    Ok(Issuer::new(ca_params(), key))
}

/// Makes `dir`, readable and enterable by its owner only (0700 on Unix).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a new file (an existing one is an error). On Unix a `secret`
/// file is readable by its owner only (0600), any other by everyone (0644);
/// elsewhere the system's defaults apply.
pub(super) fn write_file(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    let _ = secret;
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))
}
