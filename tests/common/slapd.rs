//! A private OpenLDAP slapd (mdb) on 127.0.0.1, started by the test that needs it
//! (components.md §4): plain LDAP with StartTLS, and LDAPS, both with a server certificate from
//! a TLS CA made here with the openssl CLI. Entries are loaded with slapadd before the start.
//! The schema adds Exchange's `proxyAddresses` as an auxiliary class, as a GAL has it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::free_port;
use super::sh_in;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "secret";

const EXCHANGE_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.99999.1.1 NAME 'smimedTestExchangeRecipient' SUP top AUXILIARY
  MAY proxyAddresses )
";

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    /// The CA of the server's TLS certificate (PEM).
    pub tls_ca: PathBuf,
    child: Child,
}

impl Slapd {
    /// `ldap://127.0.0.1:PORT` (StartTLS available on it).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// Starts slapd with `ldif` (entries below the suffix, which is made here). With
    /// `anonymous_reads` false, only bound users may read (anonymous may only bind).
    pub fn start(ldif: &str, anonymous_reads: bool) -> Slapd {
        Self::start_with(ldif, anonymous_reads, "")
    }

    /// [`Slapd::start`] with `database` directives added to the database section (a
    /// `sizelimit`, say).
    pub fn start_with(ldif: &str, anonymous_reads: bool, database: &str) -> Slapd {
        let mut dir = tempfile::Builder::new()
            .prefix("sld")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d_buf = dir.path().to_path_buf();
        let d = d_buf.as_path();
        std::fs::create_dir_all(d.join("db")).expect("db");
        std::fs::write(d.join("exchange.schema"), EXCHANGE_SCHEMA).expect("schema");
        // A TLS CA and a server certificate for 127.0.0.1 / localhost.
        sh_in(
            d,
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=ldap test TLS CA' \
               -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
               -keyout tlsca.key -out tlsca.pem 2>/dev/null
             openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key \
               -out server.csr 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > ext
             openssl x509 -req -in server.csr -CA tlsca.pem -CAkey tlsca.key -CAcreateserial \
               -days 2 -extfile ext -out server.pem 2>/dev/null",
        );
        let access = if anonymous_reads {
            "access to * by * read"
        } else {
            "access to * by users read by anonymous auth"
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {d}/exchange.schema\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             TLSCACertificateFile {d}/tlsca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             referral ldap://gc.invalid/\n\
             database mdb\n\
             maxsize 67108864\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {d}/db\n\
             index objectClass eq\n\
             index mail eq,sub\n\
             {database}\n\
             {access}\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("conf");
        let base = format!(
            "dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
             o: Example\ndc: example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n{ldif}"
        );
        std::fs::write(d.join("data.ldif"), base).expect("ldif");
        let st = Command::new("slapadd")
            .args(["-q", "-f"])
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .stderr(Stdio::piped())
            .output()
            .expect("slapadd (apt-get install slapd)");
        assert!(
            st.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        // Another test may take the same free port between free_port() and slapd's bind: that
        // slapd exits, and the port answers for the other one. Started again on other ports.
        let mut attempt = 0;
        let s = loop {
            attempt += 1;
            let (port, tls_port) = (free_port(), free_port());
            let child = Command::new("slapd")
                .args(["-d", "0", "-h"])
                .arg(format!(
                    "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
                ))
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .stderr(Stdio::null())
                .spawn()
                .expect("slapd");
            let mut s = Slapd {
                tls_ca: d.join("tlsca.pem"),
                dir,
                port,
                tls_port,
                child,
            };
            let t0 = Instant::now();
            let mut exited = false;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
                || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err()
            {
                if matches!(s.child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "slapd did not start"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            // Both ports answer: ours only if our slapd still runs.
            std::thread::sleep(Duration::from_millis(50));
            if !exited && matches!(s.child.try_wait(), Ok(None)) {
                break s;
            }
            assert!(attempt < 5, "slapd could not get free ports");
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tmp"));
        };
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An LDIF line `attr:: BASE64` for binary data.
pub fn b64_line(attr: &str, data: &[u8]) -> String {
    use base64::Engine;
    format!(
        "{attr}:: {}\n",
        base64::engine::general_purpose::STANDARD.encode(data)
    )
}
