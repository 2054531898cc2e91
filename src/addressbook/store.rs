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

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
/// X509v3_KU_KEY_CERT_SIGN.
const KU_KEY_CERT_SIGN: u32 = 0x0004;

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
/// Fingerprints with the addresses their certificates carry.
type Index = Vec<(String, Vec<String>)>;

/// The store folder. Certificates are parsed once per process (with OpenSSL 3.0 every
/// certificate parse costs about a millisecond: it runs the public-key decoder) and the cache is
/// dropped whenever this process changes the folder. Below that, parsed certificates are kept
/// per file for the whole process ([`super::cache`]), so that a new `Store` (one per send in
/// `smimed agent`) parses only files that changed.
pub struct Store {
    dir: PathBuf,
    cache: Mutex<Option<Arc<Certificates>>>,
    index: Mutex<Option<Arc<Index>>>,
}

/// Writes `data` to `path` atomically: a 0600 temp file in the same folder, fsync, rename, fsync
/// of the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::software(format!("{} has no folder", path.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut rnd = [0u8; 6];
    openssl::rand::rand_bytes(&mut rnd).map_err(|e| Error::software(format!("random: {e}")))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", certs::hex(&rnd)));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path.display(), e));
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Whether a certificate is a CA's (keyCertSign): kept in `ca/`, never a recipient.
pub fn is_ca(cert: &X509) -> bool {
    ossl::key_usage(cert).is_some_and(|k| k & KU_KEY_CERT_SIGN != 0)
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
            index: Mutex::new(None),
        }
    }

    fn pem_path(&self, fp: &str) -> PathBuf {
        self.dir.join(format!("{fp}.pem"))
    }

    fn read_cert(&self, fp: &str) -> Option<X509> {
        cached_cert(&self.pem_path(fp))
    }

    /// Fingerprint -> addresses of every stored certificate, from the records (a certificate
    /// whose record lacks them is parsed).
    fn index(&self) -> Arc<Index> {
        let mut g = match self.index.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(i) = g.as_ref() {
            return i.clone();
        }
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(fp) = name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
                    continue;
                };
                if fp.starts_with('.') {
                    continue;
                }
                let mut addrs = self.read_meta(fp).addresses;
                if addrs.is_empty() {
                    addrs = self
                        .read_cert(fp)
                        .map(|c| certs::email_addresses(&c))
                        .unwrap_or_default();
                }
                out.push((fp.to_string(), addrs));
            }
        }
        out.sort();
        let i = Arc::new(out);
        *g = Some(i.clone());
        i
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
        match self.index.lock() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Stores a certificate (an intermediate CA goes to `ca/`). Returns whether it was new.
    pub fn add(&self, cert: &X509, source: &str) -> Result<bool> {
        let fp = certs::fingerprint(cert);
        let dir = if is_ca(cert) {
            self.dir.join("ca")
        } else {
            self.dir.clone()
        };
        create_dir(&dir)?;
        let path = dir.join(format!("{fp}.pem"));
        if path.exists() {
            // Known already; a record from before addresses were kept gets them now.
            if !is_ca(cert) {
                let mut meta = self.read_meta(&fp);
                if meta.addresses.is_empty() && self.meta_path(&fp).exists() {
                    meta.addresses = certs::email_addresses(cert);
                    self.write_meta(&fp, &meta)?;
                }
            }
            return Ok(false);
        }
        let pem = cert
            .to_pem()
            .map_err(|e| Error::software(format!("encoding certificate: {e}")))?;
        write_atomic(&path, &pem)?;
        self.invalidate();
        if !is_ca(cert) && !self.meta_path(&fp).exists() {
            self.write_meta(
                &fp,
                &Meta {
                    source: source.to_string(),
                    addresses: certs::email_addresses(cert),
                    ..Meta::default()
                },
            )?;
        }
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
        if let Some(t) = signing_time {
            if t > now + MAX_FUTURE_SKEW {
                return Err(Error::data(format!(
                    "signing time {t} is in the future: not harvesting {}",
                    certs::fingerprint(cert)
                )));
            }
        }
        let fp = certs::fingerprint(cert);
        self.add(cert, "harvest")?;
        let mut meta = self.read_meta(&fp);
        let newer = match (meta.signing_time, signing_time) {
            (Some(old), Some(new)) => new > old,
            (None, _) => meta.capabilities.is_none() || signing_time.is_some(),
            (Some(_), None) => false,
        };
        if !newer {
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

    /// Removes the certificates naming `what` (an address) or whose fingerprint starts with
    /// `what` (at least 8 hex digits). Returns the removed fingerprints.
    pub fn remove(&self, what: &str) -> Result<Vec<String>> {
        let what_l = what.trim().to_ascii_lowercase();
        let by_fp = what_l.len() >= 8 && what_l.chars().all(|c| c.is_ascii_hexdigit());
        let mut removed = Vec::new();
        for e in self.entries() {
            let hit = if by_fp {
                e.fingerprint.starts_with(&what_l)
            } else {
                certs::has_address(&e.cert, &what_l)
            };
            if hit {
                for p in [
                    self.pem_path(&e.fingerprint),
                    self.meta_path(&e.fingerprint),
                ] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => return Err(Error::io(p.display(), err)),
                    }
                }
                removed.push(e.fingerprint);
            }
        }
        if !removed.is_empty() {
            self.invalidate();
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
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
        let want = addr.trim().to_ascii_lowercase();
        Ok(self
            .index()
            .iter()
            .filter(|(_, addrs)| addrs.contains(&want))
            .filter_map(|(fp, _)| {
                // The record only says where to look; the certificate itself decides.
                let cert = self.read_cert(fp)?;
                certs::has_address(&cert, addr).then(|| Candidate {
                    capabilities: self.read_meta(fp).capabilities(),
                    source: format!("store {}", self.dir.display()),
                    cert,
                })
            })
            .collect())
    }

    fn intermediates(&self) -> Vec<X509> {
        read_pem_dir(&self.dir.join("ca"))
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    fn capabilities_of(&self, fingerprint: &str) -> Option<Vec<Capability>> {
        self.read_meta(fingerprint).capabilities()
    }
}
