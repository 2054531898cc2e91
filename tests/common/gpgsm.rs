//! gpgsm as a test peer (components.md §8): a private GNUPGHOME with minimal S2K cost, the
//! test root trusted through trustlist.txt, never a prompt; its agent is stopped on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use super::pki::{pki, User, P12_PASS};
use super::{path_str, run_with_stdin};

/// gpgsm in a private GNUPGHOME that trusts the test root and holds the given users' keys.
pub struct Gpgsm {
    pub home: tempfile::TempDir,
}

impl Gpgsm {
    pub fn new(users: &[&User]) -> Gpgsm {
        let p = pki();
        let home = tempfile::Builder::new()
            .prefix("gs")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\nno-allow-mark-trusted\ns2k-count 65536\ndisable-scdaemon\n",
        )
        .expect("agent conf");
        std::fs::write(
            home.path().join("gpgsm.conf"),
            "disable-crl-checks\ndisable-dirmngr\n",
        )
        .expect("gpgsm conf");
        let fpr = p
            .root
            .digest(openssl::hash::MessageDigest::sha1())
            .expect("sha1")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        std::fs::write(
            home.path().join("trustlist.txt"),
            format!("{fpr} S relax\n"),
        )
        .expect("trustlist");
        std::fs::write(home.path().join("pass"), P12_PASS).expect("pass");
        let g = Gpgsm { home };
        for f in [&p.root_path, &p.intermediate_path] {
            let out = g.run(&["--import", path_str(f)], None);
            assert!(
                out.status.success(),
                "gpgsm import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for u in users {
            g.import_key(u);
        }
        g
    }

    /// Imports `u`'s key from its legacy PKCS#12. gpgsm 2.2's PKCS#12 reader derives a wrong
    /// 3DES key for about one random salt in seventy (measured: 2 of 150 fresh exports of the
    /// same key failed with "decryption failed", every one of them opens with openssl); the
    /// 40-bit RC2 certificate bag, whose key fits one SHA-1 block, never fails. So a failed
    /// import is retried with a fresh export (new salt) made by the openssl CLI here.
    fn import_key(&self, u: &User) {
        let mut out = self.run(&["--import", path_str(&u.p12_legacy_path)], None);
        for attempt in 0..8 {
            if out.status.success() {
                return;
            }
            let again = self.home.path().join(format!("{}-{attempt}.p12", u.name));
            let st = Command::new("openssl")
                .args(["pkcs12", "-export", "-legacy", "-passout"])
                .arg(format!("pass:{P12_PASS}"))
                .arg("-inkey")
                .arg(&u.key_path)
                .arg("-in")
                .arg(&u.chain_path)
                .arg("-out")
                .arg(&again)
                .status()
                .expect("openssl pkcs12");
            assert!(st.success(), "openssl pkcs12 -legacy failed");
            out = self.run(&["--import", path_str(&again)], None);
        }
        panic!(
            "gpgsm import {}: {}",
            u.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs gpgsm in batch mode (passphrase on fd 3, status lines on stderr).
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let pass = self.home.path().join("pass");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("exec gpgsm --batch --pinentry-mode loopback --passphrase-fd 3 --status-fd 4 \"$@\" 3<\"$PASSFILE\" 4>&2")
            .arg("gpgsm")
            .args(args)
            .env("GNUPGHOME", self.home.path())
            .env("PASSFILE", &pass);
        run_with_stdin(&mut c, stdin.unwrap_or(b""))
    }

    /// Imports a certificate (no key).
    pub fn import_cert(&self, path: &Path) {
        let out = self.run(&["--import", path_str(path)], None);
        assert!(
            out.status.success(),
            "gpgsm import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs gpgsm with `args` on `data` (written to a file named last); panics unless it
    /// succeeds; returns its stdout.
    pub fn run_on(&self, args: &[&str], data: &[u8]) -> Vec<u8> {
        let input = self.home.path().join("in.data");
        std::fs::write(&input, data).expect("write");
        let mut all: Vec<&str> = args.to_vec();
        all.push(path_str(&input));
        let out = self.run(&all, None);
        assert!(
            out.status.success(),
            "gpgsm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Decrypts a DER CMS object; Some(plaintext) when gpgsm reported DECRYPTION_OKAY.
    pub fn decrypt(&self, der: &[u8]) -> Option<Vec<u8>> {
        let input = self.home.path().join("in.p7m");
        let output = self.home.path().join("out.bin");
        std::fs::write(&input, der).expect("write");
        let _ = std::fs::remove_file(&output);
        let out = self.run(
            &["--decrypt", "-o", path_str(&output), path_str(&input)],
            None,
        );
        let status = String::from_utf8_lossy(&out.stderr);
        if status.contains("[GNUPG:] DECRYPTION_OKAY") {
            std::fs::read(&output).ok()
        } else {
            eprintln!("gpgsm decrypt: {status}");
            None
        }
    }

    /// Verifies an opaque signed-data (DER); Some(content) when GOODSIG, VALIDSIG and
    /// TRUST_FULLY were reported.
    pub fn verify_opaque(&self, der: &[u8]) -> Option<Vec<u8>> {
        let input = self.home.path().join("in.p7m");
        let output = self.home.path().join("out.bin");
        std::fs::write(&input, der).expect("write");
        let _ = std::fs::remove_file(&output);
        let out = self.run(
            &["--verify", "-o", path_str(&output), path_str(&input)],
            None,
        );
        let s = String::from_utf8_lossy(&out.stderr);
        if s.contains("GOODSIG") && s.contains("VALIDSIG") && s.contains("TRUST_FULLY") {
            std::fs::read(&output).ok()
        } else {
            eprintln!("gpgsm verify: {s}");
            None
        }
    }

    /// Verifies a detached signature over `data`.
    pub fn verify_detached(&self, sig: &[u8], data: &[u8]) -> bool {
        let s_path = self.home.path().join("sig.p7s");
        let d_path = self.home.path().join("data.bin");
        std::fs::write(&s_path, sig).expect("write");
        std::fs::write(&d_path, data).expect("write");
        let out = self.run(&["--verify", path_str(&s_path), path_str(&d_path)], None);
        let s = String::from_utf8_lossy(&out.stderr);
        // gpgsm may print GOODSIG and still fail (exit 2: "a 256 bit hash is not valid for a
        // 384 bit ECC key"): its exit status counts too.
        let ok = out.status.success()
            && s.contains("GOODSIG")
            && s.contains("VALIDSIG")
            && s.contains("TRUST_FULLY");
        if !ok {
            eprintln!("gpgsm verify: {s}");
        }
        ok
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        // Stops the gpg-agent this GNUPGHOME started (and only that one).
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", self.home.path())
            .output();
    }
}
