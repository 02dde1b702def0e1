//! Retained messages that survive a restart: `--persistence-file PATH`.
//!
//! A retained message is the broker's promise that the next subscriber to
//! its topic gets it (spec §3.3.1.3), the last known state of a sensor, say.
//! Kept in memory only, a restart breaks that promise. With a persistence
//! file the broker writes every retained message to it within a second of a
//! change (and at shutdown), and reads them back when it starts.
//!
//! Writing is atomic: the new contents go to `PATH.<pid>.tmp` (readable by
//! the owner only), which is flushed
//! to the disk (`fsync`) and then renamed over `PATH`. A rename replaces a
//! file in one step, so a crash at any moment leaves either the old file or
//! the new one, never half of one. A file that does not read back (not
//! ours, cut short, or a checksum that does not match) is reported, renamed
//! aside to `PATH.corrupt`, and the broker starts without retained messages
//! rather than lose the evidence.
//!
//! Only retained messages are kept: sessions, their subscriptions and the
//! messages waiting for them live in memory only (the README says so).
//!
//! The file's layout is in `persist/format.rs`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod format;

use super::dispatch::Shared;
use super::mailbox::Message;
use format::{decode, encode};

/// How often the saver looks for changes.
const EVERY: Duration = Duration::from_secs(1);

/// Where retained messages are kept, and what was read from there at start.
#[derive(Debug, Clone)]
pub struct Persistence {
    pub path: PathBuf,
    /// The messages read at start, put back before the first client comes.
    pub restored: Vec<Message>,
}

impl Persistence {
    /// Reads `path`: its retained messages (none if it does not exist yet;
    /// those whose Message Expiry has passed are dropped). A file that does
    /// not read back is renamed to `PATH.corrupt`, with a warning, and
    /// counts as empty.
    ///
    /// Errors: its folder does not exist, or the file exists but cannot be
    /// read, or cannot be set aside.
    pub fn open(path: PathBuf) -> anyhow::Result<Persistence> {
        // Saving writes beside the file: a folder that is not there would
        // make every save fail, quietly but for one warning.
        let folder = match path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            anyhow::bail!(
                "cannot keep retained messages in {}: {} is not a directory",
                path.display(),
                folder.display()
            );
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                info!(path = %path.display(), "no persistence file yet: starting without retained messages");
                return Ok(Persistence {
                    path,
                    restored: Vec::new(),
                });
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let restored = match decode(&bytes) {
            Ok(messages) => messages,
            Err(why) => {
                let aside = aside(&path);
                std::fs::rename(&path, &aside).with_context(|| {
                    format!(
                        "{} is corrupt ({why}), and cannot be set aside",
                        path.display()
                    )
                })?;
                warn!(
                    "{} is corrupt ({why}): moved to {}; starting without retained messages",
                    path.display(),
                    aside.display()
                );
                Vec::new()
            }
        };
        info!(path = %path.display(), "restored {} retained message(s)", restored.len());
        Ok(Persistence { path, restored })
    }
}

/// Where a corrupt file goes: `PATH.corrupt`.
fn aside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    PathBuf::from(name)
}

/// Saves the retained messages whenever they changed, at most once a
/// second, and once more when `stop` is cancelled; then returns.
pub async fn run(shared: Arc<Shared>, path: PathBuf, stop: CancellationToken) {
    let mut saved = shared.table().retained_changes();
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(EVERY) => false,
        };
        let (changes, messages) = {
            let table = shared.table();
            let changes = table.retained_changes();
            if changes == saved && !stopping {
                continue;
            }
            (changes, table.retained_messages())
        };
        let count = messages.len();
        let file = path.clone();
        let written = tokio::task::spawn_blocking(move || save(&file, &messages)).await;
        match written {
            Ok(Ok(())) => {
                saved = changes;
                if failing || stopping {
                    info!(path = %path.display(), "saved {count} retained message(s)");
                }
                failing = false;
            }
            Ok(Err(error)) => {
                // Once per run of failures, not once a second.
                if !failing {
                    warn!(path = %path.display(), %error, "cannot save the retained messages; will retry");
                }
                failing = true;
            }
            Err(error) => warn!(%error, "the save task failed"),
        }
        if stopping {
            return;
        }
    }
}

/// Writes `messages` to `path` atomically (see the module's doc). Errors:
/// the file system's.
pub fn save(path: &Path, messages: &[Message]) -> io::Result<()> {
    // A name of this process's own, made new (never through a link), and
    // readable by the owner only: retained messages may be private.
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(&encode(messages))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    // The rename is in the directory: flush it too, so that it survives a
    // power cut (on Unix; elsewhere the directory cannot be opened).
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
