//! The inbound pipeline: one function from message bytes to processed bytes plus a [`Status`].
//! `smimed filter` and both watchers call [`process`]; none of them looks inside a message.
//!
//! Steps: strip forged status fields; walk the chain of roots (decrypt EnvelopedData /
//! AuthEnvelopedData, verify and unwrap opaque SignedData, verify multipart/signed and keep it);
//! honour protected headers; report S/MIME parts that are not the root as partial, never
//! decrypting them (EFAIL, reply oracles); write the status fields first.
//!
//! Architecture Invariants: no I/O besides loading keys and trust on first need; never a panic
//! on any input (depth and size limits are reported in the status); when decryption or parsing
//! fails the output is the original message with status fields added and forgeries removed;
//! plaintext is released only after OpenSSL reported success (GCM tag checked).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use openssl::cms::CmsContentInfo;
use openssl::x509::X509;

use crate::config::Settings;
use crate::error::{Error, Kind as ErrorKind, Result};
use crate::keys::{self, Identity, Passphrases};
use crate::mime::{self, Entity, Field, Kind};
use crate::ossl::{self, ContentKind};
use crate::secret::Secret;
use crate::status::{self, Encryption, Signature, SignerResult, Status};
use crate::trust::TrustStore;
use crate::verify::{self, FromAddress};

/// Limits that keep hostile input from costing more than a message should.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size: u64,
    /// S/MIME layers (decrypt/unwrap steps) on the root chain.
    pub max_layers: usize,
    /// MIME parts looked at when searching for nested S/MIME parts.
    pub max_parts: usize,
    /// Nesting of attached messages searched for nested S/MIME parts.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: crate::config::DEFAULT_MAX_SIZE,
            max_layers: 8,
            max_parts: 5_000,
            max_depth: 20,
        }
    }
}

/// Loaded once, on first need; a failure is not remembered, so that a temporary one (passphrase
/// command) is retried for the next message.
struct Lazy<T> {
    cell: Mutex<Option<Arc<T>>>,
}

impl<T> Lazy<T> {
    fn new() -> Self {
        Lazy {
            cell: Mutex::new(None),
        }
    }
    fn get(&self, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut g = self
            .cell
            .lock()
            .map_err(|_| Error::software("lazy cell poisoned"))?;
        if let Some(v) = g.as_ref() {
            return Ok(v.clone());
        }
        let v = Arc::new(init()?);
        *g = Some(v.clone());
        Ok(v)
    }
}

/// Everything the pipeline needs besides the message: settings, keys and trust (loaded once).
pub struct Context {
    pub settings: Settings,
    pub limits: Limits,
    passphrases: Passphrases,
    identities: Lazy<Vec<Identity>>,
    /// Set by a watcher ([`Context::hold_key_failures`]): a temporary failure to load the keys
    /// (the passphrase command) holds them back until [`Context::retry_keys`], so that the
    /// messages after it that need a key are deferred at once and the others go on.
    hold_key_failures: AtomicBool,
    keys_held: AtomicBool,
    trust: Mutex<Option<LoadedTrust>>,
}

/// The trust store as loaded, with what its files looked like then: a long-running process (the
/// agent, the watchers) reloads it when a trust or CRL file changes (a daily CRL fetch), so that
/// it never answers from stale revocation data.
struct LoadedTrust {
    store: Arc<TrustStore>,
    stamp: Vec<FileStamp>,
    checked: std::time::Instant,
}

/// Size, modification time and inode of one file (None: missing or unreadable).
type FileStamp = (PathBuf, Option<(u64, i64, i64, u64)>);

/// How often the trust and CRL files are looked at for changes.
const TRUST_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The stamps of `paths`, and of the files in those that are folders.
fn stamps(paths: &[PathBuf]) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    };
    let mut out = Vec::new();
    for p in paths {
        out.push((p.clone(), stamp(p)));
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            inner.sort();
            out.extend(inner.into_iter().map(|f| {
                let st = stamp(&f);
                (f, st)
            }));
        }
    }
    out
}

impl Context {
    pub fn new(settings: Settings) -> Context {
        let limits = Limits {
            max_size: settings.max_size,
            ..Limits::default()
        };
        Context {
            passphrases: Passphrases::new(settings.passphrase.clone()),
            settings,
            limits,
            identities: Lazy::new(),
            hold_key_failures: AtomicBool::new(false),
            keys_held: AtomicBool::new(false),
            trust: Mutex::new(None),
        }
    }

    /// The user's identities, loaded on first use.
    pub fn identities(&self) -> Result<Arc<Vec<Identity>>> {
        self.identities.get(|| {
            // (Under the cell's lock: a second worker waiting on it sees the hold.)
            if self.keys_held.load(Ordering::SeqCst) {
                return Err(Error::tempfail(
                    "the keys could not be loaded a moment ago (passphrase): tried again later",
                ));
            }
            let loaded = keys::load_identities(&self.settings.keys, &self.passphrases);
            if let Err(e) = &loaded {
                if is_temporary(e) && self.hold_key_failures.load(Ordering::SeqCst) {
                    self.keys_held.store(true, Ordering::SeqCst);
                }
            }
            loaded
        })
    }

    /// After a temporary failure to load the keys, do not try again (run the passphrase command
    /// again) before [`Context::retry_keys`]: for a watcher, which retries on its next pass.
    pub fn hold_key_failures(&self) {
        self.hold_key_failures.store(true, Ordering::SeqCst);
    }

    /// Lets the next need of a key try to load the keys again.
    pub fn retry_keys(&self) {
        self.keys_held.store(false, Ordering::SeqCst);
    }

    /// The trust anchors and CRLs, loaded on first use, and loaded again when one of their
    /// files has changed (looked at every [`TRUST_RECHECK`] at most). A reload that fails
    /// keeps the store loaded before (a file being rewritten), with a warning.
    pub fn trust(&self) -> Result<Arc<TrustStore>> {
        let mut g = self
            .trust
            .lock()
            .map_err(|_| Error::software("trust cell poisoned"))?;
        let files: Vec<PathBuf> = self
            .settings
            .trust
            .iter()
            .chain(&self.settings.crls)
            .cloned()
            .collect();
        let load = || TrustStore::load_for_verify(&self.settings.trust, &self.settings.crls);
        let now = std::time::Instant::now();
        match g.as_mut() {
            Some(t) if now.duration_since(t.checked) < TRUST_RECHECK => Ok(t.store.clone()),
            Some(t) => {
                t.checked = now;
                let stamp = stamps(&files);
                if stamp != t.stamp {
                    match load() {
                        Ok(store) => {
                            log::info!("trust anchors or CRLs changed: loaded again");
                            t.store = Arc::new(store);
                            t.stamp = stamp;
                        }
                        Err(e) => log::warn!("{e}; keeping the trust loaded before"),
                    }
                }
                Ok(t.store.clone())
            }
            None => {
                let stamp = stamps(&files);
                let store = Arc::new(load()?);
                *g = Some(LoadedTrust {
                    store: store.clone(),
                    stamp,
                    checked: now,
                });
                Ok(store)
            }
        }
    }

    pub fn authserv_id(&self) -> &str {
        &self.settings.authserv_id
    }
}

/// The pipeline's output.
#[derive(Debug)]
pub struct Processed {
    /// The message to deliver: status fields first.
    pub output: Vec<u8>,
    pub status: Status,
    /// The input was S/MIME at its root (so the output is a rewritten message).
    pub smime: bool,
    /// Forged status fields were removed.
    pub forged_removed: usize,
}

