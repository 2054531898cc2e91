//! The Maildir watcher behind `smimed watch`: scans Maildirs, runs the inbound pipeline on
//! S/MIME messages (and on plain ones carrying forged status fields) over a pool of worker
//! threads sharing one [`Context`], puts each processed copy in place of its original and moves
//! the original to the archive; then waits on inotify for more.
//!
//! Architecture Invariants:
//! - Never twice, never lost, by ORDER of durable steps, per batch (group commit):
//!   1. workers write each processed copy in the folder's tmp/ (mode 0600, `smimed-tmp.*`);
//!   2. one `syncfs` makes the batch's tmp files durable;
//!   3. each copy is renamed next to its original (same subdirectory, same flags, name marked
//!      with [`maildir::COPY_PREFIX`]); the touched directories are fsynced;
//!   4. only then is each original renamed into the archive (or unlinked with --no-archive); the
//!      archive's and the source's directories are fsynced.
//!
//!   A crash before 3 leaves tmp files (removed at start) and the original (processed again).
//!   A crash between 3 and 4 leaves an original next to its marked copy: the next scan only
//!   finishes the move. Originals are found by key, wherever a client moved or re-flagged them.
//! - The watcher's own output is recognised by its file name, or by its fingerprint in the
//!   [`ledger`] when a client filed it under another name (never by a header field alone);
//!   the copies' fingerprints are written before step 2 and durable with it.
//! - Messages that are neither S/MIME at the root nor carry forged status fields are never
//!   written to. A temporary failure leaves the message as it is and retries it later.
//! - Only this module and `maildir` touch mailboxes; neither looks inside a message beyond
//!   classifying its root header (the pipeline does the rest).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::Watcher;

use crate::error::{Error, Kind, Result};
use crate::ledger::{self, Fingerprint, Ledger};
use crate::maildir::{self, Maildir, Sub};
use crate::mime;
use crate::pipeline::{self, Context};
use crate::status::{self, Encryption, Signature};

/// Default name of the archive folder (a Maildir++ folder of each watched Maildir).
pub const DEFAULT_ARCHIVE: &str = ".SMIME-Originals";
/// Default seconds between full rescans (which also retry temporary failures).
pub const DEFAULT_RESCAN: u64 = 60;
/// Messages per group commit, per worker, while the commits keep up with the workers (what
/// finished during a commit joins the next one, however many).
const BATCH_PER_JOB: usize = 64;
/// Longest wait between the first finished message of a batch and its commit.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Once a batch has its first message, the main thread looks for more this often instead of
/// blocking on the channel: a blocked receiver turns every worker's send into a futex wake-up
/// and a context switch, on cores the workers keep busy.
const COLLECT_SLICE: Duration = Duration::from_millis(2);
/// Largest header section read to decide whether a message needs the pipeline.
const HEAD_LIMIT: usize = 256 * 1024;
/// Most archived originals that may share one name (made distinct with a number).
const MAX_SAME_NAME: u32 = 10_000;
/// How long after a `.Name` appears its folders are looked for on every turn (see `main`).
const FOLDER_SETTLE: Duration = Duration::from_secs(5);
/// A failure on a file modified more recently than this may be a file still being written.
const WRITE_SETTLE: Duration = Duration::from_secs(2);
/// How often the folders are looked for while a new folder settles.
const SETTLE_EVERY: Duration = Duration::from_millis(200);
/// Backlog above which a progress bar is shown (on a terminal).
const PROGRESS_MIN: usize = 300;

/// Where originals go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveMode {
    /// A Maildir++ folder (`.Name`) of each watched Maildir.
    Folder(String),
    /// One Maildir anywhere (created when missing).
    Path(PathBuf),
    /// Originals are deleted once their processed copy is durable.
    None,
}

/// What `smimed watch` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub maildirs: Vec<PathBuf>,
    pub archive: ArchiveMode,
    pub jobs: usize,
    pub recursive: bool,
    pub once: bool,
    pub rescan: Duration,
    /// A progress bar may be drawn (stderr is a terminal).
    pub progress: bool,
    /// State folder of the ledger ([`crate::ledger`]); None: copies filed under another name
    /// and originals moved back under another name are not recognised.
    pub state_dir: Option<PathBuf>,
}

/// Counts for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages rewritten (processed copy in place).
    pub processed: usize,
    pub decrypted: usize,
    pub verified: usize,
    /// Processed, but decryption failed or a signature is not valid.
    pub failed: usize,
    /// Looked at and left untouched (not S/MIME, no forged status field).
    pub skipped: usize,
    /// Left for a temporary failure, to be retried.
    pub deferred: usize,
    /// Originals moved to the archive, including moves left unfinished by an earlier run.
    pub archived: usize,
    /// Originals deleted (--no-archive).
    pub removed: usize,
    /// Messages that disappeared (a client deleted or moved them away) while we worked.
    pub vanished: usize,
    /// Messages the pipeline refused with an unexpected error (left untouched, logged).
    pub errors: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} processed ({} decrypted, {} verified, {} failed), {} skipped, {} deferred, {} archived",
            self.processed,
            self.decrypted,
            self.verified,
            self.failed,
            self.skipped,
            self.deferred,
            self.archived
        );
        if self.removed > 0 {
            line.push_str(&format!(", {} removed", self.removed));
        }
        line
    }
}

/// One message to look at.
#[derive(Debug, Clone)]
struct Job {
    md: Maildir,
    sub: Sub,
    name: String,
}

impl Job {
    fn path(&self) -> PathBuf {
        self.md.path(self.sub, &self.name)
    }
}

