//! Durable file replacement, shared by every command that writes a whole file: the address
//! book's records and certificates, the IMAP watcher's state, `smimed filter --output`.
//!
//! [`write_atomic`] writes a new file of mode 0600 beside the target (created exclusively, so a
//! planted symlink is never followed), fsyncs it, renames it over the target (a symlink there
//! is replaced, not followed) and fsyncs the folder: a reader sees the old file or the new one,
//! never part of either, and the new one survives a crash once the call returned.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `data` to `path` atomically and durably (see the module's documentation).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    try_write_atomic(path, data).map_err(|e| Error::io(path.display(), e))
}

/// [`write_atomic`], with the I/O error as it came (a caller may have another way).
pub fn try_write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return Err(std::io::Error::other("no folder to write in")),
    };
    // A name of its own length, whatever the target's (a 250-byte name plus a suffix would be
    // over NAME_MAX).
    let mut rnd = [0u8; 12];
    openssl::rand::rand_bytes(&mut rnd).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".smimed-{}.tmp", crate::certs::hex(&rnd)));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // The rename is done: the new file is in place. A folder we may write but not read (mode
    // 0333) cannot be opened to fsync; the file itself was, and that is all that can be done.
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_a_symlink_instead_of_following_it_and_is_private() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = d.path().join("out");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_atomic(&out, b"secret").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let m = std::fs::symlink_metadata(&out).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&out).unwrap(), b"secret");
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
        // A name as long as a file name may be.
        let long = d.path().join("n".repeat(255));
        write_atomic(&long, b"long").unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"long");
    }
}
