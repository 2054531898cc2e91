//! The verdict of the inbound pipeline and the only place status header fields are written
//! (`X-Smime-Status`, `Authentication-Results` per RFC 7281) or removed (forgeries, RFC 8601 §5).
//!
//! The words of `X-Smime-Status` are a contract users' Sieve and procmail rules match on:
//! `encryption=none|decrypted|failed`, `signature=none|valid|invalid|untrusted|expired|revoked|
//! mismatch|error`, then `signer=`, and further `key=value` pairs.

use crate::mime::Field;

pub const STATUS_HEADER: &str = "X-Smime-Status";
pub const AR_HEADER: &str = "Authentication-Results";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    None,
    Decrypted,
    Failed,
}

impl Encryption {
    pub fn word(self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::Decrypted => "decrypted",
            Encryption::Failed => "failed",
        }
    }
}

/// A signature verdict, for one signer or for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    None,
    Valid,
    Invalid,
    Untrusted,
    Expired,
    Revoked,
    Mismatch,
    Error,
}

impl Signature {
    pub fn word(self) -> &'static str {
        match self {
            Signature::None => "none",
            Signature::Valid => "valid",
            Signature::Invalid => "invalid",
            Signature::Untrusted => "untrusted",
            Signature::Expired => "expired",
            Signature::Revoked => "revoked",
            Signature::Mismatch => "mismatch",
            Signature::Error => "error",
        }
    }

    /// How bad a verdict is; the message takes its worst signer's verdict, so that one valid
    /// signer among several never makes the message valid.
    pub fn severity(self) -> u8 {
        match self {
            Signature::None => 0,
            Signature::Valid => 1,
            Signature::Mismatch => 2,
            Signature::Expired => 3,
            Signature::Untrusted => 4,
            Signature::Error => 5,
            Signature::Revoked => 6,
            Signature::Invalid => 7,
        }
    }

    /// RFC 7281 result.
    pub fn ar_result(self) -> &'static str {
        match self {
            Signature::None => "none",
            Signature::Valid => "pass",
            Signature::Invalid => "fail",
            Signature::Untrusted
            | Signature::Expired
            | Signature::Revoked
            | Signature::Mismatch => "policy",
            Signature::Error => "permerror",
        }
    }
}

/// The result for one SignerInfo.
#[derive(Debug, Clone)]
pub struct SignerResult {
    pub verdict: Signature,
    /// The signer certificate's address (the one matching From when there is one).
    pub address: Option<String>,
    pub serial: Option<String>,
    pub issuer: Option<String>,
    /// IMAP-style part the signature covers: TEXT for the message root, else 1, 1.2 …
    pub part: String,
    /// Short machine word for why the verdict is not valid.
    pub reason: Option<String>,
    pub digest: String,
    /// Whether a CRL was consulted for this signer's certificate.
    pub revocation_checked: bool,
    /// The signer's certificate, when found.
    pub cert: Option<openssl::x509::X509>,
    /// DER of the signer's SMIMECapabilities attribute, when present.
    pub smime_capabilities: Option<Vec<u8>>,
    /// The signingTime attribute, seconds since the epoch.
    pub signing_time: Option<i64>,
    /// The certificate the signer's encryption-key preference names (Exchange issues separate
    /// signing and encryption certificates), found among the message's certificates.
    pub key_preference: Option<openssl::x509::X509>,
    /// The signer names an encryption certificate (found in the message or not).
    pub key_preference_named: bool,
}

