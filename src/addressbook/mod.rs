//! The address book: where recipients' certificates come from, and which one is used.
//!
//! Sources implement [`CertSource`] and are asked in a fixed order: the local store
//! ([`store::Store`], `--certs DIR`), then vCard files ([`vcard::VcardSource`], `--vcard PATH`),
//! then an LDAP directory ([`ldap::LdapSource`], `[ldap]` / `--ldap URL`). The first source that yields a
//! usable certificate wins; within a source, the usable certificate with the latest notBefore.
//!
//! Invariants: a certificate is used for encryption only when [`check_for_encryption`] accepts
//! it for that address, now: its path reaches a configured trust anchor, it is within its
//! validity, its key usage allows encryption (keyEncipherment for RSA, keyAgreement for EC), its
//! EKU (when present) allows emailProtection, and its SAN or subject carries the address
//! (compared without regard to ASCII case). Every refusal is kept with its reason, so that
//! `smimed certs lookup` can explain the choice. Recorded SMIMECapabilities come only from the
//! local store, which harvests them only from verified mail.

pub mod cache;
pub mod ldap;
pub mod store;
pub mod vcard;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::x509::store::X509Store;
use openssl::x509::{X509StoreContext, X509VerifyResult, X509};

use crate::certs;
use crate::error::{Error, Result};
use crate::ossl::{self, Capability};
use crate::pathcache::{self, PathCache};
use crate::trust::TrustStore;

/// X509v3_KU_KEY_ENCIPHERMENT / X509v3_KU_KEY_AGREEMENT.
const KU_KEY_ENCIPHERMENT: u32 = 0x0020;
const KU_KEY_AGREEMENT: u32 = 0x0008;
/// XKU_SMIME / XKU_ANYEKU.
const XKU_SMIME: u32 = 0x4;
const XKU_ANYEKU: u32 = 0x100;

/// A certificate a source offers for an address.
#[derive(Clone)]
pub struct Candidate {
    pub cert: X509,
    /// Human-readable origin: `store`, `vcard FILE`, …
    pub source: String,
    /// The algorithms the owner advertised (from verified mail), in their order, if known.
    pub capabilities: Option<Vec<Capability>>,
    /// When verified mail last named it as its owner's encryption certificate (see
    /// [`store::Meta::preferred_at`]).
    pub preferred_at: Option<i64>,
    /// CA certificates that came with it (an LDAP entry's, a PKCS#7's), to complete its path.
    pub chain: Vec<X509>,
}

/// Something that can list certificates for an address (local store, vCard, LDAP).
pub trait CertSource: Send + Sync {
    /// Short name for messages (`store`, `vcard`, `ldap`).
    fn name(&self) -> &str;
    /// Every certificate this source holds that names `addr` (usable or not).
    fn find(&self, addr: &str) -> Result<Vec<Candidate>>;
    /// Certificates that may complete a path (intermediate CAs) this source holds.
    fn intermediates(&self) -> Vec<X509> {
        Vec::new()
    }
    /// Recorded capabilities for a certificate found elsewhere (by SHA-256 fingerprint).
    fn capabilities_of(&self, _fingerprint: &str) -> Option<Vec<Capability>> {
        None
    }
}

/// The result of looking an address up.
pub struct Lookup {
    pub address: String,
    pub chosen: Option<Candidate>,
    /// Certificates seen and not used, each with the reason.
    pub refused: Vec<(Candidate, String)>,
}

/// Loads the trust anchors when first needed (`pipeline::Context::trust`).
pub type TrustLoader<'a> = dyn Fn() -> Result<Arc<TrustStore>> + 'a;

/// The configured sources, in lookup order. The trust anchors are loaded only when a candidate
/// certificate has to be checked, so that mail to people without certificates does not pay for
/// reading a system CA bundle.
pub struct AddressBook<'a> {
    sources: Vec<Box<dyn CertSource>>,
    trust: &'a TrustLoader<'a>,
    /// The trust anchors (and CRLs), loaded when first needed.
    trust_store: OnceLock<Arc<TrustStore>>,
    /// Every source's intermediate CA certificates, read once.
    intermediates: Vec<X509>,
    now: i64,
}

