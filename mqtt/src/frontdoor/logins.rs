//! Who may log in: `--user NAME:PASSWORD` on the command line, and
//! `--password-file PATH` in the format Mosquitto's `mosquitto_passwd`
//! writes, so an existing file works as it is.
//!
//! A password file never holds a password, only a salted hash of it:
//! whoever reads the file cannot log in with what it holds, and must guess
//! each password separately (the salt, random per user, keeps one guess from
//! testing every user at once). One line per user:
//!
//! ```text
//! alice:$7$101$+fiEp8TMoJ/uhDtv$7yWksCd/mMfWz2AnTKzedWTHhGQjWqwc/bl/NROEv...
//! ```
//!
//! `$7$` is Mosquitto 2's format: PBKDF2 with HMAC-SHA-512, the iteration
//! count (101), the salt and the 64-byte result, both in base64. PBKDF2 is
//! slow on purpose, so that guessing costs; 101 rounds, Mosquitto's default
//! kept here so that files move between the brokers, is far below what is
//! advised today (OWASP: 210,000), so keep the file as private as a
//! password. `$6$` (Mosquitto 1.x: one SHA-512 of the password and the
//! salt, fast to guess) is read too.
//! `--add-user NAME:PASSWORD` writes a `$7$` line, as `mosquitto_passwd -b`
//! does, replacing the user's line if there is one.

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use subtle::ConstantTimeEq;

/// The iterations `--add-user` uses: `mosquitto_passwd`'s.
const ITERATIONS: u32 = 101;

/// The salt `--add-user` makes, in bytes: `mosquitto_passwd`'s.
const SALT_BYTES: usize = 12;

/// The most PBKDF2 iterations a line may ask for: each login check runs
/// them, so a file cannot make one check take seconds.
const MAX_ITERATIONS: u32 = 1_000_000;

/// The logins the broker accepts. With none, everybody gets in.
#[derive(Debug, Clone, Default)]
pub struct Logins {
    /// From `--user NAME:PASSWORD`.
    plain: Vec<(String, String)>,
    /// From `--password-file`, by user name.
    hashed: HashMap<String, Hash>,
    /// Whether a password file was given: then a login is required even
    /// if the file lists nobody yet (nobody gets in, rather than everybody).
    file_given: bool,
}

/// A password as a password file keeps it.
#[derive(Debug, Clone)]
enum Hash {
    /// `$7$`: PBKDF2-HMAC-SHA-512.
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512 of the password, then the salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

impl Logins {
    /// The logins given as `--user NAME:PASSWORD`.
    pub fn new(plain: Vec<(String, String)>) -> Self {
        Logins {
            plain,
            hashed: HashMap::new(),
            file_given: false,
        }
    }

    /// Adds the users of the password file at `path`.
    ///
    /// Errors: the file cannot be read, or a line is neither empty, a `#`
    /// comment nor `NAME:$7$...`/`NAME:$6$...`: the error names the file
    /// and the line, and the broker does not start.
    pub fn read_password_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?;
        self.file_given = true;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = parse_line(line)
                .map_err(|why| anyhow!("{}:{}: {why}", path.display(), number + 1))?;
            self.hashed.insert(name.to_string(), hash);
        }
        Ok(())
    }

    /// Whether a login is required: some `--user`, or a password file
    /// (even one that lists nobody).
    pub fn required(&self) -> bool {
        !self.plain.is_empty() || self.file_given
    }

    /// Whether `name` may log in with `password`.
    pub fn check(&self, name: &str, password: &[u8]) -> bool {
        let plain = self
            .plain
            .iter()
            .any(|(user, secret)| user == name && bool::from(secret.as_bytes().ct_eq(password)));
        match self.hashed.get(name) {
            Some(hash) => hash.matches(password) || plain,
            // An unknown name costs what a known one does, so that the time
            // a refusal takes does not tell which names exist.
            None => {
                let _ = dummy().matches(password);
                plain
            }
        }
    }
}

impl Hash {
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Hash::Sha512 { salt, hash } => {
                let mut context = digest::Context::new(&digest::SHA512);
                context.update(password);
                context.update(salt);
                bool::from(context.finish().as_ref().ct_eq(hash))
            }
        }
    }
}

