//! Maildir primitives for the watcher: message names, folders, our own output's marker, and the
//! durable file operations (write in tmp/ with mode 0600, rename, fsync of directories).
//!
//! A Maildir message name is `UNIQUE[:2,FLAGS]`. The unique part is chosen by the MDA (never by
//! a sender) and is `KEY[,FIELD…]`: the key (`time.M…P….host`) identifies the message across
//! moves new/ → cur/ and flag changes; fields such as `,S=size` (Dovecot) or `,U=uid` (mbsync)
//! follow.
//!
//! Architecture Invariants: the watcher's processed copy of a message is recognised by its
//! NAME only: its unique part starts with [`COPY_PREFIX`] (`smimed=KEY[,…]`), which no MDA
//! writes (unique parts start with the time) and no sender can choose; nothing inside a message
//! is trusted for that. Copies made before this scheme carry the field [`MARKER`] instead
//! (`KEY,smimed[,…]`) and are still recognised. The prefix keeps the part before the first `,`
//! or `:` different from the original's: neomutt takes that part for a message's identity, and
//! while a copy and its original were both in place it showed two entries for one file, one
//! marked deleted, whose purge unlinked the copy. A processed
//! copy keeps the original's key and other fields, except `,S=` which is set to the new size
//! (and `,W=` which is dropped), so that Dovecot reads the right size. This module does no
//! S/MIME and knows nothing of the pipeline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// The start of the unique part of the watcher's processed copies.
pub const COPY_PREFIX: &str = "smimed=";

/// The unique-part field that marked the watcher's processed copies before [`COPY_PREFIX`].
pub const MARKER: &str = "smimed";

/// Prefix of our files in tmp/ (removed at start-up: a crash may leave some behind).
pub const TMP_PREFIX: &str = "smimed-tmp.";

/// The two subdirectories that hold messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sub {
    New,
    Cur,
}

impl Sub {
    pub fn dir_name(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
    pub const BOTH: [Sub; 2] = [Sub::New, Sub::Cur];
}

/// Splits a message name into its unique part and its info (`2,FLAGS`, without the colon).
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((u, i)) => (u, Some(i)),
        None => (name, None),
    }
}

/// The key of a message: its unique part up to the first comma. Stable across moves and flag
/// changes by clients, and shared by an original and its processed copy.
pub fn key(name: &str) -> &str {
    let (unique, _) = split_name(name);
    let unique = unique.strip_prefix(COPY_PREFIX).unwrap_or(unique);
    unique.split(',').next().unwrap_or(unique)
}

/// Whether a message name is the watcher's processed copy ([`COPY_PREFIX`], or the older
/// [`MARKER`] field).
pub fn is_ours(name: &str) -> bool {
    let (unique, _) = split_name(name);
    unique.starts_with(COPY_PREFIX) || unique.split(',').skip(1).any(|f| f == MARKER)
}

/// The name of the processed copy of `original` whose new content is `len` bytes long: the
/// prefix, the original's key, the original's other fields (a `,S=` size rewritten, `,W=`
/// dropped), then the original's info.
pub fn processed_name(original: &str, len: usize) -> String {
    let (unique, info) = split_name(original);
    let unique = unique.strip_prefix(COPY_PREFIX).unwrap_or(unique);
    let mut parts = unique.split(',');
    let mut out = String::from(COPY_PREFIX);
    out.push_str(parts.next().unwrap_or(unique));
    for f in parts {
        if f.starts_with("S=") {
            out.push_str(&format!(",S={len}"));
        } else if f.starts_with("W=") || f == MARKER {
            continue;
        } else {
            out.push(',');
            out.push_str(f);
        }
    }
    with_info(&out, info)
}

/// `name` without its keyword letters (the lowercase `a`–`z` of a `2,` info). Dovecot maps them
/// to IMAP keywords through each folder's own `dovecot-keywords` file, so in another folder (the
/// archive) the same letter would name another keyword; standard flags stay.
pub fn without_keywords(name: &str) -> String {
    match split_name(name) {
        (unique, Some(info)) if info.starts_with("2,") => {
            let flags: String = info[2..]
                .chars()
                .filter(|c| !c.is_ascii_lowercase())
                .collect();
            format!("{unique}:2,{flags}")
        }
        _ => name.to_string(),
    }
}

