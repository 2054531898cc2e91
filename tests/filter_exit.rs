//! `smimed filter` exit codes (sysexits.h) and the config file: 75 writing nothing when the
//! passphrase command fails, 78 for configuration errors (a key file others can read), 64 for a
//! bad command line, 0 with a message for everything else; config keys work like flags and flags
//! win.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::pki::{pki, P12_PASS};
use common::*;

fn encrypted_to_bob() -> Vec<u8> {
    let p = pki();
    let signed = sign_as(&p.alice, false, &[], &sample_entity("config test"));
    let enc = encrypt_to(&[&p.bob], &["-aes-256-gcm"], &signed);
    message("alice@example.org", "bob@example.org", "cfg", &enc)
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The environment `smimed()` gives, for a command that runs smimed through a wrapper (`sh`,
/// `setpriv`): no user config, a state folder of its own.
fn isolated(c: &mut std::process::Command) {
    c.env_remove("SMIMED_CONFIG")
        .env_remove("SMIMED_PASSPHRASE")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("XDG_STATE_HOME", state_home("process"));
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("smimed-fx.")
        .tempdir_in("/tmp")
        .unwrap()
}

#[test]
fn failing_passphrase_command_is_tempfail_with_empty_stdout() {
    let p = pki();
    let mut c = smimed();
    c.args([
        "--trust",
        path_str(&p.root_path),
        "--key",
        path_str(&p.bob.p12_path),
    ])
    .args(["--passphrase-command", "false", "filter"]);
    let out = run_with_stdin(&mut c, &encrypted_to_bob());
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing written, so procmail keeps the original"
    );
    // A message that needs no key is processed all the same.
    let plain = message(
        "a@example.org",
        "b@example.org",
        "plain",
        &sample_entity("hi"),
    );
    let out = run_with_stdin(&mut c, &plain);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(strip_our_status(&out.stdout), plain);
}

#[test]
fn a_pkcs12_without_password_never_asks_for_the_passphrase() {
    // A locked password store (a failing command) must not hold up a key that has none.
    let p = pki();
    let d = tmp();
    // Without a MAC too: OpenSSL's own parse then takes the empty password for none, which
    // does not decrypt PKCS#12-PBE (3DES, RC2) bags made with the empty one ("needs a
    // passphrase" before).
    for (name, extra) in [
        ("modern", &[][..]),
        ("legacy", &["-legacy"][..]),
        ("modern-nomac", &["-nomac"][..]),
        ("legacy-nomac", &["-legacy", "-nomac"][..]),
        (
            "3des-nomac",
            &[
                "-nomac",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
            ][..],
        ),
    ] {
        let path = d.path().join(format!("{name}.p12"));
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            path_str(&p.bob.key_path),
            "-in",
            path_str(&p.bob.cert_path),
            "-passout",
            "pass:",
        ];
        args.extend(extra);
        let der = openssl(&args, b"");
        write_mode(&path, &der, 0o600);
        let mut c = smimed();
        c.args(["--trust", path_str(&p.root_path), "--key", path_str(&path)])
            .args(["--passphrase-command", "echo asked >&2; false", "filter"]);
        let out = run_with_stdin(&mut c, &encrypted_to_bob());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {err}");
        assert!(!err.contains("asked"), "{name}: the command ran: {err}");
        assert_eq!(
            status_word(&status_of(&out.stdout), "encryption"),
            Some("decrypted")
        );
    }
}