impl Processed {
    /// Signers whose signature is valid and whose address is the From address, of a message
    /// whose signature status is `valid` as a whole (another signer that fails makes the
    /// message unverified): the only ones whose certificate and capabilities may be harvested
    /// into the address book.
    pub fn harvestable(&self) -> impl Iterator<Item = &SignerResult> {
        let whole = self.status.signature == Signature::Valid;
        self.status
            .signers
            .iter()
            .filter(move |s| whole && s.verdict == Signature::Valid && s.cert.is_some())
    }
}

/// One signed layer of the root chain.
struct SignedLayer {
    results: Vec<SignerResult>,
}

/// How the walk down the root chain ended.
enum Walk {
    /// The current entity is the final content.
    Done,
    /// Processing failed for good: deliver the original, with this status.
    Failed,
}

/// Processes one message. Errors are only those the caller must act on (temporary failures,
/// configuration); everything about the message itself is in the returned status.
///
/// An mbox postmark ("From sender date", which procmail hands its filters when it is the
/// delivery agent) stays the first line: the status fields go after it, never before it, or an
/// mbox would lose the message boundary.
pub fn process(ctx: &Context, input: &[u8]) -> Result<Processed> {
    process_as(ctx, input, ctx.authserv_id())
}

/// [`process`] under another authserv-id than the context's: the agent serving a client whose
/// own is different (the forged fields removed and the status written are the client's).
pub fn process_as(ctx: &Context, input: &[u8], authserv_id: &str) -> Result<Processed> {
    if input.starts_with(b"From ") {
        let end = input
            .iter()
            .position(|&b| b == b'\n')
            .map_or(input.len(), |i| i + 1);
        let mut processed = process_with(ctx, &input[end..], None, authserv_id)?;
        processed.output.splice(0..0, input[..end].iter().copied());
        return Ok(processed);
    }
    process_with(ctx, input, None, authserv_id)
}

/// Messages at least this large, when handed in as a file, are processed without holding their
/// raw bytes in memory next to the decoded layers.
pub const LARGE_MESSAGE: u64 = 16 * 1024 * 1024;

/// The root body of a large message, decoded from a file, and where to read the original from.
struct RootFromFile<'a> {
    der: Secret,
    hint: String,
    file: &'a std::fs::File,
    body_offset: u64,
}

/// Like [`process`], for a message in a file (a spilled stdin, a Maildir file). A large S/MIME
/// message is decoded straight from the file: its raw bytes are read again only when the
/// original has to be delivered. Anything else is read into memory and processed as usual.
pub fn process_file(ctx: &Context, file: &std::fs::File) -> Result<Processed> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| Error::io("reading the message", e);
    let len = file.metadata().map_err(io)?.len();
    let mut f = file;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    if len >= LARGE_MESSAGE && len <= ctx.limits.max_size {
        let mut head = vec![0u8; 256 * 1024];
        let n = read_full(&mut f, &mut head).map_err(io)?;
        head.truncate(n);
        let ent = mime::split(&head);
        // (An mbox postmark first is left to the in-memory path.)
        if !head.starts_with(b"From ")
            && !ent.separator.is_empty()
            && mime::classify_entity(&ent) == Kind::Pkcs7Mime
        {
            let head_len = head.len() - ent.body.len();
            let hint = ent
                .content_type()
                .params
                .get("smime-type")
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            let cte = ent
                .first("Content-Transfer-Encoding")
                .map(|f| f.value().trim().to_ascii_lowercase())
                .unwrap_or_default();
            if cte == "base64" {
                drop(ent);
                head.truncate(head_len);
                f.seek(SeekFrom::Start(head_len as u64)).map_err(io)?;
                let der = Secret::new(mime::base64_decode_reader(&mut f, len).map_err(io)?);
                let root = RootFromFile {
                    der,
                    hint,
                    file,
                    body_offset: head_len as u64,
                };
                return process_with(ctx, &head, Some(root), ctx.authserv_id());
            }
        }
        f.seek(SeekFrom::Start(0)).map_err(io)?;
    }
    let mut all = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.read_to_end(&mut all).map_err(io)?;
    process(ctx, &all)
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The pipeline proper. `from_file`: the root's body was decoded from a file and `input` holds
/// only the header section.
fn process_with(
    ctx: &Context,
    input: &[u8],
    from_file: Option<RootFromFile<'_>>,
    authserv_id: &str,
) -> Result<Processed> {
    let processed = process_layers(ctx, input, from_file, authserv_id);
    mime::forget_content_types();
    processed
}

