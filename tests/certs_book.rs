//! The address book: `smimed certs` import/list/lookup/remove/export over every input format,
//! vCard 3.0/4.0 sources, the usability rules with their explanations, and harvesting from the
//! inbound filter (only from verified mail; newer signing time wins; far future refused).

mod common;

use common::outbound::*;
use common::pki::{pki, User};
use common::{openssl, path_str, run_with_stdin, smimed};

fn fp(u: &User) -> String {
    smimed::certs::fingerprint(&u.cert)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn import_every_format_list_lookup_export_remove() {
    let p = pki();
    let env = Env::new();
    let der = openssl(
        &[
            "x509",
            "-outform",
            "DER",
            "-in",
            path_str(&p.carol.cert_path),
        ],
        b"",
    );
    let der_path = env.write("carol.der", &der);
    let p7 = openssl(
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            path_str(&p.erin.cert_path),
            "-outform",
            "DER",
        ],
        b"",
    );
    let p7_path = env.write("erin.p7c", &p7);
    env.import(&[&p.bob.chain_path, &der_path, &p7_path]);

    let list = env.certs_cmd(&["list"]);
    assert_ok(&list);
    let text = stdout(&list);
    assert_eq!(
        text.lines().count(),
        3,
        "bob, carol, erin; the intermediate is kept apart: {text}"
    );
    for u in [&p.bob, &p.carol, &p.erin] {
        assert!(text.contains(&fp(u)), "{text}");
    }
    assert!(!text.contains(&smimed::certs::fingerprint(&p.intermediate)));

    let look = env.certs_cmd(&["lookup", "Bob@EXAMPLE.org"]);
    assert_ok(&look);
    assert!(
        stdout(&look).contains(&format!("using {}", fp(&p.bob))),
        "{}",
        stdout(&look)
    );
    assert!(stdout(&look).contains("from store"), "{}", stdout(&look));

    let exp = env.certs_cmd(&["export", "carol@example.org"]);
    assert_ok(&exp);
    assert_eq!(exp.stdout, p.carol.cert.to_pem().expect("pem"));

    let rm = env.certs_cmd(&["remove", "bob@example.org"]);
    assert_ok(&rm);
    assert_eq!(
        env.certs_cmd(&["lookup", "bob@example.org"]).status.code(),
        Some(1)
    );
    assert_eq!(
        env.certs_cmd(&["export", "bob@example.org"]).status.code(),
        Some(1)
    );
    let rm = env.certs_cmd(&["remove", &fp(&p.carol)[..12]]);
    assert_ok(&rm);
    assert!(stdout(&rm).contains(&fp(&p.carol)));
    assert_eq!(
        env.certs_cmd(&["remove", "nobody@example.org"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(stdout(&env.certs_cmd(&["list"])).lines().count(), 1);

    let bad = env.write("junk.txt", b"not a certificate at all\n");
    let out = env.certs_cmd(&["import", path_str(&bad)]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lookup_explains_refusals_and_takes_the_newest_usable() {
    let p = pki();
    let env = Env::new();
    env.import(&[
        &p.expired.chain_path,
        &p.noemail.chain_path,
        &p.untrusted.chain_path,
    ]);
    for (addr, why) in [
        ("expired@example.org", "expired"),
        ("noemail@example.org", "emailProtection"),
        ("untrusted@example.org", "no path to a trust anchor"),
    ] {
        let out = env.certs_cmd(&["lookup", addr]);
        assert_eq!(out.status.code(), Some(1), "{addr}");
        let text = stdout(&out);
        assert!(
            text.contains("no usable certificate") && text.contains(why),
            "{addr}: {text}"
        );
    }
    env.import(&[&p.bob.chain_path, &p.bob_renewed.cert_path]);
    let out = env.certs_cmd(&["lookup", "bob@example.org"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("using {}", fp(&p.bob_renewed))),
        "{text}"
    );
    assert!(
        text.contains(&format!("refused {} from store", fp(&p.bob)))
            && text.contains("a newer usable certificate exists"),
        "{text}"
    );
}

fn fold(line: &str) -> String {
    // vCard line folding: 75 octets, continuation lines start with a space.
    let mut out = String::new();
    let mut rest = line;
    let mut first = true;
    while !rest.is_empty() {
        let n = if first { 75 } else { 74 }.min(rest.len());
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..n]);
        out.push_str("\r\n");
        rest = &rest[n..];
        first = false;
    }
    out
}

fn b64(u: &User) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(u.cert.to_der().expect("der"))
}

fn vcard3(u: &User) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{n}\r\nEMAIL;TYPE=INTERNET:{e}\r\n{k}END:VCARD\r\n",
        n = u.name,
        e = u.email,
        k = fold(&format!("KEY;ENCODING=b;TYPE=X509:{}", b64(u)))
    )
}

