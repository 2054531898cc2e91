//! Judging one signer: the cryptographic check from [`crate::ossl::check_signers`], then the path
//! to a trust anchor (with the certificates the message carries), S/MIME signing purpose
//! (emailProtection when EKU is present; digitalSignature or nonRepudiation), validity now,
//! revocation when CRLs are configured, key size, and the signer's address against From.
//!
//! Architecture Invariant: a signer is `valid` only from [`judge`], and only when every check
//! above held. Whether the signature covers the whole message is the pipeline's business.

use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509StoreContext, X509VerifyResult, X509};

use crate::certs;
use crate::ossl::{self, SignerCheck};
use crate::pathcache::{self, PathCache};
use crate::status::{Signature, SignerResult};
use crate::trust::TrustStore;

/// What From says, for comparing with the signer: exactly one From field holding exactly one
/// mailbox, or why not.
#[derive(Debug, Clone)]
pub enum FromAddress {
    One(String),
    /// Several From fields, several mailboxes, a group, or none: no signer can match.
    Ambiguous(&'static str),
}

/// The longest From field parsed (bytes, folding included).
const MAX_FROM_FIELD: usize = 16 * 1024;

/// Reads the From fields of a header section.
pub fn from_address(fields: &[crate::mime::Field]) -> FromAddress {
    let froms: Vec<_> = fields.iter().filter(|f| f.is("From")).collect();
    match froms.as_slice() {
        [] => FromAddress::Ambiguous("no-from"),
        // Longer than any real From: not parsed (mailparse's handling of encoded words is
        // quadratic in their number; a 1.4 MB field took 12 s).
        [one] if one.raw.len() > MAX_FROM_FIELD => FromAddress::Ambiguous("from-unparsable"),
        // A separator mailparse did not split at is still one to mail readers, which then
        // show another sender than the one compared here.
        [one] if crate::mime::separates_addresses(&one.raw) => {
            FromAddress::Ambiguous("several-from-addresses")
        }
        [one] => match one.addresses() {
            Some(list) => {
                let mut singles = Vec::new();
                // An encoded word that decodes to a mailbox in the display name (`=?utf-8?q?
                // Bob_=3Cbob=40evil.example=3E?= <a@x>`): GMime (notmuch) reads the decoded
                // text again and shows that mailbox first.
                let encoded = one.raw.windows(2).any(|w| w == b"=?");
                for a in list.iter() {
                    match a {
                        mailparse::MailAddr::Single(s)
                            if encoded
                                && s.display_name.as_deref().is_some_and(|n| {
                                    (n.contains('<') || n.contains(','))
                                        && other_mailbox_in(n, &s.addr)
                                }) =>
                        {
                            return FromAddress::Ambiguous("several-from-addresses")
                        }
                        mailparse::MailAddr::Single(s) => singles.push(s.addr.clone()),
                        mailparse::MailAddr::Group(_) => {
                            return FromAddress::Ambiguous("from-group")
                        }
                    }
                }
                // An address before the angle-addr that is another mailbox: readers show it.
                let before = crate::mime::address_before_angle(&one.raw);
                let other_before = |a: &str| {
                    before.as_deref().is_some_and(|b| {
                        !crate::address::same(crate::address::cfws_as_blanks(b).trim(), a)
                    })
                };
                match singles.as_slice() {
                    [a] if other_before(a) => FromAddress::Ambiguous("several-from-addresses"),
                    // (Joined by the parser across a comment: an address readers do not show.)
                    [a] if a.contains('@')
                        && crate::address::written_whole(&one.value_undecoded(), a) =>
                    {
                        FromAddress::One(crate::address::plain(a))
                    }
                    [] => FromAddress::Ambiguous("no-from"),
                    [_] => FromAddress::Ambiguous("from-unparsable"),
                    _ => FromAddress::Ambiguous("several-from-addresses"),
                }
            }
            // mailparse cannot read a bare addr-spec whose local part is quoted
            // (`"alice"@example.org`); readers do. Taken only when that is the whole value.
            None => match bare_quoted_addr_spec(&one.value_undecoded()) {
                Some(a) => FromAddress::One(crate::address::plain(&a)),
                None => FromAddress::Ambiguous("from-unparsable"),
            },
        },
        _ => FromAddress::Ambiguous("several-from-fields"),
    }
}

/// Whether `text` (a decoded display name) holds a mailbox other than `addr`.
fn other_mailbox_in(text: &str, addr: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || "<>(),;:\"[]".contains(c))
        .filter(|t| t.contains('@'))
        .any(|t| !crate::address::same(t, addr))
}