/// Where the address book lives, from flags and the config file.
#[derive(Debug, Clone, Default)]
pub struct BookConfig {
    /// Local store folder (None: the default under $XDG_DATA_HOME).
    pub certs: Option<PathBuf>,
    pub vcard: Vec<PathBuf>,
    pub ldap: Option<ldap::LdapConfig>,
}

impl BookConfig {
    /// The address book the settings name (`--certs`, `--vcard`, `[ldap]`).
    pub fn from_settings(settings: &crate::config::Settings) -> BookConfig {
        BookConfig {
            certs: settings.certs.clone(),
            vcard: settings.vcard.clone(),
            ldap: settings.ldap.clone(),
        }
    }
}

/// `$XDG_DATA_HOME/smimed/certs` (or `~/.local/share/smimed/certs`).
pub fn default_store_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| Error::config("no --certs given and neither XDG_DATA_HOME nor HOME set"))?;
    Ok(base.join("smimed").join("certs"))
}

/// A recipient's path is checked against `TrustStore::store_any_purpose` (the email-usable
/// anchors, the CRLs when configured, no purpose): `store_encrypt` uses OpenSSL's
/// S/MIME-encryption purpose, which demands keyEncipherment and so rejects every EC
/// (keyAgreement) certificate; key usage and EKU are checked here instead. When no configured
/// CRL covers an issuer on the path, the path is checked again without CRLs (as for signers).
const NO_CRL: &str = "no CRL covers an issuer on the path";

