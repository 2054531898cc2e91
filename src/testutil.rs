//! Certificates for unit tests (integration tests build their PKIs with the openssl CLI).

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

/// A fresh P-256 key.
pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    PKey::from_ec_key(EcKey::generate(&group).expect("ec")).expect("key")
}

/// A self-signed v3 certificate for `cn` with `key`, serial `serial`, valid from now for a
/// day, with `email` as its subjectAltName when given.
pub fn self_signed(cn: &str, serial: u32, email: Option<&str>, key: &PKey<Private>) -> X509 {
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let sn = BigNum::from_u32(serial).expect("bn");
    b.set_serial_number(&sn.to_asn1_integer().expect("int"))
        .expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
        .expect("not after");
    if let Some(e) = email {
        let san = SubjectAlternativeName::new()
            .email(e)
            .build(&b.x509v3_context(None, None))
            .expect("san");
        b.append_extension(san).expect("ext");
    }
    b.sign(key, MessageDigest::sha256()).expect("sign");
    b.build()
}