/// A processed copy written (not yet durable) in tmp/.
struct Ready {
    job: Job,
    tmp: PathBuf,
    /// Name of the processed copy, with the original's info as read.
    name: String,
    decrypted: bool,
    verified: bool,
    failed: bool,
    /// The copy's ledger fingerprint.
    copy_fp: Fingerprint,
}

/// What a worker made of a job.
enum Outcome {
    Ready(Ready),
    Skipped(Job),
    /// Left for a temporary failure; None: not tried, after one in the same pass.
    Deferred(Job, Option<Error>),
    Vanished(Job),
    Failed(Job, Error),
    /// Not started: stopping.
    NotStarted,
    Fatal(Error),
}

/// One worker's job: read, classify, run the pipeline, write the copy in tmp/.
fn work(ctx: &Context, job: Job, ledger: Option<&Ledger>) -> Outcome {
    match try_work(ctx, &job, ledger) {
        Ok(o) => o,
        Err(e) if pipeline::is_temporary(&e) => Outcome::Deferred(job, Some(e)),
        Err(e) if e.kind == Kind::Config => Outcome::Fatal(e),
        Err(e) => Outcome::Failed(job, e),
    }
}

fn try_work(ctx: &Context, job: &Job, ledger: Option<&Ledger>) -> Result<Outcome> {
    let mut path = job.path();
    let key = maildir::key(&job.name);
    // A client may have moved or re-flagged the message since the scan (new/ -> cur/, a new
    // info): it is read where it is now; only a message gone from the folder has vanished.
    let mut attempts = 0;
    let head = loop {
        if let Some(h) = maildir::read_head(&path, HEAD_LIMIT)? {
            break h;
        }
        attempts += 1;
        match job.md.find_original(key)? {
            Some((sub, name)) if attempts < 5 => path = job.md.path(sub, &name),
            // Still there, renamed faster than we read: left for the next pass (--once
            // reports it as deferred) rather than taken for gone.
            Some(_) => return Ok(Outcome::Deferred(job.clone(), None)),
            None => return Ok(Outcome::Vanished(job.clone())),
        }
    };
    let ent = mime::split(&head.bytes);
    // A header section longer than what was read: a forged field or the Content-Type may come
    // after it, so the pipeline (which reads the whole header) decides, within --max-size
    // (MTAs cap a header far below 256 KiB: Postfix at 100 KB by default).
    let unseen = !head.whole && ent.separator.is_empty();
    let smime = mime::classify_entity(&ent) != mime::Kind::Other;
    let forged = ent
        .fields
        .iter()
        .any(|f| status::is_forged(f, ctx.authserv_id()));
    if !smime && !forged && !unseen {
        return Ok(Outcome::Skipped(job.clone()));
    }
    if let (Some(l), true, false) = (ledger, forged, unseen) {
        // Under a name that is not ours, with status fields (every copy of ours has them): a
        // copy of ours a client filed there is left as it is.
        match l.is_copy(&ledger::fingerprint(&head.bytes, head.file_len())) {
            Ok(true) => {
                log::debug!("{}: a copy of ours, filed there", path.display());
                return Ok(Outcome::Skipped(job.clone()));
            }
            Ok(false) => {}
            // An unreadable ledger (its folder replaced by a file) must not stop processing.
            Err(e) => log::warn!("{e}: taken as not a copy of ours"),
        }
    }
    if !forged && head.file_len() > ctx.limits.max_size {
        // The pipeline would pass it through unchanged (size-limit): not worth reading.
        log::info!("{}: larger than --max-size, left as it is", path.display());
        return Ok(Outcome::Skipped(job.clone()));
    }
    // A header without its end (no blank line) in the whole file: one cut short while written.
    let header_unfinished = head.whole && ent.separator.is_empty();
    drop(ent);
    let len_at_open = head.file_len();
    let mtime = head.modified();
    let processed = if head.file_len() >= pipeline::LARGE_MESSAGE {
        // Read in place, as the filter reads a large message: not held whole in memory.
        let file = head
            .into_file()
            .ok_or_else(|| Error::software("a large message without its file"))?;
        let processed = pipeline::process_file(ctx, &file)?;
        crate::addressbook::harvest_configured(ctx, &processed, None);
        processed
    } else {
        let bytes = head.read_rest(&path)?;
        let processed = pipeline::process(ctx, &bytes)?;
        crate::addressbook::harvest_configured(ctx, &processed, Some(&bytes));
        processed
    };
    // A file written in place (`cp x.eml new/`, against the Maildir protocol) may have been
    // read before it was complete: a truncated message would give a "malformed" copy and its
    // original would be archived. Left for the next full rescan: a file whose size changed
    // since it was opened, and (a writer that pauses leaves the size alone) a "malformed"
    // verdict on a file modified in the last WRITE_SETTLE. (Gone from this name: a client
    // renamed it, which changes no content.)
    let st = &processed.status;
    let failed = st.encryption == Encryption::Failed
        || !matches!(st.signature, Signature::None | Signature::Valid);
    // (A header cut short reads as ambiguous or unparsable MIME rather than malformed CMS:
    // those count only for a header without its end, as a sender can have them at will.)
    let malformed = st.get("reason").is_some_and(|r| {
        r.split(',').any(|r| {
            r.starts_with("malformed")
                || (header_unfinished && (r == "ambiguous-mime" || r == "mime-unparsable"))
        })
    });
    if let Ok(m) = fs::metadata(&path) {
        let recent = m
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < WRITE_SETTLE);
        if m.len() != len_at_open || (malformed && recent) {
            return Ok(still_written(job));
        }
    }
    if !processed.smime && processed.forged_removed == 0 {
        return Ok(Outcome::Skipped(job.clone()));
    }
    let tmp = job
        .md
        .tmp()
        .join(maildir::tmp_name(maildir::key(&job.name)));
    maildir::write_new(&tmp, &processed.output, false, mtime)?;
    Ok(Outcome::Ready(Ready {
        job: job.clone(),
        tmp,
        name: maildir::processed_name(&job.name, processed.output.len()),
        decrypted: st.encryption == Encryption::Decrypted,
        verified: st.signature == Signature::Valid,
        failed,
        copy_fp: ledger::fingerprint(&processed.output, processed.output.len() as u64),
    }))
}

