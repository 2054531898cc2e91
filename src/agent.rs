//! `smimed agent`: one long-running process that keeps keys and trust loaded (one
//! [`Context`]) and does the work for the short-lived processes mail software starts once per
//! message: `smimed --agent SOCKET filter` (procmail, Sieve) and `smimed --agent SOCKET
//! sendmail` (mail clients). Without it, every process pays again for library start-up, key
//! decoding (and unlocking a passphrase-protected PKCS#12), RSA blinding set-up and certificate
//! parsing, which cost more than the message itself.
//!
//! # Protocol
//!
//! A Unix stream socket, one request per connection. Integers are big-endian; `str` is `u32
//! length` + UTF-8 bytes; `bytes` is `u64 length` + bytes.
//!
//! **Filter request** (the first format, unchanged): `u64 length` + message. Lengths from 2^56
//! up are refused, so a filter request never starts with the byte 0xFF.
//!
//! **Versioned request**: [`MAGIC`] (`FF 'S' 'M' 'I' 'M' 'E' 'D'`, which as a length would be
//! far above 2^56) + `u8 version` ([`VERSION`], now 1) + `u8 kind`. Kind 1 ([`KIND_SENDMAIL`]):
//! `u8 sign` and `u8 encrypt` (0 auto, 1 always, 2 never), `u8 flags` (1: opaque signing, 2: `-t`),
//! `u8 has_from` + (`str` envelope from, when 1), `u32 count` + `count` × `str` (the command-line
//! recipients), `bytes` message. Kind 2 ([`KIND_FILTER`]): `str` the client's authserv-id,
//! `bytes` message (the filter's request since the authserv-id travels: forged fields claiming
//! the client's are removed and the status is written under it).
//!
//! **Reply**: `u8 kind` + `i32 exit code` + a body:
//! - kind 0 (done): for a filter request, `bytes` processed message; for a sendmail request,
//!   `u32 count` copies, each `u8 flags` (1: signed, 2: encrypted), `u32 n` + `n` × `str`
//!   recipients, `bytes` message;
//! - kind 1 (failed): `bytes` one-line error text; the exit code is the sysexits code the
//!   command would have exited with on its own;
//! - kind 2 (declined: an unknown version or kind, a message over the agent's size limit):
//!   `bytes` reason; the client works alone.
//!
//! An agent from before the versioned format reads [`MAGIC`] as an impossible length and
//! answers kind 1, code 65, [`OLD_TOO_LARGE`]; the sendmail client takes that as "declined".
//!
//! Invariants: only a peer with our own uid is served (SO_PEERCRED), and clients talk only to an
//! agent of their own uid (SO_PEERCRED again); the socket is mode 0600 in a folder we create
//! 0700; the agent runs exactly the code the command would run alone
//! (`pipeline::process`, `outbound::prepare`) with the agent's own settings (keys, trust,
//! address book), so the result is the same; errors carry their sysexits code to the client (75
//! stays 75); nothing of a message is logged. A client works on its own when no agent answers,
//! and for sendmail nothing has left before the agent's answer, so working alone after any
//! failure to talk to the agent never sends twice.

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::addressbook::BookConfig;
use crate::error::{exit, Error, Kind, Result};
use crate::outbound::{self, Outgoing, Policy};
use crate::pipeline::{self, Context, Processed};

/// Largest request accepted beyond the configured maximum message size (headroom for the
/// pipeline's own size-limit status, which it writes itself).
const SLACK: u64 = 1 << 20;

/// Filter requests of this length or more are refused whatever the size limit: no valid length
/// starts with the first byte of [`MAGIC`].
const MAX_LENGTH: u64 = 1 << 56;

/// Start of every versioned request.
pub const MAGIC: [u8; 7] = *b"\xffSMIMED";
/// Version of the versioned request format.
pub const VERSION: u8 = 1;
/// Versioned request kind: `smimed sendmail`.
pub const KIND_SENDMAIL: u8 = 1;
/// Versioned request kind: `smimed filter` under the client's authserv-id.
pub const KIND_FILTER: u8 = 2;

/// Reply kinds.
const DONE: u8 = 0;
const FAILED: u8 = 1;
const DECLINED: u8 = 2;

/// What an agent from before the versioned format answers to one (it reads MAGIC as a length).
pub const OLD_TOO_LARGE: &str = "message larger than the agent accepts";

