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
        Some(p) => std::fs::write(p, output).map_err(|e| Error::io(p.display(), e)),
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
    match crate::agent::request(socket, input) {
        Ok(crate::agent::Answer::Message(out)) => Some(Ok(out)),
        Ok(crate::agent::Answer::Failed(e)) => Some(Err(e)),
        Err(e) => {
            log::warn!("no agent on {} ({e}); working alone", socket.display());
            None
        }
    }
}

pub fn run(args: &FilterArgs, settings: Settings) -> Result<i32> {
    if settings.agent.is_none() {
        return run_alone(args, settings, None);
    }
    let mut buf = Vec::new();
    match &args.input {
        Some(p) => open_input(p)?
            .take(pipeline::LARGE_MESSAGE)
            .read_to_end(&mut buf)
            .map_err(|e| Error::input(p, e))?,
        None => std::io::stdin()
            .lock()
            .take(pipeline::LARGE_MESSAGE)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("reading the message from stdin", e))?,
    };
    // Large messages stay with the filter, which keeps them out of memory.
    if (buf.len() as u64) < pipeline::LARGE_MESSAGE {
        if let Some(out) = via_agent(&settings, &buf) {
            write_output(args, &out?)?;
            return Ok(exit::OK);
        }
    }
    let read = if args.input.is_none() {
        Some(buf)
    } else {
        None
    };
    run_alone(args, settings, read)
}

/// Opens the `--input` file; a folder is refused like a missing file (66).
fn open_input(p: &std::path::Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(p).map_err(|e| Error::input(p, e))?;
    match f.metadata() {
        Ok(m) if m.is_dir() => Err(Error::input(
            p,
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        )),
        _ => Ok(f),
    }
}

/// The filter on its own. `read`: what was already read from stdin (the rest follows).
fn run_alone(args: &FilterArgs, settings: Settings, read: Option<Vec<u8>>) -> Result<i32> {
    let ctx = Context::new(settings);
    // The raw message, when it was read into memory: harvesting looks in it for the
    // intermediates a signature carried.
    let mut in_memory: Option<Vec<u8>> = None;
    let processed = match &args.input {
        Some(p) => {
            let f = open_input(p)?;
            pipeline::process_file(&ctx, &f)?
        }
        None => {
            let read_err = |e| Error::io("reading the message from stdin", e);
            let mut stdin = std::io::stdin().lock();
            let buf = match read {
                Some(b) => b,
                None => {
                    let mut b = Vec::new();
                    (&mut stdin)
                        .take(pipeline::LARGE_MESSAGE)
                        .read_to_end(&mut b)
                        .map_err(read_err)?;
                    b
                }
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
                std::io::copy(&mut stdin, &mut tmp).map_err(read_err)?;
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
