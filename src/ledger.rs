//! The Maildir watcher's ledger: fingerprints of the processed copies it wrote, in an
//! append-only file of the state folder (`$XDG_STATE_HOME/smimed/maildir.ledger`, one for every
//! Maildir the user watches).
//!
//! A copy is recognised by its `smimed=` file name, but a client that files it into another
//! folder (neomutt's save, an IMAP MOVE or COPY through Dovecot) gives it a new name. Without
//! the ledger the watcher took the filed copy's status fields for forged ones and rewrote them
//! to `signature=none`. A fingerprint is SHA-256 over the message's header section, without
//! the fields mail clients add or rewrite when they copy a message (neomutt adds
//! `Content-Length`), and the length of its body: the header holds the status fields and the
//! trace fields the receiving MTA wrote, so no sender can make a delivered message match a
//! copy of ours, and it costs nothing beyond the header the watcher reads anyway.
//!
//! Invariant: a copy's fingerprint is durable before the copy is renamed into place. Nothing
//! here decides what a message is: the watcher asks whether a fingerprint is known.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// SHA-256 of a message's header section and length.
pub type Fingerprint = [u8; 32];

/// Fields a mail client may add or rewrite when it copies or re-flags a message (mutt and
/// neomutt: `Content-Length`, `Lines`, `Status`, `X-Status`, `X-Label`; Dovecot: `X-Keywords`,
/// `X-UID`, `X-IMAPbase`): not part of a fingerprint.
const CLIENT_FIELDS: &[&str] = &[
    "content-length",
    "lines",
    "status",
    "x-status",
    "x-label",
    "x-keywords",
    "x-uid",
    "x-imap",
    "x-imapbase",
];

/// The fingerprint of a message whose first bytes are `head` (at least its whole header
/// section, up to and including the blank line that ends it; all of `head` when it has none)
/// and whose file is `len` bytes long.
pub fn fingerprint(head: &[u8], len: u64) -> Fingerprint {
    let end = header_end(head).unwrap_or(head.len());
    let mut h = openssl::sha::Sha256::new();
    let mut skipping = false;
    for line in head[..end].split_inclusive(|&b| b == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            // A field's first line: its continuation lines go with it.
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase();
            skipping = CLIENT_FIELDS.contains(&name.as_str());
        }
        if !skipping {
            // Each line's end as LF: neomutt's save writes the fields it adds, and the blank
            // line, with LF into a CRLF message.
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            h.update(text.strip_suffix(b"\r").unwrap_or(text));
            h.update(b"\n");
        }
    }
    // The body's length: a client's added field changes the file's.
    h.update(&len.saturating_sub(end as u64).to_be_bytes());
    h.finish()
}

/// Where the header section ends (after its blank line): one pass over the line ends, which
/// stops within the header.
fn header_end(b: &[u8]) -> Option<usize> {
    if b.starts_with(b"\n") {
        return Some(1);
    }
    if b.starts_with(b"\r\n") {
        return Some(2);
    }
    memchr::memchr_iter(b'\n', b).find_map(|i| match b.get(i + 1..) {
        Some([b'\n', ..]) => Some(i + 2),
        Some([b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

#[derive(Default)]
struct Known {
    copies: HashSet<Fingerprint>,
    /// How much of the file has been read (another watcher may append to it).
    read_to: u64,
}

/// The ledger, shared by the watcher's threads.
pub struct Ledger {
    path: PathBuf,
    known: Mutex<Known>,
}

impl Ledger {
    /// Opens the ledger in `state_dir`, making the folder (0700) and the file (0600) when
    /// missing: an error here means the ledger cannot be written.
    pub fn open(state_dir: &Path) -> Result<Ledger> {
        crate::config::create_private_dir(state_dir)?;
        let ledger = Ledger {
            path: state_dir.join("maildir.ledger"),
            known: Mutex::new(Known::default()),
        };
        ledger.open_append()?;
        // Read on first need: a backlog of mail without status fields never needs it.
        Ok(ledger)
    }

    fn open_append(&self) -> Result<File> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(0o600)
                .open(&self.path)
        };
        match open() {
            // The state folder was removed while we run (a user resetting state): made again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    crate::config::create_private_dir(dir)?;
                }
                open()
            }
            other => other,
        }
        .map_err(|e| self.io_error("opening", e))
    }

    /// Whether `fp` is a copy this watcher (or another on the same state folder) wrote.
    pub fn is_copy(&self, fp: &Fingerprint) -> Result<bool> {
        if self.lock()?.copies.contains(fp) {
            return Ok(true);
        }
        // Written since by another watcher sharing the state folder?
        self.refresh()?;
        Ok(self.lock()?.copies.contains(fp))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Known>> {
        self.known
            .lock()
            .map_err(|_| Error::software("ledger lock poisoned"))
    }

    /// Reads what was appended to the file since the last read.
    fn refresh(&self) -> Result<()> {
        let mut k = self.lock()?;
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("reading", e)),
        };
        // A shorter file than what was read: the ledger was made again (its folder removed).
        if f.metadata().is_ok_and(|m| m.len() < k.read_to) {
            k.read_to = 0;
        }
        let mut text = Vec::new();
        f.seek(SeekFrom::Start(k.read_to))
            .and_then(|_| f.read_to_end(&mut text))
            .map_err(|e| self.io_error("reading", e))?;
        // Only whole lines: a line being written by another watcher is read next time.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..whole].split(|&b| b == b'\n') {
            // "c HEX": a copy (other letters are left for later kinds of entries).
            if let Some(fp) = line.strip_prefix(b"c ").and_then(parse_hex) {
                k.copies.insert(fp);
            }
        }
        k.read_to += whole as u64;
        Ok(())
    }

    /// Records the fingerprints of copies about to be put in place. The write is not yet
    /// durable: the caller makes it so, with a `syncfs` of the ledger's file system ([`dev`])
    /// or with the returned file's `sync_data`, before any copy is renamed into place.
    ///
    /// [`dev`]: std::os::unix::fs::MetadataExt::dev
    pub fn record_copies(&self, fps: &[Fingerprint]) -> Result<Option<File>> {
        if fps.is_empty() {
            return Ok(None);
        }
        let mut f = self.open_append()?;
        let mut text = String::with_capacity(fps.len() * 67 + 1);
        // A line torn by an earlier write (a full disk takes part of one) is ended first, or
        // the first line here would be read with it and dropped, its copy not recognised.
        if ends_torn(&f) {
            text.push('\n');
        }
        for fp in fps {
            text.push_str("c ");
            for b in fp {
                text.push_str(&format!("{b:02x}"));
            }
            text.push('\n');
        }
        // One write of whole lines with O_APPEND: watchers sharing the file do not interleave.
        f.write_all(text.as_bytes())
            .map_err(|e| self.io_error("writing", e))?;
        self.lock()?.copies.extend(fps.iter().copied());
        Ok(Some(f))
    }

    /// Makes what [`Ledger::record_copies`] wrote durable (when no `syncfs` covers it).
    pub fn sync(&self, f: &File) -> Result<()> {
        f.sync_data().map_err(|e| self.io_error("syncing", e))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} the ledger {}", self.path.display()), e)
    }
}

