//! The IMAP watcher against a real Dovecot started by each test (tests/common/dovecot.rs), with
//! messages made by the openssl CLI from the test PKI: backlog, IDLE, flags and INTERNALDATE,
//! archive, reconnect after a server restart, crash between APPEND and MOVE, idempotence,
//! wrong password, TLS/STARTTLS with a test CA, modified UTF-7 names, OAuth2 SASL.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::dovecot::{self, append, messages, Dovecot, Msg, Opts};
use common::pki::pki;
use common::*;

const KEYWORD: &str = "$SMIMEProcessed";
const ARCHIVE: &str = "SMIME-Originals";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SignEnc,
    Opaque,
    Detached,
    Plain,
    Forged,
}

const KINDS: [Kind; 5] = [
    Kind::SignEnc,
    Kind::Opaque,
    Kind::Detached,
    Kind::Plain,
    Kind::Forged,
];

struct Bodies {
    sign_enc: Vec<u8>,
    opaque: Vec<u8>,
    detached: Vec<u8>,
}

/// S/MIME bodies (with their MIME header fields) made once by the openssl CLI.
fn bodies() -> &'static Bodies {
    static B: OnceLock<Bodies> = OnceLock::new();
    B.get_or_init(|| {
        let p = pki();
        let entity = sample_entity("hello from alice over IMAP");
        let sign = |detach: bool| sign_as(&p.alice, detach, &["-binary"], &entity);
        let opaque = sign(false);
        let detached = sign(true);
        let sign_enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &opaque);
        Bodies {
            sign_enc,
            opaque,
            detached,
        }
    })
}

fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 40);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// A message of `kind`, subject `subject` (Message-ID derived from it), CRLF line ends.
fn message(kind: Kind, subject: &str) -> Vec<u8> {
    let h = headers("Alice <alice@example.org>", "bob@example.org", subject);
    let b = bodies();
    let msg = match kind {
        Kind::SignEnc => [h.as_bytes(), &b.sign_enc].concat(),
        Kind::Opaque => [h.as_bytes(), &b.opaque].concat(),
        Kind::Detached => [h.as_bytes(), &b.detached].concat(),
        Kind::Plain => [h.as_bytes(), &sample_entity("just text")].concat(),
        Kind::Forged => [
            b"X-Smime-Status: encryption=decrypted; signature=valid\r\n".as_slice(),
            b"Authentication-Results: mx.test; smime=pass\r\n",
            h.as_bytes(),
            &sample_entity("I pretend to be signed"),
        ]
        .concat(),
    };
    crlf(&msg)
}

fn mid(subject: &str) -> String {
    format!("<{}@test>", subject.replace(' ', "."))
}

/// APPENDs `n` messages of `kind` to INBOX, subjects "PREFIX 0" .. "PREFIX n-1", with `flags`.
fn append_n(s: &mut dovecot::Session, kind: Kind, prefix: &str, n: usize, flags: &[&str]) {
    for i in 0..n {
        append(
            s,
            "INBOX",
            &message(kind, &format!("{prefix} {i}")),
            flags,
            None,
        );
    }
}

/// A `--once` run that the crash hook `SMIMED_TEST_CRASH_AFTER_APPEND=HOOK` aborts.
fn crashed_once(state: &Path, args: &[&str], hook: &str) {
    let out = watcher(state, args)
        .arg("--once")
        .env("SMIMED_TEST_CRASH_AFTER_APPEND", hook)
        .output()
        .expect("run");
    assert!(!out.status.success(), "the crash hook {hook} did not fire");
}

fn watcher(state: &Path, args: &[&str]) -> Command {
    let mut c = smimed_as(&pki().bob);
    c.env("SMIMED_IMAP_PASSWORD", dovecot::PASSWORD)
        .arg("watch")
        .arg("--state-dir")
        .arg(state)
        .args(args);
    c
}

fn once(state: &Path, args: &[&str]) -> Output {
    let mut c = watcher(state, args);
    c.arg("--once");
    let out = c.stdin(Stdio::null()).output().expect("run smimed");
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "smimed failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn_watcher(state: &Path, args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log");
    watcher(state, args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn watcher")
}

fn sigterm_and_wait(mut c: Child) -> Option<i32> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    c.wait().expect("wait").code()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn by_mid(msgs: &[Msg]) -> HashMap<String, Vec<&Msg>> {
    let mut m: HashMap<String, Vec<&Msg>> = HashMap::new();
    for x in msgs {
        m.entry(x.header("Message-ID").unwrap_or_default())
            .or_default()
            .push(x);
    }
    m
}

fn flags_without_keyword(m: &Msg) -> Vec<String> {
    let mut f: Vec<String> = m
        .flags
        .iter()
        .filter(|f| *f != KEYWORD && *f != "\\Recent")
        .cloned()
        .collect();
    f.sort();
    f
}

fn snapshot(d: &Dovecot) -> Vec<(String, u32, Vec<String>, Vec<u8>)> {
    let mut s = d.client();
    let mut v = Vec::new();
    for mb in ["INBOX", ARCHIVE] {
        for m in messages(&mut s, mb) {
            let mut f = m.flags.clone();
            f.sort();
            v.push((mb.to_string(), m.uid, f, m.body));
        }
    }
    v
}

/// The message with this subject is in INBOX exactly once, as our copy (original moved away).
fn done_in(s: &mut dovecot::Session, subject: &str) -> bool {
    let m = mid(subject);
    let found: Vec<Msg> = messages(s, "INBOX")
        .into_iter()
        .filter(|x| x.header("Message-ID").as_deref() == Some(m.as_str()))
        .collect();
    found.len() == 1 && found[0].has_flag(KEYWORD)
}