/// The verdict for one message.
#[derive(Debug, Clone)]
pub struct Status {
    pub encryption: Encryption,
    pub signature: Signature,
    pub signers: Vec<SignerResult>,
    /// Further `key=value` pairs, in order (alg, integrity, partial, order, reason…).
    pub extra: Vec<(String, String)>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            encryption: Encryption::None,
            signature: Signature::None,
            signers: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// Keeps a header value a token: letters, digits and `-._@+,:/=`; anything else becomes `-`.
fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._@+,:/=".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An address as it may stand in a status value: as the certificate has it (an internationalised
/// domain in A-labels) when it is an ASCII `local-part@domain` of atext and dots (RFC 5322
/// §3.2.3; it then needs no quoting in a `key=value` list or an RFC 8601 pvalue). None
/// otherwise (an internationalised local part),
/// and None when it holds `=`: a signer's certificate could otherwise put a status word such as
/// `signature=valid` into the field that rules match on. The property is left out rather than
/// another, valid-looking address shown.
fn address_value(a: &str) -> Option<String> {
    let a = &crate::address::with_ascii_domain(a);
    let ok = a.contains('@')
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/?^_`{|}~.@".contains(c));
    ok.then(|| a.to_string())
}

impl Status {
    pub fn add(&mut self, key: &str, value: impl AsRef<str>) {
        let value = token(value.as_ref());
        if let Some(e) = self.extra.iter_mut().find(|(k, _)| k == key) {
            if !e.1.split(',').any(|v| v == value) {
                e.1.push(',');
                e.1.push_str(&value);
            }
        } else {
            self.extra.push((key.to_string(), value));
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `X-Smime-Status` (without the field name).
    pub fn x_smime_status(&self) -> String {
        let mut parts = vec![
            format!("encryption={}", self.encryption.word()),
            format!("signature={}", self.signature.word()),
        ];
        // Each address once, in order: a SignedData may repeat a signer hundreds of times.
        let mut signers: Vec<String> = Vec::new();
        for a in self
            .signers
            .iter()
            .filter_map(|s| s.address.as_deref().and_then(address_value))
        {
            if !signers.contains(&a) {
                signers.push(a);
            }
        }
        if !signers.is_empty() {
            parts.push(format!("signer={}", signers.join(",")));
        }
        for (k, v) in &self.extra {
            parts.push(format!("{k}={v}"));
        }
        parts.join("; ")
    }

    /// The value of `Authentication-Results` (without the field name), RFC 7281.
    pub fn authentication_results(&self, authserv_id: &str) -> String {
        let mut out = authserv_id.to_string();
        if self.signers.is_empty() {
            // A signed layer that could not be read at all has no signer to report.
            out.push_str("; smime=");
            out.push_str(self.signature.ar_result());
            if self.signature != Signature::None {
                out.push_str(" body.smime-part=TEXT");
            }
            return out;
        }
        for s in &self.signers {
            out.push_str(";\n\tsmime=");
            out.push_str(s.verdict.ar_result());
            if let Some(r) = &s.reason {
                out.push_str(&format!(" reason=\"{}\"", quote(r)));
            }
            if let Some(a) = s.address.as_deref().and_then(address_value) {
                out.push_str(&format!(" body.smime-identifier={a}"));
            }
            out.push_str(&format!(" body.smime-part={}", token(&s.part)));
            if let (Some(serial), Some(issuer)) = (&s.serial, &s.issuer) {
                let pair = format!(
                    "body.smime-serial={} body.smime-issuer=\"{}\"",
                    token(serial),
                    quote(issuer)
                );
                // A header line can only break at a space that is already there (a fold
                // added elsewhere would change the quoted name): a pair with a run of more
                // than LONGEST_WORD octets without one (a hostile certificate's issuer or
                // serial) cannot be written within 998-octet lines, and is left out whole.
                if pair.split(' ').all(|w| w.len() <= LONGEST_WORD) {
                    out.push_str("\n\t");
                    out.push_str(&pair);
                }
            }
        }
        out
    }

    /// Both header fields, in the message's line ending, to put first in the output.
    pub fn header_fields(&self, authserv_id: &str, eol: &[u8]) -> Vec<u8> {
        let eol_s = if eol == b"\r\n" { "\r\n" } else { "\n" };
        let mut out = Vec::new();
        let status = fold_long(&self.x_smime_status(), STATUS_HEADER.len() + 2, eol_s);
        out.extend_from_slice(Field::new(STATUS_HEADER, &status, eol).raw.as_slice());
        let ar = fold_at_spaces(
            &self
                .authentication_results(authserv_id)
                .replace('\n', eol_s),
            AR_HEADER.len() + 2,
            eol_s,
        );
        out.extend_from_slice(Field::new(AR_HEADER, &ar, eol).raw.as_slice());
        out
    }
}

/// Folds a status value that would make a line longer than RFC 5322 allows (998 octets; only
/// hostile input gets there, e.g. hundreds of distinct signers): breaks after `;` or `,` so that
/// no line exceeds 78 characters where the words allow. Shorter values are left on one line,
/// so that line-oriented rules (procmail) see every word; `encryption=` and `signature=` always
/// stay on the first line.
fn fold_long(value: &str, prefix: usize, eol: &str) -> String {
    if prefix + value.len() <= 998 {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + value.len() / 32);
    let mut line = prefix;
    let mut rest = value;
    let mut first_words_placed = false;
    while !rest.is_empty() {
        // The next piece: up to and including the next `;` or `,` (and its space).
        let end = rest.find([';', ',']).map_or(rest.len(), |i| {
            i + 1 + usize::from(rest[i + 1..].starts_with(' '))
        });
        let piece = &rest[..end];
        let keep_on_line = line + piece.len() <= 78 || line == prefix || !first_words_placed;
        first_words_placed |= piece.starts_with("signature=");
        if !keep_on_line {
            while out.ends_with(' ') {
                out.pop();
            }
            out.push_str(eol);
            out.push('\t');
            line = 1;
        }
        out.push_str(piece);
        line += piece.len();
        rest = &rest[end..];
    }
    out
}

/// Longest run without a space that an Authentication-Results property may hold: with a tab
/// before it and a `;` after it, still within RFC 5322's 998 octets.
const LONGEST_WORD: usize = 990;

/// Breaks physical lines longer than RFC 5322's 998 octets (a hostile certificate's huge issuer
/// name does that) before existing spaces, so that lines stay near 78 characters: the space is
/// kept, so unfolding gives the same value, also inside a quoted-string. Lines within the
/// limit are left alone.
fn fold_at_spaces(text: &str, prefix: usize, eol: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split(eol).enumerate() {
        if i > 0 {
            out.push_str(eol);
        }
        let first = if i == 0 { prefix } else { 0 };
        if first + line.len() <= 998 {
            out.push_str(line);
            continue;
        }
        let mut len = first;
        let mut rest = line;
        while !rest.is_empty() {
            // The next piece runs up to (not including) the next space after its first byte.
            let end = rest
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map_or(rest.len(), |(j, _)| j);
            let piece = &rest[..end];
            if len > first && len + piece.len() > 78 && piece.starts_with(' ') {
                out.push_str(eol);
                len = 0;
            }
            out.push_str(piece);
            len += piece.len();
            rest = &rest[end..];
        }
    }
    out
}

/// Escapes a quoted-string's content (RFC 5322): backslash and double quote, no line breaks.
/// The inside of an RFC 5322 quoted-string (ASCII only, as RFC 8601 has it): `"` and `\\`
/// escaped, control characters dropped, and every other non-ASCII character written as the
/// RFC 4514 escapes of its UTF-8 bytes (`é` as `\\C3\\A9`, each backslash itself escaped),
/// which is how a distinguished name may spell it.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| !c.is_control()) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\\\{b:02X}"));
                }
            }
        }
    }
    out
}