/// `name`'s unique part with another info (`None`: no info, as in new/).
pub fn with_info(name: &str, info: Option<&str>) -> String {
    let (unique, _) = split_name(name);
    match info {
        Some(i) => format!("{unique}:{i}"),
        None => unique.to_string(),
    }
}

/// What makes the name of an archived original distinct when another message already has its
/// name in the archive (the same name in two watched folders, which share one archive):
/// `KEY-smimed-N`.
pub const DUP_MARK: &str = "-smimed-";

/// `name` with its key made distinct ([`DUP_MARK`] and `n` after the key), its other fields
/// (`,S=…`) and its info kept.
pub fn renamed_for_collision(name: &str, n: u32) -> String {
    let (unique, info) = split_name(name);
    let (k, rest) = unique.split_at(unique.find(',').unwrap_or(unique.len()));
    with_info(&format!("{k}{DUP_MARK}{n}{rest}"), info)
}

/// Whether `name`'s key is `key_`, or `key_` made distinct by [`renamed_for_collision`].
pub fn key_matches(name: &str, key_: &str) -> bool {
    let k = key(name);
    k == key_
        || k.strip_prefix(key_)
            .and_then(|r| r.strip_prefix(DUP_MARK))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The key an archived original made distinct by [`renamed_for_collision`] had in its folder
/// (`KEY` for `KEY-smimed-N`); None for any other key.
pub fn key_before_collision(key_: &str) -> Option<&str> {
    let (base, n) = key_.rsplit_once(DUP_MARK)?;
    (!base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// Renames `from` to `to` unless `to` exists, which gives `AlreadyExists` (renameat2 with
/// RENAME_NOREPLACE; where the file system lacks it, a look then a plain rename).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether two files hold the same bytes.
pub fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    if fs::metadata(a)?.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    Ok(fs::read(a)? == fs::read(b)?)
}

/// Whether a directory entry name can be a message (not a dot file, valid UTF-8 handled by the
/// caller).
pub fn is_message_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.')
}

/// One Maildir (the root of a tree, or a Maildir++ subfolder of it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Maildir {
    pub root: PathBuf,
}

impl Maildir {
    /// Opens an existing Maildir: `new/`, `cur/` and `tmp/` must be directories.
    pub fn open(root: &Path) -> Result<Maildir> {
        for d in ["new", "cur", "tmp"] {
            if !root.join(d).is_dir() {
                // A mistyped IMAP URL lands here too: its password is not repeated.
                let shown = crate::config::url_without_password(&root.display().to_string());
                return Err(Error::usage(format!(
                    "{shown} is not a Maildir (no {d}/ folder in it)"
                )));
            }
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    /// Opens a Maildir, creating it (mode 0700) when missing; `subfolder` marks a Maildir++
    /// subfolder (the `maildirfolder` file Maildir++ clients look for).
    pub fn create(root: &Path, subfolder: bool) -> Result<Maildir> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for d in ["new", "cur", "tmp"] {
            let p = root.join(d);
            if !p.is_dir() {
                b.create(&p)
                    .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            }
        }
        let marker = root.join("maildirfolder");
        if subfolder && !marker.exists() {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&marker)
                .map_err(|e| Error::io(format!("creating {}", marker.display()), e))?;
        }
        if let Some(parent) = root.parent() {
            fsync_dir(parent)?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    pub fn dir(&self, sub: Sub) -> PathBuf {
        self.root.join(sub.dir_name())
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn path(&self, sub: Sub, name: &str) -> PathBuf {
        self.dir(sub).join(name)
    }

    /// The message names in `sub` (dot files and non-UTF-8 names left out). A missing
    /// directory is an error: the Maildir went away.
    pub fn list(&self, sub: Sub) -> Result<Vec<String>> {
        let dir = self.dir(sub);
        let rd =
            fs::read_dir(&dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            match ent.file_name().into_string() {
                Ok(name) => {
                    if is_message_name(&name) {
                        out.push(name);
                    }
                }
                Err(raw) => warn_not_utf8(&dir, raw),
            }
        }
        Ok(out)
    }

    /// Finds the message with `key` in new/ or cur/ (a client may have moved or re-flagged it),
    /// skipping our processed copies.
    pub fn find_original(&self, key_: &str) -> Result<Option<(Sub, String)>> {
        for sub in Sub::BOTH {
            for name in self.list(sub)? {
                if key(&name) == key_ && !is_ours(&name) {
                    return Ok(Some((sub, name)));
                }
            }
        }
        Ok(None)
    }

    /// Finds the processed copy with `key` in new/ or cur/.
    pub fn find_ours(&self, key_: &str) -> Result<Option<(Sub, String)>> {
        for sub in Sub::BOTH {
            for name in self.list(sub)? {
                if key(&name) == key_ && is_ours(&name) {
                    return Ok(Some((sub, name)));
                }
            }
        }
        Ok(None)
    }

    /// Maildir++ subfolders (`.Name` directories that are Maildirs), sorted.
    pub fn subfolders(&self) -> Result<Vec<Maildir>> {
        let rd = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("reading {}", self.root.display()), e))?;
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() > 1 && name.starts_with('.') && name != ".." {
                let p = ent.path();
                if p.join("cur").is_dir() && p.join("new").is_dir() && p.join("tmp").is_dir() {
                    out.push(Maildir { root: p });
                }
            }
        }
        out.sort_by(|a, b| a.root.cmp(&b.root));
        Ok(out)
    }

