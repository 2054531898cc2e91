//! The local certificate store (`--certs DIR`): one PEM file per certificate, named by its
//! SHA-256 fingerprint, with a TOML sidecar recording where it came from, the owner's
//! SMIMECapabilities and the signing time of the message they came from. Intermediate CA
//! certificates go to `DIR/ca/` and only ever help complete a path (they are never anchors).
//!
//! Invariants: every write is atomic (0600 temp file in the same folder, fsync, rename, fsync of
//! the folder), so a crash or a concurrent harvest never leaves a half-written file; capabilities
//! are only recorded by [`Store::harvest`], whose callers pass signers of verified mail only; a
//! record is only replaced by one with a newer signing time; a signing time more than a day in
//! the future is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::{Candidate, CertSource};
use crate::certs;
use crate::error::{Error, Result};
use crate::ossl::{self, Capability};

/// A signing time further ahead than this is refused (clock skew allowance).
pub const MAX_FUTURE_SKEW: i64 = 24 * 3600;

/// The sidecar of a stored certificate.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// `import` or `harvest`.
    #[serde(default)]
    pub source: String,
    /// signingTime of the message the capabilities came from (seconds since the epoch).
    pub signing_time: Option<i64>,
    /// DER SMIMECapabilities, base64.
    pub capabilities: Option<String>,
    /// The certificate's e-mail addresses (lower case): lookups read these small records and
    /// parse only the certificates that match, not the whole store.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// When verified mail (its signingTime) last named this certificate as the one its signer
    /// wants to be encrypted to: its SMIMEEncryptionKeyPreference (RFC 8551 §2.5.3), or,
    /// without one, the signing certificate itself; or when the user imported it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_at: Option<i64>,
}

impl Meta {
    pub fn capabilities(&self) -> Option<Vec<Capability>> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(self.capabilities.as_deref()?)
            .ok()?;
        ossl::parse_capabilities(&der)
    }
}

/// One stored certificate.
pub struct Entry {
    pub cert: X509,
    pub fingerprint: String,
    pub meta: Meta,
}

/// What a harvest did.
#[derive(Debug, PartialEq, Eq)]
pub enum Harvested {
    /// Certificate (and capabilities) stored or updated.
    Stored,
    /// The certificate was known with capabilities from a message at least as new: kept as is.
    Older,
}

/// Stored certificates with their fingerprints.
type Certificates = Vec<(String, X509)>;

/// The store folder. Certificates are parsed once per process (with OpenSSL 3.0 every
/// certificate parse costs about a millisecond: it runs the public-key decoder) and the cache is
/// dropped whenever this process changes the folder. Below that, parsed certificates are kept
/// per file for the whole process ([`super::cache`]), so that a new `Store` (one per send in
/// `smimed agent`) parses only files that changed.
pub struct Store {
    dir: PathBuf,
    cache: Mutex<Option<Arc<Certificates>>>,
    /// The last snapshot this `Store` used, settled or not: the lookups of one send read the
    /// folder once even just after a change.
    snap: Mutex<Option<Arc<Snapshot>>>,
}

/// What lookups read from a store folder: which certificate carries which addresses, the records
/// and the intermediates. A process that looks up many times (`smimed agent`, one `Store` per
/// send) keeps it per folder while neither the folder nor its `ca/` changed, instead of reading
/// every record again. Every store write is an atomic rename or an unlink, which changes the
/// folder's modification time; a snapshot is kept only when both folders' times were at least
/// [`SETTLED`] older than the moment it was read (as git does for its index), so that a change
/// made within the same tick of the file system's clock cannot go unseen.
struct Snapshot {
    ids: (Option<DirId>, Option<DirId>),
    index: Vec<Indexed>,
    metas: HashMap<String, Meta>,
    intermediates: Vec<X509>,
}

/// One stored end-entity certificate in a [`Snapshot`]: parsed on the first lookup that
/// needs it (a one-shot process parses only the certificates of its recipients).
struct Indexed {
    fingerprint: String,
    addresses: Vec<String>,
    cert: std::sync::OnceLock<Option<X509>>,
}

/// A folder's identity and times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct DirId {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How much older than the read a folder's times must be for its snapshot to be kept.
const SETTLED: i64 = 2;

