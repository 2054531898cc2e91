//! Microsoft serialized certificate store (.sst), [MS-OSHARED] 2.3.9.1 "CertStoreCertificateGroup":
//! the file an Office 365 admin exports from certmgr for `Set-SmimeConfig`.
//!
//! Layout: a header `u32 version (0)` + `"CERT"`, then elements `{u32 property id, u32 encoding
//! type (1), u32 length, value}`. Properties come before the certificate (id 0x20) they describe;
//! CRLs (0x21) and CTLs (0x22) are skipped with the properties before them; an element with id 0 and length 0 ends the store.
//! Property 9 (CERT_ENHKEY_USAGE_PROP_ID) restricts what the store trusts a certificate for: when
//! present and without emailProtection (or anyExtendedKeyUsage), the certificate is not an anchor
//! for S/MIME. Every length is checked against the input; malformed input is an error, not a panic.

use openssl::x509::X509;

use crate::certs::SourcedCert;

const CERT_ELEMENT: u32 = 0x20;
const CRL_ELEMENT: u32 = 0x21;
const CTL_ELEMENT: u32 = 0x22;
const EKU_PROP: u32 = 9;
const FRIENDLY_NAME_PROP: u32 = 11;
const EMAIL_PROTECTION: &str = "1.3.6.1.5.5.7.3.4";
const ANY_EKU: &str = "2.5.29.37.0";

/// Whether `data` starts like a serialized store.
pub fn is_sst(data: &[u8]) -> bool {
    data.len() >= 8 && data[0..4] == [0, 0, 0, 0] && &data[4..8] == b"CERT"
}

fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Every certificate of the store, with the email restriction its properties state.
pub fn parse(data: &[u8]) -> Result<Vec<SourcedCert>, String> {
    if !is_sst(data) {
        return Err(String::from("not a serialized certificate store"));
    }
    let mut out = Vec::new();
    let mut off = 8usize;
    let mut eku: Option<Vec<u8>> = None;
    let mut friendly: Option<String> = None;
    while off < data.len() {
        let (Some(id), Some(_enc), Some(len)) = (
            u32_at(data, off),
            u32_at(data, off + 4),
            u32_at(data, off + 8),
        ) else {
            return Err(format!("truncated element header at offset {off}"));
        };
        let start = off + 12;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("element at offset {off} claims {len} bytes past the end"))?;
        let value = &data[start..end];
        off = end;
        match id {
            0 if len == 0 => break,
            CERT_ELEMENT => {
                let cert = X509::from_der(value)
                    .map_err(|e| format!("certificate at offset {start} does not parse: {e}"))?;
                let (email_allowed, restriction) = match eku.take() {
                    None => (true, None),
                    Some(der) => eku_restriction(&der),
                };
                let _ = friendly.take();
                out.push(SourcedCert {
                    cert,
                    email_allowed,
                    restriction,
                });
            }
            // A CRL or CTL element ends the properties written before it, which were its own.
            CRL_ELEMENT | CTL_ELEMENT => {
                eku = None;
                friendly = None;
            }
            EKU_PROP => eku = Some(value.to_vec()),
            FRIENDLY_NAME_PROP => friendly = Some(utf16le(value)),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(String::from("serialized store holds no certificate"));
    }
    Ok(out)
}

fn eku_restriction(der: &[u8]) -> (bool, Option<String>) {
    match crate::ossl::decode_eku(der) {
        Some(oids) if oids.iter().any(|o| o == EMAIL_PROTECTION || o == ANY_EKU) => (true, None),
        Some(oids) if oids.is_empty() => {
            (false, Some(String::from("store: disabled for all uses")))
        }
        Some(oids) => (
            false,
            Some(format!("store: not for email (only {})", oids.join(","))),
        ),
        None => (
            false,
            Some(String::from("store: unreadable usage restriction")),
        ),
    }
}

fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_truncated_and_oversized_elements() {
        let mut d = vec![0, 0, 0, 0, b'C', b'E', b'R', b'T'];
        d.extend_from_slice(&0x20u32.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&d).is_err());
        d.truncate(10);
        assert!(parse(&d).is_err());
        assert!(!is_sst(b"CERT"));
    }

    fn element(id: u32, value: &[u8]) -> Vec<u8> {
        let mut e = id.to_le_bytes().to_vec();
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&(value.len() as u32).to_le_bytes());
        e.extend_from_slice(value);
        e
    }

    #[test]
    fn properties_before_a_crl_are_the_crls_not_the_next_certificates() {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509Builder, X509NameBuilder};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "root").unwrap();
        let n = n.build();
        let mut b = X509Builder::new().unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build().to_der().unwrap();
        // EKU serverAuth only: SEQUENCE { OID 1.3.6.1.5.5.7.3.1 }.
        let server_auth = [
            0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
        ];
        let mut d = vec![0, 0, 0, 0, b'C', b'E', b'R', b'T'];
        d.extend(element(EKU_PROP, &server_auth));
        d.extend(element(CRL_ELEMENT, b"not parsed"));
        d.extend(element(CERT_ELEMENT, &cert));
        let got = parse(&d).unwrap();
        assert!(got[0].email_allowed && got[0].restriction.is_none());
        // The same property before the certificate itself restricts it.
        let mut d = vec![0, 0, 0, 0, b'C', b'E', b'R', b'T'];
        d.extend(element(EKU_PROP, &server_auth));
        d.extend(element(CERT_ELEMENT, &cert));
        assert!(!parse(&d).unwrap()[0].email_allowed);
    }
}
