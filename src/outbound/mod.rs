//! The outbound side: from the message a mail client hands to `sendmail` to the copies the real
//! MTA gets. [`prepare`] decides (policy options, `X-Smime-Sign`/`X-Smime-Encrypt` headers, which
//! certificates exist), signs, encrypts and splits Bcc recipients into copies of their own;
//! [`mta::deliver`] hands every copy to the MTA.
//!
//! Invariants:
//! - every copy is built before the MTA is called: when anything fails (no identity, a missing
//!   certificate under `--encrypt always`, a passphrase command, OpenSSL) the MTA is never run,
//!   so a plaintext copy of a message that was to be encrypted cannot leave;
//! - a message is encrypted to every recipient of its copy and to the sender; a Bcc recipient
//!   (named in a Bcc field, or given as an argument but in neither To nor Cc) gets a copy of
//!   their own, encrypted to them and the sender only, so no RecipientInfo reveals them;
//! - no copy carries a Bcc or Resent-Bcc field or our X-Smime-Sign / X-Smime-Encrypt fields;
//! - AES-256-GCM only when every recipient of a copy (the sender included) advertised it in
//!   verified SMIMECapabilities, else a cipher all accept (`content_cipher`: AES-256-CBC when
//!   nothing is known); RSA-OAEP only for a recipient that advertised
//!   it; ECDH for EC keys;
//! - the header stays readable outside; a copy of it (never Bcc) is inside the cryptographic
//!   payload, marked `hp="cipher"` or `hp="clear"` (RFC 9788, without HP-Outer fields).

pub mod argv;
pub mod entity;
pub mod mta;

use openssl::x509::X509;

use crate::addressbook::{AddressBook, BookConfig, Candidate};
use crate::certs;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::mime::{self, Field};
use crate::ossl::{self, Capability, EncryptTo};
use crate::pipeline::Context;
pub use argv::Policy;

/// Resolved outbound options (flags over config file).
#[derive(Debug, Clone)]
pub struct Options {
    pub sign: Policy,
    pub encrypt: Policy,
    /// Opaque signed-data instead of multipart/signed.
    pub opaque: bool,
    pub book: BookConfig,
}

/// One message for the MTA.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    pub signed: bool,
    pub encrypted: bool,
}

fn header_policy(fields: &[Field], name: &str) -> Result<Option<Policy>> {
    // Every field is read: a "yes" is never dropped for a later "no" (which would send in clear
    // mail marked to be encrypted); fields that disagree are refused like a bad value.
    let mut found: Option<Policy> = None;
    for f in fields.iter().filter(|f| f.is(name)) {
        let p = match f.value().trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "always" => Policy::Always,
            "no" | "false" | "off" | "never" => Policy::Never,
            "auto" => Policy::Auto,
            other => {
                return Err(Error::data(format!(
                    "{name}: {other:?} is neither yes nor no"
                )))
            }
        };
        match found {
            Some(q) if q != p => {
                return Err(Error::data(format!(
                    "{name} is given more than once with different values"
                )))
            }
            _ => found = Some(p),
        }
    }
    Ok(found)
}

fn addresses_of(fields: &[Field], names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| names.iter().any(|n| f.is(n))) {
        match f.recipient_addresses() {
            Some(list) => out.extend(argv::addr_specs(&list)),
            None => out.extend(argv::split_addresses(&f.value())),
        }
    }
    out
}

fn contains_addr(list: &[String], a: &str) -> bool {
    list.iter().any(|x| crate::address::same(x, a))
}

fn push_unique(list: &mut Vec<String>, a: &str) {
    if !contains_addr(list, a) {
        list.push(a.to_string());
    }
}

/// X509v3 key usage bits and extended key usage flags (XKU_*) checked for own identities.
const KU_DIGITAL_SIGNATURE: u32 = 0x80;
const KU_NON_REPUDIATION: u32 = 0x40;
const KU_KEY_ENCIPHERMENT: u32 = 0x20;
const KU_KEY_AGREEMENT: u32 = 0x08;
const XKU_SMIME: u32 = 0x4;
const XKU_ANYEKU: u32 = 0x100;

