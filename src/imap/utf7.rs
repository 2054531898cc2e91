//! Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP mailbox names on the wire.
//!
//! Invariants: printable ASCII other than `&` stands for itself; `&` is written `&-`; anything
//! else is UTF-16 in base64 with `,` for `/`, no padding, between `&` and `-`. Decoding is
//! strict: a name that is not valid modified UTF-7 is returned as an error, never guessed at.
//! The base64 work is done by the `base64` crate with a custom alphabet.

use base64::alphabet::Alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::error::{Error, Result};

fn engine() -> Result<GeneralPurpose> {
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
            .map_err(|e| Error::software(format!("modified UTF-7 alphabet: {e}")))?;
    Ok(GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    ))
}

fn direct(c: char) -> bool {
    ('\x20'..='\x7e').contains(&c)
}

/// UTF-8 mailbox name -> modified UTF-7.
pub fn encode(name: &str) -> Result<String> {
    let eng = engine()?;
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&eng.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if direct(c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    Ok(out)
}

/// Modified UTF-7 -> UTF-8 mailbox name.
pub fn decode(wire: &str) -> Result<String> {
    let eng = engine()?;
    let bad = |why: &str| {
        Error::data(format!(
            "mailbox name {wire:?} is not modified UTF-7: {why}"
        ))
    };
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(pos) = rest.find('&') {
        let (plain, tail) = rest.split_at(pos);
        if !plain.chars().all(direct) {
            return Err(bad("raw non-ASCII character"));
        }
        out.push_str(plain);
        let tail = &tail[1..];
        let end = tail.find('-').ok_or_else(|| bad("unterminated shift"))?;
        let b64 = &tail[..end];
        if b64.is_empty() {
            out.push('&');
        } else {
            let bytes = eng.decode(b64).map_err(|e| bad(&e.to_string()))?;
            if bytes.len() % 2 != 0 {
                return Err(bad("odd UTF-16 length"));
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            let s = String::from_utf16(&units).map_err(|_| bad("invalid UTF-16"))?;
            if s.chars().any(direct) {
                return Err(bad("ASCII encoded in base64"));
            }
            out.push_str(&s);
        }
        rest = &tail[end + 1..];
    }
    if !rest.chars().all(direct) {
        return Err(bad("raw non-ASCII character"));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example_and_roundtrips() {
        // RFC 3501 §5.1.3
        assert_eq!(
            encode("~peter/mail/台北/日本語").unwrap(),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode("Tom & Jerry").unwrap(), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("Entwürfe").unwrap(), "Entw&APw-rfe");
        assert_eq!(
            encode("Отправленные").unwrap(),
            "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"
        );
        for s in ["INBOX", "a/b/c", "Ärger 😀 &&", "😀", "x&y&-z"] {
            assert_eq!(decode(&encode(s).unwrap()).unwrap(), s);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(decode("&U,BTFw").is_err());
        assert!(decode("Entwürfe").is_err());
        assert!(decode("&AGE-").is_err()); // 'a' must not be base64-encoded
        assert!(decode("&A-").is_err());
    }
}
