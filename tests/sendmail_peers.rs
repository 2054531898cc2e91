//! `smimed sendmail` against real peers: every message it hands to the (recording) MTA is
//! decrypted and verified by the openssl command line and by gpgsm; RecipientInfos are checked
//! for Bcc leaks; failures never reach the MTA.

mod common;

use common::gpgsm::Gpgsm;
use common::outbound::*;
use common::pki::pki;
use common::{message, openssl, path_str, run_with_stdin, smimed, status_of, status_word};

/// Store with bob (RSA), carol (EC) and the intermediate; alice signs and is the sender.
fn env_with_recipients() -> Env {
    let p = pki();
    let env = Env::new();
    env.import(&[&p.bob.cert_path, &p.carol.cert_path, &p.intermediate_path]);
    env
}

#[test]
fn signed_and_encrypted_to_rsa_and_ec_with_cbc_reads_in_openssl_and_gpgsm() {
    let p = pki();
    let env = env_with_recipients();
    let msg = client_message(
        "Alice <alice@example.org>",
        "bob@example.org",
        Some("Carol <carol@example.org>"),
        "",
        "Gr\u{fc}\u{df}e, Bob.\nFrom the outbound test.\n",
    );
    let out = env.sendmail(
        Some(&p.alice),
        &["-oi", "--", "bob@example.org", "carol@example.org"],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1, "one copy for To+Cc");
    let r = &rec[0];
    assert_eq!(
        r.args,
        ["-oi", "--", "bob@example.org", "carol@example.org"]
    );
    assert_eq!(
        smime_type(&r.message),
        "enveloped-data",
        "CBC without recorded capabilities"
    );
    let text = r.text();
    assert!(
        text.contains("Subject: outbound test\n"),
        "headers stay readable: {text}"
    );
    assert!(
        !text.contains("outbound test.") && !text.contains("Bob."),
        "no plaintext outside"
    );
    assert!(!text.contains('\r'), "LF in, LF out");
    // Every recipient and the sender can decrypt; each RecipientInfo is one of them.
    assert_eq!(
        recipient_names(&r.message, &[&p.alice, &p.bob, &p.carol, &p.erin]),
        ["alice", "bob", "carol"]
    );
    assert_eq!(recipient_count(&r.message), 3);
    for u in [&p.alice, &p.bob, &p.carol] {
        let inner = openssl_decrypt(u, &r.message).unwrap_or_else(|| panic!("{} decrypts", u.name));
        let content = openssl_verify(&inner);
        let content = String::from_utf8_lossy(&content).into_owned();
        assert!(
            content.contains("Content-Transfer-Encoding: quoted-printable"),
            "{content}"
        );
        assert!(content.contains("Gr=C3=BC=C3=9Fe, Bob."), "{content}");
        assert!(content.contains("=46rom the outbound test."), "{content}");
        // RFC 9788: a protected copy of the header inside, marked hp="cipher".
        assert!(content.contains("hp=\"cipher\""), "{content}");
        assert!(
            content.contains("Subject: outbound test\r\n")
                && content.contains("To: bob@example.org\r\n"),
            "{content}"
        );
    }
    // smimed's own inbound side reads it: decrypted, signature valid.
    let filtered = common::filter_as(Some(&p.bob), &[], &r.message);
    assert_ok(&filtered);
    let st = common::status_of(&filtered.stdout);
    assert_eq!(
        common::status_word(&st, "encryption"),
        Some("decrypted"),
        "{st}"
    );
    assert_eq!(common::status_word(&st, "signature"), Some("valid"), "{st}");
    assert!(openssl_decrypt(&p.erin, &r.message).is_none());
    let printed = String::from_utf8_lossy(&openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &pkcs7_der(&r.message),
    ))
    .into_owned();
    assert!(
        printed.contains("rsaEncryption") && !printed.contains("rsaesOaep"),
        "PKCS#1 v1.5 unless advertised: {printed}"
    );
    assert!(
        printed.contains("dhSinglePass-stdDH-sha256kdf-scheme"),
        "ECDH for carol: {printed}"
    );
    // gpgsm reads it too (as bob, RSA; gpgsm 2.2.40 crashes importing an EC PKCS#12, so the
    // EC side is read by openssl only), then verifies the detached signature.
    let g = Gpgsm::new(&[&p.bob]);
    let inner = g.decrypt(&pkcs7_der(&r.message)).expect("gpgsm decrypts");
    let (signed, sig) = split_signed(&inner);
    assert!(
        g.verify_detached(&sig, &signed),
        "gpgsm verifies the signature"
    );
}

/// Makes `user` sign a message through smimed sendmail and imports it into the store, which
/// records the certificate with the SMIMECapabilities smimed advertises (GCM, OAEP).
fn record_capabilities(env: &Env, user: &common::pki::User) {
    let msg = client_message(&user.email, "nobody@example.org", None, "", "caps\n");
    let out = env.sendmail(
        Some(user),
        &["--encrypt", "never", "nobody@example.org"],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    let path = env.write(&format!("{}.eml", user.name), &rec[0].message);
    let out = env.certs_cmd(&["import", path.to_str().expect("utf-8")]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("capabilities recorded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn gcm_and_oaep_only_when_every_recipient_advertised_them() {
    let p = pki();
    let env = env_with_recipients();
    for u in [&p.alice, &p.bob, &p.carol] {
        record_capabilities(&env, u);
    }
    let lookup = env.certs_cmd(&["lookup", "bob@example.org"]);
    assert_ok(&lookup);
    let text = String::from_utf8_lossy(&lookup.stdout).into_owned();
    assert!(
        text.contains("aes256-gcm") && text.contains("rsaes-oaep"),
        "{text}"
    );

    let msg = client_message(
        &p.alice.email,
        "bob@example.org",
        Some("carol@example.org"),
        "",
        "all GCM.\n",
    );
    assert_ok(&env.sendmail(Some(&p.alice), &["-t"], &msg));
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].recipients(),
        ["bob@example.org", "carol@example.org"]
    );
    assert!(
        !rec[0].args.contains(&"-t".to_string()),
        "never -t to the MTA"
    );
    assert_eq!(smime_type(&rec[0].message), "authEnveloped-data");
    let der = pkcs7_der(&rec[0].message);
    let printed = String::from_utf8_lossy(&openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &der,
    ))
    .into_owned();
    assert!(
        printed.contains("id-aes256-GCM") || printed.contains("aes-256-gcm"),
        "{printed}"
    );
    assert!(
        printed.contains("rsaesOaep"),
        "OAEP for RSA recipients: {printed}"
    );
    assert!(
        printed.contains("dhSinglePass-stdDH-sha256kdf-scheme"),
        "ECDH, SHA-256 KDF: {printed}"
    );
    for u in [&p.alice, &p.bob, &p.carol] {
        let inner = openssl_decrypt(u, &rec[0].message).expect("decrypts");
        assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("all GCM."));
    }
    // gpgsm 2.2.40 (libksba 1.6.3) reads neither AuthEnvelopedData ("error getting IV") nor
    // RSA-OAEP ("error getting encrypted session key"): checked by hand, not asserted here.
    // That is why both are used only for recipients whose verified capabilities ask for them;
    // gpgsm reads the CBC + PKCS#1 v1.5 messages of the other tests.

    // A recipient without recorded capabilities (erin) brings the copy down to CBC and
    // PKCS#1 v1.5 for nobody but the RSA keys that advertised OAEP.
    env.import(&[&p.erin.cert_path]);
    let msg = client_message(
        &p.alice.email,
        "bob@example.org, erin@example.org",
        None,
        "",
        "mixed.\n",
    );
    assert_ok(&env.sendmail(Some(&p.alice), &["-t"], &msg));
    let rec = env.take_recorded();
    assert_eq!(smime_type(&rec[0].message), "enveloped-data");
    for u in [&p.alice, &p.bob, &p.erin] {
        let inner = openssl_decrypt(u, &rec[0].message).expect("decrypts");
        assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("mixed."));
    }
    let der = pkcs7_der(&rec[0].message);
    let printed = String::from_utf8_lossy(&openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &der,
    ))
    .into_owned();
    assert!(
        printed.contains("rsaesOaep"),
        "bob advertised OAEP: {printed}"
    );
    assert!(
        printed.contains("aes-256-cbc"),
        "erin (EC) advertised nothing: CBC: {printed}"
    );
}

