//! `smimed watch [--once] [--archive FOLDER|PATH | --no-archive] [--jobs N] [--recursive]
//! [--syslog] [--rescan SECONDS] MAILDIR…`: merges the flags over the config file's `[watch]`
//! table, sets up logging (stderr or syslog) and SIGTERM/SIGINT, and runs [`crate::watch`].
//!
//! Exit codes: 0 when done (or stopped by SIGTERM/SIGINT after finishing the messages in hand);
//! 75 when `--once` left messages for a temporary failure (run it again later); 64 for a
//! MAILDIR that is not a Maildir; 69 when syslog cannot be reached; 78 for configuration errors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::WatchArgs;
use crate::config::{self, FileConfig, Settings};
use crate::error::{exit, Error, Kind, Result};
use crate::pipeline::Context;
use crate::watch::{self, ArchiveMode, Options};

/// The archive option as written: a name without `/` is a Maildir++ folder of each MAILDIR
/// (a leading `.` is added when missing); anything else is a path.
fn archive_mode(value: &str, base: Option<&Path>) -> Result<ArchiveMode> {
    if value.is_empty() {
        return Err(Error::usage("--archive needs a folder name or a path"));
    }
    if value.contains('/') || value.starts_with('~') {
        Ok(ArchiveMode::Path(config::expand(Path::new(value), base)))
    } else if value.trim_start_matches('.').is_empty() {
        // `.` is the Maildir itself, `..` its parent: no folder of it.
        Err(Error::usage(format!(
            "--archive {value:?} names no folder of the Maildir (give a name, or a path with a /)"
        )))
    } else if value.starts_with('.') {
        Ok(ArchiveMode::Folder(value.to_string()))
    } else {
        Ok(ArchiveMode::Folder(format!(".{value}")))
    }
}

/// Logging for the IMAP watcher, chosen as for Maildirs (`--syslog`, `[watch] syslog`,
/// `--no-syslog`); `--recursive` and `--rescan` are the Maildir watcher's and are refused
/// rather than ignored.
pub fn imap_logging(
    args: &WatchArgs,
    settings: &Settings,
    verbose: u8,
    stderr_logging: fn(u8),
) -> Result<()> {
    if args.recursive || args.rescan.is_some() {
        return Err(Error::usage(
            "--recursive and --rescan are for Maildirs; an IMAP watcher names each mailbox \
             and is told of new mail by the server",
        ));
    }
    let file: FileConfig = config::read_file(settings.config_path.as_deref())?;
    if !args.no_syslog && (args.syslog || file.watch.syslog.unwrap_or(false)) {
        init_syslog(verbose)
    } else {
        stderr_logging(verbose);
        Ok(())
    }
}

fn init_syslog(verbose: u8) -> Result<()> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_MAIL,
        hostname: None,
        process: String::from("smimed"),
        pid: std::process::id(),
    };
    // SMIMED_SYSLOG_SOCKET: another socket than /dev/log (a chroot, a test).
    let custom = std::env::var_os("SMIMED_SYSLOG_SOCKET").map(PathBuf::from);
    let logger = match &custom {
        Some(path) => syslog::unix_custom(formatter, path),
        None => syslog::unix(formatter),
    }
    .map_err(|e| {
        let socket = custom.as_ref().map_or_else(
            || String::from("/dev/log (nor /var/run/syslog)"),
            |p| format!("{} (SMIMED_SYSLOG_SOCKET)", p.display()),
        );
        Error::new(
            Kind::Unavailable,
            format!(
                "--syslog: cannot log to {socket}: {e}; is a syslog daemon or journald \
                 running? Without --syslog, smimed logs to stderr"
            ),
        )
    })?;
    let level = match verbose {
        0 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger)))
        .map(|()| log::set_max_level(level))
        .map_err(|e| Error::software(format!("logger: {e}")))
}

pub fn run(
    args: &WatchArgs,
    settings: Settings,
    verbose: u8,
    stderr_logging: fn(u8),
) -> Result<i32> {
    let file: FileConfig = config::read_file(settings.config_path.as_deref())?;
    let base: Option<PathBuf> = settings
        .config_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let wc = file.watch;
    // Worker threads free tens of kilobytes per message: keep glibc from trimming (and
    // shooting down TLBs) after every one.
    crate::sys::tune_allocator();

    if !args.no_syslog && (args.syslog || wc.syslog.unwrap_or(false)) {
        init_syslog(verbose)?;
    } else {
        stderr_logging(verbose);
    }

    let archive = if args.no_archive {
        ArchiveMode::None
    } else if let Some(a) = &args.archive {
        archive_mode(a, None)?
    } else if wc.no_archive.unwrap_or(false) {
        ArchiveMode::None
    } else if let Some(a) = &wc.archive {
        archive_mode(a, base.as_deref()).map_err(|_| {
            Error::config("[watch] archive in the config file needs a folder name or a path")
        })?
    } else {
        ArchiveMode::Folder(watch::DEFAULT_ARCHIVE.to_string())
    };
    let maildirs: Vec<PathBuf> = if args.maildir.is_empty() {
        wc.maildir
            .iter()
            .map(|p| config::expand(p, base.as_deref()))
            .collect()
    } else {
        args.maildir.clone()
    };
    if maildirs.is_empty() {
        return Err(Error::usage(
            "no MAILDIR given (on the command line or as `maildir` in [watch])",
        ));
    }
    if args.jobs == Some(0) {
        return Err(Error::usage("--jobs must be at least 1"));
    }
    if args.jobs.is_none() && wc.jobs == Some(0) {
        return Err(Error::config(
            "[watch] jobs in the config file must be at least 1",
        ));
    }
    let jobs = args
        .jobs
        .or(wc.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let rescan = args.rescan.or(wc.rescan).unwrap_or(watch::DEFAULT_RESCAN);
    // The ledger's folder: shared with the IMAP watcher's state (--state-dir).
    let state_dir = match (&args.imap.state_dir, &wc.state_dir) {
        (Some(d), _) => Some(config::expand(d, None)),
        (None, Some(d)) => Some(config::expand(d, base.as_deref())),
        (None, None) => match config::default_state_dir() {
            Ok(d) => Some(d),
            Err(e) => {
                log::warn!(
                    "{e}; without it, copies a client files under another name are not \
                     recognised as ours"
                );
                None
            }
        },
    };
    let opts = Options {
        maildirs,
        archive,
        jobs,
        recursive: !args.no_recursive && (args.recursive || wc.recursive.unwrap_or(false)),
        once: args.once,
        rescan: Duration::from_secs(rescan.max(1)),
        progress: std::io::stderr().is_terminal(),
        state_dir,
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::software(format!("installing the signal handler: {e}")))?;
    }
    crate::keys::abandon_passphrase_commands_on(Arc::clone(&stop));

    if settings.keys.is_empty() {
        log::warn!(
            "no --key given: encrypted messages will be marked encryption=failed and archived"
        );
    }
    let ctx = Context::new(settings);
    let summary = watch::run(&ctx, &opts, &stop)?;
    if opts.once {
        crate::error::say(format_args!("smimed watch: {}", summary.line()));
        log::info!("done: {}", summary.line());
    } else {
        log::info!("stopping: {}", summary.line());
    }
    if opts.once && summary.deferred > 0 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(exit::TEMPFAIL);
    }
    Ok(exit::OK)
}