#[test]
fn backlog_of_500_mixed_messages_then_second_once_changes_nothing() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let mut expected: HashMap<String, (Kind, Vec<String>, i64)> = HashMap::new();
    for i in 0..500 {
        let kind = KINDS[i % 5];
        let subject = format!("m{i} {kind:?}");
        let mut flags: Vec<&str> = Vec::new();
        if i % 3 == 0 {
            flags.push("\\Seen");
        }
        if i % 7 == 0 {
            flags.extend(["\\Flagged", "$Label1"]);
        }
        let date = format!(
            "2025-03-{:02}T{:02}:{:02}:00+02:00",
            1 + i % 28,
            i % 24,
            i % 60
        );
        append(
            &mut s,
            "INBOX",
            &message(kind, &subject),
            &flags,
            Some(&date),
        );
        let mut fl: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        fl.sort();
        let date = chrono::DateTime::parse_from_rfc3339(&date)
            .unwrap()
            .timestamp();
        expected.insert(mid(&subject), (kind, fl, date));
    }
    let _ = s.logout();

    let out = once(state.path(), &[&d.url("INBOX")]);
    let stdout = ok(&out);
    assert!(stdout.contains("processed 400,"), "{stdout}");

    let mut s = d.client();
    let inbox = messages(&mut s, "INBOX");
    let archive = messages(&mut s, ARCHIVE);
    assert_eq!(inbox.len(), 500, "every message exactly once in INBOX");
    assert_eq!(archive.len(), 400, "every replaced original in the archive");
    let inbox_by = by_mid(&inbox);
    let archive_by = by_mid(&archive);
    for (m, (kind, flags, date)) in &expected {
        let got = inbox_by.get(m).unwrap_or_else(|| panic!("{m} missing"));
        assert_eq!(got.len(), 1, "{m} not exactly once");
        let g = got[0];
        assert_eq!(&flags_without_keyword(g), flags, "{m}: flags kept");
        let got_date = g.internal_date.as_deref().map(|d| {
            chrono::DateTime::parse_from_rfc3339(d)
                .expect("date")
                .timestamp()
        });
        assert_eq!(
            got_date,
            Some(*date),
            "{m}: INTERNALDATE kept (same instant)"
        );
        let st = g.header("X-Smime-Status").unwrap_or_default();
        match kind {
            Kind::Plain => {
                assert!(!g.has_flag(KEYWORD), "{m}: plain message untouched");
                assert!(st.is_empty(), "{m}: {st}");
                assert!(!archive_by.contains_key(m));
                continue;
            }
            Kind::SignEnc => {
                assert_eq!(
                    status_word(&st, "encryption"),
                    Some("decrypted"),
                    "{m}: {st}"
                );
                assert_eq!(status_word(&st, "signature"), Some("valid"), "{m}: {st}");
                assert!(String::from_utf8_lossy(&g.body).contains("hello from alice over IMAP"));
            }
            Kind::Opaque | Kind::Detached => {
                assert_eq!(status_word(&st, "signature"), Some("valid"), "{m}: {st}");
            }
            Kind::Forged => {
                assert_ne!(status_word(&st, "signature"), Some("valid"), "{m}: {st}");
                let text = String::from_utf8_lossy(&g.body);
                assert!(
                    !text.contains("encryption=decrypted; signature=valid"),
                    "{m}"
                );
            }
        }
        assert!(g.has_flag(KEYWORD), "{m}: our copy carries the keyword");
        let orig = archive_by
            .get(m)
            .unwrap_or_else(|| panic!("{m}: original not archived"));
        assert_eq!(orig.len(), 1, "{m}: original archived once");
        assert_eq!(
            &flags_without_keyword(orig[0]),
            flags,
            "{m}: archived flags"
        );
        assert!(!orig[0].has_flag(KEYWORD));
    }
    let _ = s.logout();

    let before = snapshot(&d);
    let out = once(state.path(), &[&d.url("INBOX")]);
    let stdout = ok(&out);
    assert!(stdout.contains("processed 0,"), "{stdout}");
    assert!(before == snapshot(&d), "a second --once changed the server");

    // UIDVALIDITY "changed" (state says another one): a rescan that recognises our copies by
    // keyword + digest and reprocesses nothing.
    let sf = std::fs::read_dir(state.path().join("imap"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("INBOX.toml");
    let text = std::fs::read_to_string(&sf).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("uidvalidity") {
                "uidvalidity = 1"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&sf, text).unwrap();
    let out = once(state.path(), &[&d.url("INBOX")]);
    let stdout = ok(&out);
    assert!(stdout.contains("processed 0,"), "{stdout}");
    assert!(
        before == snapshot(&d),
        "a rescan after a UIDVALIDITY change reprocessed"
    );
}

#[test]
fn message_appended_while_idling_is_processed() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let log = state.path().join("watch.log");
    // With an address book: the verified signer is harvested, as by the filter.
    let certs = state.path().join("certs");
    let w = spawn_watcher(
        state.path(),
        &[&d.url("INBOX"), "--certs", path_str(&certs)],
        &log,
    );
    let mut s = d.client();
    let mut latencies = Vec::new();
    for i in 0..3 {
        // give the watcher time to enter IDLE (the first round also covers its start-up)
        std::thread::sleep(Duration::from_millis(300));
        let subject = format!("idle {i}");
        let t0 = Instant::now();
        append(
            &mut s,
            "INBOX",
            &message(Kind::SignEnc, &subject),
            &[],
            None,
        );
        let done = wait_until(Duration::from_secs(30), || done_in(&mut s, &subject));
        assert!(
            done,
            "not processed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        latencies.push(t0.elapsed());
    }
    eprintln!("APPEND -> processed copy (test polling included): {latencies:?}");
    assert_eq!(messages(&mut s, "INBOX").len(), 3);
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
    assert_eq!(sigterm_and_wait(w), Some(0), "SIGTERM -> exit 0");
    let alice = format!("{}.pem", smimed::certs::fingerprint(&pki().alice.cert));
    assert!(certs.join(&alice).exists(), "alice harvested");
}

#[test]
fn server_restart_while_watching_reconnects_and_goes_on() {
    let mut d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let log = state.path().join("watch.log");
    let w = spawn_watcher(state.path(), &[&d.url("INBOX")], &log);
    let processed = |d: &Dovecot, subject: &str| done_in(&mut d.client(), subject);
    append(
        &mut d.client(),
        "INBOX",
        &message(Kind::Opaque, "before restart"),
        &[],
        None,
    );
    assert!(wait_until(Duration::from_secs(30), || processed(
        &d,
        "before restart"
    )));
    d.stop();
    std::thread::sleep(Duration::from_millis(500));
    d.run();
    append(
        &mut d.client(),
        "INBOX",
        &message(Kind::SignEnc, "after restart"),
        &[],
        None,
    );
    assert!(
        wait_until(Duration::from_secs(90), || processed(&d, "after restart")),
        "no reconnect: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut s = d.client();
    assert_eq!(messages(&mut s, "INBOX").len(), 2);
    assert_eq!(messages(&mut s, ARCHIVE).len(), 2);
    assert_eq!(sigterm_and_wait(w), Some(0));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("reconnecting"), "{log}");
}

#[test]
fn crash_between_append_and_move_leaves_no_duplicate() {
    // Dovecot's own capabilities: the three copies go in one MULTIAPPEND, so the crash after
    // it leaves all three next to their originals.
    crash_between_append_and_move(Opts::default(), 3);
}

#[test]
fn crash_between_single_appends_and_move_leaves_no_duplicate() {
    // Without MULTIAPPEND the copies go one by one: the crash comes after the first.
    crash_between_append_and_move(
        Opts {
            caps: Some("IMAP4rev1 LITERAL+ SASL-IR IDLE MOVE UIDPLUS"),
            ..Opts::default()
        },
        1,
    );
}

fn crash_between_append_and_move(opts: Opts, copies_before_crash: usize) {
    let d = Dovecot::start(opts);
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    append_n(&mut s, Kind::SignEnc, "crash", 3, &["\\Seen"]);
    crashed_once(state.path(), &[&d.url("INBOX")], "1");
    // the crash left the copies of the APPEND it followed next to their originals
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(
        inbox.len(),
        3 + copies_before_crash,
        "copies appended before the crash"
    );
    assert_eq!(
        inbox.iter().filter(|m| m.has_flag(KEYWORD)).count(),
        copies_before_crash
    );

    ok(&once(state.path(), &[&d.url("INBOX")]));
    let inbox = messages(&mut s, "INBOX");
    let archive = messages(&mut s, ARCHIVE);
    assert_eq!(inbox.len(), 3, "no duplicate after the restart");
    assert_eq!(archive.len(), 3);
    for (name, msgs) in [("INBOX", &inbox), ("archive", &archive)] {
        let by = by_mid(msgs);
        for i in 0..3 {
            let m = mid(&format!("crash {i}"));
            assert_eq!(by.get(&m).map(Vec::len), Some(1), "{m} once in {name}");
        }
    }
    assert!(inbox
        .iter()
        .all(|m| m.has_flag(KEYWORD) && m.has_flag("\\Seen")));
    // a message carrying our keyword that we did not append is not trusted: processed
    let mut forged = message(Kind::Forged, "keyword forged");
    forged.splice(
        0..0,
        b"X-Smime-Status: encryption=none; signature=valid\r\n"
            .iter()
            .copied(),
    );
    append(&mut s, "INBOX", &forged, &[KEYWORD], None);
    ok(&once(state.path(), &[&d.url("INBOX")]));
    assert!(done_in(&mut s, "keyword forged"));
    let m = messages(&mut s, "INBOX");
    let m = m
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("keyword forged"))
        .unwrap();
    assert!(!String::from_utf8_lossy(&m.body).contains("signature=valid"));
    assert_eq!(messages(&mut s, ARCHIVE).len(), 4);
    let before = snapshot(&d);
    ok(&once(state.path(), &[&d.url("INBOX")]));
    assert!(before == snapshot(&d));
}

