//! E-mail addresses as headers and certificates carry them: the addr-spec made plain, and the
//! key two addresses are compared by (a signer against From, a recipient against the address
//! book, a sender against the own identities, duplicates in a recipient list).

/// An addr-spec as a header parser returns it, made plain:
/// - an obsolete route (`@a.example,@b.example:alice@example.org`) is dropped: RFC 5322 §4.4
///   says to ignore it;
/// - a quoted local part that needs no quotes (`"alice"@example.org`) is unquoted: RFC 5321
///   §4.1.2 makes it the same mailbox as `alice@example.org`;
/// - comments and blanks outside quoted strings (RFC 5322 CFWS, which the obsolete syntax
///   allows around the `@` and the dots: `alice @ example.org`, `alice@(x)example.org`) are
///   left out.
pub fn plain(addr: &str) -> String {
    let a = without_cfws(addr);
    let a = a.as_str();
    // A local part never starts with '@' (a quoted one starts with '"').
    let a = match a.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, rest)) => rest.trim_start(),
        None => a,
    };
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{domain}", unquote(local)),
        None => a.to_string(),
    }
}

/// The comparison key of an address: [`plain`], then
/// - the local part with ASCII letters lower-cased (RFC 5321 lets a server tell `Alice` from
///   `alice`, but S/MIME clients match certificates without regard to case, and so does
///   smimed, as its README says);
/// - the domain in its IDNA A-label form, lower-case (RFC 9598 §3: `bücher.example` and
///   `xn--bcher-kva.example` are one domain; a certificate writes the A-labels in an
///   rfc822Name and may write U-labels in an SmtpUTF8Mailbox).
///
/// A domain IDNA rejects keeps its own form (lower-cased), so it matches only itself.
pub fn key(addr: &str) -> String {
    let p = plain(addr);
    match p.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{}", local.to_ascii_lowercase(), domain_key(domain)),
        None => p.to_ascii_lowercase(),
    }
}

/// Whether `a` and `b` name the same mailbox (by [`key`]).
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || key(a) == key(b)
}

/// `addr` with its domain in A-labels when only the domain is internationalised
/// (`user@bücher.example` → `user@xn--bcher-kva.example`, the same mailbox in ASCII); as it is
/// otherwise.
pub fn with_ascii_domain(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) if local.is_ascii() && !domain.is_ascii() => match a_labels(domain) {
            Some(d) => format!("{local}@{d}"),
            None => addr.to_string(),
        },
        _ => addr.to_string(),
    }
}

/// `addr` with its domain in U-labels when it has A-labels (`user@xn--bcher-kva.example` →
/// `user@bücher.example`, the same mailbox as a directory may store it); as it is otherwise.
pub fn with_unicode_domain(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain))
            if domain
                .split('.')
                .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--"))) =>
        {
            let (unicode, ok) = idna::domain_to_unicode(domain);
            if ok.is_ok() && !unicode.is_ascii() {
                format!("{local}@{unicode}")
            } else {
                addr.to_string()
            }
        }
        _ => addr.to_string(),
    }
}

fn domain_key(domain: &str) -> String {
    // An ASCII domain's A-label form is itself, lower-cased; a domain literal is no name.
    if domain.is_ascii() {
        return domain.to_ascii_lowercase();
    }
    a_labels(domain).unwrap_or_else(|| fold_case(domain))
}

