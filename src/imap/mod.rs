//! `smimed watch imaps://…`: keeps IMAP mailboxes decrypted and verified on the server.
//!
//! - [`account`]: URLs, `[[imap]]` config tables, secret sources.
//! - [`conn`]: TCP + TLS (native-tls) or STARTTLS, LOGIN / XOAUTH2 / OAUTHBEARER.
//! - [`utf7`]: modified UTF-7 mailbox names.
//! - [`state`]: per account/mailbox state keyed by UIDVALIDITY, written atomically.
//! - [`watch`]: backlog, IDLE/NOOP loop, APPEND + archive, crash recovery, reconnects.
//!
//! Invariants: the pipeline is the only thing that looks inside a message; a message is
//! replaced at most once (see `state` and `watch`); nothing secret is logged.

pub mod account;
pub mod conn;
pub mod state;
pub mod utf7;
pub mod watch;
