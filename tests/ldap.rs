//! The LDAP address book source against a real OpenLDAP slapd (started here on 127.0.0.1):
//! GAL-style entries with `userCertificate;binary` (DER) and `userSMIMECertificate` (a signed
//! PKCS#7 as Outlook publishes it, carrying the intermediate), Exchange's `proxyAddresses`
//! aliases, the usability rules, filter escaping, `smimed sendmail` encrypting to directory
//! certificates (openssl decrypts every copy), binds with credentials over StartTLS and LDAPS,
//! and what happens when the directory cannot be asked (exit 75, nothing sent).

mod common;

use common::outbound::*;
use common::path_str;
use common::pki::{pki, User};
use common::slapd::{b64_line, Slapd, ADMIN_DN, ADMIN_PW, SUFFIX};

fn fp(u: &User) -> String {
    smimed::certs::fingerprint(&u.cert)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn der(u: &User) -> Vec<u8> {
    u.cert.to_der().expect("der")
}

fn person(uid: &str, mail: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n\
         objectClass: smimedTestExchangeRecipient\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {mail}\n{extra}\n"
    )
}

/// The directory of these tests:
/// - bob: his RSA certificate as a signed PKCS#7 (with the intermediate) and his newer EC
///   certificate as DER: the newer wins, its path completed by the PKCS#7's intermediate;
/// - erin (directly under the root): DER, her entry's mail is another address and hers is an
///   Exchange alias (`proxyAddresses: smtp:…`);
/// - the expired user, and a certificate for the wrong address under alice's entry.
fn gal() -> String {
    let p = pki();
    // A referral object: every subtree search from the base also returns a continuation
    // reference (Active Directory sends them for its other partitions); not an entry.
    let mut l = format!(
        "dn: ou=elsewhere,{SUFFIX}\nobjectClass: referral\nobjectClass: extensibleObject\n\
         ou: elsewhere\nref: ldap://other.invalid/ou=elsewhere,{SUFFIX}\n\n"
    );
    // bob's contact object first, with his older certificate alone (no intermediate): the
    // same certificate in his user object's PKCS#7 has one, and makes it usable.
    l += &person(
        "bob-contact",
        "bob.contact@example.org",
        &(format!("proxyAddresses: smtp:{}\n", p.bob.email)
            + &b64_line("userCertificate;binary", &der(&p.bob))),
    );
    l += &person(
        "bob",
        "bob@example.org",
        &(b64_line("userSMIMECertificate", &common::outlook_blob(&p.bob))
            + &b64_line("userCertificate;binary", &der(&p.bob_renewed))),
    );
    l += &person(
        "erin",
        "erin.primary@example.org",
        &(format!(
            "proxyAddresses: SMTP:erin.primary@example.org\nproxyAddresses: smtp:{}\n",
            p.erin.email
        ) + &b64_line("userCertificate;binary", &der(&p.erin))),
    );
    // erin again, as a contact object listing her certificate too (a GAL often has both).
    l += &person(
        "erin-contact",
        "erin.contact@example.org",
        &(format!("proxyAddresses: smtp:{}\n", p.erin.email)
            + &b64_line("userCertificate;binary", &der(&p.erin))),
    );
    l += &person(
        "expired",
        &p.expired.email,
        &b64_line("userCertificate;binary", &der(&p.expired)),
    );
    l += &person(
        "alice",
        &p.alice.email,
        &b64_line("userCertificate;binary", &der(&p.carol)),
    );
    l
}

fn lookup(env: &Env, ldap: &[&str], addr: &str) -> std::process::Output {
    let mut args = vec!["lookup"];
    args.extend_from_slice(ldap);
    args.push(addr);
    env.certs_cmd(&args)
}

