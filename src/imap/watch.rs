//! The IMAP watcher's engine for one mailbox: connect, recover an interrupted run, process the
//! backlog in batches, then IDLE (or poll with NOOP) and process what arrives; reconnect with
//! backoff after a dropped connection.
//!
//! Per message: `UID FETCH (FLAGS INTERNALDATE BODY.PEEK[])` (never sets \Seen), run the
//! inbound pipeline; only S/MIME messages and messages with forged status fields are replaced:
//! APPEND the result with the same flags plus `$SMIMEProcessed` and the same INTERNALDATE, then
//! move the original to the archive mailbox (UID MOVE, else COPY + UID EXPUNGE with UIDPLUS,
//! else COPY + \Deleted + EXPUNGE only when no other message is flagged \Deleted), or delete it
//! with `--no-archive`. Copies go in MULTIAPPEND commands (LITERAL+ literals, one write, one
//! server transaction) when the server offers both.
//!
//! Invariants (exactly once, see `state.rs`): intent is saved before APPEND, the copy's UID after
//! it, and the state is cleared only after the original is gone; a copy is ours only when its UID
//! came back from our APPEND, or when it carries `$SMIMEProcessed` *and* its digest is in the
//! appended logs of the state folder, whatever account they are under (a sender can forge
//! neither; a keyword alone is not trusted: some servers turn a sender's `X-Keywords` field
//! into keywords); a message that fails temporarily is retried, never
//! skipped; no plaintext, secret or message body is logged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ::imap::types::{Flag, UnsolicitedResponse};

use super::account::Account;
use super::conn::{self, imap_err, Session};
use super::state::{self, MailboxState, Pending, StateFile};
use super::utf7;
use crate::error::{Error, Kind, Result};
use crate::pipeline::{self, Context};
use crate::status::{Encryption, Signature};

/// The keyword on every copy we append.
pub const KEYWORD: &str = "$SMIMEProcessed";

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub once: bool,
    /// Messages processed in parallel.
    pub jobs: usize,
    pub state_dir: std::path::PathBuf,
    /// Messages fetched per UID FETCH.
    pub batch: usize,
    /// IDLE is re-issued after this long (servers may drop an IDLE after 30 minutes).
    pub idle_refresh: Duration,
    /// NOOP interval on servers without IDLE.
    pub poll_interval: Duration,
}

/// Counters for the summary line.
#[derive(Debug, Default)]
pub struct Stats {
    pub replaced: AtomicUsize,
    pub decrypted: AtomicUsize,
    pub verified: AtomicUsize,
    pub failed: AtomicUsize,
    pub skipped: AtomicUsize,
    pub retried: AtomicUsize,
}

impl Stats {
    /// A processed message whose copy the server refused: left for retry, not processed.
    fn processed_refused(&self) {
        self.replaced.fetch_sub(1, Ordering::Relaxed);
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        format!(
            "processed {}, decrypted {}, verified {}, failed {}, skipped {}, left for retry {}",
            self.replaced.load(Ordering::Relaxed),
            self.decrypted.load(Ordering::Relaxed),
            self.verified.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
        )
    }
}

/// Shutdown coordination: workers hold `work` (read) while a batch is in hand; the signal
/// handler side takes it for writing, so the process exits only between batches.
#[derive(Debug, Default)]
pub struct Stop {
    pub flag: Arc<AtomicBool>,
    pub work: RwLock<()>,
}

impl Stop {
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
    }
}

fn retryable(e: &Error) -> bool {
    e.kind == Kind::TempFail
}

