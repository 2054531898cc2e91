//! Certificates parsed earlier in this process, by their exact DER.
//!
//! Every signed message carries its signer's certificate (and often the chain), and a mailbox
//! holds many messages from few signers. Parsing a certificate (its names, extensions and
//! public key, through OpenSSL's generic decoder) and setting up its RSA key for the first
//! verification cost about as much as checking the signature itself. The watchers and the agent
//! therefore keep the parsed certificate, and with it its public key and that key's Montgomery
//! set-up, keyed by the complete DER encoding: an entry is returned only for the same bytes, so
//! a cached certificate is exactly the one the message carries. Nothing about trust is kept here
//! (see `pathcache`).

use std::collections::HashMap;
use std::sync::Mutex;

use foreign_types::ForeignTypeRef;
use openssl::x509::{X509Ref, X509};

/// Certificates kept at most; the whole cache is dropped when it is full (a mailbox's signers
/// fill it again within a few messages).
const MAX: usize = 1024;

/// Certificates longer than this are parsed every time (not worth keeping, and the key would be
/// large).
const MAX_DER: usize = 16 * 1024;

#[derive(Default)]
struct Cache {
    /// The parsed certificates by their DER.
    by_der: HashMap<Box<[u8]>, X509>,
    /// SHA-256 of each cached certificate's DER, by the address of the X509 object above. The
    /// cache holds a reference to every such object, and both maps are emptied together, so an
    /// address found here is that certificate's and no other's.
    sha256_by_addr: HashMap<usize, [u8; 32]>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The certificate whose DER is `der`, parsed once per process; None when it does not parse
/// (OpenSSL's error queue is left clear).
pub fn parse(der: &[u8]) -> Option<X509> {
    if der.len() > MAX_DER {
        return fresh(der);
    }
    if let Ok(g) = CACHE.lock() {
        if let Some(c) = g.as_ref().and_then(|m| m.by_der.get(der)) {
            return Some(c.clone());
        }
    }
    let cert = fresh(der)?;
    if let Ok(mut g) = CACHE.lock() {
        let cache = g.get_or_insert_with(Cache::default);
        if cache.by_der.len() >= MAX {
            cache.by_der.clear();
            cache.sha256_by_addr.clear();
        }
        // Another thread may have cached the same DER meanwhile: keep its object. (Replacing
        // it would free an object whose address stays in `sha256_by_addr`, and the address
        // could then be reused by another certificate.)
        if let Some(c) = cache.by_der.get(der) {
            return Some(c.clone());
        }
        cache
            .sha256_by_addr
            .insert(cert.as_ptr() as usize, openssl::sha::sha256(der));
        cache.by_der.insert(der.into(), cert.clone());
    }
    Some(cert)
}

/// SHA-256 of the DER of `cert` when it is a certificate this cache handed out and still holds
/// (the path cache's key, without re-encoding the certificate); None otherwise.
pub fn sha256(cert: &X509Ref) -> Option<[u8; 32]> {
    let g = CACHE.lock().ok()?;
    g.as_ref()?
        .sha256_by_addr
        .get(&(cert.as_ptr() as usize))
        .copied()
}

fn fresh(der: &[u8]) -> Option<X509> {
    let c = X509::from_der(der).ok();
    if c.is_none() {
        let _ = openssl::error::ErrorStack::get();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use foreign_types::ForeignType;

    fn cert(cn: &str) -> Vec<u8> {
        testutil::self_signed(cn, 1, None, &testutil::key())
            .to_der()
            .expect("der")
    }

    #[test]
    fn same_bytes_same_certificate_other_bytes_other() {
        let a = cert("a");
        let b = cert("b");
        let a1 = parse(&a).expect("a");
        let a2 = parse(&a).expect("a again");
        // The second answer is the object parsed the first time, not a fresh parse.
        assert_eq!(a1.as_ptr(), a2.as_ptr());
        let b1 = parse(&b).expect("b");
        assert_eq!(b1.to_der().expect("der"), b);
        assert_eq!(a2.to_der().expect("der"), a);
        // One changed byte is another certificate (here: not one at all).
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let other = parse(&bad);
        assert!(other.is_none_or(|c| c.to_der().expect("der") == bad));
        assert!(parse(b"not a certificate").is_none());
        assert!(openssl::error::ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn digest_only_for_certificates_it_holds() {
        let a = cert("digest a");
        let parsed = parse(&a).expect("a");
        assert_eq!(sha256(&parsed), Some(openssl::sha::sha256(&a)));
        // The same certificate parsed elsewhere is another object: no answer.
        let other = X509::from_der(&a).expect("a");
        assert_eq!(sha256(&other), None);
        // Equal to what X509_digest gives for a DER certificate.
        let d = parsed
            .digest(openssl::hash::MessageDigest::sha256())
            .expect("digest");
        assert_eq!(sha256(&parsed).expect("cached").as_slice(), &d[..]);
    }
}
