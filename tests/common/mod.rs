//! Shared test helpers: the generated PKI, running the smimed binary, running peers (openssl).
#![allow(dead_code)]

pub mod dovecot;
pub mod gpgsm;
pub mod outbound;
pub mod pki;
pub mod slapd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The smimed binary cargo built for these tests.
pub fn smimed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smimed"))
}

/// Runs `script` with `sh -c` in `dir`; panics (showing stderr) when it fails; returns stdout.
pub fn sh_in(dir: &std::path::Path, script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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
        .env("XDG_STATE_HOME", state_home("process"))
        .env("RUST_LOG", "warn");
    c
}

/// A state folder (`XDG_STATE_HOME`) under target/tmp for `what` in this test process, so
/// that no run writes into the user's own and no two runs share one.
pub fn state_home(what: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("state-{}-{what}", std::process::id()))
}

/// `smimed --authserv-id mx.test --trust ROOT`: the test root as the only anchor.
pub fn smimed_trusting() -> Command {
    let mut c = smimed();
    c.args(["--authserv-id", "mx.test", "--trust"])
        .arg(&pki::pki().root_path);
    c
}

/// [`smimed_trusting`] with `user`'s PKCS#12 key (`--key P12`, passphrase in the environment).
pub fn smimed_as(user: &pki::User) -> Command {
    let mut c = smimed_trusting();
    c.arg("--key")
        .arg(&user.p12_path)
        .env("SMIMED_PASSPHRASE", pki::P12_PASS);
    c
}

/// [`smimed_as`], or with the passphrase from `--passphrase-command CMD` (and none in the
/// environment) when `passphrase_command` is given.
pub fn smimed_as_with(user: &pki::User, passphrase_command: Option<&str>) -> Command {
    match passphrase_command {
        None => smimed_as(user),
        Some(cmd) => {
            let mut c = smimed_trusting();
            c.arg("--key")
                .arg(&user.p12_path)
                .args(["--passphrase-command", cmd]);
            c
        }
    }
}

/// `smimed --authserv-id mx.test --trust ROOT [--key P12] filter` on `msg`.
pub fn filter_as(user: Option<&pki::User>, extra: &[&str], msg: &[u8]) -> Output {
    let mut c = match user {
        Some(u) => smimed_as(u),
        None => smimed_trusting(),
    };
    c.args(extra).arg("filter");
    run_with_stdin(&mut c, msg)
}

/// The value of the (first) X-Smime-Status field of a processed message, unfolded.
pub fn status_of(out: &[u8]) -> String {
    header_fields(out)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("X-Smime-Status"))
        .map(|(_, v)| v)
        .unwrap_or_default()
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

/// Outer headers followed by an entity `openssl cms -outform SMIME` (or anything else) wrote;
/// the entity's own leading `MIME-Version` line is dropped (the outer headers carry one).
pub fn message(from: &str, to: &str, subject: &str, entity: &[u8]) -> Vec<u8> {
    let mut body = entity;
    for prefix in [&b"MIME-Version: 1.0\r\n"[..], b"MIME-Version: 1.0\n"] {
        if let Some(rest) = body.strip_prefix(prefix) {
            body = rest;
        }
    }
    [headers(from, to, subject).as_bytes(), body].concat()
}

/// `openssl cms -sign` as `signer` (with the intermediate CA certificate): `detached` gives multipart/signed,
/// else opaque application/pkcs7-mime. `extra` is appended to the arguments.
pub fn sign_as(signer: &pki::User, detached: bool, extra: &[&str], entity: &[u8]) -> Vec<u8> {
    let mut args = vec![
        "cms",
        "-sign",
        "-signer",
        path_str(&signer.cert_path),
        "-inkey",
        path_str(&signer.key_path),
        "-certfile",
        path_str(&pki::pki().intermediate_path),
        "-outform",
        "SMIME",
    ];
    if !detached {
        args.push("-nodetach");
    }
    args.extend_from_slice(extra);
    openssl(&args, entity)
}

/// `openssl cms -encrypt EXTRA... CERTS...` (S/MIME output).
pub fn encrypt_to(recipients: &[&pki::User], extra: &[&str], entity: &[u8]) -> Vec<u8> {
    let mut args = vec!["cms", "-encrypt", "-outform", "SMIME"];
    args.extend_from_slice(extra);
    for r in recipients {
        args.push(path_str(&r.cert_path));
    }
    openssl(&args, entity)
}

/// The header fields of a message (up to the blank line), each unfolded, as (name, value).
pub fn header_fields(out: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(out);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            fields.push((n.to_string(), v.trim().to_string()));
        }
    }
    fields
}

/// How many X-Smime-Status fields a message has.
pub fn status_count(out: &[u8]) -> usize {
    header_fields(out)
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Smime-Status"))
        .count()
}

/// The unfolded Authentication-Results values carrying `authserv_id`.
pub fn ar_values(out: &[u8], authserv_id: &str) -> Vec<String> {
    header_fields(out)
        .into_iter()
        .filter(|(n, v)| {
            n.eq_ignore_ascii_case("Authentication-Results")
                && v.split(';').next().map(str::trim) == Some(authserv_id)
        })
        .map(|(_, v)| v)
        .collect()
}