/// Watches one mailbox until stopped (or, with `once`, until the backlog is done).
pub fn watch_mailbox(
    ctx: &Context,
    acct: &Account,
    mailbox: &str,
    opts: &Options,
    stop: &Stop,
    stats: &Stats,
) -> Result<()> {
    let label = format!("{}/{}", acct.label(), mailbox);
    let sf = StateFile::new(&opts.state_dir, &acct.label(), mailbox)?;
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.stopped() {
            return Ok(());
        }
        match run_session(ctx, acct, mailbox, &sf, opts, stop, stats, &mut backoff) {
            Ok(()) => return Ok(()),
            Err(e) if opts.once || !retryable(&e) => return Err(e.context(&label)),
            Err(e) => {
                log::warn!("{label}: {e}; reconnecting in {} s", backoff.as_secs());
                stop.sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// A comma-separated UID set with ranges.
pub fn uid_set(uids: &[u32]) -> String {
    let mut v: Vec<u32> = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

struct Caps {
    idle: bool,
    mv: bool,
    uidplus: bool,
    /// MULTIAPPEND (RFC 3502) with LITERAL+ (RFC 7888): a group of copies in one APPEND, sent
    /// without waiting for continuations, stored by the server in one transaction.
    multiappend: bool,
}

struct Run<'a> {
    ctx: &'a Context,
    acct: &'a Account,
    opts: &'a Options,
    stats: &'a Stats,
    s: Session,
    caps: Caps,
    wire: String,
    archive_wire: Option<String>,
    sf: &'a StateFile,
    st: MailboxState,
    /// Digests from our appended log, loaded on first need.
    digests: Option<HashSet<String>>,
    /// Extra authenticated sessions for parallel APPENDs (no mailbox selected).
    appenders: Vec<Session>,
}

/// A fetched message.
struct Item {
    uid: u32,
    flags: Vec<Flag<'static>>,
    date: Option<chrono::DateTime<chrono::FixedOffset>>,
    body: Vec<u8>,
}

/// Messages that failed temporarily are retried at least this often.
const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// [`RETRY_INTERVAL`] (tests shorten it with `SMIMED_TEST_RETRY_MS`).
fn retry_interval() -> Duration {
    std::env::var("SMIMED_TEST_RETRY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RETRY_INTERVAL, Duration::from_millis)
}

/// Extra sessions used for parallel APPENDs, at most.
const MAX_APPENDERS: usize = 3;

/// One copy to APPEND.
struct AppendJob<'a> {
    output: &'a [u8],
    flags: Vec<Flag<'static>>,
    date: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// Searches for the copies of interrupted messages before they count as never appended, and
/// the pause between two (see `Run::recover`).
const RECOVER_TRIES: usize = 4;
const RECOVER_PAUSE: Duration = Duration::from_millis(500);
/// Copies per MULTIAPPEND command.
const MULTIAPPEND_MAX: usize = 16;
/// Bytes per MULTIAPPEND command at most (the command is built in memory); a copy larger than
/// this goes in an APPEND of its own, streamed by the `imap` crate.
const MULTIAPPEND_MAX_BYTES: usize = 4 << 20;

/// Splits `group` into runs for MULTIAPPEND: at most [`MULTIAPPEND_MAX`] copies and
/// [`MULTIAPPEND_MAX_BYTES`] bytes each, a copy over the byte limit alone.
fn multiappend_runs<'j, 'a>(group: &'j [AppendJob<'a>]) -> Vec<&'j [AppendJob<'a>]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, job) in group.iter().enumerate() {
        let len = job.output.len();
        if i > start && (i - start == MULTIAPPEND_MAX || bytes + len > MULTIAPPEND_MAX_BYTES) {
            runs.push(&group[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < group.len() {
        runs.push(&group[start..]);
    }
    runs
}

/// The outcome of one copy's APPEND: its UID when the server said it (APPENDUID).
type Appended = std::result::Result<Option<u32>, AppendError>;

enum AppendError {
    /// The server answered NO for this copy (over quota, too large, no right to insert): it
    /// stored nothing (RFC 3501 §6.3.11), and the session goes on.
    Refused(Error),
    /// Anything else (the connection, a skipped copy): what was stored is found by recovery.
    Failed(Error),
}

fn skipped() -> AppendError {
    AppendError::Failed(Error::tempfail("APPEND skipped after an earlier failure"))
}

/// APPENDs a group of copies on one session, in order; a copy the server refuses (NO) does not
/// stop the others, any other error does. With `multi`, copies go out in MULTIAPPEND commands
/// (see [`multiappend_runs`]); a run the server refuses as a whole (all or none) is sent again
/// one copy at a time, so that one copy over a quota does not hold up the rest.
fn append_group(
    s: &mut Session,
    wire: &str,
    group: &[AppendJob<'_>],
    uidvalidity: u32,
    multi: bool,
) -> Vec<Appended> {
    if multi && group.len() > 1 {
        let mut out = Vec::with_capacity(group.len());
        for part in multiappend_runs(group) {
            let single = part.len() == 1;
            let done = match (!single)
                .then(|| multiappend(s, wire, part, uidvalidity))
                .flatten()
            {
                Some(r) => r,
                // a copy that is not UTF-8 cannot go through the crate's command path
                None => append_group(s, wire, part, uidvalidity, false),
            };
            let failed = done
                .iter()
                .any(|r| matches!(r, Err(AppendError::Failed(_))));
            out.extend(done);
            if failed {
                break;
            }
        }
        while out.len() < group.len() {
            out.push(Err(skipped()));
        }
        return out;
    }
    let mut out = Vec::with_capacity(group.len());
    for job in group {
        let mut cmd = s.append(wire, job.output);
        cmd.flags(job.flags.iter().cloned());
        if let Some(d) = job.date {
            cmd.internal_date(d);
        }
        match cmd.finish() {
            Ok(app) => {
                if test_crash_after_append() {
                    log::error!("SMIMED_TEST_CRASH_AFTER_APPEND: aborting after APPEND");
                    std::process::abort();
                }
                let uid = app.uids.as_ref().and_then(|v| {
                    v.iter().next().map(|m| match m {
                        imap_proto::UidSetMember::Uid(u) => *u,
                        imap_proto::UidSetMember::UidRange(r) => *r.start(),
                    })
                });
                out.push(Ok(match (uid, app.uid_validity) {
                    (Some(u), Some(v)) if v == uidvalidity => Some(u),
                    _ => None,
                }));
            }
            // (`Append`: the server answered the literal's announcement with a NO, say over
            // quota by the size alone, and was never sent the message.)
            Err(e @ (::imap::Error::No(_) | ::imap::Error::Append)) => {
                out.push(Err(AppendError::Refused(imap_err(
                    format!("APPEND to {wire}"),
                    e,
                ))));
            }
            Err(e) => {
                out.push(Err(AppendError::Failed(imap_err(
                    format!("APPEND to {wire}"),
                    e,
                ))));
                break;
            }
        }
    }
    while out.len() < group.len() {
        out.push(Err(skipped()));
    }
    out
}

/// One MULTIAPPEND (RFC 3502) of `part`, every message a LITERAL+ literal (RFC 7888), so the
/// whole command is one write and one response. The server stores all or none. Returns None,
/// sending nothing, when a copy is not UTF-8 (the `imap` crate sends commands as `str`); the
/// caller then APPENDs one by one, as it does when the server refuses the run (NO: it stored
/// none of it). UIDs come from APPENDUID (UIDPLUS), in order; when the server gives none, or
/// not one per copy, the copies are found the way a restart finds them.
fn multiappend(
    s: &mut Session,
    wire: &str,
    part: &[AppendJob<'_>],
    uidvalidity: u32,
) -> Option<Vec<Appended>> {
    let quoted = wire.replace('\\', "\\\\").replace('"', "\\\"");
    let mut cmd = format!("APPEND \"{quoted}\"");
    for job in part {
        let text = std::str::from_utf8(job.output).ok()?;
        let flags: Vec<String> = job.flags.iter().map(ToString::to_string).collect();
        cmd.push_str(&format!(" ({})", flags.join(" ")));
        if let Some(d) = job.date {
            cmd.push_str(&format!(" \"{}\"", d.format("%d-%h-%Y %T %z")));
        }
        cmd.push_str(&format!(" {{{}+}}\r\n", text.len()));
        cmd.push_str(text);
    }
    let (data, done) = match s.run(&cmd) {
        Ok(r) => r,
        Err(::imap::Error::No(n)) => {
            log::info!(
                "APPEND of {} to {wire} refused ({}): one at a time",
                part.len(),
                n.information
            );
            return None;
        }
        Err(e) => {
            let e = imap_err(format!("APPEND of {} to {wire}", part.len()), e);
            let mut out = vec![Err(AppendError::Failed(e))];
            while out.len() < part.len() {
                out.push(Err(skipped()));
            }
            return Some(out);
        }
    };
    drop(cmd);
    if test_crash_after_append() {
        log::error!("SMIMED_TEST_CRASH_AFTER_APPEND: aborting after APPEND");
        std::process::abort();
    }
    let uids = data
        .get(done..)
        .and_then(|tail| imap_proto::parser::parse_response(tail).ok())
        .and_then(|(_, r)| match r {
            imap_proto::Response::Done {
                code: Some(imap_proto::ResponseCode::AppendUid(v, set)),
                ..
            } if v == uidvalidity => Some(set),
            _ => None,
        })
        .map(|set| {
            let mut all = Vec::new();
            for m in set {
                match m {
                    imap_proto::UidSetMember::Uid(u) => all.push(u),
                    imap_proto::UidSetMember::UidRange(r) => all.extend(r),
                }
                if all.len() > part.len() {
                    break;
                }
            }
            all
        })
        .filter(|all| all.len() == part.len());
    Some(match uids {
        Some(all) => all.into_iter().map(|u| Ok(Some(u))).collect(),
        None => part.iter().map(|_| Ok(None)).collect(),
    })
}

/// A fetched batch, waiting for the pipeline and then for [`Run::apply`].
struct Fetched {
    chunk: Vec<u32>,
    items: Vec<Item>,
    ours: Vec<bool>,
    fetch_time: Duration,
}

enum Outcome {
    Ours,
    Skip,
    Replace { output: Vec<u8>, digest: String },
    Retry,
}

#[allow(clippy::too_many_arguments)]
fn run_session(
    ctx: &Context,
    acct: &Account,
    mailbox: &str,
    sf: &StateFile,
    opts: &Options,
    stop: &Stop,
    stats: &Stats,
    backoff: &mut Duration,
) -> Result<()> {
    let mut s = conn::connect(acct)?;
    let caps = s
        .capabilities()
        .map_err(|e| imap_err(format!("CAPABILITY of {}", acct.label()), e))?;
    let caps = Caps {
        idle: caps.has_str("IDLE"),
        mv: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
        multiappend: caps.has_str("MULTIAPPEND") && caps.has_str("LITERAL+"),
    };
    let wire = utf7::encode(mailbox)?;
    let archive_wire = match &acct.archive {
        Some(a) => {
            let w = utf7::encode(a)?;
            ensure_mailbox(&mut s, &w)?;
            Some(w)
        }
        None => None,
    };
    let mb = s.select(&wire).map_err(|e| match e {
        // a mailbox that does not exist will not appear by retrying
        ::imap::Error::No(n) => Error::config(format!(
            "cannot open mailbox {mailbox:?} on {}: {}",
            acct.label(),
            n.information
        )),
        e => imap_err(format!("SELECT {mailbox}"), e),
    })?;
    if mb.is_read_only {
        return Err(Error::config(format!(
            "{mailbox} on {} is read-only",
            acct.label()
        )));
    }
    let keyword_ok = mb
        .permanent_flags
        .iter()
        .any(|f| *f == Flag::MayCreate || matches!(f, Flag::Custom(c) if c.as_ref() == KEYWORD));
    if !keyword_ok {
        log::warn!(
            "{}/{mailbox}: the server does not keep the {KEYWORD} keyword; our copies are \
             recognised by their APPENDUID only",
            acct.label()
        );
    }
    let uidvalidity = mb
        .uid_validity
        .ok_or_else(|| Error::software(format!("SELECT {mailbox}: no UIDVALIDITY")))?;
    let mut st = sf.load()?;
    if st.uidvalidity != uidvalidity {
        if st.uidvalidity != 0 {
            log::warn!(
                "{}/{mailbox}: UIDVALIDITY changed ({} -> {uidvalidity}): rescanning; our own \
                 copies are recognised by keyword and digest",
                acct.label(),
                st.uidvalidity
            );
        }
        // Intents pending under the old UIDs may or may not have been appended: their digests
        // let the rescan find those copies instead of appending again.
        let unresolved = st
            .unresolved
            .iter()
            .cloned()
            .chain(st.pending.iter().map(|p| p.digest.clone()))
            .collect();
        st = MailboxState {
            uidvalidity,
            unresolved,
            ..MailboxState::default()
        };
        sf.save(&st)?;
    }
    let mut run = Run {
        ctx,
        acct,
        opts,
        stats,
        s,
        caps,
        wire,
        archive_wire,
        sf,
        st,
        digests: None,
        appenders: Vec::new(),
    };
    run.recover()?;
    let mut first = true;
    loop {
        let synced = run.sync(stop);
        // Keys held back after a passphrase failure are tried again in the next pass.
        ctx.retry_keys();
        if !synced? {
            return Ok(());
        }
        if first {
            *backoff = Duration::from_secs(1);
            first = false;
        }
        if opts.once {
            let _ = run.s.logout();
            return Ok(());
        }
        if stop.stopped() {
            return Ok(());
        }
        run.wait(stop)?;
    }
}

fn ensure_mailbox(s: &mut Session, wire: &str) -> Result<()> {
    let quoted = format!("\"{wire}\"");
    let names = s
        .list(Some(""), Some(&quoted))
        .map_err(|e| imap_err(format!("LIST {wire}"), e))?;
    if names.iter().any(|n| n.name() == wire) {
        return Ok(());
    }
    match s.create(wire) {
        Ok(()) => {
            log::info!("created mailbox {wire}");
            Ok(())
        }
        Err(::imap::Error::No(n)) if n.information.to_ascii_lowercase().contains("exists") => {
            Ok(())
        }
        Err(e) => Err(imap_err(format!("CREATE {wire}"), e)),
    }
}

/// Test-only crash points (hidden): `SMIMED_TEST_CRASH_AFTER_APPEND=1` aborts right after the
/// first APPEND (its UID not recorded yet); `=before-move` aborts after the copies' UIDs were
/// saved, before the originals are archived.
/// The Message-ID of `msg` when it can stand in an IMAP SEARCH quoted string (ASCII, no quote
/// or backslash).
fn searchable_message_id(msg: &[u8]) -> Option<String> {
    let id = crate::mime::split(msg)
        .fields
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(b"Message-ID"))
        .map(|f| f.value().trim().to_string())?;
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    ok.then_some(id)
}

/// The status field every processed copy carries.
const STATUS_FIELD: &str = "X-Smime-Status";

/// Whether the message has an `X-Smime-Status` field (in its header section).
fn has_status_field(msg: &[u8]) -> bool {
    crate::mime::split(msg)
        .fields
        .iter()
        .any(|f| f.name().eq_ignore_ascii_case(STATUS_FIELD.as_bytes()))
}

/// The crash hooks of the tests: `SMIMED_TEST_CRASH_AFTER_APPEND=1` (right after an APPEND),
/// `before-move` (copies appended and recorded, originals not moved), `after-move` (originals
/// moved, the state not updated yet), `marked` (intents marked `archiving`, nothing moved).
fn test_crash_hook(name: &str) -> bool {
    std::env::var_os("SMIMED_TEST_CRASH_AFTER_APPEND").is_some_and(|v| v == name)
}

fn test_crash_after_append() -> bool {
    test_crash_hook("1")
}

fn test_crash_before_move() -> bool {
    test_crash_hook("before-move")
}

impl Run<'_> {
    fn label(&self) -> String {
        format!("{}/{}", self.acct.label(), self.wire)
    }

    fn digests(&mut self) -> Result<&mut HashSet<String>> {
        if self.digests.is_none() {
            self.digests = Some(self.sf.account_digests()?);
        }
        self.digests
            .as_mut()
            .ok_or_else(|| Error::software("digest set"))
    }

    /// The original UIDs of `unsure` whose original the archive mailbox holds (same size and
    /// digest, and Message-ID when it has one). With originals deleted rather than archived,
    /// or when the original's digest was not recorded (a state from an older version), all of
    /// them: their copies stay, so that nothing is lost.
    fn archived_originals(&mut self, unsure: &[Pending]) -> Result<HashSet<u32>> {
        let all = || unsure.iter().map(|p| p.orig_uid).collect();
        let Some(archive) = self.archive_wire.clone() else {
            return Ok(all());
        };
        if unsure.is_empty() {
            return Ok(HashSet::new());
        }
        if unsure
            .iter()
            .any(|p| p.orig_digest.is_none() || p.orig_size.is_none())
        {
            return Ok(all());
        }
        let mut found = HashSet::new();
        match self.s.examine(&archive) {
            Ok(_) => {
                for p in unsure {
                    let (Some(d), Some(n)) = (&p.orig_digest, p.orig_size) else {
                        continue;
                    };
                    let uids = self
                        .s
                        .uid_search(format!("LARGER {} SMALLER {}", n.saturating_sub(1), n + 1))
                        .map_err(|e| imap_err("UID SEARCH in the archive", e))?;
                    if uids.is_empty() {
                        continue;
                    }
                    let fetches = self
                        .s
                        .uid_fetch(
                            uid_set(&uids.into_iter().collect::<Vec<_>>()),
                            "(UID BODY.PEEK[])",
                        )
                        .map_err(|e| imap_err("UID FETCH in the archive", e))?;
                    if fetches
                        .iter()
                        .any(|f| f.body().is_some_and(|b| state::digest(b) == *d))
                    {
                        found.insert(p.orig_uid);
                    }
                }
            }
            // No archive mailbox: nothing was moved there.
            Err(::imap::Error::No(_)) => {}
            Err(e) => return Err(imap_err(format!("EXAMINE {archive}"), e)),
        }
        self.s
            .select(&self.wire)
            .map_err(|e| imap_err(format!("SELECT {}", self.wire), e))?;
        Ok(found)
    }

    /// UIDs of copies known to be ours: recorded, or claimed by a pending intent.
    fn claimed_uids(&self) -> HashSet<u32> {
        self.st
            .own
            .iter()
            .copied()
            .chain(self.st.pending.iter().filter_map(|p| p.appended_uid))
            .collect()
    }

    /// Completes an interrupted run: finds the copies appended but not recorded, archives their
    /// originals, forgets intents whose APPEND never happened (those originals get processed
    /// again by the next sync).
    fn recover(&mut self) -> Result<()> {
        if self.st.pending.is_empty() {
            return Ok(());
        }
        log::info!(
            "{}: completing {} interrupted message(s)",
            self.label(),
            self.st.pending.len()
        );
        // A predecessor that died with an APPEND written but not answered (a LITERAL+ command
        // is one write) leaves the server finishing it on the dead connection: a copy can
        // still land after this process starts. Copies not found are looked for again a few
        // times before they count as never appended (appending them again would make two).
        for attempt in 0..RECOVER_TRIES {
            let unknown: Vec<u32> = self
                .st
                .pending
                .iter()
                .filter(|p| p.appended_uid.is_none())
                .map(|p| p.orig_uid)
                .collect();
            if unknown.is_empty() {
                break;
            }
            if attempt > 0 {
                std::thread::sleep(RECOVER_PAUSE);
            }
            let min = unknown.iter().copied().min().unwrap_or(0);
            // copies already known (ours, or recorded for another intent) are not candidates
            let own = self.claimed_uids();
            let found = self
                .s
                .uid_search(format!(
                    "UID {}:* OR KEYWORD {KEYWORD} HEADER {STATUS_FIELD} \"\"",
                    min + 1
                ))
                .map_err(|e| imap_err("UID SEARCH", e))?;
            let cands: Vec<u32> = found
                .into_iter()
                .filter(|u| *u > min && !own.contains(u))
                .collect();
            // digest -> candidate UIDs; each copy is claimed by at most one intent, so two
            // identical messages never archive two originals for one copy
            let mut by_digest: HashMap<String, Vec<u32>> = HashMap::new();
            if !cands.is_empty() {
                let fetches = self
                    .s
                    .uid_fetch(uid_set(&cands), "(UID BODY.PEEK[])")
                    .map_err(|e| imap_err("UID FETCH", e))?;
                for f in fetches.iter() {
                    if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                        by_digest.entry(state::digest(body)).or_default().push(uid);
                    }
                }
            }
            for p in self.st.pending.iter_mut() {
                if p.appended_uid.is_none() {
                    p.appended_uid = by_digest.get_mut(&p.digest).and_then(|v| v.pop());
                }
            }
        }
        let before = self.st.pending.len();
        self.st.pending.retain(|p| p.appended_uid.is_some());
        if self.st.pending.len() != before {
            log::info!(
                "{}: {} message(s) had not been appended; processing them again",
                self.label(),
                before - self.st.pending.len()
            );
        }
        self.sf.save(&self.st)?;
        self.finish_pending()
    }

    /// Archives the originals of every pending copy, then records the copies as ours. An
    /// original that a client expunged or moved away since it was fetched takes its copy with
    /// it: the client's action wins, and no message ends up in two places.
    fn finish_pending(&mut self) -> Result<()> {
        if self.st.pending.is_empty() {
            return Ok(());
        }
        let origs: Vec<u32> = self.st.pending.iter().map(|p| p.orig_uid).collect();
        let present: HashSet<u32> = self
            .s
            .uid_search(format!("UID {}", uid_set(&origs)))
            .map_err(|e| imap_err("UID SEARCH", e))?
            .into_iter()
            .collect();
        // An original missing after a move we began may have gone by our hand (a crash or a
        // lost connection during the MOVE): it did when the archive holds it.
        let unsure: Vec<Pending> = self
            .st
            .pending
            .iter()
            .filter(|p| !present.contains(&p.orig_uid) && p.archiving && !p.copied)
            .cloned()
            .collect();
        let archived = self.archived_originals(&unsure)?;
        let gone_by_us = |p: &Pending| p.copied || archived.contains(&p.orig_uid);
        let orphans: Vec<u32> = self
            .st
            .pending
            .iter()
            .filter(|p| !present.contains(&p.orig_uid) && !gone_by_us(p))
            .filter_map(|p| p.appended_uid)
            .collect();
        if !orphans.is_empty() {
            log::info!(
                "{}: {} original(s) expunged or moved by another client meanwhile: removing \
                 their processed copies",
                self.label(),
                orphans.len()
            );
            self.delete(&uid_set(&orphans))?;
        }
        let keep: Vec<u32> = origs
            .iter()
            .copied()
            .filter(|u| present.contains(u))
            .collect();
        if !keep.is_empty() {
            // From here on, an original found missing went by our hand (a crash right after
            // the MOVE or EXPUNGE must not take the copy for an orphan).
            for p in self.st.pending.iter_mut() {
                p.archiving |= present.contains(&p.orig_uid);
            }
            self.sf.save(&self.st)?;
            if test_crash_hook("marked") {
                log::error!("SMIMED_TEST_CRASH_AFTER_APPEND=marked: aborting");
                std::process::abort();
            }
            self.carry_flags(&keep)?;
            self.archive(&keep)?;
            if test_crash_hook("after-move") {
                log::error!("SMIMED_TEST_CRASH_AFTER_APPEND=after-move: aborting");
                std::process::abort();
            }
        }
        for p in std::mem::take(&mut self.st.pending) {
            match p.appended_uid {
                Some(u) if present.contains(&p.orig_uid) || gone_by_us(&p) => self.st.own.push(u),
                _ => {}
            }
        }
        self.sf.save(&self.st)
    }

    /// Flags a client set on an original after it was fetched (read or answered while its move
    /// waited, say refused for hours) are set on its copy too before the original goes.
    /// Flags are only added, never taken away from the copy (a client may be using it), and
    /// never `\Deleted` (which the move sets on originals itself when the server has no MOVE).
    fn carry_flags(&mut self, keep: &[u32]) -> Result<()> {
        let pairs: Vec<(u32, u32)> = self
            .st
            .pending
            .iter()
            .filter(|p| keep.contains(&p.orig_uid))
            .filter_map(|p| p.appended_uid.map(|c| (p.orig_uid, c)))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let mut all: Vec<u32> = pairs.iter().flat_map(|&(o, c)| [o, c]).collect();
        all.sort_unstable();
        all.dedup();
        let fetched = self
            .s
            .uid_fetch(uid_set(&all), "(UID FLAGS)")
            .map_err(|e| imap_err("UID FETCH FLAGS", e))?;
        let mut flags: HashMap<u32, HashSet<String>> = HashMap::new();
        for f in fetched.iter() {
            if let Some(uid) = f.uid {
                flags
                    .entry(uid)
                    .or_default()
                    .extend(f.flags().iter().map(ToString::to_string));
            }
        }
        for (orig, copy) in pairs {
            let (Some(of), Some(cf)) = (flags.get(&orig), flags.get(&copy)) else {
                continue;
            };
            let mut missing: Vec<&str> = of
                .iter()
                .map(String::as_str)
                .filter(|f| !matches!(*f, "\\Recent" | "\\Deleted") && !cf.contains(*f))
                .collect();
            if missing.is_empty() {
                continue;
            }
            missing.sort_unstable();
            self.s
                .uid_store(
                    copy.to_string(),
                    format!("+FLAGS.SILENT ({})", missing.join(" ")),
                )
                .map_err(|e| imap_err("UID STORE FLAGS", e))?;
        }
        Ok(())
    }

    /// Moves (or deletes) the originals. A refused move is an error (the copies stay pending and
    /// the move is tried again), except that a missing archive mailbox is made again first.
    fn archive(&mut self, uids: &[u32]) -> Result<()> {
        let set = uid_set(uids);
        match self.archive_wire.clone() {
            Some(a) if self.caps.mv => match self.s.uid_mv(&set, &a) {
                Ok(()) => Ok(()),
                Err(::imap::Error::No(n))
                    if matches!(n.code, Some(imap_proto::types::ResponseCode::TryCreate))
                        || n.information.contains("TRYCREATE") =>
                {
                    log::warn!(
                        "{}: archive {a} is gone ({}): making it again",
                        self.label(),
                        n.information
                    );
                    ensure_mailbox(&mut self.s, &a)?;
                    self.s
                        .uid_mv(&set, &a)
                        .map_err(|e| imap_err(format!("UID MOVE to {a}"), e))
                }
                Err(::imap::Error::No(n)) => Err(Error::tempfail(format!(
                    "UID MOVE {set} to {a} refused (tried again later): {}",
                    n.information
                ))),
                Err(e) => Err(imap_err(format!("UID MOVE to {a}"), e)),
            },
            Some(a) => {
                let to_copy: Vec<u32> = self
                    .st
                    .pending
                    .iter()
                    .filter(|p| !p.copied)
                    .map(|p| p.orig_uid)
                    .collect();
                if !to_copy.is_empty() {
                    self.s
                        .run_command_and_check_ok(format!("UID COPY {} \"{a}\"", uid_set(&to_copy)))
                        .map_err(|e| imap_err(format!("UID COPY to {a}"), e))?;
                    for p in self.st.pending.iter_mut() {
                        p.copied = true;
                    }
                    self.sf.save(&self.st)?;
                }
                self.delete(&set)
            }
            None => self.delete(&set),
        }
    }

    fn delete(&mut self, set: &str) -> Result<()> {
        self.s
            .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
            .map_err(|e| imap_err("UID STORE \\Deleted", e))?;
        if self.caps.uidplus {
            self.s
                .uid_expunge(set)
                .map_err(|e| imap_err("UID EXPUNGE", e))?;
            return self.gone(set);
        }
        // Plain EXPUNGE removes every \Deleted message: only when ours are the only ones.
        let deleted = self
            .s
            .uid_search("DELETED")
            .map_err(|e| imap_err("UID SEARCH DELETED", e))?;
        let ours: HashSet<u32> = set
            .split(',')
            .flat_map(|r| match r.split_once(':') {
                Some((a, b)) => {
                    let (a, b) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                    (a..=b).collect::<Vec<u32>>()
                }
                None => r.parse().ok().into_iter().collect(),
            })
            .collect();
        if deleted.iter().all(|u| ours.contains(u)) {
            self.s.expunge().map_err(|e| imap_err("EXPUNGE", e))?;
            return self.gone(set);
        } else {
            log::warn!(
                "{}: no UIDPLUS and other messages are flagged \\Deleted: originals left \
                 flagged \\Deleted for the next EXPUNGE",
                self.label()
            );
        }
        Ok(())
    }

    /// Checks that the messages of `set` are gone after an EXPUNGE: a server may answer OK and
    /// remove nothing (Dovecot does without the `t` or `e` right), and an original taken for
    /// moved would stay beside its copy for good. Still there: a temporary failure, the move
    /// is tried again.
    fn gone(&mut self, set: &str) -> Result<()> {
        let left = self
            .s
            .uid_search(format!("UID {set}"))
            .map_err(|e| imap_err("UID SEARCH", e))?;
        if left.is_empty() {
            return Ok(());
        }
        Err(Error::tempfail(format!(
            "the server kept {} original(s) after EXPUNGE (no right to delete?): tried again \
             later",
            left.len()
        )))
    }

    /// Processes everything above the cursor plus the retries. Returns false when stopped.
    fn sync(&mut self, stop: &Stop) -> Result<bool> {
        let found = self
            .s
            .uid_search(format!("UID {}:*", self.st.cursor.saturating_add(1)))
            .map_err(|e| imap_err("UID SEARCH", e))?;
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > self.st.cursor).collect();
        uids.extend(self.st.retry.iter().copied());
        self.leave_oversized(&mut uids)?;
        uids.sort_unstable();
        uids.dedup();
        if !uids.is_empty() {
            log::debug!("{}: {} message(s) to look at", self.label(), uids.len());
        }
        // Pipelined: while the pipeline works on batch k (worker threads), this thread APPENDs
        // and archives batch k-1. Each batch's intent is still saved before its APPENDs.
        let (ctx, jobs, stats) = (self.ctx, self.opts.jobs, self.stats);
        let mut prev: Option<(Fetched, Vec<Outcome>)> = None;
        for chunk in uids.chunks(self.opts.batch.max(1)) {
            let _guard = stop
                .work
                .read()
                .map_err(|_| Error::software("stop lock poisoned"))?;
            if stop.stopped() {
                if let Some((f, o)) = prev.take() {
                    self.apply(f, o)?;
                }
                return Ok(false);
            }
            let fetched = self.prepare(chunk)?;
            let earlier = prev.take();
            let outcomes = std::thread::scope(|sc| -> Result<Vec<Outcome>> {
                let worker =
                    sc.spawn(|| parallel_process(ctx, &fetched.items, &fetched.ours, jobs, stats));
                let applied = match earlier {
                    Some((f, o)) => self.apply(f, o),
                    None => Ok(()),
                };
                let outcomes = worker
                    .join()
                    .map_err(|_| Error::software("pipeline worker panicked"))?;
                applied?;
                outcomes
            })?;
            prev = Some((fetched, outcomes));
        }
        if let Some((f, o)) = prev.take() {
            let _guard = stop
                .work
                .read()
                .map_err(|_| Error::software("stop lock poisoned"))?;
            self.apply(f, o)?;
        }
        Ok(true)
    }

    /// Takes the messages larger than `--max-size` out of `uids` before anything is downloaded
    /// (the server's RFC822.SIZE, one `UID SEARCH … LARGER`): they are left as they are and
    /// remembered, and looked at again under another limit.
    fn leave_oversized(&mut self, uids: &mut Vec<u32>) -> Result<()> {
        let limit = self.ctx.limits.max_size;
        if limit != self.st.oversized_limit {
            // Another limit than the one they were found with: all looked at again (a lower
            // one in between must not keep them from a higher one).
            uids.append(&mut self.st.oversized);
            self.st.oversized_limit = limit;
        } else {
            let known: HashSet<u32> = self.st.oversized.iter().copied().collect();
            uids.retain(|u| !known.contains(u));
        }
        if uids.is_empty() {
            return Ok(());
        }
        let large = self
            .s
            .uid_search(format!("UID {} LARGER {limit}", uid_set(uids)))
            .map_err(|e| imap_err("UID SEARCH LARGER", e))?;
        if large.is_empty() {
            return Ok(());
        }
        let mut large: Vec<u32> = large.into_iter().collect();
        large.sort_unstable();
        for u in &large {
            log::info!(
                "{}: UID {u} is larger than --max-size ({limit} bytes): left as it is, not \
                 downloaded",
                self.label()
            );
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
        uids.retain(|u| large.binary_search(u).is_err());
        self.st.oversized.extend(large);
        self.st.oversized.sort_unstable();
        self.st.oversized.dedup();
        self.sf.save(&self.st)
    }

    fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Item>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let fetches = self
            .s
            .uid_fetch(uid_set(uids), "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            .map_err(|e| imap_err("UID FETCH", e))?;
        let want: HashSet<u32> = uids.iter().copied().collect();
        let mut items = Vec::with_capacity(fetches.len());
        for f in fetches.iter() {
            let (Some(uid), Some(body)) = (f.uid, f.body()) else {
                continue;
            };
            if !want.contains(&uid) {
                continue;
            }
            items.push(Item {
                uid,
                flags: f.flags().iter().map(|fl| fl.clone().into_owned()).collect(),
                date: f.internal_date(),
                body: body.to_vec(),
            });
        }
        Ok(items)
    }

    /// Fetches a batch and marks our own copies among them.
    fn prepare(&mut self, chunk: &[u32]) -> Result<Fetched> {
        let t0 = Instant::now();
        let own: HashSet<u32> = self.st.own.iter().copied().collect();
        let to_fetch: Vec<u32> = chunk.iter().copied().filter(|u| !own.contains(u)).collect();
        let items = self.fetch(&to_fetch)?;
        let keyword = Flag::from(KEYWORD.to_string());
        // Our own copies found without a recorded UID (after a UIDVALIDITY change or state loss).
        let mut ours = vec![false; items.len()];
        for (i, it) in items.iter().enumerate() {
            // A client may have replaced the keywords: a status field makes it a candidate too.
            let keyworded = it.flags.contains(&keyword);
            if keyworded || has_status_field(&it.body) {
                let d = state::digest(&it.body);
                ours[i] = self.digests()?.contains(&d);
                if !ours[i] && keyworded {
                    // Perhaps a copy appended to another mailbox (or under another name of
                    // the account) since, and filed here by a client: read the logs again.
                    let all = self.sf.account_digests()?;
                    ours[i] = all.contains(&d);
                    self.digests = Some(all);
                }
            }
        }
        Ok(Fetched {
            chunk: chunk.to_vec(),
            items,
            ours,
            fetch_time: t0.elapsed(),
        })
    }

    /// The UID of a message in the mailbox whose digest is `digest` and that is not claimed as
    /// ours yet: looked for among the messages with the same Message-ID as `output`, or, when
    /// it has none, among those that carry our keyword or a status field.
    fn existing_copy(&mut self, output: &[u8], digest: &str) -> Result<Option<u32>> {
        // By Message-ID when it has a usable one, else among everything that may be a copy.
        let criteria = match searchable_message_id(output) {
            Some(id) => format!("HEADER Message-ID \"{id}\""),
            None => format!("OR KEYWORD {KEYWORD} HEADER {STATUS_FIELD} \"\""),
        };
        let claimed = self.claimed_uids();
        let cands: Vec<u32> = self
            .s
            .uid_search(criteria)
            .map_err(|e| imap_err("UID SEARCH", e))?
            .into_iter()
            .filter(|u| !claimed.contains(u))
            .collect();
        if cands.is_empty() {
            return Ok(None);
        }
        let fetches = self
            .s
            .uid_fetch(uid_set(&cands), "(UID BODY.PEEK[])")
            .map_err(|e| imap_err("UID FETCH", e))?;
        Ok(fetches
            .iter()
            .filter(|f| f.body().is_some_and(|b| state::digest(b) == digest))
            .filter_map(|f| f.uid)
            .min())
    }

    /// Saves intent, APPENDs the copies, archives the originals, moves the cursor.
    fn apply(&mut self, fetched: Fetched, outcomes: Vec<Outcome>) -> Result<()> {
        let t0 = Instant::now();
        let Fetched {
            chunk,
            items,
            fetch_time,
            ..
        } = fetched;
        let chunk = &chunk[..];
        let keyword = Flag::from(KEYWORD.to_string());
        let t_process = t0.elapsed();
        let mut t_append = t_process;
        let mut handled_retry: HashSet<u32> = chunk.iter().copied().collect();
        let mut new_retry = Vec::new();
        let mut replace: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut intents = Vec::new();
        let mut claimed = Vec::new();
        for (i, o) in outcomes.into_iter().enumerate() {
            match o {
                Outcome::Ours | Outcome::Skip => {}
                Outcome::Retry => {
                    new_retry.push(items[i].uid);
                    handled_retry.remove(&items[i].uid);
                }
                Outcome::Replace { output, digest } => {
                    let mut p = Pending {
                        orig_uid: items[i].uid,
                        digest,
                        appended_uid: None,
                        copied: false,
                        archiving: false,
                        orig_digest: Some(state::digest(&items[i].body)),
                        orig_size: Some(items[i].body.len() as u64),
                    };
                    if let Some(at) = self.st.unresolved.iter().position(|d| *d == p.digest) {
                        // one claim per intent: two identical originals had two copies
                        self.st.unresolved.remove(at);
                        p.appended_uid = self.existing_copy(&output, &p.digest)?;
                        if p.appended_uid.is_some() {
                            claimed.push(p);
                            continue;
                        }
                    }
                    intents.push(p);
                    replace.push((i, output));
                }
            }
        }
        if !claimed.is_empty() {
            // Appended before UIDVALIDITY changed, and still there: only the archiving is left.
            log::info!(
                "{}: {} copie(s) appended before UIDVALIDITY changed found: archiving their \
                 originals",
                self.label(),
                claimed.len()
            );
            self.st.pending.extend(claimed);
            self.sf.save(&self.st)?;
            self.finish_pending()?;
        }
        self.st.pending.extend(intents);
        if !replace.is_empty() {
            // 1. intent, and the digests, durably before any APPEND
            self.sf.save(&self.st)?;
            // (A digest already logged, a copy refused before and tried again, is not logged
            // twice: the log only grows.)
            let mut ds: Vec<String> = self.st.pending.iter().map(|p| p.digest.clone()).collect();
            let known = self.digests()?;
            ds.retain(|d| !known.contains(d));
            let dref: Vec<&str> = ds.iter().map(String::as_str).collect();
            if !dref.is_empty() {
                self.sf.log_appended(&dref)?;
            }
            self.digests()?.extend(ds);
            // 2. APPEND each copy with the original's flags and INTERNALDATE, split in
            //    contiguous groups over this session and the extra APPEND sessions
            let jobs: Vec<AppendJob<'_>> = replace
                .iter()
                .map(|(i, output)| {
                    let it = &items[*i];
                    let mut flags: Vec<Flag<'static>> = it
                        .flags
                        .iter()
                        .filter(|f| **f != Flag::Recent && **f != keyword)
                        .cloned()
                        .collect();
                    flags.push(keyword.clone());
                    AppendJob {
                        output,
                        flags,
                        date: it.date,
                    }
                })
                .collect();
            self.ensure_appenders(jobs.len());
            let uids = self.append_all(&jobs);
            let base = self.st.pending.len() - replace.len();
            let mut first_err = None;
            let mut refused = Vec::new();
            for (k, r) in uids.into_iter().enumerate() {
                match r {
                    Ok(uid) => self.st.pending[base + k].appended_uid = uid,
                    Err(AppendError::Refused(e)) => {
                        let uid = self.st.pending[base + k].orig_uid;
                        log::warn!("{}: UID {uid} left as it is for now: {e}", self.label());
                        refused.push(base + k);
                    }
                    Err(AppendError::Failed(e)) => {
                        if first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
            // A refused copy was not stored: its intent goes, its original stays and is tried
            // again with the messages left for retry (every minute at most).
            for at in refused.into_iter().rev() {
                let p = self.st.pending.remove(at);
                new_retry.push(p.orig_uid);
                handled_retry.remove(&p.orig_uid);
                self.stats.processed_refused();
            }
            if let Some(e) = first_err {
                // what was appended is recorded; the rest is found or redone by recovery
                let _ = self.sf.save(&self.st);
                self.appenders.clear();
                return Err(e);
            }
            // 3. the copies' UIDs
            self.sf.save(&self.st)?;
            t_append = t0.elapsed();
            if self.st.pending.iter().any(|p| p.appended_uid.is_none()) {
                // No UIDPLUS: find them the way a restart would.
                return self.recover_then_commit(chunk, &handled_retry, new_retry);
            }
            if test_crash_before_move() {
                log::error!("SMIMED_TEST_CRASH_AFTER_APPEND=before-move: aborting");
                std::process::abort();
            }
            // 4. originals out, copies recorded as ours
            self.finish_pending()?;
        }
        self.commit(chunk, &handled_retry, new_retry)?;
        log::debug!(
            "{}: batch of {} ({} fetched): fetch {:?}, append {:?}, archive+state {:?}",
            self.label(),
            chunk.len(),
            items.len(),
            fetch_time,
            t_append - t_process,
            t0.elapsed() - t_append
        );
        Ok(())
    }

    fn recover_then_commit(
        &mut self,
        chunk: &[u32],
        handled: &HashSet<u32>,
        new_retry: Vec<u32>,
    ) -> Result<()> {
        self.recover()?;
        self.commit(chunk, handled, new_retry)
    }

    fn commit(&mut self, chunk: &[u32], handled: &HashSet<u32>, new_retry: Vec<u32>) -> Result<()> {
        let max = chunk.iter().copied().max().unwrap_or(0);
        self.st.retry.retain(|u| !handled.contains(u));
        self.st.retry.extend(new_retry);
        self.st.retry.sort_unstable();
        self.st.retry.dedup();
        self.st.cursor = self.st.cursor.max(max);
        let cursor = self.st.cursor;
        self.st.own.retain(|u| *u > cursor);
        self.sf.save(&self.st)
    }

    /// Opens extra sessions for parallel APPENDs (at most `jobs` - 1, only for big batches);
    /// failing to open one is not an error (fewer sessions are used).
    fn ensure_appenders(&mut self, copies: usize) {
        let want = self.opts.jobs.saturating_sub(1).min(MAX_APPENDERS);
        if copies < 8 {
            return;
        }
        while self.appenders.len() < want {
            match conn::connect(self.acct) {
                Ok(s) => self.appenders.push(s),
                Err(e) => {
                    log::debug!("{}: extra APPEND session: {e}", self.label());
                    break;
                }
            }
        }
    }

    /// APPENDs every job; returns each copy's UID (None without UIDPLUS) or the error.
    fn append_all(&mut self, jobs: &[AppendJob<'_>]) -> Vec<Appended> {
        let uidvalidity = self.st.uidvalidity;
        let wire = self.wire.clone();
        let mut sessions: Vec<&mut Session> = Vec::with_capacity(1 + self.appenders.len());
        sessions.push(&mut self.s);
        if jobs.len() >= 8 {
            sessions.extend(self.appenders.iter_mut());
        }
        let per = jobs.len().div_ceil(sessions.len());
        if per == 0 {
            return Vec::new();
        }
        let groups: Vec<&[AppendJob<'_>]> = jobs.chunks(per).collect();
        let multi = self.caps.multiappend;
        let mut results: Vec<Vec<Appended>> = Vec::new();
        std::thread::scope(|sc| {
            let mut handles = Vec::new();
            let mut iter = sessions.into_iter().zip(groups);
            let first = iter.next();
            for (sess, group) in iter {
                let wire = &wire;
                handles.push(sc.spawn(move || append_group(sess, wire, group, uidvalidity, multi)));
            }
            if let Some((sess, group)) = first {
                results.push(append_group(sess, &wire, group, uidvalidity, multi));
            }
            for h in handles {
                results.push(h.join().unwrap_or_else(|_| {
                    vec![Err(AppendError::Failed(Error::software(
                        "APPEND thread panicked",
                    )))]
                }));
            }
        });
        let mut out: Vec<Appended> = results.into_iter().flatten().collect();
        while out.len() < jobs.len() {
            out.push(Err(AppendError::Failed(Error::software("APPEND not done"))));
        }
        out
    }

    /// Waits for something to happen in the mailbox.
    fn wait(&mut self, stop: &Stop) -> Result<()> {
        // An EXISTS that came with an earlier command's response is not repeated in IDLE:
        // look again first (our own APPENDs cause one, which costs one empty UID SEARCH).
        let queued = self.s.take_all_unsolicited().any(|r| {
            matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            )
        });
        if queued {
            return Ok(());
        }
        // Messages left for retry (passphrase unavailable, a copy refused) are tried again
        // within a minute: by polling, since IDLE's timeout starts over at every keepalive a
        // server sends (Dovecot's `* OK Still here`), which may come more often than that.
        if self.caps.idle && self.st.retry.is_empty() {
            let mut h = self.s.idle();
            h.timeout(self.opts.idle_refresh).keepalive(false);
            h.wait_while(|r| {
                !matches!(
                    r,
                    UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
                )
            })
            .map_err(|e| imap_err("IDLE", e))?;
            drop(h);
        } else {
            let interval = if self.st.retry.is_empty() {
                self.opts.poll_interval
            } else {
                self.opts.poll_interval.min(retry_interval())
            };
            stop.sleep(interval);
            self.s.noop().map_err(|e| imap_err("NOOP", e))?;
        }
        Ok(())
    }
}

/// Runs the pipeline on the messages, `jobs` at a time.
fn parallel_process(
    ctx: &Context,
    items: &[Item],
    ours: &[bool],
    jobs: usize,
    stats: &Stats,
) -> Result<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= items.len() {
            break;
        }
        let r = if ours[i] {
            Ok(Outcome::Ours)
        } else {
            one(ctx, &items[i], stats)
        };
        if let Ok(mut g) = results.lock() {
            g[i] = Some(r);
        }
    };
    let n = jobs.max(1).min(items.len().max(1));
    std::thread::scope(|sc| {
        for _ in 1..n {
            sc.spawn(work);
        }
        work();
    });
    let results = results
        .into_inner()
        .map_err(|_| Error::software("result lock poisoned"))?;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::software("message not processed"))))
        .collect()
}

/// An IMAP literal may not hold a NUL (RFC 3501 §4.3 and §9, CHAR8; NUL needs the BINARY
/// extension): decrypted content may, so each NUL of a copy becomes 0x80, as Dovecot stores
/// one. The digest is of what is sent, so the copy is recognised as ours again.
fn without_nul(output: &mut [u8]) {
    if memchr::memchr(0, output).is_none() {
        return;
    }
    for b in output.iter_mut().filter(|b| **b == 0) {
        *b = 0x80;
    }
}

fn one(ctx: &Context, it: &Item, stats: &Stats) -> Result<Outcome> {
    match pipeline::process(ctx, &it.body) {
        Ok(p) => {
            crate::addressbook::harvest_configured(ctx, &p, Some(&it.body));
            if !(p.smime || p.forged_removed > 0) {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(Outcome::Skip);
            }
            stats.replaced.fetch_add(1, Ordering::Relaxed);
            if p.status.encryption == Encryption::Decrypted {
                stats.decrypted.fetch_add(1, Ordering::Relaxed);
            }
            if p.status.signature == Signature::Valid {
                stats.verified.fetch_add(1, Ordering::Relaxed);
            }
            if p.status.encryption == Encryption::Failed
                || !matches!(p.status.signature, Signature::None | Signature::Valid)
            {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            log::info!("UID {}: {}", it.uid, p.status.x_smime_status());
            let mut output = p.output;
            without_nul(&mut output);
            let digest = state::digest(&output);
            Ok(Outcome::Replace { output, digest })
        }
        Err(e) if pipeline::is_temporary(&e) => {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            log::warn!("UID {}: {e}; will retry", it.uid);
            Ok(Outcome::Retry)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{multiappend_runs, uid_set, AppendJob, MULTIAPPEND_MAX, MULTIAPPEND_MAX_BYTES};

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 7]), "1:3,5,7,9:10");
        assert_eq!(uid_set(&[4]), "4");
    }

    #[test]
    fn multiappend_runs_are_bounded_in_count_and_bytes() {
        let small = vec![b'x'; 1000];
        let big = vec![b'x'; MULTIAPPEND_MAX_BYTES + 1];
        let half = vec![b'x'; MULTIAPPEND_MAX_BYTES / 2];
        let job = |output: &'static [u8]| AppendJob {
            output,
            flags: Vec::new(),
            date: None,
        };
        let (small, big, half): (&'static [u8], &'static [u8], &'static [u8]) =
            (Vec::leak(small), Vec::leak(big), Vec::leak(half));
        let lens = |jobs: &[AppendJob<'_>]| -> Vec<usize> {
            multiappend_runs(jobs).iter().map(|r| r.len()).collect()
        };
        let many: Vec<AppendJob<'_>> = (0..40).map(|_| job(small)).collect();
        assert_eq!(lens(&many), vec![MULTIAPPEND_MAX, MULTIAPPEND_MAX, 8]);
        // a copy over the limit is alone; the byte limit closes a run
        let mixed = vec![
            job(small),
            job(big),
            job(half),
            job(half),
            job(half),
            job(small),
        ];
        assert_eq!(lens(&mixed), vec![1, 1, 2, 2]);
        assert!(multiappend_runs(&[]).is_empty());
        // every copy once, in order
        let total: usize = multiappend_runs(&mixed).iter().map(|r| r.len()).sum();
        assert_eq!(total, mixed.len());
    }
}
