//! The test PKI, generated at test time (never committed): a root and an intermediate CA, users
//! with RSA-2048 and EC P-256 keys, one expired, one without emailProtection, one under a root
//! nobody trusts. Every file peers need is written to a private temp folder:
//! `NAME.key` (PEM, 0600), `NAME.pem` (certificate), `NAME.chain.pem` (certificate +
//! intermediate), `NAME.p12` (modern PBES2/AES, passphrase `test`), `NAME-legacy.p12`
//! (3DES/SHA-1, for gpgsm 2.2), plus `root.pem`, `intermediate.pem`, `untrusted-root.pem`.
//!
//! Generated once per test binary (OnceLock) and shared by its tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};

pub const P12_PASS: &str = "test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rsa,
    Ec,
    /// EC P-384.
    Ec384,
}

/// One generated user.
#[derive(Clone)]
pub struct User {
    pub name: &'static str,
    pub email: String,
    pub cert: X509,
    pub key: PKey<Private>,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub chain_path: PathBuf,
    pub p12_path: PathBuf,
    pub p12_legacy_path: PathBuf,
}

pub struct Pki {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub root: X509,
    pub root_path: PathBuf,
    pub intermediate: X509,
    pub intermediate_path: PathBuf,
    pub untrusted_root_path: PathBuf,
    /// RSA-2048, via the intermediate.
    pub alice: User,
    /// RSA-2048, via the intermediate.
    pub bob: User,
    /// EC P-256, via the intermediate.
    pub carol: User,
    /// EC P-256, directly under the root.
    pub erin: User,
    /// EC P-384, via the intermediate.
    pub pat: User,
    /// RSA-2048, expired a year ago.
    pub expired: User,
    /// RSA-2048, EKU serverAuth only (not for email).
    pub noemail: User,
    /// RSA-2048, under a root that is not in the trust file.
    pub untrusted: User,
    /// EC P-256, bob@example.org again, issued a day after `bob` (for "newest wins").
    pub bob_renewed: User,
}

fn rsa() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey")
}

fn ec() -> PKey<Private> {
    ec_on(Nid::X9_62_PRIME256V1)
}

fn ec_on(curve: Nid) -> PKey<Private> {
    let g = EcGroup::from_curve_name(curve).expect("group");
    PKey::from_ec_key(EcKey::generate(&g).expect("ec")).expect("pkey")
}

fn name(cn: &str, email: Option<&str>) -> X509Name {
    let mut b = X509Name::builder().expect("name");
    b.append_entry_by_text("O", "smimed test").expect("O");
    b.append_entry_by_text("CN", cn).expect("CN");
    if let Some(e) = email {
        b.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, e)
            .expect("email");
    }
    b.build()
}

struct Spec<'a> {
    cn: &'a str,
    email: Option<&'a str>,
    key: &'a PKey<Private>,
    issuer: Option<(&'a X509, &'a PKey<Private>)>,
    ca: bool,
    days_from: i64,
    days_to: i64,
    eku_email: bool,
    serial: u32,
}