/// Limits on the small fields of a sendmail request.
const MAX_STR: u32 = 64 * 1024;
const MAX_RECIPIENTS: u32 = 10_000;
const MAX_COPIES: u32 = 100_000;

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
    // Up to POOL threads stay and take the next connections: a new thread per connection
    // paid for its start, OpenSSL's per-thread random generators and error state, about
    // 0.1 ms of a 1 ms send. Beyond POOL busy threads a connection gets a thread of its own
    // (a client that keeps one waiting never holds the others up).
    let (tx, rx) = std::sync::mpsc::channel::<(UnixStream, Slot)>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    // (idle pool threads, pool threads)
    let pool = Arc::new(std::sync::Mutex::new((0usize, 0usize)));
    let active = Arc::new(AtomicUsize::new(0));
    let idle = idle_timeout();
    let mut failed = AcceptFailures::default();
    loop {
        // At the cap, new clients wait in the listen queue (theirs is a non-blocking connect
        // retried until their deadline) until a connection ends.
        while active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let conn = match listener.accept() {
            Ok((c, _)) => {
                failed.reset();
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors (EMFILE), say: the connection stays queued, so an
                // immediate retry fails again. Back off, and say so once in a while only.
                failed.record(&e);
                continue;
            }
        };
        // A client that connects and then says nothing is dropped after `idle`.
        let _ = conn.set_read_timeout(Some(idle));
        let _ = conn.set_write_timeout(Some(idle));
        let slot = Slot::take(&active);
        let mut p = lock(&pool);
        if p.0 > 0 {
            p.0 -= 1;
            drop(p);
            match tx.send((conn, slot)) {
                Ok(()) => continue,
                Err(std::sync::mpsc::SendError((conn, slot))) => {
                    // Cannot happen while `rx` lives here; serve it on a thread of its own.
                    spawn_one(&ctx, &after, conn, slot);
                    continue;
                }
            }
        }
        if p.1 >= POOL {
            drop(p);
            spawn_one(&ctx, &after, conn, slot);
            continue;
        }
        p.1 += 1;
        drop(p);
        let (ctx, after, rx, pool) = (ctx.clone(), after.clone(), rx.clone(), pool.clone());
        std::thread::spawn(move || {
            let mut next = (conn, slot);
            loop {
                let (conn, slot) = next;
                if let Err(e) = handle(&ctx, conn, after.as_ref()) {
                    log::warn!("agent: {e}");
                }
                drop(slot);
                lock(&pool).0 += 1;
                let received = rx
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .recv();
                match received {
                    Ok(job) => next = job,
                    Err(_) => return,
                }
            }
        });
    }
}

/// Connections served at once; beyond it, new clients wait in the listen queue.
const MAX_CONNECTIONS: usize = 128;
/// Longest a client may keep the agent waiting for its next bytes (or for it to take the
/// answer) before its connection is dropped (tests shorten it with
/// `SMIMED_TEST_AGENT_IDLE_MS`).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn idle_timeout() -> std::time::Duration {
    std::env::var("SMIMED_TEST_AGENT_IDLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(IDLE_TIMEOUT, std::time::Duration::from_millis)
}

/// One connection being served: counted in the agent's total until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::SeqCst);
        Slot(active.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Failed accepts in a row: a growing pause between tries, and one warning per
/// [`ACCEPT_LOG_EVERY`] with the number of failures.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
    pause: std::time::Duration,
    logged: Option<std::time::Instant>,
}

const ACCEPT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl AcceptFailures {
    fn record(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
            log::warn!(
                "agent: accept: {e} ({} time(s) in a row); waiting before the next try",
                self.count
            );
            self.logged = Some(std::time::Instant::now());
        }
        self.pause = (self.pause * 2).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        );
        std::thread::sleep(self.pause);
    }

    fn reset(&mut self) {
        if self.count > 0 {
            log::info!("agent: accepting again after {} failure(s)", self.count);
        }
        self.count = 0;
        self.pause = std::time::Duration::ZERO;
    }
}

fn lock(m: &std::sync::Mutex<(usize, usize)>) -> std::sync::MutexGuard<'_, (usize, usize)> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Threads that stay for further connections (see [`serve`]).
const POOL: usize = 4;

