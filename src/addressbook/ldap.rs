//! Certificates from an LDAP directory (the `[ldap]` table of the config file, or `--ldap URL`),
//! such as a corporate GAL (Active Directory, Exchange) or an OpenLDAP `inetOrgPerson` tree.
//!
//! For an address, one subtree search under the base DN with the configured filter (default
//! `(|(mail=%s)(proxyAddresses=smtp:%s))`, `%s` being the address escaped as RFC 4515 says),
//! asking for `userCertificate` (DER X.509, `;binary` or not) and `userSMIMECertificate` (a
//! PKCS#7 SignedData as Outlook publishes it, or DER). Certificates that are CAs complete the
//! paths of the entry's other certificates; whether a certificate is usable is decided by the
//! address book, as for every source.
//!
//! Invariants:
//! - Read-only; the address is always escaped into the filter (no filter injection).
//! - A bind password is never sent in clear to a host that is not a loopback address: such a
//!   configuration needs `ldaps://`, `starttls = true` or an explicit `insecure = true`.
//!   Anonymous searches may use plain `ldap://`: certificates are public, and a forged one
//!   still has to reach a trust anchor.
//! - A directory that cannot be asked (unreachable, timeout, busy) is a temporary failure
//!   (exit 75), never "no certificate": under `--encrypt auto` that would send in clear. A wrong
//!   configuration (base DN missing, credentials refused) is a configuration error (exit 78).
//! - An incomplete answer (more entries than read) is an error too, and a malformed one a
//!   temporary failure, never a panic.
//! - One deadline (`timeout`, at most [`MAX_TIMEOUT`]) covers a lookup: connecting, binding,
//!   searching and one retry.
//! - The connection is kept for the process (the agent's later lookups reuse it) and opened
//!   again once when it broke.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, LdapError, Scope, SearchOptions};
use openssl::x509::X509;
use serde::Deserialize;

use super::{Candidate, CertSource};
use crate::certs;
use crate::error::{Error, Kind, Result};
use crate::imap::account::SecretSource;

/// Default search filter: `mail`, and Exchange's `proxyAddresses` (`smtp:` aliases; the
/// primary address is `SMTP:`, which AD matches without regard to case). Directories that do
/// not know `proxyAddresses` evaluate that branch as undefined, so `mail` still matches.
pub const DEFAULT_FILTER: &str = "(|(mail=%s)(proxyAddresses=smtp:%s))";
/// Default seconds for one lookup (connecting, binding and searching together).
pub const DEFAULT_TIMEOUT: u64 = 10;
/// Longest lookup: below the time a client of `smimed agent` waits for a sendmail answer
/// ([`crate::agent::SENDMAIL_ANSWER_TIMEOUT`]), so that the agent's exit 75 reaches it.
pub const MAX_TIMEOUT: u64 = 25;
/// Entries read per lookup at most (an address names one person; more is a bad filter).
const SIZE_LIMIT: i32 = 20;
/// The attributes asked for; OpenLDAP returns `userCertificate;binary` for either name.
const ATTRS: [&str; 4] = [
    "userCertificate;binary",
    "userCertificate",
    "userSMIMECertificate;binary",
    "userSMIMECertificate",
];

/// The `[ldap]` table of the config file, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapFileConfig {
    pub url: Option<String>,
    pub base: Option<String>,
    pub filter: Option<String>,
    pub bind_dn: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub starttls: Option<bool>,
    pub ca: Option<PathBuf>,
    pub timeout: Option<u64>,
    pub insecure: Option<bool>,
}

/// A resolved directory configuration.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]` (without the base DN).
    pub url: String,
    pub host: String,
    pub base: String,
    pub filter: String,
    pub bind_dn: Option<String>,
    pub password: SecretSource,
    pub starttls: bool,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

