//! Certificate helpers shared by trust, keys and verification: names, fingerprints, the e-mail
//! addresses a certificate carries, and reading certificates from any of the formats users have
//! (PEM, DER, PKCS#7 certs-only in DER or PEM, Microsoft .sst). Formats are told from the content,
//! never from a file name.

use openssl::asn1::{Asn1IntegerRef, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509Ref, X509};

use crate::address;
use crate::sst;

/// A certificate read from a trust source, with what that source said about its use.
#[derive(Clone)]
pub struct SourcedCert {
    pub cert: X509,
    /// False when the source restricts the certificate to uses other than e-mail (an .sst's
    /// enhanced-key-usage property without emailProtection, OpenSSL trust settings that reject
    /// emailProtection or trust other uses only).
    pub email_allowed: bool,
    /// Human-readable restriction, for `trust list`.
    pub restriction: Option<String>,
}

impl SourcedCert {
    fn plain(cert: X509) -> Self {
        SourcedCert {
            cert,
            email_allowed: true,
            restriction: None,
        }
    }
}

/// `CN=…, O=…` style rendering of a distinguished name (RFC 4514 order is not needed here;
/// this is for humans and for the Authentication-Results issuer property).
pub fn name_to_string(name: &X509NameRef) -> String {
    let mut parts = Vec::new();
    for e in name.entries() {
        let key = e.object().nid().short_name().unwrap_or("?").to_string();
        let key = if e.object().nid() == Nid::PKCS9_EMAILADDRESS {
            "emailAddress".to_string()
        } else {
            key
        };
        let val = e
            .data()
            .to_string()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| String::from("?"));
        parts.push(format!("{key}={}", printable(&val)));
    }
    parts.join(", ")
}

/// `s` with what a terminal or a line-reading script would take for something else escaped:
/// control characters (a line end would start a line of its own that looks like another
/// certificate's), Unicode format characters (bidi overrides reorder what is shown) and the
/// backslash itself, as `\xHH` or `\u{H}`.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !s.chars().any(odd) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !odd(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Serial number in upper-case hex without separators.
pub fn serial_hex(serial: &Asn1IntegerRef) -> String {
    serial
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_else(|_| String::from("?"))
}

/// SHA-256 fingerprint, lower-case hex.
pub fn fingerprint(cert: &X509Ref) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| hex(&d))
        .unwrap_or_default()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every e-mail address a certificate is issued to: rfc822Name entries of subjectAltName, its
/// SmtpUTF8Mailbox otherNames (RFC 9598), then the legacy emailAddress attributes of the
/// subject. As comparison keys ([`address::key`]), for comparisons and indexes.
pub fn email_addresses(cert: &X509Ref) -> Vec<String> {
    email_addresses_as_written(cert)
        .iter()
        .map(|a| address::key(a))
        .collect()
}

/// [`email_addresses`] as the certificate writes them (a local part is case-sensitive, RFC 5321
/// §2.4: what is shown to people keeps its case); duplicates with the same key are listed once.
pub fn email_addresses_as_written(cert: &X509Ref) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for gn in sans.iter() {
            if let Some(e) = gn.email() {
                push_unique(&mut out, e.trim());
            }
        }
        for gn in sans.iter() {
            if let Some(e) = crate::ossl::smtp_utf8_mailbox(gn) {
                push_unique(&mut out, e.trim());
            }
        }
    }
    for e in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
        if let Ok(s) = e.data().to_string() {
            push_unique(&mut out, s.trim());
        }
    }
    out
}

/// Longest address a mail path can carry (RFC 5321 §4.5.3.1.3: 256 octets with the angle
/// brackets). A certificate's longer "address" is no address anyone can send from or to, and
/// would be a header word too long for a 998-octet line.
const MAX_ADDRESS: usize = 254;

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !s.is_empty() && s.len() <= MAX_ADDRESS && !v.iter().any(|x| address::same(x, s)) {
        v.push(s.to_string());
    }
}

/// Whether `cert` is issued to `addr` (compared by [`address::key`]).
pub fn has_address(cert: &X509Ref, addr: &str) -> bool {
    email_addresses(cert).contains(&address::key(addr))
}

/// `2031-01-26` style date of an ASN.1 time.
pub fn time_to_string(t: &Asn1TimeRef) -> String {
    t.to_string()
}