/// Serves one connection on a thread of its own, which then ends.
fn spawn_one(ctx: &Arc<Context>, after: &Arc<AfterProcess>, conn: UnixStream, slot: Slot) {
    let (ctx, after) = (ctx.clone(), after.clone());
    std::thread::spawn(move || {
        if let Err(e) = handle(&ctx, conn, after.as_ref()) {
            log::warn!("agent: {e}");
        }
        drop(slot);
    });
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
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket left by an agent that is gone is replaced; anything else at that path
        // (a typo in --socket or `agent =`) is the user's.
        if !meta.file_type().is_socket() {
            return Err(Error::config(format!(
                "agent socket {}: something other than a socket is there; not replacing it",
                socket.display()
            )));
        }
        if let Ok(c) = UnixStream::connect(socket) {
            let other = rustix::net::sockopt::socket_peercred(&c)
                .ok()
                .filter(|p| p.uid != rustix::process::getuid())
                .map(|p| {
                    format!(
                        " (as uid {}: another user's listener, which our clients refuse)",
                        p.uid.as_raw()
                    )
                })
                .unwrap_or_default();
            return Err(Error::config(format!(
                "an agent already listens on {}{other}",
                socket.display()
            )));
        }
        std::fs::remove_file(socket).map_err(cfg)?;
    }
    let listener = UnixListener::bind(socket).map_err(cfg)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(cfg)?;
    Ok(listener)
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn read_u8(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Exactly `len` bytes (the caller has checked `len` against its limit).
fn read_exact_vec(r: &mut impl Read, len: u64) -> std::io::Result<Vec<u8>> {
    // Grown as data arrives: a length is a claim, not an allocation size.
    let mut out = Vec::with_capacity(usize::try_from(len.min(1 << 20)).unwrap_or(0));
    r.take(len).read_to_end(&mut out)?;
    if out.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short message from the peer",
        ));
    }
    Ok(out)
}

fn read_str(r: &mut impl Read) -> std::io::Result<String> {
    let len = read_u32(r)?;
    if len > MAX_STR {
        return Err(invalid("string field too long"));
    }
    String::from_utf8(read_exact_vec(r, u64::from(len))?).map_err(|_| invalid("not UTF-8"))
}

fn put_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    let len = u32::try_from(s.len())
        .ok()
        .filter(|&l| l <= MAX_STR)
        .ok_or_else(|| invalid("string field too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn policy_byte(p: Policy) -> u8 {
    match p {
        Policy::Auto => 0,
        Policy::Always => 1,
        Policy::Never => 2,
    }
}

fn policy_of(b: u8) -> std::io::Result<Policy> {
    match b {
        0 => Ok(Policy::Auto),
        1 => Ok(Policy::Always),
        2 => Ok(Policy::Never),
        _ => Err(invalid("unknown policy")),
    }
}

fn handle(ctx: &Context, conn: UnixStream, after: &AfterProcess) -> std::io::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(&conn)?;
    if peer.uid != rustix::process::getuid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refused a client with uid {}", peer.uid.as_raw()),
        ));
    }
    let mut rd = BufReader::new(&conn);
    let mut head = [0u8; 8];
    rd.read_exact(&mut head)?;
    if head[..7] == MAGIC {
        if head[7] != VERSION {
            return reply(
                &conn,
                DECLINED,
                exit::OK,
                format!("request version {} not supported", head[7]).as_bytes(),
            );
        }
        return match read_u8(&mut rd)? {
            KIND_SENDMAIL => handle_sendmail(ctx, &mut rd, &conn),
            KIND_FILTER => handle_filter(ctx, &mut rd, &conn, after),
            k => reply(
                &conn,
                DECLINED,
                exit::OK,
                format!("request kind {k} not supported").as_bytes(),
            ),
        };
    }
    let len = u64::from_be_bytes(head);
    if len >= MAX_LENGTH || len > ctx.limits.max_size.saturating_add(SLACK) {
        return reply(&conn, FAILED, exit::DATAERR, OLD_TOO_LARGE.as_bytes());
    }
    let input = read_exact_vec(&mut rd, len)?;
    match pipeline::process(ctx, &input) {
        Ok(processed) => {
            after(ctx, &processed, &input);
            drop(input);
            reply(&conn, DONE, exit::OK, &processed.output)
        }
        Err(e) => reply(&conn, FAILED, e.exit_code(), e.message().as_bytes()),
    }
}

/// The message of a versioned request (`bytes`), or None when it is over the agent's size
/// limit, which was then answered "declined" (the client works alone).
fn read_message(
    ctx: &Context,
    rd: &mut impl Read,
    conn: &UnixStream,
) -> std::io::Result<Option<Vec<u8>>> {
    let len = read_u64(rd)?;
    if len > ctx.limits.max_size.saturating_add(SLACK) {
        reply(
            conn,
            DECLINED,
            exit::OK,
            b"message larger than the agent's size limit",
        )?;
        return Ok(None);
    }
    read_exact_vec(rd, len).map(Some)
}