    /// Removes our leftover files in tmp/ (a crash may leave some; they were never renamed,
    /// so nothing refers to them). Returns how many.
    pub fn clean_tmp(&self) -> Result<usize> {
        let _ = started();
        let dir = self.tmp();
        let rd =
            fs::read_dir(&dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let mut n = 0;
        for ent in rd.flatten() {
            // Only files of a watcher no longer running (or older than the 36 hours after which
            // the Maildir convention lets anyone clean tmp/): another `smimed watch` on the
            // same Maildir may be writing its copies right now. Their age is that of their last
            // change (ctime): a copy carries its original's mtime, which may be years old.
            let stale = ent.file_name().to_str().is_some_and(|n| {
                n.starts_with(TMP_PREFIX) && {
                    use std::os::unix::fs::MetadataExt;
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let meta = ent.metadata().ok();
                    let old = meta.as_ref().is_some_and(|m| {
                        u64::try_from(m.ctime())
                            .is_ok_and(|c| now.saturating_sub(c) > STALE_TMP.as_secs())
                    });
                    let changed = meta.as_ref().and_then(|m| {
                        let secs = u64::try_from(m.ctime()).ok()?;
                        let nanos = u32::try_from(m.ctime_nsec()).ok()?;
                        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
                    });
                    old || !writer_alive(n, changed)
                }
            });
            if stale {
                match fs::remove_file(ent.path()) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(format!("removing {}", ent.path().display()), e))
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Says once per process, for each file, that a name which is not UTF-8 is left as it is:
/// MDAs write ASCII names, and smimed works with names as text.
fn warn_not_utf8(dir: &Path, name: std::ffi::OsString) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> =
        std::sync::Mutex::new(None);
    let path = dir.join(name);
    let first = WARNED
        .lock()
        .map(|mut g| g.get_or_insert_with(Default::default).insert(path.clone()))
        .unwrap_or(true);
    if first {
        log::warn!(
            "{}: the file name is not UTF-8; left as it is (rename it to have it processed)",
            path.display()
        );
    }
}

/// Age after which a file of ours in tmp/ is removed even if its writer's pid is in use.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// Whether the process that named a tmp file (`prefix PID.SEQ.KEY`) is running; true when the
/// name does not say (the file is then left to the age rule).
/// Whether the watcher that named a tmp file may still be writing it: a process with that pid
/// runs, and it started before the file was last changed. (The pid alone is not enough: after a
/// reboot, or as a container's pid 1, the next watcher often gets the pid of the one that was
/// killed, even its own.)
fn writer_alive(name: &str, changed: Option<SystemTime>) -> bool {
    let pid = name
        .strip_prefix(TMP_PREFIX)
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else {
        return true;
    };
    if matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    ) {
        return false;
    }
    // Our own pid: this process began its work in tmp/ at `started()`, exactly. Another: its
    // start from /proc, to the second (the boot time there is truncated, which errs towards
    // keeping a file).
    let own = pid.as_raw_nonzero().get() as u32 == std::process::id();
    let start = if own {
        Some(started())
    } else {
        process_start(pid.as_raw_nonzero().get())
    };
    // (File times come from the kernel's coarse clock, a tick behind the one `started` reads.)
    match (start, changed) {
        (Some(start), Some(changed)) => changed + CLOCK_SLACK >= start,
        _ => true,
    }
}

/// How far a file's change time may lag the clock a process reads.
const CLOCK_SLACK: Duration = Duration::from_millis(50);

/// When this process first looked at or wrote into a tmp/ folder: every file of its own there
/// was changed after that.
fn started() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(SystemTime::now)
}

/// When process `pid` started (to the clock tick), from /proc.
fn process_start(pid: i32) -> Option<SystemTime> {
    let ticks = crate::sys::proc_stat(u32::try_from(pid).ok()?, 22)?;
    let boot: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let hz = rustix::param::clock_ticks_per_second();
    if hz == 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(boot)
            + Duration::from_nanos(ticks.checked_mul(1_000_000_000)? / hz),
    )
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a file of ours in tmp/: prefix, pid, sequence, key.
pub fn tmp_name(key_: &str) -> String {
    let _ = started();
    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    static PID: OnceLock<u32> = OnceLock::new();
    let pid = PID.get_or_init(std::process::id);
    format!("{TMP_PREFIX}{pid}.{seq}.{key_}")
}

/// Writes `bytes` to a new file `dir/name` with mode 0600 (refusing to overwrite). With
/// `sync`, the file is fsynced; without, the caller makes it durable (group commit: one
/// `syncfs` for a batch) before renaming it anywhere.
pub fn write_new(path: &Path, bytes: &[u8], sync: bool, mtime: Option<SystemTime>) -> Result<()> {
    write_new_io(path, bytes, sync, mtime)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// [`write_new`] with the I/O error as it came (its kind and errno kept).
pub fn write_new_io(
    path: &Path,
    bytes: &[u8],
    sync: bool,
    mtime: Option<SystemTime>,
) -> io::Result<()> {
    let res = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)?;
        if let Some(t) = mtime {
            // Readers take a Maildir file's mtime for the day it arrived (Dovecot's
            // INTERNALDATE, mutt's date-received): a copy keeps its original's.
            if let Err(e) = f.set_modified(t) {
                log::debug!("{}: modification time not kept: {e}", path.display());
            }
        }
        if sync {
            f.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    res
}

/// Makes every file written on the file system holding `dir` durable (`syncfs(2)`): the group
/// commit of a batch of tmp/ files, in place of one fsync per file.
pub fn sync_fs_of(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    rustix::fs::syncfs(&f)
        .map_err(|e| Error::io(format!("syncfs on {}", dir.display()), io::Error::from(e)))
}

/// fsyncs a directory, so that the renames and unlinks done in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("fsync of {}", dir.display()), e))
}

/// The start of a message file, read up to the end of its header section.
pub struct Head {
    pub bytes: Vec<u8>,
    /// The whole file was read.
    pub whole: bool,
    /// None: not a regular file (a folder, a FIFO, a device, a dangling symlink), read as empty.
    file: Option<File>,
    /// The file's size when it was opened (0 for what is not a regular file).
    len: u64,
    /// The file's modification time when it was opened.
    modified: Option<SystemTime>,
}

impl Head {
    /// The file's size when it was opened (0 for what is not a regular file).
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The file's modification time when it was opened.
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// The open file (None for what is not a regular file), for reading it in place.
    pub fn into_file(self) -> Option<File> {
        self.file
    }