#[test]
fn bcc_recipients_get_their_own_copies_and_leak_nowhere() {
    let p = pki();
    let env = env_with_recipients();
    // aerc style: bare addresses as arguments, the Bcc field still in the message, CRLF.
    let msg = String::from_utf8(client_message(
        &p.alice.email,
        "bob@example.org",
        None,
        "Bcc: Carol <carol@example.org>\n",
        "secret list.\n",
    ))
    .expect("utf-8")
    .replace('\n', "\r\n");
    let out = env.sendmail(
        Some(&p.alice),
        &["-oi", "bob@example.org", "carol@example.org"],
        msg.as_bytes(),
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2, "To copy + one Bcc copy");
    let users = [&p.alice, &p.bob, &p.carol, &p.erin];
    assert_eq!(rec[0].recipients(), ["bob@example.org"]);
    assert_eq!(recipient_names(&rec[0].message, &users), ["alice", "bob"]);
    assert_eq!(recipient_count(&rec[0].message), 2);
    assert_eq!(rec[1].recipients(), ["carol@example.org"]);
    assert_eq!(recipient_names(&rec[1].message, &users), ["alice", "carol"]);
    assert_eq!(recipient_count(&rec[1].message), 2);
    for r in &rec {
        assert!(
            !r.text().to_ascii_lowercase().contains("\nbcc:"),
            "no Bcc field"
        );
        assert!(r.text().contains("\r\n"), "CRLF in, CRLF out");
    }
    assert!(openssl_decrypt(&p.carol, &rec[0].message).is_none());
    assert!(openssl_decrypt(&p.bob, &rec[1].message).is_none());
    let inner = openssl_decrypt(&p.carol, &rec[1].message).expect("carol reads her copy");
    let content = openssl_verify(&inner);
    assert!(String::from_utf8_lossy(&content).contains("secret list."));
    assert!(!String::from_utf8_lossy(&inner)
        .to_ascii_lowercase()
        .contains("bcc:"));
    let g = Gpgsm::new(&[&p.bob]);
    assert!(g.decrypt(&pkcs7_der(&rec[0].message)).is_some());
    assert!(
        g.decrypt(&pkcs7_der(&rec[1].message)).is_none(),
        "bob is not in carol's copy"
    );

    // mutt style: every recipient after --, no Bcc field; carol is in neither To nor Cc.
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "mutt bcc.\n");
    assert_ok(&env.sendmail(
        Some(&p.alice),
        &["-oem", "-oi", "--", "bob@example.org", "carol@example.org"],
        &msg,
    ));
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].args, ["-oem", "-oi", "--", "bob@example.org"]);
    assert_eq!(recipient_names(&rec[0].message, &users), ["alice", "bob"]);
    assert_eq!(rec[1].args, ["-oem", "-oi", "--", "carol@example.org"]);
    assert_eq!(recipient_names(&rec[1].message, &users), ["alice", "carol"]);
}

#[test]
fn a_missing_certificate_under_encrypt_always_never_reaches_the_mta() {
    let p = pki();
    let env = env_with_recipients();
    let msg = client_message(
        &p.alice.email,
        "bob@example.org, dave@example.org",
        None,
        "",
        "x\n",
    );
    for args in [
        vec!["--encrypt", "always", "-t"],
        vec![
            "--encrypt=always",
            "--",
            "bob@example.org",
            "dave@example.org",
        ],
    ] {
        let out = env.sendmail(Some(&p.alice), &args, &msg);
        assert_eq!(
            out.status.code(),
            Some(65),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("dave@example.org") && !err.contains("bob@example.org"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(env.take_recorded().is_empty(), "MTA not called");
    }
    // The same through the header, and an expired or untrusted certificate is no certificate.
    env.import(&[&p.expired.cert_path, &p.untrusted.cert_path]);
    for to in ["expired@example.org", "untrusted@example.org"] {
        let msg = client_message(&p.alice.email, to, None, "X-Smime-Encrypt: yes\n", "x\n");
        let out = env.sendmail(Some(&p.alice), &[to], &msg);
        env.assert_refused(&out, 65, to);
    }
    // Two request fields that disagree: the "yes" is not dropped for the later "no" (the
    // message went out in clear), nor a bad value hidden behind a good one.
    for fields in [
        "X-Smime-Encrypt: yes\nX-Smime-Encrypt: no\n",
        "X-Smime-Encrypt: maybe\nX-Smime-Encrypt: no\n",
    ] {
        let to = "nocert@example.org";
        let msg = client_message(&p.alice.email, to, None, fields, "x\n");
        let out = env.sendmail(Some(&p.alice), &[to], &msg);
        env.assert_refused(&out, 65, "X-Smime-Encrypt");
    }
    // A sender without a certificate cannot encrypt (and without a key cannot sign).
    let msg = client_message(&p.erin.email, "bob@example.org", None, "", "x\n");
    let out = env.sendmail(None, &["--encrypt", "always", "bob@example.org"], &msg);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("erin@example.org (the sender)"));
    let out = env.sendmail(None, &["--sign", "always", "bob@example.org"], &msg);
    env.assert_refused(&out, 78, "--sign always without a key");
    // A missing or damaged trust file is a configuration error even when no recipient's
    // certificate is looked up (a signed-only copy went out with exit 0).
    let damaged = env.dir.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for bad in ["/nonexistent/trust.pem", path_str(&damaged)] {
        let msg = client_message(&p.alice.email, "nocert@example.org", None, "", "x\n");
        let out = env.sendmail(
            Some(&p.alice),
            &["--encrypt", "auto", "--trust", bad, "nocert@example.org"],
            &msg,
        );
        env.assert_refused(&out, 78, bad);
    }
    // A failing passphrase command is temporary (75) and nothing is sent, not even in clear.
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "x\n");
    let mut c = common::smimed();
    c.arg("sendmail")
        .arg("--trust")
        .arg(&p.root_path)
        .arg("--certs")
        .arg(&env.certs);
    c.arg("--mta")
        .arg(&env.mta)
        .arg("--key")
        .arg(&p.alice.p12_path);
    c.args(["--passphrase-command", "exit 1", "bob@example.org"]);
    let out = run_with_stdin(&mut c, &msg);
    env.assert_refused(&out, 75, "passphrase command failed");
}

#[test]
fn the_senders_own_chain_makes_the_sender_usable() {
    // Alice's certificate comes from the intermediate, which is only in her own PKCS#12; the
    // store holds erin (issued by the root) and no intermediate. Alice can still be encrypted
    // to: her chain reaches the anchor with the intermediate her key file carries.
    let p = pki();
    let env = Env::new();
    env.import(&[&p.erin.cert_path]);
    let msg = client_message(&p.alice.email, &p.erin.email, None, "", "own chain\n");
    let out = env.sendmail(
        Some(&p.alice),
        &["--encrypt", "always", &p.erin.email],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(smime_type(&rec[0].message), "enveloped-data");
    for u in [&p.erin, &p.alice] {
        let inner = openssl_decrypt(u, &rec[0].message).expect("decrypts");
        assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("own chain"));
    }
    // Under auto it is encrypted too, not sent signed only.
    let out = env.sendmail(Some(&p.alice), &[&p.erin.email], &msg);
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(smime_type(&rec[0].message), "enveloped-data");
}

#[test]
fn the_sender_among_the_recipients_is_encrypted_to_with_the_own_certificate() {
    // Alice sends to erin with herself in Cc (then in Bcc), her certificate nowhere in the
    // address book: her own identity's certificate serves for her as a recipient, as it does
    // for her as the sender. It was looked up in the book only, and the message went out
    // signed only (auto) or was refused (always).
    let p = pki();
    let env = Env::new();
    env.import(&[&p.erin.cert_path]);
    let cc = client_message(
        &p.alice.email,
        &p.erin.email,
        Some(&p.alice.email),
        "",
        "self in cc\n",
    );
    for policy in ["auto", "always"] {
        let out = env.sendmail(
            Some(&p.alice),
            &["--encrypt", policy, "--", &p.erin.email, &p.alice.email],
            &cc,
        );
        assert_ok(&out);
        let rec = env.take_recorded();
        assert_eq!(rec.len(), 1, "{policy}");
        assert_eq!(smime_type(&rec[0].message), "enveloped-data", "{policy}");
        assert!(!rec[0].text().contains("self in cc"), "{policy}: plaintext");
        for u in [&p.erin, &p.alice] {
            let inner = openssl_decrypt(u, &rec[0].message).expect("decrypts");
            assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("self in cc"));
        }
    }
    // Self in Bcc (as mutt passes it: an argument in neither To nor Cc): two copies, both
    // encrypted; alice's own copy names only her.
    let to_only = client_message(&p.alice.email, &p.erin.email, None, "", "self in bcc\n");
    let out = env.sendmail(
        Some(&p.alice),
        &["--", &p.erin.email, &p.alice.email],
        &to_only,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2);
    for r in &rec {
        assert_eq!(smime_type(&r.message), "enveloped-data");
        assert!(!r.text().contains("self in bcc"));
    }
    let own = rec
        .iter()
        .find(|r| r.recipients() == vec![p.alice.email.clone()])
        .expect("alice's own copy");
    assert_eq!(
        recipient_names(&own.message, &[&p.alice, &p.erin]),
        vec!["alice"]
    );
}