impl<'a> AddressBook<'a> {
    /// The sources in lookup order: the local store (opened read-only here), then vCard paths.
    pub fn open(config: &BookConfig, trust: &'a TrustLoader<'a>) -> Result<AddressBook<'a>> {
        let dir = match &config.certs {
            Some(d) => d.clone(),
            None => default_store_dir()?,
        };
        let mut sources: Vec<Box<dyn CertSource>> = vec![Box::new(store::Store::new(dir))];
        if !config.vcard.is_empty() {
            sources.push(Box::new(vcard::VcardSource::new(config.vcard.clone())));
        }
        if let Some(l) = &config.ldap {
            sources.push(Box::new(ldap::LdapSource::new(l.clone())));
        }
        Self::with_sources(sources, trust)
    }

    /// An address book over the given sources.
    pub fn with_sources(
        sources: Vec<Box<dyn CertSource>>,
        trust: &'a TrustLoader<'a>,
    ) -> Result<Self> {
        let intermediates = sources.iter().flat_map(|s| s.intermediates()).collect();
        Ok(AddressBook {
            sources,
            trust,
            trust_store: OnceLock::new(),
            intermediates,
            now: pathcache::now(),
        })
    }

    fn trust_store(&self) -> Result<&Arc<TrustStore>> {
        if let Some(s) = self.trust_store.get() {
            return Ok(s);
        }
        let trust = (self.trust)()?;
        Ok(self.trust_store.get_or_init(|| trust))
    }

    /// Whether `cert` may encrypt to `addr` now (see [`check_for_encryption`]): Ok(Err(reason))
    /// when it may not; Err only when the trust anchors cannot be loaded.
    pub fn check(&self, cert: &X509, addr: &str) -> Result<std::result::Result<(), String>> {
        self.check_with(cert, addr, &[])
    }

    /// [`check`](Self::check), with `chain` as intermediates besides the address book's: the
    /// sender's own certificate is checked with the chain that came with the sender's key
    /// (a PKCS#12 or PEM file usually holds the issuing intermediate).
    pub fn check_with(
        &self,
        cert: &X509,
        addr: &str,
        chain: &[X509],
    ) -> Result<std::result::Result<(), String>> {
        let trust = self.trust_store()?;
        if trust.restricted(cert) {
            return Ok(Err(String::from(
                "the trust store says it is not for email",
            )));
        }
        let joined;
        let untrusted: &[X509] = if chain.is_empty() {
            &self.intermediates
        } else {
            joined = self
                .intermediates
                .iter()
                .chain(chain)
                .cloned()
                .collect::<Vec<X509>>();
            &joined
        };
        let r = check_for_encryption_cached(
            cert,
            addr,
            &trust.store_any_purpose,
            untrusted,
            self.now,
            trust.generation,
        );
        if !(trust.has_crls() && r.as_ref().is_err_and(|e| e == NO_CRL)) {
            return Ok(r);
        }
        // A CRL on the path is missing: a CA on it may still be revoked by the CRLs there are
        // (a root's CRL revoking the intermediate, the intermediate's own CRL not given).
        if crate::verify::a_ca_on_the_path_is_revoked(trust, cert, untrusted) {
            return Ok(Err(String::from("a CA on its path is revoked")));
        }
        // A CRL on the path missing or unusable, as for a signer: the end certificate's CRL
        // only, then (no CRL covers its issuer either) the path without CRLs.
        let r = check_for_encryption_cached(
            cert,
            addr,
            &trust.store_any_purpose_leaf_crl,
            untrusted,
            self.now,
            trust.generation | (1 << 62),
        );
        if r.as_ref().is_err_and(|e| e == NO_CRL) {
            log::warn!(
                "recipient certificate: revocation not checked (no usable CRL for its issuer)"
            );
            return Ok(check_for_encryption_cached(
                cert,
                addr,
                &trust.store_any_purpose_no_crl,
                untrusted,
                self.now,
                trust.generation | (1 << 63),
            ));
        }
        Ok(r)
    }

    /// The SMIMECapabilities recorded for a certificate by any source, if any.
    pub fn recorded_capabilities(&self, cert: &X509) -> Option<Vec<Capability>> {
        let fp = certs::fingerprint(cert);
        self.sources.iter().find_map(|s| s.capabilities_of(&fp))
    }

    /// Looks `addr` up in every source in order; the first source with a usable certificate wins.
    pub fn lookup(&self, addr: &str) -> Result<Lookup> {
        // As written by hand (`certs lookup "bob"@example.org`) or in a header: the addr-spec
        // made plain, as sendmail's recipients are, so that both ask the sources the same.
        let addr = match crate::outbound::argv::split_addresses(addr.trim()).as_slice() {
            [one] => one.clone(),
            _ => crate::address::plain(addr.trim()),
        };
        let mut refused = Vec::new();
        for s in &self.sources {
            let mut usable: Vec<Candidate> = Vec::new();
            let mut refused_here: Vec<(Candidate, String)> = Vec::new();
            // One certificate listed twice (a GAL's user and contact objects) is one candidate,
            // usable when any listing is (one may carry the intermediate the other lacks).
            let mut usable_fps = std::collections::HashSet::new();
            for mut c in s.find(&addr)? {
                let fp = certs::fingerprint(&c.cert);
                if usable_fps.contains(&fp) {
                    continue;
                }
                match self.check_with(&c.cert, &addr, &c.chain)? {
                    Ok(()) => {
                        if c.capabilities.is_none() {
                            c.capabilities = self.recorded_capabilities(&c.cert);
                        }
                        usable_fps.insert(fp);
                        usable.push(c)
                    }
                    Err(why) => refused_here.push((c, why)),
                }
            }
            let mut refused_fps = std::collections::HashSet::new();
            refused.extend(refused_here.into_iter().filter(|(c, _)| {
                let fp = certs::fingerprint(&c.cert);
                !usable_fps.contains(&fp) && refused_fps.insert(fp)
            }));
            // The one its owner last asked to be encrypted to (RFC 8551 §2.5.3: a sending agent
            // SHOULD use the encryption-key preference); then the latest notBefore.
            usable.sort_by(|a, b| {
                let t = |c: &Candidate| certs::unix_time(c.cert.not_before()).unwrap_or(0);
                (b.preferred_at, t(b)).cmp(&(a.preferred_at, t(a)))
            });
            let mut it = usable.into_iter();
            if let Some(best) = it.next() {
                // Listed by an earlier source too, without what makes it usable here.
                let chosen = certs::fingerprint(&best.cert);
                refused.retain(|(c, _)| certs::fingerprint(&c.cert) != chosen);
                let t = |c: &Candidate| certs::unix_time(c.cert.not_before()).unwrap_or(0);
                for other in it {
                    let why = if t(&best) >= t(&other) {
                        "a newer usable certificate exists"
                    } else {
                        "another usable certificate was named later (by its owner's signed \
                         mail, or imported)"
                    };
                    refused.push((other, String::from(why)));
                }
                return Ok(Lookup {
                    address: addr,
                    chosen: Some(best),
                    refused,
                });
            }
        }
        Ok(Lookup {
            address: addr,
            chosen: None,
            refused,
        })
    }
}

