//! The address book: `smimed certs` import/list/lookup/remove/export over every input format,
//! vCard 3.0/4.0 sources, the usability rules with their explanations, and harvesting from the
//! inbound filter (only from verified mail; newer signing time wins; far future refused).

mod common;

use common::outbound::*;
use common::pki::{pki, User};
use common::{
    assert_words, message, openssl, path_str, run_with_stdin, sample_entity, smimed, status_of,
    status_word,
};

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

/// RFC 8551 §2.5.3: the certificate a signer's verified mail last named as the one to encrypt
/// to (SMIMEEncryptionKeyPreference, or the signing certificate itself without one) wins over a
/// newer one; a later statement replaces an earlier one; a message without a signing time says
/// nothing that outranks a dated one; a certificate the user imports by hand is the latest word.
#[test]
fn lookup_takes_the_certificate_the_owner_last_asked_for() {
    use smimed::addressbook::store::Store;
    let p = pki();
    let env = Env::new();
    let store = Store::new(env.certs.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    // The intermediate only (a CA: no preference); both of bob's certificates come by mail.
    env.import(&[&p.intermediate_path]);
    let harvest = |u: &User, at: Option<i64>, preferred: bool| {
        store
            .harvest_as(&u.cert, None, at, now, preferred)
            .expect("harvest");
    };
    let lookup = || {
        let out = env.certs_cmd(&["lookup", "bob@example.org"]);
        assert_ok(&out);
        stdout(&out)
    };
    let uses = |u: &User| format!("using {}", fp(u));
    // A message signed an hour ago named the older certificate; the renewed one came along,
    // named by nobody.
    harvest(&p.bob, Some(now - 3600), true);
    harvest(&p.bob_renewed, Some(now - 3600), false);
    let text = lookup();
    assert!(text.contains(&uses(&p.bob)), "{text}");
    assert!(
        text.contains("another usable certificate was named later"),
        "{text}"
    );
    // An older statement for the renewed one changes nothing, nor one without a signing
    // time; a later one does.
    harvest(&p.bob_renewed, Some(now - 7200), true);
    harvest(&p.bob_renewed, None, true);
    harvest(&p.bob, None, true);
    assert!(lookup().contains(&uses(&p.bob)));
    harvest(&p.bob_renewed, Some(now - 60), true);
    assert!(lookup().contains(&uses(&p.bob_renewed)));
    // The user imports the older one by hand: the latest word.
    env.import(&[&p.bob.cert_path]);
    assert!(lookup().contains(&uses(&p.bob)));
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

/// A vCard KEY may hold a PKCS#7 bundle (certs-only, here made by `openssl crl2pkcs7`) instead
/// of one certificate, and a vCard may carry the issuing CA as a KEY of its own: both complete
/// the recipient's path when read through `--vcard`, with nothing in the store.
#[test]
fn vcard_keys_holding_a_pkcs7_or_the_issuing_ca_are_read() {
    use base64::Engine;
    let p = pki();
    let env = Env::new();
    let d = env.dir.path();
    let p7 = openssl(
        &[
            "crl2pkcs7",
            "-nocrl",
            "-outform",
            "DER",
            "-certfile",
            path_str(&p.carol.cert_path),
            "-certfile",
            path_str(&p.intermediate_path),
        ],
        b"",
    );
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let card = |email: &str, keys: &[String]| {
        let mut c = format!("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\nEMAIL:{email}\r\n");
        for k in keys {
            c += &fold(k);
        }
        c + "END:VCARD\r\n"
    };
    let pkcs7 = card(
        &p.carol.email,
        &[format!(
            "KEY:data:application/pkcs7-mime;base64,{}",
            b64(&p7)
        )],
    );
    let inter = openssl::x509::X509::from_pem(&std::fs::read(&p.intermediate_path).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    let two_keys = card(
        &p.bob.email,
        &[
            format!(
                "KEY:data:application/pkix-cert;base64,{}",
                b64(&p.bob.cert.to_der().unwrap())
            ),
            format!("KEY:data:application/pkix-cert;base64,{}", b64(&inter)),
        ],
    );
    std::fs::write(d.join("carol.vcf"), pkcs7).unwrap();
    std::fs::write(d.join("bob.vcf"), two_keys).unwrap();
    for (file, u) in [("carol.vcf", &p.carol), ("bob.vcf", &p.bob)] {
        let mut c = smimed();
        c.arg("--trust")
            .arg(&p.root_path)
            .arg("--certs")
            .arg(&env.certs);
        c.arg("--vcard")
            .arg(d.join(file))
            .args(["certs", "lookup", &u.email]);
        let out = run_with_stdin(&mut c, b"");
        assert_ok(&out);
        assert!(
            stdout(&out).contains(&format!("using {}", fp(u))),
            "{file}: {}",
            stdout(&out)
        );
    }
    // The store holds bob's certificate alone (no intermediate: refused there); the vCard's
    // listing of the same certificate is usable: it is used, and not also listed as refused.
    let env2 = Env::new();
    env2.import(&[&p.bob.cert_path]);
    let mut c = smimed();
    c.arg("--trust")
        .arg(&p.root_path)
        .arg("--certs")
        .arg(&env2.certs);
    c.arg("--vcard")
        .arg(d.join("bob.vcf"))
        .args(["certs", "lookup", &p.bob.email]);
    let out = run_with_stdin(&mut c, b"");
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains(&format!("using {}", fp(&p.bob))), "{text}");
    assert!(!text.contains(&format!("refused {}", fp(&p.bob))), "{text}");
    // Imported, the PKCS#7 vCard gives its certificates too.
    env.import(&[&d.join("carol.vcf")]);
    let out = env.certs_cmd(&["lookup", &p.carol.email]);
    assert_ok(&out);
    assert!(stdout(&out).contains("from store"), "{}", stdout(&out));
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

/// A signature that carries the signer's certificate but not its intermediate (gpgsm's
/// `--include-certs 1`; here `openssl cms -sign` without `-certfile`): the intermediate the
/// address book holds completes the path, as it does for a signature that carries none.
#[test]
fn a_stored_intermediate_completes_the_path_of_a_signer_sent_without_it() {
    let p = pki();
    let env = Env::new();
    let entity = sample_entity("signer certificate only");
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            path_str(&p.alice.cert_path),
            "-inkey",
            path_str(&p.alice.key_path),
            "-outform",
            "SMIME",
        ],
        &entity,
    );
    let msg = message("alice@example.org", "bob@example.org", "one cert", &signed);
    let out = filter_harvesting(&env, &p.bob, &msg, true);
    assert_eq!(
        status_word(&status_of(&out.stdout), "signature"),
        Some("untrusted"),
        "no intermediate anywhere"
    );
    env.import(&[&p.intermediate_path]);
    let out = filter_harvesting(&env, &p.bob, &msg, true);
    let st = status_of(&out.stdout);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
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

/// `openssl cms -sign` of a short text message from `from`, by each of `signers` (with the
/// intermediate carried), as S/MIME (multipart/signed).
fn openssl_signed(from: &str, signers: &[&User]) -> Vec<u8> {
    let p = pki();
    let body = b"Content-Type: text/plain\r\n\r\nsigned by openssl\r\n";
    let mut args: Vec<String> = vec!["cms".into(), "-sign".into()];
    for s in signers {
        args.extend([
            "-signer".into(),
            path_str(&s.cert_path).into(),
            "-inkey".into(),
            path_str(&s.key_path).into(),
        ]);
    }
    args.extend([
        "-certfile".into(),
        path_str(&p.intermediate_path).into(),
        "-from".into(),
        from.into(),
        "-to".into(),
        "bob@example.org".into(),
        "-subject".into(),
        "signed".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(&a, body)
}

#[test]
fn the_system_trust_folder_serves_lookups_as_it_serves_verification() {
    // No --trust: the anchors are the hashed folder $SSL_CERT_DIR, through which the filter
    // verifies. Lookups refused every certificate ("no path to a trust anchor").
    let p = pki();
    let env = Env::new();
    let hashed = env.dir.path().join("hashed");
    std::fs::create_dir_all(&hashed).expect("dir");
    std::fs::copy(&p.root_path, hashed.join("root.pem")).expect("copy");
    let out = std::process::Command::new("openssl")
        .arg("rehash")
        .arg(&hashed)
        .output()
        .expect("openssl rehash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.import(&[&p.bob.cert_path, &p.intermediate_path]);
    let look = |dir: &std::path::Path| {
        let mut c = smimed();
        c.env("SSL_CERT_DIR", dir)
            .arg("--certs")
            .arg(&env.certs)
            .args(["certs", "lookup", &p.bob.email]);
        c.output().expect("run")
    };
    let out = look(&hashed);
    assert_ok(&out);
    assert!(
        stdout(&out).contains(&format!("using {}", fp(&p.bob))),
        "{}",
        stdout(&out)
    );
    // A folder without the root: refused.
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    std::fs::copy(&p.untrusted_root_path, empty.join("other.pem")).expect("copy");
    std::process::Command::new("openssl")
        .arg("rehash")
        .arg(&empty)
        .output()
        .expect("rehash");
    assert_eq!(look(&empty).status.code(), Some(1));
}

#[test]
fn the_maildir_watcher_and_import_harvest_as_the_filter_does() {
    let p = pki();
    // smimed watch --once with --certs: alice's certificate and the carried intermediate
    // are kept (the watchers harvested nothing).
    let env = Env::new();
    let md = env.dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).expect("maildir");
    }
    std::fs::write(
        md.join("new/1800000000.M1P1.test"),
        openssl_signed(&p.alice.email, &[&p.alice]),
    )
    .expect("deliver");
    let out = common::smimed_as(&p.bob)
        .arg("--certs")
        .arg(&env.certs)
        .args(["watch", "--once"])
        .arg(&md)
        .output()
        .expect("watch");
    assert_ok(&out);
    let look = env.certs_cmd(&["lookup", &p.alice.email]);
    assert_ok(&look);
    assert!(stdout(&look).contains(&format!("using {}", fp(&p.alice))));

    // certs import of the same message keeps the intermediate too: the signer is usable.
    let env = Env::new();
    let eml = env.write("signed.eml", &openssl_signed(&p.alice.email, &[&p.alice]));
    assert_ok(&env.certs_cmd(&["import", path_str(&eml)]));
    assert!(env
        .certs
        .join("ca")
        .join(format!(
            "{}.pem",
            smimed::certs::fingerprint(&p.intermediate)
        ))
        .exists());
    assert_ok(&env.certs_cmd(&["lookup", &p.alice.email]));
}

#[test]
fn nothing_is_harvested_from_a_message_whose_signature_is_not_valid_as_a_whole() {
    // alice's signature is good, the second signer's root is not trusted: the message is
    // `untrusted`, and alice is not harvested (she was).
    let p = pki();
    let env = Env::new();
    let msg = openssl_signed(&p.alice.email, &[&p.alice, &p.untrusted]);
    let out = filter_harvesting(&env, &p.bob, &msg, true);
    assert_ok(&out);
    assert_eq!(
        common::status_word(&common::status_of(&out.stdout), "signature"),
        Some("untrusted")
    );
    assert_eq!(stdout(&env.certs_cmd(&["list"])).trim(), "");
    let eml = env.write("two.eml", &msg);
    assert_eq!(
        env.certs_cmd(&["import", path_str(&eml)]).status.code(),
        Some(65)
    );
}

#[test]
fn a_ca_without_key_usage_is_an_intermediate_and_remove_takes_common_fingerprint_forms() {
    let p = pki();
    let env = Env::new();
    let d = env.dir.path();
    let sh = |script: &str| common::sh_in(d, script);
    // A root, an intermediate with basicConstraints cA and no keyUsage (valid for OpenSSL),
    // and dave under it.
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout r.key -out r.pem -days 30 -subj /CN=R \
          -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null && \
        openssl req -newkey rsa:2048 -nodes -keyout i2.key -out i2.csr -subj /CN=I2 2>/dev/null && \
        printf 'basicConstraints=critical,CA:TRUE\\n' > i2.ext && \
        openssl x509 -req -in i2.csr -CA r.pem -CAkey r.key -CAcreateserial -days 30 \
          -extfile i2.ext -out i2.pem 2>/dev/null && \
        openssl req -newkey rsa:2048 -nodes -keyout dave.key -out dave.csr -subj /CN=Dave 2>/dev/null && \
        printf 'keyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:dave@example.org\\n' > dave.ext && \
        openssl x509 -req -in dave.csr -CA i2.pem -CAkey i2.key -CAcreateserial -days 30 \
          -extfile dave.ext -out dave.pem 2>/dev/null && \
        openssl verify -CAfile r.pem -untrusted i2.pem dave.pem");
    let certs = |args: &[&str]| {
        smimed()
            .arg("--trust")
            .arg(d.join("r.pem"))
            .arg("--certs")
            .arg(&env.certs)
            .arg("certs")
            .args(args)
            .output()
            .expect("run")
    };
    assert_ok(&certs(&[
        "import",
        path_str(&d.join("i2.pem")),
        path_str(&d.join("dave.pem")),
    ]));
    assert!(
        !stdout(&certs(&["list"])).contains("I2"),
        "I2 is no recipient"
    );
    assert_ok(&certs(&["lookup", "dave@example.org"]));

    // remove: the colon form openssl prints (SHA-256), the intermediate by its fingerprint,
    // and a SHA-1 fingerprint as gpgsm shows it.
    let colon = |file: &str, alg: &str| {
        let out = sh(&format!(
            "openssl x509 -in {file} -noout -fingerprint -{alg}"
        ));
        String::from_utf8_lossy(&out)
            .trim()
            .split_once('=')
            .expect("=")
            .1
            .to_string()
    };
    let i2 = colon("i2.pem", "sha256");
    assert_ok(&certs(&["remove", &i2]));
    assert_eq!(
        certs(&["lookup", "dave@example.org"]).status.code(),
        Some(1),
        "without I2 dave has no path"
    );
    let dave = colon("dave.pem", "sha256");
    assert_ok(&certs(&["remove", &dave]));
    assert_eq!(stdout(&certs(&["list"])).trim(), "");
    env.import(&[&p.bob.cert_path]);
    let sha1 = colon(path_str(&p.bob.cert_path), "sha1");
    assert_ok(&env.certs_cmd(&["remove", &sha1.replace(':', "")]));
    assert_eq!(stdout(&env.certs_cmd(&["list"])).trim(), "");
}

#[test]
fn concurrent_harvests_keep_the_newest_signing_time() {
    use smimed::addressbook::store::Store;
    let p = pki();
    let now = 2_000_000_000;
    for round in 0..20 {
        let env = Env::new();
        let store = Store::new(env.certs.clone());
        store.add(&p.alice.cert, "import").expect("add");
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for age in [100, 200, 300] {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store
                        .harvest(&p.alice.cert, None, Some(now - age), now)
                        .expect("harvest");
                });
            }
        });
        let entry = store
            .entries()
            .into_iter()
            .find(|e| e.fingerprint == fp(&p.alice))
            .expect("entry");
        assert_eq!(entry.meta.signing_time, Some(now - 100), "round {round}");
    }
}