    /// Reads the rest of the file after the head (no second open: a client may rename the
    /// file meanwhile, the open file stays the same).
    pub fn read_rest(mut self, path: &Path) -> Result<Vec<u8>> {
        if let (false, Some(f)) = (self.whole, self.file.as_mut()) {
            // Read to the end in one go for the size known at open (File::read_to_end would
            // ask for it again), one byte more to see a file that grew, then to end of file.
            let mut filled = self.bytes.len();
            let len = usize::try_from(self.len).unwrap_or(0);
            self.bytes.resize(len.max(filled).saturating_add(1), 0);
            loop {
                if filled == self.bytes.len() {
                    self.bytes.resize(filled.saturating_mul(2), 0);
                }
                match f.read(&mut self.bytes[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io(format!("reading {}", path.display()), e));
                    }
                }
            }
            self.bytes.truncate(filled);
        }
        Ok(self.bytes)
    }
}

/// Reads the start of a file up to and including the end of its header section (at least
/// that, at most about `limit` bytes). None when the file is gone. What is not a regular file
/// (a folder, a FIFO, a socket, a device, a dangling symlink) reads as empty: opened without
/// blocking (a FIFO would wait for a writer forever) and never read.
pub fn read_head(path: &Path, limit: usize) -> Result<Option<Head>> {
    let not_a_file = || Head {
        bytes: Vec::new(),
        whole: true,
        file: None,
        len: 0,
        modified: None,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink is there all the same (anything else: gone, or renamed by a
            // client, maybe back to this name already: the caller looks for it again).
            let dangling = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            return Ok(dangling.then(not_a_file));
        }
        // A socket cannot be opened (ENXIO): no file either.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            return Ok(Some(not_a_file()));
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let (len, modified) = match f.metadata() {
        Ok(m) if !m.is_file() => return Ok(Some(not_a_file())),
        Ok(m) => (m.len(), m.modified().ok()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 16384];
    loop {
        let n = f
            .read(&mut chunk)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok(Some(Head {
                bytes: buf,
                whole: true,
                file: Some(f),
                len,
                modified,
            }));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if header_ends(&buf[from..])
            || buf.starts_with(b"\n")
            || buf.starts_with(b"\r\n")
            || buf.len() >= limit
        {
            return Ok(Some(Head {
                bytes: buf,
                whole: false,
                file: Some(f),
                len,
                modified,
            }));
        }
    }
}

fn header_ends(b: &[u8]) -> bool {
    b.windows(2).any(|w| w == b"\n\n") || b.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_made_distinct_keeps_its_fields_and_flags_and_its_key_still_matches() {
        let n = renamed_for_collision("1700000000.M1P1.host,S=123,W=130:2,FS", 2);
        assert_eq!(n, "1700000000.M1P1.host-smimed-2,S=123,W=130:2,FS");
        assert!(key_matches(&n, "1700000000.M1P1.host"));
        assert_eq!(renamed_for_collision("k", 1), "k-smimed-1");
        assert!(key_matches("k:2,S", "k"));
        assert!(!key_matches("k-smimed-:2,S", "k"));
        assert!(!key_matches("k-smimed-1x", "k"));
        assert!(!key_matches("kk", "k"));
        assert_eq!(key_before_collision("k-smimed-12"), Some("k"));
        assert_eq!(key_before_collision("k-smimed-"), None);
        assert_eq!(key_before_collision("-smimed-1"), None);
        assert_eq!(key_before_collision("k"), None);
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        assert!(same_content(&a, &a).unwrap() && !same_content(&a, &b).unwrap());
        rename_noreplace(&a, &d.path().join("c")).unwrap();
        assert!(!a.exists());
    }

    #[test]
    fn a_name_that_is_not_utf8_is_left_out_of_the_listing() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tmp");
        let md = Maildir::create(dir.path(), false).expect("maildir");
        let odd = std::ffi::OsStr::from_bytes(b"1795780000.M4P1.h\xffst");
        std::fs::write(md.dir(Sub::New).join(odd), b"x").expect("write");
        std::fs::write(md.dir(Sub::New).join("1795780000.M5P1.host"), b"x").expect("write");
        // Twice: the second listing does not warn again (one warning per file and process).
        for _ in 0..2 {
            assert_eq!(md.list(Sub::New).expect("list"), ["1795780000.M5P1.host"]);
        }
    }

    #[test]
    fn clean_tmp_leaves_the_files_of_a_running_watcher() {
        // (This process's files are those changed since it started its work in tmp/.)
        let _ = started();
        let dir = tempfile::tempdir().expect("tmp");
        let md = Maildir::create(dir.path(), false).expect("maildir");
        // A pid that was just in use and is not any more.
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let dead = child.id();
        child.wait().expect("wait");
        let mine = format!("{TMP_PREFIX}{}.0.1800000000.M1P1.host", std::process::id());
        let gone = format!("{TMP_PREFIX}{dead}.0.1800000000.M2P1.host");
        let theirs = "1800000000.M3P1.host";
        for n in [&mine, &gone, theirs] {
            std::fs::write(md.tmp().join(n), b"x").expect("write");
        }
        // A copy carries its original's modification time, years old: still in the works.
        let years_ago = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(md.tmp().join(&mine))
            .and_then(|f| f.set_modified(years_ago))
            .expect("mtime");
        assert_eq!(md.clean_tmp().expect("clean"), 1);
        assert!(
            md.tmp().join(&mine).exists(),
            "a running writer's file was removed"
        );
        assert!(
            !md.tmp().join(&gone).exists(),
            "a dead writer's file was kept"
        );
        assert!(md.tmp().join(theirs).exists(), "not ours: never removed");
    }

    #[test]
    fn a_pid_that_started_after_the_file_was_written_is_another_writer() {
        // Our own pid (a watcher restarted as a container's pid 1 gets the pid of the one that
        // was killed) and a pid in use since boot (pid 1, reused after a reboot): a file last
        // changed before that process started is an earlier writer's.
        let _ = started();
        let now = SystemTime::now();
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for pid in [std::process::id(), 1] {
            let name = format!("{TMP_PREFIX}{pid}.0.1800000000.M1P1.host");
            assert!(process_start(pid as i32).is_some_and(|t| t <= now));
            assert!(writer_alive(&name, Some(now)), "{pid}: written now");
            assert!(!writer_alive(&name, Some(before)), "{pid}: written before");
        }
    }

    #[test]
    fn names() {
        let n = "1700000000.M1P2Q3.host,S=1234,W=1260,U=7:2,RS";
        assert_eq!(key(n), "1700000000.M1P2Q3.host");
        assert!(!is_ours(n));
        let p = processed_name(n, 99);
        assert_eq!(p, "smimed=1700000000.M1P2Q3.host,S=99,U=7:2,RS");
        assert!(is_ours(&p));
        assert_eq!(key(&p), key(n));
        // the part before the first ',' or ':' (neomutt's identity) differs from the original's
        assert_ne!(p.split([',', ':']).next(), n.split([',', ':']).next());
        assert_eq!(processed_name("123.M1.smimed", 5), "smimed=123.M1.smimed");
        assert!(!is_ours("123.M1.smimed"));
        assert_eq!(
            with_info(&p, None),
            "smimed=1700000000.M1P2Q3.host,S=99,U=7"
        );
        assert_eq!(with_info("a,smimed", Some("2,S")), "a,smimed:2,S");
        assert_eq!(without_keywords("k,S=5:2,FSab"), "k,S=5:2,FS");
        assert_eq!(without_keywords("k,S=5"), "k,S=5");
        // copies named by earlier versions are still ours, with the same key
        let old = "1700000000.M1P2Q3.host,smimed,S=99,U=7:2,RS";
        assert!(is_ours(old));
        assert_eq!(key(old), key(n));
        assert_eq!(
            processed_name(old, 5),
            "smimed=1700000000.M1P2Q3.host,S=5,U=7:2,RS"
        );
    }
}
