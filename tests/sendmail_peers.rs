//! `smimed sendmail` against real peers: every message it hands to the (recording) MTA is
//! decrypted and verified by the openssl command line and by gpgsm; RecipientInfos are checked
//! for Bcc leaks; failures never reach the MTA.

mod common;

use common::outbound::*;
use common::pki::pki;


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
    let out = env.sendmail(Some(&p.alice), &["-oi", "--", "bob@example.org", "carol@example.org"], &msg);
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1, "one copy for To+Cc");
    let r = &rec[0];
    assert_eq!(r.args, ["-oi", "--", "bob@example.org", "carol@example.org"]);
    assert_eq!(smime_type(&r.message), "enveloped-data", "CBC without recorded capabilities");
    let text = r.text();
    assert!(text.contains("Subject: outbound test\n"), "headers stay readable: {text}");
    assert!(!text.contains("outbound test.") && !text.contains("Bob."), "no plaintext outside");
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
        assert!(content.contains("Content-Transfer-Encoding: quoted-printable"), "{content}");
        assert!(content.contains("Gr=C3=BC=C3=9Fe, Bob."), "{content}");
        assert!(content.contains("=46rom the outbound test."), "{content}");
    }
    assert!(openssl_decrypt(&p.erin, &r.message).is_none());
    // gpgsm reads it too (as bob, RSA; gpgsm 2.2.40 crashes importing an EC PKCS#12, so the
    // EC side is read by openssl only), then verifies the detached signature.
    let g = Gpgsm::new(&[&p.bob]);
    let inner = g.decrypt(&pkcs7_der(&r.message)).expect("gpgsm decrypts");
    let (signed, sig) = split_signed(&inner);
    assert!(g.verify_detached(&sig, &signed), "gpgsm verifies the signature");
}