fn process_layers(
    ctx: &Context,
    input: &[u8],
    from_file: Option<RootFromFile<'_>>,
    authserv_id: &str,
) -> Result<Processed> {
    let eol = mime::eol_of(input);
    let root = mime::split(input);
    let mut outer = root.fields.clone();
    // Lines before the first field that start with a blank belong to no field; written after
    // the status fields they would continue the Authentication-Results field, and a sender
    // could append `smime=pass` to it. They are dropped.
    let orphans = outer
        .iter()
        .take_while(|f| f.raw.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        .count();
    if orphans > 0 {
        log::info!("dropping {orphans} header line(s) before the first field");
        outer.drain(..orphans);
    }
    let forged_removed = status::strip_forged(&mut outer, authserv_id);
    let mut st = Status::default();
    let (mut root_der, body_file) = match from_file {
        Some(r) => (Some((r.der, r.hint)), Some((r.file, r.body_offset))),
        None => (None, None),
    };

    let original = |st: &Status, outer: &[Field]| -> Result<Vec<u8>> {
        let mut out = st.header_fields(authserv_id, eol);
        for f in outer {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(root.separator);
        match body_file {
            Some((file, offset)) => {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = file;
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.read_to_end(&mut out))
                    .map_err(|e| Error::io("reading the message again", e))?;
            }
            None => out.extend_from_slice(root.body),
        }
        Ok(out)
    };

    if input.len() as u64 > ctx.limits.max_size {
        // Not processed. An S/MIME root still says what it is in the words rules match on,
        // so that an encrypted or signed message never passes for a plain one: an envelope
        // (or a pkcs7-mime whose smime-type does not say) was not decrypted, a signature was
        // not checked.
        match mime::classify_entity(&root) {
            Kind::Pkcs7Mime => {
                let hint = root
                    .content_type()
                    .params
                    .get("smime-type")
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default();
                match hint.as_str() {
                    "signed-data" => st.signature = Signature::Error,
                    "certs-only" => {}
                    _ => st.encryption = Encryption::Failed,
                }
            }
            Kind::MultipartSigned | Kind::DetachedSignature => st.signature = Signature::Error,
            Kind::Other => {}
        }
        st.add("reason", "size-limit");
        return Ok(Processed {
            output: original(&st, &outer)?,
            status: st,
            smime: false,
            forged_removed,
        });
    }

    let root_kind = mime::classify_entity(&root);
    let mut walker = Walker {
        ctx,
        st: &mut st,
        layers: Vec::new(),
        cbc: false,
        decrypted: false,
        order: Vec::new(),
    };
    let mut current: Option<Secret> = None; // None: still the root
    let mut ended = Walk::Done;
    let mut past_limit = false;
    // The start of the multipart/signed layers the walk is in (Some(None): the root): they are
    // delivered as they came (sign-then-sign, at the root or inside an envelope), so that a
    // client can verify every signature again.
    let mut kept: Option<Option<Secret>> = None;
    for depth in 0.. {
        let bytes: &[u8] = current.as_ref().map_or(input, |c| c.as_slice());
        let ent = mime::split(bytes);
        let kind = mime::classify_entity(&ent);
        if let Some(why) = mime::ambiguity(&ent) {
            // Readers differ on which field or parameter counts: a signature checked on one
            // reading would be shown over the content of the other. Nothing is claimed.
            let smime_somewhere = kind != Kind::Other || mime::could_be_smime(&ent);
            if smime_somewhere {
                log::info!("ambiguous MIME structure: {why}");
                walker.st.signature = Signature::Error;
                // An envelope left undecrypted never passes for a message sent in clear: on
                // any reading that makes it one, it "failed", as over the size or nesting
                // limit.
                let hinted = root_der.as_ref().is_some_and(|(der, h)| {
                    !matches!(h.as_str(), "signed-data" | "certs-only") || der_is_envelope(der, 8)
                });
                if hinted || mime::may_be_envelope(&ent) || body_is_envelope(&ent) {
                    walker.st.encryption = Encryption::Failed;
                }
                walker.st.add("reason", "ambiguous-mime");
                ended = Walk::Failed;
                break;
            }
        }
        if kind == Kind::Other {
            break;
        }
        if depth >= ctx.limits.max_layers {
            // What lies past the limit was never looked at and the original is delivered: no
            // verdict on any layer (RFC 8551 §3.7: permerror), and an envelope there was not
            // decrypted (its smime-type says so; a signed layer's hint leaves it alone).
            walker.st.add("reason", "nesting-limit");
            walker.st.signature = Signature::Error;
            let hint = match &root_der {
                Some((_, h)) => h.clone(),
                None => ent
                    .content_type()
                    .params
                    .get("smime-type")
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default(),
            };
            if kind == Kind::Pkcs7Mime && !matches!(hint.as_str(), "signed-data" | "certs-only") {
                walker.st.encryption = Encryption::Failed;
            }
            past_limit = true;
            ended = Walk::Failed;
            break;
        }
        let step = match kind {
            Kind::Pkcs7Mime => {
                let (der, hint) = match root_der.take() {
                    Some(decoded) => decoded,
                    None => (
                        Secret::new(mime::decode_body(&ent)),
                        ent.content_type()
                            .params
                            .get("smime-type")
                            .map(|s| s.to_ascii_lowercase())
                            .unwrap_or_default(),
                    ),
                };
                // The encoded layer is not needed once decoded: free it before the CMS
                // structure and the next layer are built (peak memory on large messages).
                drop(ent);
                current = None;
                walker.pkcs7(der, &hint)?
            }
            Kind::MultipartSigned => walker.multipart_signed(bytes)?,
            Kind::DetachedSignature if depth == 0 => {
                // A message that is a signature without the content it signs: it cannot be
                // checked. (Inside a layer it is only the content, delivered as it is.)
                walker.st.signature = Signature::Error;
                walker.st.add("reason", "signed-content-missing");
                Step::Fail
            }
            Kind::DetachedSignature => Step::Stop,
            Kind::Other => Step::Stop,
        };
        let signed_layer = kind == Kind::MultipartSigned;
        if !signed_layer {
            kept = None;
        }
        match step {
            Step::Next(next) => {
                // (The outer multipart/signed is kept whole rather than copied: no second copy
                // of a large decrypted content.)
                let outer = current.replace(next);
                if signed_layer && kept.is_none() {
                    kept = Some(outer);
                }
            }
            Step::NextPkcs7(head, der, hint) => {
                current = Some(head);
                root_der = Some((der, hint));
            }
            Step::Stop => break,
            Step::Fail => {
                ended = Walk::Failed;
                break;
            }
        }
    }
    let Walker {
        mut layers,
        cbc,
        decrypted,
        order,
        ..
    } = walker;
    if past_limit {
        // No signer's result stands for a message delivered unprocessed.
        layers.clear();
    }

    // The message's verdict: the worst signer of every layer on the root chain.
    for l in &layers {
        for r in &l.results {
            if r.verdict.severity() > st.signature.severity() {
                st.signature = r.verdict;
            }
        }
        st.signers.extend(l.results.iter().cloned());
    }
    // A signed layer without signers (or one that could not be read) is never valid.
    if layers.iter().any(|l| l.results.is_empty())
        && Signature::Error.severity() > st.signature.severity()
    {
        st.signature = Signature::Error;
    }
    if order.len() > 1 {
        // `order` was filled peeling from the outside: the sender applied it the other way.
        let applied: Vec<&str> = order.iter().rev().copied().collect();
        st.add("order", applied.join("-then-"));
    }

    if let Walk::Failed = ended {
        // The original (still encrypted) is what gets delivered.
        if decrypted {
            st.encryption = Encryption::Failed;
        }
        recheck_from(&mut st, &verify::from_address(&outer), None);
        return Ok(Processed {
            output: original(&st, &outer)?,
            status: st,
            smime: root_kind != Kind::Other,
            forged_removed,
        });
    }
    if decrypted {
        st.encryption = Encryption::Decrypted;
    }
    // CBC content is not integrity-protected unless a valid signature covers it; decided once
    // the signers were judged against the delivered From (see finish()).
    let finish = |st: &mut Status| {
        if decrypted && cbc && st.signature != Signature::Valid {
            st.add("integrity", "no");
        }
        if st.signature == Signature::Valid && st.signers.iter().any(|s| !s.revocation_checked) {
            st.add("revocation", "unchecked");
        }
    };

    let current = kept.unwrap_or(current);
    let Some(content) = current else {
        // Nothing was unwrapped: the root is plain, or a multipart/signed kept as it is (with
        // the multipart/signed layers inside it).
        let from = verify::from_address(&outer);
        // A multipart/signed kept as it is may carry a protected header section in its signed
        // part, which a client shows instead of the outer one: the signer must match it too.
        let protected = (root_kind == Kind::MultipartSigned)
            .then(|| protected_from(input))
            .flatten();
        recheck_from(&mut st, &from, protected.as_ref());
        finish(&mut st);
        scan_partial(ctx, input, root_kind == Kind::MultipartSigned, &mut st);
        return Ok(Processed {
            output: original(&st, &outer)?,
            status: st,
            smime: root_kind != Kind::Other,
            forged_removed,
        });
    };

    // Assemble: outer fields minus Content-*, protected fields promoted, the content's entity.
    let (content, mut protected) = unwrap_protected(content, authserv_id);
    let mut inner = mime::split(&content);
    if protected.is_empty() && mime::classify_entity(&inner) == Kind::MultipartSigned {
        // A multipart/signed inside the encryption (Thunderbird's layout): the protected
        // header section in its signed part is the header, as for opaque content. The
        // multipart/signed itself stays as it is, for the client to verify again.
        if let Some(section) = signed_part_protected_section(&content) {
            protected = promotable(&section, eol, authserv_id);
        }
    }
    if !has_header_section(&inner) {
        // Content that is not a MIME entity (bare text, as RFC 4134's samples and OpenSSL's
        // `cms -encrypt` of a text file carry): all of it is the body, a text/plain one
        // (RFC 2045 §5.2), rather than lines mistaken for header fields and lost.
        inner = mime::Entity {
            fields: Vec::new(),
            separator: b"",
            body: &content,
        };
    }
    let mut fields: Vec<Field> = outer.into_iter().filter(|f| !f.is_content()).collect();
    // One pass with the protected names in a set (a field per protected field was quadratic:
    // 45,000 fields on either side took 20 s).
    let replaced: std::collections::HashSet<Vec<u8>> = protected
        .iter()
        .map(|p| p.name().to_ascii_lowercase())
        .collect();
    fields.retain(|f| !replaced.contains(&f.name().to_ascii_lowercase()));
    if protected.iter().any(|f| f.is("From")) {
        // A protected header section with a From is the header the sender wrote (RFC 9788):
        // an outer field it lacks that readers show or reply to (a Reply-To or Cc added on the
        // way) was not written by the sender and is dropped; trace, list and threading fields
        // stay. (A section without a From, only a Subject say, replaces what it has.)
        fields.retain(|f| !USER_FACING.iter().any(|n| f.is(n)));
    }
    let promoted_at = fields
        .iter()
        .position(|f| f.is("MIME-Version"))
        .unwrap_or(fields.len());
    fields.splice(promoted_at..promoted_at, protected.iter().cloned());
    let has_mime_version = fields.iter().any(|f| f.is("MIME-Version"));
    if !has_mime_version {
        fields.push(Field::new("MIME-Version", "1.0", eol));
    }
    let from = verify::from_address(&fields);
    let inner_kind = mime::classify_entity(&inner);
    let protected = (inner_kind == Kind::MultipartSigned)
        .then(|| protected_from(&content))
        .flatten();
    recheck_from(&mut st, &from, protected.as_ref());
    finish(&mut st);
    scan_partial(ctx, &content, inner_kind == Kind::MultipartSigned, &mut st);

    let mut output = st.header_fields(authserv_id, eol);
    output.reserve(content.len() + content.len() / 32 + 4096);
    // The inner entity's Content-* fields, but one hiding a status field after a bare CR
    // (which Python's email package would read as a field of the delivered header).
    for f in fields.iter().chain(
        inner
            .fields
            .iter()
            .filter(|f| f.is_content() && !status::is_forged(f, authserv_id)),
    ) {
        mime::convert_eol_into(&mut output, &f.raw, eol);
    }
    output.extend_from_slice(eol);
    mime::convert_eol_into(&mut output, inner.body, eol);
    drop(inner);
    Ok(Processed {
        output,
        status: st,
        smime: true,
        forged_removed,
    })
}

/// Header fields a reader shows or acts on (addresses a reply goes to, what the message says
/// it is), which only the protected header section may supply once there is one. Date,
/// Message-ID and the threading fields stay when the section lacks them: older senders leave
/// them out, and they send nothing anywhere.
const USER_FACING: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Followup-To",
    "Mail-Followup-To",
    "Mail-Reply-To",
    "Keywords",
    "Comments",
    "Disposition-Notification-To",
    "Return-Receipt-To",
    "Organization",
];

