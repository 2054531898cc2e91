//! The command line of `smimed sendmail`: sendmail's own flags as mail clients pass them (mutt,
//! neomutt, aerc, git send-email, msmtp users), mixed with smimed's long options. clap cannot
//! parse sendmail's grammar (`-oi`, `-fADDR`, `-B8BITMIME`, bare recipients after options), so
//! this is a small hand-written scanner; everything it does not need is passed on to the MTA
//! untouched, in order.
//!
//! Invariants: recipients never reach the MTA as options (they are handed over after `--`);
//! `-t` is consumed here (recipients are taken from the header instead) and never passed on;
//! SMTP and queue modes (`-bs`, `-bp`, …) are refused rather than guessed at.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::cli::Common;
use crate::error::{Error, Result};

/// A policy for signing or encrypting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Sign when an identity for the sender exists; encrypt when every recipient and the sender
    /// have a usable certificate.
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Policy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Policy::Auto),
            "always" | "yes" => Ok(Policy::Always),
            "never" | "no" => Ok(Policy::Never),
            other => Err(Error::usage(format!(
                "policy {other:?}: expected auto, always or never"
            ))),
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Default, Clone)]
pub struct SendmailArgs {
    pub common: Common,
    pub mta: Option<String>,
    pub sign: Option<Policy>,
    pub encrypt: Option<Policy>,
    /// Opaque (application/pkcs7-mime signed-data) instead of multipart/signed: `--opaque`,
    /// `--opaque=yes|no`, `--no-opaque` (over the config file's `opaque`).
    pub opaque: Option<bool>,
    /// Flags for the MTA, in the order given.
    pub passthrough: Vec<String>,
    /// Recipients from the command line (already split at commas).
    pub recipients: Vec<String>,
    /// `-f ADDR` / `-r ADDR`.
    pub envelope_from: Option<String>,
    /// `-t`: take recipients from To, Cc and Bcc too.
    pub extract: bool,
    /// `-i`, `-oi` or `-O IgnoreDots`: a line with a single "." does not end the message.
    pub ignore_dots: bool,
    pub help: bool,
}

/// sendmail flags whose value may be the next argument (sendmail's getopt string, with -o and
/// -b, which are handled on their own, and -q, which is refused).
const WITH_VALUE: &str = "ABCDFLMNOQRVXdefhpr";
/// sendmail flags without a value: one of them may start a cluster (`-ti` is `-t -i`, as
/// getopt reads it).
const BOOLEAN: &str = "GIUcimnstv";

