//! The user's own identities: private key + certificate (+ chain), read from PKCS#12 (.p12/.pfx,
//! DER or PEM-armoured, modern PBES2/AES or legacy RC2-40/3DES Windows exports) or from PEM files
//! holding a key and certificates.
//!
//! Invariants: a key file that group or others can read is refused (checked on the open
//! descriptor, like OpenSSH); passphrases live in zeroizing memory and are never logged; the
//! passphrase is asked for (file, command, environment) only when a key actually needs one, and
//! at most once per process.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Ref, X509};
use zeroize::Zeroizing;

use crate::certs;
use crate::config::PassphraseSource;
use crate::error::{Error, Result};

/// One private key with its certificate.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
    /// Issuer certificates that came with it (PKCS#12 CA bag or further PEM certificates).
    pub chain: Vec<X509>,
    pub source: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the key.
        f.debug_struct("Identity")
            .field("subject", &certs::name_to_string(self.cert.subject_name()))
            .field("source", &self.source)
            .finish()
    }
}

impl Identity {
    pub fn addresses(&self) -> Vec<String> {
        certs::email_addresses(&self.cert)
    }
}

/// Makes the legacy provider (RC2-40, 3DES-SHA1 PBE of old Windows exports, RC2 content
/// encryption) available next to the default one, once per process. Loaded only when something
/// failed without it: every extra provider makes each later key decoding slower.
pub fn load_legacy_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        match openssl::provider::Provider::try_load(None, "legacy", true) {
            // The providers must live as long as the process.
            Ok(p) => std::mem::forget(p),
            Err(e) => log::warn!(
                "OpenSSL legacy provider unavailable ({e}); legacy PKCS#12 and RC2 will fail"
            ),
        }
        match openssl::provider::Provider::try_load(None, "default", true) {
            Ok(p) => std::mem::forget(p),
            Err(e) => log::warn!("OpenSSL default provider: {e}"),
        }
    });
}

/// Reads a file that holds secrets, refusing it when group or others can read it.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let (buf, mode) = read_with_mode(path)?;
    if mode & 0o044 != 0 {
        return Err(readable_by_others(path, mode));
    }
    Ok(buf)
}

/// The file's bytes and its mode (checked on the open descriptor).
fn read_with_mode(path: &Path) -> Result<(Zeroizing<Vec<u8>>, u32)> {
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    // A folder given as a key or passphrase file is a mistake in the configuration that waiting
    // will not mend (reading it fails with EISDIR, an I/O error). Pipes stay allowed
    // (`--passphrase-file <(pass show mail)`).
    if meta.is_dir() {
        return Err(Error::config(format!("{}: is a folder", path.display())));
    }
    let mut buf = Zeroizing::new(Vec::new());
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(path.display(), e))?;
    Ok((buf, meta.mode()))
}

fn readable_by_others(path: &Path, mode: u32) -> Error {
    Error::config(format!(
        "{} is readable by group or others (mode {:o}); refusing to use a private key or \
         passphrase anyone else can read. Fix it with: chmod 600 {}",
        path.display(),
        mode & 0o777,
        path.display()
    ))
}

/// Gets the passphrase once, from the first configured source.
pub struct Passphrases {
    source: PassphraseSource,
    cached: Mutex<Option<Zeroizing<String>>>,
}

impl Passphrases {
    pub fn new(source: PassphraseSource) -> Self {
        Passphrases {
            source,
            cached: Mutex::new(None),
        }
    }

    /// The passphrase, or None when no source is configured. A failing command is a temporary
    /// failure (the agent may be locked, the user away): the caller keeps the message for later.
    pub fn get(&self) -> Result<Option<Zeroizing<String>>> {
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| Error::software("passphrase cache poisoned"))?;
        if let Some(p) = cached.as_ref() {
            return Ok(Some(p.clone()));
        }
        let got = if let Some(path) = &self.source.file {
            let data = read_private_file(path)?;
            let text = String::from_utf8_lossy(&data);
            Some(Zeroizing::new(
                text.lines().next().unwrap_or("").to_string(),
            ))
        } else if let Some(cmd) = &self.source.command {
            Some(run_passphrase_command(cmd)?)
        } else {
            self.source.env.clone()
        };
        if let Some(p) = &got {
            *cached = Some(p.clone());
        }
        Ok(got)
    }
}