#[test]
fn eight_bit_part_headers_are_signed_opaque_when_sent_alone() {
    // A raw UTF-8 filename in a part's header cannot be made 7-bit without rewriting the
    // field: sent signed only, the message is signed opaque, which no MTA can break.
    let p = pki();
    let env = Env::new();
    let mut msg = format!(
        "From: {}\nTo: bob@example.org\nSubject: attachment\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"BND\"\n\n--BND\n\
         Content-Type: text/plain\n\nsee attached\n--BND\n\
         Content-Type: text/plain; name=\"",
        p.alice.email
    )
    .into_bytes();
    msg.extend_from_slice("Grüße.txt\"\n\nhallo\n--BND--\n".as_bytes());
    let signed_only = |msg: &[u8]| {
        let out = env.sendmail(
            Some(&p.alice),
            &["--encrypt", "never", "bob@example.org"],
            msg,
        );
        assert_ok(&out);
        env.take_recorded()
    };
    let rec = signed_only(&msg);
    assert_eq!(rec.len(), 1);
    assert!(rec[0].message.is_ascii(), "{}", rec[0].text());
    assert_eq!(smime_type(&rec[0].message), "signed-data");
    let content = opaque_content(&rec[0].message);
    let name = "Grüße.txt".as_bytes();
    assert!(content.windows(name.len()).any(|w| w == name));
    // An ASCII message is still multipart/signed.
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "plain\n");
    let rec = signed_only(&msg);
    assert!(
        rec[0].text().contains("multipart/signed"),
        "{}",
        rec[0].text()
    );
}

#[test]
fn encoded_display_names_resent_fields_and_8bit_fields_are_handled() {
    let p = pki();
    let env = env_with_recipients();
    let count = |msg: &[u8]| {
        let out = env.sendmail(Some(&p.alice), &["-t"], msg);
        assert_ok(&out);
        env.take_recorded()
    };
    // "Müller, Bob" as an RFC 2047 encoded word (as Exchange directories write it): one
    // recipient, visible, in the To/Cc copy; the From with such a name is still alice.
    let msg = b"From: =?utf-8?Q?M=C3=BCller=2C_Alice?= <alice@example.org>\n\
To: =?utf-8?Q?M=C3=BCller=2C_Bob?= <bob@example.org>, carol@example.org\n\
Subject: names\n\n2047\n";
    let rec = count(msg);
    assert_eq!(rec.len(), 1, "one copy: nobody is blind");
    let mut r = rec[0].recipients();
    r.sort();
    assert_eq!(r, ["bob@example.org", "carol@example.org"]);
    let mut names = recipient_names(&rec[0].message, &[&p.alice, &p.bob, &p.carol]);
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    // Resent: -t takes the Resent-* recipients; Resent-Bcc is blind and appears in no copy.
    let msg = b"From: alice@example.org\nTo: someone@example.org\nSubject: resent\n\
Resent-From: alice@example.org\nResent-To: carol@example.org\nResent-Bcc: bob@example.org\n\n\
forwarded on\n";
    let rec = count(msg);
    assert_eq!(rec.len(), 2, "carol's copy and bob's own");
    for c in &rec {
        assert!(!c.text().contains("Resent-Bcc"), "{}", c.text());
        assert!(!c.recipients().contains(&"someone@example.org".to_string()));
        for u in [&p.bob, &p.carol] {
            if let Some(inner) = openssl_decrypt(u, &c.message) {
                assert!(!String::from_utf8_lossy(&inner).contains("Resent-Bcc"));
            }
        }
    }
    // A bounce (mutt's, neomutt's: Resent-From and Resent-To, the recipient as an argument)
    // of carol's message: encrypted to the person resending it (alice, who can read her copy)
    // and the resent recipient, not to carol, who wrote it and is no recipient; and signed
    // as alice.
    let bounce = |author: &str| {
        format!(
            "Resent-From: Alice <alice@example.org>\nResent-To: bob@example.org\n\
             From: {author}\nTo: someone@example.org\nSubject: bounced\n\nbounced on\n"
        )
    };
    let resend = |author: &str| {
        env.sendmail(
            Some(&p.alice),
            &[
                "--encrypt",
                "always",
                "-oem",
                "-oi",
                "--",
                "bob@example.org",
            ],
            bounce(author).as_bytes(),
        )
    };
    let out = resend("Carol <carol@example.org>");
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    let mut names = recipient_names(&rec[0].message, &[&p.alice, &p.bob, &p.carol]);
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let inner = openssl_decrypt(&p.alice, &rec[0].message).expect("alice reads her copy");
    let signed = openssl_verify(&inner);
    assert!(String::from_utf8_lossy(&signed).contains("bounced on"));
    // An author without a certificate does not stop it.
    let out = resend("dave@example.org");
    assert_ok(&out);
    assert_eq!(env.take_recorded().len(), 1);
    // A raw UTF-8 Subject is in the protected header too.
    let mut msg = b"From: alice@example.org\nTo: bob@example.org\nSubject: ".to_vec();
    msg.extend_from_slice("Grüße\n\nbody\n".as_bytes());
    let rec = count(&msg);
    let inner = openssl_decrypt(&p.bob, &rec[0].message).expect("decrypts");
    let signed = openssl_verify(&inner);
    assert!(
        String::from_utf8_lossy(&signed).contains("Subject: Grüße"),
        "{}",
        String::from_utf8_lossy(&signed)
    );
}

#[test]
fn sendmail_input_conventions_clusters_dots_mbox_lines_and_long_fields() {
    let p = pki();
    let env = env_with_recipients();
    // -ti is -t -i (getopt): recipients from the header, -t never reaches the MTA.
    let msg = client_message(
        &p.alice.email,
        &p.bob.email,
        Some(&p.carol.email),
        "",
        "cluster\n",
    );
    assert_ok(&env.sendmail(Some(&p.alice), &["-ti"], &msg));
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    assert!(
        !rec[0].args.iter().any(|a| a.starts_with("-t")),
        "{:?}",
        rec[0].args
    );
    assert!(rec[0].args.contains(&"-i".to_string()));
    let mut r = rec[0].recipients();
    r.sort();
    assert_eq!(r, [p.bob.email.clone(), p.carol.email.clone()]);
    assert!(openssl_decrypt(&p.carol, &rec[0].message).is_some());

    // Without -i a line holding a single "." ends the message, as sendmail(8) reads it;
    // with -oi it is part of the body.
    let msg = client_message(&p.alice.email, &p.bob.email, None, "", "one\n.\ntwo\n");
    for (flags, two) in [(&[][..], false), (&["-oi"][..], true)] {
        let mut args = flags.to_vec();
        args.extend(["--encrypt", "never", &p.bob.email]);
        assert_ok(&env.sendmail(Some(&p.alice), &args, &msg));
        let rec = env.take_recorded();
        let content = String::from_utf8_lossy(&openssl_verify(&rec[0].message)).into_owned();
        assert!(content.contains("one"));
        assert_eq!(content.contains("two"), two, "{flags:?}: {content}");
        let lone_dot = rec[0].text().lines().any(|l| l.trim_end() == ".");
        assert_eq!(lone_dot, two, "a lone dot goes to the MTA only with -i");
    }

    // An mbox envelope line first, and a header line over 998 octets: the signed part holds
    // neither a "From " line nor a line over 998 octets, and still verifies once an mbox
    // writer has quoted "From " lines.
    let refs: Vec<String> = (0..60).map(|i| format!("<id{i:04}@example.org>")).collect();
    let mut msg = format!("From {} Fri Nov 27 05:00:00 2026\n", p.alice.email).into_bytes();
    msg.extend(client_message(
        &p.alice.email,
        &p.bob.email,
        None,
        &format!("References: {}\n", refs.join(" ")),
        "mbox\n",
    ));
    assert_ok(&env.sendmail(Some(&p.alice), &["--encrypt", "never", &p.bob.email], &msg));
    let rec = env.take_recorded();
    let text = rec[0].text();
    assert!(!text.lines().any(|l| l.starts_with("From ")), "{text}");
    assert!(
        text.lines().all(|l| l.len() <= 998),
        "a line over 998 octets"
    );
    let quoted = text.replace("\nFrom ", "\n>From ");
    let content = String::from_utf8_lossy(&openssl_verify(quoted.as_bytes())).into_owned();
    assert!(content.contains("id0059@example.org"), "{content}");
}

