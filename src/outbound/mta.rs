//! Handing copies to the real MTA: `MTA-WORDS… PASSTHROUGH-FLAGS… -- RECIPIENTS…`, the message
//! on stdin. Never `-t`: the recipients of each copy are exactly the arguments.
//!
//! Invariants: copies go out in order and delivery stops at the first MTA failure, whose exit
//! code becomes ours (75 when it died from a signal); the passphrase variable is removed from
//! the MTA's environment.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use super::Copy;
use crate::error::{exit, Error, Kind, Result};

/// The default MTA command.
pub const DEFAULT_MTA: &str = "/usr/sbin/sendmail";

/// Splits an MTA command line as a POSIX shell splits words.
pub fn split_command(cmd: &str) -> Result<Vec<String>> {
    let words =
        shell_words::split(cmd).map_err(|e| Error::config(format!("--mta {cmd:?}: {e}")))?;
    if words.is_empty() {
        return Err(Error::config("--mta is empty"));
    }
    Ok(words)
}

/// Runs the MTA once per copy; returns the first non-zero exit code, or 0.
pub fn deliver(mta: &[String], passthrough: &[String], copies: &[Copy]) -> Result<i32> {
    let (prog, fixed) = mta
        .split_first()
        .ok_or_else(|| Error::config("--mta is empty"))?;
    for copy in copies {
        let mut child = Command::new(prog)
            .args(fixed)
            .args(passthrough)
            .arg("--")
            .args(&copy.recipients)
            .env_remove("SMIMED_PASSPHRASE")
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(Kind::Unavailable, format!("cannot run the MTA {prog}: {e}"))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // An MTA that exits without reading everything reports through its exit code.
            if let Err(e) = stdin.write_all(&copy.message) {
                log::info!("MTA stopped reading: {e}");
            }
        }
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("waiting for the MTA {prog}"), e))?;
        let code = match status.code() {
            Some(c) => c,
            None => {
                log::warn!("MTA {prog} killed by signal {:?}", status.signal());
                exit::TEMPFAIL
            }
        };
        if code != 0 {
            log::warn!("MTA {prog} exited {code}");
            return Ok(code);
        }
    }
    Ok(exit::OK)
}
