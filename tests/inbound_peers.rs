//! Messages made at test time by real peers (the openssl command line, gpgsm), each with its
//! expected X-Smime-Status words, Authentication-Results result and plaintext (or its absence).

mod common;

use common::outbound::openssl_verify;
use common::pki::{pki, User};
use common::*;

const SECRET: &str = "the launch code is 4711";

fn ar(out: &[u8]) -> String {
    let v = ar_values(out, "mx.test");
    assert_eq!(v.len(), 1, "one Authentication-Results of ours: {v:?}");
    v[0].clone()
}

/// Encrypts SECRET to `to` with `extra` cipher options, filters as `me`, expects decryption.
fn roundtrip_encrypted(to: &[&User], me: &User, extra: &[&str]) -> (String, String) {
    let enc = encrypt_to(to, extra, &sample_entity(SECRET));
    let msg = message("alice@example.org", &me.email, "enc", &enc);
    let (st, text, out) = filter_checked(Some(me), &[], &msg);
    assert_words(&st, "decrypted", "none");
    assert!(text.contains(SECRET), "plaintext in output");
    assert!(
        !text.contains("application/pkcs7-mime"),
        "the envelope was replaced: {text}"
    );
    assert!(ar(&out).contains("smime=none"));
    (st, text)
}

#[test]
fn openssl_signed_then_encrypted_to_bob_is_decrypted_and_valid() {
    let p = pki();
    let entity = sample_entity("hello from alice");
    let signed = sign_as(&p.alice, false, &["-binary"], &entity);
    let enc = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-binary",
            path_str(&p.bob.cert_path),
        ],
        &signed,
    );
    let msg = message("Alice <alice@example.org>", "bob@example.org", "st e", &enc);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert_eq!(status_word(&st, "signer"), Some("alice@example.org"));
    assert_eq!(
        status_word(&st, "order"),
        Some("signed-then-encrypted"),
        "{st}"
    );
    assert!(
        status_word(&st, "integrity").is_none(),
        "a valid signature covers CBC: {st}"
    );
    assert!(text.contains("hello from alice"));
    assert!(ar(&out).contains("smime=pass"));
}

#[test]
fn aes256_cbc_to_bob_is_decrypted_without_integrity() {
    let p = pki();
    let (st, _) = roundtrip_encrypted(&[&p.bob], &p.bob, &["-aes256"]);
    // Unsigned CBC content: nothing protects its integrity.
    assert_eq!(status_word(&st, "integrity"), Some("no"), "{st}");
}

#[test]
fn aes256_gcm_authenveloped_is_decrypted_with_integrity() {
    let p = pki();
    let (st, text) = roundtrip_encrypted(&[&p.bob], &p.bob, &["-aes-256-gcm"]);
    assert_eq!(status_word(&st, "alg"), Some("authenveloped"), "{st}");
    assert!(
        status_word(&st, "integrity").is_none(),
        "GCM is authenticated: {st}"
    );
    assert!(text.contains("Content-Type: text/plain"));
}

#[test]
fn rsa_oaep_is_decrypted() {
    let p = pki();
    // -recip with -keyopt: the only RecipientInfo is the OAEP one.
    roundtrip_encrypted(
        &[],
        &p.bob,
        &[
            "-aes256",
            "-recip",
            path_str(&p.bob.cert_path),
            "-keyopt",
            "rsa_padding_mode:oaep",
        ],
    );
}

#[test]
fn rsa_oaep_sha256_with_gcm_is_decrypted() {
    let p = pki();
    roundtrip_encrypted(
        &[],
        &p.alice,
        &[
            "-aes-256-gcm",
            "-recip",
            path_str(&p.alice.cert_path),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    );
}

#[test]
fn ecdh_recipients_carol_and_erin_are_decrypted() {
    let p = pki();
    roundtrip_encrypted(&[&p.carol], &p.carol, &["-aes256"]);
    roundtrip_encrypted(&[&p.erin], &p.erin, &["-aes-256-gcm"]);
}

#[test]
fn several_recipients_each_can_decrypt() {
    let p = pki();
    let to = [&p.alice, &p.carol, &p.bob];
    for me in to {
        roundtrip_encrypted(&to, me, &["-aes-128-cbc"]);
    }
    // 3DES, which old clients still send.
    roundtrip_encrypted(&[&p.alice, &p.bob], &p.bob, &["-des3"]);
}

#[test]
fn several_keys_configured_the_right_one_is_picked() {
    let p = pki();
    let enc = encrypt_to(&[&p.carol], &["-aes256"], &sample_entity(SECRET));
    let msg = message("alice@example.org", "carol@example.org", "two keys", &enc);
    // bob's key first: it must not be tried on carol's RecipientInfo.
    let (st, text, _) = filter_checked(Some(&p.bob), &["--key", path_str(&p.carol.p12_path)], &msg);
    assert_words(&st, "decrypted", "none");
    assert!(text.contains(SECRET));
    // The same with a legacy (3DES/SHA-1) PKCS#12 of carol's.
    let (st, text, _) = filter_checked(
        Some(&p.bob),
        &["--key", path_str(&p.carol.p12_legacy_path)],
        &msg,
    );
    assert_words(&st, "decrypted", "none");
    assert!(text.contains(SECRET));
}

#[test]
fn detached_signature_is_valid_and_kept_verifiable() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("signed text"));
    let msg = message(
        "Alice <alice@example.org>",
        "bob@example.org",
        "detached",
        &signed,
    );
    let (st, text, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert_eq!(status_word(&st, "signer"), Some("alice@example.org"));
    let a = ar(&out);
    assert!(a.contains("smime=pass"), "{a}");
    assert!(a.contains("body.smime-identifier=alice@example.org"), "{a}");
    assert!(a.contains("body.smime-part=TEXT"), "{a}");
    assert!(a.contains("body.smime-serial="), "{a}");
    assert!(text.contains("multipart/signed"), "kept as it is");
    // Nothing but the status fields was added: a client can verify again.
    assert_eq!(strip_our_status(&out), msg);
    openssl(
        &[
            "cms",
            "-verify",
            "-CAfile",
            path_str(&p.root_path),
            "-purpose",
            "smimesign",
            "-out",
            "/dev/null",
        ],
        &strip_our_status(&out),
    );
}

/// Sign-then-sign with multipart/signed twice (nothing encrypted): both signatures are checked
/// and the root is delivered as it came, so that a client can verify the outer one again (it
/// was unwrapped, leaving a signature reported valid that no longer was in the message).
#[test]
fn a_multipart_signed_inside_a_multipart_signed_is_delivered_as_it_came() {
    let p = pki();
    let inner = sign_as(&p.alice, true, &[], &sample_entity("signed twice"));
    let outer = sign_as(&p.alice, true, &[], &inner);
    let msg = message("alice@example.org", "bob@example.org", "twice", &outer);
    let (st, text, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert_eq!(
        status_word(&st, "order"),
        Some("signed-then-signed"),
        "{st}"
    );
    assert!(!st.contains("partial"), "{st}");
    assert_eq!(ar(&out).matches("smime=pass").count(), 2, "{}", ar(&out));
    assert!(text.contains("signed twice"));
    assert_eq!(strip_our_status(&out), msg, "delivered as it came");
    let content = openssl_verify(&strip_our_status(&out));
    openssl_verify(&content);

    // Inside an envelope too: the decrypted content is delivered with both signatures.
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &outer);
    let msg = message("alice@example.org", "bob@example.org", "twice", &enc);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert_eq!(
        text.matches("Content-Type: application/pkcs7-signature")
            .count(),
        2,
        "{text}"
    );
    let content = openssl_verify(&strip_our_status(&out));
    openssl_verify(&content);
}

#[test]
fn detached_signature_with_lf_only_line_endings_verifies() {
    let p = pki();
    let signed = sign_as(
        &p.alice,
        true,
        &[],
        &sample_entity("stored in a Maildir\r\nline two"),
    );
    let msg = to_lf(&message(
        "alice@example.org",
        "bob@example.org",
        "lf",
        &signed,
    ));
    assert!(!msg.contains(&b'\r'));
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(!out.contains(&b'\r'), "LF message stays LF");
    assert_eq!(strip_our_status(&out), msg);
}

#[test]
fn detached_signature_over_modified_content_is_invalid() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("pay 10 EUR"));
    let msg = message("alice@example.org", "bob@example.org", "tampered", &signed);
    let tampered = String::from_utf8(msg)
        .unwrap()
        .replace("pay 10 EUR", "pay 99 EUR");
    let (st, _, out) = filter_checked(None, &[], tampered.as_bytes());
    assert_words(&st, "none", "invalid");
    assert!(ar(&out).contains("smime=fail"));
}

#[test]
fn opaque_signature_is_valid_and_unwrapped() {
    let p = pki();
    let signed = sign_as(&p.carol, false, &[], &sample_entity("opaque words"));
    let msg = message("carol@example.org", "bob@example.org", "opaque", &signed);
    let (st, text, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(text.contains("opaque words"));
    assert!(!text.contains("pkcs7-mime"), "unwrapped: {text}");
    assert!(text.contains("Subject: opaque"));
    assert!(ar(&out).contains("smime=pass"));
}

#[test]
fn opaque_signature_by_ec_signer_under_root_is_valid() {
    let p = pki();
    let signed = sign_as(&p.erin, false, &["-md", "sha384"], &sample_entity("ecdsa"));
    let msg = message("erin@example.org", "bob@example.org", "ec", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
}

#[test]
fn encrypt_then_sign_opaque_is_decrypted_and_valid() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &sample_entity(SECRET));
    let signed = sign_as(&p.alice, false, &[], &enc);
    let msg = message("alice@example.org", "bob@example.org", "ets", &signed);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    assert_eq!(
        status_word(&st, "order"),
        Some("encrypted-then-signed"),
        "{st}"
    );
    assert!(text.contains(SECRET));
}

#[test]
fn encrypt_then_sign_detached_is_decrypted_and_valid() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let signed = sign_as(&p.alice, true, &[], &enc);
    let msg = message("alice@example.org", "bob@example.org", "ets2", &signed);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    assert!(text.contains(SECRET));
    assert!(
        status_word(&st, "integrity").is_none(),
        "the signature covers the CBC: {st}"
    );
}

#[test]
fn expired_signer_is_expired() {
    let p = pki();
    let signed = sign_as(&p.expired, false, &[], &sample_entity("old"));
    let msg = message("expired@example.org", "bob@example.org", "expired", &signed);
    let (st, text, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "expired");
    assert!(text.contains("old"));
    assert!(ar(&out).contains("smime=policy"));
}

#[test]
fn signer_without_email_protection_is_untrusted() {
    let p = pki();
    let signed = sign_as(&p.noemail, true, &[], &sample_entity("server cert"));
    let msg = message("noemail@example.org", "bob@example.org", "noemail", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "untrusted");
    assert!(ar(&out).contains("smime=policy"));
}

