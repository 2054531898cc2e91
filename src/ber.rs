//! Just enough DER to detach the encrypted content of a large EnvelopedData or
//! AuthEnvelopedData, so that OpenSSL parses only the small structure around it and decrypts the
//! content from our buffer instead of a copy (`d2i` would duplicate tens of megabytes); to
//! take the certificates out of a SignedData, so that each is parsed once per process; to count
//! a SignedData's digest algorithms before OpenSSL builds a digest chain of that length (in DER
//! or BER: the one reader here that follows indefinite lengths); and to read an encryption-key
//! preference attribute.
//!
//! Invariant: apart from that count (a guard), this is an optimisation only. Anything it does not recognise with certainty
//! (indefinite lengths, a constructed encryptedContent, high tag numbers, any length that does not
//! fit) yields `None`, and the caller parses the whole DER the ordinary way. Every offset is
//! checked against the input; nothing here panics.

use std::ops::Range;

/// One TLV: its tag byte, where its content is, and where the whole TLV ends.
#[derive(Debug, Clone, Copy)]
struct Tlv {
    tag: u8,
    start: usize,
    content: usize,
    end: usize,
}

/// The tag, content length and header length of the TLV at `pos` of `data` (DER definite
/// lengths only), whether or not its content is all there.
fn header(data: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *data.get(pos)?;
    if tag & 0x1f == 0x1f {
        return None; // high tag number form: not used by these structures
    }
    let first = *data.get(pos + 1)?;
    if first < 0x80 {
        return Some((tag, usize::from(first), 2));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None; // indefinite length, or absurd
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*data.get(pos + 2 + i)?);
    }
    Some((tag, len, 2 + n))
}

/// Reads the TLV at `pos` of `data`, DER definite lengths only.
fn tlv(data: &[u8], pos: usize) -> Option<Tlv> {
    let (tag, len, hdr) = header(data, pos)?;
    let content = pos.checked_add(hdr)?;
    let end = content.checked_add(len)?;
    if end > data.len() {
        return None;
    }
    Some(Tlv {
        tag,
        start: pos,
        content,
        end,
    })
}

/// The length of the DER element (tag, length, content) at the start of `data`, when it has a
/// definite length that fits.
pub fn element_len(data: &[u8]) -> Option<usize> {
    tlv(data, 0).map(|t| t.end)
}

/// Whether `data` starts as an X.509 v3 certificate does, even if damaged or cut short further
/// on: a SEQUENCE whose first element is a SEQUENCE starting with the explicit version tag
/// (CRLs and private keys start otherwise).
pub fn starts_as_certificate(data: &[u8]) -> bool {
    let Some((0x30, _, h1)) = header(data, 0) else {
        return false;
    };
    let Some((0x30, _, h2)) = header(data, h1) else {
        return false;
    };
    data.get(h1 + h2) == Some(&0xa0)
}

/// The TLVs inside a constructed TLV's content.
fn children(data: &[u8], parent: Tlv) -> Option<Vec<Tlv>> {
    let mut out = Vec::new();
    let mut pos = parent.content;
    while pos < parent.end {
        let t = tlv(&data[..parent.end], pos)?;
        out.push(t);
        pos = t.end;
    }
    Some(out)
}

