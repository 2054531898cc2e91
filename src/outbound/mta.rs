//! Handing copies to the real MTA: `MTA-WORDS… PASSTHROUGH-FLAGS… -- RECIPIENTS…`, the message
//! on stdin. Never `-t`: the recipients of each copy are exactly the arguments.
//!
//! Invariants: an MTA that resolves to smimed's own executable is refused (exit 78) before
//! anything is sent; copies go out in order and delivery stops at the first MTA failure, whose exit
//! code becomes ours (75 when it died from a signal); the passphrase variable is removed from
//! the MTA's environment.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use super::Outgoing;
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

/// Where a command name resolves (PATH search for a bare name), canonicalised.
fn resolve(prog: &str) -> Option<std::path::PathBuf> {
    if prog.contains('/') {
        return std::fs::canonicalize(prog).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// Refuses an MTA that is this very program (smimed installed as /usr/sbin/sendmail with the
/// default `--mta`), which would call itself for ever.
pub fn check_not_self(prog: &str) -> Result<()> {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    match (me, resolve(prog)) {
        (Some(me), Some(target)) if me == target => Err(Error::config(format!(
            "the MTA {prog} is smimed itself: set --mta (config key mta) to the real sendmail"
        ))),
        _ => Ok(()),
    }
}

/// Runs the MTA once per copy; returns the first non-zero exit code, or 0.
pub fn deliver(mta: &[String], passthrough: &[String], copies: &[Outgoing]) -> Result<i32> {
    let (prog, fixed) = mta
        .split_first()
        .ok_or_else(|| Error::config("--mta is empty"))?;
    check_not_self(prog)?;
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