fn still_written(job: &Job) -> Outcome {
    Outcome::Deferred(
        job.clone(),
        Some(Error::tempfail(
            "it changed while it was read (written in place?): looked at again later",
        )),
    )
}

/// The pool's end in the main thread.
struct Pool<'a> {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Outcome>,
    ctx: &'a Context,
    /// Set on a fatal error: the workers skip the jobs left.
    abort: &'a AtomicBool,
}

fn worker(
    ctx: &Context,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    results: mpsc::Sender<Outcome>,
    stop: &AtomicBool,
    abort: &AtomicBool,
    ledger: Option<&Ledger>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let out = if stop.load(Ordering::SeqCst) || abort.load(Ordering::SeqCst) {
            Outcome::NotStarted
        } else {
            work(ctx, job, ledger)
        };
        if results.send(out).is_err() {
            return;
        }
    }
}

/// An archive Maildir and the keys it holds.
struct Archive {
    md: Maildir,
    /// A Maildir++ folder of a watched Maildir (made again with its `maildirfolder` marker).
    subfolder: bool,
    keys: HashSet<String>,
}

impl Archive {
    fn open(root: &Path, subfolder: bool) -> Result<Archive> {
        let md = Maildir::create(root, subfolder)?;
        md.clean_tmp()?;
        let mut keys = HashSet::new();
        for sub in Sub::BOTH {
            for n in md.list(sub)? {
                keys.insert(maildir::key(&n).to_string());
            }
        }
        Ok(Archive {
            md,
            subfolder,
            keys,
        })
    }
}

/// One watched Maildir tree.
struct Tree {
    root: Maildir,
    folders: Vec<Maildir>,
    /// Index into `State::archives`.
    archive: Option<usize>,
}

/// A processed copy placed in the last commit, whose original still has to move.
struct Placed {
    md: Maildir,
    archive: Option<usize>,
    key: String,
    /// Where the original was when the copy was placed.
    orig: (Sub, String),
    /// Where the copy was placed.
    ours: (Sub, String),
    /// The copy was placed just now: if a client moves or re-flags the original before it is
    /// archived, the copy follows (a copy found from an earlier run is left as the user has it).
    follow: bool,
}

struct State<'o> {
    opts: &'o Options,
    trees: Vec<Tree>,
    archives: Vec<Archive>,
    /// Messages looked at and left as they are, with their size and mtime then: a full rescan
    /// looks again at those that changed (a file written in place, against the protocol).
    skipped: HashMap<PathBuf, Option<FileSig>>,
    /// Files left for a temporary failure, with the time of their next try.
    deferred: HashMap<PathBuf, Instant>,
    summary: Summary,
    ledger: Option<Arc<Ledger>>,
}

/// Runs the watcher until done (--once) or until `stop` is set (SIGTERM, SIGINT).
pub fn run(ctx: &Context, opts: &Options, stop: &AtomicBool) -> Result<Summary> {
    let mut state = State::new(opts)?;
    let jobs = opts.jobs.max(1);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<Outcome>();
    // A passphrase that cannot be had defers the messages needing a key, once per pass.
    ctx.hold_key_failures();
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = res_tx.clone();
            let (rx, ab) = (&job_rx, &abort);
            let ledger = state.ledger.clone();
            s.spawn(move || worker(ctx, rx, tx, stop, ab, ledger.as_deref()));
        }
        drop(res_tx);
        let pool = Pool {
            jobs: job_tx,
            results: res_rx,
            ctx,
            abort: &abort,
        };
        let r = state.main(&pool, stop, jobs);
        drop(pool);
        r
    })?;
    Ok(state.summary)
}

