//! Trust sources: a signed message dropped into a trust folder does not make its certificates
//! anchors, and a certificate reachable from several sources is listed once.

mod common;

use common::pki::pki;
use common::*;

fn trust_list(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = smimed()
        .args(args)
        .args(["trust", "list"])
        .output()
        .expect("run smimed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn signed_message_in_a_trust_folder_is_not_an_anchor() {
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&p.root_path, dir.path().join("root.pem")).expect("copy root");
    // The untrusted user's signature carries its chain (leaf + its own root).
    let der = openssl(
        &[
            "cms",
            "-sign",
            "-nodetach",
            "-outform",
            "DER",
            "-signer",
            path_str(&p.untrusted.cert_path),
            "-inkey",
            path_str(&p.untrusted.key_path),
            "-certfile",
            path_str(&p.untrusted_root_path),
        ],
        &sample_entity("hi"),
    );
    std::fs::write(dir.path().join("signed.p7m"), &der).expect("write");
    let (code, list) = trust_list(&["--trust".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 0);
    assert_eq!(list.lines().count(), 1, "only the root: {list}");
    assert!(!list.contains("Untrusted Root"), "{list}");

    // And a message signed by that user stays untrusted with this trust folder.
    let signed = sign_as(&p.untrusted, false, &[], &sample_entity("hello"));
    let msg = message("untrusted@example.org", "bob@example.org", "u", &signed);
    let out = run_with_stdin(
        smimed()
            .args(["--authserv-id", "mx.test", "--trust"])
            .arg(dir.path())
            .arg("filter"),
        &msg,
    );
    assert!(out.status.success());
    assert_eq!(
        status_word(&status_of(&out.stdout), "signature"),
        Some("untrusted")
    );

    // Named explicitly, a signed message is a configuration error, not a trust source.
    let (code, _) = trust_list(&[
        "--trust".as_ref(),
        dir.path().join("signed.p7m").as_os_str(),
    ]);
    assert_eq!(code, 78);
}

#[test]
fn a_certificate_from_several_sources_is_listed_once() {
    let p = pki();
    let (code, list) = trust_list(&[
        "--trust".as_ref(),
        p.root_path.as_os_str(),
        "--trust".as_ref(),
        p.alice.chain_path.as_os_str(),
        "--trust".as_ref(),
        p.root_path.as_os_str(),
    ]);
    assert_eq!(code, 0);
    // root, alice, intermediate: each once.
    assert_eq!(list.lines().count(), 3, "{list}");
}

/// Without --trust, verification uses the system's hashed certificate folder (here
/// $SSL_CERT_DIR, made with `openssl rehash`), reading only the issuers a chain needs.
#[test]
fn without_trust_the_system_hashed_folder_is_used() {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity("system trust"));
    let msg = message("alice@example.org", "bob@example.org", "sys", &signed);
    let run = |dir: &std::path::Path| {
        let out = run_with_stdin(
            smimed()
                .env("SSL_CERT_DIR", dir)
                .args(["--authserv-id", "mx.test", "filter"]),
            &msg,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        status_of(&out.stdout)
    };
    let with_root = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&p.root_path, with_root.path().join("root.pem")).expect("copy");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&p.untrusted_root_path, other.path().join("other.pem")).expect("copy");
    for d in [with_root.path(), other.path()] {
        openssl(&["rehash", path_str(d)], b"");
    }
    assert_eq!(
        status_word(&run(with_root.path()), "signature"),
        Some("valid")
    );
    assert_eq!(
        status_word(&run(other.path()), "signature"),
        Some("untrusted")
    );
}