/// A server whose own size limit is lower than smimed's stops the search early: an error that
/// says so (not "the filter is too broad"), exit 78, and never "no certificate".
#[test]
fn a_server_size_limit_is_reported_as_the_servers() {
    let p = pki();
    let ldap = Slapd::start_with(&gal(), true, "sizelimit 1");
    let env = Env::new();
    let url = format!("{}/{SUFFIX}", ldap.url());
    // erin is listed by two entries (her user and contact objects): the server stops at one.
    let out = lookup(&env, &["--ldap", url.as_str()], &p.erin.email);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("the server's size limit"), "{err}");
    assert!(!err.contains("too broad"), "{err}");
}

#[test]
fn lookup_reads_gal_entries_as_outlook_and_exchange_publish_them() {
    let p = pki();
    let ldap = Slapd::start(&gal(), true);
    let env = Env::new();
    let url = format!("{}/{SUFFIX}", ldap.url());
    let flags = ["--ldap", url.as_str()];

    // The newer (EC) certificate wins; the older one from the signed PKCS#7 is listed as
    // refused for that reason, so both were read and both have a path (the intermediate came
    // only with the PKCS#7: the trust file holds the root, the local store is empty).
    let out = lookup(&env, &flags, "bob@example.org");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("using {}", fp(&p.bob_renewed))),
        "{text}"
    );
    assert!(text.contains(&fp(&p.bob)), "{text}");
    assert!(text.contains("a newer usable certificate exists"), "{text}");
    assert!(text.contains("ldap ldap://127.0.0.1"), "{text}");

    // An Exchange alias finds the entry; the address compares without regard to case.
    for addr in [p.erin.email.clone(), p.erin.email.to_uppercase()] {
        let text = stdout(&lookup(&env, &flags, &addr));
        assert!(
            text.contains(&format!("using {}", fp(&p.erin))),
            "{addr}: {text}"
        );
        // Listed by two entries, it is one candidate (not refused against itself).
        assert!(
            !text.contains(&format!("refused {}", fp(&p.erin))),
            "{addr}: {text}"
        );
    }

    // Found but unusable, each with its reason.
    let text = stdout(&lookup(&env, &flags, &p.expired.email));
    assert!(
        text.contains("no usable certificate") && text.contains("expired"),
        "{text}"
    );
    let text = stdout(&lookup(&env, &flags, &p.alice.email));
    assert!(
        text.contains("no usable certificate") && text.contains("not issued to"),
        "{text}"
    );

    // Written as a person would (needless quotes, a display name): the same lookup as
    // sendmail makes for that recipient.
    for addr in ["\"bob\"@example.org", "Bob <bob@example.org>"] {
        let text = stdout(&lookup(&env, &flags, addr));
        assert!(
            text.contains(&format!("using {}", fp(&p.bob_renewed))),
            "{addr}: {text}"
        );
    }

    // The address is escaped into the filter: wildcards and parentheses match nothing.
    for addr in ["*", "*@example.org", "x)(mail=*", "bob@example.org)(uid=*"] {
        let text = stdout(&lookup(&env, &flags, addr));
        assert!(!text.contains("using "), "{addr}: {text}");
    }
}

