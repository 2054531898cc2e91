//! Settings shared by every subcommand: the command-line flags of [`crate::cli::Common`] merged
//! over the TOML config file (`--config FILE`, else `$SMIMED_CONFIG`, else
//! `$XDG_CONFIG_HOME/smimed/config.toml` when it exists). Flags win; a list given on the command
//! line replaces the file's list. Relative paths in the file are relative to the file's folder,
//! and `~/` means `$HOME`.
//!
//! Every option is both a flag and a key (except `--config`, `--verbose`, `watch --once` and
//! `agent --socket`, which are about one run): the file's keys are the long flag names with `-`
//! written as `_` (`passphrase_command`, `authserv_id`, …). Unknown keys are an error, so that a
//! typo does not silently weaken a policy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Common;
use crate::error::{Error, Result};

/// Default largest message the pipeline processes; larger ones pass through with a status.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub key: Vec<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_command: Option<String>,
    #[serde(default)]
    pub trust: Vec<PathBuf>,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    pub authserv_id: Option<String>,
    pub max_size: Option<u64>,
    /// Socket of a `smimed agent` for `smimed filter` and `smimed sendmail`.
    pub agent: Option<PathBuf>,
    /// Local certificate store (address book) folder.
    pub certs: Option<PathBuf>,
    /// vCard files or folders to look certificates up in.
    #[serde(default)]
    pub vcard: Vec<PathBuf>,
    /// `[ldap]`: a directory to look certificates up in.
    #[serde(default)]
    pub ldap: crate::addressbook::ldap::LdapFileConfig,
    /// `smimed sendmail`: the real MTA command.
    pub mta: Option<String>,
    /// `smimed sendmail`: auto, always or never.
    pub sign: Option<String>,
    /// `smimed sendmail`: auto, always or never.
    pub encrypt: Option<String>,
    /// `smimed sendmail`: opaque signed-data instead of multipart/signed.
    pub opaque: Option<bool>,
    /// `[watch]`: the options of `smimed watch`.
    #[serde(default)]
    pub watch: WatchConfig,
    /// Defaults of `smimed watch imaps://…`.
    #[serde(default)]
    pub watch_imap: crate::imap::account::WatchImapConfig,
    /// IMAP accounts watched when no URL is given.
    #[serde(default)]
    pub imap: Vec<crate::imap::account::AccountConfig>,
}

/// The `[watch]` table: keys named like the flags of `smimed watch`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    #[serde(default)]
    pub maildir: Vec<PathBuf>,
    pub archive: Option<String>,
    pub no_archive: Option<bool>,
    pub jobs: Option<usize>,
    pub recursive: Option<bool>,
    pub syslog: Option<bool>,
    pub rescan: Option<u64>,
    pub state_dir: Option<PathBuf>,
}

/// Where the passphrase of an encrypted key comes from, in this order.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
    pub command: Option<String>,
    /// `SMIMED_PASSPHRASE`, read at start-up and removed from the environment of children.
    pub env: Option<zeroize::Zeroizing<String>>,
}

/// Resolved settings every subcommand starts from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: Vec<PathBuf>,
    pub passphrase: PassphraseSource,
    /// Trust anchors; empty means the system CA bundle.
    pub trust: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub authserv_id: String,
    pub max_size: u64,
    /// Socket of a `smimed agent` the filter and sendmail hand messages to.
    pub agent: Option<PathBuf>,
    /// Where the config file was read from, if any.
    pub config_path: Option<PathBuf>,
    /// Certificate store folder, when configured (`--certs` / `certs`). The inbound side
    /// harvests only when it is set; the outbound side falls back to the default folder.
    pub certs: Option<PathBuf>,
    /// vCard paths (`--vcard` / `vcard`).
    pub vcard: Vec<PathBuf>,
    /// The LDAP directory (`--ldap` / `[ldap]`), if any.
    pub ldap: Option<crate::addressbook::ldap::LdapConfig>,
    /// The file's outbound keys, for `smimed sendmail` to merge its own flags over.
    pub outbound: OutboundFile,
}

/// The outbound keys of the config file, as written.
#[derive(Debug, Clone, Default)]
pub struct OutboundFile {
    pub mta: Option<String>,
    pub sign: Option<String>,
    pub encrypt: Option<String>,
    pub opaque: Option<bool>,
}