impl LdapConfig {
    /// Checks and resolves the table (with `--ldap` / `--ldap-base` over `url` / `base`). None
    /// when no URL is configured. `expand` resolves file paths as the rest of the config does.
    pub fn resolve(
        file: &LdapFileConfig,
        url_flag: Option<&str>,
        base_flag: Option<&str>,
        expand: &dyn Fn(&std::path::Path) -> PathBuf,
    ) -> Result<Option<LdapConfig>> {
        let Some(raw) = url_flag.or(file.url.as_deref()) else {
            if base_flag.is_some() {
                return Err(Error::usage("--ldap-base needs --ldap URL (or [ldap] url)"));
            }
            return Ok(None);
        };
        let shown = crate::config::url_without_password(raw);
        let bad = |why: &str| Error::config(format!("LDAP URL {shown:?}: {why}"));
        let u = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let tls = match u.scheme() {
            "ldaps" => true,
            "ldap" => false,
            _ => return Err(bad("the scheme must be ldap:// or ldaps://")),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .to_string();
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL: use bind_dn and password_file or \
                 password_command in [ldap]",
            ));
        }
        // An RFC 4516 URL may carry the base DN as its path.
        let url_base = percent_encoding::percent_decode_str(u.path().trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| bad("the base DN is not UTF-8"))?
            .to_string();
        // Flags over the file: --ldap-base, then the base in an --ldap URL, then the file's
        // `base`, then the base in the file's `url`.
        let url_base = (!url_base.is_empty()).then_some(url_base);
        let from_flag_url = url_flag.and(url_base.clone());
        let base = base_flag
            .map(str::to_string)
            .or(from_flag_url)
            .or_else(|| file.base.clone())
            .or(url_base)
            .ok_or_else(|| {
                Error::config(
                    "LDAP: no base DN (give --ldap-base, base in [ldap], or ldap://host/BASE)",
                )
            })?;
        let filter = file
            .filter
            .clone()
            .unwrap_or_else(|| DEFAULT_FILTER.to_string());
        if !filter.contains("%s") || ldap3::parse_filter(filter.replace("%s", "x@y")).is_err() {
            return Err(Error::config(format!(
                "LDAP filter {filter:?}: must be a valid filter (RFC 4515) with %s for the address"
            )));
        }
        let starttls = file.starttls.unwrap_or(false);
        if tls && starttls {
            return Err(bad("starttls is for ldap://, not ldaps://"));
        }
        let password = SecretSource {
            command: file.password_command.clone(),
            file: file.password_file.as_deref().map(expand),
            env: None,
        };
        let has_password = password.command.is_some() || password.file.is_some();
        if file.bind_dn.is_some() != has_password {
            return Err(Error::config(
                "LDAP: bind_dn and one of password_file / password_command go together",
            ));
        }
        if has_password
            && !tls
            && !starttls
            && !crate::imap::account::is_loopback_host(&host)
            && !file.insecure.unwrap_or(false)
        {
            return Err(Error::config(format!(
                "LDAP: refusing to send the bind password in clear to {host}: use ldaps://, \
                 starttls = true, or insecure = true"
            )));
        }
        // ldap3 checks a TLS certificate against the URL's host as written, brackets and all:
        // an IPv6 literal never matches, and every lookup would fail as "unreachable".
        if (tls || starttls) && host.contains(':') {
            return Err(bad(
                "TLS to an IPv6 address literal is not supported (the certificate check would always fail): give the directory's host name",
            ));
        }
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        let bracketed = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Some(LdapConfig {
            url: format!("{}://{bracketed}{port}", u.scheme()),
            host,
            base,
            filter,
            bind_dn: file.bind_dn.clone(),
            password,
            starttls,
            ca: file.ca.as_deref().map(expand),
            timeout: Duration::from_secs(
                file.timeout
                    .unwrap_or(DEFAULT_TIMEOUT)
                    .clamp(1, MAX_TIMEOUT),
            ),
        }))
    }

    /// The filter for `addr`, the address escaped (RFC 4515). An internationalised domain is
    /// asked for in both forms (`(|F(user@bücher.example)F(user@xn--bcher-kva.example))`),
    /// whichever form the address was written in: a directory may store either.
    pub fn filter_for(&self, addr: &str) -> String {
        let one = |a: &str| self.filter.replace("%s", &ldap3::ldap_escape(a));
        let mut forms = vec![addr.to_string()];
        for other in [
            crate::address::with_ascii_domain(addr),
            crate::address::with_unicode_domain(addr),
        ] {
            if !forms.contains(&other) {
                forms.push(other);
            }
        }
        if forms.len() == 1 {
            one(addr)
        } else {
            let all: String = forms.iter().map(|a| one(a)).collect();
            format!("(|{all})")
        }
    }

    /// What identifies a connection that may be reused for this configuration.
    fn conn_key(&self) -> String {
        format!(
            "{} {} {} {:?}",
            self.url,
            self.starttls,
            self.bind_dn.as_deref().unwrap_or(""),
            self.ca
        )
    }
}

