//! Building the MIME entities smimed sends: the content to protect turned into 7-bit, CRLF
//! canonical form (RFC 8551 §3.1.1-§3.1.3), multipart/signed with protocol and micalg,
//! application/pkcs7-mime for signed-data, enveloped-data and authEnveloped-data.
//!
//! Invariants: what is signed is exactly the bytes placed in the message (no re-folding after
//! signing); every line of a signed part is 7-bit, at most 998 octets, does not start with
//! "From " and has no trailing blank, so that no MTA or mbox on the way changes it; text bodies
//! that need it are re-encoded quoted-printable, other bodies base64; already-encoded bodies are
//! left alone unless they break those rules (then decoded and encoded again); multiparts are
//! rewritten part by part; a signed or encrypted entity inside is never rewritten.

use base64::Engine;

use crate::mime;

/// Nesting of multiparts / message/rfc822 rewritten; deeper ones are base64-wrapped whole.
const MAX_DEPTH: usize = 32;

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Whether a body written as-is (7bit/8bit/binary) would not survive transport unchanged.
fn needs_encoding(body: &[u8]) -> bool {
    lines(body).any(|l| {
        l.len() > 998
            || l.starts_with(b"From ")
            || l.last().is_some_and(|&b| b == b' ' || b == b'\t')
            || l.iter().any(|&b| b >= 0x80 || b == 0 || b == b'\r')
    })
}

/// Base64 with CRLF line breaks every 76 characters.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 38 + 2);
    for chunk in b64.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Quoted-printable text (RFC 2045 §6.7) whose lines are safe where a multipart holds them:
/// a line starting "From " gets its F encoded, so that no mbox writer adds a ">", and a line
/// starting with "-" gets it encoded, so that no line the encoder writes (a soft break can put
/// one right before "--XYZ" of the text) is a delimiter of the enclosing multipart (RFC 2046
/// §5.1.1). Lines are wrapped at 74 so that such an escape keeps them within 76.
fn quoted_printable_text(body: &[u8]) -> Vec<u8> {
    use quoted_printable::{InputMode, Options};
    let qp = quoted_printable::encode_with_options(
        mime::canonical_crlf(body),
        Options::default()
            .input_mode(InputMode::Text)
            .line_length_limit(74),
    );
    let qp = qp.as_bytes();
    let mut out = Vec::with_capacity(qp.len() + 16);
    let mut at_line_start = true;
    for (i, &b) in qp.iter().enumerate() {
        if at_line_start && qp[i..].starts_with(b"From ") {
            out.extend_from_slice(b"=46");
        } else if at_line_start && b == b'-' {
            out.extend_from_slice(b"=2D");
        } else {
            out.push(b);
        }
        at_line_start = b == b'\n';
    }
    out
}

