//! MIME entities as bytes: the header section split into raw fields (so that what we keep is
//! written back byte for byte), the body, line endings, and the S/MIME classification of an
//! entity. Semantic parsing (Content-Type parameters, transfer decoding, multipart splitting,
//! addresses) is mailparse's; this module only keeps track of where the bytes are.

use std::cell::RefCell;
use std::rc::Rc;

use mailparse::{parse_content_type, ParsedContentType};

/// How many parsed Content-Type fields each thread keeps (see [`Entity::content_type`]).
const CT_MEMO_SIZE: usize = 8;

thread_local! {
    /// Recently parsed Content-Type fields, most recent last: (the field's bytes, the parse).
    static CT_MEMO: RefCell<Vec<(Vec<u8>, Rc<ParsedContentType>)>> = const { RefCell::new(Vec::new()) };
}

/// Empties this thread's memo of parsed Content-Type fields, so that no field of a message
/// (those of decrypted layers included) stays in memory after the message.
pub fn forget_content_types() {
    CT_MEMO.with(|memo| memo.borrow_mut().clear());
}

/// One header field, exactly as it was: name, colon, value, folding and line ending.
#[derive(Debug, Clone)]
pub struct Field {
    pub raw: Vec<u8>,
}

impl Field {
    pub fn new(name: &str, value: &str, eol: &[u8]) -> Field {
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(eol);
        Field { raw }
    }

    /// The field name (bytes before the colon, trailing blanks removed); empty for a line
    /// without a colon.
    pub fn name(&self) -> &[u8] {
        match self.raw.iter().position(|&b| b == b':') {
            Some(i) => trim_end(&self.raw[..i]),
            None => b"",
        }
    }

    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    pub fn is_content(&self) -> bool {
        let n = self.name();
        n.len() >= 8 && n[..8].eq_ignore_ascii_case(b"content-")
    }

    /// The address list of an address field, parsed on the field's own tokens (mailparse's
    /// `addrparse_header`): an RFC 2047 encoded display name holding a comma ("Müller, Bob")
    /// stays one name. Parsing the decoded value instead would split it in two.
    pub fn addresses(&self) -> Option<mailparse::MailAddrList> {
        let raw = without_commas_after_groups(&self.raw);
        let (h, _) = mailparse::parse_header(&raw).ok()?;
        mailparse::addrparse_header(&h).ok()
    }

    /// [`Field::addresses`] of a recipient field, reading bare addr-specs with a quoted local
    /// part (`"x.y"@example.net`) too ([`crate::address::bracket_quoted_addr_specs`]).
    pub fn recipient_addresses(&self) -> Option<mailparse::MailAddrList> {
        let Ok(raw) = std::str::from_utf8(&self.raw) else {
            return self.addresses();
        };
        match crate::address::bracket_quoted_addr_specs(raw) {
            std::borrow::Cow::Borrowed(_) => self.addresses(),
            std::borrow::Cow::Owned(bracketed) => Field {
                raw: bracketed.into_bytes(),
            }
            .addresses(),
        }
    }

    /// The unfolded value, decoded as far as mailparse decodes header values (RFC 2047). A
    /// value with more than [`MAX_ENCODED_WORDS`] encoded-word starts is left undecoded:
    /// mailparse's decoder takes time quadratic in their number (half a megabyte of `=?` took
    /// seconds), and no real field holds that many.
    pub fn value(&self) -> String {
        if memchr::memmem::find_iter(&self.raw, b"=?")
            .nth(MAX_ENCODED_WORDS)
            .is_some()
        {
            return self.value_undecoded();
        }
        match mailparse::parse_header(&self.raw) {
            Ok((h, _)) => h.get_value(),
            Err(_) => String::new(),
        }
    }

    /// The unfolded value, encoded words left as they are: for structured fields such as
    /// Content-Type, where RFC 2047 §5 allows none.
    pub fn value_undecoded(&self) -> String {
        let v = self
            .raw
            .iter()
            .position(|&b| b == b':')
            .map_or(&self.raw[..0], |i| &self.raw[i + 1..]);
        let mut out = Vec::with_capacity(v.len());
        for &b in v {
            if b != b'\r' && b != b'\n' {
                out.push(b);
            }
        }
        String::from_utf8_lossy(out.trim_ascii()).into_owned()
    }
}

/// Where a byte of an address field's value lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Outside quoted strings, comments and angle brackets: separators count here.
    Top,
    /// In a quoted string (its quotes included).
    Quoted,
    /// In a comment (its parentheses included).
    Comment,
    /// In an angle-bracketed address (its brackets included).
    Angle,
}

/// Walks an address field's value (after its name's `:`), calling `f(index, byte, where)`.
fn scan_address_value(raw: &[u8], mut f: impl FnMut(usize, u8, At)) {
    let Some(colon) = raw.iter().position(|&b| b == b':') else {
        return;
    };
    let (mut quoted, mut comment, mut angle, mut escaped) = (false, 0usize, false, false);
    for (i, &b) in raw.iter().enumerate().skip(colon + 1) {
        let before = if comment > 0 {
            At::Comment
        } else if quoted {
            At::Quoted
        } else if angle {
            At::Angle
        } else {
            At::Top
        };
        if escaped {
            escaped = false;
            f(i, b, before);
            continue;
        }
        let at = match b {
            b'\\' if quoted || comment > 0 => {
                escaped = true;
                before
            }
            b'"' if comment == 0 => {
                quoted = !quoted;
                At::Quoted
            }
            b'(' if !quoted => {
                comment += 1;
                At::Comment
            }
            b')' if !quoted && comment > 0 => {
                comment -= 1;
                At::Comment
            }
            b'<' if !quoted && comment == 0 => {
                angle = true;
                At::Angle
            }
            b'>' if !quoted && comment == 0 => {
                angle = false;
                At::Angle
            }
            _ => before,
        };
        f(i, b, at);
    }
}

/// An address field without the `,`s mailparse would keep as the start of the next address
/// (`, b@x`, which became a recipient of its own): one right after a group's `;` (`friends:
/// a@x;, b@x`, comments and blanks between), and the empty entries of an obsolete list (`a@x,
/// , b@x`, or a `,` first). Separators inside quoted strings, comments and angle brackets are
/// left alone.
fn without_commas_after_groups(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut drop = Vec::new();
    // Whether the last token that was neither a blank nor a comment was a separator (or the
    // start of the list).
    let mut after_separator = true;
    scan_address_value(raw, |i, b, at| match at {
        At::Comment => {}
        At::Quoted | At::Angle => after_separator = false,
        At::Top => match b {
            b',' if after_separator => drop.push(i),
            b',' | b';' | b':' => after_separator = true,
            b if b.is_ascii_whitespace() => {}
            _ => after_separator = false,
        },
    });
    if drop.is_empty() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = raw.to_vec();
    for i in drop {
        out[i] = b' ';
    }
    std::borrow::Cow::Owned(out)
}

/// Whether an address field's value has a `,` or `;` outside quoted strings, comments and
/// angle brackets with an address after it: several mailboxes (or a group) to every reader
/// that splits there, whatever mailparse made of it (it reads `"m@evil", <a@x>` as one
/// mailbox named `"m@evil", `, where mutt, GMime and Python see two).
pub fn separates_addresses(raw: &[u8]) -> bool {
    let mut separator = false;
    let mut after = false;
    scan_address_value(raw, |_, b, at| match at {
        At::Comment => {}
        At::Top if b == b',' || b == b';' => separator = true,
        At::Top if b.is_ascii_whitespace() => {}
        _ => after |= separator,
    });
    after
}