/// Besides [`USER_FACING`], the fields a protected header section may promote: those the
/// sender's client writes (date, identity and threading, hints). Nothing else is taken from it:
/// trace fields, authentication results and what filters on the way wrote (Received,
/// Return-Path, Authentication-Results, ARC-*, DKIM-Signature, X-Spam-*…) come from the servers
/// that handled the message, and a sender must not be able to replace them.
const SENDER_WRITTEN: &[&str] = &[
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "User-Agent",
    "X-Mailer",
    "Importance",
    "Priority",
    "X-Priority",
    "Sensitivity",
    "Expires",
    "Supersedes",
    "Autocrypt",
];

/// Whether an entity split by [`mime::split`] really starts with a header section: a blank line
/// ended it, and every line before that is a field (a name of printable ASCII, then a colon).
fn has_header_section(e: &Entity<'_>) -> bool {
    !e.separator.is_empty()
        && e.fields.iter().all(|f| {
            let n = f.name();
            !n.is_empty()
                && n.iter().all(|&b| b.is_ascii_graphic() && b != b':')
                && f.raw.first().is_some_and(|b| !b.is_ascii_whitespace())
        })
}

/// The signer/From comparison is made against the From of the message as delivered (after
/// protected headers were promoted): re-judge mismatch for signers that were otherwise valid.
/// The From of the protected header section in a multipart/signed's signed part; None when
/// that part has none.
fn protected_from(multipart_signed: &[u8]) -> Option<FromAddress> {
    let fields = signed_part_protected_section(multipart_signed)?;
    fields
        .iter()
        .any(|f| f.is("From"))
        .then(|| verify::from_address(&fields))
}

/// The protected header section (all its fields) in a multipart/signed's signed part: the
/// part's own fields when its Content-Type has `hp=` (or `protected-headers=`), or the fields
/// of a legacy `message/rfc822; forwarded=no` wrapper. None when there is none.
fn signed_part_protected_section(multipart_signed: &[u8]) -> Option<Vec<Field>> {
    let parsed = mime::parse_mail(multipart_signed).ok()?;
    let mut first = parsed.subparts.first()?;
    // Through the multipart/signed layers inside (sign-then-sign), to the content they sign.
    while mime::classify_entity(&mime::split(first.raw_bytes)) == Kind::MultipartSigned
        && first.subparts.len() == 2
    {
        first = first.subparts.first()?;
    }
    let ent = mime::split(first.raw_bytes);
    match protection(&ent) {
        Protection::Wrapped(w) => Some(mime::split(&w).fields),
        Protection::Hp => Some(ent.fields.clone()),
        Protection::WrappedSmime | Protection::None => None,
    }
}

/// The protected header section an entity carries.
enum Protection {
    None,
    /// Its own fields (RFC 9788 `hp=`, or the older `protected-headers=`).
    Hp,
    /// A legacy `message/rfc822; forwarded=no` wrapper: the wrapped message, decoded.
    Wrapped(Secret),
    /// Such a wrapper around S/MIME (a captured ciphertext, someone's signed message): no
    /// protected header section, and never unwrapped (it stays attached, reported partial).
    WrappedSmime,
}

fn protection(ent: &Entity<'_>) -> Protection {
    // A multipart/signed's own fields are covered by no signature (anyone holding the
    // recipient's certificate can encrypt such an entity anew with fields of their choosing):
    // its protected section is the one inside its signed part, which the caller takes.
    if mime::classify_entity(ent) == Kind::MultipartSigned {
        return Protection::None;
    }
    let ct = ent.content_type();
    if ct.mimetype == "message/rfc822"
        && ct
            .params
            .get("forwarded")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
    {
        let wrapped = Secret::new(mime::decode_body(ent));
        if mime::classify_entity(&mime::split(&wrapped)) != Kind::Other {
            return Protection::WrappedSmime;
        }
        return Protection::Wrapped(wrapped);
    }
    if ct.params.contains_key("hp") || ct.params.contains_key("protected-headers") {
        Protection::Hp
    } else {
        Protection::None
    }
}

/// The fields of a protected header section to promote: no Content-* or MIME-Version fields,
/// no forged status fields, each ending in a line break.
fn promotable(fields: &[Field], eol: &[u8], authserv_id: &str) -> Vec<Field> {
    let mut v: Vec<Field> = fields
        .iter()
        .filter(|f| !f.is_content() && !f.is("MIME-Version") && !f.name().is_empty())
        .filter(|f| USER_FACING.iter().chain(SENDER_WRITTEN).any(|n| f.is(n)))
        .cloned()
        .collect();
    status::strip_forged(&mut v, authserv_id);
    v.iter_mut().for_each(|f| {
        if !f.raw.ends_with(b"\n") {
            f.raw.extend_from_slice(eol);
        }
    });
    v
}

/// Judges every signer against the delivered From and, when the signed content carries a
/// protected header section (`protected`: its From), against that From too.
fn recheck_from(st: &mut Status, from: &FromAddress, protected: Option<&FromAddress>) {
    // Every address of the certificate counts (its SAN rfc822Names and the subject's
    // emailAddress: a certificate may name aliases or several domains), not only the first.
    let matching = |from: &FromAddress, addrs: &[String]| match from {
        FromAddress::One(f) => addrs.iter().find(|a| crate::address::same(a, f)).cloned(),
        FromAddress::Ambiguous(_) => None,
    };
    let mut worst = Signature::None;
    for s in st.signers.iter_mut() {
        if matches!(s.verdict, Signature::Valid | Signature::Mismatch) {
            let addrs = match &s.cert {
                Some(c) => crate::certs::email_addresses_as_written(c),
                None => s.address.iter().cloned().collect(),
            };
            let outer = matching(from, &addrs);
            let outer_ok = outer.is_some();
            let protected_ok = protected.is_none_or(|p| matching(p, &addrs).is_some());
            if let Some(a) = outer {
                s.address = Some(a);
            }
            if outer_ok && protected_ok {
                s.verdict = Signature::Valid;
                s.reason = None;
            } else {
                s.verdict = Signature::Mismatch;
                s.reason = Some(match from {
                    FromAddress::Ambiguous(why) if !outer_ok => (*why).to_string(),
                    _ if !outer_ok => String::from("signer-is-not-from"),
                    _ => String::from("signer-is-not-protected-from"),
                });
            }
        }
        if s.verdict.severity() > worst.severity() {
            worst = s.verdict;
        }
    }
    if !st.signers.is_empty() && st.signature != Signature::Error {
        st.signature = worst;
    }
    // Unknown revocation status is never a plain pass. Decided here, once the From comparison
    // made the signers' final verdicts (before, they were all still mismatch and the word was
    // never written).
    if st
        .signers
        .iter()
        .any(|s| s.verdict == Signature::Valid && !s.revocation_checked)
    {
        st.add("revocation", "unchecked");
    }
}