/// Open connections, kept for the process (one per configuration).
static CONNS: Mutex<Vec<(String, LdapConn)>> = Mutex::new(Vec::new());

/// The directory as a certificate source.
pub struct LdapSource {
    cfg: LdapConfig,
}

impl LdapSource {
    pub fn new(cfg: LdapConfig) -> LdapSource {
        LdapSource { cfg }
    }

    fn connect(&self, deadline: Instant) -> Result<LdapConn> {
        let cfg = &self.cfg;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(left(cfg, deadline)?)
            .set_starttls(cfg.starttls);
        if cfg.starttls || cfg.url.starts_with("ldaps:") {
            settings = settings.set_connector(crate::imap::conn::tls_connector_for(
                cfg.ca.as_deref(),
                "LDAP ca",
                &cfg.url,
            )?);
        }
        let mut conn = LdapConn::with_settings(settings, &cfg.url)
            .map_err(|e| unreachable(cfg, "connecting", &e))?;
        if let Some(dn) = &cfg.bind_dn {
            let pw = cfg.password.get()?;
            if pw.is_empty() {
                // RFC 4513 §5.1.2: a DN with an empty password is an unauthenticated bind.
                return Err(Error::config(format!(
                    "LDAP directory {}: the bind password is empty",
                    cfg.url
                )));
            }
            let r = conn
                .with_timeout(left(cfg, deadline)?)
                .simple_bind(dn, &pw)
                .map_err(|e| unreachable(cfg, "binding", &e))?;
            if r.rc != 0 {
                return Err(result_error(cfg, "bind", r.rc, &r.text));
            }
        }
        Ok(conn)
    }

    /// One search on `conn`; Err((true, _)) when the connection broke (worth one new try).
    fn search(
        &self,
        conn: &mut LdapConn,
        filter: &str,
        deadline: Instant,
    ) -> std::result::Result<Vec<Entry>, (bool, Error)> {
        let cfg = &self.cfg;
        let wait = left(cfg, deadline).map_err(|e| (false, e))?;
        let failed = |e: LdapError| {
            let broken = !matches!(e, LdapError::Timeout { .. });
            (broken, unreachable(cfg, "searching", &e))
        };
        // Streamed, so that the deadline is checked after every entry (ldap3's timeout bounds
        // the wait for each message, not the whole search: a server trickling entries would
        // hold a lookup for as long as it likes).
        let mut stream = conn
            .with_timeout(wait)
            .with_search_options(SearchOptions::new().sizelimit(SIZE_LIMIT))
            .streaming_search(&cfg.base, Scope::Subtree, filter, ATTRS.to_vec())
            .map_err(failed)?;
        let mut entries = Vec::new();
        loop {
            match stream.next() {
                Ok(Some(e)) => {
                    left(cfg, deadline).map_err(|e| (false, e))?;
                    // Continuation references (Active Directory sends them for its other
                    // partitions) and intermediate messages: not entries, not followed.
                    if !e.is_ref() && !e.is_intermediate() {
                        entries.push(e);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(failed(e)),
            }
        }
        left(cfg, deadline).map_err(|e| (false, e))?;
        let result = stream.result();
        match result.rc {
            0 => {}
            // An incomplete answer is no "no certificate": under --encrypt auto that would
            // send in clear although the certificate may be among the entries not read.
            // (Ours, or the server's own when it is lower: then fewer entries came.)
            4 if entries.len() >= SIZE_LIMIT as usize => {
                return Err((
                    false,
                    Error::config(format!(
                        "LDAP directory {}: more than {SIZE_LIMIT} entries match {filter}: \
                         the filter is too broad",
                        cfg.url
                    )),
                ))
            }
            4 => {
                return Err((
                    false,
                    Error::config(format!(
                        "LDAP directory {}: the server's size limit stopped the search for \
                         {filter} after {} entries (sizeLimitExceeded): raise it for this \
                         bind DN",
                        cfg.url,
                        entries.len()
                    )),
                ))
            }
            rc => return Err((false, result_error(cfg, "search", rc, &result.text))),
        }
        entries
            .into_iter()
            .map(|e| {
                decode_entry(e).ok_or_else(|| {
                    (
                        false,
                        Error::tempfail(format!(
                            "LDAP directory {}: a malformed search result entry",
                            cfg.url
                        )),
                    )
                })
            })
            .collect()
    }
}

/// What is left of the lookup's time; an error once it is spent.
fn left(cfg: &LdapConfig, deadline: Instant) -> Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(Error::tempfail(format!(
            "LDAP directory {}: no answer within {} s",
            cfg.url,
            cfg.timeout.as_secs()
        )));
    }
    Ok(d)
}

