//! Paths to a trust anchor found earlier in this process.
//!
//! The agent and the watchers check the same signers and recipients again and again, and
//! building and checking a path (a signature per link) costs more than the rest of a lookup.
//! An entry is keyed by the certificate, the intermediates offered with it and the generation
//! of the anchors ([`crate::trust::TrustStore::generation`]), and answers only within the
//! window in which every certificate of the path found is valid. Only successes are kept, and
//! only what the path check decides: everything else about a certificate (its address, its own
//! validity, key usages) is checked every time by the callers. Paths checked against CRLs are
//! not kept (a CRL has a validity of its own).

use std::sync::Mutex;

use openssl::hash::MessageDigest;
use openssl::x509::{X509Ref, X509};

/// (SHA-256 of the certificate, sorted SHA-256s of the intermediates, anchors' generation).
pub type Key = (Vec<u8>, Vec<Vec<u8>>, u64);

/// Entries kept at most per cache (oldest dropped first).
const MAX: usize = 512;

/// A cache of path results of type `V` (what the caller needs to remember of a good path).
pub struct PathCache<V> {
    entries: Mutex<Vec<(Key, i64, i64, V)>>,
}

impl<V: Clone> Default for PathCache<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> PathCache<V> {
    pub const fn new() -> Self {
        PathCache {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The result remembered for `key`, if its path is valid at `now` (Unix seconds).
    pub fn get(&self, key: &Key, now: i64) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|(k, from, until, _)| k == key && *from <= now && now <= *until)
            .map(|(_, _, _, v)| v.clone())
    }

    /// Remembers `value` for `key`, valid within `window` (see [`window`]).
    pub fn put(&self, key: Key, (from, until): (i64, i64), value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(k, ..)| *k != key);
            if entries.len() >= MAX {
                entries.remove(0);
            }
            entries.push((key, from, until, value));
        }
    }
}

/// The key of `cert` offered with `untrusted` against the anchors of `generation`; None when
/// a digest cannot be computed (then nothing is cached).
pub fn key(cert: &X509Ref, untrusted: &[X509], generation: u64) -> Option<Key> {
    // A certificate from `certcache` has its digest there; another is re-encoded and hashed.
    let der = |c: &X509Ref| match crate::certcache::sha256(c) {
        Some(d) => Some(d.to_vec()),
        None => c.digest(MessageDigest::sha256()).map(|d| d.to_vec()).ok(),
    };
    let mut inter = untrusted
        .iter()
        .map(|c| der(c))
        .collect::<Option<Vec<_>>>()?;
    inter.sort();
    Some((der(cert)?, inter, generation))
}

/// The window (Unix seconds) in which every certificate of `path` is valid; empty (from >
/// until) when a time cannot be read.
pub fn window<'a>(path: impl IntoIterator<Item = &'a X509Ref>) -> (i64, i64) {
    path.into_iter()
        .fold((i64::MIN, i64::MAX), |(from, until), c| {
            let nb = crate::certs::unix_time(c.not_before()).unwrap_or(i64::MAX);
            let na = crate::certs::unix_time(c.not_after()).unwrap_or(i64::MIN);
            (from.max(nb), until.min(na))
        })
}

/// Now, in Unix seconds (the path windows, the address book's validity checks, harvesting).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_its_key_inside_the_window() {
        let cache: PathCache<bool> = PathCache::new();
        let key = |c: u8, g: u64| -> Key { (vec![c], vec![vec![9]], g) };
        cache.put(key(1, 1), (100, 200), true);
        assert_eq!(cache.get(&key(1, 1), 150), Some(true));
        assert_eq!(cache.get(&key(1, 1), 99), None, "before the window");
        assert_eq!(cache.get(&key(1, 1), 201), None, "after the window");
        assert_eq!(cache.get(&key(1, 2), 150), None, "other anchors");
        assert_eq!(cache.get(&key(2, 1), 150), None, "other certificate");
        let other_inter: Key = (vec![1], vec![], 1);
        assert_eq!(cache.get(&other_inter, 150), None, "other intermediates");
        cache.put(key(1, 1), (100, 300), false);
        assert_eq!(cache.get(&key(1, 1), 250), Some(false), "replaced");
        for c in 0..=255u8 {
            for g in 10..13 {
                cache.put(key(c, g), (0, 1), true);
            }
        }
        assert!(
            cache.entries.lock().map(|e| e.len()).unwrap_or(0) <= MAX,
            "bounded"
        );
    }
}