enum Step {
    /// The next entity down the chain (decrypted or unwrapped content: wiped when dropped).
    Next(Secret),
    /// The next entity is application/pkcs7-mime and its body was decoded on the way: its
    /// header section and the DER of the next layer.
    NextPkcs7(Secret, Secret, String),
    Stop,
    Fail,
}

struct Walker<'a> {
    ctx: &'a Context,
    st: &'a mut Status,
    layers: Vec<SignedLayer>,
    cbc: bool,
    decrypted: bool,
    order: Vec<&'static str>,
}

impl Walker<'_> {
    /// How many more signers this message may have ([`MAX_SIGNERS`] for all its layers).
    fn signers_left(&self) -> usize {
        let judged: usize = self.layers.iter().map(|l| l.results.len()).sum();
        MAX_SIGNERS.saturating_sub(judged)
    }

    /// One application/pkcs7-mime layer, given its decoded DER and its smime-type hint.
    fn pkcs7(&mut self, der: Secret, hint: &str) -> Result<Step> {
        let size_hint = der.len();
        // A large envelope is parsed without its encrypted content, which is then decrypted
        // from `der` itself: OpenSSL would otherwise hold a second copy of it.
        let detached = if der.len() as u64 >= LARGE_MESSAGE {
            crate::ber::detach_encrypted_content(&der)
        } else {
            None
        };
        let parsed = match &detached {
            Some(d) => CmsContentInfo::from_der(&d.header)
                .ok()
                .filter(|c| {
                    matches!(
                        ossl::content_kind(c),
                        ContentKind::Enveloped | ContentKind::AuthEnveloped
                    )
                })
                .map(|c| (c, Some(d.content.clone()))),
            None => None,
        };
        let (cms, content_range, message_certs) = match parsed {
            Some((c, r)) => (c, r, None),
            None => match parse_cms(&der) {
                (Ok(c), certs) => (c, None, certs),
                (Err(_), _) => {
                    if hint.contains("enveloped") {
                        self.st.encryption = Encryption::Failed;
                    } else if hint == "certs-only" {
                        // No signature was claimed: nothing to judge, the message passes as it is.
                    } else {
                        self.st.signature = Signature::Error;
                    }
                    self.st.add("reason", "malformed-cms");
                    return Ok(Step::Fail);
                }
            },
        };
        let detached_content = content_range.map(|r| (der, r));
        let detached_content = detached_content
            .as_ref()
            .and_then(|(d, r)| d.get(r.clone()));
        match ossl::content_kind(&cms) {
            k @ (ContentKind::Enveloped | ContentKind::AuthEnveloped) => {
                self.st.add(
                    "alg",
                    if k == ContentKind::AuthEnveloped {
                        "authenveloped"
                    } else {
                        "enveloped"
                    },
                );
                match self.decrypt(&cms, size_hint, detached_content)? {
                    Ok(plain) => {
                        self.decrypted = true;
                        if k == ContentKind::Enveloped {
                            self.cbc = true;
                        }
                        self.order.push("encrypted");
                        Ok(match plain {
                            Plain::Bytes(b) => Step::Next(b),
                            Plain::Pkcs7 { head, der, hint } => Step::NextPkcs7(head, der, hint),
                        })
                    }
                    Err(reason) => {
                        self.st.encryption = Encryption::Failed;
                        self.st.add("reason", reason);
                        Ok(Step::Fail)
                    }
                }
            }
            ContentKind::Signed => {
                if !ossl::has_econtent(&cms) {
                    if ossl::signer_count(&cms) == 0 {
                        // certs-only (no signers, no content) is not a signed message.
                        self.st.add("reason", "certs-only");
                        return Ok(Step::Stop);
                    }
                    // A detached signature without the content it signs (RFC 8551 §3.8's
                    // certs-only has no signers): a signature that cannot be checked.
                    self.st.signature = Signature::Error;
                    self.st.add("reason", "signed-content-missing");
                    return Ok(Step::Fail);
                }
                if !ossl::econtent_is_data(&cms) {
                    self.st.signature = Signature::Error;
                    self.st.add("reason", "signed-content-not-data");
                    return Ok(Step::Fail);
                }
                let trust = self.ctx.trust()?;
                let stored = || stored_certificates(&self.ctx.settings);
                let budget = self.signers_left();
                let check = check_signed(
                    &cms,
                    message_certs,
                    None,
                    &trust,
                    size_hint,
                    &stored,
                    budget,
                )?;
                let Some(check) = check else {
                    self.st.signature = Signature::Error;
                    self.st.add("reason", "malformed-signed-data");
                    return Ok(Step::Fail);
                };
                let (results, content) = check;
                self.layers.push(SignedLayer { results });
                self.order.push("signed");
                match content {
                    Some(c) => Ok(Step::Next(Secret::new(c))),
                    None => Ok(Step::Fail),
                }
            }
            ContentKind::Compressed => {
                self.st.add("reason", "compressed-data-unsupported");
                Ok(Step::Fail)
            }
            other => {
                // Encrypted (a symmetric-key EncryptedData, RFC 5652 §8) or labelled encrypted
                // but not an envelope we know: it was not decrypted, which is what
                // encryption=failed says (none would pass it off as plain mail).
                let encrypted = matches!(other,
                    ContentKind::Other(n) if n == openssl_sys::NID_pkcs7_encrypted);
                if encrypted || hint.contains("enveloped") {
                    self.st.encryption = Encryption::Failed;
                }
                self.st.add("reason", "unsupported-cms-content");
                Ok(Step::Fail)
            }
        }
    }

    fn multipart_signed(&mut self, bytes: &[u8]) -> Result<Step> {
        let parsed = match mime::parse_mail(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.st.signature = Signature::Error;
                self.st.add("reason", "malformed-mime");
                return Ok(Step::Fail);
            }
        };
        if parsed.subparts.len() != 2 {
            self.st.signature = Signature::Error;
            self.st.add("reason", "malformed-multipart-signed");
            self.layers.push(SignedLayer {
                results: Vec::new(),
            });
            return Ok(Step::Stop);
        }
        let signed = parsed.subparts[0].raw_bytes;
        let sig_ent = mime::split(parsed.subparts[1].raw_bytes);
        // RFC 1847 §2.1, RFC 8551 §3.5.3: the second part is the signature, labelled as such.
        // Another label (text/html holding the signature and more) is a part readers show,
        // next to the signed one, that no signature covers; OpenSSL refuses it too.
        if mime::classify_entity(&sig_ent) != Kind::DetachedSignature {
            self.st.signature = Signature::Error;
            self.st.add("reason", "malformed-multipart-signed");
            self.layers.push(SignedLayer {
                results: Vec::new(),
            });
            return Ok(Step::Stop);
        }
        let der = mime::decode_body(&sig_ent);
        let (parsed, message_certs) = parse_cms(&der);
        let cms = match parsed {
            Ok(c) if ossl::content_kind(&c) == ContentKind::Signed => c,
            _ => {
                self.st.signature = Signature::Error;
                self.st.add("reason", "malformed-signature");
                self.layers.push(SignedLayer {
                    results: Vec::new(),
                });
                return Ok(Step::Stop);
            }
        };
        if ossl::has_econtent(&cms) {
            // "Johnny, You Are Fired" §4.1: a detached signature that carries content too is
            // never valid, whatever either part says.
            self.st.signature = Signature::Error;
            self.st.add("reason", "content-in-detached-signature");
            self.layers.push(SignedLayer {
                results: Vec::new(),
            });
            return Ok(Step::Stop);
        }
        if !ossl::econtent_is_data(&cms) {
            self.st.signature = Signature::Error;
            self.st.add("reason", "signed-content-not-data");
            self.layers.push(SignedLayer {
                results: Vec::new(),
            });
            return Ok(Step::Stop);
        }
        let trust = self.ctx.trust()?;
        let canonical = mime::canonical_crlf(signed);
        let stored = || stored_certificates(&self.ctx.settings);
        let Some((results, _)) = check_signed(
            &cms,
            message_certs,
            Some(&canonical),
            &trust,
            0,
            &stored,
            self.signers_left(),
        )?
        else {
            self.st.signature = Signature::Error;
            self.st.add("reason", "malformed-signature");
            self.layers.push(SignedLayer {
                results: Vec::new(),
            });
            return Ok(Step::Stop);
        };
        self.layers.push(SignedLayer { results });
        self.order.push("signed");
        // Encrypt-then-sign: the signed content is itself S/MIME; go on with it (a client could
        // not verify the signature after we decrypt the inside anyway).
        let inner = mime::split(signed);
        if matches!(
            mime::classify_entity(&inner),
            Kind::Pkcs7Mime | Kind::MultipartSigned
        ) {
            Ok(Step::Next(Secret::new(signed.to_vec())))
        } else {
            Ok(Step::Stop)
        }
    }

    /// Decrypts with the identity a RecipientInfo names. Ok(Err(reason)) for failures that
    /// belong in the status; Err for configuration or temporary failures.
    fn decrypt(
        &mut self,
        cms: &CmsContentInfo,
        size_hint: usize,
        detached: Option<&[u8]>,
    ) -> Result<std::result::Result<Plain, &'static str>> {
        if self.ctx.settings.keys.is_empty() {
            return Ok(Err("no-key-configured"));
        }
        let ids = self.ctx.identities()?;
        let mut matched = false;
        for id in ids.iter() {
            if !ossl::recipient_matches(cms, &id.cert) {
                continue;
            }
            matched = true;
            // Uniform failure whatever went wrong (padding, tag, key): no oracle. A legacy
            // content cipher (RC2) needs the legacy provider: load it and try once more.
            let attempt = || {
                let mut sink = PlainSink::new(size_hint);
                ossl::decrypt_into(cms, &id.key, &id.cert, detached, size_hint, &mut |chunk| {
                    sink.feed(chunk)
                })
                .ok()
                .map(|()| sink.finish())
            };
            if let Some(plain) = attempt() {
                return Ok(Ok(plain));
            }
            keys::load_legacy_provider();
            if let Some(plain) = attempt() {
                return Ok(Ok(plain));
            }
            let _ = openssl::error::ErrorStack::get();
        }
        if matched {
            Ok(Err("decryption-failed"))
        } else {
            let n = ossl::recipients(cms).len();
            log::info!("message is encrypted to {n} recipient(s), none of them ours");
            Ok(Err("not-encrypted-to-our-keys"))
        }
    }
}