/// One search result entry: its DN and its attributes (description, values).
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// Decodes a search result entry; None when the server's answer is malformed (ldap3's
/// `SearchEntry::construct` panics on those, and the answer comes from the network).
fn decode_entry(re: ldap3::ResultEntry) -> Option<Entry> {
    let mut tags = re.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8_lossy(&tags.next()?.expect_primitive()?).into_owned();
    let mut attrs = Vec::new();
    for a in tags.next()?.expect_constructed()? {
        let mut part = a.expect_constructed()?.into_iter();
        let name = String::from_utf8(part.next()?.expect_primitive()?).ok()?;
        let values = part
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(|t| t.expect_primitive())
            .collect::<Option<Vec<_>>>()?;
        attrs.push((name, values));
    }
    Some(Entry { dn, attrs })
}

/// The error for a directory that could not be asked.
fn unreachable(cfg: &LdapConfig, what: &str, e: &LdapError) -> Error {
    if matches!(e, LdapError::FilterParsing) {
        return Error::config(format!(
            "LDAP directory {}: {what}: the filter does not parse",
            cfg.url
        ));
    }
    Error::tempfail(format!(
        "LDAP directory {}: {what}: {e} (it could not be asked, so a recipient's certificate \
         may be there)",
        cfg.url
    ))
}

/// The error for an LDAP result code other than success.
fn result_error(cfg: &LdapConfig, op: &str, rc: u32, text: &str) -> Error {
    let detail = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    let name = match rc {
        8 => " (strongerAuthRequired: configure a bind DN and TLS)",
        10 => " (referral: referrals are not followed; is the base DN right?)",
        13 => " (confidentialityRequired: use ldaps:// or starttls = true)",
        32 => " (noSuchObject: is the base DN right?)",
        34 => " (invalidDNSyntax)",
        49 => " (invalidCredentials)",
        50 => " (insufficientAccessRights)",
        51 => " (busy)",
        52 => " (unavailable)",
        _ => "",
    };
    let msg = format!(
        "LDAP directory {}: {op} failed, result code {rc}{name}{detail}",
        cfg.url
    );
    // Active Directory answers an anonymous search with operationsError (1) and a text that
    // asks for a bind ("…a successful bind must be completed on the connection").
    let needs_bind = rc == 1 && text.to_ascii_lowercase().contains("bind");
    match rc {
        // strongerAuthRequired, referral (a base DN outside the server's naming contexts;
        // referrals are not followed), confidentialityRequired (TLS needed), noSuchObject (the
        // base DN), invalidDNSyntax, inappropriateAuthentication, invalidCredentials,
        // insufficientAccessRights, unwillingToPerform on a bind (an empty password),
        // filterError (a bad filter template): no retry mends these.
        8 | 10 | 13 | 32 | 34 | 48 | 49 | 50 | 53 | 87 => Error::new(Kind::Config, msg),
        1 if needs_bind => Error::new(
            Kind::Config,
            format!("{msg} (the directory wants a bind: configure bind_dn and a password)"),
        ),
        // busy, unavailable, unwillingToPerform, timeLimitExceeded, adminLimitExceeded, other
        _ => Error::tempfail(msg),
    }
}

/// Whether an attribute description (`userCertificate;binary`) is one of ours.
fn is_cert_attribute(desc: &str) -> bool {
    let name = desc.split(';').next().unwrap_or(desc);
    name.eq_ignore_ascii_case("userCertificate")
        || name.eq_ignore_ascii_case("userSMIMECertificate")
}

/// The candidates of one entry: its end-entity certificates, each with the entry's CA
/// certificates as the chain to complete its path.
fn entry_candidates(entry: &Entry, url: &str) -> Vec<Candidate> {
    let mut all: Vec<X509> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let values = entry
        .attrs
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k, v.as_slice())));
    for (k, v) in values {
        if !is_cert_attribute(k) {
            continue;
        }
        for c in certs::published_certificates(v) {
            if seen.insert(certs::fingerprint(&c)) {
                all.push(c);
            }
        }
    }
    let (cas, leaves): (Vec<X509>, Vec<X509>) = all.into_iter().partition(super::store::is_ca);
    leaves
        .into_iter()
        .map(|cert| Candidate {
            cert,
            source: format!("ldap {url} {}", entry.dn),
            capabilities: None,
            preferred_at: None,
            chain: cas.clone(),
        })
        .collect()
}

