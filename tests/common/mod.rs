//! Shared test helpers: the generated PKI, running the smimed binary, running peers (openssl).
#![allow(dead_code)]

pub mod dovecot;
pub mod pki;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The smimed binary cargo built for these tests.
pub fn smimed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smimed"))
}

/// Runs a command with `stdin` as its standard input and returns its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut sin = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// A `smimed` command with a clean environment (no user config is picked up).
pub fn smimed() -> Command {
    let mut c = Command::new(smimed_bin());
    c.env_remove("SMIMED_CONFIG")
        .env_remove("SMIMED_PASSPHRASE")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("RUST_LOG", "warn");
    c
}

/// `smimed --authserv-id mx.test --trust ROOT [--key P12 --passphrase-file] filter` on `msg`.
pub fn filter_as(user: Option<&pki::User>, extra: &[&str], msg: &[u8]) -> Output {
    let p = pki::pki();
    let mut c = smimed();
    c.args(["--authserv-id", "mx.test", "--trust"]).arg(&p.root_path);
    if let Some(u) = user {
        c.arg("--key").arg(&u.p12_path).env("SMIMED_PASSPHRASE", pki::P12_PASS);
    }
    c.args(extra).arg("filter");
    run_with_stdin(&mut c, msg)
}

/// The value of the X-Smime-Status field of a processed message (first line only).
pub fn status_of(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Smime-Status: "))
        .unwrap_or("")
        .to_string()
}

/// Looks up `key=` in an X-Smime-Status value.
pub fn status_word<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Runs `openssl` with arguments and stdin; panics with its stderr when it fails.
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run_with_stdin(Command::new("openssl").args(args), stdin);
    assert!(
        out.status.success(),
        "openssl {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A plain MIME entity to sign or encrypt.
pub fn sample_entity(text: &str) -> Vec<u8> {
    format!("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n")
        .into_bytes()
}

/// Outer headers for a message from `from` to `to`.
pub fn headers(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{}@test>\r\nMIME-Version: 1.0\r\n",
        subject.replace(' ', ".")
    )
}
