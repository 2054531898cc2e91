//! What to watch: IMAP accounts and mailboxes, from `imap://` / `imaps://` URLs on the command
//! line or `[[imap]]` tables in the config file, and where each account's secret (password or
//! OAuth2 access token) comes from.
//!
//! Invariants: a secret never comes from the command line (a URL with a password is refused) and
//! is never logged; plaintext IMAP (an `imap://` server without STARTTLS) is allowed only to a
//! loopback address or with `insecure`; mailbox names are kept in UTF-8 here and encoded to
//! modified UTF-7 only on the wire.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `imaps://`: TLS from the first byte (default port 993).
    Tls,
    /// `imap://`: STARTTLS (default port 143); plaintext only where allowed.
    StartTls,
}

/// SASL mechanism (or plain LOGIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMech {
    /// IMAP LOGIN with a password.
    #[default]
    Login,
    /// SASL XOAUTH2 (Gmail, Office 365) with an access token.
    Xoauth2,
    /// SASL OAUTHBEARER (RFC 7628) with an access token.
    Oauthbearer,
}

/// Where the password or access token comes from, in this order: command, file, environment
/// (`SMIMED_IMAP_PASSWORD`). The config file names a command or a file, never the secret itself.
#[derive(Clone, Default)]
pub struct SecretSource {
    pub command: Option<String>,
    pub file: Option<PathBuf>,
    pub env: Option<Zeroizing<String>>,
}

/// Never prints a secret value, only where it comes from.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("command", &self.command)
            .field("file", &self.file)
            .field("env", &self.env.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SecretSource {
    /// Fetches the secret. A failing command is temporary (the token helper may be offline).
    pub fn get(&self) -> Result<Zeroizing<String>> {
        if let Some(cmd) = &self.command {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .env_remove("SMIMED_IMAP_PASSWORD")
                .env_remove("SMIMED_PASSPHRASE")
                .output()
                .map_err(|e| Error::tempfail(format!("password command could not run: {e}")))?;
            let stdout = Zeroizing::new(out.stdout);
            if !out.status.success() {
                return Err(Error::tempfail(format!(
                    "password command failed ({})",
                    out.status
                )));
            }
            let text = String::from_utf8_lossy(&stdout);
            return Ok(Zeroizing::new(
                text.lines().next().unwrap_or("").to_string(),
            ));
        }
        if let Some(path) = &self.file {
            let data = crate::keys::read_private_file(path)?;
            let text = String::from_utf8_lossy(&data);
            return Ok(Zeroizing::new(
                text.lines().next().unwrap_or("").to_string(),
            ));
        }
        if let Some(v) = self.env.as_ref() {
            return Ok(v.clone());
        }
        Err(Error::config(
            "no IMAP password or token: give --password-command, --password-file, \
             SMIMED_IMAP_PASSWORD or password_command/password_file in the config file",
        ))
    }
}

/// One account and the mailboxes to watch on it.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// UTF-8 names.
    pub mailboxes: Vec<String>,
    pub auth: AuthMech,
    pub secret: SecretSource,
    /// A private CA: the only trust anchor for the server certificate.
    pub ca: Option<PathBuf>,
    /// Allow plaintext to a non-loopback server.
    pub insecure: bool,
    /// Archive mailbox (UTF-8), or None to delete originals.
    pub archive: Option<String>,
}

impl Account {
    /// `user@host:port`, for logs and state paths (no secret in it).
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// Whether the server is a loopback address (plaintext allowed there).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// Whether `host` (a name, an address, or an IPv6 address in brackets) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

/// The parts of one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// None when the URL has no path (then INBOX).
    pub mailbox: Option<String>,
}

fn pct_decode(s: &str, what: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| Error::usage(format!("the {what} {s:?} is not UTF-8 once decoded")))
}

/// Parses `imaps://USER@HOST[:PORT]/MAILBOX` or `imap://…` (RFC 5092 subset: user and mailbox
/// are percent-decoded; `;AUTH=` and a password in the URL are refused).
pub fn parse_url(url: &str) -> Result<ParsedUrl> {
    // Errors show the URL without the password it may hold (they go to logs).
    let s = crate::config::url_without_password(url);
    let s = s.as_str();
    let u = url::Url::parse(url).map_err(|e| Error::usage(format!("IMAP URL {s:?}: {e}")))?;
    let security = match u.scheme() {
        "imaps" => Security::Tls,
        "imap" => Security::StartTls,
        other => {
            return Err(Error::usage(format!(
                "IMAP URL {s:?}: scheme {other:?} is not imap or imaps"
            )))
        }
    };
    if u.password().is_some() {
        return Err(Error::usage(format!(
            "IMAP URL {s:?} holds a password: passwords never go in the URL (command lines \
             and config files are read by others and logged); use --password-command, \
             --password-file, SMIMED_IMAP_PASSWORD or password_command/password_file in the \
             config file"
        )));
    }
    if u.username().is_empty() {
        return Err(Error::usage(format!(
            "IMAP URL {s:?}: no user (imaps://USER@HOST/…)"
        )));
    }
    let user = pct_decode(u.username(), "user")?;
    if user.contains(';') {
        return Err(Error::usage(format!(
            "IMAP URL {s:?}: ;AUTH= in the URL is not supported, use --auth"
        )));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::usage(format!("IMAP URL {s:?}: no host")))?
        .to_string();
    let port = u.port().unwrap_or(match security {
        Security::Tls => 993,
        Security::StartTls => 143,
    });
    let path = u.path().trim_start_matches('/');
    let mailbox = if path.is_empty() {
        None
    } else {
        Some(pct_decode(path, "mailbox")?)
    };
    if u.query().is_some() || u.fragment().is_some() {
        return Err(Error::usage(format!(
            "IMAP URL {s:?}: queries and fragments are not supported"
        )));
    }
    Ok(ParsedUrl {
        user,
        host,
        port,
        security,
        mailbox,
    })
}