#[test]
fn signer_under_untrusted_root_is_untrusted() {
    let p = pki();
    let signed = sign_as(&p.untrusted, false, &[], &sample_entity("who am i"));
    let msg = message(
        "untrusted@example.org",
        "bob@example.org",
        "untrusted",
        &signed,
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "untrusted");
    assert!(ar(&out).contains("smime=policy"));
}

#[test]
fn signer_is_not_from_is_mismatch() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("i am bob"));
    let msg = message(
        "Bob <bob@example.org>",
        "carol@example.org",
        "mismatch",
        &signed,
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "mismatch");
    assert_eq!(status_word(&st, "signer"), Some("alice@example.org"));
    assert!(ar(&out).contains("smime=policy"));
}

#[test]
fn two_from_fields_or_two_from_addresses_are_mismatch() {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity("from games"));
    let one = message("alice@example.org", "bob@example.org", "two froms", &signed);
    let two_fields = [b"From: mallory@example.net\r\n".as_slice(), &one].concat();
    let (st, _, out) = filter_checked(None, &[], &two_fields);
    assert_words(&st, "none", "mismatch");
    assert!(ar(&out).contains("smime=policy"), "{}", ar(&out));
    let two_addrs = message(
        "alice@example.org, mallory@example.net",
        "bob@example.org",
        "two addrs",
        &signed,
    );
    let (st, _, out) = filter_checked(None, &[], &two_addrs);
    assert_words(&st, "none", "mismatch");
    assert!(ar(&out).contains("smime=policy"), "{}", ar(&out));
    // Separators mailparse reads as part of a display name, where neomutt, notmuch and
    // Python's email package see a second address (shown first): never valid.
    for from in [
        "\"mallory@example.net\", <alice@example.org>",
        "\"mallory@example.net\"; <alice@example.org>",
        "\"Mallory\" mallory@example.net, <alice@example.org>",
    ] {
        let spoof = message(from, "bob@example.org", "display name games", &signed);
        let (st, _, _) = filter_checked(None, &[], &spoof);
        assert_words(&st, "none", "mismatch");
    }
    // Control: the same signature with a plain From is valid, and so is a quoted comma.
    let (st, _, out) = filter_checked(None, &[], &one);
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    let quoted = message(
        "\"Liddell, Alice\" <alice@example.org>",
        "bob@example.org",
        "quoted",
        &signed,
    );
    let (st, _, _) = filter_checked(None, &[], &quoted);
    assert_words(&st, "none", "valid");
}

#[test]
fn two_signers_one_of_them_bad_is_not_valid() {
    let p = pki();
    for bad in [&p.untrusted, &p.expired] {
        let signed = openssl(
            &[
                "cms",
                "-sign",
                "-nodetach",
                "-outform",
                "SMIME",
                "-signer",
                path_str(&p.alice.cert_path),
                "-inkey",
                path_str(&p.alice.key_path),
                "-signer",
                path_str(&bad.cert_path),
                "-inkey",
                path_str(&bad.key_path),
                "-certfile",
                path_str(&p.intermediate_path),
            ],
            &sample_entity("two signers"),
        );
        let msg = message(
            "alice@example.org",
            "bob@example.org",
            "two signers",
            &signed,
        );
        let (st, _, out) = filter_checked(None, &[], &msg);
        assert_ne!(status_word(&st, "signature"), Some("valid"), "{st}");
        let a = ar(&out);
        assert_eq!(a.matches("smime=").count(), 2, "one result per signer: {a}");
        assert!(
            a.contains("smime=pass"),
            "alice's own signature passes: {a}"
        );
    }
}

#[test]
fn encrypted_to_someone_else_fails_and_keeps_the_original() {
    let p = pki();
    let enc = encrypt_to(&[&p.alice], &["-aes256"], &sample_entity(SECRET));
    let msg = message(
        "carol@example.org",
        "alice@example.org",
        "not for bob",
        &enc,
    );
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "failed", "none");
    assert!(!text.contains(SECRET));
    assert_eq!(
        strip_our_status(&out),
        msg,
        "original unchanged but for the status"
    );
}

/// An envelope whose header section readers may take differently is not decrypted, and never
/// passes for mail sent in clear: `encryption=failed`, as over the size limit.
#[test]
fn an_ambiguous_envelope_is_failed_never_none() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let msg = message("carol@example.org", "bob@example.org", "ambiguous", &enc);
    let text = String::from_utf8_lossy(&msg).into_owned();
    let eol = if text.contains("base64\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let cte = format!("Content-Transfer-Encoding: base64{eol}");
    assert!(text.contains(&cte), "{text}");
    let variants = [
        // Two Content-Transfer-Encoding fields.
        text.replacen(&cte, &format!("{cte}{cte}"), 1),
        // A field with a blank before its colon (RFC 5322 obsolete syntax).
        format!("X-Mailer : foo{eol}{text}"),
    ];
    let ct_line = text
        .lines()
        .find(|l| l.starts_with("Content-Type: application/pkcs7-mime"))
        .expect("Content-Type")
        .trim_end_matches('\r')
        .to_string();
    let twice = |t: String| t.replacen(&cte, &format!("{cte}{cte}"), 1);
    let variants = variants.into_iter().chain([
        // Labelled signed-data: the DER decides, as when nothing is ambiguous.
        twice(text.replace("smime-type=enveloped-data", "smime-type=signed-data")),
        // An octet-stream named .p7m only in its Content-Disposition.
        twice(text.replace(&ct_line, "Content-Type: application/octet-stream")),
        // An RFC 2231 name in sections.
        twice(text.replace(
            &ct_line,
            "Content-Type: application/octet-stream; name*0=\"smime.p\"; name*1=\"7m\"",
        )),
        // Encrypt-then-sign: the envelope is inside the opaque signed layer.
        {
            let signed = sign_as(&p.carol, false, &[], &enc);
            let m = message("carol@example.org", "bob@example.org", "ambiguous", &signed);
            let m = String::from_utf8_lossy(&m).into_owned();
            let cte_signed = if m.contains("base64\r\n") {
                "Content-Transfer-Encoding: base64\r\n"
            } else {
                "Content-Transfer-Encoding: base64\n"
            };
            m.replacen(cte_signed, &format!("{cte_signed}{cte_signed}"), 1)
        },
    ]);
    for v in variants {
        let (st, out_text, _) = filter_checked(Some(&p.bob), &[], v.as_bytes());
        assert_words(&st, "failed", "error");
        assert_eq!(status_word(&st, "reason"), Some("ambiguous-mime"), "{st}");
        assert!(!out_text.contains(SECRET));
    }
    // An attachment whose name only holds ".p7m" is no envelope.
    let pdf = format!(
        "From: carol@example.org{eol}Content-Type: application/octet-stream; \
         name=\"scan.p7m.pdf\"{eol}{cte}{cte}{eol}JVBERi0xLjQK{eol}"
    );
    let (st, _, _) = filter_checked(None, &[], pdf.as_bytes());
    assert_eq!(status_word(&st, "encryption"), Some("none"), "{st}");
    // A signed-data pkcs7-mime stays signature=error only.
    let signed = sign_as(&p.carol, false, &[], &sample_entity("signed"));
    let msg = message("carol@example.org", "bob@example.org", "ambiguous", &signed);
    let v = format!("X-Mailer : foo{eol}{}", String::from_utf8_lossy(&msg));
    let (st, _, _) = filter_checked(None, &[], v.as_bytes());
    assert_words(&st, "none", "error");
}

#[test]
fn encrypted_without_any_key_fails_and_keeps_the_original() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &sample_entity(SECRET));
    let msg = to_lf(&message(
        "carol@example.org",
        "bob@example.org",
        "no key",
        &enc,
    ));
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "failed", "none");
    assert_eq!(strip_our_status(&out), msg);
}

#[test]
fn gcm_with_one_bit_flipped_fails_without_plaintext() {
    let p = pki();
    let der = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-outform",
            "DER",
            path_str(&p.bob.cert_path),
        ],
        &sample_entity(SECRET),
    );
    // Flip one bit of the ciphertext: the encrypted content sits near the end, before the
    // 16-byte tag (and its OCTET STRING header).
    let mut bad = der.clone();
    let at = bad.len() - 40;
    bad[at] ^= 0x01;
    // Control: the unmodified message decrypts.
    let wrap = |d: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(d);
        let mut lines = String::new();
        for c in b64.as_bytes().chunks(64) {
            lines.push_str(std::str::from_utf8(c).unwrap());
            lines.push_str("\r\n");
        }
        message(
            "alice@example.org",
            "bob@example.org",
            "gcm",
            format!("Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{lines}").as_bytes(),
        )
    };
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &wrap(&der));
    assert_words(&st, "decrypted", "none");
    assert!(text.contains(SECRET));
    let msg = wrap(&bad);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "failed", "none");
    // No plaintext, not even the part OpenSSL decrypts before it checks the tag.
    assert!(!text.contains("launch code"), "{text}");
    assert!(!text.contains("Content-Type: text/plain"), "{text}");
    assert_eq!(strip_our_status(&out), msg);
}

fn b64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    b64.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

#[test]
fn gpgsm_opaque_detached_and_encrypted_messages() {
    let p = pki();
    let g = common::gpgsm::Gpgsm::new(&[&p.alice]);
    g.import_cert(&p.bob.cert_path);
    let entity = sample_entity("made by gpgsm");

    // Opaque signed-data.
    let der = g.run_on(
        &["-u", "alice@example.org", "--sign", "--include-certs", "-1"],
        &entity,
    );
    let body = format!(
        "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&der)
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "gpgsm opaque",
        body.as_bytes(),
    );
    let (st, text, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    assert!(text.contains("made by gpgsm"));

    // Detached signature, wrapped into multipart/signed.
    let b = "gpgsm-boundary-1";
    let mut body = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
    )
    .into_bytes();
    // The signed part is the entity without its last CRLF (that one belongs to the delimiter).
    let signed_part = &entity[..entity.len() - 2];
    let sig = g.run_on(
        &[
            "-u",
            "alice@example.org",
            "--detach-sign",
            "--include-certs",
            "-1",
        ],
        signed_part,
    );
    body.extend_from_slice(signed_part);
    body.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--{b}--\r\n",
            b64_lines(&sig)
        )
        .as_bytes(),
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "gpgsm detached",
        &body,
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert_eq!(strip_our_status(&out), msg);
    let (st, _, out) = filter_checked(None, &[], &to_lf(&msg));
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));

    // Encrypted to bob (gpgsm picks its own cipher: AES-128-CBC by default).
    let der = g.run_on(&["-r", "bob@example.org", "--encrypt"], &entity);
    let body = format!(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&der)
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "gpgsm enc",
        body.as_bytes(),
    );
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "none");
    assert!(ar(&out).contains("smime=none"), "{}", ar(&out));
    assert!(text.contains("made by gpgsm"));
    // and not for alice's key
    let (st, text, out) = filter_checked(Some(&p.alice), &[], &msg);
    assert_words(&st, "failed", "none");
    assert!(ar(&out).contains("smime=none"), "{}", ar(&out));
    assert!(!text.contains("made by gpgsm"));

    // Signed by gpgsm, then encrypted by gpgsm.
    let signed_der = g.run_on(
        &["-u", "alice@example.org", "--sign", "--include-certs", "-1"],
        &entity,
    );
    let inner = format!(
        "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&signed_der)
    );
    let der = g.run_on(&["-r", "bob@example.org", "--encrypt"], inner.as_bytes());
    let body = format!(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&der)
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "gpgsm s+e",
        body.as_bytes(),
    );
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    assert!(text.contains("made by gpgsm"));
}

