//! `smimed --agent SOCKET sendmail`: the copies are built by a running `smimed agent` (its keys,
//! trust and address book) and handed to the MTA by the client. What the recording MTA receives
//! decrypts and verifies with the openssl command line and gpgsm; Bcc copies name only their
//! recipient and the sender; failures keep the standalone exit codes and never reach the MTA;
//! certificates imported while the agent runs are used; without an agent (or with one that does
//! not speak the sendmail request) the client works alone with the same result.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::gpgsm::Gpgsm;
use common::outbound::*;
use common::pki::{pki, User, P12_PASS};
use common::{run_with_stdin, smimed, start_agent_with, Agent};

/// `smimed --trust ROOT --certs STORE --key ALICE agent --socket S`: alice's keys, the store of
/// `env`.
fn start_agent(env: &Env, socket: &Path) -> Agent {
    let p = pki();
    let mut c = smimed();
    c.arg("--trust")
        .arg(&p.root_path)
        .arg("--certs")
        .arg(&env.certs)
        .arg("--key")
        .arg(&p.alice.p12_path)
        .env("SMIMED_PASSPHRASE", P12_PASS);
    start_agent_with(c, socket)
}

fn socket_in(env: &Env) -> PathBuf {
    env.dir.path().join("run").join("agent.sock")
}

/// A sendmail environment with its recipients' certificates and an agent started on it.
fn env_with_agent() -> (Env, PathBuf, Agent) {
    let env = env_with_recipients();
    let socket = socket_in(&env);
    let agent = start_agent(&env, &socket);
    (env, socket, agent)
}

/// `smimed --agent S sendmail --mta MTA ARGS…` with no keys, trust or store of its own (and an
/// empty data folder), so that only the agent can sign or encrypt.
fn send_via(env: &Env, socket: &Path, args: &[&str], msg: &[u8]) -> Output {
    let mut c = smimed();
    c.arg("--agent")
        .arg(socket)
        .env("XDG_DATA_HOME", env.dir.path().join("client-data"))
        .arg("sendmail")
        .arg("--mta")
        .arg(&env.mta)
        .args(args);
    run_with_stdin(&mut c, msg)
}

/// Store with bob (RSA), carol (EC) and the intermediate; alice signs and is the sender.
fn env_with_recipients() -> Env {
    let p = pki();
    let env = Env::new();
    env.import(&[&p.bob.cert_path, &p.carol.cert_path, &p.intermediate_path]);
    env
}

/// Decrypts as `u`, verifies with openssl, returns the signed content.
fn read_as(u: &User, msg: &[u8]) -> Vec<u8> {
    let inner = openssl_decrypt(u, msg).unwrap_or_else(|| panic!("{} decrypts", u.name));
    openssl_verify(&inner)
}

