//! Helpers for the outbound tests: a recording MTA, running `smimed sendmail` / `smimed certs`
//! against a private certificate store, and the peers that read what smimed writes (the openssl
//! command line and gpgsm in a private GNUPGHOME).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::pki::{pki, User, P12_PASS};
use super::{path_str, run_with_stdin, smimed};

/// A private folder with a certificate store and a recording MTA script.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
    pub out: PathBuf,
    pub mta: PathBuf,
}

/// One message the recording MTA received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub args: Vec<String>,
    pub message: Vec<u8>,
}

impl Recorded {
    /// The recipients: the arguments after `--`.
    pub fn recipients(&self) -> Vec<String> {
        match self.args.iter().position(|a| a == "--") {
            Some(i) => self.args[i + 1..].to_vec(),
            None => Vec::new(),
        }
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("smo")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let certs = dir.path().join("certs");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        let mta = dir.path().join("mta.sh");
        std::fs::write(
            &mta,
            format!(
                "#!/bin/sh\n\
                 # records argv (one per line) and stdin; exit code from $FAKE_MTA_RC\n\
                 n=$(date +%s%N)\n\
                 for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {out}/$n.args\n\
                 cat > {out}/$n.eml\n\
                 exit ${{FAKE_MTA_RC:-0}}\n",
                out = out.display()
            ),
        )
        .expect("mta");
        std::fs::set_permissions(&mta, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Env {
            dir,
            certs,
            out,
            mta,
        }
    }

    /// `smimed --trust ROOT --certs DIR [--key SENDER.p12] sendmail --mta MTA ARGS…` on `msg`.
    pub fn sendmail(&self, sender: Option<&User>, args: &[&str], msg: &[u8]) -> Output {
        self.sendmail_env(sender, args, msg, &[])
    }

    pub fn sendmail_env(
        &self,
        sender: Option<&User>,
        args: &[&str],
        msg: &[u8],
        env: &[(&str, &str)],
    ) -> Output {
        let p = pki();
        let mut c = smimed();
        c.arg("sendmail")
            .arg("--trust")
            .arg(&p.root_path)
            .arg("--certs")
            .arg(&self.certs)
            .arg("--mta")
            .arg(&self.mta);
        if let Some(u) = sender {
            c.arg("--key")
                .arg(&u.p12_path)
                .env("SMIMED_PASSPHRASE", P12_PASS);
        }
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_with_stdin(&mut c, msg)
    }

    /// `smimed --trust ROOT --certs DIR certs ARGS…`.
    pub fn certs_cmd(&self, args: &[&str]) -> Output {
        let p = pki();
        let mut c = smimed();
        c.arg("--trust")
            .arg(&p.root_path)
            .arg("--certs")
            .arg(&self.certs);
        c.arg("certs").args(args);
        run_with_stdin(&mut c, b"")
    }

    /// Imports certificate files into the store; panics on failure.
    pub fn import(&self, files: &[&Path]) {
        let mut args = vec!["import"];
        args.extend(files.iter().map(|f| path_str(f)));
        let out = self.certs_cmd(&args);
        assert!(
            out.status.success(),
            "certs import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Asserts that `out` (a sendmail run) failed with `code` and that the MTA received nothing;
    /// `what` names the case in the failure message.
    pub fn assert_refused(&self, out: &Output, code: i32, what: &str) {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(self.take_recorded().is_empty(), "{what}: MTA called");
    }

    /// What the MTA received, oldest first; the recording is then cleared.
    pub fn take_recorded(&self) -> Vec<Recorded> {
        let mut stems: Vec<String> = std::fs::read_dir(&self.out)
            .expect("out")
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".eml"))
                    .map(str::to_string)
            })
            .collect();
        stems.sort();
        let mut out = Vec::new();
        for s in stems {
            let args =
                std::fs::read_to_string(self.out.join(format!("{s}.args"))).unwrap_or_default();
            let message = std::fs::read(self.out.join(format!("{s}.eml"))).expect("eml");
            let _ = std::fs::remove_file(self.out.join(format!("{s}.args")));
            let _ = std::fs::remove_file(self.out.join(format!("{s}.eml")));
            out.push(Recorded {
                args: args.lines().map(str::to_string).collect(),
                message,
            });
        }
        out
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        p
    }
}

/// Asserts a run succeeded, showing its stderr otherwise.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A message as a mail client hands it to sendmail (LF line endings).
pub fn client_message(from: &str, to: &str, cc: Option<&str>, extra: &str, body: &str) -> Vec<u8> {
    let mut m = format!("From: {from}\nTo: {to}\n");
    if let Some(cc) = cc {
        m.push_str(&format!("Cc: {cc}\n"));
    }
    m.push_str(extra);
    m.push_str(
        "Subject: outbound test\nDate: Thu, 26 Nov 2026 12:00:00 +0000\n\
         Message-ID: <outbound@test>\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
    );
    m.push_str(body);
    m.into_bytes()
}