fn make_cert(s: Spec<'_>) -> X509 {
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let serial = Asn1Integer::from_bn(&BigNum::from_u32(s.serial).expect("bn")).expect("serial");
    b.set_serial_number(&serial).expect("serial");
    let subject = name(s.cn, s.email);
    b.set_subject_name(&subject).expect("subject");
    match s.issuer {
        Some((ic, _)) => b.set_issuer_name(ic.subject_name()).expect("issuer"),
        None => b.set_issuer_name(&subject).expect("issuer"),
    }
    b.set_pubkey(s.key).expect("pubkey");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + s.days_from * 86_400).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::from_unix(now + s.days_to * 86_400).expect("t"))
        .expect("na");
    if s.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
    } else {
        b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
            .expect("ext");
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature().non_repudiation();
        if s.key.id() == openssl::pkey::Id::EC {
            ku.key_agreement();
        } else {
            ku.key_encipherment();
        }
        b.append_extension(ku.build().expect("ku")).expect("ext");
        let mut eku = ExtendedKeyUsage::new();
        if s.eku_email {
            eku.email_protection();
        } else {
            eku.server_auth();
        }
        b.append_extension(eku.build().expect("eku")).expect("ext");
        if let Some(e) = s.email {
            let ctx = b.x509v3_context(s.issuer.map(|(c, _)| c.as_ref()), None);
            let san = SubjectAlternativeName::new()
                .email(e)
                .build(&ctx)
                .expect("san");
            b.append_extension(san).expect("ext");
        }
    }
    let ctx = b.x509v3_context(s.issuer.map(|(c, _)| c.as_ref()), None);
    let ski = SubjectKeyIdentifier::new().build(&ctx).expect("ski");
    b.append_extension(ski).expect("ext");
    if s.issuer.is_some() {
        let ctx = b.x509v3_context(s.issuer.map(|(c, _)| c.as_ref()), None);
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&ctx)
            .expect("aki");
        b.append_extension(aki).expect("ext");
    }
    let signer = s.issuer.map(|(_, k)| k).unwrap_or(s.key);
    b.sign(signer, MessageDigest::sha256()).expect("sign");
    b.build()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write_user(
    dir: &Path,
    name: &'static str,
    email: &str,
    key: PKey<Private>,
    cert: X509,
    chain: &[&X509],
) -> User {
    let key_path = dir.join(format!("{name}.key"));
    let cert_path = dir.join(format!("{name}.pem"));
    let chain_path = dir.join(format!("{name}.chain.pem"));
    let p12_path = dir.join(format!("{name}.p12"));
    let p12_legacy_path = dir.join(format!("{name}-legacy.p12"));
    write(
        &key_path,
        &key.private_key_to_pem_pkcs8().expect("pem"),
        0o600,
    );
    write(&cert_path, &cert.to_pem().expect("pem"), 0o644);
    let mut chain_pem = cert.to_pem().expect("pem");
    let mut ca = Stack::new().expect("stack");
    for c in chain {
        chain_pem.extend(c.to_pem().expect("pem"));
        ca.push((*c).clone()).expect("push");
    }
    write(&chain_path, &chain_pem, 0o644);
    let p12 = Pkcs12::builder()
        .name(name)
        .pkey(&key)
        .cert(&cert)
        .ca(ca)
        .build2(P12_PASS)
        .expect("p12");
    write(&p12_path, &p12.to_der().expect("der"), 0o600);
    // gpgsm 2.2 reads only the legacy PBE: let the openssl CLI make that variant.
    let st = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-legacy", "-passout"])
        .arg(format!("pass:{P12_PASS}"))
        .arg("-inkey")
        .arg(&key_path)
        .arg("-in")
        .arg(&chain_path)
        .arg("-out")
        .arg(&p12_legacy_path)
        .status()
        .expect("openssl pkcs12");
    assert!(st.success(), "openssl pkcs12 -legacy failed");
    std::fs::set_permissions(&p12_legacy_path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    User {
        name,
        email: email.to_string(),
        cert,
        key,
        key_path,
        cert_path,
        chain_path,
        p12_path,
        p12_legacy_path,
    }
}

fn generate() -> Pki {
    let tmp = tempfile::Builder::new()
        .prefix("smimed-pki.")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let root_key = rsa();
    let root = make_cert(Spec {
        cn: "smimed Test Root CA",
        email: None,
        key: &root_key,
        issuer: None,
        ca: true,
        days_from: -30,
        days_to: 3650,
        eku_email: true,
        serial: 1,
    });
    let int_key = rsa();
    let intermediate = make_cert(Spec {
        cn: "smimed Test Intermediate CA",
        email: None,
        key: &int_key,
        issuer: Some((&root, &root_key)),
        ca: true,
        days_from: -30,
        days_to: 3000,
        eku_email: true,
        serial: 2,
    });
    let other_key = rsa();
    let other_root = make_cert(Spec {
        cn: "Untrusted Root CA",
        email: None,
        key: &other_key,
        issuer: None,
        ca: true,
        days_from: -30,
        days_to: 3650,
        eku_email: true,
        serial: 3,
    });
    let root_path = dir.join("root.pem");
    let intermediate_path = dir.join("intermediate.pem");
    let untrusted_root_path = dir.join("untrusted-root.pem");
    write(&root_path, &root.to_pem().expect("pem"), 0o644);
    write(
        &intermediate_path,
        &intermediate.to_pem().expect("pem"),
        0o644,
    );
    write(
        &untrusted_root_path,
        &other_root.to_pem().expect("pem"),
        0o644,
    );

    let mut serial = 100;
    let mut user = |name: &'static str,
                    alg: Alg,
                    via: Option<(&X509, &PKey<Private>)>,
                    chain: Vec<&X509>,
                    from: i64,
                    to: i64,
                    eku_email: bool| {
        serial += 1;
        let email = format!("{name}@example.org");
        let key = match alg {
            Alg::Rsa => rsa(),
            Alg::Ec => ec(),
            Alg::Ec384 => ec_on(Nid::SECP384R1),
        };
        let cert = make_cert(Spec {
            cn: name,
            email: Some(&email),
            key: &key,
            issuer: via,
            ca: false,
            days_from: from,
            days_to: to,
            eku_email,
            serial,
        });
        write_user(&dir, name, &email, key, cert, &chain)
    };
    let alice = user(
        "alice",
        Alg::Rsa,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -1,
        730,
        true,
    );
    let bob = user(
        "bob",
        Alg::Rsa,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -1,
        730,
        true,
    );
    let carol = user(
        "carol",
        Alg::Ec,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -1,
        730,
        true,
    );
    let erin = user(
        "erin",
        Alg::Ec,
        Some((&root, &root_key)),
        vec![],
        -1,
        730,
        true,
    );
    let pat = user(
        "pat",
        Alg::Ec384,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -1,
        730,
        true,
    );
    let expired = user(
        "expired",
        Alg::Rsa,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -400,
        -30,
        true,
    );
    let noemail = user(
        "noemail",
        Alg::Rsa,
        Some((&intermediate, &int_key)),
        vec![&intermediate],
        -1,
        730,
        false,
    );
    let untrusted = user(
        "untrusted",
        Alg::Rsa,
        Some((&other_root, &other_key)),
        vec![&other_root],
        -1,
        730,
        true,
    );
    // bob's renewed certificate (EC, issued a day after his first): "the newest valid one wins".
    let bob_renewed = {
        let key = ec();
        let cert = make_cert(Spec {
            cn: "bob",
            email: Some("bob@example.org"),
            key: &key,
            issuer: Some((&intermediate, &int_key)),
            ca: false,
            days_from: 0,
            days_to: 730,
            eku_email: true,
            serial: 200,
        });
        write_user(
            &dir,
            "bob-renewed",
            "bob@example.org",
            key,
            cert,
            &[&intermediate],
        )
    };
    Pki {
        dir,
        _tmp: tmp,
        bob_renewed,
        root,
        root_path,
        intermediate,
        intermediate_path,
        untrusted_root_path,
        alice,
        bob,
        carol,
        erin,
        pat,
        expired,
        noemail,
        untrusted,
    }
}

static PKI: OnceLock<Pki> = OnceLock::new();

/// Removes the PKI folder (private keys included) when the test binary exits: a static is never
/// dropped, so without this every run left a folder in /tmp.
extern "C" fn remove_pki_dir() {
    if let Some(p) = PKI.get() {
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}

/// The PKI shared by the tests of one test binary.
pub fn pki() -> &'static Pki {
    PKI.get_or_init(|| {
        let p = generate();
        // SAFETY: registers a plain function without captured state; it only reads a static
        // that is initialised by then.
        unsafe {
            libc::atexit(remove_pki_dir);
        }
        p
    })
}
