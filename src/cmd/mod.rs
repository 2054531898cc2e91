//! One module per subcommand: each takes its parsed arguments and the shared settings, does its
//! job through the library, and returns an exit code or an error. No S/MIME logic lives here.

pub mod agent;
pub mod certs;
pub mod filter;
pub mod sendmail;
pub mod trust;
pub mod watch;
pub mod watch_imap;