/// A header field as a signed part carries it, when that can be done without choosing between
/// readers: CRLF line ends, the blanks at the very end of the field (and continuation lines of
/// blanks only after its last text) removed, lines over 998 octets folded before a single
/// blank. A hop that trims trailing blanks or wraps long lines would otherwise change signed
/// bytes.
///
/// Blanks before a fold inside the field, a continuation line of blanks only inside it, and a
/// "field" that starts with a blank (a blank line before a part's first field) are left as they
/// came: readers disagree on them (RFC 5322 unfolding and GMime keep every blank, mutt collapses
/// a fold and the blanks around it into one space; mutt ends a header at a line starting with a
/// blank, GMime skips it), so rewriting them would pick a reading. The caller then signs the
/// message opaque, which every reader decodes to exactly these bytes.
pub(crate) fn header_field(raw: &[u8]) -> Vec<u8> {
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let trimmed = |l: &[u8]| l.len() - l.iter().rev().take_while(|b| is_blank(b)).count();
    if raw.first().is_some_and(is_blank) {
        return mime::canonical_crlf(raw);
    }
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    while lines.len() > 1 && lines.last().is_some_and(|l| trimmed(l) == 0) {
        lines.pop();
    }
    let Some((last, inner)) = lines.split_last() else {
        return mime::canonical_crlf(raw);
    };
    if inner.iter().any(|l| trimmed(l) < l.len()) {
        return mime::canonical_crlf(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 2);
    for l in inner {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&last[..trimmed(last)]);
    out.extend_from_slice(b"\r\n");
    super::folded_with(&out, false).into_owned()
}

/// An outer header field (outside the signature) made safe for the message's structure: a
/// continuation line of blanks only would become the empty line that ends the header once a
/// hop trims it, so such lines are dropped.
pub(crate) fn outer_field(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let blank_line = |l: &[u8]| {
        let l = l.strip_suffix(b"\n").unwrap_or(l);
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        !l.is_empty() && l.iter().all(|&b| b == b' ' || b == b'\t')
    };
    let mut lines = raw.split_inclusive(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    if !lines.clone().any(blank_line) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = first.to_vec();
    for l in lines.filter(|l| !blank_line(l)) {
        out.extend_from_slice(l);
    }
    std::borrow::Cow::Owned(out)
}

/// The entity with its header fields made safe ([`header_field`]) and its body as it is, CRLF.
fn clean_header(e: &mime::Entity<'_>, entity: &[u8]) -> Vec<u8> {
    if e.separator.is_empty() {
        return mime::canonical_crlf(entity);
    }
    let body = mime::canonical_crlf(e.body);
    let mut out = Vec::with_capacity(body.len() + 1024);
    for f in &e.fields {
        out.extend_from_slice(&header_field(&f.raw));
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

fn with_cte(fields: &[mime::Field], cte: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| !f.is("Content-Transfer-Encoding")) {
        out.extend_from_slice(&header_field(&f.raw));
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    out
}

/// One body part of a multipart, split at its boundary lines.
struct Multipart<'a> {
    preamble: &'a [u8],
    parts: Vec<&'a [u8]>,
    epilogue: &'a [u8],
}

fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Multipart<'a>> {
    let delim = format!("--{boundary}");
    let mut starts = Vec::new(); // (line start, line end incl. EOL, is_close)
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        let trimmed = {
            let mut l = line;
            while let Some((&last, rest)) = l.split_last() {
                if matches!(last, b'\n' | b'\r' | b' ' | b'\t') {
                    l = rest;
                } else {
                    break;
                }
            }
            l
        };
        if let Some(rest) = trimmed.strip_prefix(delim.as_bytes()) {
            if rest.is_empty() {
                starts.push((pos, end, false));
            } else if rest == b"--" {
                starts.push((pos, end, true));
                break;
            }
        }
        pos = end;
    }
    // A multipart whose close delimiter is missing ends with the body, as mail readers take it.
    let close = match starts.iter().position(|s| s.2) {
        Some(c) => c,
        None => {
            starts.push((body.len(), body.len(), true));
            starts.len() - 1
        }
    };
    if close == 0 {
        return None;
    }
    let strip_eol = |s: &'a [u8]| -> &'a [u8] {
        let s = s.strip_suffix(b"\n").unwrap_or(s);
        s.strip_suffix(b"\r").unwrap_or(s)
    };
    let mut parts = Vec::new();
    for w in starts[..=close].windows(2) {
        parts.push(strip_eol(&body[w[0].1..w[1].0]));
    }
    Some(Multipart {
        preamble: strip_eol(&body[..starts[0].0]),
        parts,
        epilogue: &body[starts[close].1..],
    })
}

/// A multipart entity rewritten part by part (None when its body has no parts to split).
fn multipart_seven_bit(
    e: &mime::Entity<'_>,
    ct: &mailparse::ParsedContentType,
    depth: usize,
) -> Option<Vec<u8>> {
    let boundary = ct.params.get("boundary")?;
    let mp = split_multipart(e.body, boundary)?;
    let mut out = Vec::new();
    // The preamble, like the epilogue, is for readers without MIME; one that would not
    // survive transport unchanged ("From " at a line start, trailing blanks, 8-bit) is left
    // out rather than let an MTA or mbox break the signature.
    if !mp.preamble.is_empty() && !needs_encoding(mp.preamble) {
        out.extend_from_slice(&mime::canonical_crlf(mp.preamble));
        out.extend_from_slice(b"\r\n");
    }
    // In a multipart/digest, a part without Content-Type is message/rfc822 (RFC 2046 §5.1.5).
    let digest = ct.mimetype.eq_ignore_ascii_case("multipart/digest");
    for p in mp.parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&seven_bit_at(p, depth + 1, digest));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    if !needs_encoding(mp.epilogue) {
        out.extend_from_slice(&mime::canonical_crlf(mp.epilogue));
    }
    // 7bit only when it is: a part kept as it came (a signed or an 8-bit header that cannot
    // be rewritten) may leave 8-bit bytes (RFC 2045 §2.7, §6.2).
    let mut entity = with_cte(&e.fields, cte_for(&out));
    entity.extend_from_slice(b"\r\n");
    entity.extend_from_slice(&out);
    Some(entity)
}

