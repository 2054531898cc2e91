//! The `smimed` binary: parse the command line, resolve settings, dispatch, map errors to
//! sysexits.h codes. Errors go to stderr: a filter's stdout is the message.

use clap::Parser;

use smimed::cli::{Cli, Command, Common};
use smimed::cmd;
use smimed::config::Settings;
use smimed::error::{exit, Error};

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<i32, Error> {
    let settings = Settings::resolve(&cli.common)?;
    match &cli.command {
        Command::Filter(args) => cmd::filter::run(args, settings),
        Command::Trust(t) => cmd::trust::run(t, settings),
        Command::Agent(a) => cmd::agent::run(a, settings),
        Command::Watch(w) => match w.imap_args()? {
            Some(imap) => {
                cmd::watch::imap_logging(w, &settings, cli.common.verbose, init_logging)?;
                cmd::watch_imap::run(&imap, settings)
            }
            None if w.maildir.is_empty() && watches_imap_only(&cli.common)? => {
                cmd::watch::imap_logging(w, &settings, cli.common.verbose, init_logging)?;
                cmd::watch_imap::run(&w.to_imap_args(), settings)
            }
            None => cmd::watch::run(w, settings, cli.common.verbose, init_logging),
        },
        Command::Certs(c) => cmd::certs::run(c, settings),
        Command::Sendmail(s) => {
            // Global options given before `sendmail` (`smimed --key K sendmail …`) join those
            // given after it.
            let mut args = smimed::outbound::argv::parse(&s.args)?;
            merge_common(&mut args.common, &cli.common);
            cmd::sendmail::run(&args)
        }
    }
}

/// `smimed watch` without mailboxes: the config file's `[[imap]]` accounts, unless its `[watch]`
/// table names Maildirs.
fn watches_imap_only(common: &Common) -> Result<bool, Error> {
    let path = smimed::config::config_path(common.config.as_deref());
    let file: smimed::config::FileConfig = smimed::config::read_file(path.as_deref())?;
    Ok(file.watch.maildir.is_empty() && !file.imap.is_empty())
}

/// `into` (given after `sendmail`) over `from` (before it); lists in command-line order, as
/// `cmd::sendmail::sendmail_words` gives them to the sendmail scanner.
fn merge_common(into: &mut Common, from: &Common) {
    let before = |a: &mut Vec<std::path::PathBuf>, b: &[std::path::PathBuf]| {
        let after = std::mem::take(a);
        a.extend(b.iter().cloned());
        a.extend(after);
    };
    fn either<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
        if a.is_none() {
            a.clone_from(b);
        }
    }
    // Every field named: a new global option that is not merged here does not compile.
    let Common {
        config,
        key,
        passphrase_file,
        passphrase_command,
        trust,
        crl,
        authserv_id,
        max_size,
        certs,
        vcard,
        ldap,
        ldap_base,
        agent,
        verbose,
    } = from;
    either(&mut into.config, config);
    before(&mut into.key, key);
    either(&mut into.passphrase_file, passphrase_file);
    either(&mut into.passphrase_command, passphrase_command);
    before(&mut into.trust, trust);
    before(&mut into.crl, crl);
    either(&mut into.authserv_id, authserv_id);
    either(&mut into.max_size, max_size);
    either(&mut into.certs, certs);
    before(&mut into.vcard, vcard);
    either(&mut into.ldap, ldap);
    either(&mut into.ldap_base, ldap_base);
    either(&mut into.agent, agent);
    into.verbose = into.verbose.saturating_add(*verbose);
}

/// `sendmail` / `smimed-sendmail` / `smimed sendmail …`: sendmail's grammar, not clap's.
fn sendmail_main(words: &[String]) -> i32 {
    let result = smimed::outbound::argv::parse(words).and_then(|args| {
        init_logging(args.common.verbose);
        cmd::sendmail::run(&args)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            smimed::error::say(format_args!("smimed: {e}"));
            e.exit_code()
        }
    }
}

fn main() {
    smimed::sys::ignore_file_size_signal();
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(words) = cmd::sendmail::sendmail_words(&argv) {
        std::process::exit(sendmail_main(&words));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if !matches!(cli.command, Command::Watch(_)) {
        // `watch` chooses between stderr and syslog itself.
        init_logging(cli.common.verbose);
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            smimed::error::say(format_args!("smimed: {e}"));
            e.exit_code()
        }
    };
    std::process::exit(code);
}
