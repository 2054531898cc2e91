//! Connecting to an IMAP server: TCP, TLS (native-tls, i.e. the system's OpenSSL) either
//! implicit (`imaps://`) or by STARTTLS (`imap://`), then LOGIN or SASL XOAUTH2 / OAUTHBEARER.
//!
//! Invariants: the server certificate and host name are always verified (`--ca` replaces the
//! system roots with a private CA; there is no switch to skip verification); plaintext is used
//! only when the server offers no STARTTLS and the account allows it (loopback or `insecure`);
//! a refused login is `Kind::NoPerm` (exit 77), a network failure or a login the server
//! cannot check for now (`NO [UNAVAILABLE]` or `[INUSE]`, RFC 5530) `Kind::TempFail`; the secret
//! never appears in an error or a log line.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use zeroize::Zeroizing;

use super::account::{Account, AuthMech, Security};
use crate::error::{Error, Kind, Result};

/// An authenticated session over TLS or plain TCP.
pub type Session = ::imap::Session<::imap::Connection>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout for ordinary commands (IDLE sets its own).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Maps an imap crate error on `what` to our error kinds.
pub fn imap_err(what: impl std::fmt::Display, e: ::imap::Error) -> Error {
    match e {
        ::imap::Error::No(n) => {
            Error::tempfail(format!("{what}: server said NO: {}", n.information))
        }
        ::imap::Error::Bad(b) => {
            Error::software(format!("{what}: server said BAD: {}", b.information))
        }
        other => Error::tempfail(format!("{what}: {other}")),
    }
}

fn tls_connector(acct: &Account) -> Result<native_tls::TlsConnector> {
    tls_connector_for(acct.ca.as_deref(), "--ca", &acct.label())
}

/// A TLS client (TLS 1.2 or later, server certificate and host name verified) trusting the
/// system's roots, or only the certificates in `ca` (named `ca_name` in errors) when given.
/// Shared by the IMAP watcher and the LDAP address book source.
pub fn tls_connector_for(
    ca: Option<&std::path::Path>,
    ca_name: &str,
    label: &str,
) -> Result<native_tls::TlsConnector> {
    let mut b = native_tls::TlsConnector::builder();
    b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(ca) = ca {
        let bad =
            |e: &dyn std::fmt::Display| Error::config(format!("{ca_name} {}: {e}", ca.display()));
        let pem = std::fs::read(ca).map_err(|e| bad(&e))?;
        let certs = crate::certs::read_certificates(&pem).map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate"));
        }
        for c in certs {
            let der = c.cert.to_der().map_err(|e| bad(&e))?;
            let cert = native_tls::Certificate::from_der(&der).map_err(|e| bad(&e))?;
            b.add_root_certificate(cert);
        }
        b.disable_built_in_roots(true);
    }
    b.build()
        .map_err(|e| Error::config(format!("TLS setup for {label}: {e}")))
}

fn tls_handshake(acct: &Account, tcp: TcpStream) -> Result<::imap::Connection> {
    let connector = tls_connector(acct)?;
    let host = acct.host.trim_start_matches('[').trim_end_matches(']');
    let tls = connector.connect(host, tcp).map_err(|e| match e {
        native_tls::HandshakeError::Failure(e) => Error::new(
            Kind::Unavailable,
            format!(
                "TLS with {} failed (certificate or host name not verified? a private CA needs --ca): {e}",
                acct.label()
            ),
        ),
        native_tls::HandshakeError::WouldBlock(_) => {
            Error::tempfail(format!("TLS with {}: handshake interrupted", acct.label()))
        }
    })?;
    Ok(Box::new(tls))
}

fn tcp_connect(acct: &Account) -> Result<TcpStream> {
    let host = acct.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, acct.port)
        .to_socket_addrs()
        .map_err(|e| Error::tempfail(format!("resolving {}: {e}", acct.host)))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(COMMAND_TIMEOUT))
                    .and_then(|_| s.set_write_timeout(Some(COMMAND_TIMEOUT)))
                    .and_then(|_| s.set_nodelay(true))
                    .map_err(|e| Error::io(format!("socket to {}", acct.label()), e))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::tempfail(format!(
        "connecting to {}:{}: {}",
        acct.host,
        acct.port,
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    )))
}

/// The unauthenticated client, with TLS set up as the account asks.
fn open(acct: &Account) -> Result<::imap::Client<::imap::Connection>> {
    let tcp = tcp_connect(acct)?;
    match acct.security {
        Security::Tls => {
            let mut c = ::imap::Client::new(tls_handshake(acct, tcp)?);
            c.read_greeting()
                .map_err(|e| imap_err(format!("greeting of {}", acct.label()), e))?;
            Ok(c)
        }
        Security::StartTls => {
            let mut tcp = tcp;
            let offered = starttls_offered(&mut tcp)
                .map_err(|e| Error::io(format!("STARTTLS with {}", acct.label()), e))?;
            let conn: ::imap::Connection = if offered {
                tls_handshake(acct, tcp)?
            } else if acct.is_loopback() || acct.insecure {
                if !acct.is_loopback() {
                    log::warn!(
                        "{}: no STARTTLS; sending the password in clear text (--insecure)",
                        acct.label()
                    );
                }
                Box::new(tcp)
            } else {
                return Err(Error::new(
                    Kind::Unavailable,
                    format!(
                        "{} offers no STARTTLS: refusing to send credentials in clear text to a \
                         non-loopback server (use imaps://, or --insecure if you must)",
                        acct.label()
                    ),
                ));
            };
            let mut c = ::imap::Client::new(conn);
            c.greeting_read = true;
            Ok(c)
        }
    }
}