#[test]
fn sendmail_encrypts_to_directory_certificates_and_stops_when_it_cannot_ask() {
    let p = pki();
    let ldap = Slapd::start(&gal(), true);
    let env = Env::new();
    let url = format!("{}/{SUFFIX}", ldap.url());
    let msg = client_message(
        &p.alice.email,
        &format!("bob@example.org, {}", p.erin.email),
        None,
        "",
        "to the GAL\n",
    );
    let out = env.sendmail(
        Some(&p.alice),
        &["--ldap", &url, "--encrypt", "always", "-t"],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    // openssl decrypts the copy with each directory certificate's key and the sender's.
    for u in [&p.bob_renewed, &p.erin, &p.alice] {
        let plain = openssl_decrypt(u, &rec[0].message)
            .unwrap_or_else(|| panic!("openssl cannot decrypt as {}", u.name));
        assert!(String::from_utf8_lossy(&plain).contains("to the GAL"));
    }
    assert!(
        openssl_decrypt(&p.bob, &rec[0].message).is_none(),
        "bob's older certificate used"
    );

    // The directory down: a recipient only it could have answered for is a temporary failure
    // under auto (sending in clear would be the wrong answer), and nothing goes out.
    drop(ldap);
    let out = env.sendmail(Some(&p.alice), &["--ldap", &url, "-t"], &msg);
    env.assert_refused(&out, 75, "directory down, auto");
    assert!(String::from_utf8_lossy(&out.stderr).contains("LDAP directory"));
    // The same when clap reads the command line (a short global flag before `sendmail`).
    let mut c = common::smimed();
    c.args(["-v", "--ldap", &url, "sendmail", "--trust"])
        .arg(&p.root_path)
        .arg("--certs")
        .arg(&env.certs)
        .arg("--mta")
        .arg(&env.mta)
        .arg("--key")
        .arg(&p.alice.p12_path)
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .arg("-t");
    let out = common::run_with_stdin(&mut c, &msg);
    env.assert_refused(&out, 75, "directory down, -v --ldap URL sendmail");
    // A recipient the local store answers for does not need the directory.
    env.import(&[&p.bob_renewed.cert_path, &p.intermediate_path]);
    let to_bob = client_message(&p.alice.email, "bob@example.org", None, "", "local\n");
    let out = env.sendmail(
        Some(&p.alice),
        &["--ldap", &url, "--encrypt", "always", "-t"],
        &to_bob,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert!(openssl_decrypt(&p.bob_renewed, &rec[0].message).is_some());
}

/// A config file with an `[ldap]` table.
fn config(env: &Env, body: &str) -> std::path::PathBuf {
    env.write("config.toml", body.as_bytes())
}

#[test]
fn binds_with_credentials_over_starttls_and_ldaps_and_refuses_wrong_ones() {
    let p = pki();
    let ldap = Slapd::start(&gal(), false);
    let env = Env::new();
    let pw = env.write("ldap.pw", format!("{ADMIN_PW}\n").as_bytes());
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let bad_pw = env.write("bad.pw", b"wrong\n");
    std::fs::set_permissions(&bad_pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let ca = path_str(&ldap.tls_ca).to_string();
    let want = format!("using {}", fp(&p.erin));

    // Anonymous: the directory shows nothing, so there is nothing to use.
    let anon = config(
        &env,
        &format!("[ldap]\nurl = \"{}\"\nbase = \"{SUFFIX}\"\n", ldap.url()),
    );
    let text = stdout(&lookup(&env, &["--config", path_str(&anon)], &p.erin.email));
    assert!(!text.contains(&want), "{text}");

    for (name, url, starttls) in [
        ("starttls", ldap.url(), "starttls = true\n"),
        ("ldaps", ldap.ldaps_url(), ""),
    ] {
        let good = config(
            &env,
            &format!(
                "[ldap]\nurl = \"{url}\"\nbase = \"{SUFFIX}\"\nbind_dn = \"{ADMIN_DN}\"\n\
                 password_file = \"{}\"\nca = \"{ca}\"\n{starttls}",
                path_str(&pw)
            ),
        );
        let out = lookup(&env, &["--config", path_str(&good)], &p.erin.email);
        assert!(
            stdout(&out).contains(&want),
            "{name}: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );

        // Without the private CA the server's certificate is not trusted: refused, never
        // read in the clear instead.
        let no_ca = config(
            &env,
            &format!(
                "[ldap]\nurl = \"{url}\"\nbase = \"{SUFFIX}\"\nbind_dn = \"{ADMIN_DN}\"\n\
                 password_file = \"{}\"\n{starttls}",
                path_str(&pw)
            ),
        );
        let out = lookup(&env, &["--config", path_str(&no_ca)], &p.erin.email);
        assert!(
            !out.status.success() && !stdout(&out).contains(&want),
            "{name}: no CA"
        );

        // Wrong credentials: a configuration error (78), said as such.
        let wrong = config(
            &env,
            &format!(
                "[ldap]\nurl = \"{url}\"\nbase = \"{SUFFIX}\"\nbind_dn = \"{ADMIN_DN}\"\n\
                 password_file = \"{}\"\nca = \"{ca}\"\n{starttls}",
                path_str(&bad_pw)
            ),
        );
        let out = lookup(&env, &["--config", path_str(&wrong)], &p.erin.email);
        assert_eq!(out.status.code(), Some(78), "{name}: wrong password");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("result code 49"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // sendmail with the bound directory: the copy is encrypted to erin's directory certificate.
    let good = config(
        &env,
        &format!(
            "[ldap]\nurl = \"{}\"\nbase = \"{SUFFIX}\"\nbind_dn = \"{ADMIN_DN}\"\n\
             password_file = \"{}\"\nca = \"{ca}\"\n",
            ldap.ldaps_url(),
            path_str(&pw)
        ),
    );
    let msg = client_message(&p.alice.email, &p.erin.email, None, "", "bound\n");
    let out = env.sendmail(
        Some(&p.alice),
        &["--config", path_str(&good), "--encrypt", "always", "-t"],
        &msg,
    );
    assert_ok(&out);
    let rec = env.take_recorded();
    assert!(openssl_decrypt(&p.erin, &rec[0].message).is_some());
}

/// A listener that accepts connections and never answers (a hung directory); runs for the
/// test's lifetime.
fn silent_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

/// A directory that answers a search with `n` entries (no attributes), one every `gap`, then
/// success: a server trickling entries, to which ldap3's per-message timeout gives no end.
fn trickling_server(n: usize, gap: std::time::Duration) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let Ok(n_read) = c.read(&mut buf) else { return };
                let id = if n_read > 4 && buf[2] == 0x02 && buf[3] == 1 {
                    buf[4]
                } else {
                    1
                };
                for _ in 0..n {
                    std::thread::sleep(gap);
                    let entry = [
                        0x30, 0x0c, 0x02, 0x01, id, 0x64, 0x07, 0x04, 0x03, b'u', b'=', b'x', 0x30,
                        0x00,
                    ];
                    if c.write_all(&entry).is_err() {
                        return;
                    }
                }
                let done = [
                    0x30, 0x0c, 0x02, 0x01, id, 0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04,
                    0x00,
                ];
                std::thread::sleep(gap);
                let _ = c.write_all(&done);
                std::thread::sleep(std::time::Duration::from_secs(1));
            });
        }
    });
    port
}

