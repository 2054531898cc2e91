//! Addresses as certificates and mail really write them, with certificates made by the openssl
//! command line: an internationalised mailbox in an SmtpUTF8Mailbox otherName (RFC 9598), an
//! IDN domain in A-labels in an rfc822Name against a From in U-labels (RFC 6532), an obsolete
//! route (RFC 5322 §4.4) and a needlessly quoted local part (RFC 5321 §4.1.2). The filter, the
//! address book and `smimed sendmail` must all take them for the same mailboxes.

mod common;

use std::path::PathBuf;

use common::*;

/// A throw-away PKI made by the openssl CLI: a root and one EC user per subjectAltName (the
/// lines of an openssl config section).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(users: &[(&str, &str)]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        sh_in(
            dir.path(),
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout root.key -out root.pem -days 30 -subj '/CN=Address Test Root' \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
        );
        for (name, san) in users {
            std::fs::write(
                dir.path().join(format!("{name}.ext")),
                format!(
                    "subjectAltName=@alt\nkeyUsage=critical,digitalSignature,keyAgreement\n\
                     extendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n[alt]\n{san}\n"
                ),
            )
            .expect("ext file");
            sh_in(
                dir.path(),
                &format!(
                    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                     -keyout {name}.key -out {name}.csr -subj '/CN={name}' 2>/dev/null && \
                     openssl x509 -req -in {name}.csr -CA root.pem -CAkey root.key \
                     -CAcreateserial -days 30 -extfile {name}.ext -out {name}.pem 2>/dev/null && \
                     cat {name}.key {name}.pem > {name}.id.pem && chmod 600 {name}.key {name}.id.pem"
                ),
            );
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// An opaque-signed message by `user` with the given From field.
    fn signed(&self, user: &str, from: &str) -> Vec<u8> {
        let cert = self.path(&format!("{user}.pem"));
        let key = self.path(&format!("{user}.key"));
        let entity = openssl(
            &[
                "cms",
                "-sign",
                "-nodetach",
                "-binary",
                "-outform",
                "SMIME",
                "-signer",
                path_str(&cert),
                "-inkey",
                path_str(&key),
            ],
            &sample_entity("signed text"),
        );
        let body = entity
            .strip_prefix(b"MIME-Version: 1.0\r\n")
            .or_else(|| entity.strip_prefix(b"MIME-Version: 1.0\n"))
            .unwrap_or(&entity);
        [
            format!(
                "From: {from}\r\nTo: bob@example.org\r\nSubject: t\r\nMessage-ID: <t@test>\r\nMIME-Version: 1.0\r\n"
            )
            .as_bytes(),
            body,
        ]
        .concat()
    }

    fn smimed(&self) -> std::process::Command {
        let mut c = smimed();
        c.arg("--trust")
            .arg(self.path("root.pem"))
            .arg("--authserv-id")
            .arg("mx.test");
        c
    }

    fn filter(&self, msg: &[u8]) -> String {
        let mut c = self.smimed();
        c.env("XDG_DATA_HOME", self.path("data")).arg("filter");
        let out = run_with_stdin(&mut c, msg);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = status_of(&out.stdout);
        assert!(st.is_ascii(), "status stays ASCII: {st}");
        st
    }
}

/// An SmtpUTF8Mailbox user (`üser@bücher.example`), an A-label rfc822Name user
/// (`user@xn--bcher-kva.example`) and alice.
fn three_users() -> Pki {
    Pki::new(&[
        (
            "utf8mb",
            "otherName.1 = 1.3.6.1.5.5.7.8.9;FORMAT:UTF8,UTF8:üser@bücher.example",
        ),
        ("alabel", "email.1 = user@xn--bcher-kva.example"),
        ("alice", "email.1 = alice@example.org"),
    ])
}

#[test]
fn the_filter_matches_internationalised_and_old_style_addresses() {
    let p = three_users();
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        // An SmtpUTF8Mailbox, From as RFC 6532 writes it (its domain in either form).
        ("utf8mb", "Üser <üser@bücher.example>", "valid", None),
        ("utf8mb", "üser@xn--bcher-kva.example", "valid", None),
        // Another mailbox at the same domain is still another sender.
        ("utf8mb", "user@bücher.example", "mismatch", None),
        // A-labels in the certificate, U-labels in From: shown in ASCII.
        (
            "alabel",
            "User <user@bücher.example>",
            "valid",
            Some("user@xn--bcher-kva.example"),
        ),
        ("alabel", "user@BÜCHER.example", "valid", None),
        ("alabel", "user@bucher.example", "mismatch", None),
        // What IDNA's mapping would fold (fullwidth letters, an invisible character) is shown
        // as it is by readers: another domain.
        ("alice", "alice@ｅｘａｍｐｌｅ.org", "mismatch", None),
        ("alice", "alice@exa\u{200b}mple.org", "mismatch", None),
        // An obsolete route is ignored; needless quotes change nothing.
        (
            "alice",
            "Alice <@route.example:alice@example.org>",
            "valid",
            Some("alice@example.org"),
        ),
        (
            "alice",
            "Alice <@a.example,@b.example:alice@example.org>",
            "valid",
            None,
        ),
        ("alice", "Alice <\"alice\"@example.org>", "valid", None),
        ("alice", "<\"alice x\"@example.org>", "mismatch", None),
    ];
    for (user, from, verdict, signer) in cases {
        let st = p.filter(&p.signed(user, from));
        assert_eq!(
            status_word(&st, "signature"),
            Some(*verdict),
            "{user} as {from}: {st}"
        );
        if let Some(s) = signer {
            assert_eq!(
                status_word(&st, "signer"),
                Some(*s),
                "{user} as {from}: {st}"
            );
        }
    }
    // openssl agrees on the SmtpUTF8Mailbox (its -checkemail reads the otherName).
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkemail",
            "üser@bücher.example",
            "-in",
        ])
        .arg(p.path("utf8mb.pem"))
        .output()
        .expect("openssl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("does match"));
}