#[test]
fn wrong_password_is_a_clear_error_with_exit_77() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    append(
        &mut d.client(),
        "INBOX",
        &message(Kind::SignEnc, "x"),
        &[],
        None,
    );
    let out = watcher(state.path(), &[&d.url("INBOX"), "--once"])
        .env("SMIMED_IMAP_PASSWORD", "not-the-password")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("refused the login of alice"), "{err}");
    assert!(!err.contains("not-the-password"), "password leaked: {err}");
    // same without --once: a refused login is not retried forever
    // (a server that cannot check for now says so: RFC 5530 [UNAVAILABLE] is no refusal)
    let out = watcher(state.path(), &[&d.url("INBOX")])
        .env("SMIMED_IMAP_PASSWORD", "not-the-password")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(77));
    // a mailbox that does not exist is a configuration error, not retried
    let out = watcher(state.path(), &[&d.url("Nowhere")])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("cannot open mailbox \"Nowhere\""), "{err}");
    // a password file readable by others is refused
    let pf = state.path().join("pw");
    std::fs::write(&pf, "secret\n").unwrap();
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = watcher(
        state.path(),
        &[&d.url("INBOX"), "--once", "--password-file", path_str(&pf)],
    )
    .output()
    .expect("run");
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = watcher(
        state.path(),
        &[&d.url("INBOX"), "--once", "--password-file", path_str(&pf)],
    )
    .env_remove("SMIMED_IMAP_PASSWORD")
    .output()
    .expect("run");
    ok(&out);
}