#[test]
fn import_takes_the_signed_blob_outlook_publishes() {
    // Outlook publishes userSMIMECertificate as a PKCS#7 SignedData signed by the user over
    // empty content, carrying the user's certificate and chain (Get-Mailbox shows it in
    // base64). Its certificates are imported for the address book (checked at lookup like any
    // other; a trust file never takes a signed structure).
    let p = pki();
    let blob = common::outlook_blob(&p.bob);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    for (name, data) in [("der", blob.clone()), ("base64", b64.into_bytes())] {
        let env = Env::new();
        let f = env.write(&format!("bob.{name}.p7s"), &data);
        let out = env.certs_cmd(&["import", path_str(&f)]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = stdout(&env.certs_cmd(&["lookup", "bob@example.org"]));
        assert!(
            text.contains(&format!("using {}", fp(&p.bob))),
            "{name}: {text}"
        );
    }
}

/// A signer that sends no certificate (`openssl cms -nocerts`, gpgsm `--include-certs 0`) is
/// found in the address book when it holds the certificate (and the intermediate): `valid`.
/// Without it the signature cannot be checked (`signer-certificate-missing`).
#[test]
fn a_signature_without_certificates_is_checked_with_the_address_book() {
    let p = pki();
    let env = Env::new();
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-nocerts",
            "-signer",
            path_str(&p.alice.cert_path),
            "-inkey",
            path_str(&p.alice.key_path),
        ],
        &sample_entity("no certificates in here"),
    );
    let msg = message("alice@example.org", "bob@example.org", "nocerts", &signed);
    let out = filter_harvesting(&env, &p.bob, &msg, true);
    let st = status_of(&out.stdout);
    assert_words(&st, "none", "error");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("signer-certificate-missing"),
        "{st}"
    );
    // Alice's certificate and its intermediate, as an address book gets them (import).
    assert_ok(&env.certs_cmd(&["import", path_str(&p.alice.chain_path)]));
    let out = filter_harvesting(&env, &p.bob, &msg, true);
    let st = status_of(&out.stdout);
    assert_words(&st, "none", "valid");
    assert_eq!(status_word(&st, "signer"), Some("alice@example.org"));
    // An untrusted signer stays untrusted, wherever its certificate came from.
    let untrusted = openssl(
        &[
            "cms",
            "-sign",
            "-nocerts",
            "-signer",
            path_str(&p.untrusted.cert_path),
            "-inkey",
            path_str(&p.untrusted.key_path),
        ],
        &sample_entity("who am i"),
    );
    assert_ok(&env.certs_cmd(&["import", path_str(&p.untrusted.cert_path)]));
    let msg = message(
        "untrusted@example.org",
        "bob@example.org",
        "nocerts",
        &untrusted,
    );
    let st = status_of(&filter_harvesting(&env, &p.bob, &msg, true).stdout);
    assert_words(&st, "none", "untrusted");
}

/// `certs list` prints one line per certificate, whatever its subject holds: a line end in a
/// subject attribute (here followed by text made to look like bob's line) is printed escaped,
/// never raw. (Terminal escapes: the unit test of `certs::printable`.)
#[test]
fn a_subject_holding_a_line_end_cannot_fake_another_line() {
    let p = pki();
    let env = Env::new();
    env.import(&[&p.bob.chain_path]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cnf = dir.path().join("evil.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name=dn\nprompt=no\nstring_mask=utf8only\n[dn]\nCN=Eve\n\
             description=x\\n{}  O=smimed test, CN=bob  <bob@example.org>\n",
            fp(&p.bob)
        ),
    )
    .expect("cnf");
    let pem = dir.path().join("evil.pem");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-config",
            path_str(&cnf),
            "-keyout",
            path_str(&dir.path().join("evil.key")),
            "-addext",
            "subjectAltName=email:eve@evil.example",
            "-out",
            path_str(&pem),
        ],
        b"",
    );
    env.import(&[&pem]);
    let list = env.certs_cmd(&["list"]);
    assert_ok(&list);
    let text = stdout(&list);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&fp(&p.bob))).count(),
        1,
        "{text}"
    );
    assert!(text.contains("\\x0a"), "{text}");
}