/// Decrypted content, as the walk consumes it.
enum Plain {
    /// The whole decrypted entity.
    Bytes(Secret),
    /// A decrypted application/pkcs7-mime entity (sign-then-encrypt) whose base64 body was
    /// decoded while it was decrypted, so that a large message is not held twice.
    Pkcs7 {
        head: Secret,
        der: Secret,
        hint: String,
    },
}

/// Receives plaintext chunks from [`ossl::decrypt_into`]: gathers the header section, then
/// either keeps everything or, for a base64 application/pkcs7-mime entity, decodes the body on
/// the fly. Dropping it (decryption failed) wipes what it received.
struct PlainSink {
    head: Secret,
    mode: SinkMode,
    size_hint: usize,
}

enum SinkMode {
    Head,
    Collect(Secret),
    Decode(mime::Base64Stream, String),
}

/// Longest header section looked for before giving up and keeping the content as it is.
const MAX_INNER_HEAD: usize = 64 * 1024;

impl PlainSink {
    fn new(size_hint: usize) -> Self {
        PlainSink {
            head: Secret::new(Vec::new()),
            mode: SinkMode::Head,
            size_hint,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            SinkMode::Collect(v) => return v.extend_from_slice(chunk),
            SinkMode::Decode(d, _) => return d.feed(chunk),
            SinkMode::Head => {}
        }
        let searched = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(chunk);
        let end = find_header_end(&self.head[searched..]).map(|e| e + searched);
        match end {
            Some(end) => {
                let decode = {
                    let ent = mime::split(&self.head[..end]);
                    let cte = ent
                        .first("Content-Transfer-Encoding")
                        .map(|f| f.value().trim().to_ascii_lowercase());
                    (mime::classify_entity(&ent) == Kind::Pkcs7Mime
                        && cte.as_deref() == Some("base64"))
                    .then(|| {
                        ent.content_type()
                            .params
                            .get("smime-type")
                            .map(|s| s.to_ascii_lowercase())
                            .unwrap_or_default()
                    })
                };
                match decode {
                    Some(hint) => {
                        let mut d = mime::Base64Stream::with_capacity(self.size_hint / 4 * 3 + 3);
                        d.feed(&self.head[end..]);
                        self.head.truncate(end);
                        self.mode = SinkMode::Decode(d, hint);
                    }
                    None => self.collect(),
                }
            }
            None if self.head.len() > MAX_INNER_HEAD => self.collect(),
            None => {}
        }
    }

    fn collect(&mut self) {
        let mut v = Secret::new(Vec::with_capacity(self.size_hint.max(self.head.len())));
        v.extend_from_slice(&self.head);
        self.head = Secret::new(Vec::new());
        self.mode = SinkMode::Collect(v);
    }

    fn finish(self) -> Plain {
        match self.mode {
            SinkMode::Head => Plain::Bytes(self.head),
            SinkMode::Collect(v) => Plain::Bytes(v),
            SinkMode::Decode(d, hint) => Plain::Pkcs7 {
                head: self.head,
                der: Secret::new(d.finish()),
                hint,
            },
        }
    }
}

/// End of a header section (index just past the blank line), if `data` holds one.
fn find_header_end(data: &[u8]) -> Option<usize> {
    memchr::memmem::find(data, b"\n\n")
        .map(|i| i + 2)
        .into_iter()
        .chain(memchr::memmem::find(data, b"\n\r\n").map(|i| i + 3))
        .min()
}

/// The judged signers of one SignedData and, for an opaque one, its content.
type CheckedLayer = (Vec<SignerResult>, Option<Vec<u8>>);

/// A CMS structure, and the certificates taken out of it when it is a SignedData that
/// [`parse_signed`] could parse that way (None: they are inside the structure).
/// Most signers a message may have, all its signed layers together. Real mail has one or two;
/// each costs signature checks whose price the sender sets within what OpenSSL and
/// [`ossl::refused_key`] allow (up to about 3 ms for a 16384-bit modulus): 1,000 signers in
/// each of 8 layers took 38 s, past what Sieve's filter timeout allows.
const MAX_SIGNERS: usize = 256;

/// Most signers × certificates of a SignedData (the paths built; about 10 µs each).
const MAX_SIGNER_CERT_PAIRS: usize = 20_000;
/// Most signers of one SignedData whose certificates or paths are looked for in the address
/// book (each such look goes over the whole book; real mail has one or two signers).
const MAX_STORE_SIGNERS: usize = 8;