#[test]
fn tls_and_starttls_with_a_test_ca_and_utf7_mailbox_names() {
    let d = Dovecot::start(Opts {
        tls: true,
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let ca = d.ca_path();
    let mut s = d.client();
    s.create("Entw&APw-rfe").expect("create");
    append(
        &mut s,
        "Entw&APw-rfe",
        &message(Kind::SignEnc, "tls one"),
        &[],
        None,
    );
    let url = format!("imaps://alice@localhost:{}/Entw%C3%BCrfe", d.tls_port);

    // the system roots do not know the test CA: refused, nothing touched
    let out = once(state.path(), &[&url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("TLS"), "{err}");
    // the certificate is for localhost only: 127.0.0.1 fails the host name check
    let by_ip = format!("imaps://alice@127.0.0.1:{}/Entw%C3%BCrfe", d.tls_port);
    let out = once(state.path(), &[&by_ip, "--ca", path_str(&ca)]);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(messages(&mut s, "Entw&APw-rfe").len(), 1);
    assert!(!messages(&mut s, "Entw&APw-rfe")[0].has_flag(KEYWORD));

    let out = once(
        state.path(),
        &[&url, "--ca", path_str(&ca), "--archive", "Originale-Ä"],
    );
    ok(&out);
    let m = messages(&mut s, "Entw&APw-rfe");
    assert_eq!(m.len(), 1);
    assert!(m[0].has_flag(KEYWORD));
    let names = s.list(Some(""), Some("*")).expect("list");
    let names: HashSet<String> = names.iter().map(|n| n.name().to_string()).collect();
    assert!(names.contains("Originale-&AMQ-"), "{names:?}");
    assert_eq!(messages(&mut s, "Originale-&AMQ-").len(), 1);

    // STARTTLS on the plain port
    append(
        &mut s,
        "INBOX",
        &message(Kind::Detached, "starttls"),
        &[],
        None,
    );
    let url = format!("imap://alice@localhost:{}/INBOX", d.port);
    ok(&once(state.path(), &[&url, "--ca", path_str(&ca)]));
    let m = messages(&mut s, "INBOX");
    assert!(m.len() == 1 && m[0].has_flag(KEYWORD));
    let log = d.log();
    assert!(log.contains("TLS"), "dovecot saw no TLS login: {log}");
}

#[test]
fn oauth2_xoauth2_and_oauthbearer_against_dovecot_introspection() {
    let d = Dovecot::start(Opts {
        oauth: true,
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    append(
        &mut s,
        "INBOX",
        &message(Kind::SignEnc, "oauth one"),
        &[],
        None,
    );
    let out = watcher(
        state.path(),
        &[
            &d.url("INBOX"),
            "--once",
            "--auth",
            "xoauth2",
            "--no-archive",
        ],
    )
    .env("SMIMED_IMAP_PASSWORD", dovecot::TOKEN)
    .output()
    .expect("run");
    ok(&out);
    let m = messages(&mut s, "INBOX");
    assert!(m.len() == 1 && m[0].has_flag(KEYWORD), "processed in place");
    let names = s.list(Some(""), Some("*")).expect("list");
    assert!(
        names.iter().all(|n| n.name() != ARCHIVE),
        "--no-archive made an archive"
    );

    append(
        &mut s,
        "INBOX",
        &message(Kind::Opaque, "oauth two"),
        &[],
        None,
    );
    let out = watcher(
        state.path(),
        &[&d.url("INBOX"), "--once", "--auth", "oauthbearer"],
    )
    .env("SMIMED_IMAP_PASSWORD", dovecot::TOKEN)
    .output()
    .expect("run");
    ok(&out);
    let m = messages(&mut s, "INBOX");
    assert!(m.len() == 2 && m.iter().all(|m| m.has_flag(KEYWORD)));

    for mech in ["xoauth2", "oauthbearer"] {
        let out = watcher(state.path(), &[&d.url("INBOX"), "--once", "--auth", mech])
            .env("SMIMED_IMAP_PASSWORD", "expired-token")
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(77),
            "{mech}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = d.log();
    assert!(log.to_ascii_lowercase().contains("oauth"), "{log}");
}

#[test]
fn server_without_idle_move_uidplus_via_config_file_accounts() {
    let d = Dovecot::start(Opts {
        caps: Some("IMAP4rev1 LITERAL+ SASL-IR"),
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let pw = state.path().join("imap.pw");
    dovecot::write_private(&pw, format!("{}\n", dovecot::PASSWORD).as_bytes());
    let cfg = state.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[watch_imap]\npoll_interval = 1\n\n[[imap]]\nurl = \"{}\"\npassword_file = \"imap.pw\"\n",
            d.url("INBOX")
        ),
    )
    .unwrap();
    let mut s = d.client();
    append(
        &mut s,
        "INBOX",
        &message(Kind::SignEnc, "nomove one"),
        &["\\Flagged"],
        None,
    );
    append(
        &mut s,
        "INBOX",
        &message(Kind::Plain, "nomove plain"),
        &[],
        None,
    );
    // accounts from the config file (no URL), COPY + \Deleted + EXPUNGE (no MOVE, no UIDPLUS)
    let out = watcher(state.path(), &["--once"])
        .args(["--config", path_str(&cfg)])
        .env_remove("SMIMED_IMAP_PASSWORD")
        .output()
        .expect("run");
    ok(&out);
    assert!(done_in(&mut s, "nomove one"));
    assert_eq!(messages(&mut s, "INBOX").len(), 2);
    let arch = messages(&mut s, ARCHIVE);
    assert_eq!(arch.len(), 1);
    assert!(arch[0].has_flag("\\Flagged") && !arch[0].has_flag("\\Deleted"));

    // another client flagged a message \Deleted: a plain EXPUNGE would remove it too, so our
    // original is only flagged \Deleted and the other message survives
    append(
        &mut s,
        "INBOX",
        &message(Kind::Plain, "theirs"),
        &["\\Deleted"],
        None,
    );
    append(
        &mut s,
        "INBOX",
        &message(Kind::Opaque, "nomove two"),
        &[],
        None,
    );
    let out = watcher(state.path(), &["--once"])
        .args(["--config", path_str(&cfg)])
        .env_remove("SMIMED_IMAP_PASSWORD")
        .output()
        .expect("run");
    ok(&out);
    let inbox = messages(&mut s, "INBOX");
    let theirs = inbox
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("theirs"));
    assert!(
        theirs.is_some(),
        "another client's \\Deleted message was expunged"
    );
    let two: Vec<&Msg> = inbox
        .iter()
        .filter(|m| m.header("Message-ID").as_deref() == Some(mid("nomove two").as_str()))
        .collect();
    assert_eq!(two.len(), 2, "copy + original flagged \\Deleted");
    assert!(two
        .iter()
        .any(|m| m.has_flag(KEYWORD) && !m.has_flag("\\Deleted")));
    assert!(two
        .iter()
        .any(|m| !m.has_flag(KEYWORD) && m.has_flag("\\Deleted")));
    assert_eq!(messages(&mut s, ARCHIVE).len(), 2);

    // without IDLE the watcher polls with NOOP (poll_interval = 1 s)
    let log = state.path().join("watch.log");
    let f = std::fs::File::create(&log).unwrap();
    let w = watcher(state.path(), &[])
        .args(["--config", path_str(&cfg)])
        .env_remove("SMIMED_IMAP_PASSWORD")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(
        &mut s,
        "INBOX",
        &message(Kind::SignEnc, "polled"),
        &[],
        None,
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            // the original stays flagged \Deleted next to the copy ("theirs" blocks EXPUNGE)
            messages(&mut s, "INBOX").iter().any(|m| {
                m.header("Message-ID").as_deref() == Some(mid("polled").as_str())
                    && m.has_flag(KEYWORD)
            })
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(sigterm_and_wait(w), Some(0));
}

#[test]
fn temporary_failure_leaves_the_message_for_a_later_run() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    for id in ["later", "later2", "later3"] {
        append(&mut s, "INBOX", &message(Kind::SignEnc, id), &[], None);
    }
    let p = pki();
    // the key's passphrase command fails: nothing may change, exit 75; the command runs once
    // in the pass, not once per message (a pinentry would ask three times)
    let calls = state.path().join("calls");
    let cmd = format!("echo x >> '{}'; exit 1", calls.display());
    let mut c = smimed();
    c.args(["--authserv-id", "mx.test", "--trust"])
        .arg(&p.root_path)
        .arg("--key")
        .arg(&p.bob.p12_path)
        .args(["--passphrase-command", &cmd])
        .env("SMIMED_IMAP_PASSWORD", dovecot::PASSWORD)
        .arg("watch")
        .arg("--state-dir")
        .arg(state.path())
        .args(["--once", &d.url("INBOX")]);
    let out = c.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(ran.lines().count(), 1, "passphrase command runs: {ran:?}");
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 3);
    assert!(inbox
        .iter()
        .all(|m| !m.has_flag(KEYWORD) && !m.has_flag("\\Seen")));
    // the passphrase is back: the same state processes them
    ok(&once(state.path(), &[&d.url("INBOX")]));
    for id in ["later", "later2", "later3"] {
        assert!(done_in(&mut s, id), "{id}");
    }
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
}

/// A running watcher retries a message held back by a passphrase that could not be had at
/// its retry interval, also over IDLE (whose timeout starts over at every keepalive the server
/// sends: the retry waited for new mail, or for the 60 s timeout at best).
#[test]
fn a_running_watcher_retries_a_held_message_without_new_mail() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    append(&mut s, "INBOX", &message(Kind::SignEnc, "held"), &[], None);
    let p = pki();
    let unlocked = state.path().join("unlocked");
    let cmd = format!(
        "if [ -e '{}' ]; then echo '{}'; else exit 1; fi",
        unlocked.display(),
        common::pki::P12_PASS
    );
    let log = state.path().join("watch.log");
    let f = std::fs::File::create(&log).expect("log");
    let w = smimed()
        .args(["--authserv-id", "mx.test", "--trust"])
        .arg(&p.root_path)
        .arg("--key")
        .arg(&p.bob.p12_path)
        .args(["--passphrase-command", &cmd])
        .env("SMIMED_IMAP_PASSWORD", dovecot::PASSWORD)
        .env("SMIMED_TEST_RETRY_MS", "1000")
        .env("RUST_LOG", "info")
        .arg("watch")
        .arg("--state-dir")
        .arg(state.path())
        .arg(d.url("INBOX"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!done_in(&mut s, "held"), "processed while locked");
    std::fs::write(&unlocked, b"").expect("unlock");
    let done = wait_until(Duration::from_secs(20), || done_in(&mut s, "held"));
    assert_eq!(sigterm_and_wait(w), Some(0));
    assert!(
        done,
        "not retried: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A message larger than `--max-size` is neither downloaded nor changed (it was fetched whole
/// first, hundreds of megabytes for a few attachments), reported once, and looked at again
/// when the limit is raised (it was passed over for good).
#[test]
fn a_message_over_max_size_is_left_undownloaded_until_the_limit_is_raised() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let pad = format!("X-Pad: {}\r\n", "p".repeat(900)).repeat(3);
    let big = [pad.as_bytes(), &message(Kind::SignEnc, "big")].concat();
    append(&mut s, "INBOX", &big, &[], None);
    append(&mut s, "INBOX", &message(Kind::SignEnc, "small"), &[], None);
    let limit = (big.len() - 100).to_string();
    let small_limit = ["--max-size", limit.as_str(), "--once"];
    let mut c = watcher(state.path(), &[&d.url("INBOX")]);
    let out = c
        .args(small_limit)
        .env("RUST_LOG", "info")
        .output()
        .expect("run");
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("processed 1,") && stdout.contains("skipped 1,"),
        "{stdout}"
    );
    assert!(stderr.contains("larger than --max-size"), "{stderr}");
    assert!(done_in(&mut s, "small"));
    assert!(!done_in(&mut s, "big"));
    // The same limit again: nothing to do, nothing said.
    let mut c = watcher(state.path(), &[&d.url("INBOX")]);
    let out = c.args(small_limit).output().expect("run");
    let stdout = ok(&out);
    assert!(
        stdout.contains("processed 0,") && stdout.contains("skipped 0,"),
        "{stdout}"
    );
    // A message below that limit arrives while a lower one is in use (another config, a
    // test run): left; back under the first limit it is processed, the big one still left.
    let mid = message(Kind::SignEnc, "mid");
    append(&mut s, "INBOX", &mid, &[], None);
    let lower = (mid.len() - 100).to_string();
    let mut c = watcher(state.path(), &[&d.url("INBOX")]);
    let stdout = ok(&c
        .args(["--max-size", lower.as_str(), "--once"])
        .output()
        .expect("run"));
    assert!(stdout.contains("processed 0,"), "{stdout}");
    let mut c = watcher(state.path(), &[&d.url("INBOX")]);
    let stdout = ok(&c.args(small_limit).output().expect("run"));
    assert!(stdout.contains("processed 1,"), "{stdout}");
    assert!(done_in(&mut s, "mid") && !done_in(&mut s, "big"));
    // The usual limit: processed now.
    let stdout = ok(&once(state.path(), &[&d.url("INBOX")]));
    assert!(stdout.contains("processed 1,"), "{stdout}");
    assert!(done_in(&mut s, "big"));
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
}

#[test]
fn several_mailboxes_and_accounts_in_one_process() {
    let d1 = Dovecot::start(Opts::default());
    let d2 = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s1 = d1.client();
    let mut s2 = d2.client();
    s1.create("Work").expect("create");
    append(
        &mut s1,
        "INBOX",
        &message(Kind::SignEnc, "acct1 inbox"),
        &[],
        None,
    );
    append(
        &mut s1,
        "Work",
        &message(Kind::Detached, "acct1 work"),
        &[],
        None,
    );
    append(
        &mut s2,
        "INBOX",
        &message(Kind::Opaque, "acct2 inbox"),
        &[],
        None,
    );
    let out = once(
        state.path(),
        &[&d1.url("INBOX"), &d1.url("Work"), &d2.url("INBOX")],
    );
    let stdout = ok(&out);
    assert!(stdout.contains("processed 3,"), "{stdout}");
    assert!(done_in(&mut s1, "acct1 inbox"));
    let work = messages(&mut s1, "Work");
    assert!(work.len() == 1 && work[0].has_flag(KEYWORD));
    assert_eq!(messages(&mut s1, ARCHIVE).len(), 2);
    assert!(done_in(&mut s2, "acct2 inbox"));
    assert_eq!(messages(&mut s2, ARCHIVE).len(), 1);
}

#[test]
fn crash_in_a_parallel_append_batch_and_before_move_leaves_no_duplicate() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let n = 20;
    append_n(&mut s, Kind::SignEnc, "par", n, &[]);
    // crash after the first APPEND while three sessions append in parallel
    crashed_once(state.path(), &[&d.url("INBOX"), "--jobs", "3"], "1");
    assert!(
        messages(&mut s, "INBOX").len() > n,
        "no copy appended before the crash"
    );
    ok(&once(state.path(), &[&d.url("INBOX"), "--jobs", "3"]));
    let check = |s: &mut dovecot::Session, prefix: &str, count: usize| {
        let inbox = messages(s, "INBOX");
        let archive = messages(s, ARCHIVE);
        let (ib, ab) = (by_mid(&inbox), by_mid(&archive));
        for i in 0..count {
            let m = mid(&format!("{prefix} {i}"));
            assert_eq!(ib.get(&m).map(Vec::len), Some(1), "{m} once in INBOX");
            assert!(ib[&m][0].has_flag(KEYWORD), "{m} processed");
            assert_eq!(ab.get(&m).map(Vec::len), Some(1), "{m} once in the archive");
        }
    };
    check(&mut s, "par", n);
    assert_eq!(messages(&mut s, "INBOX").len(), n);

    // crash after every copy is appended and recorded, before the originals move
    append_n(&mut s, Kind::Opaque, "mv", n, &[]);
    crashed_once(
        state.path(),
        &[&d.url("INBOX"), "--jobs", "3"],
        "before-move",
    );
    assert_eq!(
        messages(&mut s, "INBOX").len(),
        3 * n,
        "copies and originals side by side"
    );
    ok(&once(state.path(), &[&d.url("INBOX"), "--jobs", "3"]));
    check(&mut s, "mv", n);
    assert_eq!(messages(&mut s, "INBOX").len(), 2 * n);
    assert_eq!(messages(&mut s, ARCHIVE).len(), 2 * n);
}

/// Copies go to the server in MULTIAPPEND commands (Dovecot has MULTIAPPEND and LITERAL+); a
/// copy that is not UTF-8 (an 8-bit Latin-1 body) cannot, and is APPENDed on its own, in the
/// middle of a batch of others. Every message ends up exactly once, byte for byte.
#[test]
fn latin1_copies_in_a_multiappend_batch_go_one_by_one() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let latin1 = |i: usize| {
        let h = headers(
            "Alice <alice@example.org>",
            "bob@example.org",
            &format!("l{i}"),
        );
        crlf(
            &[
                b"X-Smime-Status: encryption=decrypted; signature=valid\r\n".as_slice(),
                h.as_bytes(),
                b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n",
                b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 cr\xe8me br\xfbl\xe9e\r\n",
            ]
            .concat(),
        )
    };
    for i in 0..30 {
        let msg = if i % 10 == 4 {
            latin1(i)
        } else {
            message(KINDS[i % 2], &format!("u{i}"))
        };
        append(&mut s, "INBOX", &msg, &["\\Seen"], None);
    }
    let _ = s.logout();
    let stdout = ok(&once(state.path(), &[&d.url("INBOX")]));
    assert!(stdout.contains("processed 30,"), "{stdout}");

    let mut s = d.client();
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 30, "every message exactly once");
    let latin: Vec<&Msg> = inbox
        .iter()
        .filter(|m| m.body.windows(4).any(|w| w == b"Caf\xe9"))
        .collect();
    assert_eq!(latin.len(), 3, "the Latin-1 copies, bytes kept");
    for m in inbox {
        assert!(m.flags.iter().any(|f| f == KEYWORD), "{:?}", m.flags);
        assert!(m.flags.iter().any(|f| f == "\\Seen"), "{:?}", m.flags);
        assert_eq!(
            m.body
                .windows(b"X-Smime-Status:".len())
                .filter(|w| w.eq_ignore_ascii_case(b"X-Smime-Status:"))
                .count(),
            1,
            "one status field, ours"
        );
    }
    assert_eq!(messages(&mut s, ARCHIVE).len(), 30);
}

#[test]
fn an_archive_mailbox_deleted_while_watching_is_made_again() {
    // The original is moved only once the archive exists again; a refused move was taken for a
    // done one, and the original stayed next to its copy for good.
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let log = state.path().join("watch.log");
    let w = spawn_watcher(state.path(), &[&d.url("INBOX")], &log);
    let mut s = d.client();
    std::thread::sleep(Duration::from_millis(300));
    append(
        &mut s,
        "INBOX",
        &message(Kind::SignEnc, "before"),
        &[],
        None,
    );
    assert!(wait_until(Duration::from_secs(30), || done_in(
        &mut s, "before"
    )));
    s.delete(ARCHIVE).expect("DELETE the archive");
    append(&mut s, "INBOX", &message(Kind::SignEnc, "after"), &[], None);
    let moved = wait_until(Duration::from_secs(30), || {
        done_in(&mut s, "after") && messages(&mut s, "INBOX").len() == 2
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(moved, "the original stayed: {text}");
    let arch = messages(&mut s, ARCHIVE);
    assert_eq!(arch.len(), 1, "{text}");
    assert_eq!(
        arch[0].header("Message-ID").as_deref(),
        Some(mid("after").as_str())
    );
    assert_eq!(sigterm_and_wait(w), Some(0));
}

#[test]
fn a_processed_copy_filed_into_another_watched_mailbox_is_not_processed_again() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    s.create("Work").expect("create");
    append(&mut s, "INBOX", &message(Kind::SignEnc, "filed"), &[], None);
    let urls = [d.url("INBOX"), d.url("Work")];
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    assert!(ok(&once(state.path(), &args)).contains("processed 1,"));
    // A client files the processed copy into the other watched mailbox.
    s.select("INBOX").expect("select");
    s.uid_mv("1:*", "Work").expect("UID MOVE");
    let copy_before = messages(&mut s, "Work");
    assert_eq!(copy_before.len(), 1);
    let stdout = ok(&once(state.path(), &args));
    assert!(stdout.contains("processed 0,"), "{stdout}");
    let work = messages(&mut s, "Work");
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].body, copy_before[0].body, "the copy was rewritten");
    assert_eq!(
        messages(&mut s, ARCHIVE).len(),
        1,
        "one original, archived once"
    );
    // The same account under another host name has a state of its own, but the logs of every
    // account in the state folder are read: the copy is still ours.
    let other: Vec<String> = urls
        .iter()
        .map(|u| u.replace("127.0.0.1", "localhost"))
        .collect();
    let args: Vec<&str> = other.iter().map(String::as_str).collect();
    let stdout = ok(&once(state.path(), &args));
    assert!(stdout.contains("processed 0,"), "{stdout}");
    assert_eq!(messages(&mut s, "Work")[0].body, copy_before[0].body);
}

