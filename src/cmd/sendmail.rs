//! `smimed sendmail` (also argv[0] `sendmail` / `smimed-sendmail`): read the message, let
//! `outbound::prepare` build every copy, hand them to the MTA, exit with the MTA's code.
//!
//! With `--agent SOCKET` (config key `agent`) the copies are built by the `smimed agent` there,
//! with the agent's keys, trust and address book; this process then only reads the message,
//! asks, and runs the MTA. Before asking it builds no `Context` and does not touch OpenSSL, so
//! that a send costs little more than the agent's own work. When no agent answers it works
//! alone, with a warning.

use crate::agent;
use crate::config::Settings;
use crate::error::{exit, Error, Result};
use crate::outbound::{self, argv::SendmailArgs};
use crate::pipeline::Context;

/// Names under which the binary acts as sendmail.
const SENDMAIL_NAMES: &[&str] = &["sendmail", "smimed-sendmail"];

pub const USAGE: &str = "\
usage: smimed sendmail [OPTIONS] [SENDMAIL-FLAGS] [--] RECIPIENT...
       (also as a link named sendmail or smimed-sendmail)

Signs and encrypts the message on stdin, then runs the real MTA with the same flags and the
recipients as arguments. Its exit code is ours; our own failures use sysexits.h codes and the
MTA is then never run.

  --mta CMD                 the real sendmail (default /usr/sbin/sendmail), split like a shell
  --sign auto|always|never  auto: sign when an identity (--key) for the sender exists
  --encrypt auto|always|never
                            auto: encrypt when every recipient and the sender have a usable
                            certificate
  --opaque                  opaque signed-data instead of multipart/signed
  --certs DIR, --vcard PATH, --ldap URL, --ldap-base DN
                            address book; --key, --trust, --passphrase-*, --config as usual
  --agent SOCKET            let the smimed agent on SOCKET build the copies (its keys, trust
                            and address book); works alone when none answers
  -t                        recipients from To, Cc and Bcc as well
  -f ADDR, -F NAME, -i, -oi, -oem, -B…, -N…, -R…, -V…  passed on to the MTA
Per message: X-Smime-Sign: yes|no and X-Smime-Encrypt: yes|no (removed before sending).
";

/// smimed's global long options that take a value, which `smimed sendmail`'s own scanner
/// reads too (`argv::parse`).
const GLOBAL_WITH_VALUE: &[&str] = &[
    "config",
    "key",
    "passphrase-file",
    "passphrase-command",
    "trust",
    "crl",
    "authserv-id",
    "max-size",
    "certs",
    "vcard",
    "ldap",
    "ldap-base",
    "agent",
];

/// When the process should act as sendmail: the argument words for `argv::parse`. That is
/// everything after the command name when it is called `sendmail` or `smimed-sendmail`, and
/// otherwise the words around a `sendmail` subcommand that only global long options precede
/// (`smimed --agent S sendmail …`), which the sendmail scanner reads as it reads them after
/// `sendmail`; clap (and a first read of the config file) is then not needed. Anything else,
/// such as a short global flag, goes through clap.
pub fn sendmail_words(argv: &[String]) -> Option<Vec<String>> {
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())?;
    if SENDMAIL_NAMES.contains(&name.as_str()) {
        return Some(argv[1..].to_vec());
    }
    let mut i = 1;
    while let Some(w) = argv.get(i) {
        if w == "sendmail" {
            let mut words = argv[1..i].to_vec();
            words.extend_from_slice(&argv[i + 1..]);
            return Some(words);
        }
        let long = w.strip_prefix("--")?;
        match long.split_once('=') {
            Some((n, _)) if GLOBAL_WITH_VALUE.contains(&n) => i += 1,
            None if long == "verbose" => i += 1,
            None if GLOBAL_WITH_VALUE.contains(&long) => i += 2,
            _ => return None,
        }
    }
    None
}