fn vcard4(u: &User) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:{n}\r\nEMAIL:{e}\r\n{k}END:VCARD\r\n",
        n = u.name,
        e = u.email,
        k = fold(&format!("KEY:data:application/pkix-cert;base64,{}", b64(u)))
    )
}

#[test]
fn importing_a_vcard_without_a_certificate_is_an_error() {
    let env = Env::new();
    for (name, card) in [
        ("none.vcf", "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:X\r\nEND:VCARD\r\n"),
        (
            "pgp.vcf",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Y\r\nKEY;TYPE=PGP;ENCODING=b:bWRhdGE=\r\nEND:VCARD\r\n",
        ),
    ] {
        let f = env.write(name, card.as_bytes());
        let out = env.certs_cmd(&["import", path_str(&f)]);
        assert_eq!(out.status.code(), Some(65), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains("no X.509 certificate"), "{err}");
    }
}

#[test]
fn vcard_3_and_4_in_a_vdir_are_a_source_after_the_store() {
    let p = pki();
    let env = Env::new();
    let vdir = env.dir.path().join("contacts");
    std::fs::create_dir_all(vdir.join("default")).expect("vdir");
    std::fs::write(vdir.join("default/bob.vcf"), vcard3(&p.bob_renewed)).expect("write");
    std::fs::write(vdir.join("default/carol.vcf"), vcard4(&p.carol)).expect("write");
    std::fs::write(
        vdir.join("default/other.vcf"),
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:X\r\nEND:VCARD\r\n",
    )
    .expect("write");
    env.import(&[&p.intermediate_path]);
    let lookup = |addr: &str| {
        let mut c = smimed();
        c.arg("--trust")
            .arg(&p.root_path)
            .arg("--certs")
            .arg(&env.certs);
        c.arg("--vcard").arg(&vdir).args(["certs", "lookup", addr]);
        run_with_stdin(&mut c, b"")
    };
    let out = lookup("carol@example.org");
    assert_ok(&out);
    assert!(
        stdout(&out).contains(&fp(&p.carol)) && stdout(&out).contains("from vcard"),
        "{}",
        stdout(&out)
    );
    let out = lookup("bob@example.org");
    assert_ok(&out);
    assert!(
        stdout(&out).contains(&fp(&p.bob_renewed)),
        "vCard 3.0: {}",
        stdout(&out)
    );
    // The store comes first, even with an older certificate.
    env.import(&[&p.bob.cert_path]);
    let out = lookup("bob@example.org");
    assert!(
        stdout(&out).contains(&format!("using {}", fp(&p.bob)))
            && stdout(&out).contains("from store"),
        "{}",
        stdout(&out)
    );

    // sendmail encrypts to carol's vCard certificate.
    let msg = client_message(
        &p.alice.email,
        "carol@example.org",
        None,
        "",
        "to a vcard.\n",
    );
    let out = env.sendmail(
        Some(&p.alice),
        &[
            "--vcard",
            path_str(&vdir),
            "--encrypt",
            "always",
            "carol@example.org",
        ],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    let inner = openssl_decrypt(&p.carol, &rec[0].message).expect("carol decrypts");
    assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("to a vcard."));

    // `certs import` reads vCards too.
    let f = env.write(
        "both.vcf",
        format!("{}{}", vcard3(&p.erin), vcard4(&p.alice)).as_bytes(),
    );
    env.import(&[&f]);
    let list = stdout(&env.certs_cmd(&["list"]));
    assert!(
        list.contains(&fp(&p.erin)) && list.contains(&fp(&p.alice)),
        "{list}"
    );
}

/// `smimed --certs DIR --trust ROOT --key RECIPIENT filter` on a message.
fn filter_harvesting(
    env: &Env,
    recipient: &User,
    msg: &[u8],
    with_store: bool,
) -> std::process::Output {
    let p = pki();
    let mut c = smimed();
    c.args(["--authserv-id", "mx.test", "--trust"])
        .arg(&p.root_path);
    if with_store {
        c.arg("--certs").arg(&env.certs);
    }
    c.arg("--key")
        .arg(&recipient.p12_path)
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS);
    c.arg("filter");
    run_with_stdin(&mut c, msg)
}