/// Without --trust, `trust list` and verification take the anchors from where OpenSSL's
/// default paths find them, and agree with `openssl cms -verify` under the same environment:
/// `$SSL_CERT_FILE` (else the system bundle) and the hashed folders of `$SSL_CERT_DIR` (a
/// list; else /etc/ssl/certs), both. Before, verification ignored SSL_CERT_FILE while `trust
/// list` showed it, used only the first folder of a list, and `trust list` showed certificates
/// of folders OpenSSL does not look into.
#[test]
fn without_trust_the_list_and_verification_use_openssls_default_paths() {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity("env trust"));
    let msg = message("alice@example.org", "bob@example.org", "env", &signed);
    let empty = tempfile::tempdir().expect("tempdir");
    let hashed = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&p.root_path, hashed.path().join("root.pem")).expect("copy");
    openssl(&["rehash", path_str(hashed.path())], b"");
    let unhashed = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&p.root_path, unhashed.path().join("root.pem")).expect("copy");
    let nothing = std::path::Path::new("/nonexistent/ca.pem");
    let garbage = empty.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let subject_of = |pem: &std::path::Path| {
        let s = openssl(&["x509", "-noout", "-subject", "-in", path_str(pem)], b"");
        let s = String::from_utf8(s).unwrap();
        s.trim_end().rsplit('=').next().unwrap().trim().to_string()
    };
    let (root_cn, other_cn) = (subject_of(&p.root_path), subject_of(&p.untrusted_root_path));
    // (trust list, smimed's verdict, whether openssl verifies) under `envs`.
    let run = |envs: &[(&str, &std::ffi::OsStr)]| {
        let with_env = |mut c: std::process::Command| {
            c.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
            for (k, v) in envs {
                c.env(k, v);
            }
            c
        };
        let list = with_env(smimed())
            .args(["trust", "list"])
            .output()
            .expect("run smimed");
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let mut c = with_env(smimed());
        let out = run_with_stdin(c.args(["--authserv-id", "mx.test", "filter"]), &msg);
        assert!(out.status.success());
        let mut c = with_env(std::process::Command::new("openssl"));
        let peer = run_with_stdin(c.args(["cms", "-verify", "-out", "/dev/null"]), &msg);
        (
            String::from_utf8_lossy(&list.stdout).into_owned(),
            status_word(&status_of(&out.stdout), "signature").map(str::to_string),
            peer.status.success(),
        )
    };
    let os = |p: &std::path::Path| p.as_os_str().to_owned();
    let list_of = std::env::join_paths([empty.path(), hashed.path()]).unwrap();
    // (what, environment, whether the root is an anchor then)
    type Case<'a> = (&'a str, Vec<(&'a str, std::ffi::OsString)>, bool);
    let cases: Vec<Case> = vec![
        (
            "the file",
            vec![
                ("SSL_CERT_FILE", os(&p.root_path)),
                ("SSL_CERT_DIR", os(empty.path())),
            ],
            true,
        ),
        (
            "another file",
            vec![
                ("SSL_CERT_FILE", os(&p.untrusted_root_path)),
                ("SSL_CERT_DIR", os(empty.path())),
            ],
            false,
        ),
        (
            "a hashed folder",
            vec![
                ("SSL_CERT_FILE", os(nothing)),
                ("SSL_CERT_DIR", os(hashed.path())),
            ],
            true,
        ),
        (
            "a list of folders",
            vec![
                ("SSL_CERT_FILE", os(nothing)),
                ("SSL_CERT_DIR", list_of.clone()),
            ],
            true,
        ),
        (
            "a file and a folder",
            vec![
                ("SSL_CERT_FILE", os(&p.untrusted_root_path)),
                ("SSL_CERT_DIR", os(hashed.path())),
            ],
            true,
        ),
        (
            "a folder without hash links",
            vec![
                ("SSL_CERT_FILE", os(nothing)),
                ("SSL_CERT_DIR", os(unhashed.path())),
            ],
            false,
        ),
        (
            "the file and the system folder",
            vec![("SSL_CERT_FILE", os(&p.root_path))],
            true,
        ),
        (
            "a file that is no certificate, ignored as openssl ignores it",
            vec![
                ("SSL_CERT_FILE", os(&garbage)),
                ("SSL_CERT_DIR", os(hashed.path())),
            ],
            true,
        ),
    ];
    for (what, envs, trusted) in cases {
        let envs: Vec<(&str, &std::ffi::OsStr)> =
            envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let (list, sig, peer) = run(&envs);
        assert_eq!(peer, trusted, "{what}: openssl");
        assert_eq!(list.contains(&root_cn), trusted, "{what}: {list}");
        let want = if trusted { "valid" } else { "untrusted" };
        assert_eq!(sig.as_deref(), Some(want), "{what}");
        if what == "a file and a folder" {
            assert!(list.contains(&other_cn), "{what}: {list}");
        }
        if what == "a hashed folder" {
            assert_eq!(list.lines().count(), 1, "{what}: {list}");
        }
    }
}