fn email_eku(cert: &X509) -> bool {
    ossl::ext_key_usage(cert).is_none_or(|x| x & (XKU_SMIME | XKU_ANYEKU) != 0)
}

/// Whether a certificate may sign mail (RFC 8550 §4.4.2: digitalSignature or nonRepudiation
/// when key usage is present; emailProtection when EKU is present).
/// Whether a certificate of ours may sign mail: key usage and EKU allow it, and its key is one
/// smimed signs with as receivers expect: RSA of 2048 bits or more (RFC 8551 §4.3: smimed's
/// own filter, like others, calls a weaker signature untrusted), EC, or Ed25519. An RSA-PSS
/// key (id-RSASSA-PSS) or Ed448 is not: OpenSSL's CMS signing would label the first PKCS#1
/// v1.5, which no receiver verifies, and RFC 8419's SHAKE256 for the second is not offered.
fn may_sign(cert: &X509) -> bool {
    use openssl::pkey::Id;
    let usable = cert.public_key().is_ok_and(|k| match k.id() {
        Id::RSA => k.bits() >= 2048,
        Id::EC | Id::ED25519 => true,
        _ => false,
    });
    usable
        && ossl::key_usage(cert)
            .is_none_or(|k| k & (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION) != 0)
        && email_eku(cert)
}

/// Whether others may encrypt to a certificate (keyEncipherment for RSA, keyAgreement for EC,
/// when key usage is present; emailProtection when EKU is present).
fn may_encrypt_to(cert: &X509) -> bool {
    let need = match cert.public_key().map(|k| k.id()) {
        Ok(openssl::pkey::Id::RSA) => KU_KEY_ENCIPHERMENT,
        Ok(openssl::pkey::Id::EC) => KU_KEY_AGREEMENT,
        _ => return false,
    };
    ossl::key_usage(cert).is_none_or(|k| k & need != 0) && email_eku(cert)
}

/// Own identities whose certificate names `addr` and is valid now, the newest first.
fn identities_for<'a>(ids: &'a [Identity], addr: &str) -> Vec<&'a Identity> {
    let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
        return Vec::new();
    };
    let mut v: Vec<&Identity> = ids
        .iter()
        .filter(|i| certs::has_address(&i.cert, addr))
        .filter(|i| i.cert.not_after() >= now && i.cert.not_before() <= now)
        .collect();
    v.sort_by_key(|i| std::cmp::Reverse(certs::unix_time(i.cert.not_before()).unwrap_or(0)));
    v
}

/// The identity to sign as: its certificate names `sender` and may sign; the newest such. (With
/// separate signing and encryption certificates, as Exchange issues them, the encryption one
/// is never chosen to sign: nobody could verify it.)
fn identity_for<'a>(ids: &'a [Identity], sender: &str) -> Option<&'a Identity> {
    identities_for(ids, sender)
        .into_iter()
        .find(|i| may_sign(&i.cert))
}

/// A certificate to encrypt to, with what its owner advertised.
struct Recipient {
    cert: X509,
    capabilities: Option<Vec<Capability>>,
}

impl Recipient {
    fn advertises(&self, c: Capability) -> bool {
        self.capabilities.as_ref().is_some_and(|l| l.contains(&c))
    }
    /// Whether this recipient can be expected to decrypt content encrypted with `c`: when its
    /// verified SMIMECapabilities list content ciphers, one of those (RFC 8551 §2.7.1.1); else
    /// AES-CBC (what every S/MIME 3.2+ agent reads; GCM only when advertised).
    fn accepts(&self, c: Capability) -> bool {
        match &self.capabilities {
            Some(l) if l.iter().any(|x| x.is_cipher()) => l.contains(&c),
            _ => !c.is_gcm(),
        }
    }
}

/// The content cipher for a copy: the first of ours (AES-256-GCM, AES-128-GCM, AES-256-CBC,
/// AES-128-CBC) that every recipient accepts; AES-128-CBC, which RFC 8551 §2.7 makes everyone
/// support, when they have none in common.
fn content_cipher(list: &[&Recipient]) -> Capability {
    ossl::OUR_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| c.is_cipher())
        .find(|&c| list.iter().all(|r| r.accepts(c)))
        .unwrap_or(Capability::Aes128Cbc)
}

