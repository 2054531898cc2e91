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
    let input = match &args.input {
        Some(p) => std::fs::read(p).map_err(|e| Error::io(p.display(), e))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("reading the message from stdin", e))?;
            buf
        }
    };
    let processed = pipeline::process(&ctx, &input)?;
    drop(input);
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