/// Windows' certificate services download a "Base 64 encoded" chain (certnew.p7b) as a PKCS#7
/// bundle under the CERTIFICATE label; OpenSSL reads it, and so does smimed (it was refused with
/// 78). A signed message so labelled is still refused.
#[test]
fn a_pkcs7_bundle_under_the_certificate_label_is_read() {
    let p = pki();
    let d = tempfile::tempdir().expect("tempdir");
    let bundle = openssl(
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            path_str(&p.root_path),
            "-certfile",
            path_str(&p.intermediate_path),
        ],
        b"",
    );
    let relabelled = String::from_utf8(bundle)
        .unwrap()
        .replace("PKCS7", "CERTIFICATE");
    let path = d.path().join("certnew.p7b");
    std::fs::write(&path, &relabelled).unwrap();
    // The peer reads it.
    openssl(
        &["pkcs7", "-print_certs", "-noout", "-in", path_str(&path)],
        b"",
    );
    let (code, list) = trust_list(&["--trust".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{list}");
    assert_eq!(list.lines().count(), 2, "{list}");
    let signed = sign_as(&p.alice, false, &[], &sample_entity("p7 trust"));
    let msg = message("alice@example.org", "bob@example.org", "p7", &signed);
    let out = run_with_stdin(
        smimed().args([
            "--authserv-id",
            "mx.test",
            "--trust",
            path_str(&path),
            "filter",
        ]),
        &msg,
    );
    assert_eq!(
        status_word(&status_of(&out.stdout), "signature"),
        Some("valid")
    );
    // A signed message under that label is no trust source.
    let signed_der = sign_as(&p.alice, false, &["-outform", "PEM"], b"x");
    let relabelled = String::from_utf8(signed_der)
        .unwrap()
        .replace("CMS", "CERTIFICATE");
    std::fs::write(&path, &relabelled).unwrap();
    let (code, _) = trust_list(&["--trust".as_ref(), path.as_os_str()]);
    assert_eq!(code, 78);
}

/// A trust source never loses a certificate without a word: a PEM block or a DER certificate
/// that does not parse fails the file (78, naming it), and a folder that gives no anchor at all
/// is an error too. Concatenated DER certificates all load.
#[test]
fn a_certificate_that_does_not_parse_is_an_error_never_dropped() {
    let p = pki();
    let d = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| d.path().join(n);
    let der =
        |pem: &std::path::Path| openssl(&["x509", "-outform", "DER", "-in", path_str(pem)], b"");
    let (root, inter) = (der(&p.root_path), der(&p.intermediate_path));

    // PEM bundle whose second block is damaged.
    let good = [
        std::fs::read(&p.root_path).unwrap(),
        std::fs::read(&p.intermediate_path).unwrap(),
    ]
    .concat();
    let text = String::from_utf8(good.clone()).unwrap();
    let second = text.rfind("-----BEGIN CERTIFICATE-----").unwrap() + 80;
    let mut bad = good.clone();
    bad[second..second + 4].copy_from_slice(b"!!!!");
    std::fs::write(path("bad.pem"), &bad).unwrap();
    std::fs::write(path("good.pem"), &good).unwrap();
    // Two DER certificates one after the other, and one followed by junk.
    std::fs::write(path("two.der"), [root.clone(), inter.clone()].concat()).unwrap();
    std::fs::write(
        path("junk.der"),
        [root.clone(), b"\x30\x03abc".to_vec()].concat(),
    )
    .unwrap();

    let list = |f: &std::path::Path| {
        let out = smimed()
            .arg("--trust")
            .arg(f)
            .args(["trust", "list"])
            .output()
            .expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).lines().count(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, n, err) = list(&path("good.pem"));
    assert_eq!((code, n), (0, 2), "{err}");
    let (code, _, err) = list(&path("bad.pem"));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("PEM block 2"), "{err}");
    let (code, n, err) = list(&path("two.der"));
    assert_eq!((code, n), (0, 2), "{err}");
    let (code, _, err) = list(&path("junk.der"));
    assert_eq!(code, 78, "{err}");

    // Folders: empty, or only files that fail, are errors; one good file among bad ones is not.
    let empty = path("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = list(&empty);
    assert_eq!(code, 78, "{err}");
    let junk = path("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("empty.pem"), b"").unwrap();
    std::fs::copy(&p.bob.key_path, junk.join("bob.key")).unwrap();
    let (code, _, err) = list(&junk);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no certificate in the folder"), "{err}");
    std::fs::copy(&p.root_path, junk.join("root.pem")).unwrap();
    let (code, n, err) = list(&junk);
    assert_eq!((code, n), (0, 1), "{err}");
    // A certificate file with a damaged block fails the folder too (its good certificates
    // are not dropped without a word).
    std::fs::copy(path("bad.pem"), junk.join("bundle.pem")).unwrap();
    let (code, _, err) = list(&junk);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("bundle.pem") && err.contains("PEM block 2"),
        "{err}"
    );
    // The same for a truncated DER certificate; a DER file of another kind (a signed message,
    // as the first test shows) is still skipped.
    std::fs::remove_file(junk.join("bundle.pem")).unwrap();
    std::fs::write(junk.join("ca.der"), &root[..root.len() - 10]).unwrap();
    let (code, _, err) = list(&junk);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("ca.der"), "{err}");
}

