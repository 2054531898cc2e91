//! `smimed agent`: one long-running process that keeps keys and trust loaded (one
//! [`Context`]) and runs the inbound pipeline for `smimed --agent SOCKET filter`, which procmail
//! and Sieve start once per message. Without it, every filter process pays again for library
//! start-up, key decoding and RSA blinding set-up, which cost more than the message itself.
//!
//! Protocol over a Unix stream socket, one message per connection:
//! request `u64 length (big-endian)` + message; reply `u8 kind` (0: processed message follows,
//! 1: error text follows) + `i32 exit code` + `u64 length` + bytes.
//!
//! Invariants: only a peer with our own uid is served (SO_PEERCRED), the socket is mode 0600 in
//! a folder we create 0700; the agent runs exactly the pipeline the filter would, so the bytes
//! out are the same; errors carry their sysexits code to the client (75 stays 75); nothing is
//! logged of the message. The filter falls back to working on its own when no agent answers.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::{self, Context, Processed};

/// Largest request accepted beyond the configured maximum message size (headroom for the
/// pipeline's own size-limit status, which it writes itself).
const SLACK: u64 = 1 << 20;

/// What runs on every processed message before the reply (the address-book harvest).
pub type AfterProcess = dyn Fn(&Context, &Processed, &[u8]) + Send + Sync;

/// $XDG_RUNTIME_DIR/smimed/agent.sock, when XDG_RUNTIME_DIR is set.
pub fn default_socket() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("smimed").join("agent.sock"))
}

/// Binds `socket` (replacing a stale one nobody answers on) and serves until the process ends.
/// `after` runs on every processed message before the reply (the address-book harvest).
pub fn serve(ctx: Arc<Context>, socket: &Path, after: Arc<AfterProcess>) -> Result<()> {
    let listener = bind(socket)?;
    log::info!("smimed agent listening on {}", socket.display());
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                log::warn!("agent: accept: {e}");
                continue;
            }
        };
        let (ctx, after) = (ctx.clone(), after.clone());
        std::thread::spawn(move || {
            if let Err(e) = handle(&ctx, conn, after.as_ref()) {
                log::warn!("agent: {e}");
            }
        });
    }
    Ok(())
}

fn bind(socket: &Path) -> Result<UnixListener> {
    let cfg = |e: std::io::Error| Error::config(format!("agent socket {}: {e}", socket.display()));
    if let Some(dir) = socket.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(cfg)?;
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(Error::config(format!(
                "an agent already listens on {}",
                socket.display()
            )));
        }
        std::fs::remove_file(socket).map_err(cfg)?;
    }
    let listener = UnixListener::bind(socket).map_err(cfg)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(cfg)?;
    Ok(listener)
}

fn handle(ctx: &Context, mut conn: UnixStream, after: &AfterProcess) -> std::io::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(&conn)?;
    if peer.uid != rustix::process::getuid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refused a client with uid {}", peer.uid.as_raw()),
        ));
    }
    let mut len = [0u8; 8];
    conn.read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    if len > ctx.limits.max_size.saturating_add(SLACK) {
        return reply(
            &mut conn,
            1,
            crate::error::exit::DATAERR,
            b"message larger than the agent accepts",
        );
    }
    let mut input = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut conn).take(len).read_to_end(&mut input)?;
    if input.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short request",
        ));
    }
    match pipeline::process(ctx, &input) {
        Ok(processed) => {
            after(ctx, &processed, &input);
            drop(input);
            reply(&mut conn, 0, crate::error::exit::OK, &processed.output)
        }
        Err(e) => reply(&mut conn, 1, e.exit_code(), e.message().as_bytes()),
    }
}

fn reply(conn: &mut UnixStream, kind: u8, code: i32, body: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(13);
    head.push(kind);
    head.extend_from_slice(&code.to_be_bytes());
    head.extend_from_slice(&(body.len() as u64).to_be_bytes());
    conn.write_all(&head)?;
    conn.write_all(body)?;
    conn.flush()
}

/// What the agent answered.
pub enum Answer {
    /// The processed message.
    Message(Vec<u8>),
    /// The pipeline's error, to be reported as the filter itself would.
    Failed(Error),
}

/// Sends one message to the agent on `socket`. An I/O error means no agent could be used (the
/// caller works on its own); an answer is final.
pub fn request(socket: &Path, input: &[u8]) -> std::io::Result<Answer> {
    let mut conn = UnixStream::connect(socket)?;
    conn.write_all(&(input.len() as u64).to_be_bytes())?;
    conn.write_all(input)?;
    conn.flush()?;
    let mut head = [0u8; 13];
    conn.read_exact(&mut head)?;
    let kind = head[0];
    let code = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[5..13]);
    let len = u64::from_be_bytes(len);
    let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut conn).take(len).read_to_end(&mut body)?;
    if body.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short answer from the agent",
        ));
    }
    if kind == 0 {
        return Ok(Answer::Message(body));
    }
    let msg = String::from_utf8_lossy(&body).into_owned();
    let kind = match code {
        crate::error::exit::TEMPFAIL => crate::error::Kind::TempFail,
        crate::error::exit::CONFIG => crate::error::Kind::Config,
        crate::error::exit::DATAERR => crate::error::Kind::Data,
        _ => crate::error::Kind::Software,
    };
    Ok(Answer::Failed(Error::new(kind, format!("agent: {msg}"))))
}