/// Regression: content that is not a MIME entity (bare text, as `openssl cms -encrypt` of a text
/// file gives) used to be read as header lines and dropped from the output.
#[test]
fn bare_text_content_without_headers_is_kept() {
    let p = pki();
    let text = b"Just a line of text, no MIME headers.\r\nSecond line.\r\n";
    let enc = encrypt_to(&[&p.bob], &["-aes256"], text);
    let msg = message("alice@example.org", "bob@example.org", "bare", &enc);
    let (st, out, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "none");
    assert!(
        out.contains("Just a line of text, no MIME headers."),
        "{out}"
    );
    assert!(out.contains("Second line."));
    let signed = sign_as(&p.alice, false, &["-binary"], text);
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "bare signed",
        &signed,
    );
    let (st, out, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(out.contains("Just a line of text"), "{out}");
}

/// RFC 9788 header protection: the inner Subject replaces the outer placeholder ("..."), and
/// the From that is compared with the signer is the protected one.
#[test]
fn protected_headers_are_honoured() {
    let p = pki();
    let inner = format!(
        "Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\nFrom: alice@example.org\r\nSubject: the real subject\r\n\r\n{SECRET}\r\n"
    );
    let signed = sign_as(&p.alice, false, &[], inner.as_bytes());
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &signed);
    // Outer From is a placeholder that would not match the signer.
    let msg = message("placeholder@example.net", "bob@example.org", "...", &enc);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    let fields = header_fields(&out);
    let subjects: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Subject"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(subjects, ["the real subject"], "{text}");
    let froms: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("From"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(froms, ["alice@example.org"]);
    // Date and Message-ID, not protected here, stay; an address field the protected section
    // lacks does not (an outer To, Cc or Reply-To is not the sender's once a protected section
    // says what the header was).
    assert!(fields.iter().any(|(n, _)| n == "Message-ID"));
    assert!(fields.iter().any(|(n, _)| n == "Date"));
    assert!(!fields.iter().any(|(n, _)| n == "To"), "{text}");

    // Legacy wrapper: message/rfc822; forwarded=no inside the signature.
    let wrapped = format!(
        "Content-Type: message/rfc822; forwarded=no\r\n\r\nFrom: alice@example.org\r\nSubject: wrapped subject\r\nContent-Type: text/plain\r\n\r\n{SECRET}\r\n"
    );
    let signed = sign_as(&p.alice, false, &[], wrapped.as_bytes());
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &signed);
    let msg = message("alice@example.org", "bob@example.org", "...", &enc);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert!(text.contains(SECRET));
    assert!(
        header_fields(&out)
            .iter()
            .any(|(n, v)| n == "Subject" && v == "wrapped subject"),
        "{text}"
    );
    assert!(text.contains("Content-Type: text/plain"), "{text}");
}

/// A signature covering a multipart/mixed that holds an encrypted part: the signature is the
/// message's (valid), the encrypted part below the root is not decrypted.
#[test]
fn signed_multipart_with_encrypted_part_is_valid_and_partial() {
    let p = pki();
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let enc = enc
        .strip_prefix(b"MIME-Version: 1.0\n")
        .unwrap_or(&enc)
        .to_vec();
    let mixed = [
        b"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n--m\r\n".as_slice(),
        &enc,
        b"\r\n--m--\r\n",
    ]
    .concat();
    let signed = sign_as(&p.alice, true, &[], &mixed);
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "signed mixed",
        &signed,
    );
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"), "{}", ar(&out));
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
    assert!(!text.contains(SECRET));
}

/// The other labels an encrypted root comes with: application/x-pkcs7-mime (old clients) and
/// application/octet-stream named *.p7m (the type is then decided from the CMS content).
#[test]
fn x_pkcs7_mime_and_octet_stream_p7m_are_decrypted() {
    let p = pki();
    let enc =
        String::from_utf8(encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET))).unwrap();
    let x = enc.replace("application/pkcs7-mime", "application/x-pkcs7-mime");
    let octet = enc
        .replace(
            "application/pkcs7-mime; smime-type=enveloped-data;",
            "application/octet-stream;",
        )
        .replace("smime-type=enveloped-data; ", "");
    assert!(!octet.contains("smime-type"), "{octet}");
    for body in [x, octet] {
        let msg = message(
            "alice@example.org",
            "bob@example.org",
            "labels",
            body.as_bytes(),
        );
        let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
        assert_words(&st, "decrypted", "none");
        assert!(ar(&out).contains("smime=none"), "{}", ar(&out));
        assert!(text.contains(SECRET));
    }
}

/// Sign (detached) then encrypt: after decryption the multipart/signed is delivered as it is, so
/// the reader's client (here openssl) can verify it again, from CRLF and from LF input.
#[test]
fn decrypted_multipart_signed_still_verifies() {
    let p = pki();
    let signed = sign_as(&p.carol, true, &[], &sample_entity("verify me again"));
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &signed);
    for msg in [
        message("carol@example.org", "bob@example.org", "again", &enc),
        to_lf(&message(
            "carol@example.org",
            "bob@example.org",
            "again",
            &enc,
        )),
    ] {
        let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
        assert_words(&st, "decrypted", "valid");
        assert!(text.contains("multipart/signed"));
        let verified = openssl(
            &[
                "cms",
                "-verify",
                "-CAfile",
                path_str(&p.root_path),
                "-purpose",
                "smimesign",
            ],
            &out,
        );
        assert!(String::from_utf8_lossy(&verified).contains("verify me again"));
    }
}

/// A chain of roots: encrypted, then signed, then encrypted again (and triple-wrapped
/// sign-encrypt-sign): every layer is undone, the order is reported.
#[test]
fn chains_of_roots_are_unwrapped() {
    let p = pki();
    let e1 = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &sample_entity(SECRET));
    let s = sign_as(&p.alice, false, &[], &e1);
    let e2 = encrypt_to(&[&p.bob], &["-aes256"], &s);
    let msg = message("alice@example.org", "bob@example.org", "chain", &e2);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert_eq!(
        status_word(&st, "order"),
        Some("encrypted-then-signed-then-encrypted"),
        "{st}"
    );
    assert!(text.contains(SECRET));
    assert!(ar(&out).contains("smime=pass"));

    let s1 = sign_as(&p.alice, true, &[], &sample_entity(SECRET));
    let e = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &s1);
    let s2 = sign_as(&p.alice, false, &[], &e);
    let msg = message("alice@example.org", "bob@example.org", "triple", &s2);
    let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    assert_eq!(
        status_word(&st, "order"),
        Some("signed-then-encrypted-then-signed"),
        "{st}"
    );
    assert!(text.contains(SECRET));
    assert_eq!(ar(&out).matches("smime=pass").count(), 2, "{}", ar(&out));
}

/// RecipientInfos and SignerInfos that name the certificate by subjectKeyIdentifier (`-keyid`)
/// instead of issuer and serial number.
#[test]
fn subject_key_identifier_recipients_and_signers() {
    let p = pki();
    for cipher in ["-aes256", "-aes-256-gcm"] {
        let enc = encrypt_to(
            &[&p.bob, &p.carol],
            &["-keyid", cipher],
            &sample_entity(SECRET),
        );
        let msg = message("alice@example.org", "bob@example.org", "keyid", &enc);
        for me in [&p.bob, &p.carol] {
            let (st, text, _) = filter_checked(Some(me), &[], &msg);
            assert_words(&st, "decrypted", "none");
            assert!(text.contains(SECRET));
        }
        let (st, _, _) = filter_checked(Some(&p.alice), &[], &msg);
        assert_words(&st, "failed", "none");
        assert_eq!(
            status_word(&st, "reason"),
            Some("not-encrypted-to-our-keys"),
            "{st}"
        );
    }
    let signed = sign_as(&p.alice, false, &["-keyid"], &sample_entity("keyid signer"));
    let msg = message("alice@example.org", "bob@example.org", "keyid sig", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(ar(&out).contains("smime=pass"));
}

/// RFC 8550 §4.4.4: a signer's EKU must contain emailProtection *or anyExtendedKeyUsage*
/// (OpenSSL's S/MIME purpose alone rejects the latter: regression). Key usage still has to
/// allow signing, and a CA whose EKU excludes e-mail still makes the path unfit. The
/// certificates are made by the openssl CLI.
#[test]
fn any_extended_key_usage_signer() {
    let d = tempfile::Builder::new()
        .prefix("smimed-anyeku.")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = d.path();
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        openssl(args, b"");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=AnyEKU Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &f("root.key"),
        "-out",
        &f("root.pem"),
    ]);
    // A CA restricted to TLS servers, under the root.
    std::fs::write(
        dir.join("tlsca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=TLS-only CA",
        "-keyout",
        &f("tlsca.key"),
        "-out",
        &f("tlsca.csr"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &f("tlsca.csr"),
        "-CA",
        &f("root.pem"),
        "-CAkey",
        &f("root.key"),
        "-set_serial",
        "2",
        "-days",
        "30",
        "-extfile",
        &f("tlsca.ext"),
        "-out",
        &f("tlsca.pem"),
    ]);
    let leaf = |name: &str, ku: &str, ca: &str, serial: &str| {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,{ku}\nextendedKeyUsage=anyExtendedKeyUsage\nsubjectAltName=email:{name}@example.org\n"),
        )
        .unwrap();
        run(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &f(&format!("{name}.key")),
            "-out",
            &f(&format!("{name}.csr")),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &f(&format!("{name}.csr")),
            "-CA",
            &f(&format!("{ca}.pem")),
            "-CAkey",
            &f(&format!("{ca}.key")),
            "-set_serial",
            serial,
            "-days",
            "30",
            "-extfile",
            &f(&format!("{name}.ext")),
            "-out",
            &f(&format!("{name}.pem")),
        ]);
    };
    leaf("anyeku", "digitalSignature", "root", "10");
    leaf("encipheronly", "keyEncipherment", "root", "11");
    leaf("undertls", "digitalSignature", "tlsca", "12");
    for (name, want) in [
        ("anyeku", "valid"),
        ("encipheronly", "untrusted"),
        ("undertls", "untrusted"),
    ] {
        let signed = openssl(
            &[
                "cms",
                "-sign",
                "-nodetach",
                "-outform",
                "SMIME",
                "-signer",
                &f(&format!("{name}.pem")),
                "-inkey",
                &f(&format!("{name}.key")),
                "-certfile",
                &f("tlsca.pem"),
            ],
            &sample_entity("any purpose"),
        );
        let msg = message(
            &format!("{name}@example.org"),
            "bob@example.org",
            "anyeku",
            &signed,
        );
        let out = run_with_stdin(
            smimed().args([
                "--authserv-id",
                "mx.test",
                "--trust",
                &f("root.pem"),
                "filter",
            ]),
            &msg,
        );
        assert_eq!(out.status.code(), Some(0));
        let st = status_of(&out.stdout);
        assert_words(&st, "none", want);
        if want == "valid" {
            assert!(ar(&out.stdout).contains("smime=pass"));
        } else {
            assert!(
                ar(&out.stdout).contains("reason=\"not-for-email\""),
                "{}",
                ar(&out.stdout)
            );
        }
    }
}