/// The text before the angle-bracketed address of an address field (its raw bytes; comments
/// left out, quotes kept) when it holds an `@` outside quotes and comments: no display name
/// can hold one (RFC 5322 phrase), and readers take it for a mailbox of its own
/// (`bob@evil.example Bob <a@x>`: Python and GMime show bob@evil.example, mailparse makes it
/// the display name). None otherwise. The caller compares it with the angle-addr.
pub fn address_before_angle(raw: &[u8]) -> Option<String> {
    let (mut at, mut found, mut done) = (false, false, false);
    let mut text = Vec::new();
    scan_address_value(raw, |_, b, w| {
        if done {
            return;
        }
        match w {
            At::Angle if b == b'<' => {
                found = at;
                done = true;
            }
            At::Top | At::Quoted => {
                at |= b == b'@' && matches!(w, At::Top);
                text.push(b);
            }
            _ => {}
        }
    });
    found.then(|| String::from_utf8_lossy(&text).into_owned())
}

/// Most encoded-word starts (`=?`) a field value is decoded with (see [`Field::value`]).
const MAX_ENCODED_WORDS: usize = 1000;

/// `mailparse::parse_mail`, refusing input that [`too_many_encoded_words`] would make it spend
/// minutes on. Every MIME tree smimed walks is parsed through this.
pub fn parse_mail(bytes: &[u8]) -> Result<mailparse::ParsedMail<'_>, mailparse::MailParseError> {
    if too_many_encoded_words(bytes) {
        return Err(mailparse::MailParseError::Generic(
            "a field with too many encoded words",
        ));
    }
    if too_many_delimiter_lines(bytes) {
        return Err(mailparse::MailParseError::Generic(TOO_MANY_PARTS));
    }
    mailparse::parse_mail(bytes)
}

/// [`parse_mail`]'s error for a message with more than [`MAX_DELIMITER_LINES`] lines that
/// could start a part.
pub const TOO_MANY_PARTS: &str = "too many MIME parts";

/// Most lines that can start a part (`--` and a boundary the message declares; mailparse
/// matches delimiters by prefix) a message may hold to be parsed: mailparse builds every part
/// before anyone can count them, at a few hundred bytes each, so 50 MB of short delimiter
/// lines took 2 GB. Lines that merely start with `--` (SQL comments, logs, patches) do not
/// count.
const MAX_DELIMITER_LINES: usize = 100_000;

fn too_many_delimiter_lines(bytes: &[u8]) -> bool {
    let dash_lines = || {
        let first = bytes.starts_with(b"--").then_some(0);
        first
            .into_iter()
            .chain(memchr::memmem::find_iter(bytes, b"\n--").map(|i| i + 1))
    };
    // Cheap first: fewer `--` lines than the limit at all.
    if dash_lines().nth(MAX_DELIMITER_LINES).is_none() {
        return false;
    }
    // The boundaries as mailparse reads them (RFC 2231, quoted pairs and encoded words
    // decoded), from every line that starts a Content-Type field, grouped by length.
    // A boundary longer than this cannot start enough lines to matter in this message.
    let longest = bytes.len() / MAX_DELIMITER_LINES;
    let Some(by_len) = declared_boundaries(bytes, longest) else {
        return true;
    };
    dash_lines()
        .filter(|&i| {
            // Within the line only: the cost is bounded by the message's size.
            let rest = &bytes[i + 2..];
            let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
            by_len
                .iter()
                .any(|(len, set)| line.get(..*len).is_some_and(|prefix| set.contains(prefix)))
        })
        .nth(MAX_DELIMITER_LINES)
        .is_some()
}

/// Most distinct boundary lengths looked for (each is one lookup per `--` line: the check
/// costs at most this many times the message's size).
const MAX_BOUNDARY_LENGTHS: usize = 8;

/// The boundary of every line of `bytes` that starts a Content-Type field (anywhere: the parts'
/// header sections are not known without parsing), decoded by mailparse's own header and
/// Content-Type parsing, grouped by length; those longer than `longest` are left out. None when there are more than
/// [`MAX_BOUNDARY_LENGTHS`] distinct lengths (the caller then does not parse).
fn declared_boundaries(
    bytes: &[u8],
    longest: usize,
) -> Option<Vec<(usize, std::collections::HashSet<Vec<u8>>)>> {
    let mut by_len: std::collections::HashMap<usize, std::collections::HashSet<Vec<u8>>> =
        Default::default();
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', bytes).map(|i| i + 1));
    for start in starts {
        let line = &bytes[start..];
        let Some(name) = line.get(..12) else { continue };
        if !name.eq_ignore_ascii_case(b"content-type") {
            continue;
        }
        // The field with its continuation lines.
        let mut end = start;
        loop {
            end = memchr::memchr(b'\n', &bytes[end..]).map_or(bytes.len(), |i| end + i + 1);
            if !matches!(bytes.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        let Ok((h, _)) = mailparse::parse_header(&bytes[start..end]) else {
            continue;
        };
        let ct = parse_ct(&h.get_value());
        if let Some(b) = ct.params.get("boundary").filter(|b| b.len() <= longest) {
            by_len
                .entry(b.len())
                .or_default()
                .insert(b.as_bytes().to_vec());
            if by_len.len() > MAX_BOUNDARY_LENGTHS {
                return None;
            }
        }
    }
    Some(by_len.into_iter().collect())
}

/// Whether one field of `bytes` (a line with its continuation lines, anywhere in the message)
/// holds so many encoded-word starts (`=?`) that mailparse, which decodes the fields it parses
/// in time quadratic in their number, must not be given them: a real field holds a handful;
/// half a megabyte of `=?` in one Content-Type took seconds per parse.
fn too_many_encoded_words(bytes: &[u8]) -> bool {
    // No field can hold more than the whole message: one vectorised count settles nearly every
    // message, and only one with more than the limit in all is looked at line by line.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"=?"));
    if FINDER.find_iter(bytes).nth(MAX_ENCODED_WORDS).is_none() {
        return false;
    }
    let mut in_field = 0usize;
    for line in bytes.split(|&b| b == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            in_field = 0;
        }
        if line.len() < 2 {
            continue;
        }
        in_field += FINDER.find_iter(line).count();
        if in_field > MAX_ENCODED_WORDS {
            return true;
        }
    }
    false
}

fn trim_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b' ' || b[end - 1] == b'\t') {
        end -= 1;
    }
    &b[..end]
}

/// A MIME entity split into its header fields and its body.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    pub fields: Vec<Field>,
    /// The blank line that ended the header section (empty when there was none).
    pub separator: &'a [u8],
    pub body: &'a [u8],
}

/// Splits `data` into header fields and body. Never fails: a header section without an end is
/// all header; a continuation line before any field becomes a field of its own.
pub fn split(data: &[u8]) -> Entity<'_> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let line_end = memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..line_end];
        if line == b"\n" || line == b"\r\n" {
            return Entity {
                fields,
                separator: line,
                body: &data[line_end..],
            };
        }
        let continuation = matches!(line.first(), Some(b' ') | Some(b'\t'));
        match fields.last_mut() {
            Some(last) if continuation => last.raw.extend_from_slice(line),
            _ => fields.push(Field { raw: line.to_vec() }),
        }
        pos = line_end;
    }
    Entity {
        fields,
        separator: b"",
        body: &data[data.len()..],
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

impl Entity<'_> {
    pub fn first(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// The parsed Content-Type (text/plain when there is none).
    ///
    /// The pipeline asks this of the same few fields several times per message (classifying
    /// a layer, then reading its smime-type; the watcher's first look, then the pipeline's),
    /// and mailparse's parse allocates a dozen times. The last few results are kept per
    /// thread, keyed by the field's exact bytes, so asking again costs a comparison.
    /// [`forget_content_types`] empties that memo (the pipeline calls it after each message).
    pub fn content_type(&self) -> Rc<ParsedContentType> {
        let raw: &[u8] = match self.first("Content-Type") {
            Some(f) => &f.raw,
            None => b"",
        };
        CT_MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            if let Some(i) = memo.iter().position(|(k, _)| k.as_slice() == raw) {
                let hit = memo.remove(i);
                let ct = Rc::clone(&hit.1);
                memo.push(hit);
                return ct;
            }
            let ct = Rc::new(if raw.is_empty() {
                parse_ct("text/plain")
            } else {
                parse_ct(&Field { raw: raw.to_vec() }.value_undecoded())
            });
            if memo.len() >= CT_MEMO_SIZE {
                memo.remove(0);
            }
            memo.push((raw.to_vec(), Rc::clone(&ct)));
            ct
        })
    }

    /// The bytes of the entity: fields, separator, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(self.separator);
        out.extend_from_slice(self.body);
        out
    }
}

