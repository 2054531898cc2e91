//! `smimed watch` against a real Dovecot started by the test on 127.0.0.1: Dovecot's own MDA
//! (dovecot-lda) delivers while the watcher runs as the mail user; then an IMAP client reads the
//! processed messages (the right size, the decrypted text, the status fields), flags one (Dovecot
//! renames the file, the watcher must not process it again), and finds the originals in the
//! Maildir++ folder SMIME-Originals.

mod common;
mod watch_support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dovecot::{mail_ids, Dovecot, Opts};
use watch_support::*;

/// chown to the mail user (nobody when root, else ourselves).
fn chown(p: &Path) {
    let (uid, gid) = mail_ids();
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// Runs a Python imaplib script against the instance (LOGIN done, INBOX selected as `m`);
/// returns its stdout.
fn imap(port: u16, body: &str) -> Option<String> {
    let script = format!(
        "import imaplib\nm = imaplib.IMAP4('127.0.0.1', {port})\nm.login('alice', 'secret')\nm.select('INBOX')\n{body}\nprint('OK')\nm.logout()\n"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("imap: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `smimed` run as the mail user, from a copy of the binary the mail user can reach (the build
/// folder may sit under a private home), with the clean environment of `common::smimed()`.
fn as_mail_user(t: &Path) -> Command {
    let bin = t.join("smimed");
    if !bin.exists() {
        std::fs::copy(common::smimed_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut c = Command::new(&bin);
    c.env_remove("SMIMED_CONFIG")
        .env_remove("SMIMED_PASSPHRASE")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("RUST_LOG", "warn")
        .uid(mail_ids().0)
        .gid(mail_ids().1);
    c
}

#[test]
fn dovecot_delivers_and_serves_what_the_watcher_processed() {
    let dc = Dovecot::start(Opts::default());
    let t = dc.path();
    let port = dc.port;
    let maildir = dc.maildir();
    // Dovecot makes new/ cur/ tmp/ on first access; the LDA below needs no more.

    // The user's keys, readable by the user only (the watcher runs as the mail user).
    let p = common::pki::pki();
    let keys = t.join("keys");
    std::fs::create_dir(&keys).unwrap();
    chown(&keys);
    for (src, name) in [(&p.bob.p12_path, "bob.p12"), (&p.root_path, "root.pem")] {
        let dst = keys.join(name);
        std::fs::copy(src, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown(&dst);
    }

    let lda = |bytes: &[u8]| {
        let out = dc.deliver(bytes);
        assert!(
            out.status.success(),
            "dovecot-lda: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    lda(&plain_msg("d0")); // creates the Maildir

    let mut watcher = as_mail_user(t);
    watcher
        .args(["--authserv-id", "mx.test", "--trust"])
        .arg(keys.join("root.pem"))
        .arg("--key")
        .arg(keys.join("bob.p12"))
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .env("HOME", t.join("mail/alice"))
        .args(["watch", "--rescan", "600"])
        .arg(&maildir)
        .uid(mail_ids().0)
        .gid(mail_ids().1);
    let watcher = spawn(watcher);

    let ids: Vec<String> = (1..=5).map(|i| format!("d{i}")).collect();
    for id in &ids {
        lda(&smime_msg(id));
    }
    let done = wait_for(Duration::from_secs(30), || {
        processed_count(&maildir) == ids.len()
    });
    assert!(
        done,
        "only {} of {} processed",
        processed_count(&maildir),
        ids.len()
    );

    // IMAP: every message once, sizes right (Dovecot trusts ,S= in the name), text readable.
    let out = imap(
        port,
        r#"typ, data = m.fetch('1:*', '(UID FLAGS RFC822.SIZE BODY.PEEK[])')
uids = []
for item in data:
    if isinstance(item, tuple):
        meta, body = item
        meta = meta.decode()
        size = int(meta.split('RFC822.SIZE ')[1].split()[0].rstrip(')'))
        text = body.decode('utf-8', 'replace')
        mid = [l for l in text.splitlines() if l.startswith('Message-ID:')][0]
        st = [l for l in text.splitlines() if l.startswith('X-Smime-Status:')]
        if 'secret plan' in text:
            uids.append(meta.split('UID ')[1].split()[0])
        print('MSG', mid.split('<')[1].split('@')[0], size == len(body), 'secret plan' in text, st[0] if st else '-')
typ, data = m.uid('STORE', uids[0], '+FLAGS', '(\\Flagged)')
print('STORE', typ, uids[0])
print('STATUS', m.status('SMIME-Originals', '(MESSAGES)'))"#,
    )
    .expect("imap session");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("MSG ")).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for id in &ids {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("MSG {id} ")))
            .unwrap_or_else(|| panic!("{id} missing: {out}"));
        assert!(
            l.contains(" True True X-Smime-Status: encryption=decrypted; signature=valid"),
            "{l}"
        );
    }
    let plain = lines.iter().find(|l| l.starts_with("MSG d0 ")).unwrap();
    assert!(plain.contains(" True False -"), "{plain}");
    assert!(out.contains("STORE OK"), "{out}");
    assert!(
        out.contains("(MESSAGES 5)"),
        "originals not in SMIME-Originals: {out}"
    );

    std::thread::sleep(Duration::from_millis(500));
    eprintln!(
        "LISTING {:?}",
        std::fs::read_dir(maildir.join("cur"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    // Dovecot renamed the flagged copy (…:2,F); the watcher leaves it as it is, stops on
    // SIGTERM, and a run after Dovecot's renames changes nothing.
    std::thread::sleep(Duration::from_millis(500));
    let flagged: Vec<String> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(":2,F"))
        .collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(is_processed_name(&flagged[0]), "{flagged:?}");
    signal(&watcher, "-TERM");
    let w = watcher.wait_with_output().unwrap();
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let before = (
        snapshot(&maildir.join("new")),
        snapshot(&maildir.join("cur")),
    );
    let mut again = as_mail_user(t);
    again
        .args(["--authserv-id", "mx.test", "--trust"])
        .arg(keys.join("root.pem"))
        .arg("--key")
        .arg(keys.join("bob.p12"))
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .args(["watch", "--once"])
        .arg(&maildir)
        .uid(mail_ids().0)
        .gid(mail_ids().1);
    let o = again.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same(
        &snapshot(&maildir.join("new")),
        &before.0,
        "second run, new/",
    );
    assert_same(
        &snapshot(&maildir.join("cur")),
        &before.1,
        "second run, cur/",
    );
    let uid = out
        .lines()
        .find_map(|l| l.strip_prefix("STORE OK "))
        .expect("flagged uid")
        .to_string();
    let out2 = imap(
        port,
        &format!("print('FLAGS2', m.uid('FETCH', '{uid}', '(FLAGS)')[1][0].decode())"),
    )
    .expect("second imap session");
    assert!(out2.contains("\\Flagged"), "{out2}");

    // Exactly once: each message once in INBOX (processed), each original once archived.
    let live = by_message_id(&maildir);
    let arch = by_message_id(&maildir.join(".SMIME-Originals"));
    assert_eq!(live.len(), 6);
    for id in &ids {
        assert_eq!(live[id].len(), 1, "{id}");
        assert!(is_processed_name(&live[id][0].name), "{id}");
        assert_eq!(arch[id].len(), 1, "{id}");
    }
    assert!(!arch.contains_key("d0") && !is_processed_name(&live["d0"][0].name));
    let log = std::fs::read_to_string(t.join("dovecot.log")).unwrap_or_default();
    assert!(!log.contains("Error"), "dovecot logged errors:\n{log}");
}
