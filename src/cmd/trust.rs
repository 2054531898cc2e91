//! `smimed trust list`: what the configured trust paths hold.

use std::io::Write;

use crate::cli::TrustCommand;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::trust::{self, TrustStore};

pub fn run(cmd: &TrustCommand, settings: Settings) -> Result<i32> {
    match cmd {
        TrustCommand::List => {
            let store = TrustStore::load(&settings.trust, &settings.crls)?;
            let mut out = std::io::stdout().lock();
            for line in trust::list_lines(&store) {
                writeln!(out, "{line}").map_err(|e| Error::io("stdout", e))?;
            }
            Ok(exit::OK)
        }
    }
}
