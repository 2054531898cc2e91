//! `smimed watch imaps://USER@HOST/MAILBOX…` (subcommand `watch-imap`): builds the accounts from
//! the URLs or the config file, starts one watcher thread per mailbox, handles SIGTERM/SIGINT
//! (the batch in hand is finished, then exit 0) and prints a summary after `--once`.
//! The work is in `crate::imap`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::cli::WatchImapArgs;
use crate::config::{self, FileConfig, Settings};
use crate::error::{exit, Error, Kind, Result};
use crate::imap::account::{
    self, Account, AccountConfig, SecretSource, WatchImapConfig, DEFAULT_ARCHIVE,
};
use crate::imap::watch::{self, Options, Stats, Stop};
use crate::pipeline::Context;

fn secret_source(
    args: &WatchImapArgs,
    wc: &WatchImapConfig,
    ac: Option<&AccountConfig>,
    base: Option<&Path>,
) -> SecretSource {
    let env = std::env::var("SMIMED_IMAP_PASSWORD")
        .ok()
        .filter(|v| !v.is_empty())
        .map(Zeroizing::new);
    let file_cmd = ac
        .and_then(|a| a.password_command.clone())
        .or_else(|| wc.password_command.clone());
    let file_file = ac
        .and_then(|a| a.password_file.clone())
        .or_else(|| wc.password_file.clone())
        .map(|p| config::expand(&p, base));
    if args.imap.password_command.is_some() || args.imap.password_file.is_some() {
        return SecretSource {
            command: args.imap.password_command.clone(),
            file: args
                .imap
                .password_file
                .as_deref()
                .map(|p| config::expand(p, None)),
            env: None,
        };
    }
    if env.is_some() {
        return SecretSource {
            env,
            ..SecretSource::default()
        };
    }
    SecretSource {
        command: file_cmd.clone(),
        file: if file_cmd.is_some() { None } else { file_file },
        env: None,
    }
}

/// The accounts to watch: the URLs given, else the config file's `[[imap]]` tables.
pub fn accounts(
    args: &WatchImapArgs,
    wc: &WatchImapConfig,
    file_accounts: &[AccountConfig],
    base: Option<&Path>,
) -> Result<Vec<Account>> {
    let archive_for = |ac: Option<&AccountConfig>| -> Option<String> {
        if args.no_archive {
            return None;
        }
        if let Some(a) = &args.archive {
            return Some(a.clone());
        }
        if let Some(ac) = ac {
            if ac.no_archive {
                return None;
            }
            if let Some(a) = &ac.archive {
                return Some(a.clone());
            }
        }
        if wc.no_archive {
            return None;
        }
        Some(
            wc.archive
                .clone()
                .unwrap_or_else(|| DEFAULT_ARCHIVE.to_string()),
        )
    };
    let mut out: Vec<Account> = Vec::new();
    let mut add = |url: &str, ac: Option<&AccountConfig>| -> Result<()> {
        let p = account::parse_url(url)?;
        let mut mailboxes: Vec<String> = match ac {
            Some(a) if !a.mailboxes.is_empty() => a.mailboxes.clone(),
            _ => vec![p.mailbox.clone().unwrap_or_else(|| "INBOX".to_string())],
        };
        for m in &mailboxes {
            account::check_mailbox_name(m)?;
        }
        // The same mailbox named twice (INBOX and inbox, RFC 3501 §5.1) is watched once. (Only
        // INBOX itself: whether `inbox.Sub` is INBOX's child depends on the server's separator,
        // and two mailboxes taken for one would leave one unwatched.)
        let inbox_folded = |m: &String| {
            if m.eq_ignore_ascii_case("INBOX") {
                String::from("INBOX")
            } else {
                m.clone()
            }
        };
        let mut seen = std::collections::HashSet::new();
        mailboxes.retain(|m| seen.insert(inbox_folded(m)));
        let archive = archive_for(ac);
        if let Some(a) = &archive {
            account::check_mailbox_name(a)?;
            // (Compared as the server may take them; sent as written.)
            let same = |m: &String| account::canonical_mailbox(m) == account::canonical_mailbox(a);
            if mailboxes.iter().any(same) {
                return Err(Error::usage(format!(
                    "the archive mailbox {a:?} cannot also be watched"
                )));
            }
        }
        let auth = args
            .imap
            .auth
            .or(ac.and_then(|a| a.auth))
            .or(wc.auth)
            .unwrap_or_default();
        let ca = args
            .imap
            .ca
            .as_deref()
            .map(|p| config::expand(p, None))
            .or_else(|| {
                ac.and_then(|a| a.ca.clone())
                    .or_else(|| wc.ca.clone())
                    .map(|p| config::expand(&p, base))
            });
        let insecure = args.imap.insecure || ac.is_some_and(|a| a.insecure) || wc.insecure;
        let secret = secret_source(args, wc, ac, base);
        // Same account given twice (several URLs): one Account, several mailboxes.
        if let Some(existing) = out.iter_mut().find(|a| {
            a.user == p.user && a.host == p.host && a.port == p.port && a.security == p.security
        }) {
            let known: std::collections::HashSet<String> =
                existing.mailboxes.iter().map(inbox_folded).collect();
            mailboxes.retain(|m| !known.contains(&inbox_folded(m)));
            existing.mailboxes.extend(mailboxes);
            return Ok(());
        }
        out.push(Account {
            user: p.user,
            host: p.host,
            port: p.port,
            security: p.security,
            mailboxes,
            auth,
            secret,
            ca,
            insecure,
            archive,
        });
        Ok(())
    };
    if args.urls.is_empty() {
        for ac in file_accounts {
            add(&ac.url, Some(ac))?;
        }
    } else {
        for u in &args.urls {
            add(u, None)?;
        }
    }
    if out.is_empty() {
        return Err(Error::usage(
            "no mailbox to watch: give imaps://USER@HOST/MAILBOX or [[imap]] accounts in the \
             config file",
        ));
    }
    Ok(out)
}