/// A directory that answers every search with one malformed entry (no attribute list), then
/// success: such an answer must be an error, never a panic.
fn malformed_server() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let Ok(n) = c.read(&mut buf) else { continue };
            // LDAPMessage ::= SEQUENCE { messageID INTEGER, … }: 30 LL 02 01 ID
            let id = if n > 4 && buf[2] == 0x02 && buf[3] == 1 {
                buf[4]
            } else {
                1
            };
            let entry = [
                0x30, 0x0a, 0x02, 0x01, id, 0x64, 0x05, 0x04, 0x03, b'u', b'=', b'x',
            ];
            let done = [
                0x30, 0x0c, 0x02, 0x01, id, 0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
            ];
            let _ = c.write_all(&entry);
            let _ = c.write_all(&done);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    port
}

#[test]
fn incomplete_malformed_or_misconfigured_directories_never_count_as_no_certificate() {
    let p = pki();
    let env = Env::new();
    let mut many = String::new();
    for i in 0..21 {
        many += &person(
            &format!("many{i}"),
            "many@example.org",
            &if i == 20 {
                b64_line("userCertificate;binary", &der(&p.erin))
            } else {
                String::new()
            },
        );
    }
    let ldap = Slapd::start(&many, true);
    let url = format!("{}/{SUFFIX}", ldap.url());
    let msg = client_message(&p.alice.email, "many@example.org", None, "", "secret\n");

    // More entries than are read: the certificate may be among the others; not sent in clear.
    let out = env.sendmail(Some(&p.alice), &["--ldap", &url, "-t"], &msg);
    env.assert_refused(&out, 78, "more than 20 entries");
    assert!(String::from_utf8_lossy(&out.stderr).contains("too broad"));

    // A server trickling entries past the lookup's deadline (each within ldap3's per-message
    // timeout): a temporary failure, not an answer "none" that would send in clear.
    let slow = config(
        &env,
        &format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:{}/{SUFFIX}\"\ntimeout = 2\n",
            trickling_server(6, std::time::Duration::from_millis(900))
        ),
    );
    let out = env.sendmail(Some(&p.alice), &["--config", path_str(&slow), "-t"], &msg);
    env.assert_refused(&out, 75, "trickling directory");
    // One entry, then the end of the search, each just within a wait: the deadline is one for
    // the whole lookup (the answer came after 3 s of a 2 s timeout, and counted).
    let slow = config(
        &env,
        &format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:{}/{SUFFIX}\"\ntimeout = 2\n",
            trickling_server(1, std::time::Duration::from_millis(1500))
        ),
    );
    let started = std::time::Instant::now();
    let out = env.sendmail(Some(&p.alice), &["--config", path_str(&slow), "-t"], &msg);
    env.assert_refused(&out, 75, "an answer past the deadline");
    assert!(started.elapsed() < std::time::Duration::from_millis(2900));

    // A malformed answer: an error (75), no panic (101).
    let bad = format!("ldap://127.0.0.1:{}/{SUFFIX}", malformed_server());
    let out = env.sendmail(Some(&p.alice), &["--ldap", &bad, "-t"], &msg);
    env.assert_refused(&out, 75, "malformed entry");

    // Configuration errors are 78, not "try again later": a filter that does not parse, an
    // empty bind password, a base DN the server answers with a referral.
    let empty = env.write("empty.pw", b"\n");
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    for (what, table) in [
        (
            "filter",
            format!("url = \"{url}\"\nfilter = \"(mail=%s))\"\n"),
        ),
        (
            "empty password",
            format!(
                "url = \"{url}\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = \"{}\"\n",
                path_str(&empty)
            ),
        ),
        (
            "referral",
            format!("url = \"{}/dc=elsewhere,dc=com\"\n", ldap.url()),
        ),
    ] {
        let cfg = config(&env, &format!("[ldap]\n{table}"));
        let out = env.sendmail(Some(&p.alice), &["--config", path_str(&cfg), "-t"], &msg);
        env.assert_refused(&out, 78, what);
    }
}