/// One `[[imap]]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// `imaps://USER@HOST[:PORT]/MAILBOX`; the path is the mailbox unless `mailboxes` is given.
    pub url: String,
    #[serde(default)]
    pub mailboxes: Vec<String>,
    pub auth: Option<AuthMech>,
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    pub archive: Option<String>,
    #[serde(default)]
    pub no_archive: bool,
}

/// The `[watch_imap]` table of the config file: defaults for every account.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchImapConfig {
    pub state_dir: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub archive: Option<String>,
    #[serde(default)]
    pub no_archive: bool,
    pub auth: Option<AuthMech>,
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    /// Seconds between NOOP polls on servers without IDLE.
    pub poll_interval: Option<u64>,
}

/// Default archive mailbox.
pub const DEFAULT_ARCHIVE: &str = "SMIME-Originals";

/// Checks a UTF-8 mailbox name: no control characters, no `"` or `\` (the imap crate's APPEND
/// does not escape them).
pub fn check_mailbox_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(Error::usage(format!(
            "mailbox name {name:?} is empty or holds a control character, '\"' or '\\'"
        )));
    }
    Ok(())
}

/// A mailbox name as the server may take it, for comparing an archive with the watched
/// mailboxes (an archive that is a watched mailbox would loop for ever; names are sent as
/// written): INBOX in any case is INBOX (RFC 3501 §5.1), and so is it as the parent of others
/// (`inbox/Sub`, `inbox.Sub` where `.` is the separator: Dovecot, Cyrus and Exchange take it so).
pub fn canonical_mailbox(name: &str) -> String {
    match (name.get(..5), name.get(5..)) {
        (Some(head), Some(rest))
            if head.eq_ignore_ascii_case("INBOX")
                && (rest.is_empty() || rest.starts_with(['/', '.'])) =>
        {
            format!("INBOX{rest}")
        }
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_in_any_case_is_inbox() {
        assert_eq!(canonical_mailbox("inbox"), "INBOX");
        assert_eq!(canonical_mailbox("InBox"), "INBOX");
        assert_eq!(canonical_mailbox("inbox/Sub"), "INBOX/Sub");
        assert_eq!(canonical_mailbox("Inbox.Sub"), "INBOX.Sub");
        assert_eq!(canonical_mailbox("inboxes"), "inboxes");
        assert_eq!(canonical_mailbox("inbö"), "inbö");
        assert_eq!(canonical_mailbox("inboü/x"), "inboü/x");
        assert_eq!(canonical_mailbox("Archive"), "Archive");
    }

    #[test]
    fn parses_urls() {
        let p = parse_url("imaps://alice%40example.org@mail.example.org/Lists%2FWork").unwrap();
        assert_eq!(p.user, "alice@example.org");
        assert_eq!(p.host, "mail.example.org");
        assert_eq!(p.port, 993);
        assert_eq!(p.security, Security::Tls);
        assert_eq!(p.mailbox.as_deref(), Some("Lists/Work"));
        let p = parse_url("imap://bob@127.0.0.1:1143").unwrap();
        assert_eq!(
            (p.port, p.security, p.mailbox),
            (1143, Security::StartTls, None)
        );
        let p = parse_url("imaps://u@[::1]:9/Entw%C3%BCrfe").unwrap();
        assert_eq!(p.host, "[::1]");
        assert_eq!(p.mailbox.as_deref(), Some("Entwürfe"));
        assert!(parse_url("imaps://u:secret@h/INBOX").is_err());
        // No error names the password, however the URL is broken.
        for url in [
            "imaps://u:s3cr%65t@h/INBOX",
            "imaps://u:s3cret@h/INBOX?x=1",
            "imaps://u@x:s3cret@h:notaport/INBOX",
            "ftp://u:s3cret@h/INBOX",
            "imaps://u:s3cret@/INBOX",
            "imap://me%40example.org:Xy7/Qm+s3cr@imap.example.org/INBOX",
            "imaps://u:pa#s3cr@h/INBOX",
            "imaps://u:pa?s3cr@h/INBOX",
            "imaps:/me:s3cret@imap.example.org/INBOX",
            "imaps:me:s3cret@imap.example.org/INBOX",
            "IMAPS://me:s3cret@imap.example.org/INBOX",
            " imaps://me:s3cret@127.0.0.1:1/INBOX",
            "imaps//me:s3cret@h/INBOX",
            "imaps;//me:s3cret@h/INBOX",
            "ima ps://me:s3cret@h/INBOX",
            "imaps://me:s3\tcret@h/INBOX",
        ] {
            let e = parse_url(url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.is_empty() && !e.contains("s3cr"), "{url}: {e}");
        }
        assert_eq!(
            crate::config::url_without_password("imaps://u:pw@h/INBOX"),
            "imaps://u:***@h/INBOX"
        );
        assert_eq!(
            crate::config::url_without_password("imaps://u@h/x:y"),
            "imaps://u@h/x:y"
        );
        assert!(parse_url("https://u@h/INBOX").is_err());
        assert!(parse_url("imaps://h/INBOX").is_err());
    }
}