/// Reads one line (CRLF-terminated) byte by byte, so that nothing after it is consumed before
/// the TLS handshake.
fn read_line(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        if tcp.read(&mut b)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.push(b[0]);
        if line.len() > 64 * 1024 {
            return Err(std::io::Error::other("line too long"));
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The plaintext prelude of `imap://`: greeting, CAPABILITY, and STARTTLS when offered (the
/// imap crate's own STARTTLS cannot take a private CA). Returns whether TLS must start now.
fn starttls_offered(tcp: &mut TcpStream) -> std::io::Result<bool> {
    let greeting = read_line(tcp)?;
    if !greeting.starts_with("* OK") {
        return Err(std::io::Error::other(format!(
            "unexpected greeting: {}",
            greeting.trim_end()
        )));
    }
    tcp.write_all(b"s1 CAPABILITY\r\n")?;
    let mut offered = false;
    loop {
        let l = read_line(tcp)?;
        if l.starts_with("* ")
            && l.to_ascii_uppercase()
                .split_whitespace()
                .any(|w| w == "STARTTLS")
        {
            offered = true;
        }
        if l.starts_with("s1 ") {
            if !l.starts_with("s1 OK") {
                return Err(std::io::Error::other(format!(
                    "CAPABILITY: {}",
                    l.trim_end()
                )));
            }
            break;
        }
    }
    if !offered {
        return Ok(false);
    }
    tcp.write_all(b"s2 STARTTLS\r\n")?;
    loop {
        let l = read_line(tcp)?;
        if l.starts_with("s2 ") {
            if !l.starts_with("s2 OK") {
                return Err(std::io::Error::other(format!("STARTTLS: {}", l.trim_end())));
            }
            return Ok(true);
        }
    }
}

/// SASL XOAUTH2 / OAUTHBEARER client. On a failure the server sends an error challenge (JSON);
/// the client answers it with an empty response (XOAUTH2) or `^A` (OAUTHBEARER, RFC 7628 §3.2.3)
/// and the server then ends the exchange with NO.
struct OAuth<'a> {
    mech: AuthMech,
    user: &'a str,
    host: &'a str,
    port: u16,
    token: &'a str,
    sent: Cell<bool>,
}

impl ::imap::Authenticator for OAuth<'_> {
    type Response = Zeroizing<Vec<u8>>;
    fn process(&self, challenge: &[u8]) -> Self::Response {
        if self.sent.replace(true) {
            if !challenge.is_empty() {
                log::info!(
                    "OAuth2 error from the server: {}",
                    String::from_utf8_lossy(challenge)
                );
            }
            return Zeroizing::new(match self.mech {
                AuthMech::Oauthbearer => b"\x01".to_vec(),
                _ => Vec::new(),
            });
        }
        Zeroizing::new(match self.mech {
            AuthMech::Oauthbearer => format!(
                "n,a={},\x01host={}\x01port={}\x01auth=Bearer {}\x01\x01",
                self.user.replace('=', "=3D").replace(',', "=2C"),
                self.host,
                self.port,
                self.token
            )
            .into_bytes(),
            _ => format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token).into_bytes(),
        })
    }
}

/// Whether a NO carries a response code of RFC 5530 that says "try again later".
fn is_temporary_refusal(information: &str) -> bool {
    let t = information.trim_start().to_ascii_uppercase();
    t.starts_with("[UNAVAILABLE]") || t.starts_with("[INUSE]")
}

/// Connects, secures and authenticates.
pub fn connect(acct: &Account) -> Result<Session> {
    let client = open(acct)?;
    let secret = acct.secret.get()?;
    let refused = |e: ::imap::Error| -> Error {
        match e {
            // RFC 5530: the server cannot check now (its password database is down, the
            // account is in use): a temporary failure, retried like a lost connection.
            ::imap::Error::No(n) if is_temporary_refusal(&n.information) => {
                Error::tempfail(format!(
                    "{} cannot log {} in for now: {}",
                    acct.host, acct.user, n.information
                ))
            }
            ::imap::Error::No(n) => Error::new(
                Kind::NoPerm,
                format!(
                    "{} refused the login of {} ({}): {}",
                    acct.host,
                    acct.user,
                    match acct.auth {
                        AuthMech::Login => "wrong password?",
                        _ => "expired or wrong access token?",
                    },
                    n.information
                ),
            ),
            other => imap_err(format!("login to {}", acct.label()), other),
        }
    };
    let mut session = match acct.auth {
        AuthMech::Login => client
            .login(&acct.user, secret.as_str())
            .map_err(|(e, _)| refused(e))?,
        mech => {
            let mech_name = match mech {
                AuthMech::Oauthbearer => "OAUTHBEARER",
                _ => "XOAUTH2",
            };
            let auth = OAuth {
                mech,
                user: &acct.user,
                host: acct.host.trim_start_matches('[').trim_end_matches(']'),
                port: acct.port,
                token: secret.as_str(),
                sent: Cell::new(false),
            };
            client
                .authenticate(mech_name, &auth)
                .map_err(|(e, _)| refused(e))?
        }
    };
    drop(secret);
    // Dovecot sends CAPABILITY in the tagged OK; the crate does not keep it, so ask.
    let _ = session.capabilities();
    Ok(session)
}