impl CertSource for LdapSource {
    fn name(&self) -> &str {
        "ldap"
    }

    fn find(&self, addr: &str) -> Result<Vec<Candidate>> {
        if addr.is_empty() || addr.chars().any(|c| c.is_control()) {
            return Ok(Vec::new());
        }
        // The lookup runs on a thread of its own, awaited until the deadline: ldap3 bounds
        // each wait for a message, not the whole exchange, so a server answering just within
        // each wait would hold the lookup (and an agent's client) far past `timeout`. A thread
        // given up on ends by itself within one more wait; its connection is dropped.
        let (tx, rx) = std::sync::mpsc::channel();
        let (source, owned) = (LdapSource::new(self.cfg.clone()), addr.to_string());
        std::thread::Builder::new()
            .name("ldap".into())
            .spawn(move || {
                let _ = tx.send(source.lookup(&owned));
            })
            .map_err(|e| Error::tempfail(format!("starting the LDAP lookup: {e}")))?;
        match rx.recv_timeout(self.cfg.timeout + Duration::from_millis(GRACE_MS)) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::tempfail(format!(
                "LDAP directory {}: no answer within {} s",
                self.cfg.url,
                self.cfg.timeout.as_secs()
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::software("the LDAP lookup ended without an answer"))
            }
        }
    }
}

/// How long past the deadline the lookup thread is awaited (its own checks come first).
const GRACE_MS: u64 = 250;