/// `s` in lower case, except for a non-ASCII character whose lower case is ASCII (U+212A
/// KELVIN SIGN is `k`): a look-alike of an ASCII letter, kept as it is, so that `worK.example`
/// written with the Kelvin sign never becomes `work.example`. (U+0130 `İ` folds to `i̇`, an `i`
/// with a dot above, which UTS #46 also gives: `İnfo.example` is `xn--info-qwc.example`.)
fn fold_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c.to_lowercase().all(|l| l.is_ascii()) {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The A-label form of a non-ASCII domain written as U-labels: only when IDNA's mapping
/// changes nothing in it but letter case. UTS #46 mapping is for what people type: it folds
/// fullwidth and mathematical letters, `℡`, `①`, and drops invisible characters (U+200B,
/// U+00AD), none of which a U-label may hold (RFC 5891), and a mail reader shows them as they
/// are; such a domain is compared only with itself.
fn a_labels(domain: &str) -> Option<String> {
    let lower = fold_case(domain);
    let ascii = idna::domain_to_ascii(&lower).ok()?;
    // Label by label: a domain may mix A-labels and U-labels (`xn--bcher-kva.ëxample`).
    let (given, made): (Vec<&str>, Vec<&str>) =
        (lower.split('.').collect(), ascii.split('.').collect());
    let same = given.len() == made.len()
        && given.iter().zip(&made).all(|(g, m)| {
            if g.is_ascii() {
                g == m
            } else {
                // (Compared in lower case: UTS #46 maps Cherokee to its capital letters.)
                let (back, ok) = idna::domain_to_unicode(m);
                ok.is_ok() && fold_case(&back) == *g
            }
        });
    same.then_some(ascii)
}

/// An address list with each bare addr-spec whose local part is a quoted string
/// (`"x.y"@example.net`, `"doe, john"@example.net`) put in angle brackets, which is the same
/// mailbox: mailparse reads such an addr-spec only inside them (outside, it takes the quoted
/// string for a display name and joins it to the next mailbox, or gives up on the list).
/// For recipient lists: what comes out is still one address per mailbox.
pub fn bracket_quoted_addr_specs(list: &str) -> std::borrow::Cow<'_, str> {
    if !list.contains("\"@") {
        return std::borrow::Cow::Borrowed(list);
    }
    let b = list.as_bytes();
    let mut out = String::with_capacity(list.len() + 8);
    let (mut i, mut copied) = (0, 0);
    let (mut angle, mut comment) = (false, 0usize);
    // Whether a mailbox may start here: at the start, after ',' or a group's ':' (blanks aside).
    let mut at_start = true;
    while i < b.len() {
        match b[i] {
            b'\\' if comment > 0 => i += 1,
            b'(' => comment += 1,
            b')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            b'<' => angle = true,
            b'>' => angle = false,
            b'"' => {
                // The quoted string's end (escapes skipped).
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j >= b.len() {
                    break;
                }
                if !angle && at_start && b.get(j + 1) == Some(&b'@') {
                    let mut k = j + 2;
                    while k < b.len() && !b" \t\r\n,;()<>\"".contains(&b[k]) {
                        k += 1;
                    }
                    out.push_str(&list[copied..i]);
                    out.push('<');
                    out.push_str(&list[i..k]);
                    out.push('>');
                    copied = k;
                    i = k;
                    at_start = false;
                    continue;
                }
                i = j;
            }
            _ => {}
        }
        if comment == 0 && !angle {
            match b[i] {
                b',' | b':' => at_start = true,
                b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' => {}
                _ => at_start = false,
            }
        }
        i += 1;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(list);
    }
    out.push_str(&list[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Whether the addr-spec `addr` a header parser returned is written whole in the field value
/// `value`: comments and blanks (outside quoted strings and domain literals) only next to its
/// `@` and dots. A parser that joins the atoms around a comment (`ceo@corp.example(x)evil.test`
/// read as `ceo@corp.exampleevil.test`) returns an address mail readers do not show (they stop
/// at the first atom): such an address is not written whole.
pub fn written_whole(value: &str, addr: &str) -> bool {
    let (norm, addr) = (cfws_as_blanks(value), cfws_as_blanks(addr));
    let addr = addr.as_str();
    let part_of_it = |c: Option<char>| {
        c.is_some_and(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.\"@".contains(c)
        })
    };
    norm.match_indices(addr).any(|(i, _)| {
        !part_of_it(norm[..i].chars().next_back())
            && !part_of_it(norm[i + addr.len()..].chars().next())
    })
}

/// `value` with each run of comments and blanks outside quoted strings and domain literals
/// left out next to an `@` or a dot, and made one blank elsewhere.
pub fn cfws_as_blanks(value: &str) -> String {
    let joins = |x: char| x == '.' || x == '@';
    let mut norm = String::with_capacity(value.len());
    let mut gap = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '(' {
            let mut depth = 1;
            while depth > 0 {
                match chars.next() {
                    Some('\\') => {
                        chars.next();
                    }
                    Some('(') => depth += 1,
                    Some(')') => depth -= 1,
                    Some(_) => {}
                    None => break,
                }
            }
            gap = true;
            continue;
        }
        if c.is_whitespace() {
            gap = true;
            continue;
        }
        if gap && norm.chars().next_back().is_some_and(|l| !joins(l)) && !joins(c) {
            norm.push(' ');
        }
        gap = false;
        norm.push(c);
        if c == '"' || c == '[' {
            let close = if c == '"' { '"' } else { ']' };
            while let Some(n) = chars.next() {
                norm.push(n);
                if n == '\\' {
                    if let Some(e) = chars.next() {
                        norm.push(e);
                    }
                } else if n == close {
                    break;
                }
            }
        }
    }
    norm
}

/// `addr` without the comments and blanks outside its quoted strings and domain literals,
/// where RFC 5322 allows them: at either end and next to an `@` or a dot. Anywhere else (between
/// two atoms: `ceo@corp.example evil.test`, which readers take for `ceo@corp.example`) and in
/// unbalanced text (a comment or quote never closed) the address is kept as it is (trimmed), so
/// that it matches nothing but itself.
fn without_cfws(addr: &str) -> String {
    if !addr.contains(['(', ' ', '\t', '\r', '\n']) {
        return addr.to_string();
    }
    let as_is = || addr.trim().to_string();
    let mut out = String::with_capacity(addr.len());
    // Comments or blanks were left out since the last character kept.
    let mut gap = false;
    let mut chars = addr.chars();
    while let Some(c) = chars.next() {
        if c == '(' || c.is_whitespace() {
            gap = true;
        } else {
            let joins = |x: char| x == '.' || x == '@';
            if gap && out.chars().next_back().is_some_and(|l| !joins(l)) && !joins(c) {
                return as_is();
            }
            gap = false;
        }
        match c {
            '"' | '[' => {
                let close = if c == '"' { '"' } else { ']' };
                out.push(c);
                loop {
                    match chars.next() {
                        Some('\\') => {
                            out.push('\\');
                            match chars.next() {
                                Some(n) => out.push(n),
                                None => return as_is(),
                            }
                        }
                        Some(n) if n == close => {
                            out.push(n);
                            break;
                        }
                        Some(n) => out.push(n),
                        None => return as_is(),
                    }
                }
            }
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            if chars.next().is_none() {
                                return as_is();
                            }
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => return as_is(),
                    }
                }
            }
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// `"alice"` → `alice` when the quoted text (escapes undone) is a dot-atom; otherwise as it is.
fn unquote(local: &str) -> String {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .filter(|_| local.len() >= 2)
    else {
        return local.to_string();
    };
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => text.push(n),
                None => return local.to_string(),
            },
            '"' => return local.to_string(),
            c => text.push(c),
        }
    }
    if is_dot_atom(&text) {
        text
    } else {
        local.to_string()
    }
}