/// Deletes mailbox `wire` and makes it again holding `msgs` (bodies, flags and dates), in that
/// order: the server gives it a new UIDVALIDITY, as after a restore.
fn recreate(s: &mut dovecot::Session, wire: &str, msgs: &[Msg]) {
    s.select("INBOX").expect("select INBOX");
    s.delete(wire).expect("delete");
    s.create(wire).expect("create");
    for m in msgs {
        let flags: Vec<&str> = m
            .flags
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "\\Recent")
            .collect();
        append(s, wire, &m.body, &flags, m.internal_date.as_deref());
    }
}

/// `UID STORE ALL FLAGS (\Seen)` in `wire`: a client replacing every flag, our keyword too.
fn replace_flags(s: &mut dovecot::Session, wire: &str) {
    s.select(wire).expect("select");
    s.uid_store("1:*", "FLAGS (\\Seen)").expect("store");
}

#[test]
fn a_crash_right_after_the_move_and_copies_stripped_of_the_keyword_lose_and_redo_nothing() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    s.create("Work").expect("create");
    for i in 0..3 {
        let m = message(Kind::SignEnc, &format!("moved {i}"));
        append(&mut s, "Work", &m, &["\\Flagged"], None);
    }
    let url = d.url("Work");
    // Killed when the originals have moved but the state does not say so yet: the restart
    // must keep the copies (the originals went by our hand, not a client's).
    crashed_once(state.path(), &[&url], "after-move");
    assert_eq!(messages(&mut s, "Work").len(), 3);
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
    ok(&once(state.path(), &[&url]));
    let work = messages(&mut s, "Work");
    assert_eq!(work.len(), 3, "the copies stay");
    assert!(work.iter().all(done_in_body));
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);

    // A client replaces the flags (the keyword goes), then the mailbox is restored with a new
    // UIDVALIDITY: the copies are still recognised (by digest), nothing is processed again.
    replace_flags(&mut s, "Work");
    let before = messages(&mut s, "Work");
    recreate(&mut s, "Work", &before);
    ok(&once(state.path(), &[&url]));
    let after = messages(&mut s, "Work");
    assert_eq!(after.len(), 3);
    let bodies = |v: &[Msg]| v.iter().map(|m| m.body.clone()).collect::<HashSet<_>>();
    assert!(
        bodies(&after) == bodies(&before),
        "a copy was processed again"
    );
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
}