pub fn run(args: &WatchImapArgs, settings: Settings) -> Result<i32> {
    let file: FileConfig = config::read_file(settings.config_path.as_deref())?;
    let base = settings
        .config_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let wc = file.watch_imap;
    // Worker threads free tens of kilobytes per message: keep glibc from trimming (and
    // shooting down TLBs) after every one.
    crate::sys::tune_allocator();
    let accts = accounts(args, &wc, &file.imap, base.as_deref())?;
    let state_dir = match (&args.imap.state_dir, &wc.state_dir) {
        (Some(d), _) => config::expand(d, None),
        (None, Some(d)) => config::expand(d, base.as_deref()),
        (None, None) => config::default_state_dir()?,
    };
    let jobs = args
        .jobs
        .or(wc.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let opts = Options {
        once: args.once,
        jobs,
        state_dir,
        batch: 64,
        idle_refresh: Duration::from_secs(25 * 60),
        poll_interval: Duration::from_secs(wc.poll_interval.unwrap_or(60).max(1)),
    };
    let ctx = Arc::new(Context::new(settings));
    // A passphrase that cannot be had defers the messages needing a key until the next pass
    // (the passphrase command runs once per pass, not once per message).
    ctx.hold_key_failures();
    // Configuration errors in keys or trust show now, not at the first S/MIME message.
    for r in [ctx.identities().map(|_| ()), ctx.trust().map(|_| ())] {
        if let Err(e) = r {
            if e.kind != Kind::TempFail {
                return Err(e);
            }
        }
    }
    let stop = Arc::new(Stop::default());
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.flag.clone())
            .map_err(|e| Error::software(format!("installing a signal handler: {e}")))?;
    }
    crate::keys::abandon_passphrase_commands_on(stop.flag.clone());
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel::<Result<()>>();
    let mut running = 0usize;
    for acct in accts {
        let acct = Arc::new(acct);
        for mbox in acct.mailboxes.clone() {
            let (ctx, acct, opts, stop, stats, tx) = (
                ctx.clone(),
                acct.clone(),
                opts.clone(),
                stop.clone(),
                stats.clone(),
                tx.clone(),
            );
            std::thread::Builder::new()
                .name(format!("imap {mbox}"))
                .spawn(move || {
                    let r = watch::watch_mailbox(&ctx, &acct, &mbox, &opts, &stop, &stats);
                    let _ = tx.send(r);
                })
                .map_err(|e| Error::software(format!("starting a thread: {e}")))?;
            running += 1;
        }
    }
    drop(tx);
    let mut first_err: Option<Error> = None;
    while running > 0 {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(())) => running -= 1,
            Ok(Err(e)) => {
                running -= 1;
                log::error!("{e}");
                if first_err.is_none() {
                    first_err = Some(e);
                }
                if !args.once {
                    break; // a mailbox failed for good: stop everything
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stop.stopped() {
            break;
        }
    }
    // Let batches in hand finish; IDLE waits are simply abandoned.
    stop.flag.store(true, Ordering::SeqCst);
    let _hold = stop.work.write();
    if args.once {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stdout().lock(),
            format_args!("smimed watch: {}\n", stats.summary()),
        );
    } else {
        log::info!("smimed watch: {}", stats.summary());
    }
    let left = stats.retried.load(Ordering::Relaxed);
    if args.once && first_err.is_none() && left > 0 {
        first_err = Some(Error::tempfail(format!(
            "{left} message(s) left in place for a later run (temporary failure: the \
             passphrase command failed, or the server refused a copy, over quota say)"
        )));
    }
    match first_err {
        Some(e) => {
            crate::error::say(format_args!("smimed: {e}"));
            Ok(e.exit_code())
        }
        None => Ok(exit::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::account::{AuthMech, Security};

    #[test]
    fn accounts_from_config_file_and_urls() {
        let file: FileConfig = toml::from_str(
            r#"
            [watch_imap]
            archive = "Old"
            jobs = 3
            [[imap]]
            url = "imaps://me%40example.org@imap.example.org/INBOX"
            mailboxes = ["INBOX", "Lists/Entwürfe"]
            auth = "xoauth2"
            password_command = "oama access me@example.org"
            [[imap]]
            url = "imap://bob@127.0.0.1:1143/"
            no_archive = true
            password_file = "pw"
            "#,
        )
        .expect("config");
        let args = WatchImapArgs::default();
        let a = accounts(&args, &file.watch_imap, &file.imap, Some(Path::new("/cfg"))).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].user, "me@example.org");
        assert_eq!(a[0].mailboxes, ["INBOX", "Lists/Entwürfe"]);
        assert_eq!(a[0].auth, AuthMech::Xoauth2);
        assert_eq!(a[0].archive.as_deref(), Some("Old"));
        assert_eq!(a[0].security, Security::Tls);
        assert!(a[0].secret.command.is_some());
        assert_eq!(a[1].mailboxes, ["INBOX"]);
        assert_eq!(a[1].archive, None);
        assert_eq!(a[1].port, 1143);
        assert_eq!(a[1].secret.file.as_deref(), Some(Path::new("/cfg/pw")));
        // Names go to the server as written (on a server whose separator is `/`, `inbox.Sub`
        // is no child of INBOX); only the comparison with the archive folds INBOX.
        let file: FileConfig = toml::from_str(
            r#"
            [watch_imap]
            archive = "inbox.Old"
            [[imap]]
            url = "imap://bob@127.0.0.1:1143/inbox.Sub"
            "#,
        )
        .expect("config");
        let a = accounts(&args, &file.watch_imap, &file.imap, None).unwrap();
        assert_eq!(a[0].mailboxes, ["inbox.Sub"]);
        assert_eq!(a[0].archive.as_deref(), Some("inbox.Old"));
        // INBOX and inbox, in one account's list or as two URLs, are one mailbox.
        let file: FileConfig = toml::from_str(
            r#"
            [[imap]]
            url = "imap://bob@127.0.0.1:1143/"
            mailboxes = ["INBOX", "inbox", "Work", "INBOX.Sub", "inbox.Sub"]
            "#,
        )
        .expect("config");
        let a = accounts(&args, &file.watch_imap, &file.imap, None).unwrap();
        // (inbox.Sub is INBOX.Sub only where `.` is the separator: both are watched.)
        assert_eq!(a[0].mailboxes, ["INBOX", "Work", "INBOX.Sub", "inbox.Sub"]);
        let two = WatchImapArgs {
            urls: vec![
                "imap://bob@127.0.0.1:1143/INBOX".to_string(),
                "imap://bob@127.0.0.1:1143/inbox".to_string(),
            ],
            ..WatchImapArgs::default()
        };
        let a = accounts(&two, &Default::default(), &[], None).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].mailboxes, ["INBOX"]);

        // URLs on the command line replace the config's accounts; one account, two mailboxes
        let args = WatchImapArgs {
            urls: vec!["imaps://u@h/INBOX".into(), "imaps://u@h/Work".into()],
            archive: Some("Keep".into()),
            ..WatchImapArgs::default()
        };
        let a = accounts(&args, &file.watch_imap, &file.imap, None).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].mailboxes, ["INBOX", "Work"]);
        assert_eq!(a[0].archive.as_deref(), Some("Keep"));

        let args = WatchImapArgs {
            urls: vec!["imaps://u@h/Keep".into()],
            archive: Some("Keep".into()),
            ..WatchImapArgs::default()
        };
        assert!(accounts(&args, &file.watch_imap, &file.imap, None).is_err());
    }
}