/// A filter request: the pipeline under the client's authserv-id (forged fields claiming it are
/// removed, the status written under it), with the agent's own keys, trust and address book.
fn handle_filter(
    ctx: &Context,
    rd: &mut impl Read,
    conn: &UnixStream,
    after: &AfterProcess,
) -> std::io::Result<()> {
    let authserv_id = read_str(rd)?;
    let Some(input) = read_message(ctx, rd, conn)? else {
        return Ok(());
    };
    match pipeline::process_as(ctx, &input, &authserv_id) {
        Ok(processed) => {
            after(ctx, &processed, &input);
            drop(input);
            reply(conn, DONE, exit::OK, &processed.output)
        }
        Err(e) => reply(conn, FAILED, e.exit_code(), e.message().as_bytes()),
    }
}

/// A sendmail request: `outbound::prepare` with the client's policy, recipients and message,
/// and the agent's own keys, trust and address book.
fn handle_sendmail(ctx: &Context, rd: &mut impl Read, conn: &UnixStream) -> std::io::Result<()> {
    let sign = policy_of(read_u8(rd)?)?;
    let encrypt = policy_of(read_u8(rd)?)?;
    let flags = read_u8(rd)?;
    let envelope_from = match read_u8(rd)? {
        0 => None,
        _ => Some(read_str(rd)?),
    };
    let count = read_u32(rd)?;
    if count > MAX_RECIPIENTS {
        return Err(invalid("too many recipients"));
    }
    let mut recipients = Vec::new();
    for _ in 0..count {
        recipients.push(read_str(rd)?);
    }
    let Some(message) = read_message(ctx, rd, conn)? else {
        return Ok(());
    };
    let message = zeroize::Zeroizing::new(message);
    let opts = outbound::Options {
        sign,
        encrypt,
        opaque: flags & 1 != 0,
        book: BookConfig::from_settings(&ctx.settings),
    };
    let prepared = outbound::prepare(
        ctx,
        &opts,
        &recipients,
        envelope_from.as_deref(),
        flags & 2 != 0,
        &message[..],
    );
    drop(message);
    match prepared {
        Ok(copies) => {
            log::info!("sendmail request: {} copies", copies.len());
            let mut body = Vec::new();
            body.extend_from_slice(&(copies.len() as u32).to_be_bytes());
            for c in &copies {
                body.push(u8::from(c.signed) | (u8::from(c.encrypted) << 1));
                body.extend_from_slice(&(c.recipients.len() as u32).to_be_bytes());
                for r in &c.recipients {
                    put_str(&mut body, r)?;
                }
                body.extend_from_slice(&(c.message.len() as u64).to_be_bytes());
                body.extend_from_slice(&c.message);
            }
            let mut w = conn;
            w.write_all(&[DONE])?;
            w.write_all(&exit::OK.to_be_bytes())?;
            w.write_all(&body)?;
            w.flush()
        }
        Err(e) => {
            log::info!("sendmail request failed (exit {})", e.exit_code());
            reply(conn, FAILED, e.exit_code(), e.message().as_bytes())
        }
    }
}

fn reply(mut conn: &UnixStream, kind: u8, code: i32, body: &[u8]) -> std::io::Result<()> {
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
    /// The agent does not serve this request (an older agent, its size limit): work alone.
    Declined(String),
}

/// An error answer as the command would have reported it: the same exit code.
fn failed(code: i32, body: &[u8]) -> Error {
    let msg = String::from_utf8_lossy(body);
    Error::new(
        Kind::from_exit_code(code),
        format!("agent: {}", msg.trim_end()),
    )
}

/// Reads a reply's `u64 length` + bytes, refusing lengths over `limit`.
fn read_body(conn: &mut impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let len = read_u64(conn)?;
    if len > limit {
        return Err(invalid("answer larger than expected"));
    }
    read_exact_vec(conn, len)
}