/// Seconds since the epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Reads every certificate in `data`, whatever the format. Returns an error string naming what
/// was tried when nothing could be read.
pub fn read_certificates(data: &[u8]) -> Result<Vec<SourcedCert>, String> {
    if sst::is_sst(data) {
        return sst::parse(data);
    }
    if looks_like_pem(data) {
        return read_pem(data);
    }
    if X509::from_der(data).is_ok() {
        return read_der_certificates(data);
    }
    if let Some(r) = certs_only(data) {
        return r;
    }
    openssl_sys_clear();
    Err(String::from(
        "not a certificate: neither PEM, DER X.509, PKCS#7 nor a Microsoft serialized store",
    ))
}

/// The PEM labels of a certificate block.
const CERTIFICATE_LABELS: [&str; 3] = ["CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"];

/// Whether a file is meant to hold certificates (so that failing to read it is damage, not a
/// file of another kind): a Microsoft serialized store, PEM with a certificate block (a PKCS#7
/// block may be a signed message, which a folder skips),
/// or DER that starts as an X.509 v3 certificate does (a SEQUENCE whose first element is a
/// SEQUENCE starting with the explicit version tag; CRLs and keys start otherwise). A trust
/// folder fails on such a file instead of skipping it with its good certificates.
pub fn meant_as_certificates(data: &[u8]) -> bool {
    if sst::is_sst(data) {
        return true;
    }
    if looks_like_pem(data) {
        let text = String::from_utf8_lossy(&data[..data.len().min(1 << 20)]);
        return CERTIFICATE_LABELS
            .iter()
            .any(|l| text.contains(&format!("-----BEGIN {l}-----")));
    }
    crate::ber::starts_as_certificate(data)
}

/// One DER certificate, or several one after the other (as `cat a.der b.der` makes them).
/// Anything after them but white space is an error: a certificate that does not parse is never
/// dropped without a word.
fn read_der_certificates(data: &[u8]) -> Result<Vec<SourcedCert>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.iter().all(u8::is_ascii_whitespace) {
        let n = crate::ber::element_len(rest).unwrap_or(rest.len());
        match X509::from_der(&rest[..n]) {
            Ok(c) => out.push(SourcedCert::plain(c)),
            Err(_) => {
                openssl_sys_clear();
                return Err(format!(
                    "DER certificate {} (at byte {}) does not parse",
                    out.len() + 1,
                    data.len() - rest.len()
                ));
            }
        }
        rest = &rest[n..];
    }
    Ok(out)
}

/// The certificates a published blob holds, for the address book (never for trust): DER X.509,
/// a PKCS#7/CMS SignedData, signed (Outlook's userSMIMECertificate, as a GAL holds it and
/// `Get-Mailbox` shows it) or certs-only, its base64 text, or PEM. Empty when there is none.
pub fn published_certificates(v: &[u8]) -> Vec<X509> {
    let out = if let Ok(c) = X509::from_der(v) {
        vec![c]
    } else if let Ok(cms) = openssl::cms::CmsContentInfo::from_der(v) {
        if crate::ossl::content_kind(&cms) == crate::ossl::ContentKind::Signed {
            crate::ossl::embedded_certs(&cms)
        } else {
            Vec::new()
        }
    } else if looks_like_pem(v) {
        read_certificates(v)
            .map(|l| l.into_iter().map(|s| s.cert).collect())
            .unwrap_or_default()
    } else if v
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n\t ".contains(b))
    {
        let text: Vec<u8> = v
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &text) {
            Ok(der) if !der.is_empty() => published_certificates(&der),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    openssl_sys_clear();
    out
}

fn openssl_sys_clear() {
    // Parsing attempts above leave errors on OpenSSL's queue; drain them.
    let _ = openssl::error::ErrorStack::get();
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11)
        .take(64 * 1024)
        .any(|w| w == b"-----BEGIN ")
}