fn dir_id(dir: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    Some(DirId {
        dev: m.dev(),
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Whether a folder last changed at least [`SETTLED`] seconds before `now` (absent: yes).
fn settled(id: Option<DirId>, now: i64) -> bool {
    id.is_none_or(|i| i.mtime.0 + SETTLED <= now && i.ctime.0 + SETTLED <= now)
}

static SNAPSHOTS: Mutex<Option<HashMap<PathBuf, Arc<Snapshot>>>> = Mutex::new(None);

use crate::fsio::write_atomic;

fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Whether a certificate is a CA's (basicConstraints cA, or keyCertSign without
/// basicConstraints; see [`ossl::is_ca`]): kept in `ca/`, never a recipient.
pub fn is_ca(cert: &X509) -> bool {
    ossl::is_ca(cert)
}

/// The first certificate of a stored PEM file, parsed again only when the file changed (a
/// long-running agent sees imports and harvests without parsing the store on every send).
fn cached_cert(path: &Path) -> Option<X509> {
    let parse = |d: &[u8]| -> Vec<X509> {
        let c = certs::pem_blocks(&String::from_utf8_lossy(d))
            .into_iter()
            .find(|b| b.label == "CERTIFICATE")
            .and_then(|b| X509::from_der(&b.der).ok());
        let _ = openssl::error::ErrorStack::get();
        c.into_iter().collect()
    };
    super::cache::store()
        .get(path, parse)
        .ok()
        .and_then(|v| v.into_iter().next())
}

fn read_pem_dir(dir: &Path) -> Vec<(String, X509)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        let cert = cached_cert(&p);
        match cert {
            Some(c) => out.push((stem.to_string(), c)),
            None => log::warn!("certificate store: skipping unreadable {}", p.display()),
        }
    }
    let _ = openssl::error::ErrorStack::get();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store {
            dir,
            cache: Mutex::new(None),
            snap: Mutex::new(None),
        }
    }

    fn pem_path(&self, fp: &str) -> PathBuf {
        self.dir.join(format!("{fp}.pem"))
    }

    fn read_cert(&self, fp: &str) -> Option<X509> {
        cached_cert(&self.pem_path(fp))
    }

    /// The folder as lookups see it: kept per process while the folders are unchanged
    /// ([`Snapshot`]), read again otherwise.
    fn snapshot(&self) -> Arc<Snapshot> {
        let ids = (dir_id(&self.dir), dir_id(&self.dir.join("ca")));
        let mut mine = match self.snap.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(s) = mine.as_ref().filter(|s| s.ids == ids) {
            return s.clone();
        }
        let lock = || match SNAPSHOTS.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let kept = lock()
            .as_ref()
            .and_then(|m| m.get(&self.dir))
            .filter(|s| s.ids == ids)
            .cloned();
        let snap = match kept {
            Some(s) => s,
            None => {
                let now = crate::pathcache::now();
                let snap = Arc::new(self.read_snapshot(ids));
                if settled(ids.0, now) && settled(ids.1, now) {
                    let mut g = lock();
                    let map = g.get_or_insert_with(HashMap::new);
                    if map.len() >= 64 {
                        map.clear();
                    }
                    map.insert(self.dir.clone(), snap.clone());
                }
                snap
            }
        };
        *mine = Some(snap.clone());
        snap
    }

    /// Reads every record (a certificate whose record lacks its addresses is parsed) and the
    /// intermediates.
    fn read_snapshot(&self, ids: (Option<DirId>, Option<DirId>)) -> Snapshot {
        let mut index = Vec::new();
        let mut metas = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(fp) = name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
                    continue;
                };
                if fp.starts_with('.') {
                    continue;
                }
                let meta = self.read_meta(fp);
                // (Records written before the keys took IDNA forms hold lower-cased addresses.)
                let mut addresses: Vec<String> = meta
                    .addresses
                    .iter()
                    .map(|a| crate::address::key(a))
                    .collect();
                let cert = std::sync::OnceLock::new();
                if addresses.is_empty() {
                    let c = self.read_cert(fp);
                    addresses = c
                        .as_ref()
                        .map(|c| certs::email_addresses(c))
                        .unwrap_or_default();
                    let _ = cert.set(c);
                }
                metas.insert(fp.to_string(), meta);
                index.push(Indexed {
                    fingerprint: fp.to_string(),
                    addresses,
                    cert,
                });
            }
        }
        index.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        let intermediates = read_pem_dir(&self.dir.join("ca"))
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        Snapshot {
            ids,
            index,
            metas,
            intermediates,
        }
    }

    fn certificates(&self) -> Arc<Certificates> {
        let mut g = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = g.as_ref() {
            return c.clone();
        }
        let c = Arc::new(read_pem_dir(&self.dir));
        *g = Some(c.clone());
        c
    }

    fn invalidate(&self) {
        match self.cache.lock() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
        match self.snap.lock() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
        let mut g = match SNAPSHOTS.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(m) = g.as_mut() {
            m.remove(&self.dir);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An exclusive lock on the store (flock on its folder), released when dropped.
    fn lock(&self) -> Result<std::fs::File> {
        let d = std::fs::File::open(&self.dir)
            .map_err(|e| Error::io(format!("opening {}", self.dir.display()), e))?;
        rustix::fs::flock(&d, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::io(
                format!("locking {}", self.dir.display()),
                std::io::Error::from(e),
            )
        })?;
        Ok(d)
    }

    fn meta_path(&self, fp: &str) -> PathBuf {
        self.dir.join(format!("{fp}.toml"))
    }

    fn read_meta(&self, fp: &str) -> Meta {
        std::fs::read_to_string(self.meta_path(fp))
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn write_meta(&self, fp: &str, meta: &Meta) -> Result<()> {
        let text = toml::to_string(meta)
            .map_err(|e| Error::software(format!("certificate store record: {e}")))?;
        write_atomic(&self.meta_path(fp), text.as_bytes())
    }

    /// Every stored end-entity certificate.
    pub fn entries(&self) -> Vec<Entry> {
        self.certificates()
            .iter()
            .map(|(fp, cert)| Entry {
                meta: self.read_meta(fp),
                fingerprint: fp.clone(),
                cert: cert.clone(),
            })
            .collect()
    }

    /// Every stored certificate, end-entity and intermediate (`ca/`).
    pub fn all_certificates(&self) -> Vec<X509> {
        let mut all: Vec<X509> = self.certificates().iter().map(|(_, c)| c.clone()).collect();
        all.extend(self.snapshot().intermediates.iter().cloned());
        all
    }

    /// Stores a certificate (an intermediate CA goes to `ca/`). Returns whether it was new.
    pub fn add(&self, cert: &X509, source: &str) -> Result<bool> {
        create_dir(&self.dir)?;
        let _lock = self.lock()?;
        self.add_locked(cert, source)
    }

    /// [`Store::add`] under the store's lock, held by the caller: its check for a record and
    /// the bare record it writes must not run between another process's reading and writing
    /// of that record (a harvest of a newer message would be replaced by the bare one).
    fn add_locked(&self, cert: &X509, source: &str) -> Result<bool> {
        let fp = certs::fingerprint(cert);
        let dir = if is_ca(cert) {
            self.dir.join("ca")
        } else {
            self.dir.clone()
        };
        create_dir(&dir)?;
        let path = dir.join(format!("{fp}.pem"));
        let bare = || Meta {
            source: source.to_string(),
            addresses: certs::email_addresses(cert),
            ..Meta::default()
        };
        if path.exists() {
            // Known already; a record from before addresses were kept gets them now, and one
            // missing (a write that failed after the certificate's, on a full disk) is made.
            if !is_ca(cert) {
                if !self.meta_path(&fp).exists() {
                    self.write_meta(&fp, &bare())?;
                } else {
                    let mut meta = self.read_meta(&fp);
                    if meta.addresses.is_empty() {
                        meta.addresses = certs::email_addresses(cert);
                        self.write_meta(&fp, &meta)?;
                    }
                }
            }
            return Ok(false);
        }
        let pem = cert
            .to_pem()
            .map_err(|e| Error::software(format!("encoding certificate: {e}")))?;
        // The record first, then the certificate: a certificate is in the store (and used) only
        // with its record; a record left alone by a failed write is read by nobody.
        let made_record = !is_ca(cert) && !self.meta_path(&fp).exists();
        if made_record {
            self.write_meta(&fp, &bare())?;
        }
        if let Err(e) = write_atomic(&path, &pem) {
            if made_record {
                let _ = std::fs::remove_file(self.meta_path(&fp));
            }
            return Err(e);
        }
        self.invalidate();
        Ok(true)
    }

    /// Records the certificate and SMIMECapabilities of a signer of VERIFIED mail (the caller's
    /// duty). A newer signing time replaces an older record; a far-future one is refused.
    pub fn harvest(
        &self,
        cert: &X509,
        capabilities: Option<&[u8]>,
        signing_time: Option<i64>,
        now: i64,
    ) -> Result<Harvested> {
        self.harvest_as(cert, capabilities, signing_time, now, false)
    }

    /// [`Store::harvest`]; with `preferred`, the message's signer also named this certificate
    /// as the one to encrypt to ([`Meta::preferred_at`]: its signing time, else `now`).
    pub fn harvest_as(
        &self,
        cert: &X509,
        capabilities: Option<&[u8]>,
        signing_time: Option<i64>,
        now: i64,
        preferred: bool,
    ) -> Result<Harvested> {
        if let Some(t) = signing_time {
            if t > now + MAX_FUTURE_SKEW {
                return Err(Error::data(format!(
                    "signing time {t} is in the future: not harvesting {}",
                    certs::fingerprint(cert)
                )));
            }
        }
        let fp = certs::fingerprint(cert);
        // Add, read, compare and write under the store's lock: two deliveries harvesting at
        // once (procmail in parallel, the agent, a watcher's workers) must not let an older
        // message's record replace a newer one's.
        create_dir(&self.dir)?;
        let _lock = self.lock()?;
        self.add_locked(cert, "harvest")?;
        let mut meta = self.read_meta(&fp);
        let newer = match (meta.signing_time, signing_time) {
            (Some(old), Some(new)) => new > old,
            (None, _) => meta.capabilities.is_none() || signing_time.is_some(),
            (Some(_), None) => false,
        };
        // (A message without a signing time states nothing datable: it cannot outrank one.)
        let prefer =
            preferred && signing_time.is_some_and(|t| meta.preferred_at.is_none_or(|p| p < t));
        if prefer {
            meta.preferred_at = signing_time;
        }
        if !newer {
            if prefer {
                self.write_meta(&fp, &meta)?;
            }
            return Ok(Harvested::Older);
        }
        if meta.source.is_empty() {
            meta.source = String::from("harvest");
        }
        if meta.addresses.is_empty() {
            meta.addresses = certs::email_addresses(cert);
        }
        meta.signing_time = signing_time;
        meta.capabilities =
            capabilities.map(|c| base64::engine::general_purpose::STANDARD.encode(c));
        self.write_meta(&fp, &meta)?;
        Ok(Harvested::Stored)
    }

    /// Records that the user named `cert` (stored already) at `at` as the one to encrypt to
    /// (`certs import` of a certificate): a later statement than what earlier mail said.
    pub fn prefer(&self, cert: &X509, at: i64) -> Result<()> {
        let fp = certs::fingerprint(cert);
        let _lock = self.lock()?;
        let mut meta = self.read_meta(&fp);
        if meta.preferred_at.is_some_and(|t| t >= at) {
            return Ok(());
        }
        meta.preferred_at = Some(at);
        if meta.addresses.is_empty() {
            meta.addresses = certs::email_addresses(cert);
        }
        self.write_meta(&fp, &meta)?;
        self.invalidate();
        Ok(())
    }

    /// Removes the certificates naming `what` (an address), or whose fingerprint is `what`: a
    /// SHA-256 fingerprint or a prefix of it of at least 8 hex digits, or a whole SHA-1
    /// fingerprint (as gpgsm and mail clients show it), with or without colons. By fingerprint,
    /// stored CA certificates (`ca/`) are removed too. Returns the removed fingerprints.
    pub fn remove(&self, what: &str) -> Result<Vec<String>> {
        let what_l = what.trim().to_ascii_lowercase();
        let hex: String = what_l
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let by_fp = hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit());
        let fp_hit = |fp: &str, cert: &X509| {
            fp.starts_with(&hex)
                || (hex.len() == 40
                    && cert
                        .digest(openssl::hash::MessageDigest::sha1())
                        .is_ok_and(|d| certs::hex(&d) == hex))
        };
        let mut removed = Vec::new();
        let mut files = Vec::new();
        for e in self.entries() {
            let hit = if by_fp {
                fp_hit(&e.fingerprint, &e.cert)
            } else {
                certs::has_address(&e.cert, &what_l)
            };
            if hit {
                files.push(self.pem_path(&e.fingerprint));
                files.push(self.meta_path(&e.fingerprint));
                removed.push(e.fingerprint);
            }
        }
        let ca_dir = self.dir.join("ca");
        if by_fp {
            for (fp, cert) in read_pem_dir(&ca_dir) {
                if fp_hit(&fp, &cert) {
                    files.push(ca_dir.join(format!("{fp}.pem")));
                    removed.push(fp);
                }
            }
        }
        let _ = openssl::error::ErrorStack::get();
        for p in &files {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(p.display(), err)),
            }
        }
        if !removed.is_empty() {
            self.invalidate();
            for d in [&self.dir, &ca_dir] {
                if let Ok(d) = std::fs::File::open(d) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(removed)
    }
}