#[test]
fn through_the_agent_copies_read_in_openssl_and_gpgsm_and_bcc_gets_its_own() {
    let p = pki();
    let (env, socket, _agent) = env_with_agent();
    let msg = client_message(
        "Alice <alice@example.org>",
        "bob@example.org",
        None,
        "Bcc: Carol <carol@example.org>\n",
        "Gr\u{fc}\u{df}e via the agent.\n",
    );
    let out = send_via(
        &env,
        &socket,
        &["-oi", "bob@example.org", "carol@example.org"],
        &msg,
    );
    assert_ok(&out);
    assert!(
        out.stderr.is_empty(),
        "no warning when the agent answers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2, "To copy + one Bcc copy");
    let users = [&p.alice, &p.bob, &p.carol, &p.erin];
    assert_eq!(rec[0].args, ["-oi", "--", "bob@example.org"]);
    assert_eq!(rec[1].args, ["-oi", "--", "carol@example.org"]);
    assert_eq!(recipient_names(&rec[0].message, &users), ["alice", "bob"]);
    assert_eq!(recipient_count(&rec[0].message), 2);
    assert_eq!(recipient_names(&rec[1].message, &users), ["alice", "carol"]);
    assert_eq!(recipient_count(&rec[1].message), 2);
    for r in &rec {
        let text = r.text();
        assert!(!text.to_ascii_lowercase().contains("\nbcc:"), "{text}");
        assert!(!text.contains("via the agent"), "no plaintext outside");
        assert_eq!(smime_type(&r.message), "enveloped-data");
    }
    for (u, r) in [(&p.alice, &rec[0]), (&p.bob, &rec[0]), (&p.carol, &rec[1])] {
        let content = String::from_utf8_lossy(&read_as(u, &r.message)).into_owned();
        assert!(
            content.contains("Gr=C3=BC=C3=9Fe via the agent."),
            "{content}"
        );
        assert!(content.contains("hp=\"cipher\""), "{content}");
        assert!(!content.to_ascii_lowercase().contains("bcc:"), "{content}");
    }
    assert!(openssl_decrypt(&p.carol, &rec[0].message).is_none());
    assert!(openssl_decrypt(&p.bob, &rec[1].message).is_none());
    // gpgsm (as bob, RSA) reads the To copy and verifies its detached signature.
    let g = Gpgsm::new(&[&p.bob]);
    let inner = g
        .decrypt(&pkcs7_der(&rec[0].message))
        .expect("gpgsm decrypts");
    let (signed, sig) = split_signed(&inner);
    assert!(g.verify_detached(&sig, &signed), "gpgsm verifies");
    assert!(
        g.decrypt(&pkcs7_der(&rec[1].message)).is_none(),
        "bob is not in carol's copy"
    );

    // Several clients at once.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (socket, msg) = (socket.clone(), msg.clone());
            let env_mta = env.mta.clone();
            let data = env.dir.path().join("client-data");
            std::thread::spawn(move || {
                let mut c = smimed();
                c.arg("--agent")
                    .arg(&socket)
                    .env("XDG_DATA_HOME", data)
                    .arg("sendmail")
                    .arg("--mta")
                    .arg(&env_mta)
                    .args(["bob@example.org", "carol@example.org"]);
                run_with_stdin(&mut c, &msg)
            })
        })
        .collect();
    for h in handles {
        assert_ok(&h.join().expect("thread"));
    }
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 8);
    for r in &rec {
        let who = if r.recipients() == ["carol@example.org"] {
            &p.carol
        } else {
            &p.bob
        };
        assert!(String::from_utf8_lossy(&read_as(who, &r.message)).contains("via the agent."));
    }
}

#[test]
fn agent_failures_keep_the_standalone_exit_codes_and_never_reach_the_mta() {
    let p = pki();
    let (env, socket, _agent) = env_with_agent();
    let to_dave = client_message(
        &p.alice.email,
        "bob@example.org, dave@example.org",
        None,
        "",
        "x\n",
    );
    let from_erin = client_message(&p.erin.email, "bob@example.org", None, "", "x\n");
    let cases: Vec<(Vec<&str>, &[u8], i32)> = vec![
        // dave has no certificate.
        (vec!["--encrypt", "always", "-t"], &to_dave, 65),
        (
            vec![
                "--encrypt=always",
                "--",
                "bob@example.org",
                "dave@example.org",
            ],
            &to_dave,
            65,
        ),
        // The agent has no identity for erin.
        (vec!["--sign", "always", "bob@example.org"], &from_erin, 78),
        // No recipients at all.
        (vec!["-oi"], &to_dave, 64),
    ];
    for (args, msg, code) in cases {
        let out = send_via(&env, &socket, &args, msg);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(env.take_recorded().is_empty(), "{args:?}: MTA not called");
        // Standalone with the same keys and store: the same code.
        let alone = env.sendmail(Some(&p.alice), &args, msg);
        env.assert_refused(&alone, code, &format!("{args:?} standalone"));
        if code == 65 {
            assert!(
                err.contains("dave@example.org") && !err.contains("bob@example.org"),
                "{err}"
            );
        }
    }
}