/// The transfer encoding that says what a body holds: 7bit, 8bit, or binary (lines over 998
/// octets).
fn cte_for(body: &[u8]) -> &'static str {
    if lines(body).any(|l| l.len() > 998) {
        "binary"
    } else if body.is_ascii() {
        "7bit"
    } else {
        "8bit"
    }
}

/// The entity (header fields and body, LF or CRLF) in 7-bit, CRLF canonical form.
pub fn seven_bit(entity: &[u8]) -> Vec<u8> {
    seven_bit_at(entity, 0, false)
}

/// `in_digest`: the entity is a part of a multipart/digest, whose default type is
/// message/rfc822 instead of text/plain.
fn seven_bit_at(entity: &[u8], depth: usize, in_digest: bool) -> Vec<u8> {
    let e = mime::split(entity);
    let ct = e.content_type();
    let mimetype = if in_digest && e.first("Content-Type").is_none() {
        String::from("message/rfc822")
    } else {
        ct.mimetype.to_ascii_lowercase()
    };
    let cte = e
        .first("Content-Transfer-Encoding")
        .map(|f| f.value().trim().to_ascii_lowercase())
        .unwrap_or_default();
    // A signature or an encryption inside the content is left as it came: rewriting it would
    // break it (what cannot pass 7-bit then makes the whole message signed opaque).
    if mimetype == "multipart/signed" {
        return clean_header(&e, entity);
    }
    // A CMS object as an attachment: kept as it is when it is 7-bit text (base64); sent raw
    // (binary), it is base64-wrapped below like any other binary part, which keeps its bytes.
    if (mimetype.contains("pkcs7-mime") || mimetype.contains("pkcs7-signature"))
        && !needs_encoding(e.body)
    {
        return clean_header(&e, entity);
    }
    // Multiparts are rewritten part by part even when all 7-bit: a part labelled 8bit or
    // binary inside is relabelled 7bit, as a single part is (an MTA goes by the labels).
    if depth < MAX_DEPTH && mimetype.starts_with("multipart/") {
        if let Some(out) = multipart_seven_bit(&e, &ct, depth) {
            return out;
        }
    }
    // Already encoded by the client: kept, unless it breaks what a signed part needs (a
    // quoted-printable "From " line, trailing blanks or lines over 998 octets, as some
    // encoders leave them; base64 on one long line): then decoded and encoded again.
    if cte == "quoted-printable" {
        if !needs_encoding(e.body) {
            return clean_header(&e, entity);
        }
        let raw = quoted_printable::decode(
            mime::canonical_crlf(e.body),
            quoted_printable::ParseMode::Robust,
        )
        .unwrap_or_else(|_| e.body.to_vec());
        // Text again as quoted-printable (its line breaks are CRLF); anything else as base64,
        // which keeps every byte (an encoded =0A stays a bare LF).
        if mimetype.starts_with("text/") || mimetype.is_empty() {
            let mut out = with_cte(&e.fields, "quoted-printable");
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&quoted_printable_text(&raw));
            return out;
        }
        let mut out = with_cte(&e.fields, "base64");
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&base64_lines(&raw));
        return out;
    }
    if cte == "base64" {
        if !needs_encoding(e.body) {
            return clean_header(&e, entity);
        }
        let mut out = with_cte(&e.fields, "base64");
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&base64_lines(&mime::base64_permissive(e.body)));
        return out;
    }
    if !needs_encoding(e.body) {
        if cte == "8bit" || cte == "binary" {
            // 7-bit content labelled 8bit: say 7bit, so that no MTA converts it on the way.
            let mut out = with_cte(&e.fields, "7bit");
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&mime::canonical_crlf(e.body));
            return out;
        }
        return clean_header(&e, entity);
    }
    if depth < MAX_DEPTH && mimetype == "message/rfc822" {
        let inner = seven_bit_at(e.body, depth + 1, false);
        let mut out = with_cte(&e.fields, cte_for(&inner));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&inner);
        return out;
    }
    if mimetype.starts_with("text/") {
        let mut out = with_cte(&e.fields, "quoted-printable");
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&quoted_printable_text(e.body));
        return out;
    }
    // Anything else written raw (8bit/binary): base64 of its bytes. A multipart, and
    // message/rfc822, partial and external-body (RFC 2046 §5.2), may not be base64-encoded, so
    // those become application/octet-stream. message/global and its kin (RFC 6532 §3.7, RFC
    // 6533) may be encoded and keep their type. Other message types (delivery-status,
    // disposition-notification: RFC 3464 asks for 7bit) are kept as they are, labelled for what
    // they hold:
    // a signature over them alone is then opaque (see `outbound`), and an envelope keeps them
    // whole anyway.
    let mut fields = e.fields.clone();
    if mimetype.starts_with("message/")
        && !mimetype.starts_with("message/global")
        && !matches!(
            mimetype.as_str(),
            "message/rfc822" | "message/partial" | "message/external-body"
        )
    {
        let body = mime::canonical_crlf(e.body);
        let cte = if body
            .split(|&b| b == b'\n')
            .any(|l| l.len() > super::MAX_LINE + 1)
        {
            "binary"
        } else if body.is_ascii() {
            "7bit"
        } else {
            "8bit"
        };
        let mut out = with_cte(&e.fields, cte);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        return out;
    }
    if mimetype.starts_with("multipart/")
        || (mimetype.starts_with("message/") && !mimetype.starts_with("message/global"))
    {
        fields.retain(|f| !f.is("Content-Type"));
        fields.push(mime::Field::new(
            "Content-Type",
            "application/octet-stream",
            b"\r\n",
        ));
    }
    let mut out = with_cte(&fields, "base64");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&base64_lines(e.body));
    out
}