/// How long a client waits for the agent to read a request or to answer one. An agent that
/// hangs (say, on a passphrase command waiting for a prompt nobody sees) must not hang the MDA
/// or the mail client behind it: the client then works alone. Nothing is lost by that: the
/// agent never delivers or sends anything itself.
/// Short: Dovecot's Sieve filters run under `sieve_filter_exec_timeout` (10 s by default), and
/// a client that falls back still needs time to do the work itself. The agent answers an
/// ordinary message within milliseconds.
pub const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// How long a sendmail client waits for the agent's answer once the request is sent: the agent
/// may be asking an LDAP directory (a lookup takes at most
/// [`crate::addressbook::ldap::MAX_TIMEOUT`]). A client that gets no answer in time exits 75
/// (`cmd::sendmail`): working alone, perhaps without the agent's directory, could send in
/// clear what the agent would refuse.
pub const SENDMAIL_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection to the agent, with one deadline for connecting and sending the whole request,
/// and [`CLIENT_TIMEOUT`] of silence allowed while the answer is read.
struct Client {
    conn: UnixStream,
    timeout: std::time::Duration,
    deadline: std::time::Instant,
}

impl Client {
    /// Connects to the agent on `socket` (the tests shorten [`CLIENT_TIMEOUT`] with
    /// `SMIMED_TEST_AGENT_TIMEOUT_MS`). The connect never blocks: a frozen agent whose listen
    /// queue is full answers EAGAIN, retried until the deadline. The peer must run as our own
    /// user (SO_PEERCRED), as the agent demands of its clients: a socket path in a shared
    /// folder could be another user's listener, which would see the message and could answer
    /// anything.
    fn connect(socket: &Path) -> std::io::Result<Client> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let timeout = std::env::var("SMIMED_TEST_AGENT_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(CLIENT_TIMEOUT, std::time::Duration::from_millis);
        let deadline = std::time::Instant::now() + timeout;
        let addr = SocketAddrUnix::new(socket)?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        loop {
            match rustix::net::connect(&fd, &addr) {
                Ok(()) => break,
                Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the agent accepts no connection",
                    ))
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let conn = UnixStream::from(fd);
        conn.set_nonblocking(false)?;
        let peer = rustix::net::sockopt::socket_peercred(&conn)?;
        if peer.uid != rustix::process::getuid() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the listener runs as uid {}, not as this user",
                    peer.uid.as_raw()
                ),
            ));
        }
        conn.set_read_timeout(Some(timeout))?;
        Ok(Client {
            conn,
            timeout,
            deadline,
        })
    }

    /// Writes every part within the deadline (an agent that stops reading halfway does not
    /// get a fresh timeout for every write).
    fn send(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let left = self
                    .deadline
                    .saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the agent does not read the request",
                    ));
                }
                self.conn.set_write_timeout(Some(left))?;
                match self.conn.write(rest) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // The answer may take a while for a large message, but never a silence longer than
        // the timeout between two reads.
        self.conn.set_read_timeout(Some(self.timeout))
    }
}

/// Sends one message to the agent on `socket`. An I/O error (the agent missing, or silent for
/// [`CLIENT_TIMEOUT`]) means no agent could be used (the caller works on its own); an answer is
/// final.
pub fn request(socket: &Path, input: &[u8], authserv_id: &str) -> std::io::Result<Answer> {
    let mut client = Client::connect(socket)?;
    let mut head = Vec::with_capacity(32 + authserv_id.len());
    head.extend_from_slice(&MAGIC);
    head.push(VERSION);
    head.push(KIND_FILTER);
    put_str(&mut head, authserv_id)?;
    head.extend_from_slice(&(input.len() as u64).to_be_bytes());
    client.send(&[&head, input])?;
    let mut rd = BufReader::new(&client.conn);
    let kind = read_u8(&mut rd)?;
    let code = read_u32(&mut rd)? as i32;
    let body = read_body(&mut rd, u64::MAX)?;
    match kind {
        DONE => Ok(Answer::Message(body)),
        DECLINED => Ok(Answer::Declined(
            String::from_utf8_lossy(&body).into_owned(),
        )),
        // An agent from before the versioned format reads MAGIC as an impossible length.
        _ if body == OLD_TOO_LARGE.as_bytes() => Ok(Answer::Declined(String::from(
            "an agent from before versioned requests",
        ))),
        _ => Ok(Answer::Failed(failed(code, &body))),
    }
}

/// What `smimed sendmail` hands to the agent: what `outbound::prepare` needs from the client.
pub struct SendmailRequest<'a> {
    pub sign: Policy,
    pub encrypt: Policy,
    pub opaque: bool,
    /// Recipients from the command line.
    pub recipients: &'a [String],
    /// `-f` / `-r`.
    pub envelope_from: Option<&'a str>,
    /// `-t`.
    pub extract: bool,
    pub message: &'a [u8],
}