/// Recipients' paths found earlier in this process (see [`crate::pathcache`]).
static PATHS: PathCache<()> = PathCache::new();

/// [`check_for_encryption`] with the path cache for the anchors of `generation`.
pub fn check_for_encryption_cached(
    cert: &X509,
    addr: &str,
    store: &X509Store,
    untrusted: &[X509],
    now: i64,
    generation: u64,
) -> std::result::Result<(), String> {
    let Some(key) = pathcache::key(cert, untrusted, generation) else {
        return check_for_encryption(cert, addr, store, untrusted, now);
    };
    if PATHS.get(&key, now).is_some() {
        return check(cert, addr, store, untrusted, now, None);
    }
    let mut window = None;
    let r = check(cert, addr, store, untrusted, now, Some(&mut window));
    if let (Ok(()), Some(w)) = (&r, window) {
        PATHS.put(key, w, ());
    }
    r
}

/// Whether `cert` may be used to encrypt to `addr` now; Err names the first reason it may not.
pub fn check_for_encryption(
    cert: &X509,
    addr: &str,
    store: &X509Store,
    untrusted: &[X509],
    now: i64,
) -> std::result::Result<(), String> {
    check(cert, addr, store, untrusted, now, Some(&mut None))
}

/// The checks; the path to an anchor only when `path` is Some (None: known good), which then
/// receives the window in which every certificate of the path found is valid.
fn check(
    cert: &X509,
    addr: &str,
    store: &X509Store,
    untrusted: &[X509],
    now: i64,
    path: Option<&mut Option<(i64, i64)>>,
) -> std::result::Result<(), String> {
    if !certs::has_address(cert, addr) {
        return Err(format!("not issued to {addr}"));
    }
    let nb = certs::unix_time(cert.not_before()).unwrap_or(i64::MAX);
    let na = certs::unix_time(cert.not_after()).unwrap_or(i64::MIN);
    if now < nb {
        return Err(String::from("not yet valid"));
    }
    if now > na {
        return Err(format!(
            "expired {}",
            certs::time_to_string(cert.not_after())
        ));
    }
    let key = cert
        .public_key()
        .map_err(|_| String::from("unreadable public key"))?;
    let ku = ossl::key_usage(cert);
    match key.id() {
        Id::RSA => {
            if ku.is_some_and(|k| k & KU_KEY_ENCIPHERMENT == 0) {
                return Err(String::from("key usage lacks keyEncipherment"));
            }
            if key.bits() < 2048 {
                return Err(format!("RSA key of {} bits is too weak", key.bits()));
            }
        }
        Id::EC => {
            if ku.is_some_and(|k| k & KU_KEY_AGREEMENT == 0) {
                return Err(String::from("key usage lacks keyAgreement"));
            }
        }
        _ => return Err(String::from("key type cannot encrypt (need RSA or EC)")),
    }
    if let Some(xku) = ossl::ext_key_usage(cert) {
        if xku & (XKU_SMIME | XKU_ANYEKU) == 0 {
            return Err(String::from("extended key usage lacks emailProtection"));
        }
    }
    let Some(window) = path else {
        return Ok(());
    };
    let verified = (|| -> std::result::Result<X509VerifyResult, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in untrusted {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, cert, &chain, |c| {
            c.verify_cert()?;
            if c.error() == X509VerifyResult::OK {
                *window = c.chain().map(|path| pathcache::window(path.iter()));
            }
            Ok(c.error())
        })
    })();
    let _ = openssl::error::ErrorStack::get();
    match verified {
        Ok(r) if r == X509VerifyResult::OK => Ok(()),
        // Revocation unknown, not refused: no CRL for an issuer (3), or one that cannot be
        // used: its signature (6, 8), its dates (11, 12, 15, 16: a CRL past its nextUpdate is
        // routine), its issuer (33, 35), its extensions or scope (36, 44, 54).
        Ok(r) if crate::trust::crl_problem(r.as_raw()) => {
            // (A CA's CRL missing is followed by a check of the certificate's own: the warning
            // is for a path checked without any CRL, in `check_with`.)
            log::debug!(
                "recipient certificate: a CRL is missing or unusable ({})",
                r.error_string()
            );
            Err(String::from(NO_CRL))
        }
        Ok(r) if r.as_raw() == 23 => Err(String::from("revoked")),
        Ok(r) if r.as_raw() == openssl_sys::X509_V_ERR_CERT_REJECTED => Err(String::from(
            "a certificate on its path is not for email in the trust store",
        )),
        Ok(r) => Err(format!("no path to a trust anchor: {}", r.error_string())),
        Err(e) => Err(format!("path check failed: {e}")),
    }
}

