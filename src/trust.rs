//! Trust anchors and CRLs: read from the configured paths (files of any supported format, or
//! folders of them), or the system CA bundle when none is configured; built once into the
//! OpenSSL stores the verifier uses.
//!
//! Every certificate of a trust source is an anchor (X509_V_FLAG_PARTIAL_CHAIN), as in Office 365,
//! whose admins put intermediates into the trusted store they export. A certificate that its
//! store restricts to other uses (an .sst's property 9 without emailProtection) is listed but is
//! not an anchor for mail.

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
    /// Store with the email-usable anchors, purpose S/MIME signing, CRLs when configured.
    pub store: X509Store,
    /// Same anchors without revocation checking, for when no CRL covers a signer's issuer.
    pub store_no_crl: X509Store,
    /// Store for the encryption side: purpose S/MIME encryption.
    pub store_encrypt: X509Store,
    /// The anchors without a purpose check (CRLs when configured, and without): for signers
    /// whose EKU is anyExtendedKeyUsage, which RFC 8550 §4.4.4 accepts and OpenSSL's S/MIME
    /// purpose does not; verify.rs then checks the key usages itself.
    pub store_any_purpose: X509Store,
    pub store_any_purpose_no_crl: X509Store,
    pub has_crls: bool,
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
    /// paths the system's hashed certificate folder is used through OpenSSL's lookup, which
    /// reads only the issuers a chain needs (parsing the whole system bundle costs more than
    /// the rest of a one-message process). `anchors` is then empty.
    ///
    /// The system's anchors are OpenSSL's: `$SSL_CERT_FILE` and `$SSL_CERT_DIR` when set
    /// (either or both), else the system's hashed folder or bundle; `trust list` shows the same.
    pub fn load_for_verify(paths: &[PathBuf], crls: &[PathBuf]) -> Result<TrustStore> {
        if paths.is_empty() {
            let dirs = system_hash_dirs();
            // The system bundle named in SSL_CERT_FILE (as many environments export it) holds
            // what the hashed system folder beside it holds (update-ca-certificates writes
            // both): when that folder is among the hashed ones, parsing the whole bundle per
            // process is not needed. Any other file, or another folder, and it is read.
            let canonical_dirs: Vec<PathBuf> = dirs
                .iter()
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .collect();
            let file = env_cert_file().filter(|f| {
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
            if file.is_some() || !dirs.is_empty() {
                let mut anchors = Vec::new();
                if let Some(f) = &file {
                    read_path(f, &mut anchors, true)?;
                }
                return Self::build(anchors, crls, &dirs);
            }
        }
        Self::load(paths, crls)
    }

    /// Reads every trust path (or the system's anchors) and every CRL file.
    pub fn load(paths: &[PathBuf], crls: &[PathBuf]) -> Result<TrustStore> {
        let mut anchors = Vec::new();
        if paths.is_empty() {
            let file = env_cert_file();
            let dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
                .map(|v| std::env::split_paths(&v).filter(|d| d.is_dir()).collect())
                .unwrap_or_default();
            if file.is_none() && dirs.is_empty() {
                let bundle = SYSTEM_BUNDLES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        Error::config("no --trust given and no system CA bundle found")
                    })?;
                read_path(&bundle, &mut anchors, true)?;
            }
            if let Some(f) = &file {
                read_path(f, &mut anchors, true)?;
            }
            for d in &dirs {
                read_path(d, &mut anchors, false)?;
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
        let build = |purpose: X509PurposeId, with_crls: bool| -> Result<X509Store> {
            let ssl_err =
                |e: openssl::error::ErrorStack| Error::software(format!("trust store: {e}"));
            let mut b = X509StoreBuilder::new().map_err(ssl_err)?;
            if !hash_dirs.is_empty() {
                let lookup = b.add_lookup(X509Lookup::hash_dir()).map_err(ssl_err)?;
                for dir in hash_dirs.iter().filter_map(|d| d.to_str()) {
                    lookup.add_dir(dir, SslFiletype::PEM).map_err(ssl_err)?;
                }
            }
            for a in anchors.iter().filter(|a| a.cert.email_allowed) {
                // Duplicates across sources are harmless; ignore "already in store".
                let _ = b.add_cert(a.cert.cert.clone());
            }
            let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
            if with_crls {
                for c in &crl_list {
                    crate::ossl::store_add_crl(&mut b, c).map_err(ssl_err)?;
                }
                flags |= X509VerifyFlags::CRL_CHECK;
            }
            b.set_flags(flags).map_err(ssl_err)?;
            b.set_purpose(purpose).map_err(ssl_err)?;
            let _ = openssl::error::ErrorStack::get();
            Ok(b.build())
        };
        let has_crls = !crl_list.is_empty();
        Ok(TrustStore {
            store: build(X509PurposeId::SMIME_SIGN, has_crls)?,
            store_no_crl: build(X509PurposeId::SMIME_SIGN, false)?,
            store_encrypt: build(X509PurposeId::SMIME_ENCRYPT, false)?,
            store_any_purpose: build(X509PurposeId::ANY, has_crls)?,
            store_any_purpose_no_crl: build(X509PurposeId::ANY, false)?,
            anchors,
            has_crls,
            hash_dirs: hash_dirs.to_vec(),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Every anchor certificate, for looking up signer certificates a message does not carry.
    pub fn certificates(&self) -> Vec<X509> {
        self.anchors.iter().map(|a| a.cert.cert.clone()).collect()
    }
}

/// `$SSL_CERT_FILE`, when set to a file (OpenSSL's default anchors file).
fn env_cert_file() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

/// The system's OpenSSL-hashed certificate folders: every folder of `$SSL_CERT_DIR` (a list,
/// as OpenSSL reads it), else /etc/ssl/certs unless `$SSL_CERT_FILE` is set; those that hold
/// hash links.
fn system_hash_dirs() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("SSL_CERT_DIR") {
        Some(v) => std::env::split_paths(&v).collect(),
        None if env_cert_file().is_some() => return Vec::new(),
        None => vec![PathBuf::from("/etc/ssl/certs")],
    };
    dirs.into_iter().filter(|d| has_hash_links(d)).collect()
}

/// Whether `dir` holds OpenSSL hash links (`xxxxxxxx.N`).
fn has_hash_links(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        matches!(name.split_once('.'), Some((h, n)) if h.len() == 8
            && h.bytes().all(|b| b.is_ascii_hexdigit())
            && n.bytes().all(|b| b.is_ascii_digit()))
    })
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