#[test]
fn awkward_submissions_keep_body_out_of_the_header_and_signed_parts_transport_safe() {
    let p = pki();
    let env = env_with_recipients();
    let send = |args: &[&str], msg: &[u8]| {
        let mut a = args.to_vec();
        a.push(&p.bob.email);
        assert_ok(&env.sendmail(Some(&p.alice), &a, msg));
        env.take_recorded().remove(0)
    };
    // No blank line after the header: the first line that is no field starts the body, which
    // is encrypted; it was an outer (clear) header field.
    let rec = send(
        &["--encrypt", "always", "-oi"],
        b"From: alice@example.org\nTo: bob@example.org\nSubject: s\nThe launch code is 1234\n",
    );
    assert!(!rec.text().contains("launch code"), "{}", rec.text());
    let inner = openssl_decrypt(&p.bob, &rec.message).expect("decrypts");
    let content = String::from_utf8_lossy(&openssl_verify(&inner)).into_owned();
    let body = content.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("The launch code is 1234"), "{content}");

    // The last header line without a line break: no field runs into the next.
    let rec = send(
        &["--encrypt", "never", "-oi"],
        b"From: alice@example.org\nTo: bob@example.org\nSubject: hi",
    );
    assert!(rec.text().contains("\nSubject: hi\n"), "{}", rec.text());
    let content = String::from_utf8_lossy(&openssl_verify(&rec.message)).into_owned();
    assert!(
        content.contains("Subject: hi\r\nContent-Type: text/plain"),
        "{content}"
    );

    // Already quoted-printable with a "From " line (as some encoders leave it): encoded again
    // so that an mbox writer's ">From " does not break the signature.
    let rec = send(
        &["--encrypt", "never", "-oi"],
        b"From: alice@example.org\nTo: bob@example.org\nSubject: qp\n\
Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
hello\nFrom me to you\n",
    );
    let quoted = rec.text().replace("\nFrom ", "\n>From ");
    let content = String::from_utf8_lossy(&openssl_verify(quoted.as_bytes())).into_owned();
    assert!(content.contains("=46rom me to you"), "{content}");

    // A multipart without its close delimiter stays a multipart (the text part readable),
    // and parts labelled 8bit or binary that are 7-bit say 7bit inside the signed part.
    let rec = send(
        &["--encrypt", "never", "-oi"],
        "From: alice@example.org\nTo: bob@example.org\nSubject: nc\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"BB\"\n\n--BB\n\
Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e\n\
--BB\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\nascii data\n"
            .as_bytes(),
    );
    let content = String::from_utf8_lossy(&openssl_verify(&rec.message)).into_owned();
    assert!(!content.contains("application/octet-stream;"), "{content}");
    assert!(content.contains("multipart/mixed"), "{content}");
    assert!(content.contains("Gr=C3=BC=C3=9Fe"), "{content}");
    assert!(!content.contains("Transfer-Encoding: binary"), "{content}");
    assert!(!content.contains("Transfer-Encoding: 8bit"), "{content}");
    assert!(content.contains("--BB--"), "{content}");

    // Text re-encoded as quoted-printable never puts the enclosing boundary at the start of a
    // line: a soft break before "--XYZ" of the text made it a delimiter, and every reader saw
    // the part cut short and a bogus part after it (under a signature that verified).
    let line = "\u{e4}".to_string() + &"a".repeat(69) + "--XYZ";
    let rec = send(
        &["--encrypt", "never", "-oi"],
        format!(
            "From: alice@example.org\nTo: bob@example.org\nSubject: qpb\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\n\
Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
{line}\nsecond line\n--XYZ\nContent-Type: text/plain\n\nsecond part\n--XYZ--\n"
        )
        .as_bytes(),
    );
    let content = openssl_verify(&rec.message);
    let parsed = mailparse::parse_mail(&content).expect("parse");
    assert_eq!(
        parsed.subparts.len(),
        2,
        "{}",
        String::from_utf8_lossy(&content)
    );
    assert_eq!(
        parsed.subparts[0].get_body().expect("body"),
        format!("{line}\r\nsecond line")
    );

    // A From field in the obsolete syntax ("From :") is no mbox envelope line: the message
    // is signed and encrypted.
    assert_ok(&env.sendmail(
        Some(&p.alice),
        &["-t"],
        b"From : alice@example.org\nTo: bob@example.org\nSubject: obs\n\nhello\n",
    ));
    let rec = env.take_recorded().remove(0);
    assert_eq!(smime_type(&rec.message), "enveloped-data", "{}", rec.text());

    // Binary attachments keep every byte: a CMS object sent raw (binary) and a non-text
    // quoted-printable part with an encoded LF and a "From " line.
    let blob: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let mut msg =
        b"From: alice@example.org\nTo: bob@example.org\nSubject: bin\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"X\"\n\n--X\nContent-Type: text/plain\n\nhi\n--X\n\
Content-Type: application/pkcs7-mime; name=x.p7m\nContent-Transfer-Encoding: binary\n\n"
            .to_vec();
    msg.extend_from_slice(&blob);
    msg.extend_from_slice(
        b"\n--X\nContent-Type: application/octet-stream; name=x.bin\n\
Content-Transfer-Encoding: quoted-printable\n\nFrom a=0Ab\n--X--\n",
    );
    let rec = send(&["--encrypt", "never", "-oi"], &msg);
    let content = openssl_verify(&rec.message);
    let parsed = mailparse::parse_mail(&content).expect("parse");
    let part = |name: &str| {
        parsed
            .subparts
            .iter()
            .find(|s| s.ctype.params.get("name").map(String::as_str) == Some(name))
            .expect(name)
            .get_body_raw()
            .expect("body")
    };
    assert_eq!(part("x.p7m"), blob);
    assert_eq!(part("x.bin"), b"From a\nb");

    // A signed message forwarded inside the content is left as it is: its own signature
    // still verifies after ours is taken off.
    let inner_signed = common::sign_as(
        &p.carol,
        true,
        &[],
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nnested, 7-bit\r\n",
    );
    let mut msg = b"From: alice@example.org\nTo: bob@example.org\nSubject: fwd\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"OO\"\n\n--OO\nContent-Type: text/plain\n\nsee below\n--OO\n"
        .to_vec();
    msg.extend_from_slice(&inner_signed);
    msg.extend_from_slice(b"\n--OO--\n");
    let rec = send(&["--encrypt", "never", "-oi"], &msg);
    let content = openssl_verify(&rec.message);
    let text = String::from_utf8_lossy(&content);
    let start = text
        .find("MIME-Version: 1.0\r\nContent-Type: multipart/signed")
        .expect("nested");
    let end = text.rfind("\r\n--OO--").expect("end");
    let nested = openssl_verify(text[start..end].as_bytes());
    assert!(String::from_utf8_lossy(&nested).contains("nested, 7-bit"));
}