#[test]
fn a_crash_after_append_then_a_flag_change_or_a_new_uidvalidity_leaves_one_copy() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();

    // 1. Crash right after the APPEND; a client then replaces the copy's flags.
    s.create("Flags").expect("create");
    append(
        &mut s,
        "Flags",
        &message(Kind::SignEnc, "stripped"),
        &[],
        None,
    );
    let url = d.url("Flags");
    crashed_once(state.path(), &[&url], "1");
    assert_eq!(messages(&mut s, "Flags").len(), 2, "original and copy");
    replace_flags(&mut s, "Flags");
    ok(&once(state.path(), &[&url]));
    let msgs = messages(&mut s, "Flags");
    assert_eq!(
        msgs.len(),
        1,
        "one copy: {:?}",
        msgs.iter().map(|m| m.uid).collect::<Vec<_>>()
    );
    assert!(done_in_body(&msgs[0]));
    assert_eq!(messages(&mut s, ARCHIVE).len(), 1);

    // 2. Crash right after the APPEND; then the mailbox is restored in another order with a
    //    new UIDVALIDITY (the original first, an unrelated message, the copy, a plain one).
    s.create("Vx").expect("create");
    append(&mut s, "Vx", &message(Kind::Plain, "vx plain"), &[], None);
    append(&mut s, "Vx", &message(Kind::SignEnc, "vx crash"), &[], None);
    let url = d.url("Vx");
    crashed_once(state.path(), &[&url], "1");
    let m = messages(&mut s, "Vx");
    assert_eq!(m.len(), 3);
    let (orig, copy) = (m[1].clone(), m[2].clone());
    let unrelated = Msg {
        body: message(Kind::Plain, "vx unrelated"),
        ..m[0].clone()
    };
    recreate(&mut s, "Vx", &[orig, unrelated, copy, m[0].clone()]);
    ok(&once(state.path(), &[&url]));
    let vx = messages(&mut s, "Vx");
    let by = by_mid(&vx);
    assert_eq!(by.get(&mid("vx crash")).map(Vec::len), Some(1), "one copy");
    assert!(done_in_body(by[&mid("vx crash")][0]));
    assert_eq!(vx.len(), 3, "the copy, the unrelated and the plain message");
    assert_eq!(messages(&mut s, ARCHIVE).len(), 2);
}

