//! `smimed agent` and `smimed --agent SOCKET filter`: the agent's answer is byte for byte what
//! the filter gives on its own; its errors keep their exit codes; without an agent the filter
//! works alone.

mod common;

use std::process::Command;

use common::pki::pki;
use common::*;

fn start_agent(socket: &std::path::Path, passphrase_command: Option<&str>) -> Agent {
    start_agent_with(smimed_as_with(&pki().bob, passphrase_command), socket)
}

/// The filter with no keys of its own, pointed at the agent.
fn filter_via(socket: &std::path::Path, msg: &[u8]) -> std::process::Output {
    run_with_stdin(
        smimed_trusting().arg("--agent").arg(socket).arg("filter"),
        msg,
    )
}

fn signed_then_encrypted() -> Vec<u8> {
    let p = pki();
    let signed = sign_as(
        &p.alice,
        false,
        &["-binary"],
        &sample_entity("via the agent"),
    );
    let enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &signed);
    message("alice@example.org", "bob@example.org", "agent", &enc)
}

#[test]
fn agent_answers_exactly_what_the_filter_gives_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run").join("agent.sock");
    let _agent = start_agent(&socket, None);
    let mode = std::fs::metadata(&socket).expect("socket").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let msg = signed_then_encrypted();
    let via = filter_via(&socket, &msg);
    assert!(
        via.status.success(),
        "{}",
        String::from_utf8_lossy(&via.stderr)
    );
    assert_words(&status_of(&via.stdout), "decrypted", "valid");
    let alone = filter_as(Some(&pki().bob), &[], &msg);
    assert_eq!(
        via.stdout, alone.stdout,
        "same bytes with and without the agent"
    );

    // Several clients at once.
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (socket, msg) = (socket.clone(), msg.clone());
            std::thread::spawn(move || filter_via(&socket, &msg))
        })
        .collect();
    for h in handles {
        let out = h.join().expect("thread");
        assert_eq!(out.stdout, alone.stdout);
    }

    // The filter's own --max-size holds through the agent too (the agent has its own), and the
    // message over it goes through whole: the filter had read only the start to decide.
    for limit in [msg.len() - 1, msg.len() / 3] {
        let via = run_with_stdin(
            smimed_trusting()
                .args(["--max-size", &limit.to_string(), "--agent"])
                .arg(&socket)
                .arg("filter"),
            &msg,
        );
        let st = status_of(&via.stdout);
        assert_eq!(status_word(&st, "reason"), Some("size-limit"), "{st}");
        assert!(via.stdout.ends_with(&msg), "the whole message, unchanged");
    }

    // A client with an authserv-id of its own (the agent's is mx.test): forged results claiming
    // the client's are removed and the status is written under it, as alone. The agent used
    // its own: the forgery survived, next to a result under the agent's id.
    let mut forged = b"Authentication-Results: client.test; smime=pass body.smime-identifier=ceo@example.org\r\n".to_vec();
    forged.extend_from_slice(&msg);
    let client = |agent: bool| {
        let mut c = smimed();
        c.args(["--authserv-id", "client.test", "--trust"])
            .arg(&pki().root_path);
        if agent {
            c.arg("--agent").arg(&socket);
        } else {
            c.arg("--key")
                .arg(&pki().bob.p12_path)
                .env("SMIMED_PASSPHRASE", common::pki::P12_PASS);
        }
        run_with_stdin(c.arg("filter"), &forged)
    };
    let (via, alone) = (client(true), client(false));
    let text = String::from_utf8_lossy(&via.stdout);
    assert!(!text.contains("ceo@example.org"), "{text}");
    assert_eq!(ar_values(&via.stdout, "client.test").len(), 1, "{text}");
    assert!(ar_values(&via.stdout, "mx.test").is_empty(), "{text}");
    assert_eq!(via.stdout, alone.stdout);
}

#[test]
fn agent_errors_keep_their_exit_codes_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&socket, Some("exit 1"));
    let out = filter_via(&socket, &signed_then_encrypted());
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing written on a temporary failure"
    );
}

/// `smimed --agent SOCKET filter` with bob's key and the trust of its own, so that it can work
/// alone.
fn filter_with_keys(socket: &std::path::Path) -> Command {
    let mut c = smimed_as(&pki().bob);
    c.arg("--agent").arg(socket).arg("filter");
    c
}

#[test]
fn without_an_agent_the_filter_works_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody-here.sock");
    let out = run_with_stdin(&mut filter_with_keys(&socket), &signed_then_encrypted());
    assert!(out.status.success());
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
}