/// The line ending a message uses, judged from its first line.
pub fn eol_of(data: &[u8]) -> &'static [u8] {
    match memchr(b'\n', data) {
        Some(i) if i > 0 && data[i - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    }
}

/// Rewrites line endings: to CRLF (bare LF becomes CRLF) or to LF (CRLF becomes LF).
pub fn convert_eol(data: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    convert_eol_into(&mut out, data, eol);
    out
}

/// [`convert_eol`], appending to `out`.
pub fn convert_eol_into(out: &mut Vec<u8>, data: &[u8], eol: &[u8]) {
    let to_crlf = eol == b"\r\n";
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        let has_cr = i > start && data[i - 1] == b'\r';
        if to_crlf && !has_cr {
            out.extend_from_slice(&data[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        } else if !to_crlf && has_cr {
            out.extend_from_slice(&data[start..i - 1]);
            out.push(b'\n');
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
}

/// Bare LF taken as CRLF, as RFC 8551 §3.1.1 canonical form for hashing a received part.
pub fn canonical_crlf(data: &[u8]) -> Vec<u8> {
    convert_eol(data, b"\r\n")
}

/// What an entity is, for S/MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// application/pkcs7-mime (or x-pkcs7-mime, or octet-stream named *.p7m): a CMS object
    /// whose contentType decides what it is.
    Pkcs7Mime,
    /// multipart/signed with an S/MIME signature protocol.
    MultipartSigned,
    /// application/pkcs7-signature (or x-pkcs7-signature) on its own: a detached signature
    /// without the content it signs, which only has a meaning inside a multipart/signed.
    DetachedSignature,
    /// Anything else.
    Other,
}

pub fn classify(ct: &ParsedContentType) -> Kind {
    let m = ct.mimetype.as_str();
    match m {
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => Kind::Pkcs7Mime,
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => Kind::DetachedSignature,
        "application/octet-stream" => {
            let named_p7m = ["name", "filename"].iter().any(|k| {
                ct.params
                    .get(*k)
                    .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"))
            });
            if named_p7m {
                Kind::Pkcs7Mime
            } else {
                Kind::Other
            }
        }
        "multipart/signed" => {
            let proto = ct
                .params
                .get("protocol")
                .map(|p| p.to_ascii_lowercase())
                .unwrap_or_default();
            if proto == "application/pkcs7-signature" || proto == "application/x-pkcs7-signature" {
                Kind::MultipartSigned
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    }
}

/// Classifies, also treating an octet-stream *.p7m named in Content-Disposition as S/MIME.
pub fn classify_entity(e: &Entity<'_>) -> Kind {
    let ct = e.content_type();
    let k = classify(&ct);
    if k == Kind::Other && ct.mimetype == "application/octet-stream" {
        if let Some(f) = e.first("Content-Disposition") {
            let d = parse_cd(&f.value());
            if d.params
                .get("filename")
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"))
            {
                return Kind::Pkcs7Mime;
            }
        }
    }
    k
}

/// Why a reader could take `e` for something other than smimed does, if it could: two
/// Content-Type (or Content-Transfer-Encoding) fields, of which smimed reads the first and
/// others (mutt, neomutt) the last; or a structural Content-Type parameter given twice, of
/// which mailparse keeps the last and GMime (notmuch) the first. A signature smimed checks on
/// one reading would be shown over content of the other.
pub fn ambiguity(e: &Entity<'_>) -> Option<&'static str> {
    let count = |name: &str| e.fields.iter().filter(|f| f.is(name)).count();
    if count("Content-Type") > 1 {
        return Some("two Content-Type fields");
    }
    if count("Content-Transfer-Encoding") > 1 {
        return Some("two Content-Transfer-Encoding fields");
    }
    // A line that is no field (no colon, a space in the name): mutt ends the header there,
    // mailparse and GMime read on.
    // A blank before the colon counts too: mutt ends the header at `Name :`.
    if e.fields.iter().any(|f| {
        let n = match f.raw.iter().position(|&b| b == b':') {
            Some(i) => &f.raw[..i],
            None => &[][..],
        };
        n.is_empty() || !n.iter().all(|&b| b.is_ascii_graphic())
    }) {
        return Some("a header line that is not a field");
    }
    // A NUL or a bare CR in the header: a NUL ends a line for mutt's string functions and
    // glues it to the next; a bare CR is a line end for some readers and not for others. (Other
    // control characters split nothing: ESC, say, is in every raw ISO-2022-JP Subject.)
    if e.fields.iter().any(|f| {
        f.raw.iter().enumerate().any(|(i, &b)| match b {
            b'\r' => f.raw.get(i + 1) != Some(&b'\n'),
            0 => true,
            _ => false,
        })
    }) {
        return Some("a control character in the header");
    }
    let ct = e.first("Content-Type")?.value_undecoded();
    if duplicate_structural_parameter(&ct) {
        return Some("a Content-Type parameter given twice");
    }
    let parsed = e.content_type();
    if parsed.mimetype.starts_with("multipart/") {
        if !plain_boundary(&ct) {
            return Some("a boundary that readers may read differently");
        }
        if let Some(b) = parsed.params.get("boundary") {
            if loose_delimiter(e.body, b) {
                return Some("a line that starts with the boundary but is no delimiter");
            }
        }
    }
    None
}

/// Whether the `boundary` parameter of a multipart Content-Type value is written so that every
/// reader takes the same string: once, as a token or as one quoted string with nothing after
/// it, without backslashes or RFC 2047 look-alikes (`=?`, which notmuch and mutt decode and
/// mailparse does not), not in RFC 2231 form, of 1 to 70 characters not ending in a space (RFC
/// 2046 §5.1.1). Beyond that it is lenient: Outlook Express writes `{GUID}` boundaries, which
/// RFC 2046 does not allow but every reader reads alike.
fn plain_boundary(content_type: &str) -> bool {
    let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
    let mut found = false;
    for (name, value) in parameters(content_type) {
        if name.starts_with("boundary*") {
            return false;
        }
        if name != "boundary" {
            continue;
        }
        found = true;
        let v = value.trim().as_bytes();
        let inner = match v.strip_prefix(b"\"") {
            // Quoted: one quoted string, ending the value.
            Some(rest) => match rest.strip_suffix(b"\"") {
                Some(inner) if inner.iter().all(|b| printable(b) && !b"\"\\".contains(b)) => inner,
                _ => return false,
            },
            // A token: readers end it at a blank, a quote, a parenthesis or a semicolon.
            None if v
                .iter()
                .all(|b| b.is_ascii_graphic() && !b"\"\\()".contains(b)) =>
            {
                v
            }
            None => return false,
        };
        // RFC 2046 §5.1.1: 1 to 70 characters, the last no space. Python's email package
        // drops a space at the end; mutt cannot match a delimiter line over its 1,023-byte
        // buffer: readers outside the rule read other parts.
        if inner.is_empty()
            || inner.len() > 70
            || inner.last() == Some(&b' ')
            || inner.windows(2).any(|w| w == b"=?")
        {
            return false;
        }
    }
    found
}

/// Whether a line of `body` starts with `--boundary` without being a delimiter (`--boundary` or
/// `--boundary--`, then only blanks): mailparse takes such a line for one (`--b--x` closes the
/// multipart), GMime and mutt do not (RFC 2046 §5.1.1), so the parts they show differ.
fn loose_delimiter(body: &[u8], boundary: &str) -> bool {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    finder.find_iter(body).any(|at| {
        // After a bare CR: a line start for Python's email package, not for mailparse.
        if at > 0 && body[at - 1] == b'\r' {
            return true;
        }
        if at > 0 && body[at - 1] != b'\n' {
            // Not at a line start, unless the line is longer than a reader's buffer: mutt
            // reads lines in 1,023-byte pieces and looks for delimiters at each (no line may
            // be over 998 octets, RFC 5322 §2.1.1).
            let line_start = memchr::memrchr(b'\n', &body[..at]).map_or(0, |i| i + 1);
            return at - line_start >= 998;
        }
        let rest = &body[at + delim.len()..];
        let line = &rest[..memchr(b'\n', rest).unwrap_or(rest.len())];
        let line = line.strip_prefix(b"--").unwrap_or(line);
        !line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
    })
}

/// Whether any reading of the entity's Content-Type makes it S/MIME: any of its Content-Type
/// fields names an S/MIME type (multipart/signed whatever its protocol, which a duplicate
/// `protocol` may hide from mailparse; application/pkcs7-*; octet-stream named *.p7m).
pub fn could_be_smime(e: &Entity<'_>) -> bool {
    every_content_type(e)
        .into_iter()
        .any(|(v, ct)| match ct.mimetype.as_str() {
            "multipart/signed"
            | "application/pkcs7-mime"
            | "application/x-pkcs7-mime"
            | "application/pkcs7-signature"
            | "application/x-pkcs7-signature" => true,
            "application/octet-stream" => v.to_ascii_lowercase().contains(".p7m"),
            _ => false,
        })
}

/// Whether some reading of `e`'s header fields labels it an envelope: a Content-Type (any of
/// them) that [`classify`] takes for pkcs7-mime (an octet-stream named `.p7m` included, RFC 2231
/// names too), or an octet-stream with a Content-Disposition filename `.p7m`, with no
/// `smime-type` or any `smime-type` (any of those written) other than signed-data or
/// certs-only. (The DER itself is the caller's to look at.)
pub fn may_be_envelope(e: &Entity<'_>) -> bool {
    let p7m_file = || {
        e.fields
            .iter()
            .filter(|f| f.is("Content-Disposition"))
            .any(|f| {
                parse_cd(&f.value())
                    .params
                    .get("filename")
                    .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"))
            })
    };
    every_content_type(e).into_iter().any(|(v, ct)| {
        let pkcs7 = classify(&ct) == Kind::Pkcs7Mime
            || (ct.mimetype == "application/octet-stream" && p7m_file());
        if !pkcs7 {
            return false;
        }
        let mut types: Vec<String> = parameters(&v)
            .into_iter()
            .filter(|(n, _)| n.trim_end_matches('*') == "smime-type")
            .map(|(_, t)| t.trim().trim_matches('"').to_ascii_lowercase())
            .collect();
        types.extend(ct.params.get("smime-type").map(|t| t.to_ascii_lowercase()));
        types.is_empty()
            || types
                .iter()
                .any(|t| !matches!(t.as_str(), "signed-data" | "certs-only"))
    })
}

/// mailparse's parse of a Content-Type value, with its RFC 2231 parameters (`name*`, `name*N`,
/// `name*N*`) read as Python's email package reads them, where mailparse reads them otherwise
/// or not at all: an empty or unknown charset (RFC 2231 §4 makes it optional, `hp*=''clear`),
/// none (`name*=smime.p7m`), encoded and plain sections mixed (`name*0=a; name*1*=b`).
pub fn parse_ct(value: &str) -> ParsedContentType {
    let mut ct = parse_content_type(value);
    ct.params.extend(rfc2231_values(value));
    ct
}

/// [`parse_ct`] for a Content-Disposition value's parameters.
pub fn parse_cd(value: &str) -> mailparse::ParsedContentDisposition {
    let mut cd = mailparse::parse_content_disposition(value);
    cd.params.extend(rfc2231_values(value));
    cd
}

/// The parameters of a header value written in RFC 2231 form, by name: the sections in order,
/// the encoded ones percent-decoded (the first one's `charset'language'` left out), as UTF-8.
fn rfc2231_values(value: &str) -> Vec<(String, String)> {
    if !value.contains('*') {
        return Vec::new();
    }
    // name -> [(section, encoded, value)]
    let mut sections: std::collections::BTreeMap<String, Vec<(u32, bool, String)>> =
        std::collections::BTreeMap::new();
    let params = parameters(value);
    // Given plain too, the plain one is read (as Python reads it).
    let plain: std::collections::HashSet<&str> = params
        .iter()
        .map(|(n, _)| n.trim())
        .filter(|n| !n.contains('*'))
        .collect();
    for (name, v) in &params {
        let Some(star) = name.find('*') else {
            continue;
        };
        if plain.contains(name[..star].trim()) {
            continue;
        }
        let (base, rest) = (&name[..star], &name[star + 1..]);
        let (n, encoded) = if rest.is_empty() {
            (0, true)
        } else {
            match (rest.strip_suffix('*'), rest.parse::<u32>()) {
                (Some(d), _) => match d.parse::<u32>() {
                    Ok(n) => (n, true),
                    Err(_) => continue,
                },
                (None, Ok(n)) => (n, false),
                (None, Err(_)) => continue,
            }
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        sections
            .entry(base.trim().to_string())
            .or_default()
            .push((n, encoded, v.to_string()));
    }
    let mut out = Vec::new();
    for (base, mut parts) in sections {
        parts.sort_by_key(|p| p.0);
        parts.dedup_by_key(|p| p.0);
        let mut octets = Vec::new();
        let mut label = "";
        for (i, (n, encoded, v)) in parts.iter().enumerate() {
            if *n as usize != i {
                break;
            }
            let mut v = v.as_str();
            if i == 0 && *encoded {
                // charset'language'value; without both quotes, the value alone.
                let mut it = v.splitn(3, '\'');
                if let (Some(cs), Some(_), Some(rest)) = (it.next(), it.next(), it.next()) {
                    label = cs;
                    v = rest;
                }
            }
            if *encoded {
                octets.extend(percent_encoding::percent_decode_str(v));
            } else {
                octets.extend_from_slice(v.as_bytes());
            }
        }
        if !octets.is_empty() {
            // In its charset when it names one that is known (UTF-16 with or without a byte
            // order mark, UTF-32, Latin-1…), else UTF-8.
            let label = python_codec_label(label);
            let text = match (
                label.as_str(),
                charset::Charset::for_label_no_replacement(label.as_bytes()),
            ) {
                ("utf-32" | "utf-32le" | "utf-32be", _) => utf32(&octets, &label),
                (_, Some(cs)) => cs.decode(&octets).0.into_owned(),
                (_, None) => String::from_utf8_lossy(&octets).into_owned(),
            };
            out.push((base, text));
        }
    }
    out
}

/// A charset label as Python's codec lookup takes it (case, `-` and `_` aside: `UTF16`,
/// `utf_16_le`, `utf-32-be`), in the form the decoders here know.
fn python_codec_label(label: &str) -> String {
    let squeezed: String = label
        .trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match squeezed.as_str() {
        "utf8" => "utf-8",
        "utf16" => "utf-16",
        "utf16le" => "utf-16le",
        "utf16be" => "utf-16be",
        "utf32" => "utf-32",
        "utf32le" => "utf-32le",
        "utf32be" => "utf-32be",
        _ => return label.trim().to_ascii_lowercase(),
    }
    .to_string()
}

/// UTF-32 text (`utf-32le`, `utf-32be`, or `utf-32` by its byte order mark, else little-endian
/// as Python reads it, like `utf-16`), invalid code points replaced.
fn utf32(octets: &[u8], label: &str) -> String {
    let (mut big, mut rest) = (label == "utf-32be", octets);
    if label == "utf-32" {
        if let Some(r) = rest.strip_prefix(&[0xff, 0xfe, 0, 0]) {
            (big, rest) = (false, r);
        } else if let Some(r) = rest.strip_prefix(&[0, 0, 0xfe, 0xff]) {
            (big, rest) = (true, r);
        }
    }
    rest.chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            let n = if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            };
            char::from_u32(n).unwrap_or('\u{fffd}')
        })
        .collect()
}

/// Every Content-Type field of `e` (a reader may go by any of them), as its undecoded value and
/// that value parsed.
pub fn every_content_type(e: &Entity<'_>) -> Vec<(String, ParsedContentType)> {
    e.fields
        .iter()
        .filter(|f| f.is("Content-Type"))
        .map(|f| {
            let v = f.value_undecoded();
            let ct = parse_ct(&v);
            (v, ct)
        })
        .collect()
}

/// The parameters of a Content-Type value as (name in lower case, value as written), split at
/// the semicolons outside quoted strings, comments left out (GMime skips `(c)boundary=x` to a
/// `boundary`; mailparse keeps `(c)boundary` as a name of its own).
fn parameters(value: &str) -> Vec<(String, String)> {
    parameter_segments(value)
        .iter()
        .skip(1)
        .filter_map(|seg| {
            let seg = String::from_utf8_lossy(seg);
            let (name, value) = seg.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.to_string()))
        })
        .collect()
}

/// A Content-Type value split at the semicolons outside quoted strings, comments left out. The
/// first segment is the type.
fn parameter_segments(value: &str) -> Vec<Vec<u8>> {
    let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
    let (mut quoted, mut escaped, mut comment) = (false, false, 0usize);
    for b in value.bytes() {
        if escaped {
            escaped = false;
            if comment == 0 {
                if let Some(s) = segments.last_mut() {
                    s.push(b);
                }
            }
            continue;
        }
        match b {
            b'\\' if quoted || comment > 0 => escaped = true,
            b'"' if comment == 0 => quoted = !quoted,
            b'(' if !quoted => comment += 1,
            b')' if !quoted && comment > 0 => comment -= 1,
            b';' if !quoted && comment == 0 => segments.push(Vec::new()),
            _ => {}
        }
        if comment == 0 && (quoted || (b != b')' && b != b';')) {
            if let Some(s) = segments.last_mut() {
                s.push(b);
            }
        }
    }
    segments
}

/// Whether `boundary`, `protocol`, `micalg` or `smime-type` appears twice among the parameters
/// of a Content-Type value (RFC 2231 `name*` and `name*0` count as `name`).
fn duplicate_structural_parameter(value: &str) -> bool {
    const STRUCTURAL: [&str; 4] = ["boundary", "protocol", "micalg", "smime-type"];
    // Per name: how often it is given whole (`name`, `name*`), and which RFC 2231 sections
    // (`name*0`, `name*1*`…; `name *0` as some parse it) appear. The sections together are one
    // value, and a lone section is taken for the value by GMime: the parameter is given twice
    // when two of these readings exist, or a section number repeats.
    let mut whole: std::collections::HashMap<String, usize> = Default::default();
    let mut sections: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (name, _) in parameters(value) {
        match name.split_once('*') {
            None => *whole.entry(name).or_default() += 1,
            Some((b, section)) => {
                let b = b.trim().to_string();
                let section = section.trim().trim_end_matches('*');
                if section.is_empty() {
                    *whole.entry(b).or_default() += 1; // `name*`
                } else {
                    let number = section.trim_start_matches('0');
                    let number = if number.is_empty() { "0" } else { number };
                    sections.entry(b).or_default().push(number.to_string());
                }
            }
        }
    }
    STRUCTURAL.iter().any(|&n| {
        let w = whole.get(n).copied().unwrap_or(0);
        let s = sections.get(n).map_or(&[][..], Vec::as_slice);
        // One pass with a set: a check against every earlier section took seconds for
        // 100,000 sections (`boundary*0=a;boundary*1=a;…`).
        let mut seen = std::collections::HashSet::with_capacity(s.len());
        let repeated = s.iter().any(|x| !seen.insert(x));
        w + usize::from(!s.is_empty()) > 1 || repeated
    })
}

/// Decodes the body of an entity by its Content-Transfer-Encoding. A body labelled 7bit/8bit
/// (or unlabelled) that is really base64, as some senders of application/pkcs7-mime do, is
/// decoded as base64 too when it holds nothing but base64 characters.
pub fn decode_body(e: &Entity<'_>) -> Vec<u8> {
    let cte = e
        .first("Content-Transfer-Encoding")
        .map(|f| f.value().trim().to_ascii_lowercase())
        .unwrap_or_default();
    match cte.as_str() {
        "base64" => base64_permissive(e.body),
        "quoted-printable" => {
            let mut raw = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n".to_vec();
            raw.extend_from_slice(e.body);
            parse_mail(&raw)
                .and_then(|m| m.get_body_raw())
                .unwrap_or_else(|_| e.body.to_vec())
        }
        _ => {
            let trimmed = e.body.iter().filter(|b| !b.is_ascii_whitespace());
            let mut n = 0usize;
            let mut all_b64 = true;
            for &b in trimmed {
                n += 1;
                if !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=') {
                    all_b64 = false;
                    break;
                }
            }
            if all_b64 && n > 0 {
                base64_permissive(e.body)
            } else {
                e.body.to_vec()
            }
        }
    }
}