fn from_candidate(c: Candidate) -> Recipient {
    Recipient {
        cert: c.cert,
        capabilities: c.capabilities,
    }
}

/// Reads the message as sendmail(8) and Postfix's sendmail(1) do: to the end of the input, or,
/// without `-i`/`-oi` (`ignore_dots` false), up to a line holding a single "." (left out).
pub fn read_message(mut r: impl std::io::BufRead, ignore_dots: bool) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if ignore_dots {
        r.read_to_end(&mut out)?;
        return Ok(out);
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if matches!(line.as_slice(), b"." | b".\n" | b".\r\n") {
            break;
        }
        out.extend_from_slice(&line);
    }
    Ok(out)
}

/// `input` without a leading mbox envelope line (`From alice@example.org Fri Nov 27 …`), which
/// clients that keep mbox files may hand over: it is no header field, and sendmail and Postfix
/// drop it too. Copied into a signed part, it would be quoted by the next mbox writer.
fn without_envelope_line(input: &[u8]) -> &[u8] {
    // "From :" (a From field in the obsolete syntax, space before the colon) is a field.
    let field = input
        .get(4..)
        .map(|r| r.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b':'))
        .unwrap_or(false);
    if !input.starts_with(b"From ") || field {
        return input;
    }
    match memchr::memchr(b'\n', input) {
        Some(i) => &input[i + 1..],
        None => &[],
    }
}

/// `input` with its header section closed where Postfix's cleanup and sendmail close it: at
/// the first line that is neither a header field (`name:`) nor the continuation of one, a blank
/// line is inserted, so that such a line is body (signed and encrypted with it), never an outer
/// field; a header section that runs to the end of the input gets its line break and blank
/// line.
fn with_header_end(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let eol: &[u8] = mime::eol_of(input);
    let mut pos = 0;
    while pos < input.len() {
        let end = memchr::memchr(b'\n', &input[pos..]).map_or(input.len(), |i| pos + i + 1);
        let text = input[pos..end]
            .strip_suffix(b"\n")
            .unwrap_or(&input[pos..end]);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return std::borrow::Cow::Borrowed(input);
        }
        let continuation = pos > 0 && matches!(text[0], b' ' | b'\t');
        let field = memchr::memchr(b':', text).is_some_and(|c| {
            let name = &text[..c];
            let name = match name.iter().rposition(|&b| b != b' ' && b != b'\t') {
                Some(i) => &name[..=i],
                None => &name[..0],
            };
            !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
        });
        if !continuation && !field {
            let mut out = Vec::with_capacity(input.len() + 2);
            out.extend_from_slice(&input[..pos]);
            out.extend_from_slice(eol);
            out.extend_from_slice(&input[pos..]);
            return std::borrow::Cow::Owned(out);
        }
        pos = end;
    }
    let mut out = input.to_vec();
    if !out.ends_with(b"\n") {
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    std::borrow::Cow::Owned(out)
}

/// Longest line of a header field (RFC 5322 §2.1.1), without its line break.
const MAX_LINE: usize = 998;

/// A header field whose lines over 998 octets are folded at whitespace (a line break inserted
/// before a space or tab, which unfolding removes again); a line without whitespace to fold at
/// stays as it is. An MTA may wrap such lines itself, which would break a signature over them.
pub(crate) fn folded(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    folded_with(raw, true)
}