/// Splits a recipient argument that may hold several addresses (`a@x, b@y`, `Name <a@x>`).
pub fn split_addresses(arg: &str) -> Vec<String> {
    match mailparse::addrparse(&crate::address::bracket_quoted_addr_specs(arg)) {
        Ok(list) => addr_specs(&list),
        // (mailparse takes no quoted local part outside angle brackets: `"a"@x`.)
        Err(_) => arg
            .split(',')
            .map(crate::address::plain)
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

/// The addr-specs of an address list, group members included, made plain
/// ([`crate::address::plain`]: no obsolete route, no needless quotes), empty ones left out.
pub fn addr_specs(list: &mailparse::MailAddrList) -> Vec<String> {
    let mut out = Vec::new();
    for a in list.iter() {
        match a {
            mailparse::MailAddr::Single(s) => out.push(crate::address::plain(&s.addr)),
            mailparse::MailAddr::Group(g) => {
                out.extend(g.addrs.iter().map(|s| crate::address::plain(&s.addr)))
            }
        }
    }
    out.retain(|a| !a.is_empty());
    out
}

fn long_value(name: &str, inline: Option<&str>, it: &mut VecDeque<String>) -> Result<String> {
    match inline {
        Some(v) => Ok(v.to_string()),
        None => it
            .pop_front()
            .ok_or_else(|| Error::usage(format!("--{name} needs a value"))),
    }
}

/// Parses the arguments after `sendmail` (or after argv[0] when called as `sendmail`).
pub fn parse(args: &[String]) -> Result<SendmailArgs> {
    let mut a = SendmailArgs::default();
    let mut it: VecDeque<String> = args.iter().cloned().collect();
    while let Some(arg) = it.pop_front() {
        let arg = &arg;
        if arg == "--" {
            for r in it.drain(..) {
                a.recipients.extend(split_addresses(&r));
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let c = &mut a.common;
            match name {
                "mta" => a.mta = Some(long_value(name, inline, &mut it)?),
                "sign" => a.sign = Some(long_value(name, inline, &mut it)?.parse()?),
                "encrypt" => a.encrypt = Some(long_value(name, inline, &mut it)?.parse()?),
                "opaque" => {
                    a.opaque = Some(match inline.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("yes" | "true" | "1" | "on") => true,
                        Some("no" | "false" | "0" | "off") => false,
                        Some(v) => {
                            return Err(Error::usage(format!(
                                "--opaque={v}: give yes or no (or --no-opaque)"
                            )))
                        }
                    })
                }
                "no-opaque" => a.opaque = Some(false),
                "certs" => c.certs = Some(PathBuf::from(long_value(name, inline, &mut it)?)),
                "vcard" => c
                    .vcard
                    .push(PathBuf::from(long_value(name, inline, &mut it)?)),
                "key" => c
                    .key
                    .push(PathBuf::from(long_value(name, inline, &mut it)?)),
                "trust" => c
                    .trust
                    .push(PathBuf::from(long_value(name, inline, &mut it)?)),
                "crl" => c
                    .crl
                    .push(PathBuf::from(long_value(name, inline, &mut it)?)),
                "ldap" => c.ldap = Some(long_value(name, inline, &mut it)?),
                "ldap-base" => c.ldap_base = Some(long_value(name, inline, &mut it)?),
                "config" => c.config = Some(PathBuf::from(long_value(name, inline, &mut it)?)),
                "agent" => c.agent = Some(PathBuf::from(long_value(name, inline, &mut it)?)),
                "passphrase-file" => {
                    c.passphrase_file = Some(PathBuf::from(long_value(name, inline, &mut it)?))
                }
                "passphrase-command" => {
                    c.passphrase_command = Some(long_value(name, inline, &mut it)?)
                }
                "authserv-id" => c.authserv_id = Some(long_value(name, inline, &mut it)?),
                "max-size" => {
                    let v = long_value(name, inline, &mut it)?;
                    c.max_size =
                        Some(v.parse().map_err(|_| {
                            Error::usage(format!("--max-size {v:?}: not a number"))
                        })?);
                }
                "verbose" => c.verbose = c.verbose.saturating_add(1),
                "help" => a.help = true,
                // An MTA's own long option (msmtp --account=…): pass it on.
                _ => a.passthrough.push(arg.clone()),
            }
            continue;
        }
        let Some(flag) = arg.strip_prefix('-') else {
            a.recipients.extend(split_addresses(arg));
            continue;
        };
        let Some(letter) = flag.chars().next() else {
            continue; // a lone "-": nothing
        };
        if BOOLEAN.contains(letter) && flag.len() > letter.len_utf8() {
            // A cluster: the first flag now, the rest as an argument of its own.
            it.push_front(format!("-{}", &flag[letter.len_utf8()..]));
            it.push_front(format!("-{letter}"));
            continue;
        }
        match letter {
            't' => a.extract = true,
            'b' => match flag {
                "bm" => a.passthrough.push(arg.clone()),
                _ => {
                    return Err(Error::usage(format!(
                        "sendmail mode {arg} is not supported by smimed sendmail (only -bm)"
                    )))
                }
            },
            // -q, -q30m, -qRsite, -qf…: a queue run, which reads no message.
            'q' => {
                return Err(Error::usage(format!(
                    "queue runs ({arg}) are not supported by smimed sendmail: run the MTA itself"
                )))
            }
            c if WITH_VALUE.contains(c) => {
                let attached = &flag[c.len_utf8()..];
                let value = if attached.is_empty() {
                    let v = it
                        .pop_front()
                        .ok_or_else(|| Error::usage(format!("-{c} needs a value")))?;
                    a.passthrough.push(arg.clone());
                    a.passthrough.push(v.clone());
                    v
                } else {
                    a.passthrough.push(arg.clone());
                    attached.to_string()
                };
                if c == 'f' || c == 'r' {
                    a.envelope_from = Some(value);
                } else if c == 'O' {
                    let v = value.to_ascii_lowercase();
                    if let Some(rest) = v.strip_prefix("ignoredots") {
                        a.ignore_dots = !matches!(rest, "=false" | "=f" | "=no" | "=n" | "=0");
                    }
                }
            }
            // -i, -oi, -oem, -odb, -v, -U, -G, -n, … : not ours, passed on as given.
            _ => {
                if flag == "i" || flag == "oi" {
                    a.ignore_dots = true;
                }
                a.passthrough.push(arg.clone())
            }
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn p(args: &[&str]) -> SendmailArgs {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parse")
    }

    #[test]
    fn opaque_can_be_turned_on_and_off() {
        // `--opaque=false` turned opaque signing on, and nothing turned a config file's
        // `opaque = true` off (`--no-opaque` went to the MTA).
        assert_eq!(p(&["--opaque", "x@example.org"]).opaque, Some(true));
        assert_eq!(p(&["--opaque=yes", "x@example.org"]).opaque, Some(true));
        assert_eq!(p(&["--opaque=false", "x@example.org"]).opaque, Some(false));
        let a = p(&["--no-opaque", "x@example.org"]);
        assert_eq!(a.opaque, Some(false));
        assert!(a.passthrough.is_empty(), "{:?}", a.passthrough);
        assert_eq!(p(&["x@example.org"]).opaque, None);
        let bad = ["--opaque=maybe".to_string()];
        assert_eq!(parse(&bad).map(|_| ()).unwrap_err().exit_code(), 64);
    }

    #[test]
    fn neomutt_argv_with_envelope_and_dsn() {
        let a = p(&[
            "-oi",
            "-B8BITMIME",
            "-f",
            "alice@example.org",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "bob@example.org",
            "cc@example.org",
            "secret@example.org",
        ]);
        assert_eq!(
            a.passthrough,
            [
                "-oi",
                "-B8BITMIME",
                "-f",
                "alice@example.org",
                "-N",
                "failure,delay",
                "-R",
                "hdrs"
            ]
        );
        assert_eq!(a.envelope_from.as_deref(), Some("alice@example.org"));
        assert_eq!(a.recipients.len(), 3);
        assert!(!a.extract);
    }

    #[test]
    fn aerc_bare_addresses_and_attached_values() {
        let a = p(&[
            "-oi",
            "-falice@example.org",
            "bob@example.org",
            "carol@example.org",
        ]);
        assert_eq!(a.passthrough, ["-oi", "-falice@example.org"]);
        assert_eq!(a.envelope_from.as_deref(), Some("alice@example.org"));
        assert_eq!(a.recipients, ["bob@example.org", "carol@example.org"]);
    }

    #[test]
    fn our_options_and_t_are_not_passed_on() {
        let a = p(&[
            "--mta",
            "/bin/true -x",
            "--encrypt=always",
            "--sign",
            "never",
            "--agent",
            "/run/a.sock",
            "-t",
            "-i",
            "--account=work",
            "a@x.org, B <b@y.org>",
        ]);
        assert_eq!(a.mta.as_deref(), Some("/bin/true -x"));
        assert_eq!(a.encrypt, Some(Policy::Always));
        assert_eq!(a.sign, Some(Policy::Never));
        assert_eq!(a.common.agent.as_deref(), Some(Path::new("/run/a.sock")));
        assert!(a.extract);
        assert_eq!(a.passthrough, ["-i", "--account=work"]);
        assert_eq!(a.recipients, ["a@x.org", "b@y.org"]);
    }

    #[test]
    fn flag_clusters_are_split_as_getopt_splits_them() {
        // -ti and -it are -t -i: -t is consumed, -i passed on; a value-taking flag ends a
        // cluster and takes the rest, or the next argument.
        let a = p(&["-ti", "bob@example.org"]);
        assert!(a.extract);
        assert_eq!(a.passthrough, ["-i"]);
        assert_eq!(a.recipients, ["bob@example.org"]);
        let a = p(&["-it"]);
        assert!(a.extract);
        assert_eq!(a.passthrough, ["-i"]);
        let a = p(&["-vtf", "alice@example.org", "bob@example.org"]);
        assert!(a.extract);
        assert_eq!(a.passthrough, ["-v", "-f", "alice@example.org"]);
        assert_eq!(a.envelope_from.as_deref(), Some("alice@example.org"));
        assert_eq!(a.recipients, ["bob@example.org"]);
        let a = p(&["-tfalice@example.org"]);
        assert_eq!(a.passthrough, ["-falice@example.org"]);
        assert_eq!(a.envelope_from.as_deref(), Some("alice@example.org"));
        // -oi, -odb, -bm and an -F value that looks like a cluster stay as they are.
        let a = p(&["-oi", "-odb", "-bm", "-F", "-ti", "bob@example.org"]);
        assert!(!a.extract);
        assert_eq!(a.passthrough, ["-oi", "-odb", "-bm", "-F", "-ti"]);
        assert!(!p(&["-t", "-v"]).ignore_dots);
        assert!(p(&["-ti"]).ignore_dots);
        assert!(p(&["-oi"]).ignore_dots);
        assert!(p(&["-O", "IgnoreDots=True"]).ignore_dots);
        assert!(!p(&["-OIgnoreDots=false"]).ignore_dots);
        // -e takes a value (sendmail's getopt: e:): -em is passed on whole.
        let a = p(&["-em", "-t"]);
        assert_eq!(a.passthrough, ["-em"]);
        assert!(a.extract);
        // A cluster hiding a mode is refused like the mode alone.
        assert!(parse(&["-ibs".to_string()]).is_err());
    }

    #[test]
    fn smtp_mode_is_refused() {
        assert!(parse(&["-bs".to_string()]).is_err());
        for q in ["-q", "-q30m", "-qRexample.org", "-qf"] {
            let e = parse(&[q.to_string(), "bob@example.org".to_string()]).expect_err(q);
            assert_eq!(e.kind, crate::error::Kind::Usage, "{q}");
        }
    }
}