/// The authserv-id an Authentication-Results value claims (RFC 8601 §2.2): after any CFWS
/// (whitespace and comments, which nest and may hold quoted pairs), a token or a quoted string;
/// a comment, a version or `;` may follow it directly. Lower case; empty when there is none.
pub fn ar_authserv_id(value: &str) -> String {
    let b = value.as_bytes();
    let mut i = skip_cfws(b, 0);
    let mut id = Vec::new();
    if b.get(i) == Some(&b'"') {
        i += 1;
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(&n) = b.get(i + 1) {
                        id.push(n);
                    }
                    i += 2;
                }
                _ => {
                    id.push(c);
                    i += 1;
                }
            }
        }
    } else {
        // RFC 2045's token: up to a tspecial, a space or a control character.
        while let Some(&c) = b.get(i) {
            if c <= b' ' || c == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&c) {
                break;
            }
            id.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&id).to_ascii_lowercase()
}

/// The index of the first byte at or after `i` that is neither whitespace nor inside a comment.
/// An unclosed comment runs to the end.
fn skip_cfws(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(&c) = b.get(i) {
        match c {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            _ if depth > 0 || c.is_ascii_whitespace() => {}
            _ => return i,
        }
        i += 1;
    }
    b.len()
}

/// Whether an Authentication-Results value names `authserv_id` as a word before its first `;`,
/// whatever surrounds it. A looser test than [`ar_authserv_id`], for the removal of forgeries:
/// a consumer that matches these fields with a pattern, or parses comments its own way, must
/// not find our id in a field we did not write. (A foreign field that only mentions our id in
/// a comment is removed too; that loses nothing anyone should trust.)
fn ar_mentions(value: &str, authserv_id: &str) -> bool {
    let head = value.split(';').next().unwrap_or("");
    head.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        // A trailing dot (`mx.test.`, the absolute form of the name) names the same host.
        .any(|w| {
            let w = w.trim_end_matches('.');
            !w.is_empty() && w.eq_ignore_ascii_case(authserv_id.trim_end_matches('.'))
        })
}

