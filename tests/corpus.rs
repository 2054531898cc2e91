//! The conformance corpus: messages made by other software (Thunderbird/NSS, KDE/gpgsm, Apple
//! Mail, RFC 4134, BouncyCastle/Outlook/.NET, MimeKit, OpenSSL) copied into `tests/corpus/`
//! with their licences and SOURCE.txt. `tests/corpus/EXPECTED.tsv` gives, for every copied
//! message, how to feed it, the key and trust to use, and the expected X-Smime-Status words;
//! [`corpus_expectations`] runs every row through `smimed filter` and reports all mismatches.
//! [`every_corpus_message_has_a_row`] keeps the table complete.
//!
//! Validity is judged at the time of verification (the tests were written on 2026-11-26), so a
//! signer whose certificate expired long ago is `expired` even when its mail was fine then.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[derive(Debug)]
struct Row {
    line: usize,
    file: String,
    prep: String,
    keys: Vec<String>,
    pass: Option<String>,
    trust: Vec<String>,
    crl: Vec<String>,
    encryption: String,
    signature: String,
    checks: Vec<String>,
}

fn list(s: &str) -> Vec<String> {
    if s == "-" {
        Vec::new()
    } else {
        s.split(',').map(|x| x.trim().to_string()).collect()
    }
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(corpus_dir().join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let c: Vec<&str> = line.split('\t').collect();
        assert!(
            c.len() >= 9,
            "EXPECTED.tsv line {}: {} columns",
            i + 1,
            c.len()
        );
        out.push(Row {
            line: i + 1,
            file: c[0].to_string(),
            prep: c[1].to_string(),
            keys: list(c[2]),
            pass: match c[3] {
                "-" => None,
                "(empty)" => Some(String::new()),
                p => Some(p.to_string()),
            },
            trust: list(c[4]),
            crl: list(c[5]),
            encryption: c[6].to_string(),
            signature: c[7].to_string(),
            checks: if c[8] == "-" {
                Vec::new()
            } else {
                c[8].split('|').map(str::to_string).collect()
            },
        });
    }
    out
}

fn b64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    b64.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

/// Turns a corpus file into the message `smimed filter` gets, as the row's `prep` says:
/// `eml` as it is; `mbox` without the leading "From " line; `http` without the HTTP request
/// line (AS2); `entity:FROM` a bare MIME entity under outer headers; `der:SMIME-TYPE:FROM` raw
/// CMS as base64 application/pkcs7-mime; `detached:CONTENT-FILE:FROM` a raw detached signature
/// and its content file made into multipart/signed; `armor-p12` is handled by the key column.
fn prepare(row: &Row, data: &[u8]) -> Vec<u8> {
    let parts: Vec<&str> = row.prep.splitn(3, ':').collect();
    match parts[0] {
        "eml" => data.to_vec(),
        "mbox" | "http" => {
            let nl = data.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            data[nl..].to_vec()
        }
        "entity" => message(parts[1], "bob@example.com", "corpus", data),
        "der" => message(
            parts[2],
            "bob@example.com",
            "corpus",
            format!(
                "Content-Type: application/pkcs7-mime; {}name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                if parts[1].is_empty() {
                    String::new()
                } else {
                    format!("smime-type={}; ", parts[1])
                },
                b64_lines(data)
            )
            .as_bytes(),
        ),
        "detached" => {
            let content = std::fs::read(corpus_dir().join(parts[1])).expect("content file");
            let b = "corpus-boundary";
            let mut body = format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-1; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
            )
            .into_bytes();
            body.extend_from_slice(&content);
            body.extend_from_slice(
                format!(
                    "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{b}--\r\n",
                    b64_lines(data)
                )
                .as_bytes(),
            );
            message(parts[2], "bob@example.com", "corpus", &body)
        }
        p => panic!("line {}: unknown prep {p}", row.line),
    }
}

