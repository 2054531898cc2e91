//! Parsed certificates by file, for a process that looks certificates up many times (`smimed
//! agent`): a file is parsed again only when its identity changed (device, inode, size,
//! modification and change times), so certificates imported or harvested while the agent runs
//! are seen by the next lookup, and unchanged files are not parsed again (with OpenSSL 3.0 a
//! certificate parse costs about a millisecond). Store writes are atomic renames, which give
//! the file a new inode; a vCard rewritten in place changes its times and usually its size.
//!
//! Invariants: what is returned is what parsing the file's current content gives (the identity
//! is taken from the open file that is then read); an unreadable file is not cached.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use openssl::x509::X509;

/// Entries kept before the cache is emptied (files removed from the store stay until then).
const MAX_ENTRIES: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Certificates parsed from files, by path.
pub struct FileCache {
    map: Mutex<HashMap<PathBuf, (Identity, Vec<X509>)>>,
}

impl FileCache {
    fn new() -> FileCache {
        FileCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The certificates `parse` finds in the file at `path`, parsed again only when the file
    /// changed since the last call for this path.
    pub fn get(
        &self,
        path: &Path,
        parse: impl FnOnce(&[u8]) -> Vec<X509>,
    ) -> std::io::Result<Vec<X509>> {
        let mut f = std::fs::File::open(path)?;
        let id = Identity::of(&f.metadata()?);
        {
            let map = match self.map.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if let Some((known, certs)) = map.get(path) {
                if *known == id {
                    return Ok(certs.clone());
                }
            }
        }
        let mut data = Vec::with_capacity(usize::try_from(id.size).unwrap_or(0).min(1 << 20));
        f.read_to_end(&mut data)?;
        let certs = parse(&data);
        let mut map = match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(path.to_path_buf(), (id, certs.clone()));
        Ok(certs)
    }
}

/// The cache of the local store's PEM files.
pub fn store() -> &'static FileCache {
    static CACHE: OnceLock<FileCache> = OnceLock::new();
    CACHE.get_or_init(FileCache::new)
}

/// The cache of vCard files.
pub fn vcard() -> &'static FileCache {
    static CACHE: OnceLock<FileCache> = OnceLock::new();
    CACHE.get_or_init(FileCache::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn self_signed(cn: &str) -> X509 {
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .expect("group"),
            )
            .expect("ec"),
        )
        .expect("pkey");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().expect("builder");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("key");
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).expect("t"))
            .expect("na");
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        b.build()
    }

    fn parse_pem(d: &[u8]) -> Vec<X509> {
        X509::stack_from_pem(d).unwrap_or_default()
    }

    #[test]
    fn unchanged_files_are_parsed_once_and_replaced_ones_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.pem");
        std::fs::write(&path, self_signed("one").to_pem().expect("pem")).expect("write");
        let cache = FileCache::new();
        let parses = Cell::new(0);
        let parse = |d: &[u8]| {
            parses.set(parses.get() + 1);
            parse_pem(d)
        };
        let a = cache.get(&path, parse).expect("get");
        let b = cache.get(&path, parse).expect("get");
        assert_eq!(parses.get(), 1, "parsed once");
        assert_eq!(a[0].to_der().expect("der"), b[0].to_der().expect("der"));

        // Replaced the way the store writes (new file, rename): parsed again.
        let tmp = dir.path().join(".c.pem.tmp");
        std::fs::write(&tmp, self_signed("two").to_pem().expect("pem")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        let c = cache.get(&path, parse).expect("get");
        assert_eq!(parses.get(), 2, "parsed again after the change");
        assert_ne!(a[0].to_der().expect("der"), c[0].to_der().expect("der"));

        std::fs::remove_file(&path).expect("rm");
        assert!(cache.get(&path, parse).is_err(), "a removed file is gone");
    }
}
