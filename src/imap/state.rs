//! Per account and mailbox state of the IMAP watcher, so that every message is processed
//! exactly once across restarts and crashes.
//!
//! One TOML file per mailbox under `STATE_DIR/imap/<user@host:port>/<mailbox>.toml` (names
//! percent-encoded), written atomically (temp file 0600, fsync, rename, fsync of the folder),
//! plus an append-only `<mailbox>.appended` log of the SHA-256 of every copy we appended (the
//! logs of every mailbox of the account are read when recognising copies).
//!
//! Invariants:
//! - Everything is relative to `uidvalidity`; when the server reports another one the UIDs mean
//!   nothing any more: the state restarts at cursor 0 (a rescan), and our own copies are then
//!   recognised by the `$SMIMEProcessed` keyword *and* a digest in the appended log, so they are
//!   never reprocessed.
//! - Every UID <= `cursor` was handled, except those in `retry` (temporary failures).
//! - `own` holds the UIDs above the cursor of copies we appended (from APPENDUID).
//! - `pending` is written *before* the APPEND (intent: original UID + digest of what we are about
//!   to append) and cleared only after the original was archived, so a crash at any point is
//!   completed on the next start instead of appending twice. Each intent is marked `archiving`
//!   before its original is moved, so that an original found gone after a crash is known to
//!   have gone by our hand (its copy stays), not by a client's (its copy goes with it).
//! - Our copies are recognised by a digest in the appended log, looked for among the messages
//!   that carry the `$SMIMEProcessed` keyword or an `X-Smime-Status` field (a client may have
//!   replaced the keywords); the keyword alone proves nothing.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An APPEND we intend to make or made, whose original is not archived yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub orig_uid: u32,
    /// SHA-256 (hex) of the copy, line ends normalised (see [`digest`]).
    pub digest: String,
    /// The copy's UID once APPEND returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appended_uid: Option<u32>,
    /// The original was COPYed to the archive (servers without MOVE), only the expunge is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copied: bool,
    /// Set (durably) before the original is moved or deleted: an original missing afterwards
    /// may have gone by our own hand; the archive is then looked at (see `orig_digest`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archiving: bool,
    /// The original's digest and size, to find it in the archive when a move's outcome is
    /// unknown (a crash or a lost connection during it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxState {
    pub uidvalidity: u32,
    pub cursor: u32,
    #[serde(default)]
    pub retry: Vec<u32>,
    #[serde(default)]
    pub own: Vec<u32>,
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// Digests of copies that may or may not have been appended before UIDVALIDITY changed
    /// (intents pending then): an original whose processed form has one of these digests is
    /// archived against that copy, when the mailbox holds it, instead of appended again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// Messages left as they are, not downloaded, for being larger than `--max-size`, and the
    /// limit then: a higher limit looks at them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oversized: Vec<u32>,
    #[serde(default)]
    pub oversized_limit: u64,
}

/// Where one mailbox's state lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    stem: String,
}

fn component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"@.-_:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// SHA-256 hex of a message with CRLF normalised to LF (servers may store either).
pub fn digest(msg: &[u8]) -> String {
    let mut h = openssl::sha::Sha256::new();
    let mut start = 0;
    for (i, w) in msg.windows(2).enumerate() {
        if w == b"\r\n" {
            h.update(&msg[start..i]);
            start = i + 1;
        }
    }
    h.update(&msg[start..]);
    h.finish().iter().map(|b| format!("{b:02x}")).collect()
}

impl StateFile {
    pub fn new(state_dir: &Path, account: &str, mailbox: &str) -> Result<StateFile> {
        let dir = state_dir.join("imap").join(component(account));
        crate::config::create_private_dir(&dir)?;
        Ok(StateFile {
            dir,
            stem: component(mailbox),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.stem))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.appended", self.stem))
    }

    /// The saved state; the default when there is none yet.
    pub fn load(&self) -> Result<MailboxState> {
        let p = self.path();
        match std::fs::read_to_string(&p) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::config(format!("state file {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MailboxState::default()),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, st: &MailboxState) -> Result<()> {
        let p = self.path();
        let text = toml::to_string(st)
            .map_err(|e| Error::software(format!("serialising the state: {e}")))?;
        crate::fsio::write_atomic(&p, text.as_bytes())
    }

    /// Appends digests of copies about to be appended to the log, durably.
    pub fn log_appended(&self, digests: &[&str]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let p = self.log_path();
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
        let mut text = String::new();
        for d in digests {
            text.push_str(d);
            text.push('\n');
        }
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    /// Every digest ever logged for any mailbox of any account in this state folder: a copy
    /// the watcher appended to one mailbox and a client filed into another watched one is
    /// still the watcher's, and so is one appended when the account was reached by another
    /// host name or port (`localhost` and `127.0.0.1`, imaps and STARTTLS), which has a state
    /// of its own.
    pub fn account_digests(&self) -> Result<HashSet<String>> {
        let mut all = self.appended_digests()?;
        let accounts = self.dir.parent().map(Path::to_path_buf);
        let dirs: Vec<PathBuf> = match accounts.as_deref().map(std::fs::read_dir) {
            Some(Ok(rd)) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("reading the state folder", e))
            }
            _ => vec![self.dir.clone()],
        };
        for dir in dirs {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
            };
            for ent in rd.flatten() {
                let p = ent.path();
                if p != self.log_path() && p.extension().is_some_and(|x| x == "appended") {
                    all.extend(read_digests(&p)?);
                }
            }
        }
        Ok(all)
    }

    /// Every digest ever logged for this mailbox.
    pub fn appended_digests(&self) -> Result<HashSet<String>> {
        read_digests(&self.log_path())
    }
}

fn read_digests(p: &Path) -> Result<HashSet<String>> {
    {
        match File::open(p) {
            Ok(f) => BufReader::new(f)
                .lines()
                .map(|l| l.map(|l| l.trim().to_string()))
                .filter(|l| !matches!(l, Ok(s) if s.is_empty()))
                .collect::<std::io::Result<HashSet<String>>>()
                .map_err(|e| Error::io(format!("reading {}", p.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_digest() {
        let d = tempfile::tempdir().unwrap();
        let sf = StateFile::new(d.path(), "a@h:1", "Lists/Wörk").unwrap();
        assert_eq!(sf.load().unwrap(), MailboxState::default());
        let st = MailboxState {
            uidvalidity: 7,
            cursor: 12,
            retry: vec![3],
            own: vec![13, 14],
            pending: vec![Pending {
                orig_uid: 11,
                digest: digest(b"x"),
                appended_uid: Some(15),
                copied: false,
                archiving: true,
                orig_digest: Some(digest(b"o")),
                orig_size: Some(1),
            }],
            unresolved: vec![digest(b"y")],
            oversized: vec![16],
            oversized_limit: 1000,
        };
        sf.save(&st).unwrap();
        assert_eq!(sf.load().unwrap(), st);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sf.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        assert_eq!(digest(b"a\r\nb\r\n"), digest(b"a\nb\n"));
        assert_ne!(digest(b"a\r\nb"), digest(b"a\nc"));
        sf.log_appended(&["aa", "bb"]).unwrap();
        assert!(sf.appended_digests().unwrap().contains("bb"));
    }
}