impl CertSource for Store {
    fn name(&self) -> &str {
        "store"
    }

    fn find(&self, addr: &str) -> Result<Vec<Candidate>> {
        let want = crate::address::key(addr);
        let snap = self.snapshot();
        Ok(snap
            .index
            .iter()
            .filter(|i| i.addresses.contains(&want))
            .filter_map(|i| {
                // The record only says where to look; the certificate itself decides.
                let cert = i
                    .cert
                    .get_or_init(|| self.read_cert(&i.fingerprint))
                    .clone()?;
                let meta = snap.metas.get(&i.fingerprint);
                certs::has_address(&cert, addr).then(|| Candidate {
                    capabilities: meta.and_then(Meta::capabilities),
                    preferred_at: meta.and_then(|m| m.preferred_at),
                    source: format!("store {}", self.dir.display()),
                    cert,
                    chain: Vec::new(),
                })
            })
            .collect())
    }

    fn intermediates(&self) -> Vec<X509> {
        self.snapshot().intermediates.clone()
    }

    fn capabilities_of(&self, fingerprint: &str) -> Option<Vec<Capability>> {
        self.snapshot()
            .metas
            .get(fingerprint)
            .and_then(Meta::capabilities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn cert(user: &str) -> X509 {
        let email = format!("{user}@example.org");
        crate::testutil::self_signed(user, 1, Some(&email), &crate::testutil::key())
    }

    /// Sets a folder's modification time `ago` seconds back (its change time stays now).
    fn age(dir: &Path, ago: u64) {
        let t = SystemTime::now() - Duration::from_secs(ago);
        std::fs::File::open(dir)
            .expect("open folder")
            .set_modified(t)
            .expect("set time");
    }

    /// Moves a stored certificate and its record from one store folder to another by rename, as
    /// another process's atomic write would put them there.
    fn move_in(from: &Path, to: &Path, fp: &str) {
        for ext in ["pem", "toml"] {
            std::fs::rename(
                from.join(format!("{fp}.{ext}")),
                to.join(format!("{fp}.{ext}")),
            )
            .expect("rename in");
        }
    }

    fn found(dir: &Path, addr: &str) -> usize {
        Store::new(dir.to_path_buf())
            .find(addr)
            .expect("find")
            .len()
    }

    /// A certificate whose record is missing (its write failed on a full disk, after the
    /// certificate's in earlier versions) gets it when imported again, not a record without
    /// a source; a new certificate's record is written before the certificate.
    #[test]
    fn importing_again_makes_a_missing_record() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("store");
        let store = Store::new(dir.clone());
        let c = cert("rec-a");
        assert!(store.add(&c, "import").expect("add"));
        let fp = certs::fingerprint(&c);
        std::fs::remove_file(dir.join(format!("{fp}.toml"))).expect("remove record");
        assert!(!Store::new(dir.clone()).add(&c, "import").expect("again"));
        let meta = Store::new(dir).read_meta(&fp);
        assert_eq!(meta.source, "import");
        assert!(!meta.addresses.is_empty());
    }

    /// Adding a certificate (and the bare record it writes) waits for the store's lock, which a
    /// harvest holds from reading a record to writing it.
    #[test]
    fn adding_waits_for_the_stores_lock() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("store");
        let store = Store::new(dir.clone());
        store.add(&cert("lock-a"), "import").expect("add a");
        let held = store.lock().expect("lock");
        let b = cert("lock-b");
        let pem = dir.join(format!("{}.pem", certs::fingerprint(&b)));
        let adder = {
            let dir = dir.clone();
            std::thread::spawn(move || Store::new(dir).add(&b, "import").expect("add b"))
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!pem.exists(), "added while another holds the lock");
        drop(held);
        assert!(adder.join().expect("adder"));
        assert!(pem.exists());
    }