/// An anchor its source restricts to other uses is on no path for mail: OpenSSL trust settings
/// (`openssl x509 -addreject emailProtection -trustout`, a `TRUSTED CERTIFICATE`), read as
/// `openssl cms -verify` reads them, and an .sst whose property 9 restricts an intermediate to
/// serverAuth, also when the sender carries that intermediate in the message. Recipients under
/// it are refused too.
#[test]
fn an_anchor_restricted_to_other_uses_is_on_no_path_for_mail() {
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let signed = sign_as(&p.alice, false, &[], &sample_entity("hello"));
    let msg = message("alice@example.org", "bob@example.org", "t", &signed);
    let filtered = |trust: &std::path::Path| {
        let out = run_with_stdin(
            smimed()
                .args(["--authserv-id", "mx.test", "--trust"])
                .arg(trust)
                .arg("filter"),
            &msg,
        );
        assert!(out.status.success());
        out.stdout
    };
    let verdict = |trust: &std::path::Path| status_of(&filtered(trust));
    // The root with trust settings; the intermediate comes with the message.
    let root_with = |trust_args: &[&str], name: &str| {
        let root = openssl(
            &[
                &["x509", "-in", path_str(&p.root_path)][..],
                trust_args,
                &["-trustout"],
            ]
            .concat(),
            b"",
        );
        let f = dir.path().join(name);
        std::fs::write(&f, root).expect("write");
        f
    };
    // openssl agrees on each file first.
    let openssl_verifies = |trust: &std::path::Path| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["cms", "-verify", "-out", "/dev/null", "-CAfile"])
            .arg(trust)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        run_with_stdin(&mut cmd, &signed).status.success()
    };
    for (args, name, valid) in [
        (
            &["-addreject", "emailProtection"][..],
            "rejected.pem",
            false,
        ),
        (&["-addtrust", "serverAuth"][..], "server-only.pem", false),
        (&["-addtrust", "emailProtection"][..], "email.pem", true),
        (
            &[
                "-addtrust",
                "serverAuth",
                "-addtrust",
                "anyExtendedKeyUsage",
            ][..],
            "any.pem",
            true,
        ),
    ] {
        let f = root_with(args, name);
        assert_eq!(openssl_verifies(&f), valid, "openssl on {name}");
        let st = verdict(&f);
        let want = if valid { "valid" } else { "untrusted" };
        assert_eq!(status_word(&st, "signature"), Some(want), "{name}: {st}");
        let (code, list) = trust_list(&["--trust".as_ref(), f.as_os_str()]);
        assert_eq!(code, 0);
        assert_eq!(list.contains("not for email"), !valid, "{name}: {list}");
    }

    // The signer's own certificate rejected for e-mail next to the unrestricted root: the
    // certificate that comes with the message is that one all the same.
    let leaf_rejected = dir.path().join("leaf-rejected.pem");
    let leaf = openssl(
        &[
            "x509",
            "-in",
            path_str(&p.alice.cert_path),
            "-addreject",
            "emailProtection",
            "-trustout",
        ],
        b"",
    );
    let root = std::fs::read(&p.root_path).expect("root");
    std::fs::write(&leaf_rejected, [&root[..], &leaf].concat()).expect("write");
    let st = verdict(&leaf_rejected);
    assert_eq!(status_word(&st, "signature"), Some("untrusted"), "{st}");
    // The same two in a hashed folder that OpenSSL's default paths name (no --trust): the
    // folder is read through OpenSSL's lookup, not listed, and the restriction holds.
    let hashed = dir.path().join("hashed");
    std::fs::create_dir(&hashed).expect("mkdir");
    std::fs::copy(&p.root_path, hashed.join("root.pem")).expect("root");
    std::fs::write(hashed.join("alice.pem"), &leaf).expect("alice");
    let rehash = |d: &std::path::Path| {
        let done = std::process::Command::new("openssl")
            .arg("rehash")
            .arg(d)
            .status()
            .expect("openssl rehash");
        assert!(done.success());
    };
    rehash(&hashed);
    let out = run_with_stdin(
        smimed()
            .env("SSL_CERT_DIR", &hashed)
            .env("SSL_CERT_FILE", dir.path().join("none.pem"))
            .args(["--authserv-id", "mx.test", "filter"]),
        &msg,
    );
    let st = status_of(&out.stdout);
    assert_eq!(status_word(&st, "signature"), Some("untrusted"), "{st}");
    // A FIFO under the signer's subject hash there is no certificate file, and no reason to
    // wait: valid, at once.
    let fifo_dir = dir.path().join("hashed-fifo");
    std::fs::create_dir(&fifo_dir).expect("mkdir");
    std::fs::copy(&p.root_path, fifo_dir.join("root.pem")).expect("root");
    rehash(&fifo_dir);
    let hash = String::from_utf8(openssl(
        &[
            "x509",
            "-noout",
            "-subject_hash",
            "-in",
            path_str(&p.alice.cert_path),
        ],
        b"",
    ))
    .expect("hash");
    let made = std::process::Command::new("mkfifo")
        .arg(fifo_dir.join(format!("{}.0", hash.trim())))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut child = smimed()
        .env("SSL_CERT_DIR", &fifo_dir)
        .env("SSL_CERT_FILE", dir.path().join("none.pem"))
        .args(["--authserv-id", "mx.test", "filter"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&msg).expect("write");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the filter waits on a FIFO in the hashed folder");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let st = status_of(&out.stdout);
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");

    // An .sst restricting the intermediate to serverAuth (property 9 before it), the root
    // unrestricted: the intermediate the message carries does not open a path.
    let der = |p: &std::path::Path| openssl(&["x509", "-in", path_str(p), "-outform", "DER"], b"");
    let element = |id: u32, v: &[u8]| {
        let mut e = id.to_le_bytes().to_vec();
        e.extend(1u32.to_le_bytes());
        e.extend((v.len() as u32).to_le_bytes());
        e.extend(v);
        e
    };
    let server_auth = [
        0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
    ];
    let sst = [
        &b"\0\0\0\0CERT"[..],
        &element(0x20, &der(&p.root_path)),
        &element(9, &server_auth),
        &element(0x20, &der(&p.intermediate_path)),
        &element(0, b""),
    ]
    .concat();
    let sst_path = dir.path().join("store.sst");
    std::fs::write(&sst_path, sst).expect("write sst");
    let out = filtered(&sst_path);
    let st = status_of(&out);
    assert_eq!(status_word(&st, "signature"), Some("untrusted"), "{st}");
    let ar = ar_values(&out, "mx.test").join(" ");
    assert!(ar.contains("reason=\"not-for-email\""), "{ar}");
    // And alice is no recipient under that store; under the root alone (with the intermediate
    // from the message) she is.
    let store = dir.path().join("book");
    let book = |trust: &std::path::Path, args: &[&str]| {
        smimed()
            .arg("--certs")
            .arg(&store)
            .arg("--trust")
            .arg(trust)
            .args(["certs"])
            .args(args)
            .output()
            .expect("certs")
    };
    let imported = dir.path().join("alice.eml");
    std::fs::write(&imported, &msg).expect("write eml");
    let out = book(&p.root_path, &["import", path_str(&imported)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = book(&p.root_path, &["lookup", "alice@example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for trust in [&sst_path, &leaf_rejected] {
        let out = book(trust, &["lookup", "alice@example.org"]);
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let said = [out.stdout, out.stderr].concat();
        let said = String::from_utf8_lossy(&said);
        assert!(said.contains("not for email"), "{said}");
    }
}