/// `~/` means `$HOME`; a relative path is relative to `base` (the config file's folder) when given.
pub fn expand(p: &Path, base: Option<&Path>) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// A config file's `sign` / `encrypt` value, checked whichever command reads the file (a typo
/// is found by `smimed filter` too, not only when mail is sent).
fn checked_policy(value: Option<String>, key: &str) -> Result<Option<String>> {
    if let Some(v) = &value {
        v.parse::<crate::outbound::Policy>()
            .map_err(|e| Error::config(format!("config key {key}: {e}")))?;
    }
    Ok(value)
}

/// Which config file applies, if any.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SMIMED_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("smimed").join("config.toml");
    p.is_file().then_some(p)
}

/// The default state folder: `$XDG_STATE_HOME/smimed`, else `~/.local/state/smimed`.
pub fn default_state_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p).join("smimed"));
    }
    std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/smimed"))
        .ok_or_else(|| Error::config("neither XDG_STATE_HOME nor HOME is set: give --state-dir"))
}

/// Creates `p` (and its parents) and makes it private (0700).
pub fn create_private_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", p.display()), e))
}

/// `url` with the password of its user information (`USER:PASSWORD@`) replaced by `***`,
/// whether or not the rest parses: for error messages, which go to logs.
pub fn url_without_password(url: &str) -> String {
    let Some(last_at) = url.rfind('@') else {
        return url.to_string();
    };
    // A scheme (after the blanks and control characters the url crate skips), its `:` and
    // however many slashes were typed (`imaps:/u:p@h` parses too): the user information runs
    // from there to the last `@`, its password from its first `:`.
    let lead = url.len() - url.trim_start_matches(|c: char| c <= ' ').len();
    let scheme_end = url[lead..].find(':').map(|i| lead + i);
    let start = scheme_end.filter(|&c| {
        c > lead
            && url[lead..c]
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.'))
    });
    match start {
        Some(colon) => {
            let start = colon + 1 + url[colon + 1..].chars().take_while(|&c| c == '/').count();
            if start > last_at {
                return url.to_string();
            }
            match url[start..last_at].find(':') {
                Some(p) => format!("{}:***{}", &url[..start + p], &url[last_at..]),
                None => url.to_string(),
            }
        }
        // No scheme to go by (a typo, `imaps//…`): everything before the last `@` is hidden.
        None => format!("***{}", &url[last_at..]),
    }
}

/// A serde message without the value it quotes ("invalid type: string \"…\"", "invalid value:
/// integer `…`", "unknown variant `…`"): a value in the wrong place may be a secret.
fn scrub_value(msg: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "unknown variant"] {
        if let Some(rest) = msg.strip_prefix(lead) {
            if let Some(i) = rest.find(", expected") {
                let kind = rest[..i].split([' ', '`', '"']).next().unwrap_or_default();
                return format!("{lead}{kind}{}", &rest[i..]);
            }
        }
    }
    msg.to_string()
}

/// Reads and parses a config file. A missing file named explicitly is a config error.
pub fn read_file<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| Error::config(format!("config file {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    // It names commands smimed runs through the shell (passphrase, password, MTA): a file any
    // user may write is refused, as OpenSSH refuses such a config.
    let mode = f.metadata().map_err(io)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(Error::config(format!(
            "config file {} can be written by every user (mode {:o}), and it names commands \
             smimed runs: chmod o-w it",
            path.display(),
            mode & 0o7777
        )));
    }
    // The same for a file in a folder every user may write without the sticky bit (anyone may
    // put another file in its place), or below one (anyone may rename the folder away): the
    // folders of the path as given and of the file it leads to (through symlinks).
    if let Some(folder) = open_folder_above(path) {
        return Err(Error::config(format!(
            "config file {} is in or below a folder every user may write ({}), and it names \
             commands smimed runs: chmod o-w that folder (or set its sticky bit)",
            path.display(),
            folder.display()
        )));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io)?;
    toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))
}