#[test]
fn auto_policy_headers_and_mta_exit_code() {
    let p = pki();
    let env = env_with_recipients();
    // auto: dave has no certificate, so the message is signed but not encrypted.
    let msg = client_message(
        &p.alice.email,
        "dave@example.org",
        None,
        "",
        "plain but signed.\n",
    );
    assert_ok(&env.sendmail(Some(&p.alice), &["dave@example.org"], &msg));
    let rec = env.take_recorded();
    let text = rec[0].text();
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(
        text.contains("protocol=\"application/pkcs7-signature\"")
            && text.contains("micalg=sha-256")
    );
    let content = openssl_verify(&rec[0].message);
    assert!(String::from_utf8_lossy(&content).contains("plain but signed."));
    assert!(String::from_utf8_lossy(&content).contains("hp=\"clear\""));
    let (signed, sig) = split_signed(&rec[0].message);
    assert!(signed.iter().all(|&b| b < 0x80), "7-bit signed part");
    let g = Gpgsm::new(&[]);
    assert!(g.verify_detached(&sig, &signed));
    // Signed attributes: SMIMECapabilities in our order, encryption key preference, ESS.
    let printed = String::from_utf8_lossy(&openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &sig,
    ))
    .into_owned();
    let gcm = printed.find("aes-256-gcm").expect("GCM advertised");
    let cbc = printed.find("aes-256-cbc").expect("CBC advertised");
    assert!(gcm < cbc, "GCM preferred");
    for attr in [
        "S/MIME Capabilities",
        "id-smime-aa-encrypKeyPref",
        "signingTime",
        "id-smime-aa-signingCertificateV2",
        "sha256",
    ] {
        assert!(printed.contains(attr), "{attr} missing: {printed}");
    }
    // RSA-OAEP is offered with its SHA-256 parameters (RFC 3560 §5), never bare (which means
    // SHA-1): rSAES-OAEP-SHA256-Identifier, byte for byte.
    let oaep_sha256: &[u8] = &[
        0x30, 0x38, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x2b,
        0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0xa1, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
        0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    assert!(
        sig.windows(oaep_sha256.len()).any(|w| w == oaep_sha256),
        "OAEP with SHA-256 parameters: {printed}"
    );

    // Headers ask per message and are removed; never means a plain pass-through.
    let msg = client_message(
        &p.alice.email,
        "bob@example.org",
        None,
        "X-Smime-Sign: no\nX-Smime-Encrypt: no\n",
        "as is.\n",
    );
    assert_ok(&env.sendmail(Some(&p.alice), &["bob@example.org"], &msg));
    let rec = env.take_recorded();
    let text = rec[0].text();
    assert!(
        text.contains("as is.") && !text.contains("X-Smime") && !text.contains("pkcs7"),
        "{text}"
    );

    // Opaque signing on request, read by openssl and gpgsm.
    let msg = client_message(&p.alice.email, "dave@example.org", None, "", "opaque.\n");
    assert_ok(&env.sendmail(Some(&p.alice), &["--opaque", "dave@example.org"], &msg));
    let rec = env.take_recorded();
    assert_eq!(smime_type(&rec[0].message), "signed-data");
    assert!(String::from_utf8_lossy(&openssl_verify(&rec[0].message)).contains("opaque."));
    assert!(g.verify_opaque(&pkcs7_der(&rec[0].message)).is_some());

    // The MTA's exit code is ours.
    let out = env.sendmail_env(
        Some(&p.alice),
        &["bob@example.org"],
        &msg,
        &[("FAKE_MTA_RC", "75")],
    );
    assert_eq!(out.status.code(), Some(75));
}

#[test]
fn called_as_sendmail_through_a_link() {
    let p = pki();
    let env = env_with_recipients();
    let link = env.dir.path().join("sendmail");
    std::os::unix::fs::symlink(common::smimed_bin(), &link).expect("symlink");
    let config = env.write(
        "config.toml",
        format!(
            "trust = [\"{}\"]\ncerts = \"{}\"\nmta = \"{} -x\"\nkey = [\"{}\"]\nencrypt = \"always\"\n",
            p.root_path.display(),
            env.certs.display(),
            env.mta.display(),
            p.alice.p12_path.display()
        )
        .as_bytes(),
    );
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "via link.\n");
    let mut c = std::process::Command::new(&link);
    c.env("SMIMED_CONFIG", &config)
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .args(["-i", "-f", "alice@example.org", "bob@example.org"]);
    let out = run_with_stdin(&mut c, &msg);
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(
        rec[0].args,
        [
            "-x",
            "-i",
            "-f",
            "alice@example.org",
            "--",
            "bob@example.org"
        ]
    );
    let inner = openssl_decrypt(&p.bob, &rec[0].message).expect("bob decrypts");
    assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("via link."));

    // The config file's mta is a path like its other keys: `~/…`, or relative to the file's
    // folder (both were taken literally: "cannot run the MTA ~/…", exit 69).
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::copy(&env.mta, home.join("bin/mta.sh")).unwrap();
    let folder = env.dir.path().join("cfg");
    std::fs::create_dir_all(folder.join("bin")).unwrap();
    std::fs::copy(&env.mta, folder.join("bin/mta.sh")).unwrap();
    for mta in ["~/bin/mta.sh -y", "bin/mta.sh -y"] {
        let config = folder.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "trust = [\"{}\"]\nmta = \"{mta}\"\nkey = [\"{}\"]\nencrypt = \"never\"\n",
                p.root_path.display(),
                p.alice.p12_path.display()
            ),
        )
        .unwrap();
        let mut c = std::process::Command::new(&link);
        c.env("SMIMED_CONFIG", &config)
            .env("HOME", &home)
            .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
            .current_dir("/")
            .args(["-i", "bob@example.org"]);
        let out = run_with_stdin(&mut c, &msg);
        assert_ok(&out);
        assert_eq!(env.take_recorded()[0].args[0], "-y", "{mta}");
    }

    // Installed as the system's sendmail and pointed at itself: refused, not a loop.
    let mut c = std::process::Command::new(&link);
    c.env("SMIMED_CONFIG", &config)
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .args(["--mta", path_str(&link), "bob@example.org"]);
    let out = run_with_stdin(&mut c, &msg);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is smimed itself"));
    env.assert_refused(&out, 78, "the MTA is smimed itself");
}

#[test]
fn ec_signer_and_opaque_encrypted_read_by_gpgsm_and_openssl() {
    let p = pki();
    let env = env_with_recipients();
    // carol (EC, ECDSA signature) to bob (RSA): opaque signed-data inside the encryption.
    let msg = client_message(
        &p.carol.email,
        "bob@example.org",
        None,
        "",
        "ecdsa inside.\n",
    );
    assert_ok(&env.sendmail(
        Some(&p.carol),
        &["--opaque", "--encrypt", "always", "bob@example.org"],
        &msg,
    ));
    let rec = env.take_recorded();
    assert_eq!(
        recipient_names(&rec[0].message, &[&p.alice, &p.bob, &p.carol]),
        ["bob", "carol"]
    );
    let inner = openssl_decrypt(&p.bob, &rec[0].message).expect("bob decrypts");
    assert_eq!(smime_type(&inner), "signed-data");
    assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("ecdsa inside."));
    let g = Gpgsm::new(&[&p.bob]);
    let inner = g
        .decrypt(&pkcs7_der(&rec[0].message))
        .expect("gpgsm decrypts");
    let content = g
        .verify_opaque(&pkcs7_der(&inner))
        .expect("gpgsm verifies ECDSA");
    assert!(String::from_utf8_lossy(&content).contains("ecdsa inside."));
}

