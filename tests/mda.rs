//! Real delivery agents running `smimed filter`: procmail (`:0 fw`, components.md §3) and
//! Dovecot's LDA with a Sieve `filter` action (Pigeonhole extprograms, §2) in a private
//! Dovecot instance on 127.0.0.1. Each delivers an encrypted and signed message into a Maildir,
//! decrypted and with its status; and when smimed exits 75 (passphrase command failed), the
//! original is delivered unchanged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::{pki, P12_PASS};
use common::*;

const SECRET: &str = "delivered through a real MDA";

fn encrypted_to_bob(subject: &str) -> Vec<u8> {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity(SECRET));
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &signed);
    // Maildir-style LF line endings, as an MTA hands mail to an MDA.
    to_lf(&message(
        "alice@example.org",
        "bob@example.org",
        subject,
        &enc,
    ))
}

/// A short private folder (Dovecot's unix sockets must stay under 108 bytes), mode 0755 so the
/// mail uid can traverse it.
fn short_tmp(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The messages in a Maildir's new/ folder.
fn maildir_new(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir.join("new")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn procmail_filter_recipe_delivers_decrypted_message() {
    let p = pki();
    let t = short_tmp("pm.");
    let dir = t.path();
    std::fs::create_dir(dir.join("mail")).unwrap();
    let pass = dir.join("pass");
    write_mode(&pass, P12_PASS.as_bytes(), 0o600);
    let smimed = smimed_bin();
    let common = format!(
        "{} --authserv-id mx.test --trust {} --key {}",
        smimed.display(),
        p.root_path.display(),
        p.bob.p12_path.display()
    );
    // `:0 fw`: filter, and wait for the exit code (on failure procmail keeps the original).
    let rc = format!(
        "SHELL=/bin/sh\nLOCKSLEEP=1\nLOGFILE={d}/procmail.log\n\
         :0\n* ^Subject: nopass\n{{\n  :0 fw\n  | {common} --passphrase-command false filter\n}}\n\
         :0 E\n{{\n  :0 fw\n  | {common} --passphrase-file {pass} filter\n}}\n\
         :0\n{d}/mail/inbox/\n",
        d = dir.display(),
        pass = pass.display()
    );
    let rcfile = dir.join("procmailrc");
    write_mode(&rcfile, rc.as_bytes(), 0o644);

    let msg = encrypted_to_bob("procmail");
    let out = run_with_stdin(Command::new("procmail").arg("-m").arg(&rcfile), &msg);
    let log = std::fs::read_to_string(dir.join("procmail.log")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "procmail: {log}");
    let got = maildir_new(&dir.join("mail/inbox"));
    assert_eq!(got.len(), 1, "{log}");
    assert_eq!(status_count(&got[0]), 1);
    let st = status_of(&got[0]);
    assert_words(&st, "decrypted", "valid");
    assert!(String::from_utf8_lossy(&got[0]).contains(SECRET));

    // smimed exits 75: procmail rescues the unfiltered original.
    let msg2 = encrypted_to_bob("nopass");
    let out = run_with_stdin(Command::new("procmail").arg("-m").arg(&rcfile), &msg2);
    let log = std::fs::read_to_string(dir.join("procmail.log")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "procmail: {log}");
    let got = maildir_new(&dir.join("mail/inbox"));
    assert_eq!(got.len(), 2, "{log}");
    let orig = got
        .iter()
        .find(|m| m.windows(14).any(|w| w == b"Subject: nopas"))
        .expect("nopass");
    assert_eq!(orig, &msg2, "the original, byte for byte");
    assert!(
        log.contains("Rescue of unfiltered data succeeded") || log.contains("Program failure"),
        "{log}"
    );
}

// ----- Dovecot -------------------------------------------------------------------------------

const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Dovecot instance (components.md §1, §2); stopped (SIGTERM, wait) on drop.
struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Dovecot {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn start(dir: tempfile::TempDir, sieve: &str) -> Dovecot {
        let t = dir.path().to_path_buf();
        for d in ["run", "state", "mail/alice", "sieve-filters"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        let port = free_port();
        std::fs::write(
            t.join("users"),
            format!("alice:{{PLAIN}}secret::::{}/mail/alice::\n", t.display()),
        )
        .unwrap();
        let conf = format!(
            r#"instance_name = smimed-test-{port}
base_dir = {t}/run
state_dir = {t}/state
protocols = imap
listen = 127.0.0.1
log_path = {t}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
first_valid_gid = 0
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {t}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {t}/users
  override_fields = uid={MAIL_UID} gid={MAIL_GID}
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
postmaster_address = postmaster@example.org
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_plugins = sieve_extprograms
  sieve_extensions = +vnd.dovecot.filter
  sieve_filter_bin_dir = {t}/sieve-filters
  sieve_filter_exec_timeout = 60s
}}
"#,
            t = t.display()
        );
        std::fs::write(t.join("dovecot.conf"), conf).unwrap();
        std::fs::write(t.join("mail/alice/.dovecot.sieve"), sieve).unwrap();
        chown_tree(&t.join("mail"));
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(t.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        let dc = Dovecot { dir, child, port };
        dc.wait_login();
        dc
    }

    /// Ready means a real IMAP LOGIN succeeds (the port is bound before auth is up).
    fn wait_login(&self) {
        let start = Instant::now();
        loop {
            if imap_login(self.port).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "dovecot not ready: {}",
                std::fs::read_to_string(self.root().join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn deliver(&self, msg: &[u8]) -> std::process::Output {
        run_with_stdin(
            Command::new("/usr/lib/dovecot/dovecot-lda")
                .arg("-c")
                .arg(self.root().join("dovecot.conf"))
                .args(["-d", "alice", "-f", "alice@example.org"]),
            msg,
        )
    }

    fn inbox(&self) -> Vec<Vec<u8>> {
        maildir_new(&self.root().join("mail/alice/Maildir"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn imap_login(port: u16) -> std::io::Result<()> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("* OK") {
        return Err(std::io::Error::other(line));
    }
    (&s).write_all(b"a1 LOGIN alice secret\r\n")?;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if line.starts_with("a1 OK") {
            let _ = (&s).write_all(b"a2 LOGOUT\r\n");
            return Ok(());
        }
        if line.starts_with("a1 ") {
            return Err(std::io::Error::other(line.clone()));
        }
    }
}

fn chown_tree(p: &Path) {
    chown(p, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

#[test]
fn dovecot_lda_sieve_filter_runs_smimed() {
    let p = pki();
    let dir = short_tmp("dc.");
    let t = dir.path().to_path_buf();
    // The filter runs as the mail uid with a minimal environment (no PATH, no SMIMED_*): a
    // wrapper in sieve_filter_bin_dir passes the options. Keys stay 0600, owned by the mail uid;
    // smimed itself is copied next to them (the build folder may not be traversable).
    let keys = t.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = keys.join("bob.p12");
    std::fs::copy(&p.bob.p12_path, &key).unwrap();
    let pass = keys.join("pass");
    write_mode(&pass, P12_PASS.as_bytes(), 0o600);
    for f in [&keys, &key, &pass] {
        chown(f, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    }
    let root = t.join("root.pem");
    std::fs::copy(&p.root_path, &root).unwrap();
    let bin = t.join("smimed");
    std::fs::copy(smimed_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(t.join("sieve-filters")).unwrap();
    let common = format!(
        "{} --authserv-id mx.test --trust {} --key {}",
        bin.display(),
        root.display(),
        key.display()
    );
    for (name, pass_opt) in [
        (
            "smimed-filter",
            format!("--passphrase-file {}", pass.display()),
        ),
        ("smimed-nopass", "--passphrase-command false".to_string()),
    ] {
        write_mode(
            &t.join("sieve-filters").join(name),
            format!("#!/bin/sh\nexec {common} {pass_opt} filter\n").as_bytes(),
            0o755,
        );
    }
    let sieve = "require [\"vnd.dovecot.filter\", \"fileinto\", \"mailbox\"];\n\
        if header :contains \"subject\" \"nopass\" {\n  filter \"smimed-nopass\";\n} else {\n  filter \"smimed-filter\";\n}\n\
        if header :contains \"X-Smime-Status\" \"signature=valid\" {\n  fileinto :create \"Signed\";\n  stop;\n}\n";
    let dc = Dovecot::start(dir, sieve);

    let msg = encrypted_to_bob("lda");
    let out = dc.deliver(&msg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lda: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Sieve rule matched smimed's status word: the message went to the Signed folder.
    let signed = maildir_new(&dc.root().join("mail/alice/Maildir/.Signed"));
    assert_eq!(signed.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status_count(&signed[0]), 1);
    assert_words(&status_of(&signed[0]), "decrypted", "valid");
    assert!(String::from_utf8_lossy(&signed[0]).contains(SECRET));

    // smimed exits 75: Sieve's filter leaves the message as it was; it is kept in INBOX.
    let msg2 = encrypted_to_bob("nopass");
    let out = dc.deliver(&msg2);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lda: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inbox = dc.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(status_count(&inbox[0]), 0);
    assert!(!String::from_utf8_lossy(&inbox[0]).contains(SECRET));
    assert!(String::from_utf8_lossy(&inbox[0]).contains("Subject: nopass"));
}