/// Whether the file's last byte is not a line end.
fn ends_torn(f: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut last = [0u8; 1];
    len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

fn parse_hex(s: &[u8]) -> Option<Fingerprint> {
    let s = s.strip_suffix(b"\r").unwrap_or(s);
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_the_header_and_the_body_length() {
        let a = b"From: a\r\nX: 1\r\n\r\nbody one\r\n";
        let b = b"From: a\r\nX: 1\r\n\r\nbody two\r\n";
        let c = b"From: a\r\nX: 2\r\n\r\nbody one\r\n";
        // Same header and length, other body: the same (the header is what the watcher reads).
        assert_eq!(fingerprint(a, 30), fingerprint(b, 30));
        assert_ne!(fingerprint(a, 30), fingerprint(a, 31));
        assert_ne!(fingerprint(a, 30), fingerprint(c, 30));
        // Only the header counts, however much of the body was read.
        assert_eq!(fingerprint(a, 30), fingerprint(&a[..17], 30));
        // Fields a client adds when it files the message do not count (nor their length).
        let filed = b"From: a\r\nContent-Length: 12\r\nX: 1\r\nstatus: RO\r\n\r\nbody one\r\n";
        assert_eq!(fingerprint(a, 30), fingerprint(filed, 30 + 32));
        let folded = b"From: a\r\nX-Label: a,\r\n b\r\nX: 1\r\n\r\nbody one\r\n";
        assert_eq!(fingerprint(a, 30), fingerprint(folded, 30 + 17));
        // neomutt's save into a CRLF message: its own field and the blank line with LF.
        let mixed = b"From: a\r\nX: 1\r\nContent-Length: 12\n\nbody one\r\n";
        assert_eq!(fingerprint(a, 30), fingerprint(mixed, 30 + 18));
        assert_eq!(header_end(b"X: 1\n\nb"), Some(6));
        assert_eq!(header_end(b"\r\nb"), Some(2));
        assert_eq!(header_end(b"X: 1"), None);
    }

    #[test]
    fn recorded_fingerprints_are_known_across_openings_and_writers() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let one = Ledger::open(&state).unwrap();
        let two = Ledger::open(&state).unwrap();
        let (c, other) = (fingerprint(b"c\n\n", 3), fingerprint(b"o\n\n", 3));
        assert!(!one.is_copy(&c).unwrap());
        one.record_copies(&[c]).unwrap();
        assert!(one.is_copy(&c).unwrap() && !one.is_copy(&other).unwrap());
        // Another watcher on the same state folder sees it without reopening.
        assert!(two.is_copy(&c).unwrap());
        assert!(Ledger::open(&state).unwrap().is_copy(&c).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join("maildir.ledger")), 0o600);
        assert_eq!(mode(&state), 0o700);
        // The state folder removed while a watcher runs: made again.
        std::fs::remove_dir_all(&state).unwrap();
        one.record_copies(&[other]).unwrap();
        assert!(Ledger::open(&state).unwrap().is_copy(&other).unwrap());
        // A damaged or half-written line is ignored.
        std::fs::write(state.join("maildir.ledger"), "c zz\nc 00").unwrap();
        assert!(!Ledger::open(&state).unwrap().is_copy(&[0; 32]).unwrap());
        // A line torn by a full disk is ended before the next batch: that batch's first copy
        // is recognised.
        let three = Ledger::open(&state).unwrap();
        three.record_copies(&[c, other]).unwrap();
        let fresh = Ledger::open(&state).unwrap();
        assert!(fresh.is_copy(&c).unwrap() && fresh.is_copy(&other).unwrap());
    }
}