/// Johnny §6.1: a self-signed signer certificate the message carries is never trusted.
#[test]
fn self_signed_signer_is_untrusted() {
    let d = tempfile::Builder::new()
        .prefix("smimed-self.")
        .tempdir_in("/tmp")
        .unwrap();
    let f = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=alice",
            "-addext",
            "subjectAltName=email:alice@example.org",
            "-addext",
            "keyUsage=critical,digitalSignature",
            "-addext",
            "extendedKeyUsage=emailProtection",
            "-keyout",
            &f("self.key"),
            "-out",
            &f("self.pem"),
        ],
        b"",
    );
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-nodetach",
            "-outform",
            "SMIME",
            "-signer",
            &f("self.pem"),
            "-inkey",
            &f("self.key"),
        ],
        &sample_entity("trust me"),
    );
    let msg = message("alice@example.org", "bob@example.org", "self", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "untrusted");
    assert!(ar(&out).contains("smime=policy"));
}

/// A CRL from the root revoking the intermediate CA revokes what that CA issued: the signer's
/// signature is `revoked` and its certificate is not encrypted to. With the root's CRL
/// missing, the end certificate's CRL is still checked (revocation of the path above it stays
/// unknown), as before.
#[test]
fn a_revoked_intermediate_revokes_its_signers_and_recipients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    common::sh_in(
        d,
        r#"
set -e
cat > ca.cnf <<'X'
[ca]
default_ca=c
[c]
dir=.
database=$dir/index.txt
new_certs_dir=$dir
serial=$dir/serial
crlnumber=$dir/crlnumber
default_md=sha256
policy=p
default_crl_days=30
[p]
commonName=supplied
[v3_ca]
basicConstraints=critical,CA:true
keyUsage=critical,keyCertSign,cRLSign
[user]
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=emailProtection
subjectAltName=email:alice@example.org
X
mkdir r i
for x in r i; do : > $x/index.txt; echo 1000 > $x/serial; echo 1000 > $x/crlnumber; done
openssl req -x509 -newkey rsa:2048 -nodes -keyout root.key -out root.pem -subj /CN=Root -days 30 -config ca.cnf -extensions v3_ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout int.key -out int.csr -subj /CN=Int 2>/dev/null
sed 's#^dir=.#dir=r#' ca.cnf > r.cnf; sed 's#^dir=.#dir=i#' ca.cnf > i.cnf
openssl ca -batch -config r.cnf -cert root.pem -keyfile root.key -in int.csr -out int.pem -extensions v3_ca -days 30 -notext 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout alice.key -out alice.csr -subj /CN=alice 2>/dev/null
openssl ca -batch -config i.cnf -cert int.pem -keyfile int.key -in alice.csr -out alice.pem -extensions user -days 30 -notext 2>/dev/null
chmod 600 alice.key
openssl ca -config i.cnf -cert int.pem -keyfile int.key -gencrl -out int.crl 2>/dev/null
openssl ca -config i.cnf -cert int.pem -keyfile int.key -gencrl -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z -out int-expired.crl 2>/dev/null
openssl ca -config r.cnf -cert root.pem -keyfile root.key -gencrl -out root-ok.crl 2>/dev/null
cat root.pem int.pem > anchors.pem
openssl ca -config r.cnf -cert root.pem -keyfile root.key -revoke int.pem 2>/dev/null
openssl ca -config r.cnf -cert root.pem -keyfile root.key -gencrl -out root.crl 2>/dev/null
printf 'Content-Type: text/plain

signed under a revoked CA
' > body
{ printf 'From: alice@example.org
To: bob@example.org
Subject: r
'
  openssl cms -sign -signer alice.pem -inkey alice.key -certfile int.pem -in body 2>/dev/null; } > signed.eml
"#,
    );
    let msg = std::fs::read(d.join("signed.eml")).expect("signed");
    let trust = std::cell::Cell::new("root.pem");
    let run = |crls: &[&str], args: &[&str], stdin: &[u8]| {
        let mut c = smimed();
        c.current_dir(d)
            .args(["--authserv-id", "mx.test", "--trust", trust.get()]);
        for crl in crls {
            c.args(["--crl", crl]);
        }
        c.args(args);
        run_with_stdin(&mut c, stdin)
    };
    let status = |crls: &[&str]| {
        let out = run(crls, &["filter"], &msg);
        status_of(&out.stdout)
    };
    let st = status(&["root.crl", "int.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    // Without the intermediate's CRL: the root's still revokes the intermediate.
    let st = status(&["root.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    // Without the root's CRL: the intermediate's revocation is unknown, alice's is checked.
    let st = status(&["int.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert_eq!(status_word(&st, "revocation"), Some("unchecked"), "{st}");
    // The issuer's CRL past its nextUpdate (routine): revocation unknown, not untrusted.
    let st = status(&["int-expired.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    // Encrypting to alice: refused with both CRLs.
    let imp = run(
        &[],
        &[
            "--certs",
            "store",
            "certs",
            "import",
            "alice.pem",
            "int.pem",
        ],
        b"",
    );
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    let look = run(
        &["root.crl", "int.crl"],
        &["--certs", "store", "certs", "lookup", "alice@example.org"],
        b"",
    );
    let text = String::from_utf8_lossy(&look.stdout);
    assert_eq!(look.status.code(), Some(1), "{text}");
    assert!(text.contains("revoked"), "{text}");
    let look = run(
        &["root.crl"],
        &["--certs", "store", "certs", "lookup", "alice@example.org"],
        b"",
    );
    let text = String::from_utf8_lossy(&look.stdout);
    assert_eq!(look.status.code(), Some(1), "root CRL only: {text}");

    // The intermediate listed as an anchor too (as an Office 365 .sst holds it): the root's CRL
    // still revokes it, and with every CRL there the revocation is checked.
    trust.set("anchors.pem");
    let st = status(&["root.crl", "int.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    let st = status(&["root-ok.crl", "int.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert_eq!(status_word(&st, "revocation"), None, "{st}");
    // Only the intermediate's CRL: the path ends at the listed intermediate, whose CRL is read.
    let st = status(&["int.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    // Only the root's CRL: it still revokes the listed intermediate.
    let st = status(&["root.crl"]);
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    let look = run(
        &["root.crl", "int.crl"],
        &["--certs", "store", "certs", "lookup", "alice@example.org"],
        b"",
    );
    assert_eq!(
        look.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&look.stdout)
    );
}

/// The CMS content type decides, not the smime-type label: an envelope labelled signed-data is
/// decrypted, a signature labelled enveloped-data is verified.
#[test]
fn cms_content_type_decides_not_the_label() {
    let p = pki();
    let enc =
        String::from_utf8(encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET))).unwrap();
    let enc = enc.replace("smime-type=enveloped-data", "smime-type=signed-data");
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "label",
        enc.as_bytes(),
    );
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "none");
    assert!(text.contains(SECRET));
    let signed =
        String::from_utf8(sign_as(&p.alice, false, &[], &sample_entity("labelled"))).unwrap();
    let signed = signed.replace("smime-type=signed-data", "smime-type=enveloped-data");
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "label",
        signed.as_bytes(),
    );
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "none", "valid");
    assert!(text.contains("labelled"));
}

/// Unknown revocation status is never a plain pass: with a CRL configured that does not cover
/// the signer's issuer, the signature is valid and the status says revocation=unchecked.
#[test]
fn revocation_unknown_is_reported() {
    let p = pki();
    let crl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/corpus/bouncycastle-mail/mail/src/test/resources/org/bouncycastle/mail/smime/test/validator.revoked.crl",
    );
    let signed = sign_as(&p.alice, false, &[], &sample_entity("crl"));
    let msg = message("alice@example.org", "bob@example.org", "crl", &signed);
    let (st, _, _) = filter_checked(None, &["--crl", path_str(&crl)], &msg);
    assert_words(&st, "none", "valid");
    assert_eq!(status_word(&st, "revocation"), Some("unchecked"), "{st}");
    // And with no CRL configured at all (regression: the word was never written, since it was
    // decided before the From comparison made any signer valid).
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    assert_eq!(status_word(&st, "revocation"), Some("unchecked"), "{st}");
    // Not for signatures that are not valid anyway.
    let (st, _, _) = filter_checked(
        None,
        &[],
        &message("bob@example.org", "x@example.org", "crl", &signed),
    );
    assert_words(&st, "none", "mismatch");
    assert_eq!(status_word(&st, "revocation"), None, "{st}");
}

/// Where the signer's address may be: an rfc822Name in subjectAltName, or (old certificates)
/// emailAddress in the subject; the domain compares case-insensitively.
#[test]
fn signer_address_forms() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("case"));
    let msg = message(
        "Alice <alice@EXAMPLE.Org>",
        "bob@example.org",
        "case",
        &signed,
    );
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
    // RFC 5322 allows comments and blanks around the `@` (obsolete syntax): the same mailbox.
    // A comment never supplies the address.
    for (from, verdict) in [
        ("alice @ example.org", "valid"),
        ("Alice <alice@(c)example.org>", "valid"),
        ("Alice <alice (c) @ example . org>", "valid"),
        ("Alice <eve@evil.example(alice@example.org)>", "mismatch"),
        // Two atoms: readers (GMime, Python) take the first; it is no address of its own.
        ("alice@example.org evil.test", "mismatch"),
        ("alice@example(x)org", "mismatch"),
        // mailparse joins the atoms around a comment; readers stop at the first.
        ("alice@example(x).org", "valid"),
        ("alice@exam(x)ple.org", "mismatch"),
        // A bare quoted local part (mailparse cannot read it alone; readers do).
        ("\"alice\"@example.org", "valid"),
        ("\"alice\"@example.org <eve@evil.example>", "mismatch"),
        ("\"alice\"@example.org, eve@evil.example", "mismatch"),
        ("\"alice\"@example.org (Alice Smith)", "valid"),
        ("\"alice\" @example.org", "valid"),
        // An address before the angle-addr: readers show it as the sender.
        ("bob@evil.example Bob <alice@example.org>", "mismatch"),
        ("bob@evil.example\"x\"<alice@example.org>", "mismatch"),
        // The same mailbox before it, as some clients write a name: no other sender.
        ("alice@example.org <alice@example.org>", "valid"),
        ("\"alice@example.org\" <alice@example.org>", "valid"),
        // An encoded word that decodes to a mailbox: GMime (notmuch) shows it first.
        (
            "=?utf-8?q?Bob_=3Cbob=40evil=2Eexample=3E?= <alice@example.org>",
            "mismatch",
        ),
        (
            "=?utf-8?q?M=C3=BCller=2C_Alice?= <alice@example.org>",
            "valid",
        ),
        (
            "=?utf-8?q?M=C3=BCller=2C_Alice_=28alice=40example.org=29?= <alice@example.org>",
            "valid",
        ),
    ] {
        let msg = message(from, "bob@example.org", "case", &signed);
        let (st, _, _) = filter_checked(None, &[], &msg);
        assert_eq!(status_word(&st, "signature"), Some(verdict), "{from}: {st}");
    }

    let d = tempfile::Builder::new()
        .prefix("smimed-addr.")
        .tempdir_in("/tmp")
        .unwrap();
    let f = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Old Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &f("root.key"),
            "-out",
            &f("root.pem"),
        ],
        b"",
    );
    std::fs::write(
        d.path().join("old.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=Old Style/emailAddress=old@example.org",
            "-keyout",
            &f("old.key"),
            "-out",
            &f("old.csr"),
        ],
        b"",
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &f("old.csr"),
            "-CA",
            &f("root.pem"),
            "-CAkey",
            &f("root.key"),
            "-set_serial",
            "5",
            "-days",
            "30",
            "-extfile",
            &f("old.ext"),
            "-out",
            &f("old.pem"),
        ],
        b"",
    );
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-outform",
            "SMIME",
            "-signer",
            &f("old.pem"),
            "-inkey",
            &f("old.key"),
        ],
        &sample_entity("subject address"),
    );
    for (from, want) in [
        ("old@example.org", "valid"),
        ("other@example.org", "mismatch"),
    ] {
        let msg = message(from, "bob@example.org", "old", &signed);
        let out = run_with_stdin(
            smimed().args([
                "--authserv-id",
                "mx.test",
                "--trust",
                &f("root.pem"),
                "filter",
            ]),
            &msg,
        );
        let st = status_of(&out.stdout);
        assert_words(&st, "none", want);
        assert_eq!(status_word(&st, "signer"), Some("old@example.org"));
    }
}

