//! The command line, defined once with clap: the options shared by every subcommand
//! ([`Common`], each also a key of the config file) and one struct per subcommand. Dispatch is in
//! `main.rs`; the work is in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "smimed",
    version,
    about = "S/MIME for Unix mail pipelines: decrypt and verify inbound mail, sign and encrypt outbound mail",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand shares; each is also a key of the config file.
#[derive(Debug, Args, Default, Clone)]
pub struct Common {
    /// Config file (TOML). Default: $SMIMED_CONFIG, else $XDG_CONFIG_HOME/smimed/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Own identity: PKCS#12 (.p12/.pfx) or PEM with key and certificate chain. Repeatable.
    #[arg(long = "key", global = true, value_name = "FILE")]
    pub key: Vec<PathBuf>,
    /// File whose first line is the passphrase of encrypted keys.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Command (run by /bin/sh) that prints the passphrase of encrypted keys.
    #[arg(long, global = true, value_name = "CMD")]
    pub passphrase_command: Option<String>,
    /// Trust anchors: PEM, DER, PKCS#7 (.p7b/.p7c), Microsoft .sst, or a folder of these.
    /// Repeatable. Default: the system CA bundle.
    #[arg(long = "trust", global = true, value_name = "PATH")]
    pub trust: Vec<PathBuf>,
    /// Certificate revocation list (PEM or DER) to check signers against. Repeatable.
    #[arg(long = "crl", global = true, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// authserv-id of the Authentication-Results header we write (default: the host name).
    #[arg(long, global = true, value_name = "ID")]
    pub authserv_id: Option<String>,
    /// Largest message (bytes) to process; larger ones pass through with a status.
    #[arg(long, global = true, value_name = "BYTES")]
    pub max_size: Option<u64>,
    /// Certificate store (address book) folder. Default for sendmail and certs:
    /// $XDG_DATA_HOME/smimed/certs. The filter harvests signers' certificates only when set;
    /// a signer that sent no certificate is looked up here (or in the default folder).
    #[arg(long, global = true, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// vCard file or folder (vdirsyncer, khard) to look recipients' certificates up in.
    /// Repeatable.
    #[arg(long = "vcard", global = true, value_name = "PATH")]
    pub vcard: Vec<PathBuf>,
    /// LDAP directory (a GAL) to look recipients' certificates up in: ldap://HOST[:PORT][/BASE]
    /// or ldaps://…; the rest (bind DN, password, StartTLS, filter) is in the config file's
    /// [ldap] table.
    #[arg(long, global = true, value_name = "URL")]
    pub ldap: Option<String>,
    /// Base DN of the LDAP search (default: the URL's, or [ldap] base).
    #[arg(long, global = true, value_name = "DN")]
    pub ldap_base: Option<String>,
    /// `smimed filter` and `smimed sendmail` hand the message to the `smimed agent` listening
    /// on SOCKET (keys, trust and address book stay loaded there); when none answers, they work
    /// on their own.
    #[arg(long, global = true, value_name = "SOCKET")]
    pub agent: Option<PathBuf>,
    /// More log output on stderr (repeat for more). RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a message on stdin, write it decrypted and verified, with status headers, on stdout
    /// (for procmail `:0 fw` and Sieve `filter`).
    Filter(FilterArgs),
    /// Inspect the trust anchors.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Keep keys and trust loaded and serve `smimed --agent SOCKET filter` and `smimed --agent
    /// SOCKET sendmail` over a Unix socket (only the same user may connect), so that a process
    /// run per message does not pay for loading them. Runs until killed.
    Agent(AgentArgs),
    /// A sendmail drop-in: sign and encrypt the message on stdin, then hand it to the real MTA.
    /// Also run when the binary is called as `sendmail` or `smimed-sendmail`. Options:
    /// --mta CMD, --sign auto|always|never, --encrypt auto|always|never, --opaque / --no-opaque, sendmail's
    /// own flags (-t -i -oi -f ADDR -F NAME …) and recipients. See `smimed sendmail --help`.
    #[command(disable_help_flag = true)]
    Sendmail(SendmailCli),
    /// The address book of recipients' certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Keep Maildirs decrypted and verified: process the S/MIME messages there, then each one
    /// that arrives (inotify), until SIGTERM/SIGINT. Originals go to an archive folder.
    Watch(WatchArgs),
}