/// [`folded`], breaking only before a single blank when `runs` is false: mutt and neomutt
/// unfold a line break and the blanks around it into one space, so a break before a run of
/// blanks shows them fewer blanks than the field has (GMime shows them all).
pub(crate) fn folded_with(raw: &[u8], runs: bool) -> std::borrow::Cow<'_, [u8]> {
    if raw
        .split(|&b| b == b'\n')
        .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() <= MAX_LINE)
    {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let (text, eol): (&[u8], &[u8]) = if let Some(t) = line.strip_suffix(b"\r\n") {
            (t, b"\r\n")
        } else if let Some(t) = line.strip_suffix(b"\n") {
            (t, b"\n")
        } else {
            (line, b"")
        };
        let brk: &[u8] = if eol.is_empty() { b"\r\n" } else { eol };
        let mut rest = text;
        while rest.len() > MAX_LINE {
            // The last space or tab that leaves a first line of at most MAX_LINE octets, that
            // is not the line's first octet (a line of only whitespace is no fold) and that
            // follows a non-blank (the line before the fold must not end in a blank, which a
            // hop may trim): the break goes before a run of blanks, never inside it.
            let blank = |b: u8| b == b' ' || b == b'\t';
            let single = (1..=MAX_LINE).rev().find(|&j| {
                blank(rest[j]) && !blank(rest[j - 1]) && rest.get(j + 1).is_some_and(|&b| !blank(b))
            });
            let any = || {
                (1..=MAX_LINE)
                    .rev()
                    .find(|&j| blank(rest[j]) && !blank(rest[j - 1]))
            };
            match single.or_else(|| if runs { any() } else { None }) {
                Some(j) => {
                    out.extend_from_slice(&rest[..j]);
                    out.extend_from_slice(brk);
                    rest = &rest[j..];
                }
                None => break,
            }
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(eol);
    }
    std::borrow::Cow::Owned(out)
}