/// `openssl cms -decrypt` of an S/MIME message as `user`; None when openssl refuses.
pub fn openssl_decrypt(user: &User, msg: &[u8]) -> Option<Vec<u8>> {
    let out = run_with_stdin(
        Command::new("openssl").args([
            "cms",
            "-decrypt",
            "-recip",
            path_str(&user.cert_path),
            "-inkey",
            path_str(&user.key_path),
        ]),
        msg,
    );
    out.status.success().then_some(out.stdout)
}

/// `openssl cms -verify` (S/MIME input: multipart/signed or opaque) against the test root,
/// S/MIME signing purpose; returns the signed content, panics when verification fails.
pub fn openssl_verify(mime_entity: &[u8]) -> Vec<u8> {
    let p = pki();
    let out = run_with_stdin(
        Command::new("openssl").args([
            "cms",
            "-verify",
            "-CAfile",
            path_str(&p.root_path),
            "-purpose",
            "smimesign",
        ]),
        mime_entity,
    );
    assert!(
        out.status.success(),
        "openssl cms -verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The DER CMS object inside an application/pkcs7-mime message or entity.
pub fn pkcs7_der(msg: &[u8]) -> Vec<u8> {
    let parsed = mailparse::parse_mail(msg).expect("parse");
    assert!(
        parsed.ctype.mimetype.contains("pkcs7-mime"),
        "not pkcs7-mime: {}",
        parsed.ctype.mimetype
    );
    parsed.get_body_raw().expect("body")
}

/// The smime-type parameter of the root Content-Type.
pub fn smime_type(msg: &[u8]) -> String {
    let parsed = mailparse::parse_mail(msg).expect("parse");
    parsed
        .ctype
        .params
        .get("smime-type")
        .cloned()
        .unwrap_or_default()
}

/// Issuer/serial pairs the RecipientInfos name, checked against the users: which users are
/// recipients. Uses `openssl cms -cmsout -print`, looking for each user's serial.
pub fn recipient_names(msg: &[u8], users: &[&User]) -> Vec<String> {
    let der = pkcs7_der(msg);
    let printed = super::openssl(&["cms", "-cmsout", "-print", "-inform", "DER"], &der);
    let text = String::from_utf8_lossy(&printed).to_ascii_lowercase();
    let mut out = Vec::new();
    for u in users {
        let bn = u.cert.serial_number().to_bn().expect("bn");
        let hex = bn.to_hex_str().expect("hex").to_ascii_lowercase();
        let dec = bn.to_dec_str().expect("dec").to_string();
        // openssl prints serials as "serialnumber: 0x…" or in decimal.
        let found = text.lines().any(|l| {
            l.trim_start().starts_with("serialnumber:")
                && (l.contains(&format!("0x{hex}")) || l.trim_end().ends_with(&format!(" {dec}")))
        });
        if found {
            out.push(u.name.to_string());
        }
    }
    out
}

/// The number of RecipientInfo / RecipientEncryptedKey entries named by issuer and serial.
pub fn recipient_count(msg: &[u8]) -> usize {
    let der = pkcs7_der(msg);
    let printed = super::openssl(&["cms", "-cmsout", "-print", "-inform", "DER"], &der);
    String::from_utf8_lossy(&printed)
        .lines()
        .filter(|l| {
            l.trim_start()
                .to_ascii_lowercase()
                .starts_with("serialnumber:")
        })
        .count()
}

/// The two parts of a multipart/signed message: the exact signed bytes (CRLF canonical) and
/// the decoded signature.
pub fn split_signed(msg: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let parsed = mailparse::parse_mail(msg).expect("parse");
    assert_eq!(parsed.ctype.mimetype, "multipart/signed");
    let boundary = parsed
        .ctype
        .params
        .get("boundary")
        .expect("boundary")
        .clone();
    let text = msg.to_vec();
    let delim = format!("--{boundary}");
    let crlf = smimed::mime::canonical_crlf(&text);
    let s = String::from_utf8_lossy(&crlf).into_owned();
    let first = s.find(&format!("{delim}\r\n")).expect("first boundary") + delim.len() + 2;
    let second = s[first..]
        .find(&format!("\r\n{delim}\r\n"))
        .expect("second")
        + first;
    let signed = crlf[first..second].to_vec();
    let sig = parsed.subparts[1].get_body_raw().expect("sig");
    (signed, sig)
}
