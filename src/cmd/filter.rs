//! `smimed filter`: message on stdin, processed message on stdout, for procmail (`:0 fw`) and
//! Sieve's `filter`. Exit 0 whenever a message was written; 75 (writing nothing) for what may
//! pass later, so the caller keeps the original; 78 for configuration errors.

use std::io::{Read, Write};

use crate::cli::FilterArgs;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::pipeline::{self, Context};

pub fn run(_args: &FilterArgs, settings: Settings) -> Result<i32> {
    let ctx = Context::new(settings);
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| Error::io("reading the message from stdin", e))?;
    let processed = pipeline::process(&ctx, &input)?;
    if let Some(dir) = &ctx.settings.certs {
        // Only verified signers of From are harvested (see `Processed::harvestable`).
        let store = crate::addressbook::store::Store::new(dir.clone());
        crate::addressbook::harvest(&store, &processed, &input);
    }
    drop(input);
    log::info!("{}", processed.status.x_smime_status());
    let mut out = std::io::stdout().lock();
    out.write_all(&processed.output)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("writing the message to stdout", e))?;
    Ok(exit::OK)
}