/// The agent's answer to a sendmail request.
pub enum SendmailAnswer {
    /// Every copy, ready for the MTA.
    Copies(Vec<Outgoing>),
    /// `outbound::prepare` failed there: the command's exit code and message.
    Failed(Error),
    /// The agent does not serve this request (older agent, size limit): work alone.
    Declined(String),
    /// The agent took the request but gave no whole answer (it died, was restarted, or fell
    /// silent): it may have been about to encrypt or refuse, so nothing may be sent.
    Lost(std::io::Error),
}

/// Sends a sendmail request to the agent on `socket`. An I/O error means no agent could be
/// reached (none listening, or it accepts no connection in time): nothing was sent anywhere.
/// Once connected, a failure is [`SendmailAnswer::Lost`].
pub fn request_sendmail(
    socket: &Path,
    req: &SendmailRequest<'_>,
) -> std::io::Result<SendmailAnswer> {
    let mut head = Vec::with_capacity(64 + req.recipients.len() * 32);
    head.extend_from_slice(&MAGIC);
    head.push(VERSION);
    head.push(KIND_SENDMAIL);
    head.push(policy_byte(req.sign));
    head.push(policy_byte(req.encrypt));
    head.push(u8::from(req.opaque) | (u8::from(req.extract) << 1));
    match req.envelope_from {
        Some(f) => {
            head.push(1);
            put_str(&mut head, f)?;
        }
        None => head.push(0),
    }
    let count = u32::try_from(req.recipients.len())
        .ok()
        .filter(|&c| c <= MAX_RECIPIENTS)
        .ok_or_else(|| invalid("too many recipients for the agent"))?;
    head.extend_from_slice(&count.to_be_bytes());
    for r in req.recipients {
        put_str(&mut head, r)?;
    }
    head.extend_from_slice(&(req.message.len() as u64).to_be_bytes());

    let mut client = Client::connect(socket)?;
    Ok(exchange_sendmail(&mut client, &head, req.message).unwrap_or_else(SendmailAnswer::Lost))
}

/// The sendmail request on a connected agent, and its answer.
fn exchange_sendmail(
    client: &mut Client,
    head: &[u8],
    message: &[u8],
) -> std::io::Result<SendmailAnswer> {
    // An agent that declines a message over its size limit answers before reading it all and
    // closes: the answer is still there after the failed write.
    let sent = client.send(&[head, message]);
    // (The tests' shortened timeout shortens this wait too.)
    let wait = if client.timeout < CLIENT_TIMEOUT {
        client.timeout
    } else {
        SENDMAIL_ANSWER_TIMEOUT
    };
    client.conn.set_read_timeout(Some(wait))?;
    let mut rd = BufReader::new(&client.conn);
    let kind = match (read_u8(&mut rd), sent) {
        (Ok(k), Ok(())) => k,
        (Ok(k), Err(_)) if k != DONE => k,
        (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
    };
    let code = read_u32(&mut rd)? as i32;
    match kind {
        DONE => {}
        FAILED | DECLINED => {
            let body = read_body(&mut rd, u64::from(MAX_STR))?;
            let text = String::from_utf8_lossy(&body).into_owned();
            if kind == DECLINED || (code == exit::DATAERR && text == OLD_TOO_LARGE) {
                return Ok(SendmailAnswer::Declined(text));
            }
            return Ok(SendmailAnswer::Failed(failed(code, &body)));
        }
        _ => return Err(invalid("unknown answer kind")),
    }
    let n = read_u32(&mut rd)?;
    if n > MAX_COPIES {
        return Err(invalid("too many copies in the answer"));
    }
    let mut copies = Vec::new();
    for _ in 0..n {
        let flags = read_u8(&mut rd)?;
        let count = read_u32(&mut rd)?;
        if count > MAX_RECIPIENTS {
            return Err(invalid("too many recipients in the answer"));
        }
        let mut recipients = Vec::new();
        for _ in 0..count {
            recipients.push(read_str(&mut rd)?);
        }
        let message = read_body(&mut rd, u64::MAX)?;
        copies.push(Outgoing {
            recipients,
            message,
            signed: flags & 1 != 0,
            encrypted: flags & 2 != 0,
        });
    }
    Ok(SendmailAnswer::Copies(copies))
}