/// `smimed sendmail` takes sendmail's grammar, which clap cannot express: the words are parsed
/// by `outbound::argv`.
#[derive(Debug, Args)]
pub struct SendmailCli {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Import certificates: PEM, DER, PKCS#7, .sst, vCard, or a signed message (.eml) whose
    /// signature verifies (its signer's certificate and SMIMECapabilities are recorded).
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// One line per stored certificate.
    List,
    /// Which certificate would be used for ADDRESS, from which source, and why others were
    /// refused. Exit 1 when none is usable.
    Lookup {
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
    /// Remove the stored certificates of ADDRESS, or the one with FINGERPRINT (or a prefix of
    /// at least 8 hex digits). Exit 1 when nothing matched.
    Remove {
        #[arg(value_name = "ADDRESS|FINGERPRINT")]
        what: String,
    },
    /// Print (PEM) the certificate that would be used for ADDRESS. Exit 1 when none.
    Export {
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
}

/// `smimed watch`; each option is also a key of the config file's `[watch]` table.
#[derive(Debug, Args, Default, Clone)]
pub struct WatchArgs {
    /// Process what the Maildirs hold, print a summary and exit (no waiting for new mail).
    #[arg(long)]
    pub once: bool,
    /// Where originals go: a Maildir++ folder name of each MAILDIR (default .SMIME-Originals),
    /// or the path (with a `/`) of a Maildir elsewhere, created when missing.
    #[arg(long, value_name = "FOLDER|PATH", conflicts_with = "no_archive")]
    pub archive: Option<String>,
    /// Delete originals once their processed copy is durably in place.
    #[arg(long)]
    pub no_archive: bool,
    /// Messages processed in parallel (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Also watch the Maildir++ subfolders (.Work, .Lists…) of each MAILDIR.
    #[arg(long, overrides_with = "no_recursive")]
    pub recursive: bool,
    /// Do not, whatever the config file's `recursive` says.
    #[arg(long, overrides_with = "recursive")]
    pub no_recursive: bool,
    /// Log to syslog (journald reads it) instead of stderr.
    #[arg(long, overrides_with = "no_syslog")]
    pub syslog: bool,
    /// Log to stderr, whatever the config file's `syslog` says.
    #[arg(long, overrides_with = "syslog")]
    pub no_syslog: bool,
    /// Seconds between full rescans, which also retry messages left for a temporary failure
    /// (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub rescan: Option<u64>,
    /// The Maildirs to watch (each holds new/, cur/ and tmp/), or IMAP mailboxes:
    /// imaps://USER@HOST[:PORT]/MAILBOX (TLS) or imap://USER@HOST[:PORT]/MAILBOX (STARTTLS).
    #[arg(value_name = "MAILDIR|URL")]
    pub maildir: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub imap: ImapOptions,
}

impl WatchArgs {
    /// The IMAP watcher's arguments when every mailbox named is an imap:// or imaps:// URL;
    /// None when they are Maildirs (or none is named). Mixing both is a usage error.
    pub fn imap_args(&self) -> Result<Option<WatchImapArgs>, crate::error::Error> {
        let urls = self.maildir.iter().filter(|m| is_imap_url(m)).count();
        if urls == 0 {
            return Ok(None);
        }
        if urls != self.maildir.len() {
            return Err(crate::error::Error::usage(
                "smimed watch: give either Maildirs or imap(s):// mailboxes, not both \
                 (run one watcher for each)",
            ));
        }
        Ok(Some(self.to_imap_args()))
    }

    /// The same options for the IMAP watcher (URLs from the mailboxes named, if any).
    pub fn to_imap_args(&self) -> WatchImapArgs {
        WatchImapArgs {
            urls: self
                .maildir
                .iter()
                .map(|m| m.to_string_lossy().into_owned())
                .collect(),
            once: self.once,
            archive: self.archive.clone(),
            no_archive: self.no_archive,
            imap: self.imap.clone(),
            jobs: self.jobs,
        }
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Read the message from FILE instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
    /// Write the processed message to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Socket to listen on. Default: --agent, else $XDG_RUNTIME_DIR/smimed/agent.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// One line per certificate read: SHA-256 fingerprint, subject, not-after, restrictions.
    List,
}

/// The options only `smimed watch imap[s]://…` uses; each is also a key of the config file's
/// `[watch_imap]` table (or of an `[[imap]]` account table).
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "IMAP options (for imap:// and imaps:// mailboxes)")]
pub struct ImapOptions {
    /// Command (run by /bin/sh) that prints the password or OAuth2 access token.
    #[arg(long, value_name = "CMD", conflicts_with = "password_file")]
    pub password_command: Option<String>,
    /// File (mode 0600) whose first line is the password or access token.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Authentication: login (password), xoauth2 or oauthbearer (access token).
    #[arg(long, value_enum, value_name = "MECH")]
    pub auth: Option<crate::imap::account::AuthMech>,
    /// CA certificate(s) (PEM/DER) of a private CA: the only trust anchors for the server.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Allow an imap:// server without STARTTLS that is not on a loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Folder for the watchers' state (the IMAP watcher's per-mailbox state, the Maildir
    /// watcher's ledger of its copies). Default: $XDG_STATE_HOME/smimed.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
}

/// What the IMAP watcher was asked to do: `smimed watch` with imap:// or imaps:// mailboxes (or
/// with the config file's `[[imap]]` accounts), see [`WatchArgs::imap_args`].
#[derive(Debug, Default, Clone)]
pub struct WatchImapArgs {
    /// Mailboxes to watch: imaps://USER@HOST[:PORT]/MAILBOX (TLS) or imap://… (STARTTLS).
    /// Default: the `[[imap]]` accounts of the config file.
    pub urls: Vec<String>,
    pub once: bool,
    pub archive: Option<String>,
    pub no_archive: bool,
    pub imap: ImapOptions,
    pub jobs: Option<usize>,
}

/// Whether a `smimed watch` argument names an IMAP mailbox rather than a Maildir.
pub fn is_imap_url(arg: &std::path::Path) -> bool {
    // Schemes are case-insensitive (RFC 3986 §3.1); `imaps:/…` is a URL with a typo, reported
    // as such (and never taken for a Maildir path named in an error with its password).
    arg.to_str().is_some_and(|s| {
        let s = s.to_ascii_lowercase();
        s.starts_with("imap:") || s.starts_with("imaps:")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_urls_are_told_from_maildir_paths_whatever_the_scheme_case() {
        for url in ["imaps://u@h/INBOX", "IMAP://u@h", "Imaps:/u:p@h/INBOX"] {
            assert!(is_imap_url(std::path::Path::new(url)), "{url}");
        }
        for path in ["~/Maildir", "/home/u/imap/Maildir", "imapfolder"] {
            assert!(!is_imap_url(std::path::Path::new(path)), "{path}");
        }
    }
}