/// Most digest algorithms a SignedData may list.
const MAX_DIGEST_ALGORITHMS: usize = 16;

/// Whether `der` is an EnvelopedData or AuthEnvelopedData, or a SignedData whose content
/// holds one (encrypt-then-sign), down to `depth` signed layers.
fn der_is_envelope(der: &[u8], depth: usize) -> bool {
    let Ok(cms) = parse_cms(der).0 else {
        return false;
    };
    match ossl::content_kind(&cms) {
        ContentKind::Enveloped | ContentKind::AuthEnveloped => true,
        ContentKind::Signed if depth > 0 => ossl::econtent_unverified(&cms).is_some_and(|c| {
            let inner = mime::split(&c);
            mime::may_be_envelope(&inner) || envelope_in(&inner, depth - 1)
        }),
        _ => false,
    }
}

/// Whether the body of an entity some reader may take for S/MIME is an envelope (or a signed
/// layer around one), base64 or binary, whatever its labels say: the CMS content types decide,
/// as when nothing is ambiguous.
fn body_is_envelope(ent: &mime::Entity<'_>) -> bool {
    envelope_in(ent, 8)
}

fn envelope_in(ent: &mime::Entity<'_>, depth: usize) -> bool {
    mime::could_be_smime(ent)
        && (der_is_envelope(&mime::base64_permissive(ent.body), depth)
            || der_is_envelope(ent.body, depth))
}

fn parse_cms(
    der: &[u8],
) -> (
    std::result::Result<CmsContentInfo, openssl::error::ErrorStack>,
    Option<Vec<X509>>,
) {
    // A SignedData listing absurdly many digest algorithms (a real one lists one or two) is
    // refused as malformed before OpenSSL builds a digest chain of that length (minutes of
    // work, then a stack overflow). An encoding the reader does not follow is counted again on
    // OpenSSL's own DER of what it parsed: the guard fails closed.
    use crate::ber::{digest_algorithms, DigestAlgorithms};
    let too_many = || {
        log::warn!("a SignedData with more than {MAX_DIGEST_ALGORITHMS} digest algorithms");
        (Err(openssl::error::ErrorStack::get()), None)
    };
    match digest_algorithms(der, MAX_DIGEST_ALGORITHMS) {
        DigestAlgorithms::Over => return too_many(),
        DigestAlgorithms::Unread => {
            let parsed = CmsContentInfo::from_der(der);
            if let Ok(cms) = &parsed {
                if ossl::content_kind(cms) == ossl::ContentKind::Signed {
                    let canonical = cms.to_der().unwrap_or_default();
                    if digest_algorithms(&canonical, MAX_DIGEST_ALGORITHMS)
                        != DigestAlgorithms::Within
                    {
                        return too_many();
                    }
                }
            }
            return (parsed, None);
        }
        DigestAlgorithms::Within | DigestAlgorithms::NotSignedData => {}
    }
    match parse_signed(der) {
        Some((c, certs)) => (Ok(c), Some(certs)),
        None => (CmsContentInfo::from_der(der), None),
    }
}

/// A SignedData parsed without its certificates, which come from `certcache` instead: a signer
/// whose certificate was seen before costs neither a certificate parse nor a new RSA key set-up.
/// None when the DER is not a SignedData of the plain form `ber::detach_certificates` accepts,
/// when one of its certificates does not parse (the ordinary parse then reports the malformed
/// structure as before), or for a large message (the rewrite would copy its content).
fn parse_signed(der: &[u8]) -> Option<(CmsContentInfo, Vec<X509>)> {
    if der.len() as u64 >= LARGE_MESSAGE {
        return None;
    }
    let split = crate::ber::detach_certificates(der)?;
    let certs = split
        .certs
        .iter()
        .map(|r| der.get(r.clone()).and_then(crate::certcache::parse))
        .collect::<Option<Vec<X509>>>()?;
    let cms = CmsContentInfo::from_der(&split.der).ok();
    if cms.is_none() {
        let _ = openssl::error::ErrorStack::get();
    }
    Some((cms?, certs))
}

/// Checks every signer of a SignedData and judges it. Returns None when the structure cannot
/// be checked at all. `message_certs`: the certificates the message carries when they were
/// taken out of `cms` (`parse_signed`); None reads them from `cms`.
/// The certificates in the user's address book (`--certs`, else its default folder when it
/// exists): a signer whose message carries no certificate (gpgsm `--include-certs 0`, `openssl
/// cms -nocerts`) is found there, as RFC 8551 §2.4.2 expects receiving agents to use
/// certificates they already hold. They are only candidates: the path to an anchor decides.
fn stored_certificates(settings: &Settings) -> Vec<X509> {
    let dir = match &settings.certs {
        Some(d) => d.clone(),
        None => match crate::addressbook::default_store_dir() {
            Ok(d) if d.is_dir() => d,
            _ => return Vec::new(),
        },
    };
    crate::addressbook::store::Store::new(dir).all_certificates()
}

fn check_signed(
    cms: &CmsContentInfo,
    message_certs: Option<Vec<X509>>,
    detached: Option<&[u8]>,
    trust: &TrustStore,
    size_hint: usize,
    stored: &dyn Fn() -> Vec<X509>,
    signer_budget: usize,
) -> Result<Option<CheckedLayer>> {
    let mut extra =
        openssl::stack::Stack::new().map_err(|e| Error::software(format!("stack: {e}")))?;
    // The anchors first, then the message's own certificates: the order in which OpenSSL looks
    // for a signer's certificate when the message's are inside `cms`.
    let taken_out = message_certs.is_some();
    let mut message_certs = message_certs.unwrap_or_else(|| ossl::embedded_certs(cms));
    let from_message: &[X509] = if taken_out { &message_certs } else { &[] };
    let push = |extra: &mut openssl::stack::Stack<X509>, c: &X509| {
        extra
            .push(c.clone())
            .map_err(|e| Error::software(format!("stack: {e}")))
    };
    for c in trust.certificates().iter().chain(from_message) {
        push(&mut extra, c)?;
    }
    // Each signer's path is built among all the message's certificates: 4,000 signers with
    // 4,000 certificates took half a minute. Real mail has one or two signers and a handful
    // of certificates; past these bounds the SignedData is malformed.
    let signers = ossl::signer_count(cms);
    if signers > signer_budget.min(MAX_SIGNERS)
        || signers.saturating_mul(message_certs.len().max(1)) > MAX_SIGNER_CERT_PAIRS
    {
        log::warn!(
            "a SignedData with {signers} signers and {} certificates",
            message_certs.len()
        );
        return Ok(None);
    }
    // A digest only the legacy provider computes (MD4, judged weak below): load it and try once
    // more, as for legacy ciphers.
    let mut checked = match ossl::check_signers(cms, detached, &extra, size_hint) {
        Ok(c) => c,
        Err(_) => {
            keys::load_legacy_provider();
            match ossl::check_signers(cms, detached, &extra, size_hint) {
                Ok(c) => c,
                Err(_) => return Ok(None),
            }
        }
    };
    let mut stored_added = false;
    if checked.signers.iter().any(|s| s.cert.is_none()) {
        // A signer sent no certificate: the address book may hold it (and intermediates); for
        // a message with a handful of signers (each is looked up among all of the book).
        let more = if signers <= MAX_STORE_SIGNERS {
            stored()
        } else {
            Vec::new()
        };
        if !more.is_empty() {
            for c in &more {
                push(&mut extra, c)?;
            }
            if let Ok(again) = ossl::check_signers(cms, detached, &extra, size_hint) {
                checked = again;
            }
            message_certs.extend(more);
        }
        stored_added = true;
    }
    // The From comparison is redone on the assembled message (recheck_from); judge against an
    // ambiguous From here so that only the cryptographic and path checks decide.
    let from = FromAddress::Ambiguous("from-not-yet-known");
    let mut results: Vec<SignerResult> = checked
        .signers
        .iter()
        .map(|s| verify::judge(s, &message_certs, trust, &from, "TEXT"))
        .collect();
    if !stored_added && results.iter().any(|r| r.verdict == Signature::Untrusted) {
        // A signer sent its certificate but not its intermediate (gpgsm's --include-certs 1):
        // the address book's certificates may complete the path, as they do for a signer that
        // sent none; for a message with a handful of signers.
        let more = if signers <= MAX_STORE_SIGNERS {
            stored()
        } else {
            Vec::new()
        };
        if !more.is_empty() {
            message_certs.extend(more);
            for (r, s) in results.iter_mut().zip(&checked.signers) {
                if r.verdict == Signature::Untrusted {
                    *r = verify::judge(s, &message_certs, trust, &from, "TEXT");
                }
            }
        }
    }
    Ok(Some((results, checked.content)))
}