#[test]
fn separate_signing_and_encryption_certificates_and_revoked_recipients() {
    // Exchange-style: alice holds a signing-only certificate (digitalSignature) and a newer
    // or older encryption-only one (keyEncipherment). smimed signed with whichever was newest
    // (an encryption-only signer nobody can verify), and a newer signing-only certificate
    // made the sender unusable for encryption, so the message went out in clear. frank's
    // certificate is revoked by the CRL given with --crl: it must not be encrypted to.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sh = |script: &str| common::sh_in(d, script);
    sh(r#"
cat > ca.cnf <<'X'
[ca]
default_ca=c
[c]
database=index.txt
new_certs_dir=.
serial=serial
crlnumber=crlnumber
default_md=sha256
policy=p
default_crl_days=30
[p]
commonName=supplied
[v3_ca]
basicConstraints=critical,CA:true
keyUsage=critical,keyCertSign,cRLSign
[both]
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=emailProtection
subjectAltName=email:${ENV::ADDR}
[sig]
keyUsage=critical,digitalSignature
extendedKeyUsage=emailProtection
subjectAltName=email:${ENV::ADDR}
[enc]
keyUsage=critical,keyEncipherment
extendedKeyUsage=emailProtection
subjectAltName=email:${ENV::ADDR}
X
: > index.txt; echo 1000 > serial; echo 1000 > crlnumber; export ADDR=x
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj /CN=Root -days 30 -config ca.cnf -extensions v3_ca 2>/dev/null
mk() { ADDR=$2; export ADDR; openssl req -newkey rsa:2048 -nodes -keyout $1.key -subj /CN=$1 -out $1.csr 2>/dev/null
  openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in $1.csr -out $1.crt -extensions $3 -startdate $4 -days 30 -notext 2>/dev/null
  cat $1.key $1.crt > $1.pem; chmod 600 $1.key $1.pem; }
mk sig1 alice@example.org sig 20260101000000Z
mk enc alice@example.org enc 20260201000000Z
mk sig2 alice@example.org sig 20260301000000Z
mk bob bob@example.org both 20260101000000Z
mk frank frank@example.org both 20260101000000Z
openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -revoke frank.crt 2>/dev/null
openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -gencrl -out crl.pem 2>/dev/null
openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -gencrl -crl_lastupdate 20200101000000Z \
  -crl_nextupdate 20200201000000Z -out expired.crl 2>/dev/null
"#);
    let send = |keys: &[&str], extra: &[&str], to: &str| {
        let mut c = common::smimed();
        c.current_dir(d)
            .args(["--trust", "ca.pem", "--certs", "store", "--crl", "crl.pem"]);
        for k in keys {
            c.args(["--key", k]);
        }
        c.args(["sendmail", "--mta", "/bin/sh -c 'cat > out.eml' sh", "-oi"])
            .args(extra)
            .arg(to);
        let msg = format!("From: alice@example.org\nTo: {to}\nSubject: t\n\nhello {to}\n");
        let out = run_with_stdin(&mut c, msg.as_bytes());
        let eml = std::fs::read(d.join("out.eml")).unwrap_or_default();
        let _ = std::fs::remove_file(d.join("out.eml"));
        (out, eml)
    };
    let imp = common::smimed()
        .current_dir(d)
        .args([
            "--trust",
            "ca.pem",
            "--certs",
            "store",
            "certs",
            "import",
            "bob.crt",
            "frank.crt",
        ])
        .output()
        .expect("import");
    assert_ok(&imp);
    let decrypt = |key: &str, eml: &[u8]| {
        run_with_stdin(
            std::process::Command::new("openssl")
                .current_dir(d)
                .args(["cms", "-decrypt", "-inkey", key]),
            eml,
        )
    };
    let verify = |inner: &[u8]| {
        run_with_stdin(
            std::process::Command::new("openssl").current_dir(d).args([
                "cms",
                "-verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "smimesign",
            ]),
            inner,
        )
    };
    for keys in [["sig1.pem", "enc.pem"], ["sig2.pem", "enc.pem"]] {
        let (out, eml) = send(&keys, &[], "bob@example.org");
        assert_ok(&out);
        assert_eq!(
            smime_type(&eml),
            "enveloped-data",
            "{keys:?}: sent in clear"
        );
        for k in ["bob.key", "enc.key"] {
            let inner = decrypt(k, &eml);
            assert!(inner.status.success(), "{keys:?}: {k} cannot decrypt");
            let v = verify(&inner.stdout);
            assert!(
                v.status.success(),
                "{keys:?}: signature: {}",
                String::from_utf8_lossy(&v.stderr)
            );
        }
    }
    // The signature names the encryption certificate twice, as Outlook does: RFC 8551's
    // SMIMEEncryptionKeyPreference and Microsoft's 1.3.6.1.4.1.311.16.4 (openssl prints both).
    let (_, eml) = send(&["sig1.pem", "enc.pem"], &[], "bob@example.org");
    let signed = decrypt("bob.key", &eml).stdout;
    let printed = run_with_stdin(
        std::process::Command::new("openssl").args(["cms", "-cmsout", "-print"]),
        &signed,
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("id-smime-aa-encrypKeyPref"), "{printed}");
    assert!(printed.contains("1.3.6.1.4.1.311.16.4"), "{printed}");
    // On the receiving side, the certificate a valid signer names that way is harvested with
    // its signing certificate: a reply to alice is then encrypted (to the encryption
    // certificate; the signing-only one cannot be).
    let mut c = common::smimed();
    c.current_dir(d)
        .args([
            "--authserv-id",
            "mx.test",
            "--trust",
            "ca.pem",
            "--certs",
            "bobstore",
        ])
        .args(["--key", "bob.pem", "filter"]);
    let mut msg = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: t\r\n".to_vec();
    msg.extend_from_slice(&signed);
    let out = run_with_stdin(&mut c, &msg);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature=valid"));
    let enc = openssl::x509::X509::from_pem(&std::fs::read(d.join("enc.crt")).unwrap()).unwrap();
    let look = common::smimed()
        .current_dir(d)
        .args(["--trust", "ca.pem", "--certs", "bobstore"])
        .args(["certs", "lookup", "alice@example.org"])
        .output()
        .expect("lookup");
    let text = String::from_utf8_lossy(&look.stdout);
    assert!(
        text.contains(&format!("using {}", smimed::certs::fingerprint(&enc))),
        "{text}"
    );
    // `certs import` of the same message stores what a harvest stores: the encryption
    // certificate too (only the signing-only one was taken, leaving alice unusable).
    std::fs::write(d.join("signed.eml"), &msg).expect("write");
    let smimed_in = |args: &[&str]| {
        common::smimed()
            .current_dir(d)
            .args(["--trust", "ca.pem", "--certs", "impstore"])
            .args(args)
            .output()
            .expect("smimed")
    };
    assert_ok(&smimed_in(&["certs", "import", "signed.eml"]));
    let look = smimed_in(&["certs", "lookup", "alice@example.org"]);
    assert_ok(&look);
    let text = String::from_utf8_lossy(&look.stdout);
    assert!(
        text.contains(&format!("using {}", smimed::certs::fingerprint(&enc))),
        "{text}"
    );
    // A CRL past its nextUpdate (routine) leaves revocation unknown, as for signers: bob
    // is still encrypted to; it made every certificate of the CA unusable, and auto sent the
    // message in clear.
    {
        let mut c = common::smimed();
        c.current_dir(d)
            .args([
                "--trust",
                "ca.pem",
                "--certs",
                "store",
                "--crl",
                "expired.crl",
            ])
            .args(["--key", "sig1.pem", "--key", "enc.pem"])
            .args(["sendmail", "--mta", "/bin/sh -c 'cat > out.eml' sh", "-oi"])
            .arg("bob@example.org");
        let out = run_with_stdin(
            &mut c,
            b"From: alice@example.org\nTo: bob@example.org\nSubject: t\n\nhello\n",
        );
        assert_ok(&out);
        let eml = std::fs::read(d.join("out.eml")).expect("sent");
        std::fs::remove_file(d.join("out.eml")).expect("rm");
        assert_eq!(
            smime_type(&eml),
            "enveloped-data",
            "stale CRL: sent in clear"
        );
    }
    // frank is revoked: refused under --encrypt always (nothing sent), and lookup says why.
    let (out, eml) = send(
        &["sig1.pem", "enc.pem"],
        &["--encrypt", "always"],
        "frank@example.org",
    );
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eml.is_empty());
    let look = common::smimed()
        .current_dir(d)
        .args(["--trust", "ca.pem", "--certs", "store", "--crl", "crl.pem"])
        .args(["certs", "lookup", "frank@example.org"])
        .output()
        .expect("lookup");
    assert_eq!(look.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&look.stdout).contains("revoked"));
}

