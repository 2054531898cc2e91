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
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return Err(Error::software(format!("{} has no folder", path.display()))),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut rnd = [0u8; 6];
    openssl::rand::rand_bytes(&mut rnd).map_err(|e| Error::software(format!("random: {e}")))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::certs::hex(&rnd)));
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
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path.display(), e));
    }
    Ok(())
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
    }
}