/// `value` when it is one addr-spec and nothing else, with a quoted local part and a plain
/// domain (`"alice"@example.org`, `"a b"@example.org`).
fn bare_quoted_addr_spec(value: &str) -> Option<String> {
    // Comments and blanks where RFC 5322 allows them (around the `@`, at either end) go.
    let v = crate::address::cfws_as_blanks(value);
    let v = v.trim();
    let rest = v.strip_prefix('"')?;
    let mut chars = rest.char_indices();
    let end = loop {
        match chars.next()? {
            (_, '\\') => {
                chars.next()?;
            }
            (i, '"') => break i,
            (_, c) if c == '\r' || c == '\n' => return None,
            _ => {}
        }
    };
    let domain = rest[end + 1..].strip_prefix('@')?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii() && !c.is_whitespace())
    };
    domain.split('.').all(label_ok).then(|| v.to_string())
}

/// Minimum RSA/DSA key size accepted for a signature (RFC 8551 §4.3, §6).
const MIN_RSA_BITS: u32 = 2048;

fn chain_error_verdict(err: X509VerifyResult) -> (Signature, String) {
    let raw = err.as_raw();
    let verdict = match raw {
        openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED | openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID => {
            Signature::Expired
        }
        openssl_sys::X509_V_ERR_CERT_REVOKED => Signature::Revoked,
        _ => Signature::Untrusted,
    };
    let reason = match raw {
        openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED => "certificate-expired".to_string(),
        openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID => "certificate-not-yet-valid".to_string(),
        openssl_sys::X509_V_ERR_CERT_REVOKED => "certificate-revoked".to_string(),
        openssl_sys::X509_V_ERR_INVALID_PURPOSE | openssl_sys::X509_V_ERR_CERT_REJECTED => {
            "not-for-email".to_string()
        }
        openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | openssl_sys::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | openssl_sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT => "no-trusted-root".to_string(),
        _ => err
            .error_string()
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
    };
    (verdict, reason)
}

/// Signers' paths found earlier in this process (see [`crate::pathcache`]); the value is whether
/// revocation was checked.
static SIGNER_PATHS: PathCache<bool> = PathCache::new();

/// Verifies the certificate path of `cert`; Ok(revocation checked) or the verdict and reason.
/// Without CRLs a good path is remembered for the next message of the same signer.
fn check_path(
    trust: &TrustStore,
    cert: &X509,
    untrusted: &[X509],
) -> Result<bool, (Signature, String)> {
    // A signer its trust store restricts from mail (OpenSSL checks only the certificates it
    // takes from the store, and this one came with the message).
    if trust.restricted(cert) {
        return Err((Signature::Untrusted, String::from("not-for-email")));
    }
    let key = if trust.has_crls() {
        None
    } else {
        pathcache::key(cert, untrusted, trust.generation)
    };
    if let Some(checked) = key
        .as_ref()
        .and_then(|k| SIGNER_PATHS.get(k, pathcache::now()))
    {
        return Ok(checked);
    }
    match verify_strong(
        (&trust.store, &trust.store_leaf_crl, &trust.store_no_crl),
        trust,
        cert,
        untrusted,
    )? {
        Err(weak) => Err((Signature::Untrusted, weak)),
        Ok(Ok((checked, chain))) => {
            if let Some(k) = key {
                SIGNER_PATHS.put(
                    k,
                    pathcache::window(chain.iter().map(|c| c.as_ref())),
                    checked,
                );
            }
            Ok(checked)
        }
        Ok(Err((res, 0))) if res.as_raw() == openssl_sys::X509_V_ERR_INVALID_PURPOSE => {
            any_eku_path(trust, cert, untrusted).map_err(|e| e.unwrap_or(chain_error_verdict(res)))
        }
        Ok(Err((res, _))) => Err(chain_error_verdict(res)),
    }
}