#[test]
fn through_the_agent_a_slow_directory_is_a_refusal_not_a_send_in_clear() {
    let p = pki();
    let env = Env::new();
    // The agent's directory takes 5 s to time out, longer than a client's usual 4 s wait;
    // the client has no directory of its own, so working alone would send in clear.
    let cfg = config(
        &env,
        &format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:{}/{SUFFIX}\"\ntimeout = 5\n",
            silent_server()
        ),
    );
    let socket = env.dir.path().join("agent.sock");
    let mut c = common::smimed();
    c.arg("--config")
        .arg(&cfg)
        .arg("--trust")
        .arg(&p.root_path)
        .arg("--certs")
        .arg(&env.certs)
        .arg("--key")
        .arg(&p.alice.p12_path)
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS);
    let _agent = common::start_agent_with(c, &socket);
    let msg = client_message(&p.alice.email, &p.erin.email, None, "", "secret\n");
    let mut c = common::smimed();
    c.arg("--agent")
        .arg(&socket)
        .env("XDG_DATA_HOME", env.dir.path().join("client-data"))
        .args(["sendmail", "--mta"])
        .arg(&env.mta)
        .args(["-oi", "--", &p.erin.email]);
    let out = common::run_with_stdin(&mut c, &msg);
    env.assert_refused(&out, 75, "the agent's directory timed out");
}