/// One line describing a certificate: fingerprint, subject, addresses, not-after.
pub fn describe(cert: &X509) -> String {
    format!(
        "{}  {}  <{}>  until {}",
        certs::fingerprint(cert),
        certs::name_to_string(cert.subject_name()),
        certs::printable(&certs::email_addresses(cert).join(", ")),
        certs::time_to_string(cert.not_after())
    )
}

/// What `smimed certs import` stored from one file.
pub struct Imported {
    pub cert: X509,
    /// False when the store already held it.
    pub new: bool,
    /// Recorded from a verified signed message (with its capabilities).
    pub harvested: bool,
}

/// Stores a certificate the user imports by hand; a leaf becomes the one to encrypt to for its
/// addresses, as the user's latest word (signed mail dated later outranks it again).
fn import_one(store: &store::Store, cert: &X509) -> Result<bool> {
    let new = store.add(cert, "import")?;
    if !store::is_ca(cert) {
        store.prefer(cert, pathcache::now())?;
    }
    Ok(new)
}

/// Imports every certificate of `data` into `store`: vCard KEYs, PEM/DER/PKCS#7/.sst, or the
/// signer of a signed message, which is taken only when the inbound pipeline judged its
/// signature valid and its signer the From address (then with its SMIMECapabilities).
pub fn import(
    store: &store::Store,
    ctx: &crate::pipeline::Context,
    data: &[u8],
) -> Result<Vec<Imported>> {
    let mut out = Vec::new();
    if vcard::is_vcard(data) {
        for c in vcard::certificates(&String::from_utf8_lossy(data)) {
            out.push(Imported {
                new: import_one(store, &c)?,
                cert: c,
                harvested: false,
            });
        }
        if out.is_empty() {
            return Err(Error::data(
                "vCard holds no X.509 certificate (no KEY property with one): nothing imported",
            ));
        }
        return Ok(out);
    }
    if let Ok(list) = certs::read_certificates(data) {
        for c in list {
            out.push(Imported {
                new: import_one(store, &c.cert)?,
                cert: c.cert,
                harvested: false,
            });
        }
        return Ok(out);
    }
    let head = crate::mime::split(data);
    if head.first("Content-Type").is_none() && head.first("From").is_none() {
        // A signed PKCS#7 as Outlook publishes it (userSMIMECertificate), DER or base64: its
        // certificates, checked at lookup like every other (a trust file never takes them).
        let published = certs::published_certificates(data);
        if published.is_empty() {
            return Err(Error::data(
                "neither a certificate (PEM, DER, PKCS#7, .sst), a vCard nor a mail message",
            ));
        }
        for c in published {
            out.push(Imported {
                new: import_one(store, &c)?,
                cert: c,
                harvested: false,
            });
        }
        return Ok(out);
    }
    let processed = crate::pipeline::process(ctx, data)?;
    for s in processed.harvestable() {
        // The signer's certificate, and the encryption certificate it names, as a harvest.
        let known: std::collections::HashSet<String> =
            store.entries().into_iter().map(|e| e.fingerprint).collect();
        for (cert, r) in record_signer(store, s, pathcache::now()) {
            r?;
            out.push(Imported {
                new: !known.contains(&certs::fingerprint(&cert)),
                cert,
                harvested: true,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::data(format!(
            "message has no valid signature by its From address ({}): nothing imported",
            processed.status.x_smime_status()
        )));
    }
    // The intermediates the signatures carried, as a harvest keeps them: without them the
    // signer's path may not reach an anchor.
    let mut carried = carried_certificates(data);
    carried.extend(carried_certificates(&processed.output));
    for ca in carried.iter().filter(|c| store::is_ca(c)) {
        store.add(ca, "import")?;
    }
    Ok(out)
}

/// Certificates carried by the signatures of a message (multipart/signed signature parts and
/// opaque signed-data parts, at any depth): the intermediates a harvested signer needs.
fn carried_certificates(message: &[u8]) -> Vec<X509> {
    fn walk(p: &mailparse::ParsedMail<'_>, depth: usize, out: &mut Vec<X509>) {
        let t = p.ctype.mimetype.to_ascii_lowercase();
        if t.ends_with("pkcs7-signature") || t.ends_with("pkcs7-mime") {
            if let Ok(der) = p.get_body_raw() {
                if let Ok(cms) = openssl::cms::CmsContentInfo::from_der(&der) {
                    out.extend(ossl::embedded_certs(&cms));
                }
            }
        }
        if depth < 8 {
            for c in &p.subparts {
                walk(c, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(parsed) = crate::mime::parse_mail(message) {
        walk(&parsed, 0, &mut out);
    }
    let _ = openssl::error::ErrorStack::get();
    out
}

/// Records one verified signer in `store`: its certificate and, when its encryption-key
/// preference (covered by the valid signature) names another certificate for the same
/// address, that one too (Exchange issues separate signing and encryption certificates); and
/// which of them the signer asked, at its signing time, to be encrypted to (without a
/// preference: the signing certificate). Each certificate with how its recording went.
fn record_signer(
    store: &store::Store,
    s: &crate::status::SignerResult,
    now: i64,
) -> Vec<(X509, Result<store::Harvested>)> {
    let Some(cert) = &s.cert else {
        return Vec::new();
    };
    let preferred = s.key_preference.as_ref().filter(|k| {
        k.to_der().ok() != cert.to_der().ok()
            && s.address
                .as_deref()
                .is_some_and(|a| certs::has_address(k, a))
    });
    // A preference naming a certificate the message does not carry names no certificate we
    // have: the signing certificate is then not the one asked for.
    let wanted = match preferred {
        Some(p) => Some(p),
        None if s.key_preference_named && s.key_preference.is_none() => None,
        None => Some(cert),
    };
    std::iter::once(cert)
        .chain(preferred)
        .map(|c| {
            let caps = s.smime_capabilities.as_deref();
            let prefer = wanted.is_some_and(|w| std::ptr::eq(c, w));
            let r = store.harvest_as(c, caps, s.signing_time, now, prefer);
            (c.clone(), r)
        })
        .collect()
}

/// [`harvest`] into the store the settings name (`--certs`, config key `certs`), if any: what
/// every inbound entry point (filter, agent, both watchers) does with a processed message.
pub fn harvest_configured(
    ctx: &crate::pipeline::Context,
    processed: &crate::pipeline::Processed,
    input: Option<&[u8]>,
) {
    if let Some(dir) = &ctx.settings.certs {
        harvest(&store::Store::new(dir.clone()), processed, input);
    }
}

/// Records the certificates of the verified signers of a processed inbound message
/// (`smimed filter` with a configured store), and the encryption certificate each names in its
/// encryption-key preference, with the intermediate CA certificates the
/// message carried (looked for in the input when it was read into memory, and in the processed
/// output, which keeps a multipart/signed found inside an encryption). Failures are logged, never fatal: harvesting
/// must not stop delivery.
pub fn harvest(store: &store::Store, processed: &crate::pipeline::Processed, input: Option<&[u8]>) {
    let mut carried: Option<Vec<X509>> = None;
    for s in processed.harvestable() {
        let mut stored = false;
        for (c, r) in record_signer(store, s, pathcache::now()) {
            match r {
                Ok(r) => {
                    stored = true;
                    log::info!("harvest {}: {r:?}", certs::fingerprint(&c))
                }
                Err(e) => log::warn!("harvest {}: {e}", certs::fingerprint(&c)),
            }
        }
        if !stored {
            continue;
        }
        let carried = carried.get_or_insert_with(|| {
            let mut v = input.map(carried_certificates).unwrap_or_default();
            v.extend(carried_certificates(&processed.output));
            v
        });
        for ca in carried.iter().filter(|c| store::is_ca(c)) {
            if let Err(e) = store.add(ca, "harvest") {
                log::warn!("harvest intermediate {}: {e}", certs::fingerprint(ca));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn key() -> PKey<Private> {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .expect("group");
        PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("ec")).expect("pkey")
    }

    /// A certificate for `cn`, valid from `from` to `until` days from now, signed by `issuer`
    /// (self-signed CA when None).
    fn cert(
        cn: &str,
        k: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        from: i64,
        until: i64,
    ) -> X509 {
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("v3");
        b.set_subject_name(&name).expect("subject");
        b.set_pubkey(k).expect("key");
        let t = |d: i64| Asn1Time::from_unix(pathcache::now() + d * 86_400).expect("time");
        b.set_not_before(&t(from)).expect("nb");
        b.set_not_after(&t(until)).expect("na");
        match issuer {
            None => {
                b.set_issuer_name(&name).expect("issuer");
                b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                    .expect("ext");
                b.sign(k, MessageDigest::sha256()).expect("sign");
            }
            Some((ca, ca_key)) => {
                b.set_issuer_name(ca.subject_name()).expect("issuer");
                let san = SubjectAlternativeName::new()
                    .email(&format!("{cn}@example.org"))
                    .build(&b.x509v3_context(Some(ca), None))
                    .expect("san");
                b.append_extension(san).expect("ext");
                b.append_extension(KeyUsage::new().key_agreement().build().expect("ku"))
                    .expect("ext");
                b.sign(ca_key, MessageDigest::sha256()).expect("sign");
            }
        }
        b.build()
    }

    fn store(anchors: &[&X509]) -> X509Store {
        let mut b = X509StoreBuilder::new().expect("store");
        for a in anchors {
            b.add_cert((*a).clone()).expect("add");
        }
        b.build()
    }

    /// The cache answers only for the same certificate, intermediates and anchors, and only
    /// inside the window in which the whole path is valid.
    #[test]
    fn path_cache_is_keyed_by_anchors_and_bounded_by_the_path_validity() {
        let (ka, kb, ku) = (key(), key(), key());
        // a root valid for 10 more days, another root, a user certificate valid for a year
        let root = cert("Cache Root", &ka, None, -1, 10);
        let other = cert("Other Root", &kb, None, -1, 400);
        let user = cert("carol", &ku, Some((&root, &ka)), -1, 365);
        let good = store(&[&root]);
        let wrong = store(&[&other]);
        let now = pathcache::now();
        let addr = "carol@example.org";
        // a generation nobody else uses
        let g = 0xC0FF_EE00_0000_0000 + u64::from(std::process::id());

        assert_eq!(
            check_for_encryption_cached(&user, addr, &good, &[], now, g),
            Ok(())
        );
        // cached for generation g: even against a store without the root it answers Ok...
        assert_eq!(
            check_for_encryption_cached(&user, addr, &wrong, &[], now, g),
            Ok(())
        );
        // ...but another generation (other anchors) checks the path again
        let r = check_for_encryption_cached(&user, addr, &wrong, &[], now, g + 1);
        assert!(
            r.is_err_and(|e| e.contains("no path")),
            "new anchors checked"
        );
        // past the root's not-after the entry does not answer: the path is checked again
        // (shown with the store that lacks the root: only a real check can refuse)
        let later = now + 20 * 86_400;
        let r = check_for_encryption_cached(&user, addr, &wrong, &[], later, g);
        assert!(
            r.is_err_and(|e| e.contains("no path")),
            "window of the path"
        );
        // what is not the path is always checked: the address
        let r = check_for_encryption_cached(&user, "mallory@example.org", &good, &[], now, g);
        assert!(r.is_err_and(|e| e.contains("not issued")));
    }
}
