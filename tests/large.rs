//! Large messages (over pipeline::LARGE_MESSAGE): stdin is spilled to an unnamed temporary file,
//! the root body is decoded from it, a large envelope is decrypted without OpenSSL copying it,
//! and a sign-then-encrypt inner layer is base64-decoded while it is decrypted. Each path must
//! give exactly what the in-memory path gives, and the failure paths must still deliver the
//! original byte for byte.

mod common;

use common::pki::pki;
use common::*;

/// A MIME entity of about `mb` megabytes: text, then a base64 attachment of random bytes.
fn big_entity(mb: usize) -> Vec<u8> {
    use base64::Engine;
    let mut raw = vec![0u8; mb * 1024 * 1024 * 3 / 4];
    openssl::rand::rand_bytes(&mut raw).expect("random");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let mut e = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nthe large report\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for line in b64.as_bytes().chunks(76) {
        e.extend_from_slice(line);
        e.extend_from_slice(b"\r\n");
    }
    e.extend_from_slice(b"--b--\r\n");
    e
}

fn filter_file(user: &common::pki::User, path: &std::path::Path) -> std::process::Output {
    common::smimed_as(user)
        .args(["filter", "--input"])
        .arg(path)
        .output()
        .expect("run smimed")
}

#[test]
fn large_signed_then_encrypted_message_is_decrypted_and_verified_both_ways() {
    let p = pki();
    let entity = big_entity(20);
    let signed = sign_as(&p.alice, false, &["-binary"], &entity);
    let enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &signed);
    let msg = message("alice@example.org", "bob@example.org", "big", &enc);
    assert!(msg.len() > 24 * 1024 * 1024, "really large: {}", msg.len());

    // stdin (spilled to a temporary file) and --input FILE give the same result.
    let out = filter_as(Some(&p.bob), &[], &msg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_of(&out.stdout);
    assert_words(&st, "decrypted", "valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.eml");
    std::fs::write(&path, &msg).expect("write");
    let out2 = filter_file(&p.bob, &path);
    assert!(out2.status.success());
    assert_eq!(out.stdout, out2.stdout, "stdin and --input agree");

    // The delivered body is the signed entity, byte for byte (in the message's CRLF).
    let text = &out.stdout;
    let at = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end")
        + 4;
    let body_start = entity
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("entity header end")
        + 4;
    assert_eq!(&text[at..], &entity[body_start..], "content intact");

    // The Maildir watcher reads it in place the same way and writes the same bytes.
    let md = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).expect("mkdir");
    }
    std::fs::write(md.join("new").join("1800000000.M1P1.big"), &msg).expect("deliver");
    let w = common::smimed_as(&p.bob)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .args(["watch", "--once"])
        .arg(&md)
        .output()
        .expect("run smimed watch");
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let copy = std::fs::read_dir(md.join("new"))
        .expect("new/")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("smimed="))
        .expect("the processed copy");
    assert_eq!(std::fs::read(copy.path()).expect("copy"), out.stdout);
}

#[test]
fn large_gcm_message_is_decrypted_and_a_tampered_one_releases_nothing() {
    let p = pki();
    let entity = big_entity(18);
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm", "-binary"], &entity);
    let msg = message("alice@example.org", "bob@example.org", "gcm", &enc);
    let out = filter_as(Some(&p.bob), &[], &msg);
    assert!(out.status.success());
    let st = status_of(&out.stdout);
    assert_words(&st, "decrypted", "none");
    assert!(String::from_utf8_lossy(&out.stdout).contains("the large report"));

    // Flip one ciphertext bit deep inside the body: the tag check must fail, and the output
    // must be the original (no plaintext at all).
    let hdr_end = blank_line_end(&msg);
    let der = base64_body(&msg[hdr_end..]);
    let mut der = der;
    let i = der.len() - 1000;
    der[i] ^= 0x01;
    let tampered = [&msg[..hdr_end], rewrap(&der).as_slice()].concat();
    let out = filter_as(Some(&p.bob), &[], &tampered);
    assert!(out.status.success());
    let st = status_of(&out.stdout);
    assert_words(&st, "failed", "none");
    assert_eq!(
        status_word(&st, "reason"),
        Some("decryption-failed"),
        "{st}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("the large report"));
    assert_eq!(
        strip_our_status(&out.stdout),
        tampered,
        "original delivered"
    );
}

#[test]
fn large_message_not_for_us_is_delivered_unchanged() {
    let p = pki();
    let entity = big_entity(17);
    let enc = encrypt_to(&[&p.carol], &["-aes256", "-binary"], &entity);
    let msg = message("alice@example.org", "carol@example.org", "not bob", &enc);
    let out = filter_as(Some(&p.bob), &[], &msg);
    assert!(out.status.success());
    let st = status_of(&out.stdout);
    assert_words(&st, "failed", "none");
    assert_eq!(strip_our_status(&out.stdout), msg);
}

/// Index just past the first blank line (LF or CRLF).
fn blank_line_end(m: &[u8]) -> usize {
    let lf = m.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = m.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3);
    lf.into_iter().chain(crlf).min().expect("header end")
}

fn base64_body(b: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let clean: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .expect("base64 body")
}

fn rewrap(der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = Vec::new();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}