/// Base64 decoding that ignores whitespace and anything outside the alphabet, and stops at
/// padding, as mail readers do. Clean lines are gathered into large chunks and decoded in one
/// call each; only lines with stray characters are filtered byte by byte.
pub fn base64_permissive(data: &[u8]) -> Vec<u8> {
    let mut d = Base64Stream::with_capacity(data.len() / 4 * 3 + 3);
    d.feed(data);
    d.finish()
}

/// [`base64_permissive`] over a reader (a message body in a file), `len` bytes expected at most.
pub fn base64_decode_reader(r: &mut impl std::io::Read, len: u64) -> std::io::Result<Vec<u8>> {
    let cap = usize::try_from(len / 4 * 3 + 3).unwrap_or(0);
    let mut d = Base64Stream::with_capacity(cap);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => d.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if d.done {
            break;
        }
    }
    Ok(d.finish())
}

/// Incremental permissive base64 decoder: feed it any slices, lines may span them.
pub struct Base64Stream {
    out: Vec<u8>,
    /// Base64 text (line breaks and padding removed) not decoded yet.
    buf: Vec<u8>,
    /// Padding was seen: the rest is ignored.
    done: bool,
}

const B64_CHUNK: usize = 1 << 16;

const B64_VALID: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        i += 1;
    }
    t
};