/// Regression: an mbox postmark ("From sender date", which procmail passes to filters when it
/// is the MDA) stays the first line; the status fields used to be written before it, which
/// breaks the message boundary of an mbox.
#[test]
fn mbox_postmark_stays_first() {
    let p = pki();
    let postmark = b"From alice@example.org Thu Nov 26 12:00:00 2026\n".as_slice();
    let plain = to_lf(&message(
        "alice@example.org",
        "bob@example.org",
        "pm",
        &sample_entity("plain"),
    ));
    let signed = to_lf(&message(
        "alice@example.org",
        "bob@example.org",
        "pm",
        &sign_as(&p.alice, true, &[], &sample_entity("signed")),
    ));
    let enc = to_lf(&message(
        "alice@example.org",
        "bob@example.org",
        "pm",
        &encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET)),
    ));
    for (msg, enc_word, sig_word) in [
        (&plain, "none", "none"),
        (&signed, "none", "valid"),
        (&enc, "decrypted", "none"),
    ] {
        let input = [postmark, msg.as_slice()].concat();
        let out = filter_as(Some(&p.bob), &[], &input);
        assert_eq!(out.status.code(), Some(0));
        let stdout = out.stdout;
        assert!(
            stdout.starts_with(postmark),
            "{}",
            String::from_utf8_lossy(&stdout[..80])
        );
        let rest = &stdout[postmark.len()..];
        assert!(
            rest.starts_with(b"X-Smime-Status: "),
            "status fields right after the postmark"
        );
        assert_words(&status_of(rest), enc_word, sig_word);
        if enc_word == "none" {
            assert_eq!(strip_our_status(rest), *msg);
        }
    }
}

/// A SignedData without content, labelled application/pkcs7-mime, with or without signers.
fn pkcs7_mime_entity(smime_type: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut e = format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\n\
         Content-Transfer-Encoding: base64\n\n"
    )
    .into_bytes();
    for line in b64.as_bytes().chunks(76) {
        e.extend_from_slice(line);
        e.push(b'\n');
    }
    e
}

#[test]
fn detached_signature_sent_as_pkcs7_mime_is_an_error_and_certs_only_is_none() {
    let p = pki();
    // openssl's detached signature (a signer, no content) labelled as opaque signed-data.
    let der = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            path_str(&p.carol.cert_path),
            "-inkey",
            path_str(&p.carol.key_path),
            "-outform",
            "DER",
        ],
        &sample_entity("signed elsewhere"),
    );
    let msg = message(
        "carol@example.org",
        "bob@example.org",
        "detached",
        &pkcs7_mime_entity("signed-data", &der),
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "error");
    assert_eq!(
        status_word(&st, "reason"),
        Some("signed-content-missing"),
        "{st}"
    );
    assert!(ar(&out).contains("smime=permerror"), "{}", ar(&out));
    // The same signature as the whole message, labelled for what it is
    // (application/pkcs7-signature, as a multipart/signed's second part): no content either.
    for ct in [
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ] {
        let entity = String::from_utf8(pkcs7_mime_entity("signed-data", &der))
            .expect("ascii")
            .replace(
                "application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
                ct,
            );
        let msg = message(
            "carol@example.org",
            "bob@example.org",
            "bare signature",
            entity.as_bytes(),
        );
        let (st, text, out) = filter_checked(None, &[], &msg);
        assert_words(&st, "none", "error");
        assert_eq!(
            status_word(&st, "reason"),
            Some("signed-content-missing"),
            "{ct}: {st}"
        );
        assert!(ar(&out).contains("smime=permerror"), "{}", ar(&out));
        assert!(
            text.contains("Subject: bare signature"),
            "delivered as it was"
        );
    }
    // Inside an envelope, such a part is only the content: decrypted and delivered.
    let entity = String::from_utf8(pkcs7_mime_entity("signed-data", &der))
        .expect("ascii")
        .replace(
            "application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
            "application/pkcs7-signature",
        );
    let enc = encrypt_to(&[&p.bob], &["-aes256"], entity.as_bytes());
    let msg = message("carol@example.org", "bob@example.org", "inner", &enc);
    let (st, _, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_eq!(status_word(&st, "encryption"), Some("decrypted"), "{st}");
    // A real certs-only message (no signers) is not a signed message.
    let certs = openssl(
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            path_str(&p.carol.cert_path),
            "-outform",
            "DER",
        ],
        b"",
    );
    let msg = message(
        "carol@example.org",
        "bob@example.org",
        "certs",
        &pkcs7_mime_entity("certs-only", &certs),
    );
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "reason"), Some("certs-only"), "{st}");
    assert!(ar(&out).contains("smime=none"));
}

#[test]
fn a_signed_message_over_the_size_limit_is_not_called_unsigned() {
    let p = pki();
    for detached in [true, false] {
        let signed = sign_as(&p.carol, detached, &[], &sample_entity("big enough"));
        let msg = message("carol@example.org", "bob@example.org", "big", &signed);
        let (st, text, out) = filter_checked(None, &["--max-size", "100"], &msg);
        assert_words(&st, "none", "error");
        assert_eq!(status_word(&st, "reason"), Some("size-limit"), "{st}");
        assert!(text.contains("Subject: big"), "delivered as it was");
        assert!(ar(&out).contains("smime=permerror"), "{}", ar(&out));
    }
}

#[test]
fn a_multipart_signed_root_is_part_text_whether_it_came_encrypted_or_not() {
    // The same delivered structure (a multipart/signed root) gives the same body.smime-part.
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("detached inside"));
    let plain = message("alice@example.org", "bob@example.org", "clear", &signed);
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &signed);
    let wrapped = message("alice@example.org", "bob@example.org", "wrapped", &enc);
    for (msg, enc_word) in [(plain, "none"), (wrapped, "decrypted")] {
        let (st, text, out) = filter_checked(Some(&p.bob), &[], &msg);
        assert_words(&st, enc_word, "valid");
        assert!(text.contains("multipart/signed"), "{text}");
        let a = ar(&out);
        assert!(
            a.contains("smime=pass") && a.contains("body.smime-part=TEXT"),
            "{a}"
        );
    }
}

#[test]
fn an_encoded_word_in_from_never_supplies_the_address_compared_with_the_signer() {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity("who sent this"));
    for (from, verdict) in [
        // The address is mallory's; the encoded word only decodes to text that looks like one.
        (
            "mallory@evil.example =?utf-8?q?=3Calice=40example=2Eorg=3E?=",
            "mismatch",
        ),
        ("=?utf-8?q?Alice_=3Calice=40example=2Eorg=3E?=", "mismatch"),
        // A name with a comma, encoded: still one address, alice's.
        (
            "=?utf-8?Q?M=C3=BCller=2C_Alice?= <alice@example.org>",
            "valid",
        ),
    ] {
        let msg = message(from, "bob@example.org", "from", &signed);
        let (st, _, _) = filter_checked(None, &[], &msg);
        assert_eq!(status_word(&st, "signature"), Some(verdict), "{from}: {st}");
    }
    // A From of 100,000 encoded words is not parsed (it took seconds), and the message passes.
    let mut msg = b"From: ".to_vec();
    for _ in 0..100_000 {
        msg.extend_from_slice(b"=?utf-8?q?a?= ");
    }
    msg.extend_from_slice(b"<a@example.org>\nSubject: long\n\nbody\n");
    let t0 = std::time::Instant::now();
    let (st, text, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "none");
    assert!(text.ends_with("body\n"));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    // A header section mailparse cannot read: the reason says so.
    let (st, _, _) = filter_checked(None, &[], b" bogus\nFrom: a@example.org\n\nbody\n");
    assert_eq!(status_word(&st, "reason"), Some("mime-unparsable"), "{st}");
}

#[test]
fn a_protected_from_inside_a_multipart_signed_must_be_the_signer_too() {
    // RFC 9788: a client shows the header section inside the signed part. A signature valid
    // for the outer From is not valid for a message whose protected From is someone else.
    let p = pki();
    for (inner_from, verdict) in [
        ("mallory@evil.example", "mismatch"),
        ("alice@example.org", "valid"),
    ] {
        let entity = format!(
            "From: {inner_from}\nSubject: protected\nContent-Type: text/plain; hp=\"clear\"\n\n\
             signed words\n"
        );
        let signed = sign_as(&p.alice, true, &[], entity.as_bytes());
        let plain = message("alice@example.org", "bob@example.org", "hp", &signed);
        let enc = encrypt_to(&[&p.bob], &["-aes256"], &signed);
        let wrapped = message("alice@example.org", "bob@example.org", "hp", &enc);
        // Signed twice (sign-then-sign, kept as it came): the section in the innermost part.
        let twice = sign_as(&p.alice, true, &[], &signed);
        let nested = message("alice@example.org", "bob@example.org", "hp", &twice);
        let enc = encrypt_to(&[&p.bob], &["-aes256"], &twice);
        let nested_wrapped = message("alice@example.org", "bob@example.org", "hp", &enc);
        for msg in [plain, wrapped, nested, nested_wrapped] {
            let (st, _, out) = filter_checked(Some(&p.bob), &[], &msg);
            assert_eq!(
                status_word(&st, "signature"),
                Some(verdict),
                "{inner_from}: {st}"
            );
            if verdict == "mismatch" {
                assert!(ar(&out).contains("smime=policy"), "{}", ar(&out));
            }
        }
    }
}