/// A path check result: Ok(revocation checked, the chain) or Err(error, depth).
type PathResult = Result<(bool, Vec<X509>), (X509VerifyResult, u32)>;

/// How many times a weak path is built again without its weak link.
const WEAK_PATH_RETRIES: usize = 4;

/// [`verify_in`], and the chain it built judged by [`weak_path`]: Err(reason) for a weak path.
/// OpenSSL builds one path; when its weak link came with the message (a cross-certificate from
/// a legacy root next to the one from the current root), the path is built again without it,
/// since another path may be strong.
fn verify_strong(
    stores: (&X509StoreRef, &X509StoreRef, &X509StoreRef),
    trust: &TrustStore,
    cert: &X509,
    untrusted: &[X509],
) -> Result<Result<PathResult, String>, (Signature, String)> {
    let mut pool: Vec<X509> = untrusted.to_vec();
    let mut first_weak: Option<String> = None;
    for _ in 0..=WEAK_PATH_RETRIES {
        let mut res = verify_in(stores, trust, cert, &pool)?;
        // OpenSSL takes the first issuer it finds among the message's certificates: of two
        // with one name (a CA cross-signed by a legacy root and by the current one, as a root
        // migration sends them), the first may lead nowhere. The other order once more.
        if no_issuer(&res) && pool.len() > 1 {
            let mut other = pool.clone();
            other.reverse();
            let again = verify_in(stores, trust, cert, &other)?;
            // A path found (valid or revoked) is an answer; "no issuer" again is not.
            if !no_issuer(&again) {
                (res, pool) = (again, other);
            }
        }
        let Ok((_, chain)) = &res else {
            // Without the weak link there is no path: the weak one is the answer.
            return Ok(first_weak.map_or(Ok(res), Err));
        };
        let Some((reason, culprits)) = weak_path(chain) else {
            return Ok(Ok(res));
        };
        first_weak.get_or_insert(reason);
        let der = |c: &X509| c.to_der().ok();
        let found = culprits.iter().find_map(|&i| {
            let d = chain.get(i).and_then(der)?;
            pool.iter().position(|u| der(u).as_deref() == Some(&d[..]))
        });
        match found {
            Some(pos) => {
                pool.remove(pos);
            }
            None => break,
        }
    }
    Ok(first_weak.map_or_else(|| Err(String::from("weak-path")), Err))
}

