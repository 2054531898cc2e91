//! Trust anchors and CRLs: read from the configured paths (files of any supported format, or
//! folders of them), or the system CA bundle when none is configured; built once into the
//! OpenSSL stores the verifier uses.
//!
//! Every certificate of a trust source is an anchor (X509_V_FLAG_PARTIAL_CHAIN), as in Office 365,
//! whose admins put intermediates into the trusted store they export. With CRLs, the verifier
//! also asks a path up to a self-signed anchor about revocation (`ossl::require_full_chain`),
//! and reads the CAs above a listed intermediate against their issuers' CRLs itself
//! (`verify::revoked_above`), so that a listed intermediate's revocation still counts. A certificate that its
//! store restricts to other uses (an .sst's property 9 without emailProtection, OpenSSL trust
//! settings rejecting emailProtection) is listed but is not an anchor for mail, and no path
//! for mail may pass through it, even when a message carries it: it is in the stores with
//! OpenSSL trust settings that reject it.

use std::path::{Path, PathBuf};

use openssl::ssl::SslFiletype;
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509PurposeId, X509};

use crate::certs::{self, SourcedCert};
use crate::error::{Error, Result};

/// System CA bundles, in the order tried when no trust path is configured.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// One certificate and where it came from.
pub struct Anchor {
    pub cert: SourcedCert,
    pub source: PathBuf,
}