/// Set when the process is asked to stop (a watcher's SIGTERM or SIGINT): a passphrase command
/// still running then (a pinentry waiting for someone away) is abandoned, a temporary failure,
/// so that the watcher can stop instead of waiting for it.
static ABANDON: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Passphrase commands are abandoned once `flag` is set.
pub fn abandon_passphrase_commands_on(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = ABANDON.set(flag);
}

fn run_passphrase_command(cmd: &str) -> Result<Zeroizing<String>> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_remove("SMIMED_PASSPHRASE")
        .spawn()
        .map_err(|e| Error::tempfail(format!("passphrase command could not run: {e}")))?;
    // Its output is read as it comes (a pipe holds only so much), while the stop flag is
    // watched.
    let mut pipe = child
        .stdout
        .take()
        .ok_or_else(|| Error::software("passphrase command without its output pipe"))?;
    // Only the first line is used: it is handed over as soon as it is read (a command may leave
    // a process behind that holds its output), and the rest is read and dropped until the end
    // (a command writing more lines, as `pass show` does, must not die of SIGPIPE).
    let (first_tx, first_rx) = std::sync::mpsc::channel::<Zeroizing<Vec<u8>>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut line = Zeroizing::new(Vec::new());
        let mut buf = Zeroizing::new([0u8; 256]);
        let mut sent = false;
        while let Ok(n) = pipe.read(&mut buf[..]) {
            if n == 0 {
                break;
            }
            if !sent {
                line.extend_from_slice(&buf[..n]);
                if buf[..n].contains(&b'\n') {
                    let _ = first_tx.send(std::mem::take(&mut line));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = first_tx.send(line);
        }
    });
    let abandoned = || {
        ABANDON
            .get()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    };
    let mut pause = std::time::Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if abandoned() => {
                kill_tree(&mut child);
                return Err(Error::tempfail("passphrase command abandoned: stopping"));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::tempfail(format!(
                    "passphrase command could not be waited for: {e}"
                )))
            }
        }
    };
    // Its first line may still be on the way (from a process it left behind).
    let stdout = loop {
        match first_rx.recv_timeout(std::time::Duration::from_millis(20)) {
            Ok(line) => break line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !abandoned() => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::tempfail("passphrase command abandoned: stopping"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::software("passphrase command output reader stopped"))
            }
        }
    };
    if !status.success() {
        return Err(Error::tempfail(format!(
            "passphrase command failed ({status})"
        )));
    }
    let text = String::from_utf8_lossy(&stdout);
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

