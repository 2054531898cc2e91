//! smimed: S/MIME for Unix mail pipelines.
//!
//! The library holds everything; `main.rs` and `cmd/` are thin entry points. See ARCHITECTURE.md
//! for the module map, the data flow and the invariants.
#![deny(unsafe_code)]

pub mod address;
pub mod addressbook;
pub mod agent;
pub mod ber;
pub mod certcache;
pub mod certs;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod fsio;
pub mod imap;
pub mod keys;
pub mod ledger;
pub mod maildir;
pub mod mime;
pub mod ossl;
pub mod outbound;
pub mod pathcache;
pub mod pipeline;
pub mod secret;
pub mod sst;
pub mod status;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod trust;
pub mod verify;
pub mod watch;