/// Runs the path check in a store (with CRLs when configured: for every certificate of the
/// path; when a CA's CRL is missing or unusable, for the end certificate only; without them
/// when no CRL covers its issuer, and then revocation counts as unchecked).
fn verify_in(
    (with_crls, leaf_crl, no_crls): (&X509StoreRef, &X509StoreRef, &X509StoreRef),
    trust: &TrustStore,
    cert: &X509,
    untrusted: &[X509],
) -> Result<PathResult, (Signature, String)> {
    let has_crls = trust.has_crls();
    // Each CA checked on its own, for its own CRL only (no purpose: it is a CA).
    let ca_leaf_crl: &X509StoreRef = &trust.store_any_purpose_leaf_crl;
    let run_with = |store: &X509StoreRef,
                    target: &X509,
                    full: bool|
     -> Result<PathResult, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in untrusted {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, target, &chain, |c| {
            if full {
                crate::ossl::require_full_chain(c);
            }
            c.verify_cert()?;
            if c.error() == X509VerifyResult::OK {
                let built = c
                    .chain()
                    .map(|s| s.iter().map(|x| x.to_owned()).collect())
                    .unwrap_or_default();
                Ok(Ok((true, built)))
            } else {
                Ok(Err((c.error(), c.error_depth())))
            }
        })
    };
    let run_for = |store: &X509StoreRef, target: &X509| run_with(store, target, false);
    let run = |store: &X509StoreRef| run_for(store, cert);
    let sw = |e: openssl::error::ErrorStack| (Signature::Error, format!("verify-failed: {e}"));
    let mut res = run(with_crls).map_err(sw)?;
    // The depth of the first CRL problem on the path as configured (OpenSSL reads the CRLs from
    // the end certificate up and stops at the first).
    let first_problem = match &res {
        Err((e, d)) if has_crls && crate::trust::crl_problem(e.as_raw()) => Some(*d),
        _ => None,
    };
    // Some CRL on the path is missing or unusable: the checks below cover what they can, and
    // revocation counts as unchecked.
    let fell_back =
        matches!(&res, Err((e, _)) if has_crls && crate::trust::crl_problem(e.as_raw()));
    if let Err((e, depth)) = &res {
        if has_crls && *depth > 0 && crate::trust::crl_problem(e.as_raw()) {
            // A CA's CRL is missing or unusable: the end certificate's is checked as before.
            res = run(leaf_crl).map_err(sw)?;
        }
    }
    let res = match res {
        Ok((_, chain)) => Ok((has_crls && !fell_back, chain)),
        Err((e, _)) if has_crls && crate::trust::crl_problem(e.as_raw()) => {
            // No CRL covers this issuer: check the path without revocation, and say so.
            match run(no_crls).map_err(sw)? {
                Ok((_, chain)) => Ok((false, chain)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let (true, Ok((_, chain))) = (fell_back, &res) {
        // Each CA below the anchor against the CRLs there are (its issuer's), on its own: a
        // root's CRL revoking the intermediate counts even when the intermediate's CRL is
        // missing.
        let below_anchor = chain.len().saturating_sub(1);
        for (depth, ca) in chain.iter().enumerate().take(below_anchor).skip(1) {
            if let Err((e, _)) = run_for(ca_leaf_crl, ca).map_err(sw)? {
                if e.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED {
                    return Ok(Err((e, depth as u32)));
                }
            }
        }
    }
    // The path ends at the first anchor, and a trust source may list an intermediate (as an
    // Office 365 .sst does): its own revocation by its issuer's CRL is read on the path up to
    // a self-signed anchor, which also counts as revocation checked when every CRL on it was
    // read. That longer path is asked about revocation only: the path judged (its weak links,
    // its expiry) stays the one that ends at the first anchor.
    let res = match res {
        Ok((checked, chain)) if has_crls => {
            let revoked = |r: &PathResult| matches!(r, Err((e, _)) if e.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED);
            let full = run_with(with_crls, cert, true).map_err(sw)?;
            // A revocation on the path judged counts as it is; one above its anchor is left to
            // the walk below, which weighs every way up (OpenSSL follows one).
            let anchor_depth = chain.len().saturating_sub(1) as u32;
            if revoked(&full) && matches!(full, Err((_, d)) if d < anchor_depth) {
                return Ok(full);
            }
            let above = match chain.last() {
                Some(anchor) if anchor.issued(anchor) != X509VerifyResult::OK => {
                    revoked_above(trust, anchor, untrusted)
                }
                _ => Above::NotAllRead,
            };
            if let Above::Revoked(up) = above {
                let depth = chain.len().saturating_sub(1) + up;
                return Ok(Err((crate::ossl::cert_revoked(), depth as u32)));
            }
            // Every CRL was read: on the longer path by OpenSSL, or below the anchor by
            // OpenSSL (the first problem it met was the anchor's own CRL) and above it here.
            let below_read = matches!(first_problem, Some(d) if d as usize + 1 == chain.len());
            let all = checked || full.is_ok() || (below_read && above == Above::AllRead);
            Ok((all, chain))
        }
        r => r,
    };
    Ok(res)
}

/// Whether a verification result says no issuer was found for some certificate of the path.
fn no_issuer(r: &PathResult) -> bool {
    matches!(r, Err((e, _)) if matches!(
        e.as_raw(),
        openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    ))
}

/// Bounds of the walk above a path's anchor: levels, issuers followed per certificate, the
/// message's certificates looked at in all (each costs a signature check and a path check of
/// at most `HAS_PATH_DEPTH` certificates), and the longest path looked for.
const MAX_ABOVE_ANCHOR: usize = 4;
const MAX_ISSUER_CANDIDATES: usize = 4;
const MAX_ABOVE_CHECKS: usize = 64;
const HAS_PATH_DEPTH: i32 = 8;

/// What the CRLs above a path's anchor say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Above {
    /// Every way up from the anchor meets a revocation (at this depth above it, the anchor 0).
    Revoked(usize),
    /// Some way up is not revoked, and on one such way every CRL up to a self-signed root was
    /// read.
    AllRead,
    /// Some way up is not revoked as far as the CRLs there are go; not all of them were read.
    NotAllRead,
}

/// Whether `x` is self-signed: its own issuer, and its signature made with its own key (a
/// certificate that only names itself as issuer is not).
fn self_signed(x: &X509) -> bool {
    x.issued(x) == X509VerifyResult::OK
        && x.public_key().is_ok_and(|k| x.verify(&k).unwrap_or(false))
}

/// The CRLs above a path's anchor. A trust source may list intermediates (an Office 365 .sst
/// does), and the path OpenSSL builds ends at the first listed one: its revocation by its
/// issuer's CRL, and that issuer's by its own, are read here, up to a self-signed root.
///
/// The issuers are looked for among the anchors and the message's certificates, but only one
/// whose key signed the certificate and that itself has a path to an anchor counts (a sender
/// may put any certificate in a message: a forgery with a CA's name and key, a false root).
/// As RFC 5280 §6 has it, a certificate is revoked above its anchor only when every such
/// issuer leads to a revocation (a retired cross-certificate that its old root revoked does
/// not revoke the CA). OpenSSL itself reads the CRLs (the newest, deltas over their base, names
/// compared as RFC 5280 says, their times), in a store that trusts only that issuer.
fn revoked_above(trust: &TrustStore, anchor: &X509, untrusted: &[X509]) -> Above {
    let mut checks = 0usize;
    let r = above(trust, anchor, untrusted, 0, &mut checks);
    let _ = openssl::error::ErrorStack::get();
    r
}

fn above(
    trust: &TrustStore,
    x: &X509,
    untrusted: &[X509],
    depth: usize,
    checks: &mut usize,
) -> Above {
    if self_signed(x) {
        return Above::AllRead;
    }
    if depth >= MAX_ABOVE_ANCHOR {
        return Above::NotAllRead;
    }
    // Whether a key signed `x`, once per distinct key (forgeries share the real issuer's).
    let mut by_key: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut signed_x = |i: &X509| -> bool {
        // A key whose checks cost what its maker likes is no candidate.
        if crate::ossl::refused_key(i).is_some() {
            return false;
        }
        let Ok(k) = i.public_key() else { return false };
        let der = k.public_key_to_der().unwrap_or_default();
        if let Some((_, ok)) = by_key.iter().find(|(d, _)| *d == der) {
            return *ok;
        }
        let ok = x.verify(&k).unwrap_or(false);
        by_key.push((der, ok));
        ok
    };
    let anchors = trust.certificates();
    // The anchors that issued `x`: trusted as they are, and a sender can neither add nor hide
    // them.
    let mut issuers: Vec<X509> = anchors
        .iter()
        .filter(|i| i.issued(x) == X509VerifyResult::OK && signed_x(i))
        .take(MAX_ISSUER_CANDIDATES)
        .cloned()
        .collect();
    // When none of them is valid now, the message's certificates too: first those an anchor
    // issued (its key checked on their signature: a forgery with a CA's name and key fails
    // there, however many a sender adds), then, within the budget, those with a longer path of
    // their own to an anchor.
    if !issuers.iter().any(valid_now) {
        let mut direct: Vec<&X509> = Vec::new();
        let mut deeper: Vec<&X509> = Vec::new();
        for i in untrusted
            .iter()
            .filter(|i| i.issued(x) == X509VerifyResult::OK)
        {
            if direct.len() >= MAX_ISSUER_CANDIDATES || !signed_x(i) {
                continue;
            }
            let by_anchor = anchors.iter().any(|a| {
                a.issued(i) == X509VerifyResult::OK
                    && crate::ossl::refused_key(a).is_none()
                    && a.public_key().is_ok_and(|k| i.verify(&k).unwrap_or(false))
            });
            if by_anchor {
                direct.push(i);
            } else {
                deeper.push(i);
            }
        }
        issuers.extend(direct.into_iter().cloned());
        for i in deeper {
            if issuers.len() >= 2 * MAX_ISSUER_CANDIDATES || *checks >= MAX_ABOVE_CHECKS {
                break;
            }
            *checks += 1;
            if has_path(trust, i, untrusted) {
                issuers.push(i.clone());
            }
        }
    }
    let _ = openssl::error::ErrorStack::get();
    let mut best: Option<Above> = None;
    let mut revoked_at: Option<usize> = None;
    for issuer in &issuers {
        let here = crl_verdict(trust, x, issuer);
        let branch = match here {
            Some(true) => Above::Revoked(depth),
            _ => match above(trust, issuer, untrusted, depth + 1, checks) {
                Above::Revoked(d) => Above::Revoked(d),
                Above::AllRead if here == Some(false) => Above::AllRead,
                _ => Above::NotAllRead,
            },
        };
        // An issuer out of its validity period can show a revocation, never clear one: it is no
        // way up today (RFC 5280 §6.1.3).
        if !matches!(branch, Above::Revoked(_)) && !valid_now(issuer) {
            continue;
        }
        match branch {
            Above::Revoked(d) => revoked_at = Some(revoked_at.map_or(d, |r| r.min(d))),
            Above::AllRead => best = Some(Above::AllRead),
            Above::NotAllRead => best = best.or(Some(Above::NotAllRead)),
        }
    }
    match (best, revoked_at) {
        (Some(b), _) => b,
        (None, Some(d)) => Above::Revoked(d),
        (None, None) => Above::NotAllRead,
    }
}

/// Whether a certificate is within its validity period now.
fn valid_now(c: &X509) -> bool {
    let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
        return false;
    };
    c.not_before() <= now && c.not_after() >= now
}

/// Whether `cert` has a path to an anchor (no CRLs, no purpose): an issuer above a path's
/// anchor is believed only then.
fn has_path(trust: &TrustStore, cert: &X509, untrusted: &[X509]) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in untrusted {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&trust.store_any_purpose_no_crl, cert, &chain, |c| {
            crate::ossl::path_only(c, HAS_PATH_DEPTH);
            c.verify_cert()
        })
    };
    run().unwrap_or(false)
}