/// A hash that matches no password, checked for an unknown user name.
fn dummy() -> Hash {
    Hash::Pbkdf2 {
        iterations: NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN),
        salt: vec![0; SALT_BYTES],
        hash: vec![0; 64],
    }
}

/// One line of a password file: the user and the hash.
fn parse_line(line: &str) -> Result<(&str, Hash), String> {
    let (name, hash) = line
        .split_once(':')
        .ok_or("expected NAME:HASH, as mosquitto_passwd writes")?;
    if name.is_empty() {
        return Err("a line without a user name".into());
    }
    let decode = |text: &str, what: &str| {
        STANDARD
            .decode(text)
            .map_err(|error| format!("{what} is not base64: {error}"))
    };
    let fields: Vec<&str> = hash.split('$').collect();
    match fields.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .filter(|n| n.get() <= MAX_ITERATIONS)
                .ok_or(format!(
                    "the iteration count is not a number from 1 to {MAX_ITERATIONS}"
                ))?;
            let hash = decode(hash, "the hash")?;
            if hash.len() != 64 {
                return Err(format!("a $7$ hash is 64 bytes, not {}", hash.len()));
            }
            Ok((
                name,
                Hash::Pbkdf2 {
                    iterations,
                    salt: decode(salt, "the salt")?,
                    hash,
                },
            ))
        }
        ["", "6", salt, hash] => {
            let hash = decode(hash, "the hash")?;
            if hash.len() != 64 {
                return Err(format!("a $6$ hash is 64 bytes, not {}", hash.len()));
            }
            Ok((
                name,
                Hash::Sha512 {
                    salt: decode(salt, "the salt")?,
                    hash,
                },
            ))
        }
        _ => Err(format!(
            "the password of {name:?} is not a hash this broker reads ($7$ or $6$, as \
             mosquitto_passwd writes; a password in plain text belongs in --user)"
        )),
    }
}

/// Adds `name` with `password` to the password file at `path` as a `$7$`
/// line, replacing the user's line if there is one. The new file is written
/// beside the old one (under a name of its own) and renamed over it, so it
/// always ends up read and written by its owner only (0600).
///
/// Errors: `name` is empty or holds a `:`; the file cannot be read or
/// written, or a line of it does not parse.
pub fn add_user(path: &Path, name: &str, password: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.contains(':') {
        bail!("a user name must not be empty or hold a ':'");
    }
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    // Every line must parse: we do not rewrite a file we do not understand.
    if !old.is_empty() {
        Logins::default().read_password_file(path)?;
    }
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow!("the system gave no random bytes for a salt"))?;
    let mut hash = [0u8; 64];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    let entry = format!(
        "{name}:$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    );
    let mut lines: Vec<&str> = old
        .lines()
        .filter(|line| line.split_once(':').map(|(user, _)| user) != Some(name))
        .collect();
    lines.push(&entry);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("cannot write {}", Path::new(&temporary).display()))?;
    file.write_all((lines.join("\n") + "\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", Path::new(&temporary).display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `mosquitto_passwd -b` wrote for alice, password "secret".
    const ALICE: &str = "alice:$7$101$+fiEp8TMoJ/uhDtv$7yWksCd/mMfWz2AnTKzedWTHhGQjWqwc/bl/NROEvcVN5PDPvJQbVQQC0zTIUR9yimXjjBgWvCoW6ce5aNLK/g==";

    #[test]
    fn a_mosquitto_passwd_line_checks_its_password() {
        let (name, hash) = parse_line(ALICE).unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(name, "alice");
        assert!(hash.matches(b"secret"));
        assert!(!hash.matches(b"Secret"));
        assert!(!hash.matches(b""));
    }

    #[test]
    fn lines_that_are_no_hash_are_refused() {
        for line in [
            "alice",
            ":$7$101$a$b",
            "alice:secret",
            "alice:$7$0$AAAA$AAAA",
            "alice:$7$101$!!$AAAA",
        ] {
            assert!(parse_line(line).is_err(), "{line}");
        }
    }
}