#[test]
fn a_certificate_imported_after_the_agent_started_is_used_and_a_removed_one_is_not() {
    let p = pki();
    let (env, socket, _agent) = env_with_agent();
    let msg = client_message(&p.alice.email, "erin@example.org", None, "", "to erin.\n");
    let args = ["--encrypt", "always", "erin@example.org"];
    let out = send_via(&env, &socket, &args, &msg);
    env.assert_refused(&out, 65, "erin has no certificate yet");

    env.import(&[&p.erin.cert_path]);
    assert_ok(&send_via(&env, &socket, &args, &msg));
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        recipient_names(&rec[0].message, &[&p.alice, &p.bob, &p.carol, &p.erin]),
        ["alice", "erin"]
    );
    assert!(String::from_utf8_lossy(&read_as(&p.erin, &rec[0].message)).contains("to erin."));

    let out = env.certs_cmd(&["remove", "erin@example.org"]);
    assert_ok(&out);
    let out = send_via(&env, &socket, &args, &msg);
    env.assert_refused(&out, 65, "a removed certificate is gone");
}

/// The client's own --key / --trust / --certs are not what the agent uses: said on stderr,
/// and the copies are still the agent's (encrypted to bob from the agent's store, not refused
/// for the empty store named here).
#[test]
fn client_options_the_agent_ignores_are_named() {
    let p = pki();
    let (env, socket, _agent) = env_with_agent();
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "to bob.\n");
    let plain = ["--encrypt", "always", "bob@example.org"];
    let out = send_via(&env, &socket, &plain, &msg);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("were not used"));
    let empty = env.dir.path().join("empty-store");
    let with_own = [
        "--certs",
        empty.to_str().expect("utf-8 path"),
        "--encrypt",
        "always",
        "bob@example.org",
    ];
    let out = send_via(&env, &socket, &with_own, &msg);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("were not used"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2);
    assert!(String::from_utf8_lossy(&read_as(&p.bob, &rec[1].message)).contains("to bob."));
}

/// One recorded copy: MTA arguments, smime-type, RecipientInfo owners, content as alice (the
/// sender) reads it.
type Summary = (Vec<String>, String, Vec<String>, Vec<u8>);

fn summary(rec: &[Recorded]) -> Vec<Summary> {
    let p = pki();
    rec.iter()
        .map(|r| {
            (
                r.args.clone(),
                smime_type(&r.message),
                recipient_names(&r.message, &[&p.alice, &p.bob, &p.carol, &p.erin]),
                read_as(&p.alice, &r.message),
            )
        })
        .collect()
}

