//! The command line, defined once with clap: the options shared by every subcommand
//! ([`Common`], each also a key of the config file) and one struct per subcommand. Dispatch is in
//! `main.rs`; the work is in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "smimed",
    version,
    about = "S/MIME for Unix mail pipelines: decrypt and verify inbound mail",
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
    /// More log output on stderr (repeat for more). RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a message on stdin, write it decrypted and verified, with status headers, on stdout
    /// (for procmail `:0 fw` and Sieve `filter`).
    Filter(FilterArgs),
    /// Keep IMAP mailboxes decrypted and verified on the server (imaps://USER@HOST/MAILBOX…):
    /// backlog first, then IDLE; originals go to an archive mailbox.
    WatchImap(WatchImapArgs),
    /// Inspect the trust anchors.
    #[command(subcommand)]
    Trust(TrustCommand),
}

#[derive(Debug, Args)]
pub struct FilterArgs {}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// One line per certificate read: SHA-256 fingerprint, subject, not-after, restrictions.
    List,
}

/// `smimed watch-imap` (routed from `smimed watch imap[s]://…`). Every option is also a key of
/// the `[watch_imap]` table (or of an `[[imap]]` account table) of the config file.
#[derive(Debug, Args, Default, Clone)]
pub struct WatchImapArgs {
    /// Mailboxes to watch: imaps://USER@HOST[:PORT]/MAILBOX (TLS) or imap://… (STARTTLS).
    /// Default: the `[[imap]]` accounts of the config file.
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// Process the backlog, then exit.
    #[arg(long)]
    pub once: bool,
    /// Mailbox the originals are moved to (created if missing). Default: SMIME-Originals.
    #[arg(long, value_name = "MAILBOX", conflicts_with = "no_archive")]
    pub archive: Option<String>,
    /// Delete originals instead of archiving them.
    #[arg(long)]
    pub no_archive: bool,
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
    /// Folder for the watcher's state. Default: $XDG_STATE_HOME/smimed.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Messages processed in parallel (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}
