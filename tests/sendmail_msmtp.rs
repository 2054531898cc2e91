//! smimed sendmail in front of a real MTA: msmtp delivers each copy over SMTP to a capturing
//! server (aiosmtpd) started by the test on 127.0.0.1; the SMTP envelope of every copy names
//! exactly its recipients, and what arrives decrypts and verifies with openssl.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use common::outbound::*;
use common::path_str;
use common::pki::pki;

/// A byte-exact capturing SMTP server (recipe from the project's component notes).
const SINK: &str = r#"
import itertools, os, signal, sys
from aiosmtpd.controller import Controller
host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counter = itertools.count(1)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        base = os.path.join(outdir, "%04d" % next(counter))
        with open(base + ".env", "w") as f:
            f.write("".join(l + "\n" for l in [envelope.mail_from] + envelope.rcpt_tos))
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK stored"
sigs = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
ctl = Controller(Handler(), hostname=host, port=port)
ctl.start()
print("READY", port, flush=True)
signal.sigwait(sigs)
ctl.stop()
"#;

struct Sink {
    child: Child,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // SIGTERM to the sink we started, then reap it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn msmtp_delivers_each_copy_with_its_own_envelope() {
    let p = pki();
    let env = Env::new();
    env.import(&[&p.bob.cert_path, &p.carol.cert_path, &p.intermediate_path]);
    let out = env.dir.path().join("smtp");
    std::fs::create_dir_all(&out).expect("out");
    let script = env.write("sink.py", SINK.as_bytes());
    let port = free_port();
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), path_str(&out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sink");
    let stdout = child.stdout.take().expect("stdout");
    let _sink = Sink { child };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready");
    assert!(line.starts_with("READY"), "sink: {line}");

    let rc = env.write(
        "msmtprc",
        format!(
            "defaults\nsyslog off\naccount test\nhost 127.0.0.1\nport {port}\n\
             from alice@example.org\nauth off\ntls off\naccount default : test\n"
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mta = format!("msmtp -C {}", path_str(&rc));
    let msg = client_message(
        &p.alice.email,
        "bob@example.org",
        None,
        "Bcc: carol@example.org\n",
        "over smtp.\n",
    );
    let run = env.sendmail(
        Some(&p.alice),
        &["--mta", &mta, "-oi", "-f", "alice@example.org", "-t"],
        &msg,
    );
    assert_ok(&run);

    // Each record: the SMTP envelope (MAIL FROM, then every RCPT TO) and the DATA bytes.
    let mut got: Vec<(Vec<String>, Vec<u8>)> = Vec::new();
    for n in 1..=2 {
        let base = out.join(format!("{n:04}"));
        let envelope = std::fs::read_to_string(base.with_extension("env")).expect("envelope");
        let eml = std::fs::read(base.with_extension("eml")).expect("eml");
        got.push((envelope.lines().map(str::to_string).collect(), eml));
    }
    assert!(!out.join("0003.eml").exists());
    assert_eq!(got[0].0, ["alice@example.org", "bob@example.org"]);
    assert_eq!(got[1].0, ["alice@example.org", "carol@example.org"]);
    assert_eq!(
        recipient_names(&got[0].1, &[&p.alice, &p.bob, &p.carol]),
        ["alice", "bob"]
    );
    assert_eq!(
        recipient_names(&got[1].1, &[&p.alice, &p.bob, &p.carol]),
        ["alice", "carol"]
    );
    for ((_, eml), u) in got.iter().zip([&p.bob, &p.carol]) {
        let inner = openssl_decrypt(u, eml).expect("decrypts");
        assert!(String::from_utf8_lossy(&openssl_verify(&inner)).contains("over smtp."));
    }
}