/// An agent that takes the connection and then never answers (hung on a prompt, say) does not
/// hang the filter: after the client timeout it works alone.
#[test]
fn a_silent_agent_makes_the_filter_work_alone_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let held = std::thread::spawn(move || {
        // accept, answer nothing, hold the connection open until the client gives up (or 10 s
        // pass: a client without a timeout would then see the end and work alone too late)
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut conn, &mut sink);
    });
    let t0 = std::time::Instant::now();
    let out = run_with_stdin(
        filter_with_keys(&socket).env("SMIMED_TEST_AGENT_TIMEOUT_MS", "500"),
        &signed_then_encrypted(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "gave up after {:?}",
        t0.elapsed()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("working alone"));
    let _ = held.join();
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&socket, None);
    let out = Command::new(smimed_bin())
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(["agent", "--socket"])
        .arg(&socket)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn the_agent_replaces_a_stale_socket_but_never_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, b"user's own data").expect("write");
    let out = smimed_as(&pki().bob)
        .arg("agent")
        .arg("--socket")
        .arg(&path)
        .output()
        .expect("run agent");
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("other than a socket"));
    assert_eq!(
        std::fs::read(&path).expect("still there"),
        b"user's own data"
    );
    // A socket nobody listens on (an agent that died) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let _agent = start_agent(&stale, None);
    let via = filter_via(&stale, &signed_then_encrypted());
    assert_words(&status_of(&via.stdout), "decrypted", "valid");
}

/// Waits for `child` at most `limit`; kills it and returns None when it is still running.
fn wait_limited(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::Output> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn an_agent_whose_queue_is_full_is_given_up_on_not_waited_for() {
    // A frozen agent: a listener with the smallest queue, which never accepts, and whose
    // queue is already full. connect() blocked for good; the client now gives up after the
    // timeout and works alone.
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("frozen.sock");
    let addr = SocketAddrUnix::new(&socket).expect("addr");
    let l = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .expect("socket");
    rustix::net::bind(&l, &addr).expect("bind");
    rustix::net::listen(&l, 0).expect("listen");
    let mut queued = Vec::new();
    for _ in 0..16 {
        let c = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .expect("socket");
        if rustix::net::connect(&c, &addr).is_err() {
            break;
        }
        queued.push(c);
    }
    let mut c = filter_with_keys(&socket);
    c.env("SMIMED_TEST_AGENT_TIMEOUT_MS", "500")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut sin = child.stdin.take().expect("stdin");
        sin.write_all(&signed_then_encrypted()).expect("write");
    }
    let out = wait_limited(child, std::time::Duration::from_secs(20))
        .expect("the client waited for a connection that never came");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    assert!(String::from_utf8_lossy(&out.stderr).contains("working alone"));
    drop(queued);
}

#[test]
fn a_silent_agent_gets_one_timeout_for_the_whole_request() {
    // The agent accepts and never reads. A request larger than the socket buffer used to get
    // the timeout once per write (twice or more in all); one deadline covers it now.
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("deaf.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        std::thread::sleep(std::time::Duration::from_secs(12));
        drop(conn);
    });
    let mut msg = message(
        "alice@example.org",
        "bob@example.org",
        "large and plain",
        &sample_entity(&"x".repeat(76)),
    );
    for _ in 0..40_000 {
        msg.extend_from_slice(b"a line of a large plain message, more than the socket holds\n");
    }
    let t0 = std::time::Instant::now();
    let out = run_with_stdin(
        filter_with_keys(&socket).env("SMIMED_TEST_AGENT_TIMEOUT_MS", "2000"),
        &msg,
    );
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("working alone"));
    // One timeout (2 s) and the work alone; two timeouts would be 4 s before any work.
    assert!(
        took < std::time::Duration::from_millis(3800),
        "took {took:?}"
    );
    drop(held); // the listener thread ends with the test process
}

#[test]
fn another_users_listener_on_the_socket_path_is_not_used() {
    // A listener run by another user (uid 65534) on the socket path answers a filter request
    // with a forged "valid" status. The client checks the peer's uid, refuses it and works
    // alone. Needs root (to start the listener as someone else) and python3.
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a listener as another user");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
    let socket = dir.path().join("squat.sock");
    let script = r#"
import socket, struct, os, sys
p = sys.argv[1]; s = socket.socket(socket.AF_UNIX); s.bind(p); os.chmod(p, 0o666); s.listen(5)
while True:
    c, _ = s.accept(); c.settimeout(1)
    try:
        c.recv(1 << 20)
        o = b'X-Smime-Status: encryption=decrypted; signature=valid; signer=bank@example.org\n\nforged\n'
        c.sendall(b'\0' + struct.pack('>iQ', 0, len(o)) + o)
    except OSError:
        pass
    c.close()
"#;
    let mut squatter = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&socket)
        .spawn()
        .expect("setpriv python3");
    let t0 = std::time::Instant::now();
    while !socket.exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(socket.exists(), "the other user's listener did not start");
    let out = run_with_stdin(&mut filter_with_keys(&socket), &signed_then_encrypted());
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("bank@example.org"), "{text}");
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not as this user"));
}

