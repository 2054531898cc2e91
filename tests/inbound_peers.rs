//! Messages made at test time by the openssl command line, each with its expected status.

mod common;

use common::pki::pki;
use common::*;

#[test]
fn openssl_signed_then_encrypted_to_bob_is_decrypted_and_valid() {
    let p = pki();
    let entity = sample_entity("hello from alice");
    let signed = openssl(
        &[
            "cms", "-sign", "-signer", path_str(&p.alice.cert_path), "-inkey",
            path_str(&p.alice.key_path), "-certfile", path_str(&p.intermediate_path), "-nodetach",
            "-binary", "-outform", "SMIME",
        ],
        &entity,
    );
    let enc = openssl(
        &["cms", "-encrypt", "-aes256", "-binary", path_str(&p.bob.cert_path)],
        &signed,
    );
    let msg = [headers("Alice <alice@example.org>", "bob@example.org", "st e").as_bytes(), &enc].concat();
    let out = filter_as(Some(&p.bob), &[], &msg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = status_of(&out.stdout);
    assert_eq!(status_word(&st, "encryption"), Some("decrypted"), "{st}");
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from alice"));
}