/// Header lines inside the signed part, the protected copy and part headers alike, carry no
/// trailing blank and none is over 998 octets: a hop that trims trailing blanks leaves the
/// signature valid (openssl verifies the message after such a hop). Blanks at the end of a field
/// go; a field whose blanks sit before a fold inside it (readers unfold those differently), a
/// blank line before a part's first field, and a line too long to fold at a single blank make
/// the message signed opaque, which every reader decodes to the bytes given.
#[test]
fn header_lines_of_a_signed_part_survive_trimming_hops() {
    let p = pki();
    let env = env_with_recipients();
    let send = |m: &str| {
        assert_ok(&env.sendmail(
            Some(&p.alice),
            &["--encrypt", "never", "-oi", &p.bob.email],
            m.as_bytes(),
        ));
        env.take_recorded().remove(0)
    };
    let trim_hop = |text: String| -> String {
        text.lines()
            .map(|l| format!("{}\n", l.trim_end_matches(['\r', ' ', '\t'])))
            .collect()
    };
    let parts = |content: &[u8]| {
        let parsed = mailparse::parse_mail(content).expect("parse");
        assert_eq!(parsed.ctype.mimetype, "multipart/mixed");
        parsed
            .subparts
            .iter()
            .map(|s| {
                let d = s.get_content_disposition();
                (
                    s.ctype.mimetype.clone(),
                    d.params.get("filename").cloned().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };

    // Blanks at the ends of fields (and a continuation line of blanks only, in the outer
    // header too): removed, the message stays multipart/signed.
    let rec = send(
        "From: alice@example.org\nTo: bob@example.org\nSubject: trailing \n \t\n\
         Content-Type: multipart/mixed; boundary=\"b\" \n\n--b\n\
         Content-Type: text/plain; charset=us-ascii\t\n\nhi\n--b\n\
         Content-Type: application/octet-stream\n\
         Content-Disposition: attachment; filename=\"report.bin\"\n\
         Content-Transfer-Encoding: base64\n\naGk=\n--b--\n",
    );
    let (signed, _) = split_signed(&rec.message);
    let signed = String::from_utf8(signed).expect("7-bit");
    for line in signed.split("\r\n") {
        assert!(
            !line.ends_with(' ') && !line.ends_with('\t'),
            "trailing blank: {line:?}"
        );
    }
    let content = openssl_verify(trim_hop(rec.text()).as_bytes());
    assert_eq!(
        parts(&content),
        [
            ("text/plain".to_string(), String::new()),
            (
                "application/octet-stream".to_string(),
                "report.bin".to_string()
            )
        ]
    );

    // Blanks before folds inside fields (a quoted boundary, a parameter list) and a blank line
    // before a part's first field: kept as they came, signed opaque.
    let rec = send(
        "From: alice@example.org\nTo: bob@example.org\nSubject: q\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; \n boundary=\"ab \n cd\"\n\n--ab  cd\n\
         Content-Type: text/plain\n\npart one\n--ab  cd\n \nContent-Type: text/html\n\n\
         <b>hi</b>\n--ab  cd--\n",
    );
    assert_eq!(smime_type(&rec.message), "signed-data", "{}", rec.text());
    let content = openssl_verify(trim_hop(rec.text()).as_bytes());
    let text = String::from_utf8_lossy(&content);
    assert!(
        text.contains("Content-Type: multipart/mixed; \r\n boundary=\"ab \r\n cd\";"),
        "{text}"
    );
    assert!(
        text.contains("--ab  cd\r\n \r\nContent-Type: text/html\r\n"),
        "{text}"
    );

    // A header line over 998 octets with no single blank to fold at: signed opaque.
    let long = "x".repeat(1100);
    let rec = send(&format!(
        "From: alice@example.org\nTo: bob@example.org\nSubject: long\n\
         Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nhi\n--b\n\
         Content-Type: application/octet-stream\n\
         Content-Disposition: attachment; filename=\"{long}.bin\"\n\
         Content-Transfer-Encoding: base64\n\naGk=\n--b--\n"
    ));
    assert_eq!(smime_type(&rec.message), "signed-data", "{}", rec.text());
    assert!(rec.text().lines().all(|l| l.len() <= 998));
    let content = openssl_verify(&rec.message);
    assert_eq!(parts(&content)[1].1.len(), 1104);
}

/// A group followed by another address (`To: friends: bob@…;, carol@…`, RFC 5322 §3.4; also
/// `undisclosed-recipients:;, …`): both are recipients. The `,` after the group went with the
/// next address: `, carol@…` was handed to the MTA and, having no certificate, made `auto`
/// send the message unencrypted.
#[test]
fn a_group_then_an_address_are_both_recipients_and_encrypted_to() {
    let p = pki();
    let env = env_with_recipients();
    for to in [
        "friends: bob@example.org;, carol@example.org",
        "undisclosed-recipients:;, bob@example.org, carol@example.org",
        "g: bob@example.org;(team), carol@example.org",
        "bob@example.org,, carol@example.org",
    ] {
        let msg = client_message(&p.alice.email, to, None, "", "to a group.\n");
        assert_ok(&env.sendmail(Some(&p.alice), &["-t"], &msg));
        let rec = env.take_recorded();
        assert_eq!(rec.len(), 1, "{to}");
        assert_eq!(
            rec[0].recipients(),
            ["bob@example.org", "carol@example.org"],
            "{to}"
        );
        assert_eq!(smime_type(&rec[0].message), "enveloped-data", "{to}");
        for u in [&p.bob, &p.carol] {
            assert!(openssl_decrypt(u, &rec[0].message).is_some(), "{to}");
        }
    }
}

/// A P-384 signer signs with SHA-384 (`micalg=sha-384`), as RFC 5753 pairs the curve with its
/// hash: with SHA-256, gpgsm said "a 256 bit hash is not valid for a 384 bit ECC key" and
/// exited 2 on every message.
#[test]
fn a_p384_signer_signs_with_sha384_read_by_gpgsm_and_openssl() {
    let p = pki();
    let env = env_with_recipients();
    let msg = client_message(&p.pat.email, "bob@example.org", None, "", "p-384.\n");
    assert_ok(&env.sendmail(
        Some(&p.pat),
        &["--encrypt", "never", "bob@example.org"],
        &msg,
    ));
    let rec = env.take_recorded();
    let text = String::from_utf8_lossy(&rec[0].message).into_owned();
    assert!(text.contains("micalg=sha-384"), "{text}");
    assert!(String::from_utf8_lossy(&openssl_verify(&rec[0].message)).contains("p-384."));
    let (signed, sig) = split_signed(&rec[0].message);
    let g = Gpgsm::new(&[]);
    assert!(g.verify_detached(&sig, &signed), "gpgsm verifies");
}

/// Signing keys: an RSA key under 2048 bits (RFC 8551 §4.3) is no signing identity, since
/// receivers, smimed's own filter among them, call its signatures untrusted (`weak-key-1024`);
/// an RSA-PSS key is none either (OpenSSL's CMS signing labelled it PKCS#1 v1.5: nobody could
/// verify it). sendmail signed with both; now `--sign always` refuses (78, nothing sent) and
/// `auto` sends unsigned. Ed25519 signs with SHA-512 (RFC 8419 §3.1; it used SHA-256).
#[test]
fn weak_rsa_and_rsa_pss_keys_do_not_sign_and_ed25519_signs_with_sha512() {
    let env = Env::new();
    let d = env.dir.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=key test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    let ca = d.join("ca.pem");
    // A user `name` with `newkey` (and its -pkeyopt): the key and certificate in one 0600 file.
    let identity = |name: &str, newkey: &[&str]| {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut args = vec!["req", "-newkey"];
        args.extend_from_slice(newkey);
        args.extend([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=signer",
        ]);
        run(&args);
        std::fs::write(
            d.join("user.ext"),
            "subjectAltName=email:signer@example.org\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=emailProtection\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "user.ext",
            "-out",
            &pem,
        ]);
        let both = [
            std::fs::read(d.join(&key)).unwrap(),
            std::fs::read(d.join(&pem)).unwrap(),
        ]
        .concat();
        let path = d.join(format!("{name}-identity.pem"));
        std::fs::write(&path, both).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path
    };
    let send = |key: &std::path::Path, sign: &str| {
        let mut c = smimed();
        c.args(["sendmail", "--trust", path_str(&ca), "--key", path_str(key)])
            .args([
                "--mta",
                path_str(&env.mta),
                "--sign",
                sign,
                "--encrypt",
                "never",
            ])
            .arg("bob@example.org");
        run_with_stdin(
            &mut c,
            b"From: signer@example.org\nTo: bob@example.org\nSubject: k\n\nhello\n",
        )
    };

    // smimed's filter, trusting the CA: its output.
    let filter = |msg: &[u8]| {
        let mut c = smimed();
        c.args([
            "--authserv-id",
            "mx.test",
            "--trust",
            path_str(&ca),
            "filter",
        ]);
        run_with_stdin(&mut c, msg).stdout
    };

    let weak = identity("weak", &["rsa:1024"]);
    // The receiving side: openssl's signature with that key is untrusted.
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            path_str(&d.join("weak.pem")),
            "-inkey",
            path_str(&d.join("weak.key")),
            "-nodetach",
            "-outform",
            "SMIME",
        ],
        b"Content-Type: text/plain\r\n\r\nweak\r\n",
    );
    let msg = message("signer@example.org", "bob@example.org", "weak", &signed);
    let out = filter(&msg);
    let st = status_of(&out);
    assert_eq!(status_word(&st, "signature"), Some("untrusted"), "{st}");
    assert!(String::from_utf8_lossy(&out).contains("weak-key-1024"));

    let pss = identity("pss", &["rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"]);
    for (what, key) in [("1024-bit RSA", &weak), ("RSA-PSS", &pss)] {
        let out = send(key, "always");
        env.assert_refused(&out, 78, what);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("2048"),
            "{what}: {out:?}"
        );
        let out = send(key, "auto");
        assert_ok(&out);
        let rec = env.take_recorded().remove(0);
        assert!(
            !rec.text().contains("pkcs7"),
            "{what} signed: {}",
            rec.text()
        );
    }

    // Ed25519: SHA-512 (openssl 3.0 here cannot read EdDSA in CMS at all; smimed's own filter,
    // on OpenSSL 3.6, is the reader).
    let ed = identity("ed", &["ed25519"]);
    assert_ok(&send(&ed, "always"));
    let rec = env.take_recorded().remove(0);
    assert!(rec.text().contains("micalg=sha-512"), "{}", rec.text());
    let st = status_of(&filter(&rec.message));
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
}