#[test]
fn agent_standalone_and_fallback_give_the_same_copies() {
    let p = pki();
    let env = env_with_recipients();
    let msg = client_message(
        &p.alice.email,
        "bob@example.org",
        Some("carol@example.org"),
        "",
        "the same either way.\n",
    );
    let args = ["-oi", "-t"];

    // Standalone.
    assert_ok(&env.sendmail(Some(&p.alice), &args, &msg));
    let alone = summary(&env.take_recorded());
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].2, ["alice", "bob", "carol"]);

    // Through the agent.
    let socket = socket_in(&env);
    {
        let _agent = start_agent(&env, &socket);
        assert_ok(&send_via(&env, &socket, &args, &msg));
        let via = summary(&env.take_recorded());
        assert_eq!(via, alone, "agent and standalone: same copies");
    }

    // No agent on the socket (it was stopped): the client works alone, with a warning.
    let with_agent_flag: Vec<&str> = ["--agent", common::path_str(&socket)]
        .into_iter()
        .chain(args)
        .collect();
    let out = env.sendmail(Some(&p.alice), &with_agent_flag, &msg);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("working alone"), "{err}");
    assert_eq!(
        summary(&env.take_recorded()),
        alone,
        "fallback: same copies"
    );

    // An agent from before the sendmail request (it reads the request's first 8 bytes as an
    // impossible length and refuses): the client works alone too.
    let old = env.dir.path().join("old.sock");
    let listener = UnixListener::bind(&old).expect("bind");
    let fake = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut len = [0u8; 8];
        conn.read_exact(&mut len).expect("read");
        let text = b"message larger than the agent accepts";
        let mut reply = vec![1u8];
        reply.extend_from_slice(&65i32.to_be_bytes());
        reply.extend_from_slice(&(text.len() as u64).to_be_bytes());
        reply.extend_from_slice(text);
        let _ = conn.write_all(&reply);
        u64::from_be_bytes(len)
    });
    let with_old: Vec<&str> = ["--agent", common::path_str(&old)]
        .into_iter()
        .chain(args)
        .collect();
    let out = env.sendmail(Some(&p.alice), &with_old, &msg);
    assert_ok(&out);
    assert!(
        fake.join().expect("fake agent") > 1 << 56,
        "a versioned request is no valid length"
    );
    assert_eq!(
        summary(&env.take_recorded()),
        alone,
        "old agent: same copies"
    );

    // An agent that takes the request and gives no answer in time (frozen, or asking a slow
    // directory): a temporary failure, never a send made alone (it could go out in clear).
    let silent = env.dir.path().join("silent.sock");
    let listener = UnixListener::bind(&silent).expect("bind");
    let hold = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut sink = Vec::new();
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(3)));
        let _ = conn.read_to_end(&mut sink);
    });
    let with_silent: Vec<&str> = ["--agent", common::path_str(&silent)]
        .into_iter()
        .chain(args)
        .collect();
    let out = env.sendmail_env(
        Some(&p.alice),
        &with_silent,
        &msg,
        &[("SMIMED_TEST_AGENT_TIMEOUT_MS", "1000")],
    );
    env.assert_refused(&out, 75, "silent agent");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer in time"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hold.join().expect("silent agent");
}

#[test]
fn an_mta_that_exits_without_reading_keeps_its_exit_code() {
    let p = pki();
    let env = Env::new();
    // Larger than a pipe buffer: writing to an MTA that is gone fails with EPIPE.
    let body = "a line of a long message that the MTA does not read.\n".repeat(8000);
    let msg = client_message(&p.alice.email, "dave@example.org", None, "", &body);
    let socket = socket_in(&env);
    let _agent = start_agent(&env, &socket);
    for (mta, code) in [("/bin/true", 0), ("/bin/sh -c 'exit 3'", 3)] {
        for via_agent in [false, true] {
            let mut c = smimed();
            if via_agent {
                c.arg("--agent").arg(&socket);
            }
            c.args([
                "sendmail",
                "--sign",
                "never",
                "--encrypt",
                "never",
                "--mta",
                mta,
            ])
            .arg("--certs")
            .arg(&env.certs)
            .arg("dave@example.org");
            let out = run_with_stdin(&mut c, msg.as_slice());
            assert_eq!(
                out.status.code(),
                Some(code),
                "{mta} (agent: {via_agent}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn an_agent_that_dies_with_the_request_in_hand_makes_a_temporary_failure_and_nothing_is_sent() {
    let p = pki();
    // The client has no certificates of its own: working alone it would send bob's copy in clear.
    let (env, socket, mut agent) = env_with_agent();
    let msg = client_message(&p.alice.email, "bob@example.org", None, "", "SECRET\n");
    // A stopped agent still queues the connection; the client writes its request and waits.
    let pid = agent.0.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    let client = {
        let env_dir = env.dir.path().to_path_buf();
        let socket = socket.clone();
        let mta = env.mta.clone();
        let msg = msg.clone();
        std::thread::spawn(move || {
            let mut c = smimed();
            c.arg("--agent")
                .arg(&socket)
                .env("XDG_DATA_HOME", env_dir.join("client-data"))
                .env("SMIMED_TEST_AGENT_TIMEOUT_MS", "20000")
                .args(["sendmail", "--mta"])
                .arg(&mta)
                .arg("bob@example.org");
            run_with_stdin(&mut c, &msg)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    agent.0.kill().expect("kill -9 the agent");
    let _ = agent.0.wait();
    let out = client.join().expect("client");
    env.assert_refused(&out, 75, "agent killed with the request in hand");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gave no answer"), "{err}");
}