impl Base64Stream {
    /// `n`: the expected output size (it sizes both buffers: a small one, such as an encoded
    /// word's, costs no 64 KB allocation to fill and wipe).
    pub fn with_capacity(n: usize) -> Self {
        Base64Stream {
            out: Vec::with_capacity(n),
            buf: Vec::with_capacity((n.saturating_add(2) / 3 * 4 + 128).min(B64_CHUNK + 128)),
            done: false,
        }
    }

    fn decode_buf(&mut self, all: bool) {
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        use base64::Engine;
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(DecodePaddingMode::RequireNone),
        );
        // Fast path: the buffer holds nothing but the alphabet (lines are appended unchecked),
        // decoded with SIMD. Whatever it refuses (a stray character, non-zero trailing bits, a
        // dangling sixth bit group) goes the careful way below, with the same result the
        // careful way gives for clean input.
        let n = if all {
            self.buf.len()
        } else {
            self.buf.len() - self.buf.len() % 4
        };
        if n > 0 && n % 4 != 1 {
            let before = self.out.len();
            if base64_simd::STANDARD_NO_PAD
                .decode_append(&self.buf[..n], &mut self.out)
                .is_ok()
            {
                self.buf.drain(..n);
                return;
            }
            self.out.truncate(before);
        }
        self.buf.retain(|&b| B64_VALID[usize::from(b)]);
        let n = if all {
            self.buf.len() - usize::from(self.buf.len() % 4 == 1)
        } else {
            self.buf.len() - self.buf.len() % 4
        };
        if LENIENT.decode_vec(&self.buf[..n], &mut self.out).is_err() {
            self.done = true;
        }
        self.buf.drain(..n);
    }

    /// Takes `data` in: its text without line breaks goes to `buf` (unchecked: `decode_buf`
    /// filters only when the fast decoder refuses); everything from the first padding character
    /// on is ignored. `buf` is decoded whenever it is nearly full, so it never grows: no
    /// reallocation leaves a copy of (possibly decrypted) text behind unwiped, and a large body
    /// costs no second copy.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if self.buf.capacity() - self.buf.len() < 64 {
                self.flush();
            }
            let room = self.buf.capacity() - self.buf.len();
            let (piece, rest) = data.split_at(data.len().min(room));
            self.append(piece);
            data = rest;
        }
    }

    /// Appends `piece` (at most the room left in `buf`) without its line breaks, up to the first
    /// padding character.
    fn append(&mut self, piece: &[u8]) {
        let start = self.buf.len();
        let mut from = 0;
        for i in memchr::memchr2_iter(b'\r', b'\n', piece) {
            self.buf.extend_from_slice(&piece[from..i]);
            from = i + 1;
        }
        self.buf.extend_from_slice(&piece[from..]);
        if let Some(p) = memchr::memchr(b'=', &self.buf[start..]) {
            self.buf.truncate(start + p);
            self.done = true;
        }
    }

    /// Decodes what `buf` holds in whole groups of four (keeping `done` as it was, unless the
    /// careful decoder gives up).
    fn flush(&mut self) {
        let done = self.done;
        self.done = false;
        self.decode_buf(false);
        self.done = self.done || done;
    }

    pub fn finish(mut self) -> Vec<u8> {
        if !self.buf.is_empty() {
            let done = self.done;
            self.done = false;
            self.decode_buf(true);
            self.done = done;
        }
        std::mem::take(&mut self.out)
    }
}