/// The first folder above `path` (as given, made absolute, and as its symlinks resolve) that
/// every user may write and that has no sticky bit.
fn open_folder_above(path: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let given = std::path::absolute(path).ok();
    let real = std::fs::canonicalize(path).ok();
    for p in given.iter().chain(real.iter()) {
        for folder in p.ancestors().skip(1) {
            let Ok(m) = std::fs::metadata(folder) else {
                continue;
            };
            let mode = m.permissions().mode();
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                return Some(folder.to_path_buf());
            }
        }
    }
    None
}

/// A config parse error naming the file, line and column, without the line itself: toml's own
/// rendering quotes it, and a user who wrote `passphrase = "…"` (other tools take inline
/// secrets) would find the secret in procmail's log or the journal.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let at = e
        .span()
        .and_then(|s| text.get(..s.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(", line {line}, column {column}")
        })
        .unwrap_or_default();
    let msg = scrub_value(e.message().trim_end());
    Error::config(format!("config file {}{at}: {msg}", path.display()))
}

/// The host name, for the default authserv-id.
fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let h = h.trim();
    if h.is_empty() {
        String::from("localhost")
    } else {
        h.to_string()
    }
}

impl Settings {
    /// Merges the flags over the config file.
    pub fn resolve(flags: &Common) -> Result<Settings> {
        let path = config_path(flags.config.as_deref());
        let file: FileConfig = read_file(path.as_deref())?;
        Self::merge(flags, file, path)
    }

    /// Merges flags over an already-read file (subcommands with their own sections use this).
    pub fn merge(flags: &Common, file: FileConfig, path: Option<PathBuf>) -> Result<Settings> {
        let base = path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        let from_file = |v: &[PathBuf]| -> Vec<PathBuf> {
            v.iter().map(|p| expand(p, base.as_deref())).collect()
        };
        let pick = |flag: &[PathBuf], file: &[PathBuf]| {
            if flag.is_empty() {
                from_file(file)
            } else {
                flag.iter().map(|p| expand(p, None)).collect()
            }
        };
        let env = std::env::var("SMIMED_PASSPHRASE")
            .ok()
            .map(zeroize::Zeroizing::new);
        let authserv_id = flags
            .authserv_id
            .clone()
            .or(file.authserv_id)
            .unwrap_or_else(hostname);
        if authserv_id.is_empty()
            || !authserv_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return Err(Error::config(format!(
                "authserv-id {authserv_id:?} is not a domain name"
            )));
        }
        Ok(Settings {
            keys: pick(&flags.key, &file.key),
            // A passphrase source on the command line replaces the file's (whichever kind):
            // the file is tried before the command, so merging them field by field would let a
            // file's passphrase_file beat a --passphrase-command flag.
            passphrase: if flags.passphrase_file.is_some() || flags.passphrase_command.is_some() {
                PassphraseSource {
                    file: flags.passphrase_file.as_deref().map(|p| expand(p, None)),
                    command: flags.passphrase_command.clone(),
                    env,
                }
            } else {
                PassphraseSource {
                    file: file.passphrase_file.map(|p| expand(&p, base.as_deref())),
                    command: file.passphrase_command,
                    env,
                }
            },
            trust: pick(&flags.trust, &file.trust),
            crls: pick(&flags.crl, &file.crl),
            authserv_id,
            max_size: flags.max_size.or(file.max_size).unwrap_or(DEFAULT_MAX_SIZE),
            agent: flags
                .agent
                .as_deref()
                .map(|p| expand(p, None))
                .or_else(|| file.agent.as_deref().map(|p| expand(p, base.as_deref()))),
            certs: flags
                .certs
                .as_deref()
                .map(|p| expand(p, None))
                .or_else(|| file.certs.as_deref().map(|p| expand(p, base.as_deref()))),
            vcard: pick(&flags.vcard, &file.vcard),
            ldap: crate::addressbook::ldap::LdapConfig::resolve(
                &file.ldap,
                flags.ldap.as_deref(),
                flags.ldap_base.as_deref(),
                &|p| expand(p, base.as_deref()),
            )?,
            outbound: OutboundFile {
                mta: file.mta,
                sign: checked_policy(file.sign, "sign")?,
                encrypt: checked_policy(file.encrypt, "encrypt")?,
                opaque: file.opaque,
            },
            config_path: path,
        })
    }
}
