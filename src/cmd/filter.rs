//! `smimed filter`: message on stdin, processed message on stdout, for procmail (`:0 fw`) and
//! Sieve's `filter`. Exit 0 whenever a message was written; 75 (writing nothing) for what may
//! pass later, so the caller keeps the original; 78 for configuration errors.

use std::io::{Read, Write};

use crate::cli::FilterArgs;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::pipeline::{self, Context};

fn write_output(args: &FilterArgs, output: &[u8]) -> Result<()> {
    match &args.output {
        // Decrypted text: a private file that replaces the old one whole (never written
        // through a symlink, never left half-written); a FIFO or a device (`/dev/stdout`,
        // `/dev/null`) is written into as it is.
        Some(p) => match std::fs::metadata(p) {
            Ok(m) if !m.is_file() && !m.is_dir() => std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .and_then(|mut f| f.write_all(output).and_then(|_| f.flush()))
                .map_err(|e| Error::io(p.display(), e)),
            // A folder the user may not write (or a read-only file system): the output cannot
            // be written whole and private, and retrying will not change that (73, not 75).
            // Writing into the old file instead would keep its mode (decrypted text readable by
            // others) and leave it half-written when the disk is full.
            // Only a full disk or quota, an I/O error or a lack of resources may pass (75).
            _ => crate::fsio::try_write_atomic(p, output).map_err(|e| {
                let passing = matches!(
                    e.raw_os_error(),
                    Some(
                        libc::ENOSPC
                            | libc::EDQUOT
                            | libc::EIO
                            | libc::EAGAIN
                            | libc::EINTR
                            | libc::ENOMEM
                            | libc::EMFILE
                            | libc::ENFILE
                            | libc::EFBIG
                    )
                );
                if passing {
                    Error::io(p.display(), e)
                } else {
                    Error::new(
                        crate::error::Kind::CantCreate,
                        format!(
                            "{}: {e}: the output is written as a new private file in its \
                             folder, which needs a folder that exists and you may write",
                            p.display()
                        ),
                    )
                }
            }),
        },
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(output)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("writing the message to stdout", e))
        }
    }
}

/// With `--agent`, a message of ordinary size goes to the agent; None when no agent answered
/// (the filter then works on its own).
fn via_agent(settings: &Settings, input: &[u8]) -> Option<Result<Vec<u8>>> {
    let socket = settings.agent.as_deref()?;
    match crate::agent::request(socket, input, &settings.authserv_id) {
        Ok(crate::agent::Answer::Message(out)) => Some(Ok(out)),
        Ok(crate::agent::Answer::Failed(e)) => Some(Err(e)),
        Ok(crate::agent::Answer::Declined(why)) => {
            log::warn!(
                "the agent on {} does not serve this ({why}); working alone",
                socket.display()
            );
            None
        }
        Err(e) => {
            log::warn!("no agent on {} ({e}); working alone", socket.display());
            None
        }
    }
}

/// Where the message comes from: stdin, a regular `--input` file (read in place, seekable), or
/// an `--input` that is a pipe, a FIFO or a device (`<(…)`, `/dev/stdin`), read as a stream.
enum Input {
    Stdin,
    File(std::fs::File),
    Stream(std::fs::File),
}

impl Input {
    fn open(args: &FilterArgs) -> Result<Input> {
        let Some(p) = &args.input else {
            return Ok(Input::Stdin);
        };
        let f = std::fs::File::open(p).map_err(|e| Error::input(p, e))?;
        match f.metadata() {
            // A folder is refused like a missing file (66).
            Ok(m) if m.is_dir() => Err(Error::input(
                p,
                std::io::Error::from(std::io::ErrorKind::IsADirectory),
            )),
            Ok(m) if m.is_file() => Ok(Input::File(f)),
            _ => Ok(Input::Stream(f)),
        }
    }

    /// Reads up to `limit` bytes from the start.
    fn read_start(&mut self, args: &FilterArgs, limit: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let r = match self {
            Input::Stdin => std::io::stdin().lock().take(limit).read_to_end(&mut buf),
            Input::File(f) | Input::Stream(f) => f.take(limit).read_to_end(&mut buf),
        };
        r.map_err(|e| match &args.input {
            Some(p) => Error::input(p, e),
            None => Error::io("reading the message from stdin", e),
        })?;
        Ok(buf)
    }
}

pub fn run(args: &FilterArgs, settings: Settings) -> Result<i32> {
    let mut input = Input::open(args)?;
    if settings.agent.is_none() {
        return run_alone(args, settings, input, None);
    }
    // Every message within this filter's --max-size goes to the agent, large ones too (the
    // agent's keys, trust and address book decide; held in memory here, as the agent holds
    // them). Over it, the filter passes it through itself (size-limit), which needs no key.
    let buf = input.read_start(args, settings.max_size.saturating_add(1))?;
    let len = buf.len() as u64;
    if len <= settings.max_size {
        if let Some(out) = via_agent(&settings, &buf) {
            write_output(args, &out?)?;
            return Ok(exit::OK);
        }
    }
    // A regular file is read again from its start; a stream goes on after what was read, which
    // `run_alone` takes for the whole message when it is shorter than a large one: a message
    // over --max-size was read only in part, and is read on up to that size first.
    let read = match input {
        Input::File(_) => None,
        _ if len > settings.max_size && len < pipeline::LARGE_MESSAGE => {
            let mut buf = buf;
            buf.extend(input.read_start(args, pipeline::LARGE_MESSAGE - len)?);
            Some(buf)
        }
        _ => Some(buf),
    };
    run_alone(args, settings, input, read)
}

/// The filter on its own. `read`: what was already read from a stream (the rest follows).
fn run_alone(
    args: &FilterArgs,
    settings: Settings,
    mut input: Input,
    read: Option<Vec<u8>>,
) -> Result<i32> {
    let ctx = Context::new(settings);
    // The raw message, when it was read into memory: harvesting looks in it for the
    // intermediates a signature carried.
    let mut in_memory: Option<Vec<u8>> = None;
    let processed = match &mut input {
        Input::File(f) => pipeline::process_file(&ctx, f)?,
        Input::Stdin | Input::Stream(_) => {
            let buf = match read {
                Some(b) => b,
                None => input.read_start(args, pipeline::LARGE_MESSAGE)?,
            };
            if (buf.len() as u64) < pipeline::LARGE_MESSAGE {
                let processed = pipeline::process(&ctx, &buf)?;
                in_memory = Some(buf);
                processed
            } else {
                // A large message goes to an unnamed temporary file (mode 0600, gone when
                // closed) so that its raw bytes are not held in memory while it is decoded.
                let mut tmp =
                    tempfile::tempfile().map_err(|e| Error::io("creating a temporary file", e))?;
                tmp.write_all(&buf)
                    .map_err(|e| Error::io("writing a temporary file", e))?;
                drop(buf);
                let copied = match &mut input {
                    Input::Stream(f) => std::io::copy(f, &mut tmp),
                    _ => std::io::copy(&mut std::io::stdin().lock(), &mut tmp),
                };
                copied.map_err(|e| Error::io("reading the message", e))?;
                pipeline::process_file(&ctx, &tmp)?
            }
        }
    };
    // Only verified signers of From are harvested (see `Processed::harvestable`).
    crate::addressbook::harvest_configured(&ctx, &processed, in_memory.as_deref());
    drop(in_memory);
    log::info!("{}", processed.status.x_smime_status());
    write_output(args, &processed.output)?;
    Ok(exit::OK)
}