#[test]
fn the_filter_harvests_only_verified_signers_of_from() {
    let p = pki();
    let env = Env::new();
    // alice signs (smimed sendmail: multipart/signed with our capabilities).
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "harvest me.\n");
    assert_ok(&env.sendmail(
        Some(&p.alice),
        &["--encrypt", "never", "bob@example.org"],
        &msg,
    ));
    let signed = env.take_recorded().remove(0).message;

    // No store configured: nothing is written.
    assert_ok(&filter_harvesting(&env, &p.bob, &signed, false));
    assert!(!env.certs.exists());

    // A forged From (signer is alice, From says carol): verified signature, wrong signer.
    let forged = String::from_utf8_lossy(&signed).replacen(
        "From: alice@example.org",
        "From: carol@example.org",
        1,
    );
    assert_ok(&filter_harvesting(&env, &p.bob, forged.as_bytes(), true));
    // A tampered body: the signature does not verify.
    let tampered = String::from_utf8_lossy(&signed).replacen("harvest me.", "harvest m3.", 1);
    assert_ok(&filter_harvesting(&env, &p.bob, tampered.as_bytes(), true));
    assert_eq!(
        stdout(&env.certs_cmd(&["list"])).trim(),
        "",
        "nothing from unverified mail"
    );

    // The genuine message: alice's certificate and capabilities are recorded.
    let out = filter_harvesting(&env, &p.bob, &signed, true);
    assert_ok(&out);
    assert_eq!(
        common::status_word(&common::status_of(&out.stdout), "signature"),
        Some("valid")
    );
    let list = stdout(&env.certs_cmd(&["list"]));
    assert!(list.contains(&fp(&p.alice)), "{list}");
    assert!(
        list.contains(
            "source=harvest capabilities=aes256-gcm,aes128-gcm,aes256-cbc,aes128-cbc,rsaes-oaep"
        ),
        "{list}"
    );
    // The intermediate the signature carried was kept, so alice is now a usable recipient.
    let look = env.certs_cmd(&["lookup", "alice@example.org"]);
    assert_ok(&look);
    assert!(
        stdout(&look).contains(&format!("using {}", fp(&p.alice))),
        "{}",
        stdout(&look)
    );
    assert!(
        stdout(&look).contains("capabilities: aes256-gcm"),
        "{}",
        stdout(&look)
    );

    // Harvested from inside an encryption too: carol signs and encrypts to bob.
    env.import(&[&p.bob.cert_path]);
    let msg = client_message(&p.carol.email, "bob@example.org", None, "", "from carol.\n");
    assert_ok(&env.sendmail(
        Some(&p.carol),
        &["--encrypt", "always", "bob@example.org"],
        &msg,
    ));
    let enc = env.take_recorded().remove(0).message;
    assert_eq!(
        env.certs_cmd(&["lookup", "carol@example.org"])
            .status
            .code(),
        Some(1)
    );
    assert_ok(&filter_harvesting(&env, &p.bob, &enc, true));
    assert_ok(&env.certs_cmd(&["lookup", "carol@example.org"]));
}

#[test]
fn harvest_keeps_the_newest_signing_time_and_refuses_the_far_future() {
    use smimed::addressbook::store::{Harvested, Store};
    use smimed::ossl::Capability;
    let p = pki();
    let env = Env::new();
    let store = Store::new(env.certs.clone());
    let now = 2_000_000_000;
    // DER SMIMECapabilities: SEQUENCE { SEQUENCE { aes256-CBC } } and { { aes256-GCM } }.
    let cbc = [
        0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
    ];
    let gcm = [
        0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e,
    ];
    let caps = |s: &Store| {
        s.entries()
            .into_iter()
            .find(|e| e.fingerprint == fp(&p.alice))
            .and_then(|e| e.meta.capabilities())
    };
    assert_eq!(
        store
            .harvest(&p.alice.cert, Some(&gcm), Some(now - 100), now)
            .expect("h"),
        Harvested::Stored
    );
    assert_eq!(caps(&store), Some(vec![Capability::Aes256Gcm]));
    // An older message does not replace what a newer one said.
    assert_eq!(
        store
            .harvest(&p.alice.cert, Some(&cbc), Some(now - 200), now)
            .expect("h"),
        Harvested::Older
    );
    assert_eq!(caps(&store), Some(vec![Capability::Aes256Gcm]));
    // A newer one does.
    assert_eq!(
        store
            .harvest(&p.alice.cert, Some(&cbc), Some(now - 50), now)
            .expect("h"),
        Harvested::Stored
    );
    assert_eq!(caps(&store), Some(vec![Capability::Aes256Cbc]));
    // A signing time two days ahead is refused, and changes nothing.
    assert!(store
        .harvest(&p.alice.cert, Some(&gcm), Some(now + 2 * 86_400), now)
        .is_err());
    assert_eq!(caps(&store), Some(vec![Capability::Aes256Cbc]));
    // Files are private and written whole (no temp files left).
    let names: Vec<String> = std::fs::read_dir(&env.certs)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}
