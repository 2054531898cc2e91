//! `smimed agent`: serve `smimed --agent SOCKET filter` and `smimed --agent SOCKET sendmail`
//! with keys, trust and the address book loaded once.

use std::sync::Arc;

use crate::cli::AgentArgs;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::pipeline::Context;

pub fn run(args: &AgentArgs, settings: Settings) -> Result<i32> {
    let socket = args
        .socket
        .clone()
        .or_else(|| settings.agent.clone())
        .or_else(crate::agent::default_socket)
        .ok_or_else(|| Error::usage("no --socket given and XDG_RUNTIME_DIR is not set"))?;
    crate::sys::tune_allocator();
    let ctx = Arc::new(Context::new(settings));
    // Load keys and trust now: a configuration error shows at start, not per message, and the
    // first message does not pay for it. A temporary failure (passphrase command) is retried
    // per message instead.
    if !ctx.settings.keys.is_empty() {
        if let Err(e) = ctx.identities() {
            if !crate::pipeline::is_temporary(&e) {
                return Err(e);
            }
            log::warn!("keys not loaded yet: {e}");
        }
    }
    ctx.trust()?;
    let after = Arc::new(
        |ctx: &Context, p: &crate::pipeline::Processed, input: &[u8]| {
            crate::addressbook::harvest_configured(ctx, p, Some(input))
        },
    );
    crate::agent::serve(ctx, &socket, after)?;
    Ok(crate::error::exit::OK)
}
