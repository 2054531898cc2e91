//! A private Dovecot for IMAP tests (components.md §1): a self-contained config in a SHORT
//! /tmp folder, `dovecot -F -c`, fresh ports, readiness = a successful LOGIN, mail uid nobody
//! when root, stopped with SIGTERM and waited for. Optional TLS (a test CA made with the openssl
//! CLI: `ca.pem`, server cert for DNS:localhost only) and OAuth2 (passdb oauth2 whose
//! introspection URL is a tiny python http.server: token `good-token` is alice's).
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";
pub const TOKEN: &str = "good-token";

pub type Session = imap::Session<imap::Connection>;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[derive(Default, Clone, Copy)]
pub struct Opts {
    pub tls: bool,
    pub oauth: bool,
    /// Overrides the capabilities advertised after login (`imap_capability`), to make the
    /// server look like one without IDLE, MOVE or UIDPLUS.
    pub caps: Option<&'static str>,
    /// A Sieve script for alice: enables Dovecot's LDA (`deliver`) with Pigeonhole's
    /// extprograms `filter`, whose programs live in `sieve-filters/` (components.md §2).
    pub sieve: Option<&'static str>,
    /// A user `tempfail` whose password check always fails for now (a checkpassword program
    /// exiting 111): Dovecot answers `NO [UNAVAILABLE]` (RFC 5530).
    pub tempfail_user: bool,
    /// Dovecot's quota plugin (maildir backend, 100 MB by default; see `set_quota`).
    pub quota: bool,
    /// The acl plugin with this global ACL file (lines such as `INBOX user=alice lrwsip`).
    pub acl: Option<&'static str>,
}

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    child: Option<Child>,
    oauth_server: Option<Child>,
}