#[test]
fn protected_headers_replace_the_outer_ones_and_wrapped_smime_stays_attached() {
    let p = pki();
    // Signed and encrypted with a protected header section (hp="cipher"); outside, an attacker
    // changed the Subject and added Reply-To and Cc. The delivered message shows the protected
    // fields only: no outer Reply-To or Cc next to them.
    let inner = b"Content-Type: text/plain; hp=\"cipher\"\r\nFrom: alice@example.org\r\n\
To: bob@example.org\r\nSubject: Real subject\r\n\r\nsecret body\r\n";
    // Signed by alice (detached or opaque), encrypted to bob, `outer` fields put in front.
    let deliver = |content: &[u8], detached: bool, outer: &[u8]| {
        let signed = sign_as(&p.alice, detached, &["-binary"], content);
        let enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &signed);
        let mut msg = outer.to_vec();
        msg.extend(message(
            "alice@example.org",
            "bob@example.org",
            "[...]",
            &enc,
        ));
        let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
        assert_words(&st, "decrypted", "valid");
        text
    };
    let text = deliver(
        inner,
        false,
        b"Reply-To: attacker@evil.example\r\nCc: eve@evil.example\r\n",
    );
    assert!(text.contains("Subject: Real subject"), "{text}");
    assert!(!text.contains("attacker@evil.example"), "{text}");
    assert!(!text.contains("eve@evil.example"), "{text}");
    assert!(!text.contains("Subject: [...]"), "{text}");

    // A protected section with only a Subject replaces the Subject and drops nothing else.
    let text = deliver(
        b"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: Real subject\r\n\r\nbody\r\n",
        false,
        b"",
    );
    assert!(text.contains("Subject: Real subject"), "{text}");
    assert!(text.contains("From: alice@example.org"), "{text}");
    assert!(text.contains("To: bob@example.org"), "{text}");

    // The same with a detached signature inside the encryption (multipart/signed, as
    // Thunderbird sends it): the protected fields in the signed part are promoted too.
    let text = deliver(inner, true, b"Reply-To: attacker@evil.example\r\n");
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(head.contains("Subject: Real subject"), "{text}");
    assert!(
        !head.contains("Subject: [...]") && !head.contains("attacker@"),
        "{text}"
    );
    assert!(
        text.contains("multipart/signed"),
        "kept for the client: {text}"
    );

    // A captured ciphertext inside a forwarded=no wrapper is no protected header section: it
    // stays attached (partial=encrypted) instead of becoming the delivered message itself.
    let captured = encrypt_to(
        &[&p.bob],
        &["-aes256"],
        &sample_entity("TOP SECRET from carol"),
    );
    let captured = String::from_utf8_lossy(&captured)
        .replace("MIME-Version: 1.0\r\n", "")
        .replace("MIME-Version: 1.0\n", "");
    let mut wrapper =
        b"Content-Type: message/rfc822; forwarded=no\r\n\r\nFrom: eve@evil.example\r\n\
Subject: Please reply\r\n"
            .to_vec();
    wrapper.extend_from_slice(captured.as_bytes());
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &wrapper);
    let msg = message("eve@evil.example", "bob@example.org", "x", &enc);
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_eq!(status_word(&st, "encryption"), Some("decrypted"), "{st}");
    assert_eq!(status_word(&st, "partial"), Some("encrypted"), "{st}");
    let root_ct = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or_default()
        .to_string();
    assert!(root_ct.contains("message/rfc822"), "{root_ct}");
}

/// Signer certificates made by an openssl CLI CA here: the status shows a signer's address as
/// the certificate writes it (case kept), never one that holds `=` (a certificate could put a
/// status word into the field rules match on), and the Authentication-Results value stays
/// ASCII (RFC 8601) when the issuer's name is not.
#[test]
fn signer_addresses_and_issuers_cannot_forge_or_break_the_status_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sh = |script: &str| sh_in(d, script);
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -utf8 \
          -subj '/O=Q\"uo\\\\te; x=(y)/CN=Caf\u{e9} CA' \
          -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
          -keyout ca.key -out ca.pem 2>/dev/null");
    let make = |name: &str, addr: &str| {
        sh(&format!(
            "openssl req -newkey rsa:2048 -nodes -subj '/CN={name}' -keyout {name}.key \
               -out {name}.csr 2>/dev/null
             printf 'subjectAltName=email:{addr}\\nkeyUsage=digitalSignature\\nextendedKeyUsage=emailProtection\\n' > {name}.ext
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
               -extfile {name}.ext -out {name}.pem 2>/dev/null"
        ));
        let content = sample_entity("hello");
        let signed = openssl(
            &[
                "cms",
                "-sign",
                "-binary",
                "-signer",
                path_str(&d.join(format!("{name}.pem"))),
                "-inkey",
                path_str(&d.join(format!("{name}.key"))),
            ],
            &content,
        );
        message(addr, "bob@example.org", "signer test", &signed)
    };

    // Untrusted here (only the test root is): the verdict is not valid, and nothing in the
    // status field says otherwise.
    let msg = make("inj", "signature=valid@evil.example");
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "untrusted");
    assert!(!st.contains("signature=valid"), "{st}");
    for v in ar_values(&out, "mx.test") {
        assert!(v.is_ascii(), "Authentication-Results not ASCII: {v}");
        assert!(!v.contains("smime=pass"), "{v}");
    }

    // Trusted: the signer is shown as the certificate writes it.
    let msg = make("plus", "Alice.Plus+tag@Example.ORG");
    let ca = d.join("ca.pem");
    let (st, _, out) = filter_checked(None, &["--trust", path_str(&ca)], &msg);
    assert_words(&st, "none", "valid");
    assert!(st.contains("signer=Alice.Plus+tag@Example.ORG"), "{st}");
    let ar = ar_values(&out, "mx.test").join("\n");
    assert!(
        ar.contains("body.smime-identifier=Alice.Plus+tag@Example.ORG"),
        "{ar}"
    );
    assert!(ar.contains("CN=Caf\\\\C3\\\\A9 CA"), "{ar}");
    assert!(ar.is_ascii(), "{ar}");
}

/// Trace and authentication fields and filter verdicts in a protected header section were
/// written by the sender, not by the servers on the way: the outer ones stay, the inner ones are
/// never promoted.
#[test]
fn a_protected_header_section_never_replaces_trace_or_authentication_fields() {
    let p = pki();
    let inner = b"Content-Type: text/plain; hp=\"cipher\"\r\n\
Received: from forged by forged.example\r\nReturn-Path: <ceo@bank.example>\r\n\
Authentication-Results: mx1.example.net; dkim=pass header.d=bank.example; dmarc=pass\r\n\
ARC-Authentication-Results: i=1; mx1.example.net; dmarc=pass\r\n\
X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-5.0\r\n\
From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Real subject\r\n\r\nbody\r\n";
    let enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], inner);
    let mut msg = b"Received: from real by mx1.example.net\r\nReturn-Path: <alice@example.org>\r\n\
Authentication-Results: mx1.example.net; dkim=none; dmarc=fail\r\n\
X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=15.2\r\n"
        .to_vec();
    msg.extend(message(
        "alice@example.org",
        "bob@example.org",
        "[...]",
        &enc,
    ));
    let (st, text, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "none");
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.contains("Subject: Real subject"), "{head}");
    assert!(
        head.contains("Received: from real by mx1.example.net"),
        "{head}"
    );
    assert!(head.contains("Return-Path: <alice@example.org>"), "{head}");
    assert!(head.contains("dmarc=fail"), "{head}");
    assert!(
        head.contains("X-Spam-Flag: YES") && head.contains("score=15.2"),
        "{head}"
    );
    for forged in [
        "forged.example",
        "ceo@bank.example",
        "dmarc=pass",
        "ARC-Authentication",
        "X-Spam-Flag: NO",
        "score=-5.0",
    ] {
        assert!(!head.contains(forged), "{forged} promoted: {head}");
    }
}

/// A certificate may name several addresses (aliases, other domains; a SAN and the subject's
/// emailAddress): a From that is any of them matches, and `signer=` names that one.
#[test]
fn from_matching_any_address_of_the_certificate_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    sh_in(
        d,
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=Alias CA' \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
           -keyout ca.key -out ca.pem 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -subj '/CN=al/emailAddress=subject@example.com' \
           -keyout al.key -out al.csr 2>/dev/null
         printf 'subjectAltName=email:alice@example.org,email:al@example.net\\nkeyUsage=digitalSignature\\nextendedKeyUsage=emailProtection\\n' > al.ext
         openssl x509 -req -in al.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile al.ext -out al.pem 2>/dev/null",
    );
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-binary",
            "-signer",
            path_str(&d.join("al.pem")),
            "-inkey",
            path_str(&d.join("al.key")),
        ],
        &sample_entity("one of my addresses"),
    );
    let ca = d.join("ca.pem");
    for from in ["alice@example.org", "Al@Example.NET", "subject@example.com"] {
        let msg = message(from, "bob@example.org", "alias", &signed);
        let (st, _, out) = filter_checked(None, &["--trust", path_str(&ca)], &msg);
        assert_words(&st, "none", "valid");
        let want = match from {
            "Al@Example.NET" => "al@example.net",
            other => other,
        };
        assert_eq!(status_word(&st, "signer"), Some(want), "{st}");
        assert!(ar(&out).contains(&format!("body.smime-identifier={want}")));
    }
    let msg = message("mallory@example.org", "bob@example.org", "alias", &signed);
    let (st, _, _) = filter_checked(None, &["--trust", path_str(&ca)], &msg);
    assert_words(&st, "none", "mismatch");
}