/// Key files are copied to a private folder with mode 0600 (git does not keep modes; smimed
/// refuses keys others can read). `armor:` in front of a name makes a PEM-armoured PKCS#12
/// ("-----BEGIN PKCS12-----") of it first.
fn private_copy(dir: &Path, name: &str) -> PathBuf {
    if let Some(spec) = name
        .strip_prefix("pkcs8:")
        .or_else(|| name.strip_prefix("pem:"))
    {
        // A PEM identity (key, then certificate) from a key file (PKCS#8 DER or PEM) and a
        // certificate file (DER or PEM).
        let (k, c) = spec.split_once('+').expect("KEY+CERT");
        let kb = std::fs::read(corpus_dir().join(k)).unwrap();
        let key = openssl::pkey::PKey::private_key_from_der(&kb)
            .or_else(|_| openssl::pkey::PKey::private_key_from_pem(&kb))
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let cb = std::fs::read(corpus_dir().join(c)).unwrap();
        let cert = openssl::x509::X509::from_der(&cb)
            .or_else(|_| openssl::x509::X509::from_pem(&cb))
            .unwrap_or_else(|e| panic!("{c}: {e}"));
        let mut pem = key.private_key_to_pem_pkcs8().unwrap();
        pem.extend(cert.to_pem().unwrap());
        let dst = dir.join(k.replace('/', "_") + ".identity.pem");
        std::fs::write(&dst, pem).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        return dst;
    }
    let (armor, name) = match name.strip_prefix("armor:") {
        Some(n) => (true, n),
        None => (false, name),
    };
    let src = corpus_dir().join(name);
    let mut data = std::fs::read(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
    if armor {
        data = format!(
            "-----BEGIN PKCS12-----\n{}-----END PKCS12-----\n",
            b64_lines(&data).replace("\r\n", "\n")
        )
        .into_bytes();
    }
    let dst = dir.join(format!(
        "{}{}",
        if armor { "armored-" } else { "" },
        name.replace('/', "_")
    ));
    std::fs::write(&dst, data).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

fn run_row(row: &Row, keydir: &Path) -> Result<(), String> {
    let data =
        std::fs::read(corpus_dir().join(&row.file)).map_err(|e| format!("{}: {e}", row.file))?;
    let msg = prepare(row, &data);
    let mut c = smimed();
    c.args(["--authserv-id", "mx.test"]);
    for k in &row.keys {
        c.arg("--key").arg(private_copy(keydir, k));
    }
    if let Some(p) = &row.pass {
        c.env("SMIMED_PASSPHRASE", p);
    }
    for t in &row.trust {
        c.arg("--trust").arg(corpus_dir().join(t));
    }
    for t in &row.crl {
        c.arg("--crl").arg(corpus_dir().join(t));
    }
    c.arg("filter");
    let out = run_with_stdin(&mut c, &msg);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) {
        return Err(format!("exit {:?}: {err}", out.status.code()));
    }
    if status_count(&out.stdout) != 1 {
        return Err("not exactly one X-Smime-Status".into());
    }
    let st = status_of(&out.stdout);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    if status_word(&st, "encryption") != Some(row.encryption.as_str()) {
        problems.push(format!("encryption: want {}", row.encryption));
    }
    if status_word(&st, "signature") != Some(row.signature.as_str()) {
        problems.push(format!("signature: want {}", row.signature));
    }
    // The Authentication-Results field (RFC 7281) carries the result of the verdict's signer.
    let ar = ar_values(&out.stdout, "mx.test");
    let want_ar = match row.signature.as_str() {
        "valid" => "smime=pass",
        "none" => "smime=none",
        "invalid" => "smime=fail",
        "error" => "smime=permerror",
        _ => "smime=policy",
    };
    if ar.len() != 1 || !ar[0].contains(want_ar) {
        problems.push(format!("Authentication-Results {ar:?} lacks {want_ar}"));
    }
    if row.signature == "valid"
        && ar
            .iter()
            .any(|a| a.contains("smime=fail") || a.contains("smime=policy"))
    {
        problems.push("valid but a signer failed".into());
    }
    for check in &row.checks {
        if let Some(t) = check.strip_prefix('+') {
            if !text.contains(t) {
                problems.push(format!("output lacks {t:?}"));
            }
        } else if let Some(t) = check.strip_prefix('-') {
            if text.contains(t) {
                problems.push(format!("output contains {t:?}"));
            }
        } else if check == "unchanged" {
            if strip_our_status(&out.stdout) != msg {
                problems.push("output is not the original".into());
            }
        } else if let Some((k, v)) = check.split_once('=') {
            if status_word(&st, k) != Some(v) {
                problems.push(format!("{k}: want {v}"));
            }
        } else {
            problems.push(format!("bad check {check:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} -- got: {st}", problems.join(", ")))
    }
}

#[test]
fn corpus_expectations() {
    let rows = rows();
    assert!(rows.len() > 100, "{} rows", rows.len());
    let keydir = tempfile::Builder::new()
        .prefix("smimed-corpus.")
        .tempdir_in("/tmp")
        .unwrap();
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (rows, failures, next) = (&rows, &failures, &next);
            let dir = keydir.path().join(format!("w{w}"));
            std::fs::create_dir(&dir).unwrap();
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(row) = rows.get(i) else { break };
                if let Err(e) = run_row(row, &dir) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("line {} {}: {e}", row.line, row.file));
                }
            });
        }
    });
    let mut f = failures.into_inner().unwrap();
    f.sort();
    assert!(
        f.is_empty(),
        "{} of {} corpus rows failed:\n{}",
        f.len(),
        rows.len(),
        f.join("\n")
    );
}