/// The loaded trust configuration.
pub struct TrustStore {
    pub anchors: Vec<Anchor>,
    /// The configured CRLs (also in the stores), read directly for the revocation of a path's
    /// anchor by its issuer (see `verify`).
    pub crls: Vec<X509Crl>,
    /// Store with the email-usable anchors, purpose S/MIME signing, CRLs when configured.
    pub store: X509Store,
    /// Same anchors, CRLs checked for the end certificate only: for when a CRL for a CA on the
    /// path is missing or unusable (`store` checks every certificate of the path).
    pub store_leaf_crl: X509Store,
    /// Same anchors without revocation checking, for when no CRL covers a signer's issuer.
    pub store_no_crl: X509Store,
    /// Store for the encryption side: purpose S/MIME encryption.
    pub store_encrypt: X509Store,
    /// The anchors without a purpose check (CRLs when configured, and without): for signers
    /// whose EKU is anyExtendedKeyUsage, which RFC 8550 §4.4.4 accepts and OpenSSL's S/MIME
    /// purpose does not; verify.rs then checks the key usages itself.
    pub store_any_purpose: X509Store,
    pub store_any_purpose_leaf_crl: X509Store,
    pub store_any_purpose_no_crl: X509Store,
    /// SHA-256 fingerprints of the certificates a trust source restricts from mail: OpenSSL
    /// consults a store's trust settings only for the certificates it takes from the store, so
    /// a restricted end certificate (which comes with the message) is checked by hand.
    pub not_for_mail: std::collections::HashSet<String>,
    /// The system's hashed certificate folder, when it serves as the anchors (no trust path
    /// configured: `anchors` is then empty and OpenSSL reads the issuers it needs from here).
    pub hash_dirs: Vec<PathBuf>,
    /// Unique in the process for every store loaded: results computed against these anchors
    /// (the address book's path cache) are keyed by it, so they never outlive the anchors.
    pub generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl TrustStore {
    /// For verification only: like [`TrustStore::load`], except that without configured trust
    /// paths the hashed folders of OpenSSL's default paths are used through OpenSSL's lookup,
    /// which reads only the issuers a chain needs (parsing the whole system bundle costs more
    /// than the rest of a one-message process).
    pub fn load_for_verify(paths: &[PathBuf], crls: &[PathBuf]) -> Result<TrustStore> {
        if !paths.is_empty() {
            return Self::load(paths, crls);
        }
        let d = DefaultPaths::get()?;
        // The system bundle holds what the hashed system folder beside it holds
        // (update-ca-certificates writes both): when that folder is among the hashed ones,
        // the bundle is not parsed. Any other file is.
        let canonical_dirs: Vec<PathBuf> = d
            .dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect();
        let file = d.file.filter(|f| {
            let Ok(f) = std::fs::canonicalize(f) else {
                return true;
            };
            let system = SYSTEM_BUNDLES
                .iter()
                .any(|b| std::fs::canonicalize(b).is_ok_and(|b| b == f));
            !(system
                && f.parent()
                    .is_some_and(|p| canonical_dirs.iter().any(|d| d == p)))
        });
        let mut anchors = Vec::new();
        if let Some(f) = &file {
            read_default_file(f, &mut anchors);
        }
        Self::build(anchors, crls, &d.dirs)
    }

    /// Reads every trust path (or the certificates of OpenSSL's default paths) and every CRL
    /// file.
    pub fn load(paths: &[PathBuf], crls: &[PathBuf]) -> Result<TrustStore> {
        let mut anchors = Vec::new();
        if paths.is_empty() {
            let d = DefaultPaths::get()?;
            if let Some(f) = &d.file {
                read_default_file(f, &mut anchors);
            }
            for dir in &d.dirs {
                read_hashed(dir, &mut anchors);
            }
        } else {
            for p in paths {
                read_path(p, &mut anchors, true)?;
            }
        }
        // The same certificate from several sources (a bundle and a folder) is listed once;
        // the first source's restriction applies.
        let mut seen = std::collections::HashSet::new();
        anchors.retain(|a| seen.insert(certs::fingerprint(&a.cert.cert)));
        Self::build(anchors, crls, &[])
    }

    fn build(anchors: Vec<Anchor>, crls: &[PathBuf], hash_dirs: &[PathBuf]) -> Result<TrustStore> {
        let mut crl_list = Vec::new();
        for p in crls {
            let data =
                std::fs::read(p).map_err(|e| Error::config(format!("CRL {}: {e}", p.display())))?;
            let list = if data.starts_with(b"-----") {
                let text = String::from_utf8_lossy(&data);
                certs::pem_blocks(&text)
                    .iter()
                    .filter(|b| b.label == "X509 CRL")
                    .filter_map(|b| X509Crl::from_der(&b.der).ok())
                    .collect()
            } else {
                X509Crl::from_der(&data)
                    .map(|c| vec![c])
                    .unwrap_or_default()
            };
            if list.is_empty() {
                return Err(Error::config(format!("CRL {}: not a CRL", p.display())));
            }
            crl_list.extend(list);
        }
        // with_crls: 0 none, 1 the end certificate's, 2 every certificate's of the path.
        let build = |purpose: X509PurposeId, with_crls: u8| -> Result<X509Store> {
            let ssl_err =
                |e: openssl::error::ErrorStack| Error::software(format!("trust store: {e}"));
            let mut b = X509StoreBuilder::new().map_err(ssl_err)?;
            if !hash_dirs.is_empty() {
                let lookup = b.add_lookup(X509Lookup::hash_dir()).map_err(ssl_err)?;
                for dir in hash_dirs.iter().filter_map(|d| d.to_str()) {
                    lookup.add_dir(dir, SslFiletype::PEM).map_err(ssl_err)?;
                }
            }
            for a in &anchors {
                // Duplicates across sources are harmless; ignore "already in store".
                if a.cert.email_allowed {
                    let _ = b.add_cert(a.cert.cert.clone());
                } else if let Some(c) = crate::ossl::rejected_for_email(&a.cert.cert) {
                    // Not an anchor for mail, and no path through it either, even when a
                    // message carries it as an intermediate (as Windows reads the store).
                    let _ = b.add_cert(c);
                }
            }
            let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
            if with_crls > 0 {
                for c in &crl_list {
                    crate::ossl::store_add_crl(&mut b, c).map_err(ssl_err)?;
                }
                // A delta CRL (as AD CS publishes next to its base) adds to its base; without
                // these flags OpenSSL took the newer delta for a whole CRL, and the base's
                // revocations were lost.
                flags |= X509VerifyFlags::CRL_CHECK
                    | X509VerifyFlags::USE_DELTAS
                    | X509VerifyFlags::EXTENDED_CRL_SUPPORT;
                if with_crls > 1 {
                    // A revoked intermediate CA revokes what it issued.
                    flags |= X509VerifyFlags::CRL_CHECK_ALL;
                }
            }
            b.set_flags(flags).map_err(ssl_err)?;
            b.set_purpose(purpose).map_err(ssl_err)?;
            let _ = openssl::error::ErrorStack::get();
            Ok(b.build())
        };
        let has_crls = !crl_list.is_empty();
        let (all, leaf) = if has_crls { (2, 1) } else { (0, 0) };
        let not_for_mail = anchors
            .iter()
            .filter(|a| !a.cert.email_allowed)
            .map(|a| certs::fingerprint(&a.cert.cert))
            .collect();
        Ok(TrustStore {
            not_for_mail,
            store: build(X509PurposeId::SMIME_SIGN, all)?,
            store_leaf_crl: build(X509PurposeId::SMIME_SIGN, leaf)?,
            store_no_crl: build(X509PurposeId::SMIME_SIGN, 0)?,
            store_encrypt: build(X509PurposeId::SMIME_ENCRYPT, 0)?,
            store_any_purpose: build(X509PurposeId::ANY, all)?,
            store_any_purpose_leaf_crl: build(X509PurposeId::ANY, leaf)?,
            store_any_purpose_no_crl: build(X509PurposeId::ANY, 0)?,
            anchors,
            hash_dirs: hash_dirs.to_vec(),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            crls: crl_list,
        })
    }

    /// Whether a trust source restricts `cert` itself from mail: a listed anchor, or one in
    /// the hashed folders OpenSSL's lookup reads (their files under `cert`'s subject hash are
    /// read here, as the lookup would read them).
    pub fn restricted(&self, cert: &openssl::x509::X509Ref) -> bool {
        if self.not_for_mail.is_empty() && self.hash_dirs.is_empty() {
            return false;
        }
        let fp = certs::fingerprint(cert);
        if self.not_for_mail.contains(&fp) {
            return true;
        }
        let h = format!("{:08x}", cert.subject_name_hash());
        self.hash_dirs.iter().any(|dir| {
            (0..)
                .map(|n| dir.join(format!("{h}.{n}")))
                // Regular files only (a FIFO there would block, a folder be read whole), up
                // to the first that is not one, as OpenSSL's lookup goes.
                .take_while(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
                .any(|p| {
                    let mut found = Vec::new();
                    read_path(&p, &mut found, false).is_ok()
                        && found.iter().any(|a| {
                            !a.cert.email_allowed && certs::fingerprint(&a.cert.cert) == fp
                        })
                })
        })
    }

    /// Every anchor certificate, for looking up signer certificates a message does not carry.
    /// Whether CRLs are configured.
    pub fn has_crls(&self) -> bool {
        !self.crls.is_empty()
    }

    pub fn certificates(&self) -> Vec<X509> {
        self.anchors.iter().map(|a| a.cert.cert.clone()).collect()
    }
}

/// Whether a path check failed for a CRL's sake (missing, expired, not yet valid, badly
/// signed, out of scope…) rather than for a revocation or the path itself.
pub fn crl_problem(raw: i32) -> bool {
    matches!(raw, 3 | 6 | 8 | 11 | 12 | 15 | 16 | 33 | 35 | 36 | 44 | 54)
}

/// The anchors without --trust, where OpenSSL's default verify paths find them: the file
/// `$SSL_CERT_FILE`, else the system bundle; and the hashed folders of `$SSL_CERT_DIR` (a
/// list), else /etc/ssl/certs. As in OpenSSL, both are used, a variable set to something that
/// is not there gives nothing, and in a folder only the hash-named files count.
struct DefaultPaths {
    file: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl DefaultPaths {
    fn get() -> Result<DefaultPaths> {
        let env_file = std::env::var_os("SSL_CERT_FILE");
        let env_dir = std::env::var_os("SSL_CERT_DIR");
        let file = match &env_file {
            Some(v) => Some(PathBuf::from(v)).filter(|p| p.is_file()),
            None => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let dirs: Vec<PathBuf> = match &env_dir {
            Some(v) => std::env::split_paths(v).collect(),
            None => vec![PathBuf::from("/etc/ssl/certs")],
        };
        let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| has_hash_links(d)).collect();
        if env_file.is_none() && env_dir.is_none() && file.is_none() && dirs.is_empty() {
            return Err(Error::config(
                "no --trust given and no system CA bundle found",
            ));
        }
        Ok(DefaultPaths { file, dirs })
    }
}

/// The default anchors file (`$SSL_CERT_FILE` or the system bundle): one that does not read is
/// skipped with a warning, as OpenSSL skips it, rather than failing every verification (it is
/// the environment's, not a `--trust` the user gave).
fn read_default_file(f: &Path, out: &mut Vec<Anchor>) {
    if let Err(e) = read_path(f, out, true) {
        log::warn!("ignoring the default anchors file: {e}");
    }
}

/// Whether `name` is an OpenSSL hash link to a certificate (`xxxxxxxx.N`).
fn is_hash_name(name: &str) -> bool {
    matches!(name.split_once('.'), Some((h, n)) if h.len() == 8
        && h.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The certificates of a hashed folder that OpenSSL's lookup finds: for each subject hash,
/// the files `hash.0`, `hash.1`, … up to the first one missing (lower-case hex, as OpenSSL
/// writes the name it looks for), and of those only certificates whose subject has that hash.
/// Other files are not read; a file that does not parse is skipped, as OpenSSL skips it.
fn read_hashed(dir: &Path, out: &mut Vec<Anchor>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut hashes: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".0") && is_hash_name(n))
        .map(|n| n[..8].to_string())
        .filter(|h| h.bytes().all(|b| !b.is_ascii_uppercase()))
        .collect();
    hashes.sort();
    for h in hashes {
        for n in 0.. {
            let p = dir.join(format!("{h}.{n}"));
            if !p.exists() {
                break;
            }
            let mut found = Vec::new();
            if let Err(e) = read_path(&p, &mut found, false) {
                log::info!("skipping {}: {e}", p.display());
            }
            out.extend(
                found
                    .into_iter()
                    .filter(|a| format!("{:08x}", a.cert.cert.subject_name_hash()) == h),
            );
        }
    }
}

/// Whether `dir` holds OpenSSL hash links (`xxxxxxxx.N`).
fn has_hash_links(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .any(|e| is_hash_name(&e.file_name().to_string_lossy()))
}

fn read_path(path: &Path, out: &mut Vec<Anchor>, explicit: bool) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::config(format!("trust {}: {e}", path.display())))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::config(format!("trust {}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        entries.sort();
        let before = out.len();
        let mut skipped = Vec::new();
        for e in entries {
            if e.is_file() {
                // Inside a folder, files that are not certificates (READMEs, hash links to
                // the same files) are skipped with a note rather than failing the whole folder.
                if let Err(err) = read_path(&e, out, false) {
                    // A certificate file with a damaged certificate fails the folder, as it
                    // fails when named alone: its good certificates are not dropped silently.
                    if std::fs::read(&e).is_ok_and(|d| certs::meant_as_certificates(&d)) {
                        return Err(Error::config(format!("trust {}: {err}", e.display())));
                    }
                    log::info!("skipping {}: {err}", e.display());
                    skipped.push(format!("{}: {err}", e.display()));
                }
            }
        }
        // But a folder that gives no anchor at all is a mistake (the wrong folder, files that
        // all fail): every signature would be "untrusted".
        if explicit && out.len() == before {
            return Err(Error::config(format!(
                "trust {}: no certificate in the folder{}",
                path.display(),
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", skipped.join("; "))
                }
            )));
        }
        return Ok(());
    }
    let data =
        std::fs::read(path).map_err(|e| Error::config(format!("trust {}: {e}", path.display())))?;
    match certs::read_certificates(&data) {
        Ok(list) => {
            out.extend(list.into_iter().map(|cert| Anchor {
                cert,
                source: path.to_path_buf(),
            }));
            Ok(())
        }
        Err(e) if explicit => Err(Error::config(format!("trust {}: {e}", path.display()))),
        Err(e) => Err(Error::config(e)),
    }
}

/// `smimed trust list`: one line per certificate.
pub fn list_lines(store: &TrustStore) -> Vec<String> {
    store
        .anchors
        .iter()
        .map(|a| {
            let c = &a.cert.cert;
            let mark = match (&a.cert.restriction, a.cert.email_allowed) {
                (Some(r), _) => format!("\t[{r}]"),
                (None, false) => String::from("\t[not for email]"),
                (None, true) => String::new(),
            };
            format!(
                "{}\t{}\t{}{}",
                certs::fingerprint(c),
                certs::name_to_string(c.subject_name()),
                certs::time_to_string(c.not_after()),
                mark
            )
        })
        .collect()
}