/// Whether the configured CRLs that `issuer` signed revoke `x`: Some(true) revoked, Some(false)
/// read and not revoked, None when there is no usable one (missing, expired, not yet valid).
/// OpenSSL decides, verifying `x` in a store that trusts `issuer` alone and checks the end
/// certificate's CRL. It reads the CRLs before it checks the certificates' own validity times,
/// so an expired `x` or `issuer` still had its CRL read (only revocation is asked here).
fn crl_verdict(trust: &TrustStore, x: &X509, issuer: &X509) -> Option<bool> {
    let build = || -> Result<openssl::x509::store::X509Store, openssl::error::ErrorStack> {
        let mut b = openssl::x509::store::X509StoreBuilder::new()?;
        b.add_cert(issuer.clone())?;
        for crl in &trust.crls {
            crate::ossl::store_add_crl(&mut b, crl)?;
        }
        b.set_flags(
            openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN
                | openssl::x509::verify::X509VerifyFlags::CRL_CHECK
                | openssl::x509::verify::X509VerifyFlags::USE_DELTAS
                | openssl::x509::verify::X509VerifyFlags::EXTENDED_CRL_SUPPORT,
        )?;
        Ok(b.build())
    };
    let store = build().ok()?;
    let none = Stack::new().ok()?;
    let mut ctx = X509StoreContext::new().ok()?;
    let err = ctx
        .init(&store, x, &none, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .ok()?;
    let _ = openssl::error::ErrorStack::get();
    match err.as_raw() {
        openssl_sys::X509_V_OK
        | openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED
        | openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID => Some(false),
        openssl_sys::X509_V_ERR_CERT_REVOKED => Some(true),
        _ => None,
    }
}

/// Whether a CA on `cert`'s path (built without CRLs) is revoked by the CRLs of `trust`, each
/// CA checked on its own: for the address book, when a CRL on the path is missing.
pub fn a_ca_on_the_path_is_revoked(trust: &TrustStore, cert: &X509, untrusted: &[X509]) -> bool {
    let stores = (
        &*trust.store_any_purpose,
        &*trust.store_any_purpose_leaf_crl,
        &*trust.store_any_purpose_no_crl,
    );
    matches!(
        verify_in(stores, trust, cert, untrusted),
        Ok(Err((e, depth))) if depth > 0 && e.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED
    )
}

/// RFC 8550 §4.4.4: an EKU extension must contain emailProtection *or anyExtendedKeyUsage*.
/// OpenSSL's S/MIME purpose rejects the latter, so for such a signer the path is checked with
/// no purpose, then the purposes by hand: the signer's key usage allows signatures
/// (digitalSignature or nonRepudiation), and no CA on the path has an EKU without
/// emailProtection or anyExtendedKeyUsage. Err(None) when the signer has no anyEKU.
fn any_eku_path(
    trust: &TrustStore,
    cert: &X509,
    untrusted: &[X509],
) -> Result<bool, Option<(Signature, String)>> {
    use openssl_sys::{
        X509v3_KU_DIGITAL_SIGNATURE, X509v3_KU_NON_REPUDIATION, XKU_ANYEKU, XKU_SMIME,
    };
    let eku_ok =
        |c: &X509| ossl::ext_key_usage(c).is_none_or(|x| x & (XKU_SMIME | XKU_ANYEKU) != 0);
    let leaf_any = ossl::ext_key_usage(cert).is_some_and(|x| x & XKU_ANYEKU != 0);
    if !leaf_any {
        return Err(None);
    }
    let ku_ok = ossl::key_usage(cert)
        .is_none_or(|k| k & (X509v3_KU_DIGITAL_SIGNATURE | X509v3_KU_NON_REPUDIATION) != 0);
    let not_for_email = || Some((Signature::Untrusted, String::from("not-for-email")));
    if !ku_ok {
        return Err(not_for_email());
    }
    let stores = (
        &*trust.store_any_purpose,
        &*trust.store_any_purpose_leaf_crl,
        &*trust.store_any_purpose_no_crl,
    );
    match verify_strong(stores, trust, cert, untrusted).map_err(Some)? {
        Err(weak) => Err(Some((Signature::Untrusted, weak))),
        Ok(Ok((checked, chain))) => {
            if chain.iter().skip(1).all(eku_ok) {
                Ok(checked)
            } else {
                Err(not_for_email())
            }
        }
        Ok(Err((res, _))) => Err(Some(chain_error_verdict(res))),
    }
}

/// Digest algorithms whose collisions are practical (RFC 6151 for MD5, RFC 6149 for MD2, RFC
/// 6150 for MD4): a signature over one of them may have been moved onto other content. SHA-1
/// stays accepted for legacy mail, as RFC 8551 §2.1 allows receiving agents.
const WEAK_DIGESTS: &[&str] = &["md2", "md4", "md5"];

fn weak_digest(digest: &str) -> Option<String> {
    WEAK_DIGESTS
        .contains(&digest)
        .then(|| format!("weak-digest-{digest}"))
}

/// A weakness in a verified path (signer first, anchor last) that lets someone forge a
/// certificate in it: a certificate signed over a broken digest (a colliding certificate is how
/// the 2008 rogue CA was made), or a CA key under [`MIN_RSA_BITS`] (its signatures can be forged,
/// and with them any certificate it issues). The anchor's own signature is not relied on; the
/// signer's key is judged with the signature ([`weak_key`]).
/// With the reason, the positions in the chain of the certificates a path without the weak
/// link must leave out (tried in order): the certificate signed over the broken digest; for a
/// weak CA key, the certificate it issued above the signer, then the CA's own.
fn weak_path(chain: &[X509]) -> Option<(String, Vec<usize>)> {
    let last = chain.len().saturating_sub(1);
    for (i, c) in chain.iter().enumerate() {
        if i < last {
            let digest = crate::ossl::digest_name(c.signature_algorithm().object().nid());
            if WEAK_DIGESTS.contains(&digest.as_str()) {
                return Some((format!("weak-certificate-digest-{digest}"), vec![i]));
            }
        }
        if i > 0 {
            if let Some(w) = weak_key(c) {
                let culprits = if i >= 2 { vec![i - 1, i] } else { vec![i] };
                return Some((
                    format!("weak-ca-{}", w.trim_start_matches("weak-")),
                    culprits,
                ));
            }
        }
    }
    None
}

fn weak_key(cert: &X509) -> Option<String> {
    let pk = cert.public_key().ok()?;
    match pk.id() {
        // RSASSA-PSS keys are RSA keys (RFC 4055 §1.2).
        Id::RSA | Id::RSA_PSS | Id::DSA if pk.bits() < MIN_RSA_BITS => {
            Some(format!("weak-key-{}", pk.bits()))
        }
        _ => None,
    }
}

/// Judges one signer. `part` is the IMAP part number the signature covers.
pub fn judge(
    check: &SignerCheck,
    message_certs: &[X509],
    trust: &TrustStore,
    from: &FromAddress,
    part: &str,
) -> SignerResult {
    let mut r = SignerResult {
        verdict: Signature::Error,
        address: None,
        serial: check.issuer_serial.as_ref().map(|(_, s)| s.clone()),
        issuer: check.issuer_serial.as_ref().map(|(i, _)| i.clone()),
        part: part.to_string(),
        reason: None,
        digest: check.digest.clone(),
        revocation_checked: false,
        cert: check.cert.clone(),
        smime_capabilities: check.smime_capabilities.clone(),
        key_preference: check.key_preference.clone(),
        key_preference_named: check.key_preference_named,
        signing_time: check.signing_time,
    };
    let Some(cert) = &check.cert else {
        r.reason = Some(String::from("signer-certificate-missing"));
        return r;
    };
    let addrs = certs::email_addresses_as_written(cert);
    r.address = match from {
        FromAddress::One(f) => addrs
            .iter()
            .find(|a| crate::address::same(a, f))
            .or(addrs.first())
            .cloned(),
        FromAddress::Ambiguous(_) => addrs.first().cloned(),
    };
    r.serial = Some(certs::serial_hex(cert.serial_number()));
    r.issuer = Some(
        crate::ossl::name_rfc4514(cert.issuer_name())
            .unwrap_or_else(|| certs::name_to_string(cert.issuer_name())),
    );
    if let Some(why) = &check.key_refused {
        r.verdict = Signature::Untrusted;
        r.reason = Some(why.clone());
        return r;
    }
    if !check.signature_ok {
        r.verdict = Signature::Invalid;
        r.reason = Some(String::from("signature-does-not-match-content"));
        return r;
    }
    match check_path(trust, cert, message_certs) {
        Ok(checked) => r.revocation_checked = checked,
        Err((v, reason)) => {
            r.verdict = v;
            r.reason = Some(reason);
            return r;
        }
    }
    if let Some(w) = weak_key(cert).or_else(|| weak_digest(&check.digest)) {
        r.verdict = Signature::Untrusted;
        r.reason = Some(w);
        return r;
    }
    match from {
        FromAddress::One(f) if addrs.iter().any(|a| crate::address::same(a, f)) => {
            r.verdict = Signature::Valid;
        }
        FromAddress::One(_) => {
            r.verdict = Signature::Mismatch;
            r.reason = Some(String::from("signer-is-not-from"));
        }
        FromAddress::Ambiguous(why) => {
            r.verdict = Signature::Mismatch;
            r.reason = Some((*why).to_string());
        }
    }
    r
}