/// RFC 5322 dot-atom-text, with RFC 6532's non-ASCII characters as atext.
fn is_dot_atom(s: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    !s.is_empty() && s.split('.').all(|w| !w.is_empty() && w.chars().all(atext))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_domain_goes_to_u_labels_only_from_a_labels_and_never_panics() {
        use super::with_unicode_domain as u;
        assert_eq!(u("a@xn--bcher-kva.example"), "a@bücher.example");
        assert_eq!(u("a@XN--BCHER-KVA.example"), "a@bücher.example");
        assert_eq!(u("a@example.org"), "a@example.org");
        // Labels whose fourth byte falls inside a character, and no A-label at all.
        assert_eq!(u("user@日本語.jp"), "user@日本語.jp");
        assert_eq!(u("x@ñañaña.example"), "x@ñañaña.example");
        assert_eq!(u("x@xn--.example"), "x@xn--.example");
        assert_eq!(u("no-at-sign"), "no-at-sign");
    }

    use super::*;

    #[test]
    fn routes_and_needless_quotes_go() {
        assert_eq!(
            plain("@route.example:alice@example.org"),
            "alice@example.org"
        );
        assert_eq!(
            plain("@a.example,@b.example: alice@example.org"),
            "alice@example.org"
        );
        assert_eq!(plain("\"alice\"@example.org"), "alice@example.org");
        assert_eq!(plain("\"al\\ice.b\"@example.org"), "alice.b@example.org");
        assert_eq!(plain(" bob@example.org "), "bob@example.org");
    }

    #[test]
    fn comments_and_blanks_outside_quotes_go() {
        for a in [
            "alice @ example.org",
            "alice@(c)example.org",
            "alice(c)@example.org",
            "alice@example.org (Alice (the) \\) one)",
            " alice\t@\r\n example . org",
            "\"alice\" @ example.org",
        ] {
            assert_eq!(plain(a), "alice@example.org", "{a:?}");
        }
        assert_eq!(
            plain("\"john doe\" @ example.org"),
            "\"john doe\"@example.org"
        );
        assert_eq!(plain("a@[ 192.0.2.1 ]"), "a@[ 192.0.2.1 ]");
        // Unbalanced: as it is (trimmed), matching nothing else.
        assert_eq!(plain("alice@(example.org"), "alice@(example.org");
        assert_eq!(plain("\"alice @example.org"), "\"alice @example.org");
        assert!(!same(
            "alice@evil.example(@example.org)",
            "alice@example.org"
        ));
        // Between two atoms: no address of its own (readers take the first atom).
        for a in [
            "ceo@corp.example evil.test",
            "ceo@corp.example(Corp CEO)evil.test",
            "ce o@corp.example",
            "\"john\" \"doe\"@example.org",
        ] {
            assert_eq!(plain(a), a, "{a:?}");
        }
        assert!(!same(
            "ceo@corp.example evil.test",
            "ceo@corp.exampleevil.test"
        ));
    }

    #[test]
    fn an_address_joined_across_a_comment_is_not_written_whole() {
        for (value, addr) in [
            ("alice@example.org", "alice@example.org"),
            ("Alice <alice@example.org>", "alice@example.org"),
            ("alice @ example . org (Alice)", "alice@example.org"),
            ("Alice <alice@(c)example.org>", "alice@example.org"),
            (
                "\"A (b) c\" <\"john doe\"@example.org>",
                "\"john doe\"@example.org",
            ),
            (
                "<@relay.example:alice@example.org>",
                "@relay.example:alice@example.org",
            ),
        ] {
            assert!(written_whole(value, addr), "{value} {addr}");
        }
        for (value, addr) in [
            (
                "ceo@corp.example(Corp CEO)evil.test",
                "ceo@corp.exampleevil.test",
            ),
            ("ceo@corp.example evil.test", "ceo@corp.exampleevil.test"),
            ("CEO <ceo(x)@corp.example>x", "ceo@corp.examplex"),
            ("xalice@example.org", "alice@example.org"),
        ] {
            assert!(!written_whole(value, addr), "{value} {addr}");
        }
    }

    #[test]
    fn needed_quotes_stay() {
        for a in [
            "\"john doe\"@example.org",
            "\"a@b\"@example.org",
            "\".alice\"@example.org",
            "\"a..b\"@example.org",
            "\"\"@example.org",
            "\"a\\\"b\"@example.org",
        ] {
            assert_eq!(plain(a), a);
        }
    }

    #[test]
    fn bare_quoted_addr_specs_get_angle_brackets() {
        let cases = [
            (
                "\"x.y\"@example.net, Bob <bob@example.net>",
                "<\"x.y\"@example.net>, Bob <bob@example.net>",
            ),
            (
                "\"doe, john\"@example.net, \"x y\"@example.net",
                "<\"doe, john\"@example.net>, <\"x y\"@example.net>",
            ),
            (
                "<\"bob\"@example.net>, Group: \"c d\"@example.net;",
                "<\"bob\"@example.net>, Group: <\"c d\"@example.net>;",
            ),
            // A display name stays one; so does a quoted string in a comment.
            ("\"Doe, J\" <j@x>", "\"Doe, J\" <j@x>"),
            ("a@x (\"b\"@y)", "a@x (\"b\"@y)"),
            ("Bob \"x\"@y", "Bob \"x\"@y"),
        ];
        for (input, want) in cases {
            assert_eq!(bracket_quoted_addr_specs(input), want, "{input}");
        }
        for (input, addrs) in [
            (
                "\"x.y\"@example.net, Bob <bob@example.net>",
                vec!["\"x.y\"@example.net", "bob@example.net"],
            ),
            (
                "\"doe, john\"@example.net, \"x y\"@example.net",
                vec!["\"doe, john\"@example.net", "\"x y\"@example.net"],
            ),
        ] {
            let list = mailparse::addrparse(&bracket_quoted_addr_specs(input)).expect("parses");
            let got: Vec<String> = list
                .iter()
                .filter_map(|a| match a {
                    mailparse::MailAddr::Single(s) => Some(s.addr.clone()),
                    mailparse::MailAddr::Group(_) => None,
                })
                .collect();
            assert_eq!(got, addrs, "{input}");
        }
    }

    #[test]
    fn keys_fold_ascii_case_and_domain_labels() {
        assert_eq!(key("Alice@Example.ORG"), "alice@example.org");
        assert!(same("user@bücher.example", "user@xn--bcher-kva.example"));
        assert!(same("user@BÜCHER.example", "USER@XN--BCHER-KVA.EXAMPLE"));
        assert!(same("üser@bücher.example", "üser@xn--bcher-kva.example"));
        assert!(same("\"alice\"@example.org", "ALICE@example.org"));
        assert!(!same("user@bücher.example", "user@bucher.example"));
        assert!(!same("Üser@example.org", "üser@example.org"));
        assert!(!same("\"a b\"@example.org", "ab@example.org"));
    }

    #[test]
    fn a_domain_may_mix_a_labels_and_u_labels() {
        for form in [
            "a@xn--bcher-kva.ëxample",
            "a@bücher.xn--xample-ova",
            "a@xn--bcher-kva.xn--xample-ova",
            "a@BÜCHER.Ëxample",
        ] {
            assert!(same(form, "a@bücher.ëxample"), "{form}");
        }
        assert!(!same("a@xn--bcher-kva.ｅxample", "a@bücher.example"));
        // U+0130 folds to i and a combining dot above, as UTS #46 maps it.
        assert!(same(
            "alice@\u{130}nfo.example",
            "alice@xn--info-qwc.example"
        ));
        assert!(same(
            "ALICE@\u{130}NFO.EXAMPLE",
            "alice@i\u{307}nfo.example"
        ));
        // Cherokee: UTS #46 maps the small letters to the capitals; either is the A-label.
        assert!(same(
            "alice@\u{13a3}\u{13b3}\u{13a9}.example",
            "alice@xn--88dm3a.example"
        ));
        assert!(same(
            "alice@\u{ab83}\u{ab83}\u{ab79}.example",
            "alice@xn--f9dta.example"
        ));
    }

    #[test]
    fn what_idna_mapping_folds_is_no_domain_of_the_certificate() {
        for (from, cert) in [
            ("alice@℡.example", "alice@tel.example"),
            ("bob@㎏.example", "bob@kg.example"),
            ("eve@①.example", "eve@1.example"),
            ("alice@ｅｘａｍｐｌｅ.org", "alice@example.org"),
            ("alice@𝐞𝐱𝐚𝐦𝐩𝐥𝐞.org", "alice@example.org"),
            ("alice@ℯxample.org", "alice@example.org"),
            ("alice@exa\u{200b}mple.org", "alice@example.org"),
            ("alice@exa\u{ad}mple.org", "alice@example.org"),
            ("alice@bu\u{308}cher.example", "alice@xn--bcher-kva.example"),
            ("alice@straße.example", "alice@strasse.example"),
            ("alice@wor\u{212a}.example", "alice@work.example"),
            ("alice@\u{130}nfo.example", "alice@info.example"),
        ] {
            assert!(!same(from, cert), "{from} is not {cert}");
            assert!(same(from, from));
        }
    }

    #[test]
    fn only_an_internationalised_domain_gets_an_ascii_form() {
        assert_eq!(
            with_ascii_domain("User@Bücher.example"),
            "User@xn--bcher-kva.example"
        );
        assert_eq!(
            with_ascii_domain("üser@bücher.example"),
            "üser@bücher.example"
        );
        assert_eq!(with_ascii_domain("a@example.org"), "a@example.org");
    }
}