/// Header fields and parameters that readers resolve differently (mutt takes the last
/// Content-Type field, smimed and mailparse the first; GMime keeps the first of two `boundary`
/// parameters, mailparse the last): a signature checked on one reading must not be reported
/// over content a reader shows on the other.
#[test]
fn ambiguous_mime_around_a_signature_is_never_valid() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("the signed words"));
    let msg = message("alice@example.org", "bob@example.org", "amb", &signed);
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");

    // The outer fields end in CRLF, openssl's in LF: the header ends at the first empty line.
    let text = String::from_utf8(msg.clone()).unwrap();
    let eol = "\n";
    let end = text.find("\n\n").unwrap();
    let (head, body) = (&text[..end], &text[end + 2..]);
    let evil =
        format!("--ZZ{eol}Content-Type: text/plain{eol}{eol}EVIL unsigned text{eol}--ZZ--{eol}");
    let ct_at = head.find("Content-Type: multipart/signed").unwrap();
    let boundary = {
        let b = &head[head.find("boundary=\"").unwrap() + 10..];
        b[..b.find('"').unwrap()].to_string()
    };
    let variants = [
        // A second Content-Type after the first, the EVIL part in the preamble.
        format!("{head}{eol}Content-Type: multipart/mixed; boundary=\"ZZ\"{eol}{eol}{evil}{body}"),
        // A second Content-Type before the first.
        format!(
            "{}Content-Type: multipart/mixed; boundary=\"ZZ\"{eol}{}{eol}{eol}{evil}{body}",
            &head[..ct_at],
            &head[ct_at..]
        ),
        // boundary given twice.
        format!(
            "{}{eol}{eol}{evil}{body}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                &format!("boundary=\"ZZ\"; boundary=\"{boundary}\"")
            )
        ),
        // protocol given twice, the last not S/MIME (GMime takes the first), and a boundary
        // hidden behind a comment (GMime skips it, mailparse does not).
        format!(
            "{}{eol}{eol}{evil}{body}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                &format!("boundary=\"{boundary}\"; PROTOCOL=\"text/plain\"")
            )
        ),
        format!(
            "{}{eol}{eol}{evil}{body}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                &format!("(c)boundary=\"ZZ\"; boundary=\"{boundary}\"")
            )
        ),
        // A header line that is no field (mutt ends the header there and shows the rest,
        // the EVIL preamble first, as the body).
        format!(
            "{}X-Note see below{eol}{}{eol}{eol}EVIL unsigned text{eol}{body}",
            &head[..ct_at],
            &head[ct_at..]
        ),
        // A blank before a field's colon: mutt ends the header there too.
        format!(
            "{}X-Note : see below{eol}{}{eol}{eol}EVIL unsigned text{eol}{body}",
            &head[..ct_at],
            &head[ct_at..]
        ),
        // A lone RFC 2231 section of boundary before the plain one (GMime takes the first).
        format!(
            "{}{eol}{eol}{evil}{body}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                &format!("boundary*1=\"ZZ\"; boundary=\"{boundary}\"")
            )
        ),
        // A delimiter deep in a line longer than mutt's 1,023-byte read.
        format!(
            "{head}{eol}{eol}{}--{boundary}{eol}Content-Type: text/plain{eol}{eol}\
             EVIL unsigned text{eol}{body}",
            " ".repeat(1023)
        ),
        // A NUL in a header line (mutt glues the next line, the Content-Type, to it).
        format!(
            "{}X-Note: a\0{eol}{}{eol}{eol}EVIL unsigned text{eol}{body}",
            &head[..ct_at],
            &head[ct_at..]
        ),
        // Text after the quoted boundary (mailparse keeps it, mutt and GMime drop it).
        format!(
            "{}{eol}{eol}{evil}{body}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                &format!("boundary=\"{boundary}\"EVIL")
            )
        ),
        // An encoded word as the boundary (notmuch and mutt decode it, mailparse does not).
        format!(
            "{}{eol}{eol}{evil}{}",
            head.replace(
                &format!("boundary=\"{boundary}\""),
                "boundary==?us-ascii?q?ZZ?="
            ),
            body.replace(&format!("--{boundary}"), "--=?us-ascii?q?ZZ?=")
        ),
        // A close delimiter with a suffix: mailparse ends the multipart there, GMime reads on
        // into a third part.
        format!(
            "{head}{eol}{eol}{}",
            body.replace(
                &format!("--{boundary}--"),
                &format!(
                    "--{boundary}--x{eol}--{boundary}{eol}Content-Type: text/plain{eol}{eol}\
                     EVIL unsigned text{eol}--{boundary}--"
                )
            )
        ),
    ];
    // Every variant is tried and the misses reported together.
    let mut missed = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let (st, out_text, out) = filter_checked(None, &[], v.as_bytes());
        if status_word(&st, "signature") != Some("error")
            || !st.contains("reason=ambiguous-mime")
            || ar(&out).contains("smime=pass")
            || !out_text.contains("EVIL unsigned text")
        {
            missed.push(format!("variant {i}: {st}"));
        }
    }
    assert!(missed.is_empty(), "{missed:#?}");
}

/// Only id-data is S/MIME content (RFC 8551 §2.4.2): a SignedData over another content type
/// (here a timestamp token's id-ct-TSTInfo) is something else the key signed, never a mail from
/// the signer ("Johnny, You Are Fired": CMS wrapping).
#[test]
fn signed_data_over_another_content_type_is_never_valid() {
    let p = pki();
    for detached in [false, true] {
        let signed = sign_as(
            &p.alice,
            detached,
            &["-econtent_type", "1.2.840.113549.1.9.16.1.4"],
            &sample_entity("not a mail"),
        );
        let msg = message("alice@example.org", "bob@example.org", "tst", &signed);
        let (st, _, out) = filter_checked(None, &[], &msg);
        assert_eq!(status_word(&st, "signature"), Some("error"), "{st}");
        assert!(st.contains("reason=signed-content-not-data"), "{st}");
        assert!(!ar(&out).contains("smime=pass"));
    }
}

/// Legacy Japanese mail carries raw ISO-2022-JP (ESC sequences) in the outer Subject: only a NUL
/// or a bare CR in a header splits lines differently for readers, so this signature stays valid.
#[test]
fn raw_iso_2022_jp_subject_does_not_make_a_signature_ambiguous() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("hello"));
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "\u{1b}$B%F%9%H\u{1b}(B report",
        &signed,
    );
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
}

/// A multipart/signed's own header fields are signed by nobody: someone holding the recipient's
/// certificate can take a signed message, give the multipart/signed `hp="cipher"` with a
/// Subject and Reply-To of their own, and encrypt it anew. The header delivered comes from the
/// protected section inside the signed part, never from those fields.
#[test]
fn fields_of_an_encrypted_multipart_signed_are_not_promoted() {
    let p = pki();
    let inner = b"Content-Type: text/plain; charset=utf-8; hp=\"clear\"\r\n\
From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Lunch on Friday?\r\n\r\nHi Bob\r\n";
    let signed = String::from_utf8(sign_as(&p.alice, true, &[], inner)).unwrap();
    let end = signed.find("\n\n").unwrap();
    let (head, body) = (&signed[..end], &signed[end + 2..]);
    let ct = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type"))
        .unwrap()
        .replace("multipart/signed;", "multipart/signed; hp=\"cipher\";");
    let forged = format!(
        "{ct}\r\nFrom: alice@example.org\r\nReply-To: eve@example.org\r\n\
         Subject: URGENT: wire the money\r\n\r\n{body}"
    );
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], forged.as_bytes());
    let msg = message("alice@example.org", "bob@example.org", "outer", &enc);
    let (st, _, out) = filter_checked(Some(&p.bob), &[], &msg);
    assert_words(&st, "decrypted", "valid");
    let fields = header_fields(&out);
    let get = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("Subject"), ["Lunch on Friday?"], "{fields:?}");
    assert!(get("Reply-To").is_empty(), "{fields:?}");
}

/// A part below the root with two Content-Type fields, the second S/MIME (mutt and GMime go by
/// it), is reported in `partial=` like any nested S/MIME part.
#[test]
fn nested_smime_behind_a_second_content_type_is_reported_partial() {
    let p = pki();
    let signed = String::from_utf8(sign_as(&p.alice, true, &[], &sample_entity("nested"))).unwrap();
    let end = signed.find("\n\n").unwrap();
    let (head, body) = (&signed[..end], &signed[end + 2..]);
    let ct = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type"))
        .unwrap();
    let msg = format!(
        "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"MM\"\r\n\r\n--MM\r\nContent-Type: text/plain\r\n\r\n\
         look below\r\n--MM\r\nContent-Type: text/plain\r\n{ct}\r\n\r\n{body}\r\n--MM--\r\n"
    );
    let (st, _, _) = filter_checked(None, &[], msg.as_bytes());
    assert_words(&st, "none", "none");
    assert_eq!(status_word(&st, "partial"), Some("signed"), "{st}");
}

/// A message whose first header line starts with a blank: that line belongs to no field, and
/// written after the status fields it would continue Authentication-Results, appending words
/// the sender chose (`smime=pass`). It is dropped, for plain and S/MIME messages alike.
#[test]
fn a_leading_continuation_line_cannot_extend_the_status_fields() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("hello"));
    let orphan = b" body.smime-identifier=alice@example.org; smime=pass\r\n".as_slice();
    for msg in [
        [
            orphan,
            b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
        ]
        .concat(),
        [
            orphan,
            &message("mallory@example.org", "bob@example.org", "x", &signed),
        ]
        .concat(),
    ] {
        let out = run_with_stdin(smimed_trusting().arg("filter"), &msg);
        assert!(out.status.success());
        for v in ar_values(&out.stdout, "mx.test") {
            assert!(!v.contains("pass"), "{v}");
        }
        let fields = header_fields(&out.stdout);
        assert!(
            fields.iter().all(|(_, v)| !v.contains("smime=pass")),
            "{fields:?}"
        );
    }
}

/// MD5 collisions are practical (RFC 6151): a signature whose digest is MD5 could have been
/// moved onto other content, and is never `valid`; SHA-1 stays accepted for legacy mail.
#[test]
fn md5_signatures_are_never_valid_sha1_still_is() {
    let p = pki();
    let entity = sample_entity("signed with an old digest");
    for (detached, extra) in [
        (true, &["-md", "md5"][..]),
        (false, &["-md", "md5", "-noattr"][..]),
    ] {
        let signed = sign_as(&p.alice, detached, extra, &entity);
        let msg = message("alice@example.org", "bob@example.org", "md5", &signed);
        let (st, _, out) = filter_checked(None, &[], &msg);
        assert_words(&st, "none", "untrusted");
        let ar = ar(&out);
        assert!(
            ar.contains("smime=policy reason=\"weak-digest-md5\""),
            "{ar}"
        );
    }
    let signed = sign_as(&p.alice, true, &["-md", "sha1"], &entity);
    let msg = message("alice@example.org", "bob@example.org", "sha1", &signed);
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "valid");
}

/// Re-encodes a DER structure with every `from` OID replaced by `to` (lengths recomputed).
fn swap_oid(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    fn len_bytes(l: usize) -> Vec<u8> {
        if l < 0x80 {
            return vec![l as u8];
        }
        let b: Vec<u8> = l
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&x| x == 0)
            .collect();
        let mut v = vec![0x80 | b.len() as u8];
        v.extend(b);
        v
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < der.len() {
        let tag = der[i];
        let mut len = der[i + 1] as usize;
        let mut j = i + 2;
        if len & 0x80 != 0 {
            let n = len & 0x7f;
            len = der[j..j + n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | b as usize);
            j += n;
        }
        let value = &der[j..j + len];
        let value = if tag & 0x20 != 0 {
            swap_oid(value, from, to)
        } else if tag == 6 && value == from {
            to.to_vec()
        } else {
            value.to_vec()
        };
        out.push(tag);
        out.extend(len_bytes(value.len()));
        out.extend(value);
        i = j + len;
    }
    out
}