#[test]
fn an_encrypted_pem_key_with_an_old_pkcs8_encryption_is_read() {
    // PBE-SHA1-RC2-40 (PKCS#8 v1), as older tools write it: the legacy provider's.
    let p = pki();
    let d = tmp();
    let key = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-RC2-40",
            "-provider",
            "legacy",
            "-provider",
            "default",
            "-in",
            path_str(&p.bob.key_path),
            "-passout",
            "pass:secret",
        ],
        b"",
    );
    assert!(String::from_utf8_lossy(&key).contains("BEGIN ENCRYPTED PRIVATE KEY"));
    let mut pem = key;
    pem.extend_from_slice(&std::fs::read(&p.bob.cert_path).expect("cert"));
    let path = d.path().join("bob-rc2.pem");
    write_mode(&path, &pem, 0o600);
    let mut c = smimed();
    c.args(["--trust", path_str(&p.root_path), "--key", path_str(&path)])
        .env("SMIMED_PASSPHRASE", "secret")
        .arg("filter");
    let out = run_with_stdin(&mut c, &encrypted_to_bob());
    assert_decrypted(&out);
    // A wrong passphrase is still a configuration error.
    c.env("SMIMED_PASSPHRASE", "wrong");
    let out = run_with_stdin(&mut c, &encrypted_to_bob());
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_key_and_its_certificate_may_be_two_files() {
    // As `openssl req -newkey … -keyout KEY -out CERT` leaves them; the certificate file may be
    // readable by others (it holds no secret), the key file may not.
    let p = pki();
    let msg = encrypted_to_bob();
    let run = |keys: &[&Path]| {
        let mut c = smimed();
        c.args(["--trust", path_str(&p.root_path)]);
        for k in keys {
            c.arg("--key").arg(k);
        }
        run_with_stdin(c.arg("filter"), &msg)
    };
    let (key, cert) = (p.bob.key_path.as_path(), p.bob.cert_path.as_path());
    for keys in [[key, cert], [cert, key]] {
        let out = run(&keys);
        assert_decrypted(&out);
    }
    // The key alone, or certificates alone, are still refused, naming the file.
    for (keys, says) in [
        (vec![key], "without its certificate"),
        (vec![cert], "holds no private key"),
        (
            vec![key, p.carol.cert_path.as_path()],
            "without its certificate",
        ),
    ] {
        let out = run(&keys);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn passphrase_command_and_file_work() {
    let p = pki();
    let d = tmp();
    let pf = d.path().join("pass");
    write_mode(&pf, format!("{P12_PASS}\n").as_bytes(), 0o600);
    let msg = encrypted_to_bob();
    for how in [
        vec![
            "--passphrase-command".to_string(),
            format!("echo {P12_PASS}"),
        ],
        vec!["--passphrase-file".to_string(), path_str(&pf).to_string()],
    ] {
        let mut c = smimed();
        c.args([
            "--authserv-id",
            "mx.test",
            "--trust",
            path_str(&p.root_path),
        ])
        .args(["--key", path_str(&p.bob.p12_path)])
        .args(&how)
        .arg("filter");
        let out = run_with_stdin(&mut c, &msg);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_words(&status_of(&out.stdout), "decrypted", "valid");
    }
    // A passphrase file others can read is refused like a key.
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = smimed();
    c.args([
        "--trust",
        path_str(&p.root_path),
        "--key",
        path_str(&p.bob.p12_path),
    ])
    .args(["--passphrase-file", path_str(&pf), "filter"]);
    let out = run_with_stdin(&mut c, &msg);
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stdout.is_empty());
}

#[test]
fn group_readable_key_is_a_config_error_saying_chmod_600() {
    let p = pki();
    let d = tmp();
    for (src, name) in [(&p.bob.p12_path, "bob.p12"), (&p.bob.key_path, "bob.key")] {
        let key = d.path().join(name);
        let mut data = std::fs::read(src).unwrap();
        if name.ends_with(".key") {
            // PEM identity: key and certificate chain in one file.
            data.extend(std::fs::read(&p.bob.chain_path).unwrap());
        }
        write_mode(&key, &data, 0o640);
        let mut c = smimed();
        c.args([
            "--trust",
            path_str(&p.root_path),
            "--key",
            path_str(&key),
            "filter",
        ])
        .env("SMIMED_PASSPHRASE", P12_PASS);
        let out = run_with_stdin(&mut c, &encrypted_to_bob());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(out.stdout.is_empty());
        // Once fixed, it works.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = run_with_stdin(&mut c, &encrypted_to_bob());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_words(&status_of(&out.stdout), "decrypted", "valid");
    }
}

#[test]
fn bad_command_line_is_usage() {
    for args in [
        vec!["--no-such-flag", "filter"],
        vec!["filter", "--bogus"],
        vec!["no-such-subcommand"],
        vec![],
    ] {
        let out = run_with_stdin(smimed().args(&args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(out.stdout.is_empty());
    }
    let out = run_with_stdin(smimed().arg("--help"), b"");
    assert_eq!(out.status.code(), Some(0));
}

/// An input file named on the command line that is missing or unreadable is 66 (EX_NOINPUT),
/// not a temporary failure that a caller would retry forever.
#[test]
fn a_missing_input_file_is_66() {
    let d = tmp();
    let store = d.path().join("store");
    let missing = d.path().join("missing.eml");
    for args in [
        vec!["filter", "--input", path_str(&missing)],
        vec!["filter", "--input", path_str(d.path())],
        vec![
            "--certs",
            path_str(&store),
            "certs",
            "import",
            path_str(&missing),
        ],
    ] {
        let out = run_with_stdin(smimed().args(&args), b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// `--input` may be a pipe (`--input <(cat msg)`, `/dev/stdin`) or a FIFO: read as a stream.
/// They failed with 75 (the message was read with seeks).
#[test]
fn input_from_a_pipe_or_a_fifo_is_processed() {
    let msg = message(
        "alice@example.org",
        "b@example.org",
        "pipe",
        &sign_as(&pki().alice, false, &[], &sample_entity("through a pipe")),
    );
    let out = run_with_stdin(
        smimed_trusting().args(["filter", "--input", "/dev/stdin"]),
        &msg,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_words(&status_of(&out.stdout), "none", "valid");
    let d = tmp();
    let fifo = d.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let (fifo, msg) = (fifo.clone(), msg.clone());
        std::thread::spawn(move || std::fs::write(fifo, msg).unwrap())
    };
    let out = run_with_stdin(
        smimed_trusting().args(["filter", "--input", path_str(&fifo)]),
        b"",
    );
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_words(&status_of(&out.stdout), "none", "valid");
}

#[test]
fn config_errors_are_78() {
    let d = tmp();
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "no_such_key = 1\n").unwrap();
    let unreadable_trust = d.path().join("trust.toml");
    std::fs::write(&unreadable_trust, "trust = [\"/nonexistent/ca.pem\"]\n").unwrap();
    // A sendmail key with a value no command accepts: found by any command reading the file.
    let bad_policy = d.path().join("policy.toml");
    std::fs::write(&bad_policy, "sign = \"sometimes\"\n").unwrap();
    // A file every user may write (it names the commands smimed runs), or one in a folder
    // every user may write (without the sticky bit).
    let everyones = d.path().join("everyone.toml");
    write_mode(&everyones, b"authserv_id = \"mx.test\"\n", 0o666);
    let open_folder = d.path().join("open");
    std::fs::create_dir(&open_folder).unwrap();
    let in_open = open_folder.join("smimed.toml");
    write_mode(&in_open, b"authserv_id = \"mx.test\"\n", 0o644);
    std::fs::set_permissions(&open_folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The same file reached through a symlink in a safe folder.
    let safe = d.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    let linked = safe.join("smimed.toml");
    std::os::unix::fs::symlink(&in_open, &linked).unwrap();
    // Signed, so that the trust anchors are needed (they load on first need).
    let msg = message(
        "alice@example.org",
        "b@example.org",
        "x",
        &sign_as(&pki().alice, false, &[], &sample_entity("x")),
    );
    for args in [
        vec!["--config", path_str(&bad), "filter"],
        vec!["--config", "/nonexistent/smimed.toml", "filter"],
        vec!["--config", path_str(&unreadable_trust), "filter"],
        vec!["--config", path_str(&bad_policy), "filter"],
        vec!["--config", path_str(&everyones), "filter"],
        vec!["--config", path_str(&in_open), "filter"],
        vec!["--config", path_str(&linked), "filter"],
        vec!["--authserv-id", "bad id;", "filter"],
    ] {
        let out = run_with_stdin(smimed().args(&args), &msg);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

/// A config file that does not parse is named with its line, never quoted: users of tools that
/// take inline secrets write `passphrase = "…"` or `password = "…"`, and the error goes to
/// procmail's log or the journal.
#[test]
fn a_config_error_never_quotes_the_line() {
    let d = tmp();
    for (text, line) in [
        (
            "authserv_id = \"mx.test\"\npassphrase = \"Hunter2-SECRET\"\n",
            2,
        ),
        (
            "[ldap]\nurl = \"ldap://127.0.0.1\"\npassword = \"Hunter2-SECRET\"\n",
            3,
        ),
        ("passphrase_file = \"Hunter2-SECRET\n", 1),
        ("[watch]\njobs = \"Hunter2-SECRET\"\n", 2),
    ] {
        let cfg = d.path().join("config.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = run_with_stdin(
            smimed().args(["--config", path_str(&cfg), "filter"]),
            b"From: a@example.org\r\n\r\nx\r\n",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(!err.contains("Hunter2"), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");
        assert!(err.contains("config.toml"), "{err}");
    }
    // Values in the wrong place, and URLs holding a password, read by the commands that use
    // them.
    for (text, args) in [
        (
            "[[imap]]\nurl = \"imaps://a@127.0.0.1/INBOX\"\nauth = \"Hunter2-SECRET\"\n",
            &["filter"][..],
        ),
        (
            "[[imap]]\nurl = \"imaps://a@127.0.0.1/INBOX\"\npassword_command = 7777123\n",
            &["filter"][..],
        ),
        (
            "[[imap]]\nurl = \"imaps://alice:Hunter2-SECRET@127.0.0.1:1/INBOX\"\n",
            &["watch", "--once"][..],
        ),
        (
            "[ldap]\nurl = \"ldap://admin:Hunter2-SECRET@127.0.0.1:1\"\n",
            &["certs", "lookup", "x@example.org"][..],
        ),
    ] {
        let cfg = d.path().join("config.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = run_with_stdin(smimed().args(["--config", path_str(&cfg)]).args(args), b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            !err.contains("Hunter2") && !err.contains("7777123"),
            "{err}"
        );
    }
}

#[test]
fn everything_else_exits_0_with_a_message() {
    let p = pki();
    for msg in [
        b"".to_vec(),
        b"garbage".to_vec(),
        encrypted_to_bob(),
        message("a@example.org", "b@example.org", "x", &sample_entity("x")),
    ] {
        // No key at all, someone else's key: still a message out.
        for key in [None, Some(&p.carol)] {
            let out = filter_as(key, &[], &msg);
            assert_eq!(out.status.code(), Some(0));
            assert_eq!(status_count(&out.stdout), 1);
        }
    }
}

#[test]
fn config_file_keys_work_like_flags_and_flags_win() {
    let p = pki();
    let d = tmp();
    let pf = d.path().join("pass");
    write_mode(&pf, P12_PASS.as_bytes(), 0o600);
    // Relative paths in the file are relative to the file's folder.
    std::fs::copy(&p.root_path, d.path().join("root.pem")).unwrap();
    let cfg = d.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "key = [\"{}\"]\npassphrase_file = \"pass\"\ntrust = [\"root.pem\"]\nauthserv_id = \"from.config\"\nmax_size = 100000000\n",
            path_str(&p.bob.p12_path)
        ),
    )
    .unwrap();
    let msg = encrypted_to_bob();

    // --config FILE
    let out = run_with_stdin(smimed().args(["--config", path_str(&cfg), "filter"]), &msg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    assert_eq!(ar_values(&out.stdout, "from.config").len(), 1);

    // $SMIMED_CONFIG
    let out = run_with_stdin(smimed().env("SMIMED_CONFIG", &cfg).arg("filter"), &msg);
    assert_words(&status_of(&out.stdout), "decrypted", "valid");

    // $XDG_CONFIG_HOME/smimed/config.toml
    let xdg = d.path().join("xdg");
    std::fs::create_dir_all(xdg.join("smimed")).unwrap();
    std::fs::write(
        xdg.join("smimed/config.toml"),
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("\"pass\"", &format!("\"{}\"", path_str(&pf)))
            .replace("\"root.pem\"", &format!("\"{}\"", path_str(&p.root_path))),
    )
    .unwrap();
    let out = run_with_stdin(smimed().env("XDG_CONFIG_HOME", &xdg).arg("filter"), &msg);
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    assert_eq!(ar_values(&out.stdout, "from.config").len(), 1);

    // Flags win: authserv-id, and a trust list on the command line replaces the file's.
    let out = run_with_stdin(
        smimed().args([
            "--config",
            path_str(&cfg),
            "--authserv-id",
            "from.flag",
            "filter",
        ]),
        &msg,
    );
    assert_eq!(ar_values(&out.stdout, "from.flag").len(), 1);
    assert!(ar_values(&out.stdout, "from.config").is_empty());
    let out = run_with_stdin(
        smimed().args([
            "--config",
            path_str(&cfg),
            "--trust",
            path_str(&p.untrusted_root_path),
            "filter",
        ]),
        &msg,
    );
    assert_words(&status_of(&out.stdout), "decrypted", "untrusted");
    // --max-size from the file and from a flag.
    let small = d.path().join("small.toml");
    std::fs::write(&small, "max_size = 10\n").unwrap();
    let out = run_with_stdin(
        smimed().args(["--config", path_str(&small), "filter"]),
        &msg,
    );
    let st = status_of(&out.stdout);
    // Not decrypted: an encrypted message over the limit never says encryption=none.
    assert_words(&st, "failed", "none");
    assert_eq!(status_word(&st, "reason"), Some("size-limit"), "{st}");
    assert!(
        out.stdout.ends_with(&msg[msg.len() - 200..]),
        "delivered as it was"
    );
    let out = run_with_stdin(
        smimed().args(["--config", path_str(&cfg), "--max-size", "10", "filter"]),
        &msg,
    );
    assert_eq!(
        status_word(&status_of(&out.stdout), "reason"),
        Some("size-limit")
    );
    // --passphrase-command on the command line beats the file's passphrase_file (regression:
    // the file's passphrase_file used to be tried first).
    let out = run_with_stdin(
        smimed().args([
            "--config",
            path_str(&cfg),
            "--passphrase-command",
            "false",
            "filter",
        ]),
        &msg,
    );
    assert_eq!(out.status.code(), Some(75));
}

#[test]
fn stdout_write_error_is_tempfail() {
    let p = pki();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut c = smimed();
    c.args(["--trust", path_str(&p.root_path), "filter"])
        .stdout(full);
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut sin = child.stdin.take().unwrap();
        sin.write_all(&message(
            "a@example.org",
            "b@example.org",
            "x",
            &sample_entity("x"),
        ))
        .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debug logging shows what happened, never the plaintext or the passphrase.
#[test]
fn verbose_logging_leaks_no_plaintext_or_passphrase() {
    let p = pki();
    let d = tmp();
    const PASS: &str = "Zq8-unguessable-Passphrase";
    let p12 = d.path().join("bob.p12");
    openssl(
        &[
            "pkcs12",
            "-export",
            "-inkey",
            path_str(&p.bob.key_path),
            "-in",
            path_str(&p.bob.cert_path),
            "-passout",
            &format!("pass:{PASS}"),
            "-out",
            path_str(&p12),
        ],
        b"",
    );
    std::fs::set_permissions(&p12, std::fs::Permissions::from_mode(0o600)).unwrap();
    const SECRET: &str = "Top-Secret-Plaintext-Marker";
    let enc = encrypt_to(&[&p.bob], &["-aes256"], &sample_entity(SECRET));
    let msg = message("alice@example.org", "bob@example.org", "log", &enc);
    for how in [
        vec!["--passphrase-command", "echo Zq8-unguessable-Passphrase"],
        vec![],
    ] {
        let mut c = smimed();
        c.args([
            "-vv",
            "--trust",
            path_str(&p.root_path),
            "--key",
            path_str(&p12),
        ])
        .args(&how)
        .arg("filter")
        .env("RUST_LOG", "trace")
        .env("SMIMED_PASSPHRASE", PASS);
        let out = run_with_stdin(&mut c, &msg);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains(SECRET));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.is_empty(), "-vv logs something");
        assert!(!err.contains(SECRET), "{err}");
        assert!(!err.contains(PASS), "{err}");
    }
}

/// The ContentInfos of a PFX's AuthenticatedSafe (a PFX without MAC, whose authSafe is
/// `data`): PFX ::= SEQUENCE { version, authSafe ContentInfo, macData OPTIONAL }.
fn authsafe_elements(pfx: &[u8]) -> Vec<Vec<u8>> {
    let (_, pfx_c, _) = der::tlv(pfx, 0);
    let (_, _, ver_end) = der::tlv(pfx, pfx_c);
    let (_, ci_c, _) = der::tlv(pfx, ver_end); // ContentInfo
    let (_, _, oid_end) = der::tlv(pfx, ci_c); // contentType
    let (_, exp_c, _) = der::tlv(pfx, oid_end); // [0]
    let (_, os_c, _) = der::tlv(pfx, exp_c); // OCTET STRING
    let (_, seq_c, seq_end) = der::tlv(pfx, os_c); // AuthenticatedSafe
    let mut out = Vec::new();
    let mut pos = seq_c;
    while pos < seq_end {
        let (_, _, end) = der::tlv(pfx, pos);
        out.push(pfx[pos..end].to_vec());
        pos = end;
    }
    out
}

#[test]
fn every_key_of_a_pkcs12_with_several_is_loaded() {
    // Windows merges a signing and an encryption key into one PFX (certutil -mergepfx, an
    // export of several certificates); only the first key was loaded, and mail to the other
    // said not-encrypted-to-our-keys. Two openssl exports (no password, no MAC) are merged
    // here into one PFX holding bob's RSA key and his newer EC key.
    let p = pki();
    let d = tmp();
    let export = |u: &common::pki::User| {
        openssl(
            &[
                "pkcs12",
                "-export",
                "-inkey",
                path_str(&u.key_path),
                "-in",
                path_str(&u.cert_path),
                "-keypbe",
                "NONE",
                "-certpbe",
                "NONE",
                "-nomac",
                "-passout",
                "pass:",
            ],
            b"",
        )
    };
    // And a third identity whose certificate says CA:TRUE (`openssl req -x509`'s default for a
    // self-signed one): its key was dropped as if the certificate were the chain's.
    let (ss_key, ss_cert) = (d.path().join("ss.key"), d.path().join("ss.pem"));
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
            "/CN=bob self-signed/emailAddress=bob@example.org",
            "-keyout",
            path_str(&ss_key),
            "-out",
            path_str(&ss_cert),
        ],
        b"",
    );
    let self_signed = common::pki::User {
        key_path: ss_key,
        cert_path: ss_cert,
        ..p.bob.clone()
    };
    // Two merged files: bob's RSA and EC keys; bob's RSA key and the self-signed one.
    let merged = |users: &[&common::pki::User], name: &str| {
        let mut safes = Vec::new();
        for u in users {
            safes.extend(authsafe_elements(&export(u)));
        }
        let authsafe = der::encode(0x30, &safes.concat());
        let content_info = der::encode(
            0x30,
            &[
                &[
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
                ][..],
                &der::encode(0xa0, &der::encode(0x04, &authsafe)),
            ]
            .concat(),
        );
        let pfx = der::encode(0x30, &[&[0x02, 0x01, 0x03][..], &content_info].concat());
        let path = d.path().join(name);
        write_mode(&path, &pfx, 0o600);
        // openssl reads the merged file (and sees both keys)
        let listed = openssl(
            &[
                "pkcs12",
                "-in",
                path_str(&path),
                "-passin",
                "pass:",
                "-nodes",
                "-nocerts",
            ],
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&listed)
                .matches("PRIVATE KEY-----")
                .count(),
            4,
            "two keys"
        );
        path
    };
    let both = merged(&[&p.bob, &p.bob_renewed], "both.p12");
    let with_ca_flag = merged(&[&p.bob, &self_signed], "with-ca-flag.p12");
    for (name, path, to) in [
        ("rsa", &both, &p.bob),
        ("ec", &both, &p.bob_renewed),
        ("rsa", &with_ca_flag, &p.bob),
        ("self-signed", &with_ca_flag, &self_signed),
    ] {
        let signed = sign_as(&p.alice, false, &[], &sample_entity("either key"));
        let enc = encrypt_to(&[to], &["-aes-256-gcm"], &signed);
        let msg = message("alice@example.org", "bob@example.org", "two keys", &enc);
        let mut c = smimed();
        c.args([
            "--trust",
            path_str(&p.root_path),
            "--key",
            path_str(path),
            "filter",
        ]);
        let out = run_with_stdin(&mut c, &msg);
        assert_eq!(
            status_word(&status_of(&out.stdout), "encryption"),
            Some("decrypted"),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A key renewed with the same key has two certificates: mail to either decrypts, with the
/// key and both certificates in one PEM file, or as three `--key` files (the second certificate
/// file is no "file without a key").
#[test]
fn a_key_with_two_certificates_decrypts_mail_to_either() {
    let p = pki();
    let d = tmp();
    let old = d.path().join("old.pem");
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&p.bob.key_path),
            "-days",
            "30",
            "-subj",
            "/CN=bob before renewal/emailAddress=bob@example.org",
            "-out",
            path_str(&old),
        ],
        b"",
    );
    let one_file = d.path().join("all.pem");
    let pem = [
        std::fs::read(&p.bob.key_path).unwrap(),
        std::fs::read(&p.bob.cert_path).unwrap(),
        std::fs::read(&old).unwrap(),
    ]
    .concat();
    write_mode(&one_file, &pem, 0o600);
    let to_old = {
        let signed = sign_as(
            &p.alice,
            false,
            &[],
            &sample_entity("to the old certificate"),
        );
        let enc = openssl(
            &[
                "cms",
                "-encrypt",
                "-aes-256-cbc",
                "-outform",
                "SMIME",
                path_str(&old),
            ],
            &signed,
        );
        message("alice@example.org", "bob@example.org", "old", &enc)
    };
    let to_new = encrypted_to_bob();
    let key_sets: [&[&Path]; 2] = [&[&one_file], &[&p.bob.key_path, &p.bob.cert_path, &old]];
    for keys in key_sets {
        for (name, msg) in [("old", &to_old), ("new", &to_new)] {
            let mut c = smimed();
            c.args(["--trust", path_str(&p.root_path)]);
            for k in keys {
                c.arg("--key").arg(k);
            }
            let out = run_with_stdin(c.arg("filter"), msg);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{keys:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                status_word(&status_of(&out.stdout), "encryption"),
                Some("decrypted"),
                "{name}, {keys:?}"
            );
        }
    }
}

/// A folder given as a key or passphrase file is a configuration error (78), not a temporary
/// one: procmail would defer the message again and again. A PEM key file whose text starts
/// with a '0' (0x30, as DER does) is still read as PEM.
#[test]
fn a_folder_as_key_is_78_and_a_pem_key_may_start_with_a_zero() {
    use std::os::unix::fs::PermissionsExt;
    let p = pki();
    let d = tmp();
    let msg = encrypted_to_bob();
    let folder = d.path().join("keys");
    std::fs::create_dir(&folder).unwrap();
    let zero = d.path().join("zero.pem");
    let pem = [
        b"0 bob's mail key\n".as_slice(),
        &std::fs::read(&p.bob.key_path).unwrap(),
        &std::fs::read(&p.bob.cert_path).unwrap(),
    ]
    .concat();
    std::fs::write(&zero, pem).unwrap();
    std::fs::set_permissions(&zero, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        let mut c = smimed();
        c.args(["--trust", path_str(&p.root_path)]).args(args);
        run_with_stdin(c.arg("filter"), &msg)
    };
    for args in [
        vec!["--key", path_str(&folder)],
        vec![
            "--key",
            path_str(&p.bob.p12_path),
            "--passphrase-file",
            path_str(&folder),
        ],
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains("is a folder"), "{err}");
    }
    let out = run(&["--key", path_str(&zero)]);
    assert_decrypted(&out);
}

/// The run exited 0 and decrypted the message.
fn assert_decrypted(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status_word(&status_of(&out.stdout), "encryption"),
        Some("decrypted")
    );
}

#[test]
fn output_file_is_private_atomic_and_never_written_through_a_symlink() {
    // Under umask 022 a plain create would leave the decrypted text readable by everyone, and
    // would write it into whatever file a symlink at the path names.
    let p = pki();
    let d = tmp();
    let victim = d.path().join("victim");
    write_mode(&victim, b"not yours\n", 0o644);
    let out_path = d.path().join("out.eml");
    std::os::unix::fs::symlink(&victim, &out_path).unwrap();
    let pf = d.path().join("pass");
    write_mode(&pf, format!("{P12_PASS}\n").as_bytes(), 0o600);
    let mut c = std::process::Command::new("sh");
    c.args(["-c", "umask 022; exec \"$0\" \"$@\""])
        .arg(smimed_bin())
        .args(["--trust", path_str(&p.root_path)])
        .args(["--key", path_str(&p.bob.p12_path)])
        .args(["--passphrase-file", path_str(&pf)])
        .args(["filter", "--output", path_str(&out_path)]);
    isolated(&mut c);
    let out = run_with_stdin(&mut c, &encrypted_to_bob());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours\n");
    let m = std::fs::symlink_metadata(&out_path).unwrap();
    assert!(m.file_type().is_file(), "the symlink is replaced");
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let written = std::fs::read(&out_path).unwrap();
    assert_words(&status_of(&written), "decrypted", "valid");
    // Only the two files and the passphrase: no temporary file left beside them.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
    // A path that can never be a file (a folder, a name under a regular file): 73, not the
    // 75 that has an MDA retry for ever.
    for bad in [d.path().to_path_buf(), victim.join("below")] {
        let out = run_with_stdin(
            smimed_trusting().args(["filter", "--output", path_str(&bad)]),
            &encrypted_to_bob(),
        );
        assert_eq!(out.status.code(), Some(73), "{}", bad.display());
    }
    // A device is written into as it is.
    let out = run_with_stdin(
        smimed_trusting().args(["filter", "--output", "/dev/null"]),
        &encrypted_to_bob(),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_tempfail_stays_75_when_stderr_is_a_closed_pipe() {
    // The error line cannot be written (EPIPE): the exit code the MDA acts on must not become a
    // panic's 101.
    use std::io::Write;
    use std::process::Stdio;
    let p = pki();
    let mut child = smimed()
        .args(["--trust", path_str(&p.root_path)])
        .args(["--key", path_str(&p.bob.p12_path)])
        .args(["--passphrase-command", "false", "filter"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&encrypted_to_bob()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert!(out.stdout.is_empty());
}

#[test]
fn an_output_in_a_folder_nobody_may_write_is_73_and_the_file_stays() {
    // The output is written whole and private beside the old file; where that is impossible
    // the filter says so (73, which no retry mends) and the old file stays as it was: written
    // in place, it kept its mode (decrypted text readable by others) and was left half-written
    // on a full disk (input and output the same file: the message lost).
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: needs root to run smimed as nobody");
        return;
    }
    let d = tmp();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder = d.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let out_path = folder.join("out.eml");
    write_mode(&out_path, b"old\n", 0o666);
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = d.path().join("smimed");
    std::fs::copy(smimed_bin(), &bin).unwrap();
    let msg = message(
        "a@example.org",
        "b@example.org",
        "plain",
        &sample_entity("hi"),
    );
    let as_nobody = |output: &std::path::Path| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(&bin)
            .args(["filter", "--output", path_str(output)])
            .current_dir(d.path());
        isolated(&mut c);
        run_with_stdin(&mut c, &msg)
    };
    let out = as_nobody(&out_path);
    assert_eq!(
        out.status.code(),
        Some(73),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&out_path).unwrap(), b"old\n");
    // A new file there: 73 too (75 would have the MDA retry for ever).
    assert_eq!(as_nobody(&folder.join("new.eml")).status.code(), Some(73));
    // A folder nobody may write but not read (0333): the file is replaced; only the folder's
    // fsync is out of reach, which is no failure.
    let drop_box = d.path().join("drop");
    std::fs::create_dir(&drop_box).unwrap();
    let dropped = drop_box.join("out.eml");
    write_mode(&dropped, b"old\n", 0o666);
    std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o333)).unwrap();
    let out = as_nobody(&dropped);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status_count(&std::fs::read(&dropped).unwrap()) == 1);
}