impl<'o> State<'o> {
    fn new(opts: &'o Options) -> Result<State<'o>> {
        let mut archives: Vec<Archive> = Vec::new();
        let shared = match &opts.archive {
            ArchiveMode::Path(p) => {
                archives.push(Archive::open(
                    &std::path::absolute(p).unwrap_or_else(|_| p.clone()),
                    false,
                )?);
                Some(0)
            }
            _ => None,
        };
        let mut trees: Vec<Tree> = Vec::new();
        for root in &opts.maildirs {
            // Absolute, as inotify reports paths.
            let root = Maildir::open(&canonical(root))?;
            if trees.iter().any(|t| t.root.root == root.root) {
                log::info!("{} is given twice: watched once", root.root.display());
                continue;
            }
            let archive = match &opts.archive {
                ArchiveMode::Folder(name) => {
                    archives.push(Archive::open(&root.root.join(name), true)?);
                    Some(archives.len() - 1)
                }
                ArchiveMode::Path(_) => shared,
                ArchiveMode::None => None,
            };
            trees.push(Tree {
                root,
                folders: Vec::new(),
                archive,
            });
        }
        // An archive that is itself a watched Maildir would leave nothing to watch there.
        if let (ArchiveMode::Path(p), Some(a)) = (&opts.archive, archives.first()) {
            let a = canonical(&a.md.root);
            if trees.iter().any(|t| canonical(&t.root.root) == a) {
                return Err(Error::usage(format!(
                    "the archive {} is a watched Maildir",
                    p.display()
                )));
            }
        }
        let mut st = State {
            opts,
            trees,
            archives,
            skipped: HashMap::new(),
            deferred: HashMap::new(),
            summary: Summary::default(),
            ledger: None,
        };
        if let Some(dir) = &opts.state_dir {
            match Ledger::open(dir) {
                Ok(l) => st.ledger = Some(Arc::new(l)),
                Err(e) => log::warn!(
                    "{e}: working without the ledger (copies a client files under another name \
                     are taken for mail with forged status fields; give --state-dir)"
                ),
            }
        }
        for i in 0..st.trees.len() {
            st.refresh_folders(i)?;
        }
        for t in &st.trees {
            for f in &t.folders {
                let n = f.clean_tmp()?;
                if n > 0 {
                    log::info!(
                        "{}: removed {n} unfinished file(s) of ours from tmp/",
                        f.root.display()
                    );
                }
            }
        }
        Ok(st)
    }

    /// The folders of tree `i`: its root, and with --recursive its Maildir++ subfolders, never
    /// an archive.
    fn refresh_folders(&mut self, i: usize) -> Result<()> {
        let archive_roots: Vec<PathBuf> = self
            .archives
            .iter()
            .map(|a| canonical(&a.md.root))
            .collect();
        let tree = &mut self.trees[i];
        let mut folders = vec![tree.root.clone()];
        if self.opts.recursive {
            for f in tree.root.subfolders()? {
                let c = canonical(&f.root);
                let under_archive = archive_roots.iter().any(|a| {
                    c == *a || {
                        let (a, c) = (a.to_string_lossy(), c.to_string_lossy());
                        c.starts_with(&format!("{a}."))
                    }
                });
                if !under_archive {
                    folders.push(f);
                }
            }
        }
        folders.retain(|f| !archive_roots.contains(&canonical(&f.root)));
        tree.folders = folders;
        Ok(())
    }

    fn main(&mut self, pool: &Pool<'_>, stop: &AtomicBool, jobs: usize) -> Result<()> {
        let all: Vec<(usize, usize)> = self.all_folders();
        self.pass(pool, jobs, &all, true)?;
        if self.opts.once || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)
            .map_err(|e| Error::tempfail(format!("starting inotify: {e}")))?;
        // Each watched directory with its inode: one removed and made again (a folder deleted
        // and re-created by a client) has lost its inotify watch and is watched again.
        let mut watched: HashMap<PathBuf, u64> = HashMap::new();
        self.watch_all(&mut watcher, &mut watched)?;
        // Folders may have been made, and mail may have arrived, between the first pass and
        // the watches.
        if self.opts.recursive {
            for i in 0..self.trees.len() {
                self.refresh_folders(i)?;
            }
            self.watch_all(&mut watcher, &mut watched)?;
        }
        self.pass(pool, jobs, &self.all_folders(), false)?;
        log::info!("watching {} folder(s)", watched.len());
        let mut next_full = Instant::now() + self.opts.rescan;
        // After a `.Name` appears in a root, its folders are looked for again on every turn for
        // a while: a folder made in steps (`.Name`, then its new/ cur/ tmp/, as Dovecot's LDA
        // or a Sieve `fileinto :create` make it) raises no event for those steps.
        let mut settle_until: Option<Instant> = None;
        let mut last_listed = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let wait = next_full
                .saturating_duration_since(now)
                .min(Duration::from_millis(200));
            let first = match rx.recv_timeout(wait) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::tempfail("inotify watcher stopped"));
                }
            };
            let mut full = Instant::now() >= next_full;
            let mut dirty: HashSet<PathBuf> = HashSet::new();
            let mut new_folders = false;
            for ev in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match ev {
                    // Opening or reading a file or folder (the watcher's own reads: a pass
                    // that reads an original it leaves in place would wake itself forever).
                    Ok(ev)
                        if matches!(
                            ev.kind,
                            notify::EventKind::Access(notify::event::AccessKind::Open(_))
                        ) => {}
                    Ok(ev) => {
                        if ev.need_rescan() {
                            full = true;
                        }
                        for p in &ev.paths {
                            // A watched folder removed has lost its watch: forgotten, so that
                            // one made again is watched even when it gets the same inode.
                            if matches!(ev.kind, notify::EventKind::Remove(_))
                                && watched.remove(p).is_some()
                            {
                                full = true;
                            }
                            match p.parent() {
                                Some(dir)
                                    if watched.contains_key(dir)
                                        && dir
                                            .file_name()
                                            .is_some_and(|n| n == "new" || n == "cur") =>
                                {
                                    if let Some(folder) = dir.parent() {
                                        dirty.insert(folder.to_path_buf());
                                    }
                                }
                                // In a tree's root: a Maildir++ folder (`.Name`) may have
                                // been made; Dovecot's own files there are not folders, and
                                // neither is the root itself (`~/.maildir`).
                                Some(dir)
                                    if self.trees.iter().any(|t| t.root.root == dir)
                                        && p.file_name()
                                            .and_then(|n| n.to_str())
                                            .is_some_and(|n| n.starts_with('.')) =>
                                {
                                    new_folders = true;
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        log::warn!("inotify: {e}; rescanning everything");
                        full = true;
                    }
                }
            }
            if new_folders {
                settle_until = Some(Instant::now() + FOLDER_SETTLE);
            }
            let settling = settle_until.is_some_and(|t| Instant::now() < t);
            if !settling {
                settle_until = None;
            }
            // (At most every SETTLE_EVERY: inotify reports the watcher's own opening of the
            // root, which wakes this loop again at once.)
            let settle_due = settling && last_listed.elapsed() >= SETTLE_EVERY;
            if (new_folders || full || settle_due) && self.opts.recursive {
                last_listed = Instant::now();
                let before = self.folder_roots();
                for i in 0..self.trees.len() {
                    self.refresh_folders(i)?;
                }
                let after = self.folder_roots();
                // A folder (re)appearing gets fresh watches: its folders may reuse the inodes
                // of one removed meanwhile.
                for root in after.iter().filter(|r| !before.contains(r)) {
                    watched.retain(|d, _| !d.starts_with(root));
                }
                if new_folders || after != before {
                    full = true;
                }
            }
            if full {
                self.watch_all(&mut watcher, &mut watched)?;
            }
            let folders: Vec<(usize, usize)> = if full {
                next_full = Instant::now() + self.opts.rescan;
                // A full rescan retries everything left for a temporary failure (the entries
                // only keep inotify's passes from retrying them in between).
                self.deferred.clear();
                // What was left as it is but has changed since (or is gone) is looked at again.
                self.skipped
                    .retain(|p, sig| sig.is_some() && file_sig(p) == *sig);
                self.all_folders()
            } else {
                self.all_folders()
                    .into_iter()
                    .filter(|&(t, f)| dirty.contains(&self.trees[t].folders[f].root))
                    .collect()
            };
            if !folders.is_empty() {
                self.pass(pool, jobs, &folders, false)?;
            }
        }
        Ok(())
    }

    fn folder_roots(&self) -> Vec<PathBuf> {
        self.trees
            .iter()
            .flat_map(|t| t.folders.iter().map(|f| f.root.clone()))
            .collect()
    }

    /// Every folder once (a Maildir given on its own and also reached by --recursive from
    /// another is worked through once per pass).
    fn all_folders(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut seen: HashSet<&Path> = HashSet::new();
        for (t, tree) in self.trees.iter().enumerate() {
            for (f, folder) in tree.folders.iter().enumerate() {
                if seen.insert(folder.root.as_path()) {
                    v.push((t, f));
                }
            }
        }
        v
    }

    fn watch_all(
        &self,
        w: &mut notify::RecommendedWatcher,
        watched: &mut HashMap<PathBuf, u64>,
    ) -> Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for t in &self.trees {
            if self.opts.recursive {
                dirs.push(t.root.root.clone());
            }
            for f in &t.folders {
                dirs.push(f.dir(Sub::New));
                dirs.push(f.dir(Sub::Cur));
            }
        }
        use std::os::unix::fs::MetadataExt;
        for d in dirs {
            let Ok(ino) = fs::metadata(&d).map(|m| m.ino()) else {
                // Gone: watched again if it comes back (the full rescans cover it meanwhile).
                watched.remove(&d);
                continue;
            };
            if watched.get(&d) == Some(&ino) {
                continue;
            }
            w.watch(&d, notify::RecursiveMode::NonRecursive)
                .map_err(|e| Error::tempfail(format!("watching {}: {e}", d.display())))?;
            watched.insert(d, ino);
        }
        Ok(())
    }

    /// Scans the given folders and works through what they hold, batch by batch.
    fn pass(
        &mut self,
        pool: &Pool<'_>,
        jobs: usize,
        folders: &[(usize, usize)],
        backlog: bool,
    ) -> Result<()> {
        let mut todo: Vec<(Job, Option<usize>)> = Vec::new();
        let mut finish: Vec<Placed> = Vec::new();
        let now = Instant::now();
        for &(t, f) in folders {
            let archive = self.trees[t].archive;
            let md = self.trees[t].folders[f].clone();
            let mut names: Vec<(Sub, String)> = Vec::new();
            for sub in Sub::BOTH {
                match md.list(sub) {
                    Ok(v) => names.extend(v.into_iter().map(|n| (sub, n))),
                    Err(e) => {
                        log::warn!("{e}");
                        continue;
                    }
                }
            }
            let ours: HashMap<String, (Sub, String)> = names
                .iter()
                .filter(|(_, n)| maildir::is_ours(n))
                .map(|(s, n)| (maildir::key(n).to_string(), (*s, n.clone())))
                .collect();
            for (sub, name) in names {
                if maildir::is_ours(&name) {
                    continue;
                }
                let key = maildir::key(&name).to_string();
                // An original archived as KEY-smimed-N that a user moved back: its copy has KEY
                // (and, since KEY was another folder's too, its Message-ID).
                let copy = ours.get(&key).or_else(|| {
                    maildir::key_before_collision(&key)
                        .and_then(|base| ours.get(base))
                        .filter(|o| same_message(&md.path(sub, &name), &md.path(o.0, &o.1)))
                });
                if let Some(o) = copy {
                    // A run stopped between placing the copy and moving the original.
                    finish.push(Placed {
                        md: md.clone(),
                        archive,
                        key,
                        orig: (sub, name),
                        ours: o.clone(),
                        follow: false,
                    });
                    continue;
                }
                let path = md.path(sub, &name);
                if self.skipped.contains_key(&path) {
                    continue;
                }
                if self.deferred.get(&path).is_some_and(|t| *t > now) {
                    continue;
                }
                todo.push((
                    Job {
                        md: md.clone(),
                        sub,
                        name,
                    },
                    archive,
                ));
            }
        }
        if !finish.is_empty() {
            log::info!(
                "finishing {} move(s) to the archive left by an earlier run",
                finish.len()
            );
            self.archive_phase(finish)?;
        }
        if todo.is_empty() {
            return Ok(());
        }
        let bar = (backlog && self.opts.progress && todo.len() > PROGRESS_MIN).then(|| {
            let b = indicatif::ProgressBar::new(todo.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos}/{len} messages [{bar:40}] {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        // Every job is queued at once; the workers go on with the next ones while this thread
        // commits a batch of finished ones (`batch`, or what finished within COMMIT_EVERY, and
        // what else is waiting), so the disk waits overlap the cryptography.
        let batch = BATCH_PER_JOB * jobs;
        let mut fatal = None;
        pool.ctx.retry_keys();
        let mut archive_of: HashMap<PathBuf, Option<usize>> = HashMap::new();
        for (job, archive) in &todo {
            archive_of.insert(job.path(), *archive);
            pool.jobs
                .send(job.clone())
                .map_err(|_| Error::software("worker pool stopped"))?;
        }
        let mut left = todo.len();
        while left > 0 {
            let mut outcomes = Vec::with_capacity(batch.min(left));
            let mut deadline: Option<Instant> = None;
            while outcomes.len() < batch && left > 0 {
                let o = match deadline {
                    None => pool.results.recv().ok(),
                    Some(d) => match pool.results.try_recv() {
                        Ok(o) => Some(o),
                        Err(mpsc::TryRecvError::Disconnected) => None,
                        Err(mpsc::TryRecvError::Empty) => {
                            let wait = d.saturating_duration_since(Instant::now());
                            if wait.is_zero() {
                                break;
                            }
                            std::thread::sleep(wait.min(COLLECT_SLICE));
                            continue;
                        }
                    },
                };
                let o = o.ok_or_else(|| Error::software("worker pool stopped"))?;
                left -= 1;
                deadline.get_or_insert_with(|| Instant::now() + COMMIT_EVERY);
                if let Some(b) = &bar {
                    b.inc(1);
                }
                outcomes.push(o);
            }
            // What finished while the last batch was committed goes in this one too: when the
            // commits fall behind the workers, batches grow, and the fixed cost of each (the
            // syncs) is shared by more messages instead of holding the last ones back.
            while left > 0 {
                match pool.results.try_recv() {
                    Ok(o) => {
                        left -= 1;
                        if let Some(b) = &bar {
                            b.inc(1);
                        }
                        outcomes.push(o);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.commit(outcomes, &archive_of, &mut fatal) {
                if fatal.is_none() {
                    fatal = Some(e);
                }
            }
            if fatal.is_some() && !pool.abort.swap(true, Ordering::SeqCst) {
                // The workers skip the jobs left; what they finish is still committed.
                log::error!("stopping after a fatal error");
            }
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Group commit of one batch: syncfs, renames into place, fsync of the directories, then
    /// the originals' moves.
    fn commit(
        &mut self,
        outcomes: Vec<Outcome>,
        archive_of: &HashMap<PathBuf, Option<usize>>,
        fatal: &mut Option<Error>,
    ) -> Result<()> {
        let mut ready = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Ready(r) => ready.push(r),
                Outcome::Skipped(job) => {
                    self.summary.skipped += 1;
                    let path = job.path();
                    self.skipped.insert(path.clone(), file_sig(&path));
                }
                Outcome::Deferred(job, e) => {
                    self.summary.deferred += 1;
                    match e {
                        Some(e) => log::warn!("{}: left for later: {e}", job.path().display()),
                        None => log::debug!("{}: left for later", job.path().display()),
                    }
                    self.deferred
                        .insert(job.path(), Instant::now() + self.opts.rescan);
                }
                Outcome::Vanished(job) => {
                    self.summary.vanished += 1;
                    log::info!("{}: gone before it was read", job.path().display());
                }
                Outcome::Failed(job, e) => {
                    self.summary.errors += 1;
                    log::error!("{}: left untouched: {e}", job.path().display());
                    let path = job.path();
                    self.skipped.insert(path.clone(), file_sig(&path));
                }
                Outcome::NotStarted => {}
                Outcome::Fatal(e) => {
                    if fatal.is_none() {
                        *fatal = Some(e);
                    }
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        // 1b. The copies' fingerprints, durable with the copies (step 2) before any copy is in
        // place. The ledger only helps recognise copies filed under another name: a full disk
        // or a lost state folder must not stop the watcher.
        let not_recorded = |e: Error, n: usize| {
            log::warn!(
                "{e}: {n} copies not recorded (filed under another name, they would be taken \
                 for mail with forged status fields)"
            )
        };
        let mut ledger_file = None;
        if let Some(l) = &self.ledger {
            let fps: Vec<Fingerprint> = ready.iter().map(|r| r.copy_fp).collect();
            match l.record_copies(&fps) {
                Ok(f) => ledger_file = f.map(|f| (f, fps.len())),
                Err(e) => not_recorded(e, fps.len()),
            }
        }
        // 2. One syncfs per file system makes every tmp file of the batch durable (and the
        // ledger's lines, when it is on one of them; else its own sync).
        let mut devs: HashSet<u64> = HashSet::new();
        let mut tmps: HashSet<PathBuf> = HashSet::new();
        for Ready { job, .. } in &ready {
            use std::os::unix::fs::MetadataExt;
            let tmp = job.md.tmp();
            if tmps.contains(&tmp) {
                continue;
            }
            let dev = fs::metadata(&tmp)
                .map_err(|e| Error::io(format!("looking at {}", tmp.display()), e))?
                .dev();
            if devs.insert(dev) {
                maildir::sync_fs_of(&tmp)?;
            }
            tmps.insert(tmp);
        }
        if let (Some(l), Some((f, n))) = (&self.ledger, &ledger_file) {
            use std::os::unix::fs::MetadataExt;
            let covered = f.metadata().is_ok_and(|m| devs.contains(&m.dev()));
            if !covered {
                if let Err(e) = l.sync(f) {
                    not_recorded(e, *n);
                }
            }
        }
        // 3. Copies in place, next to their original as it is now.
        let mut placed = Vec::new();
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        for Ready {
            job,
            tmp,
            name,
            decrypted,
            verified,
            failed,
            ..
        } in ready
        {
            let key = maildir::key(&job.name).to_string();
            let orig = match locate(&job.md, &key, job.sub, &job.name) {
                Ok(Some(o)) => o,
                Ok(None) => {
                    let _ = fs::remove_file(&tmp);
                    self.summary.vanished += 1;
                    log::info!("{}: gone while it was processed", job.path().display());
                    continue;
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let target = maildir::with_info(&name, maildir::split_name(&orig.1).1);
            let dest = job.md.path(orig.0, &target);
            if let Err(e) = fs::rename(&tmp, &dest) {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(format!("renaming into {}", dest.display()), e));
            }
            dirty.insert(job.md.dir(orig.0));
            self.summary.processed += 1;
            self.summary.decrypted += usize::from(decrypted);
            self.summary.verified += usize::from(verified);
            self.summary.failed += usize::from(failed);
            let archive = archive_of.get(&job.path()).copied().flatten();
            placed.push(Placed {
                md: job.md.clone(),
                archive,
                key,
                orig: orig.clone(),
                ours: (orig.0, target),
                follow: true,
            });
        }
        for d in &dirty {
            maildir::fsync_dir(d)?;
        }
        // 4. Only now, the originals.
        self.archive_phase(placed)
    }

    /// Moves each original whose processed copy is durably in place to the archive (or
    /// deletes it with --no-archive), then fsyncs the directories involved.
    fn archive_phase(&mut self, placed: Vec<Placed>) -> Result<()> {
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        for p in placed {
            self.finish_one(&p, &mut dirty)?;
        }
        // The archive's entries first, then the removals from the source folders.
        let (first, then): (Vec<PathBuf>, Vec<PathBuf>) = dirty
            .into_iter()
            .partition(|d| self.archives.iter().any(|a| d.starts_with(&a.md.root)));
        for d in first.iter().chain(then.iter()) {
            maildir::fsync_dir(d)?;
        }
        Ok(())
    }

    fn finish_one(&mut self, p: &Placed, dirty: &mut HashSet<PathBuf>) -> Result<()> {
        let mut orig = p.orig.clone();
        let mut ours = p.ours.clone();
        for attempt in 0..5 {
            let Some(now) = locate(&p.md, &p.key, orig.0, &orig.1)? else {
                self.summary.vanished += 1;
                log::info!(
                    "{}: original gone before it was archived",
                    p.md.path(orig.0, &orig.1).display()
                );
                return Ok(());
            };
            orig = now;
            // A client moved or re-flagged the original after we read it: the copy follows.
            if p.follow && orig != p.orig {
                let want = (
                    orig.0,
                    maildir::with_info(&ours.1, maildir::split_name(&orig.1).1),
                );
                if want != ours {
                    match fs::rename(p.md.path(ours.0, &ours.1), p.md.path(want.0, &want.1)) {
                        Ok(()) => {
                            dirty.insert(p.md.dir(ours.0));
                            dirty.insert(p.md.dir(want.0));
                            ours = want;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // The client has taken over the copy too: leave it where it is.
                        }
                        Err(e) => return Err(Error::io("moving the processed copy", e)),
                    }
                }
                // A flag change on the copy must be durable before the original goes.
                for d in dirty.iter() {
                    maildir::fsync_dir(d)?;
                }
            }
            let src = p.md.path(orig.0, &orig.1);
            let res = match p.archive {
                None => fs::remove_file(&src).map(|_| true),
                Some(a) => self.move_to_archive(a, &p.key, &src, orig.0, &orig.1),
            };
            match res {
                Ok(_) => {
                    if let Some(a) = p.archive {
                        dirty.insert(self.archives[a].md.dir(orig.0));
                        self.summary.archived += 1;
                    } else {
                        self.summary.removed += 1;
                    }
                    dirty.insert(p.md.dir(orig.0));
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 4 => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if locate(&p.md, &p.key, orig.0, &orig.1)?.is_some() {
                        // Renamed faster than we can move it: the next pass finishes the move
                        // (the copy is in place; --once reports it as deferred).
                        self.summary.deferred += 1;
                        log::info!("{}: archiving left for later", src.display());
                    } else {
                        self.summary.vanished += 1;
                    }
                    return Ok(());
                }
                // Over the file-size limit on the archive's file system (`ulimit -f`,
                // LimitFSIZE=): this original only stays beside its copy, retried at the next
                // pass; the others go on.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::FBIG.raw_os_error()) => {
                    self.summary.deferred += 1;
                    log::warn!("{}: archiving left for later: {e}", src.display());
                    return Ok(());
                }
                Err(e) => return Err(Error::io(format!("archiving {}", src.display()), e)),
            }
        }
        Ok(())
    }

    /// Renames `src` into the archive (same subdirectory, same name but for keyword letters;
    /// the caller fsyncs the directories), never over another file: when the name is taken by
    /// another message (the same name in two folders sharing this archive), under a distinct
    /// name ([`maildir::renamed_for_collision`]); when it is taken by the same bytes (an
    /// interrupted move), `src` is only unlinked. Across file systems, copies it durably first
    /// (fsynced file and directory) and only then unlinks `src`.
    /// Returns whether the archive gained a file.
    fn move_to_archive(
        &mut self,
        a: usize,
        key: &str,
        src: &Path,
        sub: Sub,
        name: &str,
    ) -> io::Result<bool> {
        let archive = &mut self.archives[a];
        // Only if the archive still holds this very message: a user may have moved an archived
        // original back into the Maildir, and then this is the only copy left.
        if archive.keys.contains(key) && archived_copy(&archive.md, key, src)? {
            fs::remove_file(src)?;
            return Ok(false);
        }
        // Keyword letters mean other keywords in the archive folder (Dovecot): left out.
        let base = maildir::without_keywords(name);
        let mut n = 0u32;
        let mut made_again = false;
        // Across file systems: the durable copy in the archive's tmp/.
        let mut copy: Option<PathBuf> = None;
        loop {
            let dest_name = match n {
                0 => base.clone(),
                _ => maildir::renamed_for_collision(&base, n),
            };
            // Another message's original has this key in the archive (its name may differ in
            // `,S=` or flags): two files with one key in one Maildir confuse clients (neomutt
            // takes the part before `,` or `:` for the message's identity).
            let dest_key = maildir::key(&dest_name);
            if archive.keys.contains(dest_key) {
                let held = archive
                    .md
                    .find_original(dest_key)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                if held.is_some() {
                    if n >= MAX_SAME_NAME {
                        return Err(io::Error::other(format!(
                            "{MAX_SAME_NAME} archived messages already have the key {key}"
                        )));
                    }
                    n += 1;
                    continue;
                }
                // Gone from the archive since (a user moved it back): free again.
                archive.keys.remove(dest_key);
            }
            let dest = archive.md.path(sub, &dest_name);
            match maildir::rename_noreplace(copy.as_deref().unwrap_or(src), &dest) {
                Ok(()) => {
                    archive.keys.insert(maildir::key(&dest_name).to_string());
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if maildir::same_content(&dest, src)? {
                        if let Some(c) = &copy {
                            let _ = fs::remove_file(c);
                        }
                        fs::remove_file(src)?;
                        archive.keys.insert(key.to_string());
                        return Ok(false);
                    }
                    if n >= MAX_SAME_NAME {
                        if let Some(c) = &copy {
                            let _ = fs::remove_file(c);
                        }
                        return Err(io::Error::other(format!(
                            "{MAX_SAME_NAME} archived messages already have the name {base}"
                        )));
                    }
                    n += 1;
                }
                // The archive folder was removed while we run (an IMAP DELETE, a user): make it
                // again rather than take the original for gone.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && !made_again
                        && copy.is_none()
                        && fs::symlink_metadata(src).is_ok()
                        && !archive.md.dir(sub).is_dir() =>
                {
                    log::warn!(
                        "archive {} is gone: making it again",
                        archive.md.root.display()
                    );
                    Maildir::create(&archive.md.root, archive.subfolder)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    archive.keys.clear();
                    made_again = true;
                }
                Err(e)
                    if copy.is_none()
                        && e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) =>
                {
                    let bytes = fs::read(src)?;
                    let mtime = fs::metadata(src).and_then(|m| m.modified()).ok();
                    let tmp = archive.md.tmp().join(maildir::tmp_name(key));
                    maildir::write_new_io(&tmp, &bytes, true, mtime)?;
                    copy = Some(tmp);
                }
                Err(e) => {
                    if let Some(c) = &copy {
                        let _ = fs::remove_file(c);
                    }
                    return Err(e);
                }
            }
        }
        archive.keys.insert(key.to_string());
        if copy.is_some() {
            fs::File::open(archive.md.dir(sub))?.sync_all()?;
            // Archived from here on: if a client re-flags the original before the unlink, the
            // next try only unlinks it where it is (never a second copy).
            fs::remove_file(src)?;
        }
        Ok(true)
    }
}

/// Whether the archive holds `src`'s bytes under `key` (or `key` made distinct).
fn archived_copy(archive: &Maildir, key: &str, src: &Path) -> io::Result<bool> {
    for sub in Sub::BOTH {
        let names = archive
            .list(sub)
            .map_err(|e| io::Error::other(e.to_string()))?;
        for n in names.iter().filter(|n| maildir::key_matches(n, key)) {
            match maildir::same_content(&archive.path(sub, n), src) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                // Moved by a client meanwhile: not this one.
                Err(e) if e.kind() == io::ErrorKind::NotFound && src.exists() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

/// Where the message with `key` is now: at `sub/name` if still there, else wherever a client
/// moved or re-flagged it (our copies excluded). None when it is gone.
fn locate(md: &Maildir, key: &str, sub: Sub, name: &str) -> Result<Option<(Sub, String)>> {
    match fs::symlink_metadata(md.path(sub, name)) {
        Ok(_) => Ok(Some((sub, name.to_string()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => md.find_original(key),
        Err(e) => Err(Error::io(
            format!("looking at {}", md.path(sub, name).display()),
            e,
        )),
    }
}

/// Whether two message files are the same message by their outer header: the same
/// Message-ID; without one, the same first Received (trace fields stay on a processed copy,
/// while a protected header section inside the encryption replaces its Subject, From and
/// Date); without either, the same Date, From and Subject.
fn same_message(a: &Path, b: &Path) -> bool {
    let identity = |p: &Path| -> Option<Vec<String>> {
        let head = maildir::read_head(p, HEAD_LIMIT).ok()??;
        let (fields, _) = mailparse::parse_headers(&head.bytes).ok()?;
        let value = |name: &str| {
            mailparse::MailHeaderMap::get_first_value(&fields[..], name)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let id = value("Message-ID");
        if !id.is_empty() {
            return Some(vec![id]);
        }
        let received = value("Received");
        if !received.is_empty() {
            return Some(vec![received]);
        }
        let rest: Vec<String> = ["Date", "From", "Subject"]
            .iter()
            .map(|n| value(n))
            .collect();
        rest.iter().any(|v| !v.is_empty()).then_some(rest)
    };
    matches!((identity(a), identity(b)), (Some(x), Some(y)) if x == y)
}

/// A file's size and modification time, to notice it changed.
type FileSig = (u64, i64, i64);

fn file_sig(p: &Path) -> Option<FileSig> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