/// Builds the copies of `input` for the MTA. `cmdline` holds the recipients given as arguments,
/// `envelope_from` the `-f` address, `extract` whether `-t` was given.
pub fn prepare(
    ctx: &Context,
    opts: &Options,
    cmdline: &[String],
    envelope_from: Option<&str>,
    extract: bool,
    input: &[u8],
) -> Result<Vec<Outgoing>> {
    let input = with_header_end(without_envelope_line(input));
    let input: &[u8] = &input;
    let eol = mime::eol_of(input);
    let root = mime::split(input);
    let sign_policy = header_policy(&root.fields, "X-Smime-Sign")?.unwrap_or(opts.sign);
    let encrypt_policy = header_policy(&root.fields, "X-Smime-Encrypt")?.unwrap_or(opts.encrypt);

    // Recipients, and which are blind.
    let mut recipients: Vec<String> = Vec::new();
    for r in cmdline {
        push_unique(&mut recipients, r);
    }
    // A resent message (Resent-To, Resent-Cc or Resent-Bcc present) goes to its Resent-*
    // recipients, as sendmail -t and Postfix take them; Bcc and Resent-Bcc are blind either way.
    let resent = root
        .fields
        .iter()
        .any(|f| f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc"));
    let visible = if resent {
        addresses_of(&root.fields, &["Resent-To", "Resent-Cc"])
    } else {
        addresses_of(&root.fields, &["To", "Cc"])
    };
    let bcc = addresses_of(&root.fields, &["Bcc", "Resent-Bcc"]);
    if extract {
        for r in visible.iter().chain(bcc.iter()) {
            push_unique(&mut recipients, r);
        }
    }
    if recipients.is_empty() {
        return Err(Error::usage(
            "no recipients: give them as arguments or use -t",
        ));
    }
    let is_blind = |r: &str| contains_addr(&bcc, r) || !contains_addr(&visible, r);

    // What goes outside: every field but the content ones, Bcc, ours and MIME-Version.
    let outer: Vec<&Field> = root
        .fields
        .iter()
        .filter(|f| {
            !f.is_content()
                && !f.is("Bcc")
                && !f.is("Resent-Bcc")
                && !f.is("X-Smime-Sign")
                && !f.is("X-Smime-Encrypt")
                && !f.is("MIME-Version")
        })
        .collect();

    // The sender: the From address (what receivers compare the signer with), else -f. For a
    // resent message (a bounce), the person resending it: Resent-From of the topmost resent
    // block (RFC 5322 §3.6.6, "the mailbox of the agent who has reintroduced the message"),
    // who signs it and gets the encrypted copy, not the original author.
    let resent_from: Option<Field> = root.fields.iter().find(|f| f.is("Resent-From")).map(|f| {
        let colon = f.raw.iter().position(|&b| b == b':').unwrap_or(0);
        Field {
            raw: [&b"From"[..], &f.raw[colon..]].concat(),
        }
    });
    let sender_fields = match &resent_from {
        Some(f) => std::slice::from_ref(f),
        None => &root.fields[..],
    };
    let sender = match crate::verify::from_address(sender_fields) {
        crate::verify::FromAddress::One(a) => Some(a),
        crate::verify::FromAddress::Ambiguous(_) => envelope_from
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };

    // Signing decision.
    let ids = if sign_policy == Policy::Never && encrypt_policy == Policy::Never {
        None
    } else {
        Some(ctx.identities()?)
    };
    let identity = match (&ids, &sender) {
        (Some(ids), Some(s)) => identity_for(ids, s),
        _ => None,
    };
    let sign = match sign_policy {
        Policy::Never => false,
        Policy::Auto => identity.is_some(),
        Policy::Always => match (&sender, identity) {
            (_, Some(_)) => true,
            (None, None) => {
                return Err(Error::data(
                    "cannot sign: no single sender address (From or -f)",
                ))
            }
            (Some(s), None) => {
                return Err(Error::config(format!(
                    "cannot sign: no identity (--key) with a valid certificate for {s} \
                     (valid now, allowed to sign mail; an RSA key of 2048 bits or more, EC or \
                     Ed25519)"
                )))
            }
        },
    };

    // Encryption decision: every recipient and the sender need a usable certificate.
    let mut certs_for: Vec<(String, Recipient)> = Vec::new();
    let mut sender_cert: Option<Recipient> = None;
    let encrypt = if encrypt_policy == Policy::Never {
        false
    } else {
        let trust = || ctx.trust();
        let book = AddressBook::open(&opts.book, &trust)?;
        // An address we hold an identity for (the sender in Cc or Bcc, another address of
        // ours) is encrypted to with that identity's certificate, checked like any other, as
        // the sender is below: it need not be in the address book.
        let own = |addr: &str| -> Result<Option<Recipient>> {
            // Every identity for the address, the newest first: the first one others may
            // encrypt to (a signing-only certificate is passed over).
            for i in identities_for(ids.as_deref().map(|v| &v[..]).unwrap_or(&[]), addr) {
                if book.check_with(&i.cert, addr, &i.chain)?.is_ok() {
                    return Ok(Some(Recipient {
                        capabilities: book.recorded_capabilities(&i.cert),
                        cert: i.cert.clone(),
                    }));
                }
            }
            Ok(None)
        };
        let mut missing = Vec::new();
        for r in &recipients {
            let found = match own(r)? {
                Some(o) => Some(o),
                None => book.lookup(r)?.chosen.map(from_candidate),
            };
            match found {
                Some(c) => certs_for.push((r.clone(), c)),
                None => missing.push(r.clone()),
            }
        }
        // Under auto, a recipient without a certificate settles it: no need to check the sender.
        let settled = encrypt_policy == Policy::Auto && !missing.is_empty();
        match &sender {
            _ if settled => {}
            Some(s) => {
                sender_cert = match own(s)? {
                    Some(o) => Some(o),
                    None => book.lookup(s)?.chosen.map(from_candidate),
                };
                if sender_cert.is_none() {
                    missing.push(format!("{s} (the sender)"));
                }
            }
            None => missing.push(String::from("the sender (no single From address)")),
        }
        match (encrypt_policy, missing.is_empty()) {
            (_, true) => true,
            (Policy::Always, false) => {
                return Err(Error::data(format!(
                    "cannot encrypt: no usable certificate for {}",
                    missing.join(", ")
                )))
            }
            _ => {
                log::info!(
                    "not encrypting: no usable certificate for {}",
                    missing.join(", ")
                );
                false
            }
        }
    };

    if !sign && !encrypt {
        // Pass the message on as written, minus Bcc and our request fields.
        let mut out = Vec::with_capacity(input.len());
        for f in root.fields.iter().filter(|f| {
            !f.is("Bcc") && !f.is("Resent-Bcc") && !f.is("X-Smime-Sign") && !f.is("X-Smime-Encrypt")
        }) {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(root.separator);
        out.extend_from_slice(root.body);
        return Ok(vec![Outgoing {
            recipients,
            message: out,
            signed: false,
            encrypted: false,
        }]);
    }

    // The content to protect, 7-bit and CRLF canonical, with a protected copy of the header
    // (RFC 9788: the outer fields copied into the cryptographic payload, `hp` on its
    // Content-Type; `cipher` when encrypted, `clear` when only signed). Every field is copied,
    // raw 8-bit ones too (a message sent signed only is then signed opaque, below).
    let mut content = Vec::with_capacity(root.body.len() + 2048);
    for f in outer
        .iter()
        .filter(|f| !f.is("Received") && !f.is("Return-Path"))
    {
        content.extend_from_slice(&folded(&f.raw));
    }
    let hp = if encrypt { "cipher" } else { "clear" };
    let content_fields: Vec<&Field> = root.fields.iter().filter(|f| f.is_content()).collect();
    match content_fields.iter().find(|f| f.is("Content-Type")) {
        Some(ct) => {
            let raw = folded(&ct.raw);
            let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            // A value ending in ";" (or blanks) would get an empty parameter before ours.
            let end = raw
                .iter()
                .rposition(|&b| !matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(0, |i| i + 1);
            content.extend_from_slice(&raw[..end]);
            content.extend_from_slice(format!(";\r\n hp=\"{hp}\"\r\n").as_bytes());
        }
        None => {
            // 8-bit text without a label: UTF-8 when it decodes as UTF-8, else unknown-8bit
            // (RFC 1428) rather than a charset that would show it garbled.
            let charset = if root.body.is_ascii() {
                "us-ascii"
            } else if std::str::from_utf8(root.body).is_ok() {
                "utf-8"
            } else {
                "unknown-8bit"
            };
            content.extend_from_slice(
                format!("Content-Type: text/plain; charset={charset}; hp=\"{hp}\"\r\n").as_bytes(),
            );
        }
    }
    for f in content_fields.iter().filter(|f| !f.is("Content-Type")) {
        content.extend_from_slice(&folded(&f.raw));
    }
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(root.body);
    let content = entity::seven_bit(&content);

    let protected = match (sign, identity) {
        (true, Some(id)) => {
            let ssl = |e: openssl::error::ErrorStack| Error::software(format!("signing: {e}"));
            // seven_bit re-encodes every body; 8-bit bytes left over are in header fields
            // (a raw UTF-8 filename, a protected Subject). Those cannot be made 7-bit without
            // rewriting the fields, and a multipart/signed whose part an MTA may change is a
            // broken signature: sent alone, such a message is signed opaque instead. Inside an
            // envelope nothing on the way can change it.
            // The same for a header line over 998 octets with no whitespace to fold it at (a
            // very long file name): an MTA may wrap it.
            // The same for a header line that could not be made safe without choosing between
            // readers (see `entity::header_field`): one over 998 octets with no single blank to
            // fold at, or one that still ends in a blank.
            // The same for a line starting with "From " (RFC 2049 §4) that the re-encoding kept
            // as it was: in a forwarded multipart/signed or the mbox envelope line of an
            // attached message; the first mbox on the way turns it into ">From ".
            let eight_bit = !content.is_ascii()
                || content.split(|&b| b == b'\n').any(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    l.len() > MAX_LINE
                        || l.ends_with(b" ")
                        || l.ends_with(b"\t")
                        || l.starts_with(b"From ")
                });
            if eight_bit && !opts.opaque && !encrypt {
                log::info!(
                    "a line of the content is not 7-bit, over 998 octets, ends in a blank or starts with \"From \": signing opaque (application/pkcs7-mime) instead of multipart/signed"
                );
            }
            // SMIMEEncryptionKeyPreference names the certificate to encrypt to us with: the
            // one this message is encrypted to, else our newest identity others may encrypt to
            // (the signing certificate when it allows both); none when there is no such.
            let keypref: Option<X509> = match &sender_cert {
                Some(r) => Some(r.cert.clone()),
                None => sender.as_deref().and_then(|s| {
                    identities_for(ids.as_deref().map(|v| &v[..]).unwrap_or(&[]), s)
                        .into_iter()
                        .find(|i| may_encrypt_to(&i.cert))
                        .map(|i| i.cert.clone())
                }),
            };
            let detached = !(opts.opaque || (eight_bit && !encrypt));
            let der = ossl::sign_der(
                &id.cert,
                &id.key,
                &id.chain,
                keypref.as_deref(),
                &content,
                detached,
            )
            .map_err(ssl)?;
            if detached {
                entity::multipart_signed(&content, &der, ossl::signing_digest(&id.key).1)
            } else {
                entity::pkcs7_mime(&der, "signed-data")
            }
        }
        _ => content,
    };

    let assemble = |body_entity: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(body_entity.len() + 2048);
        for f in &outer {
            out.extend_from_slice(&mime::canonical_crlf(&folded(&entity::outer_field(&f.raw))));
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(body_entity);
        mime::convert_eol(&out, eol)
    };

    if !encrypt {
        return Ok(vec![Outgoing {
            recipients,
            message: assemble(&protected),
            signed: sign,
            encrypted: false,
        }]);
    }
    let sender_cert = sender_cert
        .ok_or_else(|| Error::software("encrypting without the sender's certificate"))?;

    // One copy for To/Cc, one per blind recipient.
    let mut groups: Vec<Vec<&(String, Recipient)>> = Vec::new();
    let open: Vec<_> = certs_for.iter().filter(|(r, _)| !is_blind(r)).collect();
    if !open.is_empty() {
        groups.push(open);
    }
    for b in certs_for.iter().filter(|(r, _)| is_blind(r)) {
        groups.push(vec![b]);
    }
    let mut copies = Vec::new();
    for g in groups {
        let mut list: Vec<&Recipient> = g.iter().map(|(_, c)| c).collect();
        list.push(&sender_cert);
        let mut seen = Vec::new();
        list.retain(|r| {
            let fp = certs::fingerprint(&r.cert);
            if seen.contains(&fp) {
                false
            } else {
                seen.push(fp);
                true
            }
        });
        let cipher = content_cipher(&list);
        let gcm = cipher.is_gcm();
        let to: Vec<EncryptTo<'_>> = list
            .iter()
            .map(|r| EncryptTo {
                cert: &r.cert,
                oaep: r.advertises(Capability::RsaOaep),
            })
            .collect();
        let der = ossl::encrypt_der(&to, &protected, cipher)
            .map_err(|e| Error::software(format!("encrypting: {e}")))?;
        let smime_type = if gcm {
            "authEnveloped-data"
        } else {
            "enveloped-data"
        };
        copies.push(Outgoing {
            recipients: g.iter().map(|(r, _)| r.clone()).collect(),
            message: assemble(&entity::pkcs7_mime(&der, smime_type)),
            signed: sign,
            encrypted: true,
        });
    }
    Ok(copies)
}

impl Options {
    /// Flags over the config file's keys (`mta`, `sign`, `encrypt`, `opaque`, `certs`,
    /// `vcard`). Returns the options and the MTA command split into words.
    pub fn resolve(
        args: &argv::SendmailArgs,
        settings: &crate::config::Settings,
    ) -> Result<(Options, Vec<String>)> {
        let file = &settings.outbound;
        let policy = |flag: Option<Policy>, key: &Option<String>, name: &str| -> Result<Policy> {
            match (flag, key) {
                (Some(p), _) => Ok(p),
                (None, Some(v)) => v
                    .parse::<Policy>()
                    .map_err(|e| Error::config(format!("config key {name}: {e}"))),
                (None, None) => Ok(Policy::Auto),
            }
        };
        let command = match (&args.mta, &file.mta) {
            (Some(m), _) => mta::split_command(m)?,
            (None, Some(m)) => {
                // The program named in the config file is a path like the file's others (`~`,
                // relative to the file's folder) when it has a `/` or starts with `~`; a bare
                // name is looked up in PATH.
                let mut words = mta::split_command(m)?;
                if let Some(prog) = words.first_mut() {
                    if prog.contains('/') || prog.starts_with('~') {
                        let base = settings
                            .config_path
                            .as_deref()
                            .and_then(std::path::Path::parent);
                        *prog = crate::config::expand(std::path::Path::new(prog.as_str()), base)
                            .to_string_lossy()
                            .into_owned();
                    }
                }
                words
            }
            (None, None) => mta::split_command(mta::DEFAULT_MTA)?,
        };
        Ok((
            Options {
                sign: policy(args.sign, &file.sign, "sign")?,
                encrypt: policy(args.encrypt, &file.encrypt, "encrypt")?,
                opaque: args.opaque.or(file.opaque).unwrap_or(false),
                book: BookConfig::from_settings(settings),
            },
            command,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_dot_ends_the_message_unless_dots_are_ignored() {
        let input = b"Subject: d\r\n\r\nline1\r\n.\r\nline3\r\n..\r\n";
        let got = read_message(&input[..], false).expect("read");
        assert_eq!(got, b"Subject: d\r\n\r\nline1\r\n");
        let got = read_message(&b"a\n.\nb\n"[..], false).expect("read");
        assert_eq!(got, b"a\n");
        // a final "." without a line break ends it too; ".." and ". " do not
        assert_eq!(read_message(&b"a\n."[..], false).expect("read"), b"a\n");
        assert_eq!(
            read_message(&b"a\n..\n. \nb"[..], false).expect("read"),
            b"a\n..\n. \nb"
        );
        assert_eq!(read_message(&input[..], true).expect("read"), input);
    }

    #[test]
    fn an_mbox_envelope_line_is_no_header_field() {
        let m = b"From alice@example.org Fri Nov 27 05:00:00 2026\nFrom: a@x\n\nhi\n";
        assert_eq!(without_envelope_line(m), b"From: a@x\n\nhi\n");
        assert_eq!(without_envelope_line(b"From: a@x\n\n"), b"From: a@x\n\n");
        assert_eq!(without_envelope_line(b"From : a@x\n\n"), b"From : a@x\n\n");
    }

    #[test]
    fn the_header_ends_at_the_first_line_that_is_no_field() {
        let m = b"From: a@x\nSubject: s\n folded\nThe launch code is 1234\nmore\n";
        assert_eq!(
            with_header_end(m).as_ref(),
            b"From: a@x\nSubject: s\n folded\n\nThe launch code is 1234\nmore\n"
        );
        let m = b"From: a@x\r\nSubject: hi";
        assert_eq!(
            with_header_end(m).as_ref(),
            b"From: a@x\r\nSubject: hi\r\n\r\n"
        );
        let m = b"From: a@x\nX-Odd-Name : v\n\nbody: not a field\n";
        assert!(matches!(with_header_end(m), std::borrow::Cow::Borrowed(_)));
        assert_eq!(with_header_end(b"From: a@x\n").as_ref(), b"From: a@x\n\n");
    }

    #[test]
    fn long_header_lines_are_folded_at_whitespace() {
        let ids: Vec<String> = (0..60).map(|i| format!("<id{i:04}@example.org>")).collect();
        let raw = format!("References: {}\r\n", ids.join(" "));
        assert!(raw.len() > 1000);
        let f = folded(raw.as_bytes()).into_owned();
        let text = String::from_utf8(f).expect("utf8");
        assert!(text.ends_with("\r\n"));
        for l in text.split("\r\n") {
            assert!(l.len() <= MAX_LINE, "{}", l.len());
        }
        // unfolding gives the field back
        assert_eq!(text.replace("\r\n ", " "), raw);
        // short fields, and a long token without whitespace, are left alone
        assert!(matches!(
            folded(b"Subject: hi\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        // a line of 999 octets with LF only is folded too
        let l999 = format!("X-L: {}\n", "a ".repeat(497));
        assert_eq!(l999.len(), 1000);
        assert!(folded(l999.as_bytes())
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= MAX_LINE + 1));
        assert!(matches!(
            folded(l999.as_bytes()),
            std::borrow::Cow::Owned(_)
        ));
        // a long token without whitespace cannot be folded: the field stays what it was
        let token = format!("X-Long: {}\n", "a".repeat(1200));
        let f = String::from_utf8(folded(token.as_bytes()).into_owned()).expect("utf8");
        assert_eq!(f.replace("\n ", " "), token);
    }
}