/// The certificates of a PKCS#7/CMS certs-only bundle (.p7b/.p7c: a SignedData without
/// signers). A signed message is refused: the certificates it carries are the sender's choice,
/// never trust anchors. None when `der` is not CMS at all.
fn certs_only(der: &[u8]) -> Option<Result<Vec<SourcedCert>, String>> {
    let cms = openssl::cms::CmsContentInfo::from_der(der).ok()?;
    if crate::ossl::content_kind(&cms) != crate::ossl::ContentKind::Signed {
        return Some(Err(String::from(
            "a CMS structure that is not a certificate bundle",
        )));
    }
    if crate::ossl::signer_count(&cms) > 0 {
        return Some(Err(String::from(
            "a signed message, not a certificate bundle: its certificates are not trusted",
        )));
    }
    let certs = crate::ossl::embedded_certs(&cms);
    if certs.is_empty() {
        return Some(Err(String::from("an empty certificate bundle")));
    }
    Some(Ok(certs.into_iter().map(SourcedCert::plain).collect()))
}

fn read_pem(data: &[u8]) -> Result<Vec<SourcedCert>, String> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(data);
    // A block that does not parse fails the file, naming the block: dropping it without a word
    // leaves a CA missing and its mail "untrusted" for no reason anyone can see.
    for (i, block) in pem_blocks(&text).into_iter().enumerate() {
        let bad = |what: &str| {
            openssl_sys_clear();
            format!("PEM block {} ({}) {what}", i + 1, block.label)
        };
        match block.label.as_str() {
            // OpenSSL's trust settings (`-addreject emailProtection -trustout`) restrict it
            // as `openssl cms -verify` reads them.
            "TRUSTED CERTIFICATE" => {
                let cert = X509::from_pem(block.text.as_bytes())
                    .or_else(|_| X509::from_der(&block.der))
                    .map_err(|_| bad("is not a certificate that parses"))?;
                let mut c = SourcedCert::plain(cert);
                if let Some(Err(why)) = crate::ossl::aux_email_trust(&block.der) {
                    c.email_allowed = false;
                    c.restriction = Some(format!("OpenSSL trust: not for email ({why})"));
                }
                out.push(c);
            }
            l if CERTIFICATE_LABELS.contains(&l) => {
                if let Ok(c) = X509::from_pem(block.text.as_bytes()) {
                    out.push(SourcedCert::plain(c));
                } else if let Ok(c) = X509::from_der(&block.der) {
                    out.push(SourcedCert::plain(c));
                } else if l == "CERTIFICATE" {
                    // A PKCS#7 bundle under the CERTIFICATE label, as Windows' certificate
                    // services write a "Base 64 encoded" chain (certnew.p7b); OpenSSL reads it.
                    match certs_only(&block.der) {
                        Some(Ok(list)) => out.extend(list),
                        Some(Err(e)) => return Err(bad(&format!("is {e}"))),
                        None => return Err(bad("is not a certificate that parses")),
                    }
                } else {
                    return Err(bad("is not a certificate that parses"));
                }
            }
            "PKCS7" | "CMS" => match certs_only(&block.der) {
                Some(Ok(list)) => out.extend(list),
                Some(Err(e)) => return Err(e),
                None => return Err(bad("is not a certificate bundle")),
            },
            _ => {}
        }
    }
    openssl_sys_clear();
    if out.is_empty() {
        Err(String::from("PEM file holds no certificate"))
    } else {
        Ok(out)
    }
}

/// One `-----BEGIN X-----` … `-----END X-----` block.
pub struct PemBlock {
    pub label: String,
    /// The block's text including its armour lines.
    pub text: String,
    /// Its base64 content decoded (empty when it does not decode).
    pub der: Vec<u8>,
}

/// Splits PEM text into its blocks; text between blocks (comments, "Bag Attributes") is skipped.
pub fn pem_blocks(text: &str) -> Vec<PemBlock> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_string();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let block_text = &rest[start..start + end + end_marker.len()];
        let body: String = block_text
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.contains(':'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .unwrap_or_default();
        out.push(PemBlock {
            label,
            text: format!("{block_text}\n"),
            der,
        });
        rest = &rest[start + end + end_marker.len()..];
    }
    out
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn line_ends_escapes_and_bidi_overrides_are_escaped() {
        assert_eq!(printable("CN=bob"), "CN=bob");
        assert_eq!(printable("a\nb\rc\u{1b}[31m"), "a\\x0ab\\x0dc\\x1b[31m");
        assert_eq!(printable("x\\y"), "x\\x5cy");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(printable("B\u{fc}ro"), "B\u{fc}ro");
    }
}