/// Files that are messages (or raw CMS) rather than keys, certificates or documentation.
fn is_message(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let non_message = [
        ".p12", ".pfx", ".pem", ".crt", ".cer", ".key", ".pri", ".crl", ".cfg", ".cnf", ".md",
        ".sst", ".kbx", ".toml", ".tsv",
    ];
    if non_message.iter().any(|e| name.ends_with(e)) {
        return false;
    }
    if matches!(
        name,
        "SOURCE.txt"
            | "LICENSE"
            | "COPYING"
            | "LICENSE.md"
            | "LICENSE-NOTE.txt"
            | "CC0-1.0.txt"
            | "README.txt"
            | "rfc4134.txt"
            | "expiration.txt"
            | "readme.txt"
            | "ExContent.bin"
    ) {
        return false;
    }
    true
}

#[test]
fn every_corpus_message_has_a_row() {
    let listed: BTreeSet<String> = rows().into_iter().map(|r| r.file).collect();
    let mut missing = Vec::new();
    let mut stack = vec![corpus_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(corpus_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if is_message(&rel) && !listed.contains(&rel) {
                missing.push(rel);
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "corpus files without an EXPECTED.tsv row:\n{}",
        missing.join("\n")
    );
    for f in &listed {
        assert!(
            corpus_dir().join(f).is_file(),
            "EXPECTED.tsv names a missing file {f}"
        );
    }
}

/// Extracts the end-entity certificate of a PKCS#12 with the openssl CLI (legacy provider for
/// RC2-40 bags).
fn p12_cert(p12: &Path, pass: &str) -> PathBuf {
    let out = openssl(
        &[
            "pkcs12",
            "-legacy",
            "-in",
            path_str(p12),
            "-passin",
            &format!("pass:{pass}"),
            "-nokeys",
            "-clcerts",
        ],
        b"",
    );
    let pem = String::from_utf8_lossy(&out);
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let dst = p12.with_extension("crt.pem");
    std::fs::write(&dst, &pem[start..]).unwrap();
    dst
}

/// PKCS#12 variants met in the wild decrypt: RC2-40 with an empty passphrase (BouncyCastle
/// johndoe.p12, a Windows-era export), MimeKit's RC2-40 .pfx (RSA and EC P-384 key agreement),
/// NSS's PBES2/AES .p12, and a PEM-armoured PKCS#12 ("-----BEGIN PKCS12-----", made here from
/// the NSS one since the only corpus sample is in the GPL-3 notmuch folder).
#[test]
fn pkcs12_variants_decrypt() {
    let dir = tempfile::Builder::new()
        .prefix("smimed-p12.")
        .tempdir_in("/tmp")
        .unwrap();
    let b = "bouncycastle-mail/mail/src/test/resources/org/bouncycastle/mail/smime/test/";
    let m = "mimekit/UnitTests/TestData/smime/";
    let tb = "thunderbird-comm-central/mailnews/test/data/smime/";
    for (key, pass) in [
        (format!("{b}johndoe.p12"), ""),
        (format!("{m}rsa/smime.pfx"), "no.secret"),
        (format!("{m}ec/smime.pfx"), "no.secret"),
        (format!("{tb}Bob.p12"), "nss"),
        (format!("armor:{tb}Bob.p12"), "nss"),
    ] {
        let plain_p12 = private_copy(dir.path(), key.strip_prefix("armor:").unwrap_or(&key));
        let cert = p12_cert(&plain_p12, pass);
        let keyfile = private_copy(dir.path(), &key);
        let enc = openssl(
            &[
                "cms",
                "-encrypt",
                "-aes256",
                "-outform",
                "SMIME",
                path_str(&cert),
            ],
            &sample_entity(&format!("secret for {key}")),
        );
        let msg = message("x@example.org", "y@example.org", "p12", &enc);
        let mut c = smimed();
        c.args([
            "--trust",
            path_str(&corpus_dir().join(tb).join("TestCA.pem")),
        ])
        .arg("--key")
        .arg(&keyfile)
        .env("SMIMED_PASSPHRASE", pass)
        .arg("filter");
        let out = run_with_stdin(&mut c, &msg);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = status_of(&out.stdout);
        assert_words(&st, "decrypted", "none");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("secret for {key}")),
            "{key}"
        );
        // A wrong passphrase is a configuration error, not a silent pass (a PKCS#12 without a
        // passphrase opens whatever is configured).
        if !pass.is_empty() {
            let out = run_with_stdin(c.env("SMIMED_PASSPHRASE", "wrong"), &msg);
            assert_eq!(out.status.code(), Some(78), "{key} with a wrong passphrase");
            assert!(out.stdout.is_empty());
        }
    }
}

