//! Certificates from vCards (`--vcard PATH`): single `.vcf` files or folders of them, as
//! vdirsyncer and khard keep them (one level of collection folders below the given one). The
//! `KEY` property holding an X.509 certificate is read from vCard 3.0 (`KEY;ENCODING=b;TYPE=X509:`)
//! and 4.0 (`KEY:data:application/pkix-cert;base64,…`, also with MEDIATYPE) through `calcard`.
//!
//! Invariants: read-only; a file that does not parse or a KEY that is not a certificate is
//! skipped with a log line, never an error (an address book full of other contacts is normal);
//! whether a certificate is usable is decided by the address book, not here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use calcard::vcard::{VCardProperty, VCardValue};
use calcard::{Entry, Parser};
use openssl::x509::X509;

use super::{Candidate, CertSource};
use crate::certs;
use crate::error::Result;

/// Folders deeper than this below a configured path are not searched.
const MAX_DEPTH: usize = 2;

/// The configured vCard paths; their certificates are read once per source, on the first
/// lookup, and each file's are parsed again only when the file changed.
pub struct VcardSource {
    paths: Vec<PathBuf>,
    loaded: OnceLock<Vec<(PathBuf, X509)>>,
}

impl VcardSource {
    pub fn new(paths: Vec<PathBuf>) -> VcardSource {
        VcardSource {
            paths,
            loaded: OnceLock::new(),
        }
    }

    fn all(&self) -> &[(PathBuf, X509)] {
        self.loaded.get_or_init(|| {
            let mut out = Vec::new();
            for f in self.files() {
                // Parsed again only when the file changed (see `super::cache`).
                let parse = |d: &[u8]| certificates(&String::from_utf8_lossy(d));
                match super::cache::vcard().get(&f, parse) {
                    Ok(list) => out.extend(list.into_iter().map(|c| (f.clone(), c))),
                    Err(e) => log::warn!("vcard: {}: {e}", f.display()),
                }
            }
            out
        })
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.paths {
            collect(p, 0, &mut out);
        }
        out
    }
}

fn collect(p: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(rd) = std::fs::read_dir(p) else {
            log::warn!("vcard: cannot read folder {}", p.display());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            let hidden = e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if e.is_dir() {
                collect(&e, depth + 1, out);
            } else if e
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case("vcf"))
            {
                out.push(e);
            }
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    } else {
        log::warn!("vcard: {} does not exist", p.display());
    }
}

/// Whether `data` looks like vCard text.
pub fn is_vcard(data: &[u8]) -> bool {
    let head = &data[..data.len().min(512)];
    String::from_utf8_lossy(head)
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCARD")
}

/// Decodes the bytes a KEY value carries: binary from `ENCODING=b`/data: URIs, or text that is
/// a data: URI or bare base64.
fn key_bytes(v: &VCardValue) -> Option<Vec<u8>> {
    match v {
        VCardValue::Binary(d) => Some(d.data.clone()),
        VCardValue::Text(t) => {
            let t = t.trim();
            let b64 = match t.strip_prefix("data:") {
                Some(rest) => rest.split_once(',').map(|(_, b)| b)?,
                None => t,
            };
            let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .ok()
        }
        _ => None,
    }
}

/// Every X.509 certificate in the KEY properties of the vCards in `text`: a certificate, or the
/// certificates of a PKCS#7 (certs-only or signed, as some clients publish a bundle).
pub fn certificates(text: &str) -> Vec<X509> {
    let mut out = Vec::new();
    let mut parser = Parser::new(text);
    loop {
        match parser.entry() {
            Entry::VCard(card) => {
                for e in card.entries.iter().filter(|e| e.name == VCardProperty::Key) {
                    for v in &e.values {
                        if let Some(b) = key_bytes(v) {
                            out.extend(certs::published_certificates(&b));
                        }
                    }
                }
            }
            Entry::Eof => break,
            Entry::InvalidLine(_) => continue,
            _ => continue,
        }
    }
    let _ = openssl::error::ErrorStack::get();
    out
}

impl CertSource for VcardSource {
    fn name(&self) -> &str {
        "vcard"
    }

    fn find(&self, addr: &str) -> Result<Vec<Candidate>> {
        let all = self.all();
        Ok(all
            .iter()
            .filter(|(_, c)| certs::has_address(c, addr))
            .map(|(f, c)| Candidate {
                cert: c.clone(),
                source: format!("vcard {}", f.display()),
                capabilities: None,
                preferred_at: None,
                // The CA certificates its own file carries complete its path.
                chain: all
                    .iter()
                    .filter(|(g, ca)| g == f && super::store::is_ca(ca))
                    .map(|(_, ca)| ca.clone())
                    .collect(),
            })
            .collect())
    }
}