fn encode(tag: u8, content: &[&[u8]]) -> Vec<u8> {
    let len: usize = content.iter().map(|c| c.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for c in content {
        out.extend_from_slice(c);
    }
    out
}

/// A ContentInfo rewritten without its encrypted content, and where that content is in the
/// original DER.
#[derive(Debug)]
pub struct Detached {
    pub header: Vec<u8>,
    pub content: Range<usize>,
}

/// Splits the encrypted content (a primitive `[0] IMPLICIT OCTET STRING`) out of an
/// EnvelopedData or AuthEnvelopedData ContentInfo.
pub fn detach_encrypted_content(der: &[u8]) -> Option<Detached> {
    let (oid, env_kids) = content_info(der)?;
    // The (auth)encryptedContentInfo is the first SEQUENCE after the recipientInfos SET.
    let set_at = env_kids.iter().position(|t| t.tag == 0x31)?;
    let eci_at = set_at + 1;
    let eci = *env_kids.get(eci_at)?;
    if eci.tag != 0x30 {
        return None;
    }
    let eci_kids = children(der, eci)?;
    let [ctype, alg, content] = eci_kids.as_slice() else {
        return None;
    };
    if ctype.tag != 0x06 || alg.tag != 0x30 || content.tag != 0x80 {
        return None;
    }
    let new_eci = encode(
        0x30,
        &[&der[ctype.start..ctype.end], &der[alg.start..alg.end]],
    );
    let mut parts: Vec<&[u8]> = env_kids
        .iter()
        .take(eci_at)
        .map(|t| &der[t.start..t.end])
        .collect();
    parts.push(&new_eci);
    parts.extend(
        env_kids
            .iter()
            .skip(eci_at + 1)
            .map(|t| &der[t.start..t.end]),
    );
    Some(Detached {
        header: encode_content_info(der, oid, &parts),
        content: content.content..content.end,
    })
}

/// A ContentInfo's contentType and the TLVs inside its content (the SEQUENCE in `[0]
/// EXPLICIT`).
fn content_info(der: &[u8]) -> Option<(Tlv, Vec<Tlv>)> {
    let ci = tlv(der, 0)?;
    if ci.tag != 0x30 {
        return None;
    }
    let ci_kids = children(der, ci)?;
    let [oid, wrapper] = ci_kids.as_slice() else {
        return None;
    };
    if oid.tag != 0x06 || wrapper.tag != 0xa0 {
        return None;
    }
    let w_kids = children(der, *wrapper)?;
    let [inner] = w_kids.as_slice() else {
        return None;
    };
    if inner.tag != 0x30 {
        return None;
    }
    Some((*oid, children(der, *inner)?))
}

/// A ContentInfo with the contentType `oid` (a TLV of `der`) and a content SEQUENCE made of
/// `parts`.
fn encode_content_info(der: &[u8], oid: Tlv, parts: &[&[u8]]) -> Vec<u8> {
    let inner = encode(0x30, parts);
    let wrapper = encode(0xa0, &[&inner]);
    encode(0x30, &[&der[oid.start..oid.end], &wrapper])
}

/// DER of id-signedData's OID (1.2.840.113549.1.7.2), content bytes only.
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// A SignedData ContentInfo rewritten without its `certificates` field, and where each of
/// those certificates is in the original DER.
#[derive(Debug)]
pub struct SplitCerts {
    pub der: Vec<u8>,
    pub certs: Vec<Range<usize>>,
}

/// Takes the certificates out of a SignedData ContentInfo, so that the caller can parse each one
/// once per process (`certcache`) instead of once per message, and hand them to the signature
/// check itself. Nothing that is signed changes: the signature covers the content and the signed
/// attributes, never the certificate set. `None` (parse the ordinary way) for anything else:
/// another content type, no certificates, a certificate choice other than a plain Certificate
/// (attribute certificates and the like), or anything `tlv` does not accept.
pub fn detach_certificates(der: &[u8]) -> Option<SplitCerts> {
    if tlv(der, 0)?.end != der.len() {
        return None;
    }
    let (oid, sd_kids) = content_info(der)?;
    if &der[oid.content..oid.end] != SIGNED_DATA {
        return None;
    }
    // version, digestAlgorithms, encapContentInfo, then certificates [0] IMPLICIT SET OF.
    let at = sd_kids.iter().position(|t| t.tag == 0xa0)?;
    if at != 3 || sd_kids[1].tag != 0x31 || sd_kids[2].tag != 0x30 {
        return None;
    }
    let set = sd_kids[at];
    let certs = children(der, set)?;
    if certs.is_empty() || certs.iter().any(|c| c.tag != 0x30) {
        return None;
    }
    let parts: Vec<&[u8]> = sd_kids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, t)| &der[t.start..t.end])
        .collect();
    Some(SplitCerts {
        der: encode_content_info(der, oid, &parts),
        certs: certs.iter().map(|c| c.start..c.end).collect(),
    })
}