    /// A snapshot is used only while the folder is unchanged and settled: a certificate that
    /// another process renames into the folder is found by the next lookup, and one that
    /// disappears is not found any more.
    #[test]
    fn lookups_see_changes_made_by_other_processes() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("store");
        let (a, b) = (cert("snap-a"), cert("snap-b"));
        Store::new(dir.clone()).add(&a, "import").expect("add a");
        assert_eq!(found(&dir, "snap-a@example.org"), 1);

        // Another process adds b (written elsewhere, renamed in).
        let other = d.path().join("other");
        Store::new(other.clone()).add(&b, "import").expect("add b");
        let fp = certs::fingerprint(&b);
        assert_eq!(found(&dir, "snap-b@example.org"), 0);
        move_in(&other, &dir, &fp);
        assert_eq!(found(&dir, "snap-b@example.org"), 1);

        // Removal by another process.
        std::fs::remove_file(dir.join(format!("{fp}.pem"))).expect("rm");
        assert_eq!(found(&dir, "snap-b@example.org"), 0);
        assert_eq!(found(&dir, "snap-a@example.org"), 1);

        // One `Store` (one send) reads the unsettled folder once: a record rewritten in place
        // is not seen by its next lookup, a change of the folder is.
        let store = Store::new(dir.clone());
        let n = |addr: &str| store.find(addr).expect("find").len();
        assert_eq!(n("snap-a@example.org"), 1);
        let fa = certs::fingerprint(&a);
        std::fs::write(
            dir.join(format!("{fa}.toml")),
            "addresses = [\"someone-else@example.org\"]\n",
        )
        .expect("rewrite");
        assert_eq!(n("snap-a@example.org"), 1, "the send's snapshot is used");
        let c = cert("snap-c");
        Store::new(other.clone()).add(&c, "import").expect("add c");
        // Past the file system clock's tick (at most 10 ms), so that the folder's times differ
        // from those of the removal above.
        std::thread::sleep(Duration::from_millis(20));
        move_in(&other, &dir, &certs::fingerprint(&c));
        assert_eq!(n("snap-c@example.org"), 1, "a changed folder is read again");
        assert_eq!(n("snap-a@example.org"), 0, "with the rewritten record");
    }

    /// Once the folder is settled the snapshot answers without reading the records again; a
    /// change of the folder (here: its modification time) makes the next lookup read them.
    #[test]
    fn a_settled_folder_is_read_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("store");
        let c = cert("snap-c");
        Store::new(dir.clone()).add(&c, "import").expect("add");
        let fp = certs::fingerprint(&c);
        // The folder's change time cannot be set back; wait until it is settled.
        std::thread::sleep(Duration::from_secs(SETTLED as u64 + 1));
        assert_eq!(found(&dir, "snap-c@example.org"), 1);
        // The record is rewritten in place (no rename: the folder does not change): the kept
        // snapshot still answers from what it read.
        let meta = dir.join(format!("{fp}.toml"));
        std::fs::write(&meta, "addresses = [\"someone-else@example.org\"]\n").expect("rewrite");
        assert_eq!(found(&dir, "snap-c@example.org"), 1, "snapshot used");
        // Any change of the folder's times makes the next lookup read the records again.
        age(&dir, 100);
        assert_eq!(found(&dir, "snap-c@example.org"), 0, "records read again");

        // Settled again, then another process renames a certificate in: found at once.
        let e = cert("snap-e");
        let other = d.path().join("other");
        Store::new(other.clone()).add(&e, "import").expect("add e");
        std::thread::sleep(Duration::from_secs(SETTLED as u64 + 1));
        assert_eq!(found(&dir, "snap-e@example.org"), 0);
        let fe = certs::fingerprint(&e);
        move_in(&other, &dir, &fe);
        assert_eq!(found(&dir, "snap-e@example.org"), 1);
    }
}
