//! `smimed certs import|list|lookup|remove|export`: the address book from the command line.

use std::io::Write;

use crate::addressbook::{self, store::Store, AddressBook, BookConfig};
use crate::certs;
use crate::cli::CertsCommand;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::pipeline::Context;

fn out_line(out: &mut impl Write, line: &str) -> Result<()> {
    writeln!(out, "{line}").map_err(|e| Error::io("stdout", e))
}

pub fn run(cmd: &CertsCommand, settings: Settings) -> Result<i32> {
    let book_cfg = BookConfig::from_settings(&settings);
    let dir = match &book_cfg.certs {
        Some(d) => d.clone(),
        None => addressbook::default_store_dir()?,
    };
    let store = Store::new(dir);
    let mut out = std::io::stdout().lock();
    match cmd {
        CertsCommand::Import { files } => {
            let ctx = Context::new(settings);
            for f in files {
                let data = std::fs::read(f).map_err(|e| Error::input(f, e))?;
                let list =
                    addressbook::import(&store, &ctx, &data).map_err(|e| e.context(f.display()))?;
                for i in list {
                    let what = match (i.new, i.harvested) {
                        (true, true) => "imported, capabilities recorded",
                        (true, false) => "imported",
                        (false, true) => "known, capabilities recorded",
                        (false, false) => "already known",
                    };
                    out_line(
                        &mut out,
                        &format!("{what}: {}", addressbook::describe(&i.cert)),
                    )?;
                }
            }
            Ok(exit::OK)
        }
        CertsCommand::List => {
            for e in store.entries() {
                let caps = e
                    .meta
                    .capabilities()
                    .map(|l| l.iter().map(|c| c.name()).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| String::from("-"));
                out_line(
                    &mut out,
                    &format!(
                        "{}  source={} capabilities={}",
                        addressbook::describe(&e.cert),
                        if e.meta.source.is_empty() {
                            "?"
                        } else {
                            &e.meta.source
                        },
                        caps
                    ),
                )?;
            }
            Ok(exit::OK)
        }
        CertsCommand::Lookup { address } => {
            let ctx = Context::new(settings);
            let trust = || ctx.trust();
            let book = AddressBook::open(&book_cfg, &trust)?;
            let l = book.lookup(address)?;
            let code = match &l.chosen {
                Some(c) => {
                    let caps = c
                        .capabilities
                        .as_ref()
                        .map(|l| l.iter().map(|c| c.name()).collect::<Vec<_>>().join(","))
                        .unwrap_or_else(|| String::from("unknown"));
                    out_line(
                        &mut out,
                        &format!(
                            "{}: using {}\n  from {}; capabilities: {caps}",
                            l.address,
                            addressbook::describe(&c.cert),
                            c.source
                        ),
                    )?;
                    exit::OK
                }
                None => {
                    out_line(&mut out, &format!("{}: no usable certificate", l.address))?;
                    1
                }
            };
            for (c, why) in &l.refused {
                out_line(
                    &mut out,
                    &format!(
                        "  refused {} from {}: {why}",
                        certs::fingerprint(&c.cert),
                        c.source
                    ),
                )?;
            }
            Ok(code)
        }
        CertsCommand::Remove { what } => {
            let removed = store.remove(what)?;
            for fp in &removed {
                out_line(&mut out, &format!("removed {fp}"))?;
            }
            if removed.is_empty() {
                crate::error::say(format_args!("smimed: no stored certificate matches {what}"));
                return Ok(1);
            }
            Ok(exit::OK)
        }
        CertsCommand::Export { address } => {
            let ctx = Context::new(settings);
            let trust = || ctx.trust();
            let book = AddressBook::open(&book_cfg, &trust)?;
            match book.lookup(address)?.chosen {
                Some(c) => {
                    let pem = c
                        .cert
                        .to_pem()
                        .map_err(|e| Error::software(format!("encoding: {e}")))?;
                    out.write_all(&pem).map_err(|e| Error::io("stdout", e))?;
                    Ok(exit::OK)
                }
                None => {
                    crate::error::say(format_args!("smimed: no usable certificate for {address}"));
                    Ok(1)
                }
            }
        }
    }
}