/// Protected headers (RFC 9788 `hp=`, the older `protected-headers=`, or a legacy
/// message/rfc822 wrapper with `forwarded=no`): returns the content to deliver and the fields
/// to promote over the outer ones.
fn unwrap_protected(content: Secret, authserv_id: &str) -> (Secret, Vec<Field>) {
    let promote =
        |e: &Entity<'_>, eol: &[u8]| -> Vec<Field> { promotable(&e.fields, eol, authserv_id) };
    let (wrapped, fields) = {
        let ent = mime::split(&content);
        let eol = mime::eol_of(&content);
        match protection(&ent) {
            Protection::Wrapped(wrapped) => {
                let fields = promote(&mime::split(&wrapped), eol);
                (Some(wrapped), fields)
            }
            Protection::Hp => (None, promote(&ent, eol)),
            // S/MIME in a wrapper stays attached, below the root, where scan_partial reports
            // it; lifted to the root it was delivered as the message itself (a reply oracle)
            // without having been processed.
            Protection::WrappedSmime | Protection::None => (None, Vec::new()),
        }
    };
    (wrapped.unwrap_or(content), fields)
}

/// Looks for S/MIME parts below the root (inside multiparts or attached messages) and reports
/// them as partial; they are never decrypted or counted as the message's signature.
fn scan_partial(ctx: &Context, bytes: &[u8], root_is_multipart_signed: bool, st: &mut Status) {
    let parsed = match mime::parse_mail(bytes) {
        Ok(p) => p,
        Err(e) => {
            // The parts could not be looked at: say why (mailparse's only other error is a
            // header section it cannot read).
            let e = e.to_string();
            let why = if e.contains("Recursion limit") {
                "mime-nesting-limit"
            } else if e.contains(mime::TOO_MANY_PARTS) {
                "mime-part-limit"
            } else {
                "mime-unparsable"
            };
            st.add("reason", why);
            return;
        }
    };
    let mut budget = ctx.limits.max_parts;
    let mut found = Partial::default();
    let children: Vec<&mailparse::ParsedMail<'_>> = if root_is_multipart_signed {
        // Part 2 is the signature we verified; only look inside the signed content (through
        // the multipart/signed layers inside it, verified too: sign-then-sign).
        let mut signed = parsed.subparts.first();
        while let Some(p) =
            signed.filter(|p| p.ctype.mimetype == "multipart/signed" && p.subparts.len() == 2)
        {
            signed = p.subparts.first();
        }
        signed.into_iter().collect()
    } else {
        parsed.subparts.iter().collect()
    };
    for c in children {
        scan_part(c, 0, ctx.limits.max_depth, &mut budget, &mut found);
    }
    // An attached message at the root: its S/MIME is not the root's either.
    if !root_is_multipart_signed && parsed.ctype.mimetype == "message/rfc822" {
        scan_attached(&parsed, 0, ctx.limits.max_depth, &mut budget, &mut found);
    }
    if found.encrypted {
        st.add("partial", "encrypted");
    }
    if found.signed {
        st.add("partial", "signed");
    }
    if found.truncated {
        st.add("reason", "mime-part-limit");
    }
}

#[derive(Default)]
struct Partial {
    encrypted: bool,
    signed: bool,
    truncated: bool,
}

fn scan_part(
    p: &mailparse::ParsedMail<'_>,
    depth: usize,
    max_depth: usize,
    budget: &mut usize,
    found: &mut Partial,
) {
    if *budget == 0 {
        found.truncated = true;
        return;
    }
    *budget -= 1;
    let ent = mime::split(p.raw_bytes);
    // A part with several Content-Type fields: mutt and GMime go by another than the first, so
    // each that names S/MIME is reported too.
    let types = mime::every_content_type(&ent);
    if types.len() > 1 {
        for (_, ct) in types {
            match mime::classify(&ct) {
                Kind::MultipartSigned => found.signed = true,
                Kind::Pkcs7Mime => {
                    let hint = ct.params.get("smime-type").map(|s| s.to_ascii_lowercase());
                    nested_pkcs7(&ent, &hint.unwrap_or_default(), found);
                }
                Kind::DetachedSignature | Kind::Other => {}
            }
        }
    }
    match mime::classify_entity(&ent) {
        Kind::MultipartSigned => found.signed = true,
        // The signature part of a multipart/signed (counted above), or a stray one.
        Kind::DetachedSignature => {}
        Kind::Pkcs7Mime => {
            let hint = ent
                .content_type()
                .params
                .get("smime-type")
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            nested_pkcs7(&ent, &hint, found);
        }
        Kind::Other => {}
    }
    for c in &p.subparts {
        scan_part(c, depth, max_depth, budget, found);
    }
    if p.ctype.mimetype == "message/rfc822" {
        scan_attached(p, depth, max_depth, budget, found);
    }
}

/// What a nested application/pkcs7-mime part holds, by its CMS content type (smime-type is a
/// hint a sender may get wrong or set to mislead: RFC 8551 §3.2.2); by the hint only when the
/// content does not parse, encrypted unless the hint says signed.
fn nested_pkcs7(ent: &mime::Entity<'_>, hint: &str, found: &mut Partial) {
    let parsed = CmsContentInfo::from_der(&mime::decode_body(ent));
    let _ = openssl::error::ErrorStack::get();
    match parsed.as_ref().map(|c| ossl::content_kind(c)) {
        Ok(ContentKind::Enveloped | ContentKind::AuthEnveloped) => found.encrypted = true,
        Ok(ContentKind::Signed) => {
            if let Ok(true) = parsed.as_ref().map(|c| ossl::has_econtent(c)) {
                found.signed = true;
            }
        }
        Ok(ContentKind::Other(n)) if n == openssl_sys::NID_pkcs7_encrypted => {
            found.encrypted = true
        }
        Ok(_) => {}
        Err(_) if hint.contains("signed") => found.signed = true,
        Err(_) => found.encrypted = true,
    }
}

fn scan_attached(
    p: &mailparse::ParsedMail<'_>,
    depth: usize,
    max_depth: usize,
    budget: &mut usize,
    found: &mut Partial,
) {
    if depth >= max_depth {
        found.truncated = true;
        return;
    }
    let ent = mime::split(p.raw_bytes);
    let inner = mime::decode_body(&ent);
    if let Ok(m) = mime::parse_mail(&inner) {
        scan_part(&m, depth + 1, max_depth, budget, found);
    } else {
        found.truncated = true;
    }
}

/// Whether an error from [`process`] may pass by itself (the caller should retry or keep the
/// message) rather than being a configuration problem.
pub fn is_temporary(e: &Error) -> bool {
    e.kind == ErrorKind::TempFail
}