/// Whether a header field is one a sender may have forged to pass as ours: every
/// X-Smime-Status, and every Authentication-Results claiming our authserv-id.
/// A field holding a bare CR followed by what reads as a status field (an X-Smime-Status or
/// any Authentication-Results) is one too: Python's email package (and any reader that splits
/// lines on a bare CR) sees a field there.
pub fn is_forged(f: &Field, authserv_id: &str) -> bool {
    if f.is(STATUS_HEADER) {
        return true;
    }
    if f.is(AR_HEADER) {
        let value = f.value();
        let named = ar_authserv_id(&value);
        return named.trim_end_matches('.')
            == authserv_id.trim_end_matches('.').to_ascii_lowercase()
            || ar_mentions(&value, authserv_id);
    }
    // Whatever its value says (it may go on in a continuation line): no real field hides there.
    hidden_after_bare_cr(&f.raw).any(|line| {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let name = line[..colon].trim_ascii_end();
        name.eq_ignore_ascii_case(STATUS_HEADER.as_bytes())
            || name.eq_ignore_ascii_case(AR_HEADER.as_bytes())
    })
}

/// The pieces of a raw field that follow a bare CR (a CR not followed by LF), each up to the
/// next CR or LF.
fn hidden_after_bare_cr(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.iter().enumerate().filter_map(move |(i, &b)| {
        if b != b'\r' || raw.get(i + 1) == Some(&b'\n') {
            return None;
        }
        let rest = &raw[i + 1..];
        let end = rest
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// Removes every forged status field from a field list; returns how many were removed.
pub fn strip_forged(fields: &mut Vec<Field>, authserv_id: &str) -> usize {
    let before = fields.len();
    fields.retain(|f| !is_forged(f, authserv_id));
    before - fields.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_addresses_are_shown_exactly_or_not_at_all() {
        assert_eq!(
            address_value("ceo&x@example.org").as_deref(),
            Some("ceo&x@example.org")
        );
        assert_eq!(
            address_value("o'brien@example.org").as_deref(),
            Some("o'brien@example.org")
        );
        assert_eq!(address_value("b\u{fc}ro@example.org"), None);
        assert_eq!(address_value("a;b@example.org"), None);
        assert_eq!(address_value("a b@example.org"), None);
        // `=` would let a certificate put a status word into the field rules match on
        assert_eq!(address_value("signature=valid@evil.example"), None);
        assert_eq!(
            address_value("Alice.Plus+tag@Example.ORG").as_deref(),
            Some("Alice.Plus+tag@Example.ORG")
        );
    }

    #[test]
    fn quoted_values_are_ascii() {
        let q = quote("O=Q\"uo\\te; x=(y), CN=Caf\u{e9} CA\u{7}");
        assert!(q.is_ascii(), "{q}");
        assert_eq!(q, "O=Q\\\"uo\\\\te; x=(y), CN=Caf\\\\C3\\\\A9 CA");
    }

    #[test]
    fn authserv_id_extraction() {
        assert_eq!(
            ar_authserv_id(" mx.example.org; dkim=pass"),
            "mx.example.org"
        );
        assert_eq!(
            ar_authserv_id("(c) MX.example.org 1; none"),
            "mx.example.org"
        );
        assert_eq!(
            ar_authserv_id("mx.example.org;smime=pass"),
            "mx.example.org"
        );
        // A comment right after the id, nested comments, quoted pairs in comments, a quoted id.
        assert_eq!(ar_authserv_id("mx.test(forged); smime=pass"), "mx.test");
        assert_eq!(ar_authserv_id("((a) b) mx.test; smime=pass"), "mx.test");
        assert_eq!(ar_authserv_id("(a \\) b) mx.test; none"), "mx.test");
        assert_eq!(ar_authserv_id("\"MX.test\" 1; none"), "mx.test");
        assert_eq!(ar_authserv_id("(unclosed mx.test; none"), "");
    }

    #[test]
    fn status_fields_after_a_bare_cr_are_forged() {
        let f = |raw: &[u8]| Field { raw: raw.to_vec() };
        let id = "mx.example.org";
        assert!(is_forged(
            &f(b"Subject: pay\rX-Smime-Status: signature=valid\r\n"),
            id
        ));
        assert!(is_forged(
            &f(b"Subject: pay\rx-smime-status : signature=valid\n"),
            id
        ));
        assert!(is_forged(
            &f(b"Subject: a\rB: c\rAuthentication-Results: mx.example.org; smime=pass\n"),
            id
        ));
        // Its value folded onto the next line (which Python joins to it).
        assert!(is_forged(
            &f(b"Subject: a\rAuthentication-Results:\r\n mx.example.org; smime=pass\n"),
            id
        ));
        assert!(is_forged(
            &f(b"Subject: a\rAuthentication-Results:\r mx.example.org; smime=pass\n"),
            id
        ));
        // A CRLF, and text that is no field, stay.
        assert!(!is_forged(&f(b"Subject: a\r\n X-Smime-Status: x\r\n"), id));
        assert!(!is_forged(&f(b"Subject: a\rX-Smime-Status\n"), id));
    }

    #[test]
    fn forged_results_are_found_whatever_surrounds_our_id() {
        let ar = |v: &str| Field::new("Authentication-Results", v, b"\r\n");
        for v in [
            "mx.test; smime=pass",
            "MX.TEST; smime=pass",
            "mx.test(forged); smime=pass body.smime-identifier=ceo@example.org",
            "((a) b) mx.test; smime=pass",
            "(unclosed mx.test; smime=pass",
            "\"mx.test\"; smime=pass",
            "other.example (for mx.test); smime=pass",
            "mx.test.; smime=pass",
            "MX.TEST..; smime=pass",
            "\"mx\\.test.\"; smime=pass",
            "\"mx.te\\st.\"; smime=pass",
        ] {
            assert!(is_forged(&ar(v), "mx.test"), "{v}");
        }
        for v in [
            "other.example; smime=pass",
            "mx.test.example; smime=pass",
            "other.example; dkim=pass header.d=mx.test",
            "sub.mx.test; smime=pass",
        ] {
            assert!(!is_forged(&ar(v), "mx.test"), "{v}");
        }
        assert!(is_forged(
            &Field::new("X-Smime-Status", "encryption=decrypted", b"\r\n"),
            "mx.test"
        ));
    }

    #[test]
    fn worst_signer_wins() {
        assert!(Signature::Invalid.severity() > Signature::Valid.severity());
        assert!(Signature::Mismatch.severity() > Signature::Valid.severity());
    }

    #[test]
    fn long_status_is_folded_and_short_one_is_not() {
        let short = "encryption=none; signature=valid; signer=a@example.org";
        assert_eq!(fold_long(short, 16, "\r\n"), short);
        let many: Vec<String> = (0..200).map(|i| format!("signer{i}@example.org")).collect();
        let long = format!(
            "encryption=none; signature=mismatch; signer={}; partial=signed",
            many.join(",")
        );
        let folded = fold_long(&long, 16, "\r\n");
        let lines: Vec<&str> = folded.split("\r\n").collect();
        assert!(lines.len() > 10);
        assert!(lines[0].starts_with("encryption=none; signature=mismatch;"));
        assert!(lines.iter().all(|l| l.len() <= 78), "{lines:?}");
        assert!(lines[1..].iter().all(|l| l.starts_with('\t')));
        // Unfolding gives the words back.
        let unfolded: String = folded.replace("\r\n\t", "");
        assert_eq!(unfolded.replace(' ', ""), long.replace(' ', ""));
    }

    #[test]
    fn long_lines_fold_at_spaces() {
        let dn: Vec<String> = (0..100)
            .map(|i| format!("OU=Klarälvdalens unit {i}"))
            .collect();
        let v = format!(
            "mx; smime=policy\n\tbody.smime-issuer=\"{}\"",
            dn.join(", ")
        );
        let folded = fold_at_spaces(&v, 24, "\n");
        assert!(folded.split('\n').all(|l| l.len() <= 998));
        assert!(folded.split('\n').count() > 5);
        // Unfolding (removing the line breaks) gives the value back.
        assert_eq!(folded.replace('\n', ""), v.replace('\n', ""));
        let short = "mx; smime=pass";
        assert_eq!(fold_at_spaces(short, 24, "\n"), short);
    }

    #[test]
    fn an_issuer_that_cannot_be_folded_is_left_out_with_its_serial() {
        // An RFC 4514 name has no spaces: a line can only break inside it by changing it.
        let signer = |issuer: String| SignerResult {
            verdict: Signature::Untrusted,
            address: Some(String::from("a@example.org")),
            serial: Some(String::from("0A")),
            issuer: Some(issuer),
            part: String::from("TEXT"),
            reason: None,
            digest: String::from("sha256"),
            revocation_checked: false,
            cert: None,
            smime_capabilities: None,
            signing_time: None,
            key_preference: None,
            key_preference_named: false,
        };
        let mut st = Status::default();
        let dn: Vec<String> = (0..300).map(|i| format!("OU=unit{i}")).collect();
        st.signers.push(signer(dn.join(",")));
        st.signers
            .push(signer(String::from("CN=Short\\, Inc.,O=x")));
        let ar = st.authentication_results("mx");
        assert_eq!(ar.matches("body.smime-issuer").count(), 1, "{ar}");
        assert_eq!(ar.matches("body.smime-serial").count(), 1, "{ar}");
        assert!(
            ar.contains("body.smime-issuer=\"CN=Short\\\\, Inc.,O=x\""),
            "{ar}"
        );
        let fields = String::from_utf8(st.header_fields("mx", b"\n")).unwrap();
        assert!(fields.lines().all(|l| l.len() <= 998), "{fields}");
    }

    #[test]
    fn status_words() {
        let mut s = Status::default();
        s.add("partial", "encrypted");
        s.add("partial", "signed");
        s.add("partial", "signed");
        assert_eq!(
            s.x_smime_status(),
            "encryption=none; signature=none; partial=encrypted,signed"
        );
        assert_eq!(s.authentication_results("h"), "h; smime=none");
    }
}