/// Whether `m` is a processed copy (it carries our status field and is decrypted).
fn done_in_body(m: &Msg) -> bool {
    m.header("X-Smime-Status")
        .is_some_and(|v| v.contains("encryption=decrypted"))
}

#[test]
fn an_unsure_move_is_settled_by_the_archive_and_identical_or_unnamed_copies_are_found_again() {
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();

    // 1. Stopped after the intent was marked for archiving but before the MOVE; a client
    //    then deletes the original. The archive does not hold it, so the client's action
    //    wins: the copy goes too (nothing comes back that the user deleted).
    s.create("Del").expect("create");
    append(&mut s, "Del", &message(Kind::SignEnc, "deleted"), &[], None);
    let url = d.url("Del");
    crashed_once(state.path(), &[&url], "marked");
    assert_eq!(messages(&mut s, "Del").len(), 2);
    s.select("Del").expect("select");
    s.uid_store("1", "+FLAGS (\\Deleted)").expect("store");
    s.uid_expunge("1").expect("expunge");
    ok(&once(state.path(), &[&url]));
    assert!(
        messages(&mut s, "Del").is_empty(),
        "the deleted message came back"
    );
    assert!(messages(&mut s, ARCHIVE).is_empty());

    // 2. Two identical originals, and one without a Message-ID: stopped with their copies
    //    appended, then the mailbox restored with a new UIDVALIDITY. Each original gets
    //    exactly one copy.
    s.create("Twin").expect("create");
    let twin = message(Kind::SignEnc, "twin");
    let unnamed: Vec<u8> = String::from_utf8(message(Kind::SignEnc, "unnamed"))
        .unwrap()
        .replace(&format!("Message-ID: {}\r\n", mid("unnamed")), "")
        .into_bytes();
    assert!(!String::from_utf8_lossy(&unnamed).contains("Message-ID"));
    for m in [&twin, &twin, &unnamed] {
        append(&mut s, "Twin", m, &[], None);
    }
    let url = d.url("Twin");
    crashed_once(state.path(), &[&url], "before-move");
    let before = messages(&mut s, "Twin");
    assert_eq!(before.len(), 6, "three originals and three copies");
    recreate(&mut s, "Twin", &before);
    ok(&once(state.path(), &[&url]));
    let after = messages(&mut s, "Twin");
    assert_eq!(after.len(), 3, "one copy each");
    assert!(after.iter().all(done_in_body));
    assert_eq!(
        after
            .iter()
            .filter(|m| m.header("Subject").as_deref() == Some("twin"))
            .count(),
        2
    );
    assert_eq!(messages(&mut s, ARCHIVE).len(), 3);
}