/// Kills a passphrase command and what it started (a pipeline, a subshell, `pass` and its
/// gpg), found through /proc by their parents, children first; then reaps the command.
fn kill_tree(child: &mut std::process::Child) {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = crate::sys::proc_stat(pid, 4).and_then(|p| u32::try_from(p).ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![child.id()];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == p)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    for pid in tree.iter().skip(1).rev() {
        if let Some(pid) = i32::try_from(*pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What one key file holds: identities complete in the file, and for PEM files the keys whose
/// certificate is not in it and every certificate it holds (a key and its certificate may be
/// given as two files).
#[derive(Default)]
struct Loaded {
    ids: Vec<Identity>,
    loose_keys: Vec<PKey<Private>>,
    certs: Vec<X509>,
}

/// Loads every configured identity. A PEM key whose certificate is not in its own file is
/// paired with a certificate of another `--key` file (`openssl req` writes the key and the
/// certificate apart). Any failure names the file.
pub fn load_identities(paths: &[PathBuf], pass: &Passphrases) -> Result<Vec<Identity>> {
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        files.push(load_file(p, pass).map_err(|e| named(p, e))?);
    }
    let mut out = Vec::new();
    let mut used = vec![false; files.len()];
    for (i, f) in files.iter().enumerate() {
        for key in &f.loose_keys {
            // Every certificate of the key in the other files (one renewed with the same key
            // has several), each an identity.
            let found: Vec<(usize, usize)> = files
                .iter()
                .enumerate()
                .flat_map(|(j, g)| {
                    (0..g.certs.len())
                        .filter(move |&pos| belongs_to(&g.certs[pos], key))
                        .map(move |pos| (j, pos))
                })
                .collect();
            if found.is_empty() {
                return Err(named(
                    &paths[i],
                    Error::config(
                        "PEM file holds a private key without its certificate (give the \
                         certificate in the same file, or its file as another --key)",
                    ),
                ));
            }
            for &(j, pos) in &found {
                used[j] = true;
                let cert = files[j].certs[pos].clone();
                let mut chain: Vec<X509> = Vec::new();
                for (k, c) in files[j].certs.iter().enumerate() {
                    if !found.contains(&(j, k)) {
                        chain.push(c.clone());
                    }
                }
                if i != j {
                    chain.extend(files[i].certs.iter().cloned());
                }
                out.push(Identity {
                    cert,
                    key: key.clone(),
                    chain,
                    source: paths[i].clone(),
                });
            }
        }
    }
    for (i, f) in files.into_iter().enumerate() {
        if f.ids.is_empty() && f.loose_keys.is_empty() && !used[i] {
            return Err(named(
                &paths[i],
                Error::config(
                    "PEM file holds no private key (and no other --key file's key belongs to \
                     its certificates)",
                ),
            ));
        }
        out.extend(f.ids);
    }
    Ok(out)
}

fn named(path: &Path, e: Error) -> Error {
    e.context(format!("key {}", path.display()))
}

fn load_file(path: &Path, pass: &Passphrases) -> Result<Loaded> {
    let (data, mode) = read_with_mode(path)?;
    let text_start = &data[..data.len().min(64 * 1024)];
    // DER (a PKCS#12) is a SEQUENCE with a long-form length; anything else is text, also when
    // its first character is a '0' (0x30 too).
    let is_der = data.first() == Some(&0x30) && matches!(data.get(1), Some(0x80..=0x84));
    let is_text = !data.is_empty() && !is_der;
    // A file others can read is refused, unless it is a PEM file of certificates only (the
    // certificate of a key given as another --key file).
    let certificates_only = is_text
        && contains(text_start, b"-----BEGIN ")
        && !contains(&data, b"PRIVATE KEY-----")
        && !contains(&data, b"-----BEGIN PKCS12-----");
    if mode & 0o044 != 0 && !certificates_only {
        return Err(readable_by_others(path, mode));
    }
    let p12 = |der: &[u8]| {
        load_p12(der, path, pass).map(|ids| Loaded {
            ids,
            ..Loaded::default()
        })
    };
    if is_text && contains(text_start, b"-----BEGIN PKCS12-----") {
        let text = String::from_utf8_lossy(&data);
        let der = certs::pem_blocks(&text)
            .into_iter()
            .find(|b| b.label == "PKCS12")
            .map(|b| Zeroizing::new(b.der))
            .ok_or_else(|| Error::config("armoured PKCS#12 does not decode"))?;
        return p12(&der);
    }
    if is_text && contains(text_start, b"-----BEGIN ") {
        return load_pem(&data, path, pass);
    }
    p12(&data)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn load_p12(der: &[u8], path: &Path, pass: &Passphrases) -> Result<Vec<Identity>> {
    let p12 = Pkcs12::from_der(der)
        .map_err(|e| Error::config(format!("neither PEM nor PKCS#12 ({})", first_error(&e))))?;
    // No password first (exports without one, as notmuch's and some Windows tools make), so
    // that the passphrase is only asked for when the file needs one: a locked password store
    // must not hold up a key that has no password. A MAC that does not verify with the empty
    // password settles it; another failure (an RC2-40 or 3DES bag of an older Windows/Outlook
    // export) is tried again with the legacy provider loaded. Then the passphrase.
    let no_password = match p12.parse2("") {
        Ok(p) => Some(p),
        Err(e) if mac_failed(&e) => None,
        Err(_) => {
            load_legacy_provider();
            match p12.parse2("") {
                Ok(p) => Some(p),
                Err(_) => {
                    // Without a MAC, OpenSSL's parse takes the empty password for no password
                    // at all, and a PKCS#12-PBE bag (3DES, RC2) encrypted with the empty one
                    // (`openssl pkcs12 -export -nomac -passout pass:`) does not decrypt with
                    // that: its bags are read with the empty password itself.
                    let _ = openssl::error::ErrorStack::get();
                    if let Ok((keys, certs)) = crate::ossl::pkcs12_contents(&p12, Some("")) {
                        let ids = pair_keys(keys, &certs, path);
                        if !ids.ids.is_empty() {
                            return Ok(ids.ids);
                        }
                    }
                    let _ = openssl::error::ErrorStack::get();
                    None
                }
            }
        }
    };
    let mut password: Option<zeroize::Zeroizing<String>> = None;
    let parsed = match no_password {
        Some(p) => p,
        None => {
            let _ = openssl::error::ErrorStack::get();
            let Some(pw) = pass.get()? else {
                return Err(Error::config(
                    "PKCS#12 file needs a passphrase: give --passphrase-file, \
                     --passphrase-command or SMIMED_PASSPHRASE",
                ));
            };
            let parsed = match p12.parse2(&pw) {
                Ok(p) => p,
                Err(e) if mac_failed(&e) => {
                    return Err(Error::config(format!(
                        "cannot open PKCS#12 (wrong passphrase?): {}",
                        first_error(&e)
                    )))
                }
                Err(_) => {
                    load_legacy_provider();
                    p12.parse2(&pw).map_err(|e| {
                        Error::config(format!(
                            "cannot open PKCS#12 (wrong passphrase?): {}",
                            first_error(&e)
                        ))
                    })?
                }
            };
            password = Some(zeroize::Zeroizing::new(pw.to_string()));
            parsed
        }
    };
    // Every key of the file, not only the first one parse2 keeps (a merged Windows export of a
    // signing and an encryption key), with every certificate of each key (one renewed with the
    // same key): one identity per key and certificate. The bags are read (and decrypted) again
    // only when parse2's result leaves room for another: a key without its certificate, or a
    // certificate among the CA ones that is no issuer on the path of parse2's certificate (a
    // second key's, whatever its CA flag says); a plain export pays nothing.
    let another_identity = match (&parsed.pkey, &parsed.cert) {
        (Some(key), Some(cert)) => {
            !cert.public_key().is_ok_and(|p| p.public_eq(key))
                || parsed
                    .ca
                    .as_ref()
                    .is_some_and(|st| !all_issuers_of(cert, &st.iter().collect::<Vec<_>>()))
        }
        _ => true,
    };
    let contents = match (&password, another_identity) {
        (_, false) => Err(openssl::error::ErrorStack::get()),
        (Some(pw), true) => crate::ossl::pkcs12_contents(&p12, Some(pw)),
        (None, true) => crate::ossl::pkcs12_contents(&p12, Some(""))
            .or_else(|_| crate::ossl::pkcs12_contents(&p12, None)),
    };
    let _ = openssl::error::ErrorStack::get();
    if let Ok((keys, certs)) = contents {
        {
            let ids = pair_keys(keys, &certs, path);
            if !ids.ids.is_empty() {
                if !ids.loose_keys.is_empty() {
                    log::warn!(
                        "{}: {} key(s) without their certificate ignored",
                        path.display(),
                        ids.loose_keys.len()
                    );
                }
                return Ok(ids.ids);
            }
        }
    }
    let (Some(key), Some(cert)) = (parsed.pkey, parsed.cert) else {
        return Err(Error::config(
            "PKCS#12 file holds no key with its certificate",
        ));
    };
    let chain = parsed
        .ca
        .map(|st| st.into_iter().collect())
        .unwrap_or_default();
    Ok(vec![Identity {
        cert,
        key,
        chain,
        source: path.to_path_buf(),
    }])
}

fn load_pem(data: &[u8], path: &Path, pass: &Passphrases) -> Result<Loaded> {
    let text = String::from_utf8_lossy(data);
    let blocks = certs::pem_blocks(&text);
    let mut certs_found = Vec::new();
    let mut keys = Vec::new();
    for b in &blocks {
        if let Some(k) = rsa_fast_path(b) {
            keys.push(k);
        } else if b.label.ends_with("PRIVATE KEY") {
            let (mut key, mut failure) = pem_private_key(b.text.as_bytes(), pass);
            if key.is_err() && failure.is_none() {
                // An old PKCS#8 encryption (PBE with RC2 or RC4) is the legacy provider's.
                load_legacy_provider();
                (key, failure) = pem_private_key(b.text.as_bytes(), pass);
            }
            match key {
                Ok(k) => keys.push(k),
                Err(e) => {
                    return Err(failure.unwrap_or_else(|| {
                        Error::config(format!(
                            "cannot read private key (wrong passphrase?): {}",
                            first_error(&e)
                        ))
                    }))
                }
            }
        } else if b.label.contains("CERTIFICATE") {
            if let Ok(c) = X509::from_der(&b.der) {
                certs_found.push(c);
            }
        }
    }
    let mut out = pair_keys(keys, &certs_found, path);
    out.certs = certs_found;
    Ok(out)
}

/// Whether every certificate of `ca` is an issuer on `leaf`'s path through them.
fn all_issuers_of(leaf: &X509Ref, ca: &[&X509Ref]) -> bool {
    let mut on_path = vec![false; ca.len()];
    let mut current = leaf;
    while let Some(i) = (0..ca.len())
        .find(|&i| !on_path[i] && ca[i].issued(current) == openssl::x509::X509VerifyResult::OK)
    {
        on_path[i] = true;
        current = ca[i];
    }
    let _ = openssl::error::ErrorStack::get();
    on_path.iter().all(|&b| b)
}

/// Whether `cert` holds the public half of `key`.
fn belongs_to(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key().is_ok_and(|p| p.public_eq(key))
}

/// One identity per key and certificate of it among `certs` (a key renewed with the same key
/// has several; the other certificates are the chain); keys without one are left loose.
fn pair_keys(keys: Vec<PKey<Private>>, certs: &[X509], path: &Path) -> Loaded {
    let mut out = Loaded::default();
    for key in keys {
        let mine: Vec<usize> = (0..certs.len())
            .filter(|&i| belongs_to(&certs[i], &key))
            .collect();
        if mine.is_empty() {
            out.loose_keys.push(key);
            continue;
        }
        for &pos in &mine {
            let chain = certs
                .iter()
                .enumerate()
                .filter(|(i, _)| !mine.contains(i))
                .map(|(_, c)| c.clone())
                .collect();
            out.ids.push(Identity {
                cert: certs[pos].clone(),
                key: key.clone(),
                chain,
                source: path.to_path_buf(),
            });
        }
    }
    out
}

/// One PEM private key, asking for the passphrase only if it is encrypted. The error of the
/// passphrase source (none configured, a failing command), when that is what failed, comes
/// second.
fn pem_private_key(
    pem: &[u8],
    pass: &Passphrases,
) -> (
    std::result::Result<PKey<Private>, openssl::error::ErrorStack>,
    Option<Error>,
) {
    let mut failure: Option<Error> = None;
    let key = PKey::private_key_from_pem_callback(pem, |buf| match pass.get() {
        Ok(Some(pw)) if pw.len() <= buf.len() => {
            buf[..pw.len()].copy_from_slice(pw.as_bytes());
            Ok(pw.len())
        }
        Ok(_) => {
            failure = Some(Error::config(
                "encrypted PEM key needs a passphrase: give --passphrase-file, \
                 --passphrase-command or SMIMED_PASSPHRASE",
            ));
            Err(openssl::error::ErrorStack::get())
        }
        Err(e) => {
            failure = Some(e);
            Err(openssl::error::ErrorStack::get())
        }
    });
    (key, failure)
}

/// Unencrypted RSA keys (PKCS#1, or PKCS#8 holding rsaEncryption) through OpenSSL's direct RSA
/// parser: same key, a fraction of the generic decoder's start-up cost. None: use the general
/// path.
fn rsa_fast_path(b: &certs::PemBlock) -> Option<PKey<Private>> {
    let rsa_der = match b.label.as_str() {
        "RSA PRIVATE KEY" if !b.text.contains("Proc-Type") => b.der.as_slice(),
        "PRIVATE KEY" => crate::ber::pkcs8_rsa_private_key(&b.der)?,
        _ => return None,
    };
    // Whether it belongs to a certificate is checked by the caller (public_eq).
    let rsa = openssl::rsa::Rsa::private_key_from_der(rsa_der).ok()?;
    PKey::from_rsa(rsa).ok()
}

/// Whether a PKCS#12 parse failed on its MAC (the password is not that one).
fn mac_failed(e: &openssl::error::ErrorStack) -> bool {
    e.errors()
        .iter()
        .any(|x| x.reason().is_some_and(|r| r.contains("mac verify failure")))
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| String::from("unknown error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_command_gives_its_first_line() {
        // More lines after it (as `pass show` prints), more than a pipe holds: read to the
        // end, so the command does not die of SIGPIPE.
        let p = run_passphrase_command("printf 'secret\\nline 2\\n'; yes meta | head -c 300000")
            .expect("passphrase");
        assert_eq!(p.as_str(), "secret");
        // A process it leaves behind holding its output does not hold the passphrase back.
        let t = std::time::Instant::now();
        let p = run_passphrase_command("echo secret; sleep 20 2>/dev/null & echo started")
            .expect("passphrase");
        assert_eq!(p.as_str(), "secret");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(run_passphrase_command("exit 3").is_err());
        assert_eq!(
            run_passphrase_command("printf 'no line end'")
                .expect("p")
                .as_str(),
            "no line end"
        );
    }
}