/// `smimed trust list` on Microsoft serialized stores: one line per certificate with its
/// SHA-256 fingerprint, and a mark exactly where the store's property 9 (CERT_ENHKEY_USAGE)
/// leaves out emailProtection. The expectation comes from walking the .sst here, independently
/// of src/sst.rs ([MS-OSHARED] 2.3.9.1: 8-byte header, then {propId, 1, length, value}).
#[test]
fn sst_trust_list_lines_and_property_9_marks() {
    const EMAIL_PROTECTION: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];
    for (file, count) in [
        ("ms-sst/hilti/data.ms-root-certs.sst", 217),
        ("ms-sst/sarif-pattern-matcher/SEC103_024.MicrosoftSerializedCertificateStoreFile_default.sst", 1),
    ] {
        let data = std::fs::read(corpus_dir().join(file)).unwrap();
        assert_eq!(&data[4..8], b"CERT");
        let mut expected = std::collections::BTreeMap::new(); // fingerprint -> marked
        let mut pos = 8;
        let mut eku: Option<Vec<u8>> = None;
        while pos + 12 <= data.len() {
            let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
            let (id, len) = (word(pos), word(pos + 8));
            let value = &data[pos + 12..pos + 12 + len];
            pos += 12 + len;
            match id {
                0 => break,
                9 => eku = Some(value.to_vec()),
                0x20 => {
                    let cert = openssl::x509::X509::from_der(value).unwrap();
                    let fp = cert.digest(openssl::hash::MessageDigest::sha256()).unwrap();
                    let fp: String = fp.iter().map(|b| format!("{b:02x}")).collect();
                    let marked = eku
                        .take()
                        .is_some_and(|e| !e.windows(EMAIL_PROTECTION.len()).any(|w| w == EMAIL_PROTECTION));
                    expected.insert(fp, marked);
                }
                _ => {}
            }
        }
        assert_eq!(expected.len(), count, "{file}");
        let out = run_with_stdin(
            smimed().args(["trust", "list", "--trust"]).arg(corpus_dir().join(file)),
            b"",
        );
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), count, "{file}: one line per certificate");
        let mut marks = 0;
        for l in &lines {
            let cols: Vec<&str> = l.split('\t').collect();
            assert!(cols.len() >= 3, "{l}");
            let want = expected.get(cols[0]).unwrap_or_else(|| panic!("unknown fingerprint {}", cols[0]));
            let has_mark = cols.get(3).is_some_and(|m| m.contains("not for email"));
            assert_eq!(has_mark, *want, "{l}");
            marks += usize::from(has_mark);
        }
        if count == 217 {
            assert!(marks > 0, "the Windows root store restricts some roots");
        }
    }
}

/// BouncyCastle's `test256.message` wraps a 192-bit content key under the AES-256 OID. OpenSSL
/// decrypts such content with a random key unless told to report the bad key (its
/// countermeasure against Bleichenbacher's attack), and random-key garbage passes CBC's padding
/// check once in 256 tries: it was then reported as `encryption=decrypted`. 1,500 tries in one
/// `watch --once` (each with a fresh random key on the old code; about 6 would pass) must all
/// say `failed`.
#[test]
fn an_undecryptable_content_key_never_yields_decrypted_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let t = "bouncycastle-mail/mail/src/test/resources/org/bouncycastle/mail/smime/test/";
    let key = private_copy(dir.path(), &format!("pem:{t}key.pem+{t}cert.pem"));
    let msg = std::fs::read(corpus_dir().join(format!("{t}test256.message"))).unwrap();
    let md = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let n = 1500;
    for i in 0..n {
        std::fs::write(md.join("new").join(format!("1800000000.M{i}P1.t")), &msg).unwrap();
    }
    let out = smimed()
        .args(["--authserv-id", "mx.test", "--key"])
        .arg(&key)
        .args(["watch", "--once", "--no-archive"])
        .arg(&md)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{n} processed (0 decrypted")),
        "garbage reported as decrypted: {err}"
    );
}