impl LdapSource {
    /// One lookup, under one deadline (see [`CertSource::find`]).
    fn lookup(&self, addr: &str) -> Result<Vec<Candidate>> {
        let filter = self.cfg.filter_for(addr);
        let key = self.cfg.conn_key();
        let kept = {
            let mut conns = CONNS
                .lock()
                .map_err(|_| Error::software("LDAP pool poisoned"))?;
            conns
                .iter()
                .position(|(k, _)| *k == key)
                .map(|i| conns.swap_remove(i).1)
        };
        // One deadline for the whole lookup (connecting, binding, searching, one retry).
        let deadline = Instant::now() + self.cfg.timeout;
        let (mut conn, reused) = match kept {
            Some(c) => (c, true),
            None => (self.connect(deadline)?, false),
        };
        let entries = match self.search(&mut conn, &filter, deadline) {
            Ok(e) => e,
            // A kept connection the server has closed meanwhile: one new try.
            Err((true, _)) if reused => {
                conn = self.connect(deadline)?;
                self.search(&mut conn, &filter, deadline)
                    .map_err(|(_, e)| e)?
            }
            Err((_, e)) => return Err(e),
        };
        if let Ok(mut conns) = CONNS.lock() {
            conns.push((key, conn));
        }
        log::debug!("ldap: {} entries for {addr}", entries.len());
        Ok(entries
            .iter()
            .flat_map(|e| entry_candidates(e, &self.cfg.url))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(url: &str, file: LdapFileConfig) -> Result<Option<LdapConfig>> {
        LdapConfig::resolve(&file, Some(url), None, &|p| p.to_path_buf())
    }

    #[test]
    fn the_address_is_escaped_into_the_filter() {
        let c = resolve(
            "ldap://127.0.0.1:389/dc=example,dc=org",
            LdapFileConfig::default(),
        )
        .expect("resolve")
        .expect("some");
        assert_eq!(c.base, "dc=example,dc=org");
        assert_eq!(c.url, "ldap://127.0.0.1:389");
        assert_eq!(
            c.filter_for("a*)(uid=*@x.org"),
            "(|(mail=a\\2a\\29\\28uid=\\2a@x.org)(proxyAddresses=smtp:a\\2a\\29\\28uid=\\2a@x.org))"
        );
        let c = LdapConfig {
            filter: "(mail=%s)".into(),
            ..c
        };
        assert_eq!(
            c.filter_for("u@bücher.example"),
            "(|(mail=u@bücher.example)(mail=u@xn--bcher-kva.example))"
        );
        // Written in A-labels: asked for in U-labels too (Active Directory stores those).
        assert_eq!(
            c.filter_for("u@xn--bcher-kva.example"),
            "(|(mail=u@xn--bcher-kva.example)(mail=u@bücher.example))"
        );
        assert_eq!(c.filter_for("u@xn--.example"), "(mail=u@xn--.example)");
    }

    #[test]
    fn the_base_of_an_ldap_flag_url_wins_over_the_files() {
        // Flags over the file: the --ldap URL's base was taken after the file's `base`.
        let file = LdapFileConfig {
            url: Some("ldap://127.0.0.1/dc=fileurl".into()),
            base: Some("dc=filebase".into()),
            ..Default::default()
        };
        let base = |url: Option<&str>, flag: Option<&str>| {
            LdapConfig::resolve(&file, url, flag, &|p| p.to_path_buf())
                .expect("resolve")
                .expect("some")
                .base
        };
        assert_eq!(
            base(Some("ldap://127.0.0.1/dc=flagurl"), None),
            "dc=flagurl"
        );
        assert_eq!(
            base(Some("ldap://127.0.0.1/dc=flagurl"), Some("dc=b")),
            "dc=b"
        );
        assert_eq!(base(Some("ldap://127.0.0.1"), None), "dc=filebase");
        assert_eq!(base(None, None), "dc=filebase");
    }

    #[test]
    fn a_bind_password_is_not_sent_in_clear_to_a_remote_host() {
        let file = LdapFileConfig {
            base: Some("dc=x".into()),
            bind_dn: Some("cn=r,dc=x".into()),
            password_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        let e = resolve("ldap://gal.example.com", file.clone()).expect_err("refused");
        assert_eq!(e.kind, Kind::Config);
        assert!(resolve("ldaps://gal.example.com", file.clone()).is_ok());
        assert!(resolve("ldap://127.0.0.1:1389", file.clone()).is_ok());
        let starttls = LdapFileConfig {
            starttls: Some(true),
            ..file.clone()
        };
        assert!(resolve("ldap://gal.example.com", starttls).is_ok());
        // a bind DN without a password source (or the reverse) is refused
        let half = LdapFileConfig {
            password_file: None,
            ..file
        };
        assert!(resolve("ldaps://gal.example.com", half).is_err());
    }

    #[test]
    fn refusals_no_retry_mends_are_configuration_errors() {
        let c = resolve("ldap://127.0.0.1/dc=x", LdapFileConfig::default())
            .expect("resolve")
            .expect("some");
        let ad = "000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this \
                  operation a successful bind must be completed on the connection., data 0";
        for (rc, text, code) in [
            (1, ad, crate::error::exit::CONFIG),
            (
                13,
                "TLS confidentiality required",
                crate::error::exit::CONFIG,
            ),
            (8, "", crate::error::exit::CONFIG),
            (1, "internal error", crate::error::exit::TEMPFAIL),
            (51, "", crate::error::exit::TEMPFAIL),
        ] {
            assert_eq!(
                result_error(&c, "search", rc, text).exit_code(),
                code,
                "{rc}"
            );
        }
    }

    #[test]
    fn tls_to_an_ipv6_literal_is_refused_plain_is_not() {
        let err =
            resolve("ldaps://[::1]:636/dc=x", LdapFileConfig::default()).expect_err("refused");
        assert_eq!(err.exit_code(), crate::error::exit::CONFIG);
        assert!(err.to_string().contains("host name"), "{err}");
        let starttls = LdapFileConfig {
            starttls: Some(true),
            ..Default::default()
        };
        assert!(resolve("ldap://[::1]/dc=x", starttls).is_err());
        let plain = resolve("ldap://[::1]:389/dc=x", LdapFileConfig::default())
            .expect("plain")
            .expect("some");
        assert_eq!(plain.url, "ldap://[::1]:389");
    }

    #[test]
    fn bad_urls_and_filters_are_configuration_errors() {
        for url in ["http://x/dc=x", "ldap:///dc=x", "ldap://u:p@x/dc=x"] {
            let e = resolve(url, LdapFileConfig::default()).expect_err(url);
            assert_eq!(e.kind, Kind::Config, "{url}");
        }
        assert!(
            resolve("ldap://x", LdapFileConfig::default()).is_err(),
            "no base"
        );
        let f = LdapFileConfig {
            base: Some("dc=x".into()),
            filter: Some("(mail=bob@example.org)".into()),
            ..Default::default()
        };
        assert!(resolve("ldap://x", f).is_err(), "a filter without %s");
    }
}
