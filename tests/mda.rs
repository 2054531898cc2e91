//! Real delivery agents running `smimed filter`: procmail (`:0 fw`, components.md §3) and
//! Dovecot's LDA with a Sieve `filter` action (Pigeonhole extprograms, §2) in a private
//! Dovecot instance on 127.0.0.1. Each delivers an encrypted and signed message into a Maildir,
//! decrypted and with its status; and when smimed exits 75 (passphrase command failed), the
//! original is delivered unchanged.

mod common;

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::dovecot::{mail_ids, Dovecot, Opts};
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
         :0\n* ^Subject: nopass\n{{\n  :0 fw\n  | {common} --passphrase-command false filter\n  :0 e\n  {{ EXITCODE=75 HOST }}\n}}\n\
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

    // smimed exits 75: with the recipe's `:0 e { EXITCODE=75 HOST }`, procmail defers the
    // delivery (75 to the MTA) instead of delivering a message whose status fields a sender
    // may have forged.
    let mut msg2 =
        b"X-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\n".to_vec();
    msg2.extend_from_slice(&encrypted_to_bob("nopass"));
    let out = run_with_stdin(Command::new("procmail").arg("-m").arg(&rcfile), &msg2);
    let log = std::fs::read_to_string(dir.join("procmail.log")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(75), "procmail: {log}");
    assert_eq!(
        maildir_new(&dir.join("mail/inbox")).len(),
        1,
        "nothing delivered: {log}"
    );

    // procmail as the delivery agent writes an mbox postmark ("From " line, here from -f) and
    // hands it to the filter; into an mbox, the message must still start with it (regression:
    // the status fields used to come first and broke the mbox).
    let rc = format!(
        "SHELL=/bin/sh\nLOCKSLEEP=1\nLOGFILE={d}/procmail.log\n:0 fw\n| {common} --passphrase-file {pass} filter\n:0:\n{d}/mbox\n",
        d = dir.display(),
        pass = pass.display()
    );
    let rcfile = dir.join("procmailrc-mbox");
    write_mode(&rcfile, rc.as_bytes(), 0o644);
    for subject in ["mbox one", "mbox two"] {
        let out = run_with_stdin(
            Command::new("procmail")
                .args(["-f", "alice@example.org", "-m"])
                .arg(&rcfile),
            &encrypted_to_bob(subject),
        );
        assert_eq!(out.status.code(), Some(0));
    }
    let mbox = std::fs::read(dir.join("mbox")).unwrap();
    assert!(
        mbox.starts_with(b"From alice@example.org "),
        "{}",
        String::from_utf8_lossy(&mbox[..60])
    );
    let text = String::from_utf8_lossy(&mbox);
    let postmarks: Vec<usize> = text
        .match_indices("\nFrom alice@example.org ")
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(postmarks.len(), 1, "two messages, two postmarks");
    for start in [0, postmarks[0]] {
        let msg = &mbox[start..];
        let second_line = msg.split(|&b| b == b'\n').nth(1).unwrap();
        assert!(second_line.starts_with(b"X-Smime-Status: encryption=decrypted; signature=valid"));
    }
    assert_eq!(text.matches(SECRET).count(), 2);
}