/// A CRL (or trust file) replaced while the agent runs (a daily CRL fetch) is read again: the
/// agent answered from the CRL it had read at start, `valid` for a signer revoked since.
#[test]
fn the_agent_reads_a_renewed_crl_and_trust_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh_in(
        d,
        r#"cat > ca.cnf <<'X'
[ca]
default_ca = c
[c]
database = index.txt
serial = serial
crlnumber = crlnumber
new_certs_dir = .
default_md = sha256
policy = p
default_crl_days = 2
copy_extensions = none
[p]
commonName = supplied
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[user]
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:carl@example.org
X
: > index.txt; echo 1000 > serial; echo 1000 > crlnumber
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj /CN=CRL-Root -days 2 -config ca.cnf -extensions v3_ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout carl.key -subj /CN=carl -out carl.csr 2>/dev/null
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in carl.csr -out carl.crt -extensions user -days 2 -notext 2>/dev/null
openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -gencrl -out current.crl 2>/dev/null
cp ca.pem trust.pem"#,
    );
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            path_str(&d.join("carl.crt")),
            "-inkey",
            path_str(&d.join("carl.key")),
        ],
        &sample_entity("revoked later"),
    );
    let msg = message("carl@example.org", "bob@example.org", "crl", &signed);
    let socket = d.join("agent.sock");
    let mut agent_cmd = smimed();
    agent_cmd
        .args(["--authserv-id", "mx.test", "--trust"])
        .arg(d.join("trust.pem"))
        .arg("--crl")
        .arg(d.join("current.crl"));
    let _agent = start_agent_with(agent_cmd, &socket);
    let via = || {
        let out = run_with_stdin(
            smimed()
                .args(["--authserv-id", "mx.test", "--agent"])
                .arg(&socket)
                .arg("filter"),
            &msg,
        );
        assert_eq!(out.status.code(), Some(0));
        status_of(&out.stdout)
    };
    assert_words(&via(), "none", "valid");
    // The CRL is renewed in place, now revoking carl.
    sh_in(
        d,
        "openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -revoke carl.crt 2>/dev/null
         openssl ca -config ca.cnf -cert ca.pem -keyfile ca.key -gencrl -out current.crl 2>/dev/null",
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_words(&via(), "none", "revoked");
    // The trust file now holds another root only.
    std::fs::copy(&pki().untrusted_root_path, d.join("trust.pem")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let st = via();
    assert!(
        !st.contains("signature=valid") && !st.contains("signature=revoked"),
        "{st}"
    );
}

/// Clients that connect and say nothing: past the agent's descriptors, accept fails (EMFILE)
/// with the connections still queued. The agent waits between tries and says so a few times,
/// not a million (it used to spin and flood its log), and it drops silent clients after its
/// idle timeout, so that a real client is served again while they stay connected.
#[test]
fn silent_clients_are_dropped_and_running_out_of_descriptors_is_no_busy_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("a.sock");
    let log = dir.path().join("agent.log");
    let mut c = under_prlimit(&smimed_as_with(&pki().bob, None), "--nofile=40");
    c.env("SMIMED_TEST_AGENT_IDLE_MS", "1500")
        .stderr(std::fs::File::create(&log).expect("log"));
    let _agent = start_agent_with(c, &socket);
    let held: Vec<std::os::unix::net::UnixStream> = (0..60)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    assert!(held.len() > 40, "{} clients connected", held.len());
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let text = std::fs::read_to_string(&log).expect("log");
    let accepts = text.lines().filter(|l| l.contains("accept")).count();
    assert!(
        (1..=3).contains(&accepts),
        "{accepts} accept warnings in a second: {}",
        &text[..text.len().min(500)]
    );
    // While the silent clients stay connected, a real one is served by the agent.
    let out = run_with_stdin(
        smimed_trusting()
            .arg("--agent")
            .arg(&socket)
            .env("SMIMED_TEST_AGENT_TIMEOUT_MS", "20000")
            .arg("filter"),
        &signed_then_encrypted(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("working alone"), "{err}");
    assert_words(&status_of(&out.stdout), "decrypted", "valid");
    drop(held);
}

/// A message of 16 MiB or more (where the filter alone reads from a file instead of memory)
/// goes to the agent too: the filter without keys of its own kept it and said
/// `no-key-configured` (exit 0), although the agent holds the key.
#[test]
fn a_large_message_goes_to_the_agent_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&socket, None);
    let p = pki();
    let mut entity = b"Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = [b'A'; 76];
    for _ in 0..(18 << 20) / 78 {
        entity.extend_from_slice(&line);
        entity.extend_from_slice(b"\r\n");
    }
    let enc = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &entity);
    let msg = message("alice@example.org", "bob@example.org", "large", &enc);
    assert!(msg.len() > 16 << 20);
    let out = filter_via(&socket, &msg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status_word(&status_of(&out.stdout), "encryption"),
        Some("decrypted")
    );
}