impl Drop for Base64Stream {
    /// What it decoded may be decrypted content: wipe it unless it was handed out.
    fn drop(&mut self) {
        crate::secret::wipe(&mut self.out);
        crate::secret::wipe(&mut self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2231_parameters_are_read_as_python_reads_them() {
        let name = |v: &str| parse_ct(v).params.get("name").cloned();
        for (v, want) in [
            ("application/octet-stream; name*=''smime.p7m", "smime.p7m"),
            ("application/octet-stream; name*=smime.p7m", "smime.p7m"),
            (
                "application/octet-stream; name*0=smime; name*1*=.p7m",
                "smime.p7m",
            ),
            (
                "application/octet-stream; name*0*=''smi; name*1=me.p7m",
                "smime.p7m",
            ),
            (
                "application/octet-stream; name*=x-unknown''sm%69me.p7m",
                "smime.p7m",
            ),
            (
                "application/octet-stream; name*=utf-8''b%C3%BCro.p7m",
                "b\u{fc}ro.p7m",
            ),
            (
                "application/octet-stream; name*=iso-8859-1''b%FCro.p7m",
                "b\u{fc}ro.p7m",
            ),
            (
                "application/octet-stream; name*=utf-16le''s%00m%00i%00m%00e%00.%00p%007%00m%00",
                "smime.p7m",
            ),
            (
                "application/octet-stream; name*=utf-16''%FE%FF%00s%00m%00i%00m%00e%00.%00p%007%00m",
                "smime.p7m",
            ),
            (
                "application/octet-stream; name*=utf-32''a%00%00%00.%00%00%00p%00%00%007%00%00%00m%00%00%00",
                "a.p7m",
            ),
            (
                "application/octet-stream; name*=utf-32be''%00%00%00a%00%00%00.%00%00%00p%00%00%007%00%00%00m",
                "a.p7m",
            ),
            (
                "application/octet-stream; name*=UTF-32LE''a%00%00%00.%00%00%00p%00%00%007%00%00%00m%00%00%00",
                "a.p7m",
            ),
            (
                "application/octet-stream; name*=utf_32_le''a%00%00%00.%00%00%00p%00%00%007%00%00%00m%00%00%00",
                "a.p7m",
            ),
            (
                "application/octet-stream; name*=UTF16-LE''a%00.%00p%007%00m%00",
                "a.p7m",
            ),
            // Plain and extended: the plain one.
            (
                "application/octet-stream; name=a.p7m; name*=''b.txt",
                "a.p7m",
            ),
        ] {
            assert_eq!(name(v).as_deref(), Some(want), "{v}");
        }
        assert_eq!(
            parse_ct("text/plain; hp*=''clear")
                .params
                .get("hp")
                .map(String::as_str),
            Some("clear")
        );
    }

    /// Every address of an address field, groups flattened.
    fn flat(field: &str) -> Vec<String> {
        let f = Field {
            raw: field.as_bytes().to_vec(),
        };
        let mut v = Vec::new();
        for a in f.addresses().map(|l| l.to_vec()).unwrap_or_default() {
            match a {
                mailparse::MailAddr::Single(s) => v.push(s.addr),
                mailparse::MailAddr::Group(g) => v.extend(g.addrs.into_iter().map(|s| s.addr)),
            }
        }
        v
    }

    #[test]
    fn a_group_followed_by_an_address_gives_both() {
        assert_eq!(
            flat("To: friends: bob@example.org;, dave@example.org\r\n"),
            ["bob@example.org", "dave@example.org"]
        );
        assert_eq!(
            flat("To: undisclosed-recipients:;,\r\n bob@example.org\r\n"),
            ["bob@example.org"]
        );
        assert_eq!(
            flat("Cc: g1: a@x.org;, g2: b@x.org;, \"Last; First,\" <c@x.org>\r\n"),
            ["a@x.org", "b@x.org", "c@x.org"]
        );
        assert_eq!(
            flat("To: a@x.org, grp: b@x.org;\r\n"),
            ["a@x.org", "b@x.org"]
        );
        // A comment after the group's `;`, empty entries, a `,` first.
        assert_eq!(
            flat("To: g: b@x.org;(team), c@x.org\r\n"),
            ["b@x.org", "c@x.org"]
        );
        assert_eq!(
            flat("To: b@x.org,, (none) , c@x.org\r\n"),
            ["b@x.org", "c@x.org"]
        );
        assert_eq!(flat("To: , c@x.org\r\n"), ["c@x.org"]);
        assert_eq!(flat("To: \"a,;b\" <c@x.org>\r\n"), ["c@x.org"]);
    }

    #[test]
    fn delimiter_lines_count_for_boundaries_as_mailparse_decodes_them() {
        let lines = b"--xyz\r\n".repeat(MAX_DELIMITER_LINES + 1);
        for ct in [
            "multipart/mixed; boundary=\"xyz\"",
            "multipart/mixed; boundary*=us-ascii''%78%79%7a",
            "multipart/mixed; boundary*0*=us-ascii''%78; boundary*1*=%79%7a",
            "multipart/mixed; boundary=\"\\x\\y\\z\"",
            "multipart/mixed; boundary=\"=?us-ascii?q?xyz?=\"",
            "multipart/mixed; =?us-ascii?q?boundary=3Dxyz?=",
        ] {
            let mut m = b"From: a@x\r\n".to_vec();
            m.extend(b"X-Decoy: boundary=dn\r\n".repeat(300));
            m.extend(format!("Content-Type: {ct}\r\n\r\n").as_bytes());
            m.extend(&lines);
            assert!(too_many_delimiter_lines(&m), "{ct}");
        }
        // `--` lines that start with no declared boundary; an empty one in a body's code.
        let mut m = b"Content-Type: multipart/mixed; boundary=\"b-9c1f\"\r\n\r\n--b-9c1f\r\n\
            Content-Type: text/x-python\r\n\r\n    boundary = \"\"\r\n"
            .to_vec();
        m.extend(b"-- Name: t; Type: TABLE\r\n".repeat(MAX_DELIMITER_LINES + 1));
        m.extend(b"--b-9c1f--\r\n");
        assert!(!too_many_delimiter_lines(&m));
    }

    #[test]
    fn a_separator_mailparse_does_not_split_at_is_still_seen() {
        for from in [
            "From: \"mallory@evil.org\", <alice@x.org>\r\n",
            "From: \"mallory@evil.org\"; <alice@x.org>\r\n",
            "From: \"Mallory\" mallory@evil.org, <alice@x.org>\r\n",
            "From: a@x.org, b@x.org\r\n",
            "From: , alice@x.org\r\n",
        ] {
            assert!(separates_addresses(from.as_bytes()), "{from}");
        }
        for from in [
            "From: \"Doe, John; Jr.\" <j@x.org>\r\n",
            "From: j@x.org (Doe, John)\r\n",
            "From: <j@x.org>,\r\n",
            "From: Alice <alice@x.org>\r\n",
        ] {
            assert!(!separates_addresses(from.as_bytes()), "{from}");
        }
    }

    #[test]
    fn ambiguous_entities_are_found() {
        let amb = |h: &str| ambiguity(&split(format!("{h}\r\n\r\nbody").as_bytes()));
        assert!(
            amb("Content-Type: multipart/signed; boundary=a\r\nContent-Type: text/plain").is_some()
        );
        assert!(
            amb("Content-Transfer-Encoding: base64\r\ncontent-transfer-encoding: 7bit").is_some()
        );
        for dup in [
            "multipart/signed; boundary=a; BOUNDARY=\"b\"",
            "multipart/signed; boundary=a;\r\n boundary*=utf-8''b",
            "multipart/signed; boundary*0=a; boundary=b",
            "multipart/signed; protocol=p; (c)boundary=\"x\"; boundary=\"b\"",
            "multipart/signed; boundary=(note; boundary=x) \"a\"; boundary=b",
            "multipart/signed; boundary *0=a; boundary=b",
            "multipart/signed; boundary*00=a; boundary=b",
            "multipart/signed; boundary *=a; boundary=b",
            "multipart/signed; boundary*1=\"BB\"; boundary=\"REAL\"",
            "multipart/signed; boundary*0=a; boundary*1=b; boundary*1=c",
            "multipart/signed; protocol=\"application/pkcs7-signature\"; protocol=x",
            "application/pkcs7-mime; smime-type=signed-data; smime-type=enveloped-data",
        ] {
            assert!(amb(&format!("Content-Type: {dup}")).is_some(), "{dup}");
        }
        for fine in [
            "multipart/signed; boundary=a; protocol=\"application/pkcs7-signature\"; micalg=sha-256",
            "multipart/mixed; boundary=\"x, boundary=y\"",
            "multipart/mixed; (boundary=x) boundary=b",
            "multipart/mixed; boundary=\"(x), boundary=y\"",
            "application/octet-stream; name=a; name*=utf-8''b",
            "text/plain",
        ] {
            assert!(amb(&format!("Content-Type: {fine}")).is_none(), "{fine}");
        }
        assert!(!duplicate_structural_parameter(
            "multipart/mixed; boundary=\"x; boundary=y\""
        ));
        assert!(!duplicate_structural_parameter(
            "multipart/mixed; boundary*0=a; boundary*1=b"
        ));
        assert!(amb("Subject: x").is_none());
        assert!(amb("Subject: a\0\r\nX: b").is_some());
        assert!(amb("Subject: a\rX: b").is_some());
        assert!(amb("Subject: \x1b$B%F%9%H\x1b(B report\x0c").is_none());
        for (boundary, fine) in [
            ("B", true),
            ("\"----=_NextPart_000_0001_01D9A1B2.C3D4E5F0\"", true),
            ("\"Apple-Mail=_0D2A6F1E-1A2B\"", true),
            ("\"a(b)c:d/e, f\"", true),
            ("\"Q\" (comment)", true),
            ("\"{EAD5F12C-E5A7-421A-AD27-CF4EF58E43B5}\"", true),
            ("==_Part_1_2.3", true),
            ("EVIL REAL", false),
            ("\"REAL\"EVIL", false),
            ("\"Q", false),
            ("=?us-ascii?q?EVIL?=", false),
            ("\"=?us-ascii?q?Q?=\"", false),
            ("\"a\\\"b\"", false),
        ] {
            let e = format!("Content-Type: multipart/signed; protocol=p; boundary={boundary}");
            assert_eq!(amb(&e).is_none(), fine, "{boundary}");
        }
        let long = format!(
            "Content-Type: multipart/signed; boundary=B\r\n\r\n{}--B\r\nx\r\n--B--\r\n",
            " ".repeat(1023)
        );
        assert!(ambiguity(&split(long.as_bytes())).is_some());
        let short = format!(
            "Content-Type: multipart/signed; boundary=B\r\n\r\n{} --B\r\n--B\r\nx\r\n--B--\r\n",
            " ".repeat(100)
        );
        assert!(ambiguity(&split(short.as_bytes())).is_none());
        assert!(amb("Subject: x\r\nX-Note see below").is_some());
        assert!(amb("Subject: x\r\nX-Note : see below").is_some());
        assert!(amb("Subject: x\r\nX-Note\t: see below").is_some());
        assert!(amb(" folded: first\r\nSubject: x").is_some());
        let mp = |body: &str| {
            ambiguity(&split(
                format!("Content-Type: multipart/signed; boundary=B\r\n\r\n{body}").as_bytes(),
            ))
        };
        assert!(mp("pre\r\n--B\r\nx\r\n--B \r\ny\r\n--B-- \t\r\nepilogue --B\r\n").is_none());
        assert!(mp("--B\r\nx\r\n--B\r\ny\r\n--B--x\r\n--B\r\nz\r\n--B--\r\n").is_some());
        assert!(mp("--B\r\nx\r\n--BB\r\ny\r\n--B--").is_some());
    }

    #[test]
    fn encoded_word_limit_is_per_field() {
        let words = |n: usize| "=?utf-8?q?a?= ".repeat(n);
        // One field over the limit, folded over many lines.
        let folded = format!("Subject: {}\r\n\r\nbody", words(1001).replace(' ', "\r\n "));
        assert!(too_many_encoded_words(folded.as_bytes()));
        assert!(too_many_encoded_words(
            format!("X: {}\n\n", words(1001)).as_bytes()
        ));
        // Exactly the limit, and many in all but few per field or line: accepted.
        assert!(!too_many_encoded_words(
            format!("X: {}\n\n", words(1000)).as_bytes()
        ));
        let spread = format!(
            "A: {}\nB: {}\n\n{}",
            words(600),
            words(600),
            words(3).repeat(500).replace("= ", "=\n")
        );
        assert!(!too_many_encoded_words(spread.as_bytes()));
        assert!(!too_many_encoded_words(b"Subject: plain\r\n\r\nbody"));
    }

    #[test]
    fn content_type_memo_answers_for_the_exact_field_only() {
        let a = split(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nx");
        let first = a.content_type();
        assert_eq!(first.mimetype, "application/pkcs7-mime");
        assert_eq!(
            first.params.get("smime-type").map(String::as_str),
            Some("enveloped-data")
        );
        // Asked again: the same parse, not a new one.
        assert!(Rc::ptr_eq(&first, &a.content_type()));
        // Another entity with the same field bytes shares it; one byte more is another field.
        let same =
            split(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\ny");
        assert!(Rc::ptr_eq(&first, &same.content_type()));
        let other = split(b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\ny");
        assert_eq!(
            other
                .content_type()
                .params
                .get("smime-type")
                .map(String::as_str),
            Some("signed-data")
        );
        // A field changed in place is parsed anew.
        let mut changed = split(b"Content-Type: text/plain\r\n\r\nz");
        assert_eq!(changed.content_type().mimetype, "text/plain");
        changed.fields[0] = Field::new("Content-Type", "multipart/mixed; boundary=b", b"\r\n");
        assert_eq!(changed.content_type().mimetype, "multipart/mixed");
        // No field: text/plain.
        assert_eq!(
            split(b"Subject: s\r\n\r\n").content_type().mimetype,
            "text/plain"
        );
        // More fields than the memo keeps: the oldest is parsed again, with the same answer.
        for i in 0..2 * CT_MEMO_SIZE {
            let m = format!("Content-Type: text/x-{i}\r\n\r\n");
            assert_eq!(
                split(m.as_bytes()).content_type().mimetype,
                format!("text/x-{i}")
            );
        }
        let again = a.content_type();
        assert!(!Rc::ptr_eq(&first, &again));
        assert_eq!(again.mimetype, "application/pkcs7-mime");
        // Forgotten: nothing is kept.
        forget_content_types();
        CT_MEMO.with(|m| assert!(m.borrow().is_empty()));
    }

    #[test]
    fn split_keeps_fields_byte_exact() {
        let m = b"A: 1\r\nB: x\r\n  y\r\n\r\nbody\r\n";
        let e = split(m);
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.fields[1].raw, b"B: x\r\n  y\r\n");
        assert_eq!(e.body, b"body\r\n");
        assert_eq!(e.to_bytes(), m);
    }

    #[test]
    fn split_without_body() {
        let e = split(b"A: 1\nB: 2");
        assert_eq!(e.fields.len(), 2);
        assert!(e.body.is_empty());
    }

    #[test]
    fn eol_conversion() {
        assert_eq!(convert_eol(b"a\nb\r\nc", b"\r\n"), b"a\r\nb\r\nc");
        assert_eq!(convert_eol(b"a\r\nb\nc\r", b"\n"), b"a\nb\nc\r");
        assert_eq!(convert_eol(b"\n\r\n\n", b"\r\n"), b"\r\n\r\n\r\n");
        assert_eq!(convert_eol(b"\r\n\r\n", b"\n"), b"\n\n");
    }

    /// However much is fed at once and however wrong the size hint, the text buffer is never
    /// reallocated (a reallocation would leave a copy behind unwiped), and the result is right.
    #[test]
    fn base64_stream_buffer_never_grows() {
        use base64::Engine;
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&raw);
        let lines: Vec<u8> = text
            .as_bytes()
            .chunks(76)
            .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
            .collect();
        for hint in [0, 100, 150_000, 1 << 20] {
            let mut d = Base64Stream::with_capacity(hint);
            let cap = d.buf.capacity();
            for piece in [&lines[..10], &lines[10..100_000], &lines[100_000..]] {
                d.feed(piece);
                assert_eq!(d.buf.capacity(), cap, "hint {hint}");
            }
            assert_eq!(d.finish(), raw, "hint {hint}");
        }
    }

    #[test]
    fn base64_tolerates_noise() {
        assert_eq!(base64_permissive(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(base64_permissive(b"aGVsbG8"), b"hello");
        assert_eq!(base64_permissive(b"aGVsbG8x*"), b"hello1");
        assert_eq!(
            base64_permissive(b"aGVs\nbG8gd29y\nbGQ=\nIGlnbm9yZWQ="),
            b"hello world"
        );
        assert_eq!(base64_permissive(b"aG Vs\r\nbG8\r\n"), b"hello");
        let mut d = Base64Stream::with_capacity(16);
        for piece in [&b"aG"[..], b"Vs\r", b"\nbG8gd2", b"9ybGQ=\nIGln"] {
            d.feed(piece);
        }
        assert_eq!(d.finish(), b"hello world");
    }

    /// The SIMD fast path of the decoder must give exactly what filtering every line and
    /// decoding leniently gives: every length, line width, line ending and kind of noise.
    #[test]
    fn base64_fast_path_agrees_with_the_permissive_decoder() {
        use base64::Engine;
        // The decoder as it was before the fast path: filter every line, stop at padding,
        // decode leniently.
        let reference = |data: &[u8]| {
            use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(DecodePaddingMode::RequireNone),
            );
            let mut clean = Vec::new();
            for line in data.split(|&b| b == b'\n') {
                let pad = line.iter().position(|&b| b == b'=');
                let body = &line[..pad.unwrap_or(line.len())];
                clean.extend(body.iter().copied().filter(|&b| B64_VALID[usize::from(b)]));
                if pad.is_some() {
                    break;
                }
            }
            if clean.len() % 4 == 1 {
                clean.pop();
            }
            LENIENT.decode(&clean).unwrap_or_default()
        };
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut fast = 0;
        for len in 0..200usize {
            let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let enc = base64::engine::general_purpose::STANDARD.encode(&raw);
            for width in [4usize, 64, 76, 1000] {
                for eol in [&b"\r\n"[..], b"\n"] {
                    let mut text = Vec::new();
                    for chunk in enc.as_bytes().chunks(width) {
                        text.extend_from_slice(chunk);
                        text.extend_from_slice(eol);
                    }
                    let mut variants = vec![text.clone()];
                    let unpadded: Vec<u8> = text.iter().copied().filter(|&b| b != b'=').collect();
                    variants.push(unpadded);
                    let mut noisy = text.clone();
                    noisy.insert(noisy.len() / 2, b'*');
                    variants.push(noisy);
                    let mut after_pad = text.clone();
                    after_pad.extend_from_slice(b"QUJD\r\n");
                    variants.push(after_pad);
                    let mut dangling = text.clone();
                    dangling.extend_from_slice(b"Q");
                    variants.push(dangling);
                    for v in variants {
                        let clean: Vec<u8> = v
                            .iter()
                            .copied()
                            .filter(|&b| B64_VALID[usize::from(b)])
                            .collect();
                        if clean.len() % 4 != 1
                            && base64_simd::STANDARD_NO_PAD.decode_to_vec(&clean).is_ok()
                        {
                            fast += 1;
                        }
                        assert_eq!(
                            base64_permissive(&v),
                            reference(&v),
                            "len {len} width {width}"
                        );
                        // Fed in pieces, lines spanning them.
                        let mut d = Base64Stream::with_capacity(16);
                        for piece in v.chunks(7) {
                            d.feed(piece);
                        }
                        assert_eq!(d.finish(), reference(&v), "pieces: len {len} width {width}");
                    }
                }
                if width == 76 {
                    assert_eq!(base64_permissive(enc.as_bytes()), raw);
                }
            }
        }
        // Most clean inputs take the fast path (so this test exercises it).
        assert!(fast > 1000, "fast path taken {fast} times");
    }
}