/// A fresh multipart boundary.
pub fn boundary() -> String {
    let mut rnd = [0u8; 12];
    // On the impossible failure of the RNG the boundary is still unique enough per process.
    if openssl::rand::rand_bytes(&mut rnd).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        rnd[..8].copy_from_slice(&(t as u64).to_le_bytes());
    }
    format!("----smimed-{}", crate::certs::hex(&rnd))
}

/// multipart/signed around `signed` (the exact bytes the signature covers) and the detached
/// signature. Returns the entity (Content-Type field, blank line, body), CRLF.
pub fn multipart_signed(signed: &[u8], signature_der: &[u8], micalg: &str) -> Vec<u8> {
    let b = boundary();
    let mut out = Vec::with_capacity(signed.len() + signature_der.len() * 2 + 512);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n \
             micalg={micalg}; boundary=\"{b}\"\r\n\r\n\
             This is a cryptographically signed message in MIME format.\r\n\r\n--{b}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(signed);
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&base64_lines(signature_der));
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// application/pkcs7-mime entity for a CMS object (`smime_type`: signed-data, enveloped-data,
/// authEnveloped-data).
pub fn pkcs7_mime(der: &[u8], smime_type: &str) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Description: S/MIME Cryptographic Message\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&base64_lines(der));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_left_with_8bit_bytes_is_not_labelled_7bit() {
        // An attached message whose header holds raw UTF-8 (which cannot be rewritten): the
        // part and the multipart around it still hold 8-bit bytes, so neither says 7bit.
        let e =
            "Content-Type: multipart/mixed; boundary=\"M\"\n\n--M\nContent-Type: text/plain\n\n\
                 hi\n--M\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n\
                 Subject: Gr\u{fc}\u{df}e\n\nhallo\n--M--\n";
        let out = seven_bit(e.as_bytes());
        let text = String::from_utf8_lossy(&out);
        assert!(!out.is_ascii());
        assert!(
            text.starts_with("Content-Type: multipart/mixed; boundary=\"M\"\r\nContent-Transfer-Encoding: 8bit\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"),
            "{text}"
        );
        // All 7-bit: 7bit.
        let out = seven_bit(b"Content-Type: multipart/mixed; boundary=\"M\"\n\n--M\n\nhi\n--M--\n");
        assert!(String::from_utf8_lossy(&out).contains("Content-Transfer-Encoding: 7bit"));
    }

    #[test]
    fn a_digest_part_without_content_type_is_a_message_not_text() {
        // RFC 2046 §5.1.5: message/rfc822 by default, which may not be quoted-printable; it
        // was encoded as text, and readers saw "charset=3Dutf-8" in the forwarded header.
        let e = "Content-Type: multipart/digest; boundary=\"D\"\n\n--D\n\n\
                 Subject: fwd\nContent-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e\n--D--\n";
        let out = String::from_utf8(seven_bit(e.as_bytes())).expect("ascii");
        assert!(!out.contains("=3D"), "{out}");
        assert!(
            out.contains("--D\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: fwd\r\n"),
            "{out}"
        );
        assert!(out.contains("Gr=C3=BC=C3=9Fe"), "{out}");
        let parsed = mailparse::parse_mail(out.as_bytes()).unwrap();
        let raw = parsed.subparts[0].get_body_raw().unwrap();
        let inner = mailparse::parse_mail(&raw).unwrap();
        assert_eq!(inner.get_body().unwrap().trim_end(), "Grüße");
    }

    #[test]
    fn quoted_printable_lines_never_start_a_delimiter_and_stay_within_76() {
        // A soft break at column 76 put "--XYZ" of the text at the start of a line: the
        // enclosing multipart's delimiter, which cut the part short for every reader.
        let mut body = "ä".to_string() + &"a".repeat(69) + "--XYZ\n";
        body += &("From ".to_string() + &"f".repeat(90) + "\n-- \n--XYZ--\n");
        let qp = quoted_printable_text(body.as_bytes());
        let text = String::from_utf8(qp.clone()).expect("ascii");
        for line in text.split("\r\n") {
            assert!(
                !line.starts_with('-') && !line.starts_with("From "),
                "{text}"
            );
            assert!(line.len() <= 76, "{} characters: {line}", line.len());
        }
        let back = quoted_printable::decode(&qp, quoted_printable::ParseMode::Strict).unwrap();
        assert_eq!(back, mime::canonical_crlf(body.as_bytes()));
        // The whole entity: one part as written, then the second.
        let e = format!(
            "Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\n\
             Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
             {}second line\n--XYZ\nContent-Type: text/plain\n\nsecond part\n--XYZ--\n",
            "ä".to_string() + &"a".repeat(69) + "--XYZ\n"
        );
        let out = seven_bit(e.as_bytes());
        let parsed = mailparse::parse_mail(&out).unwrap();
        assert_eq!(
            parsed.subparts.len(),
            2,
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            parsed.subparts[0].get_body().unwrap(),
            "ä".to_string() + &"a".repeat(69) + "--XYZ\r\nsecond line"
        );
    }

    #[test]
    fn header_lines_lose_trailing_blanks_and_parts_without_header_stay() {
        // Blanks at the end of a field go, with continuation lines of blanks after its text.
        assert_eq!(header_field(b"Subject: x \t\r\n"), b"Subject: x\r\n");
        assert_eq!(header_field(b"Subject: a\n  \n\t\n"), b"Subject: a\r\n");
        // Blanks before a fold inside a field, and lines before the first field, are readings
        // readers disagree on: left as they came (the message is then signed opaque).
        for kept in [
            &b"Content-Type: multipart/mixed; \r\n boundary=b\r\n"[..],
            b"Content-Type: multipart/mixed; boundary=\"ab \r\n cd\"\r\n",
            b"Subject: a\r\n \r\n b\r\n",
            b" \r\n",
        ] {
            assert_eq!(header_field(kept), kept);
        }
        let e = "Content-Type: multipart/mixed; boundary=\"b\"\nSubject: x \n\n\
                 --b\n\nno header here \n--b\nContent-Type: text/plain; charset=us-ascii \n\nhi\n--b--\n";
        let out = String::from_utf8(seven_bit(e.as_bytes())).expect("ascii");
        assert!(
            out.starts_with("Content-Type: multipart/mixed; boundary=\"b\"\r\nSubject: x\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: text/plain; charset=us-ascii\r\n"),
            "{out}"
        );
        // A part with an empty header section: its trailing blank is quoted-printable.
        assert!(out.contains("no header here=20"), "{out}");
        assert!(!out.lines().any(|l| l.ends_with(' ')), "{out}");
        // No header section at all: as it came.
        assert_eq!(seven_bit(b"just text"), b"just text");
        // Long lines fold before a single blank (mutt unfolds a fold and its blanks into one
        // space); a line with only runs of blanks to fold at is left long.
        let long = format!("X-Long: {}\n", "word ".repeat(300).trim_end());
        let folded = String::from_utf8(header_field(long.as_bytes())).expect("ascii");
        assert!(
            folded
                .split("\r\n")
                .all(|l| l.len() <= 998 && !l.ends_with(' ')),
            "{folded}"
        );
        assert_eq!(folded.replace("\r\n", ""), long.trim_end());
        let runs = format!("X-Long: {}\r\n", "word  ".repeat(200).trim_end());
        let f = header_field(runs.as_bytes());
        assert!(
            f.split(|&b| b == b'\n').any(|l| l.len() > 998),
            "left long (signed opaque)"
        );
    }

    #[test]
    fn eight_bit_text_becomes_quoted_printable_and_from_is_escaped() {
        let e = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
                 Gr\u{fc}\u{df}e\nFrom here \nend\n";
        let out = seven_bit(e.as_bytes());
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(out.iter().all(|&b| b < 0x80));
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
        assert!(text.contains("Gr=C3=BC=C3=9Fe\r\n"), "{text}");
        assert!(text.contains("=46rom here=20\r\n"), "{text}");
        assert!(!text.contains("8bit"));
    }

    #[test]
    fn multipart_parts_are_rewritten_one_by_one() {
        let e = "Content-Type: multipart/mixed; boundary=\"xx\"\n\npre\n--xx\n\
                 Content-Type: text/plain\n\nplain ascii\n--xx\n\
                 Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
                 caf\u{e9}\n--xx--\n";
        let out = String::from_utf8(seven_bit(e.as_bytes())).expect("ascii");
        assert!(out.contains("--xx\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--xx\r\n"));
        assert!(!out.contains("8bit"), "{out}");
        assert!(out.contains("caf=C3=A9"), "{out}");
        assert!(out.ends_with("--xx--\r\n"), "{out}");
    }

    #[test]
    fn a_preamble_that_would_not_survive_transport_is_left_out() {
        let mp = |pre: &str| {
            format!(
                "Content-Type: multipart/mixed; boundary=\"xx\"\n\n{pre}\n--xx\n\
                 Content-Type: text/plain\n\nbody\n--xx--\n"
            )
        };
        let kept = String::from_utf8(seven_bit(mp("plain words").as_bytes())).expect("ascii");
        assert!(kept.contains("\r\n\r\nplain words\r\n--xx\r\n"), "{kept}");
        for pre in ["From the preamble", "trailing blank ", "caf\u{e9}"] {
            let out = String::from_utf8_lossy(&seven_bit(mp(pre).as_bytes())).into_owned();
            assert!(!out.contains(pre), "{out}");
            assert!(
                out.contains("\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nbody\r\n--xx--\r\n"),
                "{out}"
            );
        }
    }

    #[test]
    fn ascii_labelled_8bit_is_relabelled_7bit() {
        let e = b"Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\nhello\n";
        assert_eq!(
            seven_bit(e),
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn clean_entity_is_only_canonicalised() {
        let e = b"Content-Type: text/plain\n\nhello\n";
        assert_eq!(seven_bit(e), b"Content-Type: text/plain\r\n\r\nhello\r\n");
    }
}