/// With an agent configured: the copies it built, or its error (exit code and message as the
/// command would have them alone). None when no agent is configured or none answered: the
/// caller works alone. Nothing has been sent before this returns.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn via_agent(
    settings: &Settings,
    opts: &outbound::Options,
    args: &SendmailArgs,
    input: &[u8],
) -> Result<Option<Vec<outbound::Outgoing>>> {
    let Some(socket) = settings.agent.as_deref() else {
        return Ok(None);
    };
    let req = agent::SendmailRequest {
        sign: opts.sign,
        encrypt: opts.encrypt,
        opaque: opts.opaque,
        recipients: &args.recipients,
        envelope_from: args.envelope_from.as_deref(),
        extract: args.extract,
        message: input,
    };
    match agent::request_sendmail(socket, &req) {
        Ok(agent::SendmailAnswer::Copies(copies)) => {
            let c = &args.common;
            if !c.key.is_empty()
                || !c.trust.is_empty()
                || c.certs.is_some()
                || !c.vcard.is_empty()
                || c.ldap.is_some()
            {
                log::warn!(
                    "the agent on {} used its own keys, trust and address book; \
                     --key, --trust, --certs, --vcard and --ldap given here were not used",
                    socket.display()
                );
            }
            Ok(Some(copies))
        }
        Ok(agent::SendmailAnswer::Failed(e)) => Err(e),
        Ok(agent::SendmailAnswer::Declined(why)) => {
            log::warn!(
                "the agent on {} does not serve this ({why}); working alone",
                socket.display()
            );
            Ok(None)
        }
        // An agent that is there but does not answer in time (frozen, or busy asking a slow
        // directory): working alone, perhaps without the agent's keys or directory, could send
        // in clear what it would encrypt or refuse. A temporary failure instead; nothing sent.
        Err(e) if is_timeout(&e) => Err(Error::tempfail(format!(
            "the agent on {} did not answer in time ({e}): not sending",
            socket.display()
        ))),
        // The agent took the request and died or fell silent: for the same reason, a temporary
        // failure; nothing sent.
        Ok(agent::SendmailAnswer::Lost(e)) => Err(Error::tempfail(format!(
            "the agent on {} {} ({e}): not sending",
            socket.display(),
            if is_timeout(&e) {
                "did not answer in time"
            } else {
                "took the message but gave no answer"
            }
        ))),
        Err(e) => {
            log::warn!("no agent on {} ({e}); working alone", socket.display());
            Ok(None)
        }
    }
}

pub fn run(args: &SendmailArgs) -> Result<i32> {
    if args.help {
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), USAGE.as_bytes());
        return Ok(exit::OK);
    }
    let settings = Settings::resolve(&args.common)?;
    let (opts, mta) = outbound::Options::resolve(args, &settings)?;
    if let Some(prog) = mta.first() {
        // Before any key is unlocked: an MTA that is smimed itself would loop.
        outbound::mta::check_not_self(prog)?;
    }
    let input = outbound::read_message(std::io::stdin().lock(), args.ignore_dots)
        .map_err(|e| Error::io("reading the message from stdin", e))?;
    let copies = match via_agent(&settings, &opts, args, &input)? {
        Some(copies) => copies,
        None => {
            let ctx = Context::new(settings);
            // Trust files given are read now, even when no address-book lookup will need them:
            // a damaged or mistyped one is a configuration error (78), with nothing sent.
            if !ctx.settings.trust.is_empty() || !ctx.settings.crls.is_empty() {
                ctx.trust()?;
            }
            outbound::prepare(
                &ctx,
                &opts,
                &args.recipients,
                args.envelope_from.as_deref(),
                args.extract,
                &input,
            )?
        }
    };
    drop(input);
    for c in &copies {
        log::info!(
            "copy to {} recipient(s): signed={} encrypted={}",
            c.recipients.len(),
            c.signed,
            c.encrypted
        );
    }
    outbound::mta::deliver(&mta, &args.passthrough, &copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Option<Vec<String>> {
        let argv: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        sendmail_words(&argv)
    }

    #[test]
    fn sendmail_is_recognised_by_name_and_behind_global_long_options() {
        assert_eq!(
            words(&["/usr/sbin/sendmail", "-oi", "bob@x"]).as_deref(),
            Some(&["-oi".to_string(), "bob@x".to_string()][..])
        );
        assert_eq!(
            words(&["smimed", "sendmail", "-t"]),
            Some(vec!["-t".to_string()])
        );
        assert_eq!(
            words(&[
                "smimed",
                "--agent",
                "/run/s",
                "--config=c.toml",
                "--verbose",
                "sendmail",
                "--",
                "bob@x"
            ]),
            Some(
                [
                    "--agent",
                    "/run/s",
                    "--config=c.toml",
                    "--verbose",
                    "--",
                    "bob@x"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        // "sendmail" as an option's value, short flags, other subcommands: clap decides.
        assert_eq!(words(&["smimed", "--config", "sendmail", "filter"]), None);
        assert_eq!(words(&["smimed", "-v", "sendmail"]), None);
        assert_eq!(words(&["smimed", "--agent", "s", "filter"]), None);
        assert_eq!(words(&["smimed", "--help"]), None);
        assert_eq!(words(&["smimed"]), None);
    }
}
