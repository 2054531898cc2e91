//! `smimed filter`: message on stdin, processed message on stdout, for procmail (`:0 fw`) and
//! Sieve's `filter`. Exit 0 whenever a message was written; 75 (writing nothing) for what may
//! pass later, so the caller keeps the original; 78 for configuration errors.

use std::io::{Read, Write};

use crate::cli::FilterArgs;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::pipeline::{self, Context};

pub fn run(args: &FilterArgs, settings: Settings) -> Result<i32> {
    let ctx = Context::new(settings);
    // The raw message, when it was read into memory: harvesting looks in it for the
    // intermediates a signature carried.
    let mut in_memory: Option<Vec<u8>> = None;
    let processed = match &args.input {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p.display(), e))?;
            pipeline::process_file(&ctx, &f)?
        }
        None => {
            let read_err = |e| Error::io("reading the message from stdin", e);
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            (&mut stdin)
                .take(pipeline::LARGE_MESSAGE)
                .read_to_end(&mut buf)
                .map_err(read_err)?;
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
    if let Some(dir) = &ctx.settings.certs {
        // Only verified signers of From are harvested (see `Processed::harvestable`).
        let store = crate::addressbook::store::Store::new(dir.clone());
        crate::addressbook::harvest(&store, &processed, in_memory.as_deref());
    }
    drop(in_memory);
    log::info!("{}", processed.status.x_smime_status());
    match &args.output {
        Some(p) => std::fs::write(p, &processed.output).map_err(|e| Error::io(p.display(), e))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&processed.output)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("writing the message to stdout", e))?;
        }
    }
    Ok(exit::OK)
}