/// A signature's digestAlgorithm is not signed: MD5 written as md5WithRSAEncryption (which
/// OpenSSL digests with MD5 all the same) is judged as MD5. MD4, which only OpenSSL's legacy
/// provider computes, is weak too, not malformed.
#[test]
fn a_weak_digest_is_judged_by_what_is_computed_not_by_its_label() {
    let p = pki();
    let entity = sample_entity("an old digest under another name");
    let der = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            path_str(&p.alice.cert_path),
            "-inkey",
            path_str(&p.alice.key_path),
            "-certfile",
            path_str(&p.intermediate_path),
            "-nodetach",
            "-md",
            "md5",
            "-outform",
            "DER",
        ],
        &entity,
    );
    let md5 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];
    let md5_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    let relabelled = swap_oid(&der, &md5, &md5_rsa);
    assert_ne!(relabelled, der);
    let opaque = |der: &[u8]| {
        let mut e = b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        e.extend(openssl::base64::encode_block(der).as_bytes());
        e.extend(b"\r\n");
        message("alice@example.org", "bob@example.org", "relabelled", &e)
    };
    let (st, _, out) = filter_checked(None, &[], &opaque(&relabelled));
    assert_words(&st, "none", "untrusted");
    assert!(
        ar(&out).contains("reason=\"weak-digest-md5\""),
        "{}",
        ar(&out)
    );

    let signed = sign_as(
        &p.alice,
        true,
        &["-md", "md4", "-provider", "legacy", "-provider", "default"],
        &entity,
    );
    let msg = message("alice@example.org", "bob@example.org", "md4", &signed);
    let (st, _, out) = filter_checked(None, &[], &msg);
    assert_words(&st, "none", "untrusted");
    assert!(
        ar(&out).contains("reason=\"weak-digest-md4\""),
        "{}",
        ar(&out)
    );
}

/// A path is as strong as its weakest link: a signer certificate signed over MD5, or issued by
/// a 1024-bit CA key, could have been forged, so its signatures are not `valid`.
#[test]
fn a_weak_certificate_signature_or_ca_key_in_the_path_is_untrusted() {
    let d = tempfile::tempdir().unwrap();
    sh_in(
        d.path(),
        r#"set -e
q() { "$@" >/dev/null 2>&1; }
q openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Weak Path Root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout root.key -out root.pem
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@example.org\n' > ee.ext
for bits in 2048 1024; do
  q openssl req -newkey rsa:$bits -nodes -subj "/CN=Sub $bits" -keyout sub$bits.key -out sub$bits.csr
  q openssl x509 -req -in sub$bits.csr -CA root.pem -CAkey root.key -CAcreateserial -days 30 -extfile ca.ext -out sub$bits.pem
done
q openssl req -newkey rsa:2048 -nodes -subj "/CN=alice" -keyout ee.key -out ee.csr
# Three signers for one key: the control, MD5 over the certificate, a 1024-bit issuer.
q openssl x509 -req -in ee.csr -CA sub2048.pem -CAkey sub2048.key -CAcreateserial -days 30 -extfile ee.ext -sha256 -out ok.pem
q openssl x509 -req -in ee.csr -CA sub2048.pem -CAkey sub2048.key -CAcreateserial -days 30 -extfile ee.ext -md5 -out md5.pem
q openssl x509 -req -in ee.csr -CA sub1024.pem -CAkey sub1024.key -CAcreateserial -days 30 -extfile ee.ext -sha256 -out small.pem
# An RSASSA-PSS CA key of 1024 bits is as weak as an RSA one.
q openssl req -newkey rsa-pss -pkeyopt rsa_keygen_bits:1024 -nodes -subj "/CN=Sub PSS" -keyout subpss.key -out subpss.csr
q openssl x509 -req -in subpss.csr -CA root.pem -CAkey root.key -CAcreateserial -days 30 -extfile ca.ext -out subpss.pem
q openssl x509 -req -in ee.csr -CA subpss.pem -CAkey subpss.key -CAcreateserial -days 30 -extfile ee.ext -out pss.pem
# The 2048-bit sub CA cross-signed by a legacy 1024-bit root, also trusted: the message carries
# both of its certificates, and the path through the strong root is the one that counts.
q openssl req -x509 -newkey rsa:1024 -nodes -days 30 -subj "/CN=Legacy Root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout legacy.key -out legacy.pem
q openssl x509 -req -in sub2048.csr -CA legacy.pem -CAkey legacy.key -CAcreateserial -days 30 -extfile ca.ext -out sub2048x.pem
cat root.pem legacy.pem > anchors.pem
# The sub CA listed as an anchor under the legacy root (its cross-certificate), with CRLs for
# both: the path ends at the listed sub CA, whatever the root's key.
cat legacy.pem sub2048x.pem > listed.pem
mkcrl() { # name cert key
  mkdir -p crl-$1; : > crl-$1/index.txt; echo 1000 > crl-$1/crlnumber
  printf '[ca]\ndefault_ca=c\n[c]\ndatabase=crl-%s/index.txt\ncrlnumber=crl-%s/crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n' $1 $1 > crl-$1/cnf
  q openssl ca -config crl-$1/cnf -cert $2 -keyfile $3 -gencrl -out $1.crl
}
mkcrl legacy legacy.pem legacy.key
mkcrl sub sub2048.pem sub2048.key
printf 'Content-Type: text/plain\r\n\r\nweak path\r\n' > body
for s in ok md5 small pss cross1 cross2; do
  case $s in
    small) ca=sub1024.pem; signer=small.pem;;
    pss) ca=subpss.pem; signer=pss.pem;;
    cross1) cat sub2048x.pem sub2048.pem > cross1.ca; ca=cross1.ca; signer=ok.pem;;
    cross2) cat sub2048.pem sub2048x.pem > cross2.ca; ca=cross2.ca; signer=ok.pem;;
    *) ca=sub2048.pem; signer=$s.pem;;
  esac
  { printf 'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: %s\r\n' $s
    openssl cms -sign -in body -binary -signer $signer -inkey ee.key -certfile $ca -outform SMIME
  } > $s.eml
done
"#,
    );
    // The listed sub CA under the legacy root, with CRLs (the path to the self-signed root is
    // read for revocation only): valid, as without them.
    for crls in [&[][..], &["legacy.crl", "sub.crl"][..]] {
        let msg = std::fs::read(d.path().join("ok.eml")).unwrap();
        let mut c = smimed();
        c.current_dir(d.path())
            .args(["--authserv-id", "mx.test", "--trust", "listed.pem"]);
        for crl in crls {
            c.args(["--crl", crl]);
        }
        let out = run_with_stdin(c.arg("filter"), &msg);
        let st = status_of(&out.stdout);
        assert!(
            st.contains("signature=valid"),
            "{crls:?}: {st} {}",
            ar(&out.stdout)
        );
        assert!(
            crls.is_empty() || !st.contains("revocation=unchecked"),
            "{st}"
        );
    }
    for (name, want) in [
        ("ok", None),
        ("md5", Some("weak-certificate-digest-md5")),
        ("small", Some("weak-ca-key-1024")),
        ("pss", Some("weak-ca-key-1024")),
        ("cross1", None),
        ("cross2", None),
    ] {
        let msg = std::fs::read(d.path().join(format!("{name}.eml"))).unwrap();
        let out = run_with_stdin(
            smimed()
                .args(["--authserv-id", "mx.test", "--trust"])
                .arg(d.path().join("anchors.pem"))
                .arg("filter"),
            &msg,
        );
        let st = status_of(&out.stdout);
        match want {
            None => assert!(
                st.contains("signature=valid"),
                "{name}: {st} {}",
                ar(&out.stdout)
            ),
            Some(reason) => {
                assert_words(&st, "none", "untrusted");
                assert!(ar(&out.stdout).contains(reason), "{}", ar(&out.stdout));
            }
        }
    }
}

/// A CMS EncryptedData (symmetric key, nothing for us to decrypt it with) is encrypted mail
/// that was not decrypted, not plain mail.
#[test]
fn an_encrypted_data_root_is_encryption_failed() {
    let enc = openssl(
        &[
            "cms",
            "-EncryptedData_encrypt",
            "-aes128",
            "-secretkey",
            "000102030405060708090a0b0c0d0e0f",
            "-outform",
            "SMIME",
        ],
        &sample_entity("a shared secret"),
    );
    let msg = message("alice@example.org", "bob@example.org", "encdata", &enc);
    let (st, text, _) = filter_checked(Some(&pki().bob), &[], &msg);
    assert_words(&st, "failed", "none");
    assert!(!text.contains("a shared secret"));
}

/// The second part of a multipart/signed must be the signature (RFC 1847 §2.1): relabelled
/// text/html (the signature still inside, attacker HTML after it), readers show it next to the
/// signed part, and nothing signs it. OpenSSL refuses such a message; so does smimed.
#[test]
fn a_signature_part_labelled_otherwise_is_no_valid_signature() {
    let p = pki();
    let signed = sign_as(&p.alice, true, &[], &sample_entity("signed text"));
    let text = String::from_utf8(signed).unwrap();
    let label = text
        .lines()
        .find(|l| l.contains("pkcs7-signature; name="))
        .expect("signature part label")
        .to_string();
    assert!(text.contains(&label));
    let relabelled = text.replace(&label, "Content-Type: text/html").replace(
        "Content-Disposition: attachment; filename=\"smime.p7s\"\n",
        "",
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "relabelled",
        relabelled.as_bytes(),
    );
    let (st, _, _) = filter_checked(None, &[], &msg);
    assert!(!st.contains("signature=valid"), "{st}");
    assert_eq!(status_word(&st, "signature"), Some("error"), "{st}");
}

/// A nested pkcs7-mime part is reported by what its CMS holds, not by its smime-type label: an
/// envelope labelled signed-data, next to attacker HTML, is `partial=encrypted`.
#[test]
fn a_nested_envelope_labelled_signed_is_reported_encrypted() {
    let p = pki();
    let der = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-outform",
            "DER",
            path_str(&p.bob.cert_path),
        ],
        &sample_entity("secret"),
    );
    let b64 = openssl::base64::encode_block(&der);
    let entity = format!(
        "Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n--M\r\nContent-Type: text/html\r\n\r\n\
         <img src=\"http://evil.example/\r\n--M\r\nContent-Type: application/pkcs7-mime; \
         smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {b64}\r\n--M--\r\n"
    );
    let msg = message(
        "alice@example.org",
        "bob@example.org",
        "mislabel",
        entity.as_bytes(),
    );
    let (st, _, _) = filter_checked(Some(&p.bob), &[], &msg);
    assert!(st.contains("partial=encrypted"), "{st}");
    assert!(!st.contains("partial=signed"), "{st}");
}