#[test]
fn dovecot_lda_sieve_filter_runs_smimed() {
    let p = pki();
    // README's recipe: when the filter fails, the status fields in the message are a sender's
    // and are removed before any rule reads them.
    let sieve = "require [\"vnd.dovecot.filter\", \"fileinto\", \"mailbox\", \"editheader\"];\n\
        if header :contains \"subject\" \"nopass\" {\n  if not filter \"smimed-nopass\" {\n    deleteheader \"X-Smime-Status\";\n    deleteheader :contains \"Authentication-Results\" \"mx.test\";\n  }\n} else {\n  filter \"smimed-filter\";\n}\n\
        if header :contains \"X-Smime-Status\" \"signature=valid\" {\n  fileinto :create \"Signed\";\n  stop;\n}\n";
    let dc = Dovecot::start(Opts {
        sieve: Some(sieve),
        ..Opts::default()
    });
    let t = dc.path().to_path_buf();
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
        chown(f, Some(mail_ids().0), Some(mail_ids().1)).unwrap();
    }
    let root = t.join("root.pem");
    std::fs::copy(&p.root_path, &root).unwrap();
    let bin = t.join("smimed");
    std::fs::copy(smimed_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
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

    let msg = encrypted_to_bob("lda");
    let out = dc.deliver(&msg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lda: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Sieve rule matched smimed's status word: the message went to the Signed folder.
    let signed = maildir_new(&dc.maildir().join(".Signed"));
    assert_eq!(signed.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status_count(&signed[0]), 1);
    assert_words(&status_of(&signed[0]), "decrypted", "valid");
    assert!(String::from_utf8_lossy(&signed[0]).contains(SECRET));

    // smimed exits 75: Sieve's filter leaves the message as it was, the recipe removes the
    // forged status fields, and it is kept in INBOX (not filed as signed).
    let mut msg2 =
        b"X-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\n\
Authentication-Results: mx.test; smime=pass body.smime-identifier=ceo@example.org\n"
            .to_vec();
    msg2.extend_from_slice(&encrypted_to_bob("nopass"));
    let out = dc.deliver(&msg2);
    assert_eq!(
        out.status.code(),
        Some(0),
        "lda: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inbox = maildir_new(&dc.maildir());
    assert_eq!(inbox.len(), 1);
    assert_eq!(status_count(&inbox[0]), 0);
    assert!(!String::from_utf8_lossy(&inbox[0]).contains("smime=pass"));
    assert!(!String::from_utf8_lossy(&inbox[0]).contains(SECRET));
    assert!(String::from_utf8_lossy(&inbox[0]).contains("Subject: nopass"));
}

/// Status fields hidden after a bare CR in another field (Python's email package, and so any
/// tagging script built on it, ends a header line at a bare CR) are forgeries too: delivered
/// through procmail, the message reads in Python with our one X-Smime-Status and no
/// Authentication-Results of ours but the one we wrote.
#[test]
fn status_fields_hidden_after_a_bare_cr_do_not_reach_the_mailbox() {
    let p = pki();
    let t = short_tmp("pmcr.");
    let dir = t.path();
    let rc = format!(
        "SHELL=/bin/sh\nLOCKSLEEP=1\nLOGFILE={d}/procmail.log\n:0 fw\n| {s} --authserv-id mx.test --trust {root} filter\n:0 e\n{{ EXITCODE=75 HOST }}\n:0\n{d}/inbox/\n",
        d = dir.display(),
        s = smimed_bin().display(),
        root = p.root_path.display(),
    );
    let rcfile = dir.join("procmailrc");
    write_mode(&rcfile, rc.as_bytes(), 0o644);
    let msg = b"From: attacker@example.net\nTo: bob@example.org\n\
        Subject: pay now\rX-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\r\
        Authentication-Results: mx.test; smime=pass body.smime-identifier=ceo@example.org\n\
        X-Other: a\rx-smime-status : signature=valid\n\
        X-Folded: b\rAuthentication-Results:\n mx.test; smime=pass body.smime-identifier=x@example.org\n\
        \nplain text\n";
    let out = run_with_stdin(Command::new("procmail").arg("-m").arg(&rcfile), msg);
    let log = std::fs::read_to_string(dir.join("procmail.log")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "procmail: {log}");
    let got = maildir_new(&dir.join("inbox"));
    assert_eq!(got.len(), 1, "{log}");
    let seen = python_status_fields(&got[0]);
    let status: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("X-Smime-Status "))
        .collect();
    assert_eq!(
        status,
        ["X-Smime-Status encryption=none; signature=none"],
        "{seen:?}"
    );
    let ours: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("Authentication-Results mx.test"))
        .collect();
    assert_eq!(
        ours,
        ["Authentication-Results mx.test; smime=none"],
        "{seen:?}"
    );
    // The plain message is otherwise delivered as it came.
    assert!(String::from_utf8_lossy(&got[0]).contains("plain text"));
}