/// The output with our two status fields (the first two fields smimed writes) removed: for
/// byte-comparing "nothing else changed" against the input.
pub fn strip_our_status(out: &[u8]) -> Vec<u8> {
    let mut pos = 0;
    let mut removed = 0;
    while removed < 2 && pos < out.len() {
        let rest = &out[pos..];
        let lower: Vec<u8> = rest.iter().take(40).map(u8::to_ascii_lowercase).collect();
        if !(lower.starts_with(b"x-smime-status:") || lower.starts_with(b"authentication-results:"))
        {
            break;
        }
        // The field ends at the first line end not followed by a continuation line.
        let mut end = pos;
        loop {
            let nl = out[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(out.len(), |i| end + i + 1);
            end = nl;
            if end >= out.len() || !matches!(out[end], b' ' | b'\t') {
                break;
            }
        }
        pos = end;
        removed += 1;
    }
    out[pos..].to_vec()
}

/// Runs `smimed filter` and checks what every message must get: exit 0, exactly one
/// X-Smime-Status. Returns (status value, output as text, raw output).
pub fn filter_checked(
    user: Option<&pki::User>,
    extra: &[&str],
    msg: &[u8],
) -> (String, String, Vec<u8>) {
    let out = filter_as(user, extra, msg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "smimed filter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_count(&out.stdout), 1, "exactly one X-Smime-Status");
    let st = status_of(&out.stdout);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (st, text, out.stdout)
}

/// Asserts the encryption and signature words of a status.
#[track_caller]
pub fn assert_words(st: &str, encryption: &str, signature: &str) {
    assert_eq!(
        status_word(st, "encryption"),
        Some(encryption),
        "encryption in: {st}"
    );
    assert_eq!(
        status_word(st, "signature"),
        Some(signature),
        "signature in: {st}"
    );
}

/// Bare LF line endings everywhere (what a Maildir stores).
pub fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// A running `smimed agent`, killed when dropped.
pub struct Agent(pub std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (smimed with its global options) as `… agent --socket SOCKET` and waits until
/// the socket exists.
#[allow(dead_code)]
pub fn start_agent_with(mut cmd: Command, socket: &Path) -> Agent {
    let child = cmd
        .args(["agent", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .spawn()
        .expect("start agent");
    let agent = Agent(child);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "agent did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    agent
}

/// Just enough DER for tests that build or take apart CMS and PKCS#12 structures.
pub mod der {
    /// The TLV at `pos` of `d`: (tag, start of its content, end). Definite lengths only.
    pub fn tlv(d: &[u8], pos: usize) -> (u8, usize, usize) {
        let first = d[pos + 1] as usize;
        let (len, hdr) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            (
                (0..n).fold(0usize, |l, i| (l << 8) | d[pos + 2 + i] as usize),
                2 + n,
            )
        };
        (d[pos], pos + hdr, pos + hdr + len)
    }

    /// A TLV of `tag` around `content`.
    pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len();
        let mut out = vec![tag];
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let b: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|x| *x == 0)
                .collect();
            out.push(0x80 | b.len() as u8);
            out.extend(b);
        }
        out.extend_from_slice(content);
        out
    }
}

/// What Outlook publishes as userSMIMECertificate: a PKCS#7 SignedData (DER) signed by `u` over
/// empty content, carrying `u`'s certificate and the intermediate (made by the openssl CLI).
pub fn outlook_blob(u: &pki::User) -> Vec<u8> {
    openssl(
        &[
            "cms",
            "-sign",
            "-nodetach",
            "-binary",
            "-outform",
            "DER",
            "-signer",
            path_str(&u.cert_path),
            "-inkey",
            path_str(&u.key_path),
            "-certfile",
            path_str(&pki::pki().intermediate_path),
        ],
        b"",
    )
}

/// `cmd` (its program, arguments and environment) run under `prlimit LIMIT --` (util-linux),
/// e.g. `--fsize=200000` or `--nofile=40`.
#[allow(dead_code)]
pub fn under_prlimit(cmd: &Command, limit: &str) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(limit)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// How Python's email package (and so a tagging script) reads a delivered message: one line per
/// X-Smime-Status and Authentication-Results field it sees, `NAME VALUE` (value unfolded), then
/// `BODY` and the decoded leaf parts.
pub fn python_status_fields(msg: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m.eml");
    std::fs::write(&f, msg).expect("write");
    let py = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import email, email.policy, sys\n\
             m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.compat32)\n\
             for k in ('X-Smime-Status', 'Authentication-Results'):\n\
             \x20   for v in m.get_all(k) or []: print(k, ' '.join(v.split()))\n\
             print('BODY', ' '.join(str(p.get_payload(decode=True)) for p in m.walk() if not p.is_multipart()))\n",
        )
        .arg(&f)
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    String::from_utf8_lossy(&py.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