/// DER of rsaEncryption's OID (1.2.840.113549.1.1.1), content bytes only.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The RSAPrivateKey inside an unencrypted PKCS#8 PrivateKeyInfo whose algorithm is
/// rsaEncryption; None for anything else. Lets the caller use OpenSSL's direct RSA parser instead
/// of its generic key decoder, whose set-up dominates the cost of a one-message process.
pub fn pkcs8_rsa_private_key(der: &[u8]) -> Option<&[u8]> {
    let info = tlv(der, 0)?;
    if info.tag != 0x30 || info.end != der.len() {
        return None;
    }
    let kids = children(der, info)?;
    let (version, alg, key) = (kids.first()?, kids.get(1)?, kids.get(2)?);
    if version.tag != 0x02 || alg.tag != 0x30 || key.tag != 0x04 {
        return None;
    }
    let alg_kids = children(der, *alg)?;
    let oid = alg_kids.first()?;
    if oid.tag != 0x06 || &der[oid.content..oid.end] != RSA_ENCRYPTION {
        return None;
    }
    Some(&der[key.content..key.end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_start_is_recognised_even_cut_short() {
        // SEQUENCE (long form) { SEQUENCE { [0] ... }, cut off.
        assert!(starts_as_certificate(&[
            0x30, 0x82, 0x03, 0x00, 0x30, 0x82, 0x02, 0x00, 0xa0
        ]));
        // A PKCS#8 key: SEQUENCE { INTEGER 0, ... }; a CRL: SEQUENCE { SEQUENCE { INTEGER 1 ... }.
        assert!(!starts_as_certificate(&[
            0x30, 0x82, 0x04, 0xbe, 0x02, 0x01, 0x00
        ]));
        assert!(!starts_as_certificate(&[
            0x30, 0x81, 0x90, 0x30, 0x7f, 0x02, 0x01, 0x01
        ]));
        assert!(!starts_as_certificate(b""));
        assert!(!starts_as_certificate(b"-----BEGIN"));
    }

    /// A SignedData ContentInfo with `n` digest algorithms (SHA-256), all in indefinite
    /// lengths when `indefinite`.
    fn signed_data_listing(n: usize, indefinite: bool) -> Vec<u8> {
        let wrap = |tag: u8, content: &[u8]| {
            if indefinite {
                [&[tag, 0x80][..], content, &[0, 0]].concat()
            } else {
                encode(tag, &[content])
            }
        };
        let sha256 = [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
        ];
        let algs: Vec<u8> = (0..n).flat_map(|_| wrap(0x30, &sha256)).collect();
        let econtent = wrap(
            0x30,
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
            ],
        );
        let sd = wrap(
            0x30,
            &[
                &[0x02, 0x01, 0x01][..],
                &wrap(0x31, &algs),
                &econtent,
                &wrap(0x31, &[]),
            ]
            .concat(),
        );
        let oid = [&[0x06, 0x09][..], OID_SIGNED_DATA].concat();
        wrap(0x30, &[&oid[..], &wrap(0xa0, &sd)].concat())
    }

    #[test]
    fn digest_algorithms_are_counted_in_der_and_in_ber() {
        for indefinite in [false, true] {
            let at_limit = signed_data_listing(16, indefinite);
            let over = signed_data_listing(17, indefinite);
            assert_eq!(digest_algorithms(&at_limit, 16), DigestAlgorithms::Within);
            assert_eq!(digest_algorithms(&over, 16), DigestAlgorithms::Over);
            // Cut short or damaged: not a SignedData this can read.
            assert_eq!(digest_algorithms(&over[..12], 16), DigestAlgorithms::Unread);
        }
        // Long lengths with leading zeros, and a high tag number among the parameters.
        let mut long = signed_data_listing(17, false);
        let (_, len, hdr) = header(&long, 0).unwrap();
        let mut lengthy = vec![0x30, 0x88, 0, 0, 0, 0];
        lengthy.extend_from_slice(&(len as u32).to_be_bytes());
        long.splice(0..hdr, lengthy);
        assert_eq!(digest_algorithms(&long, 16), DigestAlgorithms::Over);
        let mut high = signed_data_listing(17, true);
        let pos = high.windows(2).position(|w| w == [0x05, 0x00]).unwrap_or(0);
        high.splice(pos..pos + 2, [0x9f, 0x81, 0x1f, 0x00]);
        assert_eq!(digest_algorithms(&high, 16), DigestAlgorithms::Over);
        // Another content type.
        let mut env = signed_data_listing(1, false);
        let pos = env
            .windows(9)
            .position(|w| w == OID_SIGNED_DATA)
            .unwrap_or(0);
        env[pos + 8] = 0x03;
        assert_eq!(digest_algorithms(&env, 16), DigestAlgorithms::NotSignedData);
        // Deep nesting inside an algorithm's parameters is followed (without recursion).
        let mut deep = signed_data_listing(17, true);
        let pos = deep.windows(2).position(|w| w == [0x05, 0x00]).unwrap_or(0);
        let nest = [[0x30, 0x80].repeat(100_000), [0, 0].repeat(100_000)].concat();
        deep.splice(pos..pos + 2, nest);
        assert_eq!(digest_algorithms(&deep, 16), DigestAlgorithms::Over);
        // An end-of-contents with nothing open is not BER.
        assert_eq!(digest_algorithms(&[0, 0], 0), DigestAlgorithms::Unread);
        assert_eq!(digest_algorithms(b"", 0), DigestAlgorithms::Unread);
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        assert!(detach_encrypted_content(b"").is_none());
        assert!(detach_encrypted_content(&[0x30, 0x80, 0, 0]).is_none());
        assert!(detach_encrypted_content(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(detach_encrypted_content(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_none());
        assert!(detach_certificates(b"").is_none());
        assert!(detach_certificates(&[0x30, 0x80, 0, 0]).is_none());
        assert!(detach_certificates(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_none());
    }

    /// A SignedData made by OpenSSL: the rewrite parses, carries no certificates, and the ranges
    /// are exactly the certificates OpenSSL put in, in order; without certificates: None.
    #[test]
    fn certificates_come_out_of_a_signed_data() {
        use openssl::cms::{CMSOptions, CmsContentInfo};
        use openssl::x509::X509;

        let key = crate::testutil::key();
        let cert = crate::testutil::self_signed("ber test", 1, None, &key);
        let other = crate::testutil::self_signed("ber test, another", 2, None, &key);
        let mut chain = openssl::stack::Stack::new().expect("stack");
        chain.push(other.clone()).expect("push");
        let body = vec![b'x'; 3000];
        let sign = |flags: CMSOptions, certs| {
            CmsContentInfo::sign(Some(&cert), Some(&key), certs, Some(&body), flags)
                .expect("cms sign")
                .to_der()
                .expect("der")
        };
        let der = sign(CMSOptions::BINARY, Some(chain.as_ref()));
        let split = detach_certificates(&der).expect("split");
        let expected = CmsContentInfo::from_der(&der).expect("parse");
        let parsed = CmsContentInfo::from_der(&split.der).expect("parse rewrite");
        let mut got: Vec<&[u8]> = split.certs.iter().map(|r| &der[r.clone()]).collect();
        let (a, b) = (cert.to_der().expect("der"), other.to_der().expect("der"));
        let mut want = vec![a.as_slice(), b.as_slice()];
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // Everything but the certificates is unchanged: the rewrite is the original minus the
        // certificate set's bytes, and OpenSSL reads the same content from both.
        let set_len: usize = split.certs.iter().map(|r| r.len()).sum();
        assert!(der.len() - split.der.len() >= set_len);
        assert!(expected.to_der().expect("der").len() > parsed.to_der().expect("der").len());
        // The same content and a valid signature from both, given the signer's certificate.
        let text = |c: &CmsContentInfo| {
            let mut out = Vec::new();
            let mut st = openssl::stack::Stack::<X509>::new().expect("stack");
            st.push(cert.clone()).expect("push");
            let store = openssl::x509::store::X509StoreBuilder::new()
                .expect("store")
                .build();
            let mut c = CmsContentInfo::from_der(&c.to_der().expect("der")).expect("again");
            c.verify(
                Some(&st),
                Some(&store),
                None,
                Some(&mut out),
                CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
            )
            .expect("verify");
            out
        };
        assert_eq!(text(&expected), body);
        assert_eq!(text(&parsed), body);

        // CMS_NOCERTS: nothing to take out.
        let bare = sign(CMSOptions::BINARY | CMSOptions::CMS_NOCERTS, None);
        assert!(detach_certificates(&bare).is_none());
    }

    #[test]
    fn long_lengths_round_trip() {
        let body = vec![7u8; 300];
        let t = encode(0x04, &[&body]);
        let parsed = tlv(&t, 0).expect("tlv");
        assert_eq!(parsed.end, t.len());
        assert_eq!(&t[parsed.content..parsed.end], body.as_slice());
    }
}

/// What [`digest_algorithms`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithms {
    /// Not a SignedData (another contentType).
    NotSignedData,
    /// A SignedData listing at most the limit.
    Within,
    /// A SignedData listing more than the limit.
    Over,
    /// Not read here (an encoding this reader does not follow): the caller must count on a
    /// canonical encoding (OpenSSL's DER of what it parsed) before verifying.
    Unread,
}

/// Whether a SignedData ContentInfo lists more than `limit` digestAlgorithms, in DER or in BER
/// (indefinite lengths, as streaming writers such as `openssl cms -stream` produce; long
/// lengths with leading zeros; high tag numbers). OpenSSL pushes one digest BIO per algorithm
/// onto a chain it walks for every push: thousands of them take minutes, and then overflow the
/// stack. At most `limit + 1` algorithms are looked at.
pub fn digest_algorithms(data: &[u8], limit: usize) -> DigestAlgorithms {
    // ContentInfo SEQUENCE { contentType OID, [0] { SignedData SEQUENCE { version,
    // digestAlgorithms SET, … } } }
    let Some((_, ci_content)) = ber_constructed(data, 0, 0x30) else {
        return DigestAlgorithms::Unread;
    };
    let oid = match ber_header(data, ci_content) {
        Some(h) if h.tag == 0x06 => h,
        _ => return DigestAlgorithms::Unread,
    };
    let value = oid
        .len
        .and_then(|l| data.get(oid.content..oid.content.checked_add(l)?));
    match value {
        Some(v) if v == OID_SIGNED_DATA => {}
        Some(_) => return DigestAlgorithms::NotSignedData,
        None => return DigestAlgorithms::Unread,
    }
    match count_over(data, ci_content, limit) {
        Some(true) => DigestAlgorithms::Over,
        Some(false) => DigestAlgorithms::Within,
        None => DigestAlgorithms::Unread,
    }
}

fn count_over(data: &[u8], ci_content: usize, limit: usize) -> Option<bool> {
    let wrapper = ber_end(data, ci_content)?;
    let (_, sd_content) = ber_constructed(data, wrapper, 0xa0)?;
    let (_, version) = ber_constructed(data, sd_content, 0x30)?;
    let set = ber_end(data, version)?;
    let (set_hdr, mut pos) = ber_constructed(data, set, 0x31)?;
    let end = match set_hdr.len {
        Some(len) => set_hdr.content.checked_add(len)?,
        None => data.len(),
    };
    let mut count = 0;
    while pos < end && count <= limit {
        if set_hdr.len.is_none() && data.get(pos..pos + 2)? == [0, 0] {
            break;
        }
        pos = ber_end(data, pos)?;
        count += 1;
    }
    Some(count > limit)
}

/// A BER header: the tag, the content length (None: indefinite) and where the content starts.
#[derive(Debug, Clone, Copy)]
struct BerHeader {
    tag: u8,
    len: Option<usize>,
    content: usize,
}

fn ber_header(data: &[u8], pos: usize) -> Option<BerHeader> {
    let tag = *data.get(pos)?;
    let mut p = pos + 1;
    if tag & 0x1f == 0x1f {
        // High tag number: base-128 octets, the last without bit 8 (OpenSSL takes them as ANY).
        let mut n = 0;
        while *data.get(p)? & 0x80 != 0 {
            p += 1;
            n += 1;
            if n > 4 {
                return None;
            }
        }
        p += 1;
    }
    let first = *data.get(p)?;
    p += 1;
    if first == 0x80 {
        // Indefinite length: constructed encodings only.
        return (tag & 0x20 != 0).then_some(BerHeader {
            tag,
            len: None,
            content: p,
        });
    }
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form, leading zero octets allowed (BER; OpenSSL skips them).
        let n = usize::from(first & 0x7f);
        let octets = data.get(p..p.checked_add(n)?)?;
        p += n;
        let mut len = 0usize;
        for &b in octets {
            len = len.checked_mul(256)?.checked_add(usize::from(b))?;
        }
        len
    };
    Some(BerHeader {
        tag,
        len: Some(len),
        content: p,
    })
}

/// The header of the constructed element with tag `tag` at `pos`.
fn ber_constructed(data: &[u8], pos: usize, tag: u8) -> Option<(BerHeader, usize)> {
    let h = ber_header(data, pos)?;
    (h.tag == tag).then_some((h, h.content))
}

/// Where the BER element at `pos` ends, indefinite lengths included (followed without
/// recursion, by counting the end-of-contents octets still expected, as OpenSSL does).
fn ber_end(data: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos;
    let mut open = 0usize;
    loop {
        let h = ber_header(data, p)?;
        match h.len {
            None => {
                open += 1;
                p = h.content;
            }
            Some(len) => {
                p = h.content.checked_add(len)?;
                if p > data.len() {
                    return None;
                }
                if h.tag == 0 && len == 0 {
                    // End-of-contents: closes the innermost indefinite element.
                    open = open.checked_sub(1)?;
                }
            }
        }
        if open == 0 {
            return Some(p);
        }
    }
}

/// id-signedData, 1.2.840.113549.1.7.2 (the OID's content octets).
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// What an encryption-key preference attribute names: SMIMEEncryptionKeyPreference (RFC 8551
/// §2.5.3: `[0]` issuerAndSerialNumber, `[1]` receipentKeyId, `[2]` subjectAltKeyIdentifier) or
/// Microsoft's 1.3.6.1.4.1.311.16.4 (a plain IssuerAndSerialNumber).
#[derive(Debug, PartialEq, Eq)]
pub enum KeyPreference<'a> {
    /// The DER of the issuer Name and of the serial INTEGER.
    IssuerSerial { issuer: &'a [u8], serial: &'a [u8] },
    /// A subjectKeyIdentifier's octets.
    SubjectKeyId(&'a [u8]),
}

/// Reads an encryption-key preference attribute value (its whole DER); None for anything else.
pub fn key_preference(der: &[u8]) -> Option<KeyPreference<'_>> {
    let t = tlv(der, 0)?;
    if t.end != der.len() {
        return None;
    }
    match t.tag {
        0xA0 | 0x30 => {
            let c = children(der, t)?;
            match c.as_slice() {
                [issuer, serial] if issuer.tag == 0x30 && serial.tag == 0x02 => {
                    Some(KeyPreference::IssuerSerial {
                        issuer: der.get(issuer.start..issuer.end)?,
                        serial: der.get(serial.start..serial.end)?,
                    })
                }
                _ => None,
            }
        }
        0xA1 => {
            let c = children(der, t)?;
            let k = c.first().filter(|k| k.tag == 0x04)?;
            Some(KeyPreference::SubjectKeyId(der.get(k.content..k.end)?))
        }
        0x82 => Some(KeyPreference::SubjectKeyId(der.get(t.content..t.end)?)),
        _ => None,
    }
}

#[cfg(test)]
mod key_preference_tests {
    use super::{key_preference, KeyPreference};

    #[test]
    fn the_three_forms_and_microsofts() {
        // [0] IMPLICIT IssuerAndSerialNumber: issuer SEQUENCE {}, serial 0x1001
        let ias = [0xA0, 0x06, 0x30, 0x00, 0x02, 0x02, 0x10, 0x01];
        let want = KeyPreference::IssuerSerial {
            issuer: &[0x30, 0x00],
            serial: &[0x02, 0x02, 0x10, 0x01],
        };
        assert_eq!(key_preference(&ias), Some(want));
        let mut ms = ias;
        ms[0] = 0x30;
        assert!(matches!(
            key_preference(&ms),
            Some(KeyPreference::IssuerSerial { .. })
        ));
        assert_eq!(
            key_preference(&[0x82, 0x02, 0xAB, 0xCD]),
            Some(KeyPreference::SubjectKeyId(&[0xAB, 0xCD]))
        );
        assert_eq!(
            key_preference(&[0xA1, 0x04, 0x04, 0x02, 0xAB, 0xCD]),
            Some(KeyPreference::SubjectKeyId(&[0xAB, 0xCD]))
        );
        // truncated, trailing bytes, wrong inner types
        assert_eq!(key_preference(&ias[..5]), None);
        assert_eq!(key_preference(&[&ias[..], &[0][..]].concat()), None);
        assert_eq!(key_preference(&[0xA0, 0x04, 0x02, 0x00, 0x02, 0x00]), None);
        assert_eq!(key_preference(&[]), None);
    }
}