/// A server that cannot check the password for now (its password database is down) answers
/// `NO [UNAVAILABLE]` (RFC 5530): a temporary failure (75, retried), not a wrong password
/// (77, which stops the daemon for good).
#[test]
fn a_temporary_authentication_failure_is_75_not_77() {
    let d = Dovecot::start(Opts {
        tempfail_user: true,
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let url = d.url("INBOX").replacen("alice@", "tempfail@", 1);
    let out = watcher(state.path(), &[&url, "--once"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("UNAVAILABLE"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");
}

/// One copy the server refuses (over quota) does not hold up the others: the batch's
/// MULTIAPPEND (all or none) is sent again one copy at a time; the refused one's original
/// stays as it is, is left for retry (75 with --once), and is done once there is room.
#[test]
fn a_copy_over_quota_is_left_for_retry_and_the_others_go_on() {
    let d = Dovecot::start(Opts {
        quota: true,
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let p = pki();
    let line = "a long line of the large message, repeated to make it big.\r\n";
    let big_body = encrypt_to(
        &[&p.bob],
        &["-aes256", "-binary"],
        &sample_entity(&line.repeat(60 * 1024 / line.len())),
    );
    append_n(&mut s, Kind::SignEnc, "small", 2, &[]);
    let big = crlf(
        &[
            headers("Alice <alice@example.org>", "bob@example.org", "big").as_bytes(),
            &big_body,
        ]
        .concat(),
    );
    append(&mut s, "INBOX", &big, &["\\Seen"], None);
    append_n(&mut s, Kind::SignEnc, "later", 2, &[]);
    drop(s);
    // Room for the four small copies (a few KB), not for the big one (about 60 KB).
    d.set_quota(Some(d.usage() / 1024 + 20));
    let out = once(state.path(), &[&d.url("INBOX")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("1 message(s) left in place"), "{err}");
    let mut s = d.client();
    let inbox = messages(&mut s, "INBOX");
    let copies = inbox.iter().filter(|m| m.has_flag(KEYWORD)).count();
    assert_eq!(copies, 4, "the four small ones are done");
    assert_eq!(
        messages(&mut s, ARCHIVE).len(),
        4,
        "their originals archived"
    );
    let waiting: Vec<&Msg> = inbox.iter().filter(|m| !m.has_flag(KEYWORD)).collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0].header("Message-ID").as_deref(),
        Some(mid("big").as_str())
    );
    drop(s);
    // Refused again: the log of appended copies' digests does not grow with each try.
    let out = once(state.path(), &[&d.url("INBOX")]);
    assert_eq!(out.status.code(), Some(75));
    let logged: usize = walk_files(state.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "appended"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(logged, 5, "one line per copy tried");
    // Room again: the next run does it, once.
    d.set_quota(None);
    let out = once(state.path(), &[&d.url("INBOX")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let mut s = d.client();
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 5);
    assert!(
        inbox.iter().all(|m| m.has_flag(KEYWORD)),
        "every copy in place"
    );
    assert_eq!(messages(&mut s, ARCHIVE).len(), 5);
}

/// Without MOVE, an original is flagged \Deleted and expunged; a server may answer OK to both
/// and remove nothing (Dovecot without the `t` and `e` rights). That is no move: the original
/// beside its copy is reported (75) and tried again, never recorded as done.
#[test]
fn an_expunge_that_removes_nothing_is_not_taken_for_a_move() {
    let d = Dovecot::start(Opts {
        caps: Some("IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS"),
        acl: Some("INBOX user=alice lrwsip\n"),
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    append_n(&mut s, Kind::SignEnc, "kept", 1, &[]);
    let out = once(state.path(), &[&d.url("INBOX")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("after EXPUNGE"), "{err}");
    // A second run does not take it for done either, and copies nothing twice.
    let out = once(state.path(), &[&d.url("INBOX")]);
    assert_eq!(out.status.code(), Some(75));
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 2, "the original and its copy");
    assert_eq!(inbox.iter().filter(|m| m.has_flag(KEYWORD)).count(), 1);
    assert_eq!(
        messages(&mut s, ARCHIVE).len(),
        1,
        "copied to the archive once"
    );
}

/// A move the server refuses leaves the original and its copy side by side until it is allowed;
/// what a client does to the original meanwhile (reads it, answers it) is carried to the copy
/// before the original goes.
#[test]
fn flags_set_on_an_original_while_its_move_waits_go_to_its_copy() {
    let d = Dovecot::start(Opts {
        acl: Some("SMIME-Originals user=alice lrwstpe\n"),
        ..Opts::default()
    });
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    append_n(&mut s, Kind::SignEnc, "waits", 1, &["\\Flagged"]);
    // No right to insert into the archive: the move is refused, the copy waits.
    let out = once(state.path(), &[&d.url("INBOX")]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orig = messages(&mut s, "INBOX")
        .into_iter()
        .find(|m| !m.has_flag(KEYWORD))
        .expect("the original is still there");
    s.select("INBOX").expect("select");
    s.uid_store(orig.uid.to_string(), "+FLAGS (\\Seen \\Answered)")
        .expect("store");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(d.path().join("global-acl"), "").expect("acl");
    let out = once(state.path(), &[&d.url("INBOX")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 1, "only the copy is left");
    for f in ["\\Seen", "\\Answered", "\\Flagged", KEYWORD] {
        assert!(
            inbox[0].has_flag(f),
            "{f} on the copy: {:?}",
            inbox[0].flags
        );
    }
    assert_eq!(messages(&mut s, ARCHIVE).len(), 1);
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// INBOX in any case is INBOX (RFC 3501 §5.1): `--archive inbox` while watching INBOX would
/// move each original into the watched mailbox and process it again for ever. Refused as a
/// usage error before any connection.
#[test]
fn an_archive_that_is_the_watched_inbox_in_another_case_is_refused() {
    for (archive, url) in [
        ("inbox", "imap://alice@127.0.0.1:1/INBOX"),
        ("INBOX", "imap://alice@127.0.0.1:1/Inbox"),
        ("InBox", "imap://alice@127.0.0.1:1"),
        ("inbox/Sub", "imap://alice@127.0.0.1:1/INBOX%2FSub"),
    ] {
        let out = smimed()
            .args(["watch", "--once", "--archive", archive, url])
            .env("SMIMED_IMAP_PASSWORD", "x")
            .output()
            .expect("smimed");
        assert_eq!(
            out.status.code(),
            Some(64),
            "{archive} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Decrypted content may hold a NUL, which an IMAP literal may not (RFC 3501 §9, CHAR8):
/// Dovecot stored it as 0x80 and the copy was never recognised again, so a crash between the
/// APPEND and the MOVE gave a second copy, and the first was then rewritten as mail with
/// forged status fields. The copy is sent with 0x80 for NUL and found again.
#[test]
fn a_copy_holding_a_nul_is_recognised_after_a_crash() {
    let p = pki();
    let d = Dovecot::start(Opts::default());
    let state = tempfile::tempdir().expect("state");
    let mut s = d.client();
    let entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\0world\r\n";
    let enc = encrypt_to(&[&p.bob], &["-aes-256-cbc", "-binary"], entity);
    let msg = [
        headers("Alice <alice@example.org>", "bob@example.org", "nul").as_bytes(),
        enc.as_slice(),
    ]
    .concat();
    append(&mut s, "INBOX", &msg, &[], None);
    crashed_once(state.path(), &[&d.url("INBOX")], "1");
    assert_eq!(
        messages(&mut s, "INBOX").len(),
        2,
        "the copy next to its original"
    );
    ok(&once(state.path(), &[&d.url("INBOX")]));
    let inbox = messages(&mut s, "INBOX");
    assert_eq!(inbox.len(), 1, "one copy");
    assert_eq!(messages(&mut s, ARCHIVE).len(), 1);
    let body = String::from_utf8_lossy(&inbox[0].body).into_owned();
    assert!(body.contains("encryption=decrypted"), "{body}");
    assert!(body.contains("hello"), "{body}");
    let before = snapshot(&d);
    ok(&once(state.path(), &[&d.url("INBOX")]));
    assert!(before == snapshot(&d));
}