/// Parts the re-encoding keeps as they came can hold a line starting with "From " (a forwarded
/// multipart/signed, the mbox envelope line of an attached message): the first mbox on the way
/// writes ">From " and a multipart/signed breaks, so the message is signed opaque. Message types
/// other than rfc822 keep their type: message/global is base64-encoded (RFC 6532 allows it), a
/// delivery report kept as it is (and signed opaque when it is not 7-bit safe).
#[test]
fn from_lines_and_message_types_survive_signing() {
    let p = pki();
    let env = Env::new();
    let signed_only = |msg: &[u8]| {
        let out = env.sendmail(
            Some(&p.alice),
            &["--encrypt", "never", "bob@example.org"],
            msg,
        );
        assert_ok(&out);
        let rec = env.take_recorded();
        assert_eq!(rec.len(), 1);
        rec.into_iter().next().unwrap()
    };
    let head = format!(
        "From: {}\nTo: bob@example.org\nSubject: fwd\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"F\"\n\n--F\nContent-Type: text/plain\n\n\
         see below\n--F\n",
        p.alice.email
    );
    // An attached message saved from an mbox: its envelope line is not a header field.
    let mbox = format!(
        "{head}Content-Type: message/rfc822\n\nFrom bob@example.org Fri Nov 27 10:00:00 2026\n\
         From: bob@example.org\nSubject: old\n\nhello\n--F--\n"
    );
    let rec = signed_only(mbox.as_bytes());
    let lines_from = |m: &[u8]| {
        String::from_utf8_lossy(m)
            .lines()
            .any(|l| l.starts_with("From "))
    };
    if rec.text().contains("multipart/signed") {
        assert!(!lines_from(&rec.message), "{}", rec.text());
    } else {
        assert_eq!(smime_type(&rec.message), "signed-data");
    }
    // What an mbox does on the way: ">From " for "From "; the signature still verifies.
    let quoted: Vec<u8> = String::from_utf8_lossy(&rec.message)
        .split_inclusive('\n')
        .map(|l| {
            if l.starts_with("From ") {
                format!(">{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<String>()
        .into_bytes();
    let verified = if rec.text().contains("multipart/signed") {
        openssl(
            &["cms", "-verify", "-CAfile", path_str(&p.root_path)],
            &quoted,
        )
    } else {
        opaque_content(&quoted)
    };
    assert!(String::from_utf8_lossy(&verified).contains("hello"));

    // message/global with 8-bit content: still message/global.
    let mut global = format!("{head}Content-Type: message/global\n\n").into_bytes();
    global
        .extend_from_slice("From: bob@bücher.example\nSubject: Grüße\n\nGrüße\n--F--\n".as_bytes());
    let rec = signed_only(&global);
    let text = rec.text();
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(text.contains("Content-Type: message/global"), "{text}");
    assert!(!text.contains("application/octet-stream"), "{text}");
    // A delivery report with a line ending in a blank: kept as a report, signed opaque.
    let dsn = format!(
        "{head}Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example \n\n\
         Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n--F--\n"
    );
    let rec = signed_only(dsn.as_bytes());
    assert_eq!(smime_type(&rec.message), "signed-data");
    let content = opaque_content(&rec.message);
    let content = String::from_utf8_lossy(&content);
    assert!(content.contains("message/delivery-status"), "{content}");
    assert!(
        content.contains("Reporting-MTA: dns; mx.example \r\n"),
        "{content}"
    );
}

/// 8-bit text without a Content-Type: labelled utf-8 only when it is UTF-8; Latin-1 bytes are
/// unknown-8bit (RFC 1428), not utf-8 that readers would show garbled. A Content-Type ending in
/// ";" gets no empty parameter before the protected-header one.
#[test]
fn unlabelled_8bit_text_gets_an_honest_charset() {
    let p = pki();
    let env = Env::new();
    let send = |msg: &[u8]| {
        let out = env.sendmail(
            Some(&p.alice),
            &["--encrypt", "never", "--opaque", "bob@example.org"],
            msg,
        );
        assert_ok(&out);
        let rec = env.take_recorded();
        let content = opaque_content(&rec[0].message);
        String::from_utf8_lossy(&content).into_owned()
    };
    let head = format!(
        "From: {}\nTo: bob@example.org\nSubject: charset\n",
        p.alice.email
    );
    let mut latin1 = format!("{head}\n").into_bytes();
    latin1.extend_from_slice(b"Gr\xfc\xdfe aus K\xf6ln\n");
    let content = send(&latin1);
    assert!(content.contains("charset=unknown-8bit"), "{content}");
    assert!(content.contains("Gr=FC=DFe aus K=F6ln"), "{content}");
    let mut utf8 = format!("{head}\n").into_bytes();
    utf8.extend_from_slice("Grüße\n".as_bytes());
    assert!(send(&utf8).contains("charset=utf-8"));
    let semicolon =
        format!("{head}MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii;\n\nhi\n");
    let content = send(semicolon.as_bytes());
    assert!(!content.contains(";;"), "{content}");
    assert!(
        content.contains("charset=us-ascii;\r\n hp=\"clear\""),
        "{content}"
    );
}

/// A recipient whose verified SMIMECapabilities list AES-128-CBC alone gets AES-128-CBC, not the
/// AES-256-CBC smimed would choose for a recipient it knows nothing about (RFC 8551 §2.7.1.1).
#[test]
fn the_content_cipher_is_one_every_recipient_advertised() {
    let p = pki();
    let env = env_with_recipients();
    // SMIMECapabilities { { aes128-CBC } }, as the record of a harvested message holds it.
    let caps = [
        0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
    ];
    let record = env
        .certs
        .join(format!("{}.toml", smimed::certs::fingerprint(&p.bob.cert)));
    let mut text = std::fs::read_to_string(&record).expect("bob's record");
    text.push_str(&format!(
        "capabilities = \"{}\"\n",
        openssl::base64::encode_block(&caps)
    ));
    std::fs::write(&record, text).unwrap();
    let look = env.certs_cmd(&["lookup", "bob@example.org"]);
    assert!(
        String::from_utf8_lossy(&look.stdout).contains("capabilities: aes128-cbc"),
        "{}",
        String::from_utf8_lossy(&look.stdout)
    );
    let cipher = |to: &str| {
        let msg = client_message(&p.alice.email, to, None, "", "cipher\n");
        assert_ok(&env.sendmail(Some(&p.alice), &["--encrypt", "always", to], &msg));
        let rec = env.take_recorded();
        let printed = String::from_utf8_lossy(&openssl(
            &["cms", "-cmsout", "-print", "-inform", "DER"],
            &pkcs7_der(&rec[0].message),
        ))
        .into_owned();
        let inner = openssl_decrypt(&p.bob, &rec[0].message)
            .or_else(|| openssl_decrypt(&p.carol, &rec[0].message));
        assert!(inner.is_some(), "decrypts");
        printed
    };
    let printed = cipher("bob@example.org");
    assert!(printed.contains("aes-128-cbc"), "{printed}");
    // carol, of whom nothing is known: AES-256-CBC, as before.
    let printed = cipher("carol@example.org");
    assert!(printed.contains("aes-256-cbc"), "{printed}");
    // bob listing only a cipher smimed does not use (3DES): AES-128-CBC, which all read.
    let des3 = [
        0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07,
    ];
    let text = std::fs::read_to_string(&record).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("capabilities"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!(
            "capabilities = \"{}\"\n",
            openssl::base64::encode_block(&des3)
        );
    std::fs::write(&record, text).unwrap();
    let printed = cipher("bob@example.org");
    assert!(printed.contains("aes-128-cbc"), "{printed}");
}

/// What an opaque signed message (application/pkcs7-mime signed-data) holds, verified by the
/// openssl command line against the test root.
fn opaque_content(msg: &[u8]) -> Vec<u8> {
    openssl(
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-CAfile",
            path_str(&pki().root_path),
        ],
        &pkcs7_der(msg),
    )
}