/// The uid/gid mail is stored as: nobody when the tests run as root (Dovecot refuses uid 0),
/// else the invoking user, who then also runs all of Dovecot (components.md §1, non-root).
pub fn mail_ids() -> (u32, u32) {
    if is_root() {
        return (65534, 65534);
    }
    let id = |flag: &str| {
        let o = Command::new("id").arg(flag).output().expect("id");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn chown_tree(p: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("read_dir") {
            chown_tree(&e.expect("entry").path(), (uid, gid));
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn openssl_ok(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Test CA + server certificate for DNS:localhost (not for 127.0.0.1: host name checks fail).
fn make_tls(dir: &Path) {
    openssl_ok(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=smimed test IMAP CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        dir,
    );
    openssl_ok(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl_ok(
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "tls.crt",
        ],
        dir,
    );
}

const OAUTH_PY: &str = r#"
import http.server, json, sys, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, token):
        ok = token == sys.argv[2]
        body = json.dumps({"active": ok, "username": "alice"} if ok else {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        self.answer((form.get("token") or [""])[0])
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        self.answer(auth[7:] if auth.startswith("Bearer ") else "")
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("READY", flush=True)
s.serve_forever()
"#;

impl Dovecot {
    pub fn start(opts: Opts) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("dc.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let t = dir.path().to_path_buf();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for d in ["run", "state", "mail/alice/Maildir", "sieve-filters"] {
            std::fs::create_dir_all(t.join(d)).expect("mkdir");
        }
        if let Some(script) = opts.sieve {
            std::fs::write(t.join("mail/alice/.dovecot.sieve"), script).expect("sieve");
        }
        let root = is_root();
        let (muid, mgid) = mail_ids();
        chown_tree(&t.join("mail"), (muid, mgid));
        let users = format!(
            "alice:{{PLAIN}}{PASSWORD}::::{}/mail/alice::\n",
            t.display()
        );
        std::fs::write(t.join("users"), users).expect("users");
        let port = free_port();
        let tls_port = free_port();
        let proc_users = if root {
            "default_internal_user = dovecot\ndefault_login_user = dovenull\n".to_string()
        } else {
            let me = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
                .expect("utf8");
            let grp = String::from_utf8(Command::new("id").arg("-gn").output().expect("id").stdout)
                .expect("utf8");
            format!(
                "default_internal_user = {0}\ndefault_login_user = {0}\ndefault_internal_group = {1}\n\
                 service imap-login {{\n  chroot =\n}}\nservice anvil {{\n  chroot =\n}}\n",
                me.trim(),
                grp.trim()
            )
        };
        let uid_line = format!("override_fields = uid={muid} gid={mgid}");
        let mut mechs = "plain login".to_string();
        let mut oauth_passdb = String::new();
        let mut oauth_server = None;
        if opts.oauth {
            let hport = free_port();
            std::fs::write(t.join("oauth.py"), OAUTH_PY).expect("py");
            let mut child = Command::new("/usr/bin/python3")
                .arg(t.join("oauth.py"))
                .arg(hport.to_string())
                .arg(TOKEN)
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 http.server");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
                &mut line,
            )
            .expect("READY");
            assert!(line.starts_with("READY"), "{line}");
            oauth_server = Some(child);
            std::fs::write(
                t.join("oauth2.conf.ext"),
                format!(
                    "introspection_mode = post\nintrospection_url = http://127.0.0.1:{hport}/introspect\n\
                     username_attribute = username\nactive_attribute = active\nactive_value = true\n\
                     force_introspection = yes\n"
                ),
            )
            .expect("oauth conf");
            mechs.push_str(" xoauth2 oauthbearer");
            oauth_passdb = format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}/oauth2.conf.ext\n}}\n",
                t.display()
            );
        }
        let mut tempfail_passdb = String::new();
        if opts.tempfail_user {
            let script = t.join("tempfail.sh");
            std::fs::write(&script, "#!/bin/sh\nexit 111\n").expect("script");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            tempfail_passdb = format!(
                "passdb {{\n  driver = checkpassword\n  args = {}\n  username_filter = tempfail\n}}\n",
                script.display()
            );
        }
        let mut conf = format!(
            r#"instance_name = dovecot-test-{port}
base_dir = {t}/run
state_dir = {t}/state
protocols = imap
listen = 127.0.0.1
log_path = {t}/dovecot.log
{proc_users}
first_valid_uid = 0
first_valid_gid = 0
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechs}
{oauth_passdb}
{tempfail_passdb}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {t}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {t}/users
  {uid_line}
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
            t = t.display()
        );
        if opts.tls {
            make_tls(&t);
            conf.push_str(&format!(
                "ssl = yes\nssl_cert = <{t}/tls.crt\nssl_key = <{t}/tls.key\nssl_min_protocol = TLSv1.2\n\
                 service imap-login {{\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n",
                t = t.display()
            ));
        }
        if opts.sieve.is_some() {
            conf.push_str(&format!(
                r#"postmaster_address = postmaster@example.org
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_plugins = sieve_extprograms
  sieve_extensions = +vnd.dovecot.filter +editheader
  sieve_filter_bin_dir = {t}/sieve-filters
  sieve_filter_exec_timeout = 60s
}}
"#,
                t = t.display()
            ));
        }
        if let Some(acl) = opts.acl {
            std::fs::write(t.join("global-acl"), acl).expect("acl");
            conf.push_str(&format!(
                "mail_plugins = $mail_plugins acl\nprotocol imap {{\n  mail_plugins = $mail_plugins \
                 imap_acl\n}}\nplugin {{\n  acl = vfile:{}/global-acl\n}}\n",
                t.display()
            ));
        }
        if opts.quota {
            conf.push_str(
                "mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n  \
                 quota_rule = *:storage=100M\n}\n",
            );
        }
        if let Some(c) = opts.caps {
            conf.push_str(&format!("protocol imap {{\n  imap_capability = {c}\n}}\n"));
        }
        std::fs::write(t.join("dovecot.conf"), conf).expect("conf");
        let mut d = Dovecot {
            dir,
            port,
            tls_port,
            child: None,
            oauth_server,
        };
        d.run();
        d
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// alice's storage quota in KiB (None: the 100 MB default). Dovecot reads the users file
    /// again when its mtime changes: this waits for the next second first.
    pub fn set_quota(&self, kib: Option<u64>) {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let rule = kib.map_or(String::new(), |k| {
            format!("userdb_quota_rule=*:storage={k}K")
        });
        std::fs::write(
            self.path().join("users"),
            format!(
                "alice:{{PLAIN}}{PASSWORD}::::{}/mail/alice::{rule}\n",
                self.path().display()
            ),
        )
        .expect("users");
    }

    /// Bytes of mail in alice's Maildir (every folder), as the maildir quota counts them.
    pub fn usage(&self) -> u64 {
        fn walk(d: &Path) -> u64 {
            std::fs::read_dir(d).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        let p = e.path();
                        let name = e.file_name().to_string_lossy().into_owned();
                        if p.is_dir() {
                            walk(&p)
                        } else if (p.parent().and_then(|x| x.file_name()))
                            .is_some_and(|n| n == "cur" || n == "new")
                            && !name.starts_with("dovecot")
                        {
                            e.metadata().map_or(0, |m| m.len())
                        } else {
                            0
                        }
                    })
                    .sum()
            })
        }
        walk(&self.maildir())
    }

    pub fn ca_path(&self) -> PathBuf {
        self.path().join("ca.pem")
    }

    /// Starts the master (again) and waits until a LOGIN works.
    pub fn run(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(self.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .spawn()
            .expect("dovecot");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Ok(c) = imap::ClientBuilder::new("127.0.0.1", self.port)
                .mode(imap::ConnectionMode::Plaintext)
                .connect()
            {
                if let Ok(mut s) = c.login(USER, PASSWORD) {
                    let _ = s.logout();
                    return;
                }
            }
            if t0.elapsed() > Duration::from_secs(20) {
                panic!(
                    "dovecot not ready: {}",
                    std::fs::read_to_string(self.path().join("dovecot.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM the master and wait until it exited (its children follow).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        // Logged-in imap processes outlive the master's SIGTERM (seen with 2.3.19): end this
        // instance's leftovers, found by its unique process title, by pid.
        let prefix = format!("dovecot-test-{}/", self.port);
        for _ in 0..100 {
            let left = self.leftovers(&prefix);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn leftovers(&self, prefix: &str) -> Vec<u32> {
        let mut v = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return v;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                if cmd.starts_with(prefix.as_bytes()) {
                    v.push(pid);
                }
            }
        }
        v
    }

    /// A logged-in session of "another client" (plain IMAP on loopback).
    pub fn client(&self) -> Session {
        let c = imap::ClientBuilder::new("127.0.0.1", self.port)
            .mode(imap::ConnectionMode::Plaintext)
            .connect()
            .expect("connect");
        c.login(USER, PASSWORD).map_err(|(e, _)| e).expect("login")
    }

    /// `imap://alice@127.0.0.1:PORT/MAILBOX` (mailbox percent-encoded by the caller).
    pub fn url(&self, mailbox: &str) -> String {
        format!("imap://{USER}@127.0.0.1:{}/{mailbox}", self.port)
    }

    pub fn conf_path(&self) -> PathBuf {
        self.path().join("dovecot.conf")
    }

    /// alice's Maildir (INBOX), as the server stores it.
    pub fn maildir(&self) -> PathBuf {
        self.path().join("mail/alice/Maildir")
    }

    /// Delivers `msg` to alice with Dovecot's LDA (which runs the Sieve script of
    /// [`Opts::sieve`]).
    pub fn deliver(&self, msg: &[u8]) -> std::process::Output {
        super::run_with_stdin(
            Command::new("/usr/lib/dovecot/dovecot-lda")
                .arg("-c")
                .arg(self.conf_path())
                .args(["-d", USER, "-f", "alice@example.org"]),
            msg,
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.oauth_server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One message as the server has it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internal_date: Option<String>,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let prefix = format!("{}:", name.to_ascii_lowercase());
        head.split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Every message of a mailbox (wire name), without changing \Seen.
pub fn messages(s: &mut Session, wire: &str) -> Vec<Msg> {
    let mb = s.examine(wire).expect("examine");
    if mb.exists == 0 {
        return Vec::new();
    }
    let f = s
        .fetch("1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        .expect("fetch");
    // unsolicited FETCH responses (flag changes made by the watcher meanwhile) carry no body
    let mut v: Vec<Msg> = f
        .iter()
        .filter_map(|m| {
            Some(Msg {
                uid: m.uid?,
                flags: m.flags().iter().map(|f| f.to_string()).collect(),
                internal_date: m.internal_date().map(|d| d.to_rfc3339()),
                body: m.body()?.to_vec(),
            })
        })
        .collect();
    v.sort_by_key(|m| m.uid);
    v.dedup_by_key(|m| m.uid);
    v
}

/// APPENDs a message with flags and an INTERNALDATE; returns nothing (use messages()).
pub fn append(s: &mut Session, wire: &str, body: &[u8], flags: &[&str], date: Option<&str>) {
    let flags: Vec<imap::types::Flag<'_>> =
        flags.iter().map(|f| imap::types::Flag::from(*f)).collect();
    let mut cmd = s.append(wire, body);
    cmd.flags(flags);
    if let Some(d) = date {
        cmd.internal_date(chrono::DateTime::parse_from_rfc3339(d).expect("date"));
    }
    cmd.finish().expect("append");
}

pub fn write_private(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(path)
        .expect("open");
    f.write_all(data).expect("write");
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
