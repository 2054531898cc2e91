//! The `smimed` binary: parse the command line, resolve settings, dispatch, map errors to
//! sysexits.h codes. Errors go to stderr: a filter's stdout is the message.

use clap::Parser;

use smimed::cli::{Cli, Command};
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
        Command::WatchImap(args) => cmd::watch_imap::run(args, settings),
    }
}

fn main() {
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
    init_logging(cli.common.verbose);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smimed: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