/// `smimed sendmail` to a recipient whose certificate writes the address in another form
/// encrypts to it (openssl decrypts the copy), and an obsolete route is not passed to the MTA.
#[test]
fn sendmail_finds_certificates_for_internationalised_and_routed_recipients() {
    let p = three_users();
    let store = p.path("store");
    for u in ["utf8mb", "alabel", "alice"] {
        let out = p
            .smimed()
            .arg("--certs")
            .arg(&store)
            .args(["certs", "import"])
            .arg(p.path(&format!("{u}.pem")))
            .output()
            .expect("import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (addr, user) in [
        ("üser@xn--bcher-kva.example", "utf8mb"),
        ("user@bücher.example", "alabel"),
        ("\"alice\"@example.org", "alice"),
    ] {
        let out = p
            .smimed()
            .arg("--certs")
            .arg(&store)
            .args(["certs", "lookup", addr])
            .output()
            .expect("lookup");
        assert!(
            out.status.success(),
            "lookup {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("CN={user}")),
            "lookup {addr}: {text}"
        );
    }

    let mta_dir = p.path("mta");
    std::fs::create_dir_all(&mta_dir).expect("mta dir");
    let mta = p.path("mta.sh");
    std::fs::write(
        &mta,
        format!(
            "#!/bin/sh\nn=$(ls '{d}' | wc -l)\nprintf '%s\\n' \"$@\" > '{d}'/$n.args\ncat > '{d}'/$n.eml\n",
            d = mta_dir.display()
        ),
    )
    .expect("mta");
    std::fs::set_permissions(&mta, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let msg = "From: alice@example.org\nTo: Üser <üser@bücher.example>, \
               User <@relay.example:user@bücher.example>\nCc: \"alice\"@example.org\n\
               Subject: t\n\nfor your eyes only\n";
    let out = run_with_stdin(
        p.smimed()
            .arg("--certs")
            .arg(&store)
            .arg("--key")
            .arg(p.path("alice.id.pem"))
            .args(["sendmail", "--encrypt", "always", "--mta"])
            .arg(&mta)
            .arg("-t"),
        msg.as_bytes(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = std::fs::read_to_string(mta_dir.join("0.args")).expect("MTA called");
    assert!(args.lines().any(|l| l == "user@bücher.example"), "{args}");
    assert!(!args.contains("@relay.example"), "route dropped: {args}");
    assert!(args.lines().any(|l| l == "alice@example.org"), "{args}");
    assert!(!args.contains('"'), "needless quotes dropped: {args}");
    let sent = std::fs::read(mta_dir.join("0.eml")).expect("copy");
    for user in ["utf8mb", "alabel", "alice"] {
        let plain = decrypt(&p, user, &sent);
        assert!(
            String::from_utf8_lossy(&plain).contains("for your eyes only"),
            "{user} reads it"
        );
    }
}

fn decrypt(p: &Pki, user: &str, msg: &[u8]) -> Vec<u8> {
    let key = p.path(&format!("{user}.key"));
    let cert = p.path(&format!("{user}.pem"));
    let out = run_with_stdin(
        std::process::Command::new("openssl").args([
            "cms",
            "-decrypt",
            "-recip",
            path_str(&cert),
            "-inkey",
            path_str(&key),
        ]),
        msg,
    );
    assert!(
        out.status.success(),
        "openssl decrypts for {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Bare addr-specs with a quoted local part, in header lists and on the command line: each is
/// one recipient for the MTA (mailparse alone joined `"x.y"@…` to the next mailbox's name or
/// gave up on the list, which then was split at every comma).
#[test]
fn sendmail_keeps_every_recipient_with_a_quoted_local_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mta = dir.path().join("mta.sh");
    let args_file = dir.path().join("args");
    std::fs::write(
        &mta,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\ncat > /dev/null\n",
            args_file.display()
        ),
    )
    .expect("mta");
    std::fs::set_permissions(&mta, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let send = |extra: &[&str], msg: &str| {
        let _ = std::fs::remove_file(&args_file);
        let mut c = smimed();
        c.env("XDG_DATA_HOME", dir.path().join("data"))
            .args(["sendmail", "--sign", "never", "--encrypt", "never", "--mta"])
            .arg(&mta)
            .args(extra);
        let out = run_with_stdin(&mut c, msg.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = std::fs::read_to_string(&args_file)
            .expect("MTA called")
            .lines()
            .filter(|l| l.contains('@') && !l.starts_with("-f"))
            .map(str::to_string)
            .collect();
        got.sort();
        got
    };
    let msg = "From: alice@example.org\nTo: \"x.y\"@example.net, Bob <bob@example.net>\n\
               Cc: \"doe, john\"@example.net, Group: \"c d\"@example.net;\nSubject: t\n\nhi\n";
    assert_eq!(
        send(&["-t"], msg),
        [
            "\"c d\"@example.net",
            "\"doe, john\"@example.net",
            "bob@example.net",
            "x.y@example.net"
        ]
    );
    let msg = "From: alice@example.org\nSubject: t\n\nhi\n";
    assert_eq!(
        send(&["--", "\"x.y\"@example.net, Bob <bob@example.net>"], msg),
        ["bob@example.net", "x.y@example.net"]
    );
}
