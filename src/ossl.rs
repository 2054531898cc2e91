//! The one module that calls OpenSSL through raw FFI.
//!
//! The `openssl` crate covers encryption, decryption and whole-message verification, but not the
//! per-signer, per-recipient inspection smimed needs (which recipient a RecipientInfo names, the
//! result of each SignerInfo on its own, signed attributes, key-usage bits). Every call to
//! `openssl-sys` or to a libcrypto symbol the crate does not declare lives here, behind safe
//! functions that take and return the crate's owned types. Nothing else in smimed uses `unsafe`.
//!
//! Invariants: every pointer handed out by OpenSSL with a `get0` name is borrowed and never freed
//! here; everything `get1`/`new` is owned and freed exactly once (through an owning crate type or
//! an explicit free on every path). The OpenSSL error queue is cleared after an expected failure
//! so that it does not leak into a later, unrelated error message.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long, c_uint, c_void};
use std::ptr;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::{Asn1IntegerRef, Asn1Time, Asn1TimeRef};
use openssl::cms::{CmsContentInfo, CmsContentInfoRef};
use openssl::nid::Nid;
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::{X509NameRef, X509Ref, X509};
use openssl_sys as ffi;

/// NID of id-smime-ct-authEnvelopedData (RFC 5083); not exported by openssl-sys.
const NID_AUTH_ENVELOPED: c_int = 1059;
const CMS_RECIPINFO_TRANS: c_int = 0;
const CMS_RECIPINFO_AGREE: c_int = 1;
const CMS_RECIPINFO_KEK: c_int = 2;
const CMS_RECIPINFO_PASS: c_int = 3;
/// X509_get_key_usage() / X509_get_extended_key_usage() return this when the extension is absent.
const ABSENT: u32 = u32::MAX;

#[allow(non_camel_case_types)]
type CMS_RecipientInfo = c_void;
#[allow(non_camel_case_types)]
type CMS_SignerInfo = c_void;
#[allow(non_camel_case_types)]
type CMS_RecipientEncryptedKey = c_void;
#[allow(non_camel_case_types)]
type X509_ALGOR = c_void;

extern "C" {
    fn CMS_get0_type(cms: *const ffi::CMS_ContentInfo) -> *const ffi::ASN1_OBJECT;
    fn CMS_get0_eContentType(cms: *mut ffi::CMS_ContentInfo) -> *const ffi::ASN1_OBJECT;
    fn CMS_get0_content(cms: *mut ffi::CMS_ContentInfo) -> *mut *mut ffi::ASN1_OCTET_STRING;
    fn CMS_get0_RecipientInfos(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::OPENSSL_STACK;
    fn CMS_RecipientInfo_type(ri: *mut CMS_RecipientInfo) -> c_int;
    fn CMS_RecipientInfo_ktri_cert_cmp(ri: *mut CMS_RecipientInfo, cert: *mut ffi::X509) -> c_int;
    fn CMS_RecipientInfo_ktri_get0_signer_id(
        ri: *mut CMS_RecipientInfo,
        keyid: *mut *mut ffi::ASN1_OCTET_STRING,
        issuer: *mut *mut ffi::X509_NAME,
        sno: *mut *mut ffi::ASN1_INTEGER,
    ) -> c_int;
    fn CMS_RecipientInfo_kari_get0_reks(ri: *mut CMS_RecipientInfo) -> *mut ffi::OPENSSL_STACK;
    fn CMS_RecipientEncryptedKey_cert_cmp(
        rek: *mut CMS_RecipientEncryptedKey,
        cert: *mut ffi::X509,
    ) -> c_int;
    fn CMS_RecipientEncryptedKey_get0_id(
        rek: *mut CMS_RecipientEncryptedKey,
        keyid: *mut *mut ffi::ASN1_OCTET_STRING,
        tm: *mut *mut c_void,
        other: *mut *mut c_void,
        issuer: *mut *mut ffi::X509_NAME,
        sno: *mut *mut ffi::ASN1_INTEGER,
    ) -> c_int;
    fn CMS_get0_SignerInfos(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::OPENSSL_STACK;
    fn CMS_set1_signers_certs(
        cms: *mut ffi::CMS_ContentInfo,
        certs: *mut ffi::stack_st_X509,
        flags: c_uint,
    ) -> c_int;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CMS_SignerInfo,
        pk: *mut *mut ffi::EVP_PKEY,
        signer: *mut *mut ffi::X509,
        pdig: *mut *mut X509_ALGOR,
        psig: *mut *mut X509_ALGOR,
    );
    fn CMS_SignerInfo_get0_signer_id(
        si: *mut CMS_SignerInfo,
        keyid: *mut *mut ffi::ASN1_OCTET_STRING,
        issuer: *mut *mut ffi::X509_NAME,
        sno: *mut *mut ffi::ASN1_INTEGER,
    ) -> c_int;
    fn CMS_SignerInfo_verify(si: *mut CMS_SignerInfo) -> c_int;
    fn CMS_SignerInfo_verify_content(si: *mut CMS_SignerInfo, chain: *mut ffi::BIO) -> c_int;
    fn CMS_dataInit(cms: *mut ffi::CMS_ContentInfo, icont: *mut ffi::BIO) -> *mut ffi::BIO;
    fn CMS_signed_get_attr_count(si: *const CMS_SignerInfo) -> c_int;
    fn CMS_signed_get0_data_by_OBJ(
        si: *const CMS_SignerInfo,
        oid: *const ffi::ASN1_OBJECT,
        lastpos: c_int,
        type_: c_int,
    ) -> *mut c_void;
    fn CMS_get1_certs(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::stack_st_X509;
    fn X509_ALGOR_get0(
        paobj: *mut *const ffi::ASN1_OBJECT,
        pptype: *mut c_int,
        ppval: *mut *const c_void,
        algor: *const X509_ALGOR,
    );
    fn BIO_pop(b: *mut ffi::BIO) -> *mut ffi::BIO;
    fn BIO_free(b: *mut ffi::BIO) -> c_int;
    fn X509_get_key_usage(x: *mut ffi::X509) -> u32;
    fn X509_check_ca(x: *mut ffi::X509) -> c_int;
    fn X509_get_extended_key_usage(x: *mut ffi::X509) -> u32;
    fn d2i_EXTENDED_KEY_USAGE(
        a: *mut *mut ffi::OPENSSL_STACK,
        pp: *mut *const u8,
        len: c_long,
    ) -> *mut ffi::OPENSSL_STACK;
    fn ASN1_OBJECT_free(a: *mut ffi::ASN1_OBJECT);
    fn d2i_X509_AUX(a: *mut *mut ffi::X509, pp: *mut *const u8, len: c_long) -> *mut ffi::X509;
    fn X509_get0_trust_objects(x: *mut ffi::X509) -> *mut ffi::OPENSSL_STACK;
    fn X509_get0_reject_objects(x: *mut ffi::X509) -> *mut ffi::OPENSSL_STACK;
    fn X509_add1_reject_object(x: *mut ffi::X509, obj: *const ffi::ASN1_OBJECT) -> c_int;
    fn OBJ_txt2nid(s: *const std::ffi::c_char) -> c_int;
    fn GENERAL_NAME_get0_otherName(
        gen: *const ffi::GENERAL_NAME,
        poid: *mut *mut ffi::ASN1_OBJECT,
        pvalue: *mut *mut ffi::ASN1_TYPE,
    ) -> c_int;
    fn X509_STORE_add_crl(store: *mut ffi::X509_STORE, crl: *mut ffi::X509_CRL) -> c_int;
    fn X509_STORE_CTX_get0_param(ctx: *mut ffi::X509_STORE_CTX) -> *mut ffi::X509_VERIFY_PARAM;
    fn X509_NAME_print_ex(
        out: *mut ffi::BIO,
        nm: *const ffi::X509_NAME,
        indent: c_int,
        flags: std::ffi::c_ulong,
    ) -> c_int;
    fn CMS_decrypt_set1_pkey_and_peer(
        cms: *mut ffi::CMS_ContentInfo,
        pk: *mut ffi::EVP_PKEY,
        cert: *mut ffi::X509,
        peer: *mut ffi::X509,
    ) -> c_int;
}

/// Makes OpenSSL report an undecryptable content-encryption key (bad PKCS#1 padding, or a key
/// of the wrong length for the cipher) as an error. Without CMS_DEBUG_DECRYPT it decrypts the
/// content with a random key instead (its countermeasure against Bleichenbacher's million
/// message attack), and the garbage passes CBC's padding check once in 256 tries: it would be
/// reported as decrypted. Every failure ends as `encryption=failed` here, whatever its cause,
/// so the flag reveals nothing the countermeasure hides.
///
/// The flag can only be set through `CMS_decrypt` called without key, certificate and BIOs,
/// which first wants the content present: a structure parsed with its encrypted content
/// detached gets an empty placeholder for the call.
///
/// # Safety
/// `cms` must be a valid EnvelopedData or AuthEnvelopedData ContentInfo.
unsafe fn report_bad_content_keys(cms: *mut ffi::CMS_ContentInfo) {
    // SAFETY: per the caller; CMS_get0_content returns the slot of the encrypted content (or
    // NULL), which we fill with a placeholder we own and empty again before freeing it.
    unsafe {
        let pos = CMS_get0_content(cms);
        if pos.is_null() {
            return;
        }
        let mut placeholder = ptr::null_mut();
        if (*pos).is_null() {
            placeholder = ffi::ASN1_OCTET_STRING_new();
            if placeholder.is_null() {
                return;
            }
            *pos = placeholder;
        }
        ffi::CMS_decrypt(
            cms,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ffi::CMS_DEBUG_DECRYPT,
        );
        if !placeholder.is_null() {
            *pos = ptr::null_mut();
            ffi::ASN1_STRING_free(placeholder as *mut ffi::ASN1_STRING);
        }
    }
    let _ = openssl::error::ErrorStack::get();
}

/// BIO_ctrl command behind the BIO_get_cipher_status() macro.
const BIO_C_GET_CIPHER_STATUS: c_int = 113;

/// What a CMS ContentInfo holds, from its contentType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Data,
    Signed,
    Enveloped,
    AuthEnveloped,
    Compressed,
    Other(i32),
}

/// The contentType of a parsed CMS structure.
pub fn content_kind(cms: &CmsContentInfoRef) -> ContentKind {
    // SAFETY: cms is a valid ContentInfo for the borrow; CMS_get0_type returns a borrowed object
    // (or NULL), and OBJ_obj2nid accepts NULL (returns NID_undef).
    let nid = unsafe { ffi::OBJ_obj2nid(CMS_get0_type(cms.as_ptr())) };
    match nid {
        ffi::NID_pkcs7_data => ContentKind::Data,
        ffi::NID_pkcs7_signed => ContentKind::Signed,
        ffi::NID_pkcs7_enveloped => ContentKind::Enveloped,
        NID_AUTH_ENVELOPED => ContentKind::AuthEnveloped,
        ffi::NID_id_smime_ct_compressedData => ContentKind::Compressed,
        n => ContentKind::Other(n),
    }
}

/// Whether a SignedData's encapsulated content is id-data, the only type S/MIME signs (RFC 8551
/// §2.4.2). Anything else the signer's key signed (a receipt, a timestamp token, another
/// protocol's data) is not a mail the signer wrote ("Johnny, You Are Fired", CMS wrapping).
pub fn econtent_is_data(cms: &CmsContentInfoRef) -> bool {
    // SAFETY: CMS_get0_eContentType returns a borrowed object of `cms` (or NULL, with an error
    // queued, for types without encapsulated content); OBJ_obj2nid accepts NULL.
    unsafe {
        let t = CMS_get0_eContentType(cms.as_ptr());
        ffi::ERR_clear_error();
        ffi::OBJ_obj2nid(t) == ffi::NID_pkcs7_data
    }
}

/// Whether a SignedData carries its content (eContent) inside.
pub fn has_econtent(cms: &CmsContentInfoRef) -> bool {
    // SAFETY: CMS_get0_content returns a borrowed pointer to the eContent slot (or NULL for
    // types without one); we only read through it.
    unsafe {
        let pos = CMS_get0_content(cms.as_ptr());
        ffi::ERR_clear_error();
        !pos.is_null() && !(*pos).is_null()
    }
}

/// A copy of a SignedData's eContent (None when it has none), unverified: only to look at
/// what it holds, never to deliver.
pub fn econtent_unverified(cms: &CmsContentInfoRef) -> Option<Vec<u8>> {
    // SAFETY: CMS_get0_content returns a borrowed pointer to the eContent slot (or NULL); the
    // octet string it points to, if any, is valid while `cms` is, and is only read (its length
    // and data) and copied.
    unsafe {
        let pos = CMS_get0_content(cms.as_ptr());
        ffi::ERR_clear_error();
        if pos.is_null() || (*pos).is_null() {
            return None;
        }
        let s = *pos as *const ffi::ASN1_STRING;
        let len = usize::try_from(ffi::ASN1_STRING_length(s)).ok()?;
        let data = ffi::ASN1_STRING_get0_data(s);
        if data.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(data, len).to_vec())
    }
}

/// How a RecipientInfo delivers the content-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKind {
    KeyTransport,
    KeyAgreement,
    Kek,
    Password,
    Other,
}

/// One recipient named by an EnvelopedData/AuthEnvelopedData, for reports.
#[derive(Debug, Clone)]
pub struct RecipientSummary {
    pub kind: RecipientKind,
    /// Issuer DN and serial (hex), when the recipient is named that way.
    pub issuer_serial: Option<(String, String)>,
}

fn stack_len(st: *const ffi::OPENSSL_STACK) -> c_int {
    if st.is_null() {
        0
    } else {
        // SAFETY: st is a valid, non-NULL stack.
        unsafe { ffi::OPENSSL_sk_num(st) }.max(0)
    }
}

fn stack_get(st: *const ffi::OPENSSL_STACK, i: c_int) -> *mut c_void {
    // SAFETY: callers pass i in 0..stack_len(st).
    unsafe { ffi::OPENSSL_sk_value(st, i) }
}

/// OpenSSL's XN_FLAG_RFC2253: ASN1_STRFLGS_RFC2253 (RFC 2253/4514 escapes, UTF-8, bytes over
/// 0x7F as `\\XX`, unknown types as `#` and hex DER), comma separators, the RDNs in reverse
/// order, short attribute names, unknown attribute types as dotted OIDs.
const XN_FLAG_RFC2253: std::ffi::c_ulong = 0x317 | 0x1_0000 | 0x10_0000 | 0x100_0000;

/// id-on-SmtpUTF8Mailbox (RFC 9598): an internationalised mailbox in a subjectAltName otherName.
const SMTP_UTF8_MAILBOX: &std::ffi::CStr = c"1.3.6.1.5.5.7.8.9";

/// The mailbox of a subjectAltName entry when it is an SmtpUTF8Mailbox otherName with a
/// UTF8String value (anything else under that type is skipped).
pub fn smtp_utf8_mailbox(gn: &openssl::x509::GeneralNameRef) -> Option<String> {
    // The NID OpenSSL gives the OID, looked up once (a NID is a plain integer).
    static NID: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    // SAFETY: OBJ_txt2nid reads the NUL-terminated string; it allocates nothing we keep.
    let want = *NID.get_or_init(|| unsafe { OBJ_txt2nid(SMTP_UTF8_MAILBOX.as_ptr()) });
    // SAFETY: gn is borrowed from its stack for the call; get0_otherName hands back pointers
    // borrowed from it, read at once and copied.
    unsafe {
        let gen = gn.as_ptr() as *const ffi::GENERAL_NAME;
        if want == ffi::NID_undef || (*gen).type_ != ffi::GEN_OTHERNAME {
            return None;
        }
        let (mut oid, mut value) = (ptr::null_mut(), ptr::null_mut());
        if GENERAL_NAME_get0_otherName(gen, &mut oid, &mut value) != 1
            || oid.is_null()
            || value.is_null()
            || ffi::OBJ_obj2nid(oid) != want
            || (*value).type_ != ffi::V_ASN1_UTF8STRING
        {
            return None;
        }
        let s = (*value).value.asn1_string;
        if s.is_null() {
            return None;
        }
        let data = ffi::ASN1_STRING_get0_data(s);
        let len = usize::try_from(ffi::ASN1_STRING_length(s)).ok()?;
        if data.is_null() {
            return None;
        }
        std::str::from_utf8(std::slice::from_raw_parts(data, len))
            .ok()
            .map(str::to_string)
    }
}

/// A distinguished name as an RFC 4514 string, as `openssl x509 -nameopt RFC2253` prints it
/// (`CN=Int CA\, Inc.,O=Caf\C3\A9`): unambiguous, and ASCII.
pub fn name_rfc4514(name: &X509NameRef) -> Option<String> {
    // SAFETY: the memory BIO is created, written, read and freed here; the name is borrowed for
    // the call; the bytes BIO_get_mem_data points at are copied before the BIO is freed.
    unsafe {
        let bio = ffi::BIO_new(ffi::BIO_s_mem());
        if bio.is_null() {
            return None;
        }
        let ok = X509_NAME_print_ex(bio, name.as_ptr(), 0, XN_FLAG_RFC2253) >= 0;
        let mut data: *mut std::ffi::c_char = ptr::null_mut();
        let len = ffi::BIO_get_mem_data(bio, &mut data);
        let out = (ok && len >= 0 && (len == 0 || !data.is_null())).then(|| {
            let bytes = if len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
            };
            String::from_utf8_lossy(bytes).into_owned()
        });
        BIO_free(bio);
        let _ = openssl::error::ErrorStack::get();
        out
    }
}

fn name_serial(
    issuer: *mut ffi::X509_NAME,
    sno: *mut ffi::ASN1_INTEGER,
) -> Option<(String, String)> {
    if issuer.is_null() || sno.is_null() {
        return None;
    }
    // SAFETY: both pointers are borrowed from a live CMS structure for the duration of the call.
    let (name, serial) = unsafe { (X509NameRef::from_ptr(issuer), Asn1IntegerRef::from_ptr(sno)) };
    Some((
        name_rfc4514(name).unwrap_or_else(|| crate::certs::name_to_string(name)),
        crate::certs::serial_hex(serial),
    ))
}

/// The recipients an enveloped message names.
pub fn recipients(cms: &CmsContentInfoRef) -> Vec<RecipientSummary> {
    let mut out = Vec::new();
    // SAFETY: the stack and its elements are borrowed from cms and only read.
    unsafe {
        let ris = CMS_get0_RecipientInfos(cms.as_ptr());
        for i in 0..stack_len(ris) {
            let ri = stack_get(ris, i);
            let kind = match CMS_RecipientInfo_type(ri) {
                CMS_RECIPINFO_TRANS => RecipientKind::KeyTransport,
                CMS_RECIPINFO_AGREE => RecipientKind::KeyAgreement,
                CMS_RECIPINFO_KEK => RecipientKind::Kek,
                CMS_RECIPINFO_PASS => RecipientKind::Password,
                _ => RecipientKind::Other,
            };
            match kind {
                RecipientKind::KeyTransport => {
                    let (mut keyid, mut issuer, mut sno) =
                        (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
                    CMS_RecipientInfo_ktri_get0_signer_id(ri, &mut keyid, &mut issuer, &mut sno);
                    out.push(RecipientSummary {
                        kind,
                        issuer_serial: name_serial(issuer, sno),
                    });
                }
                RecipientKind::KeyAgreement => {
                    let reks = CMS_RecipientInfo_kari_get0_reks(ri);
                    for j in 0..stack_len(reks) {
                        let rek = stack_get(reks, j);
                        let (mut keyid, mut tm, mut other, mut issuer, mut sno) = (
                            ptr::null_mut(),
                            ptr::null_mut(),
                            ptr::null_mut(),
                            ptr::null_mut(),
                            ptr::null_mut(),
                        );
                        CMS_RecipientEncryptedKey_get0_id(
                            rek,
                            &mut keyid,
                            &mut tm,
                            &mut other,
                            &mut issuer,
                            &mut sno,
                        );
                        out.push(RecipientSummary {
                            kind,
                            issuer_serial: name_serial(issuer, sno),
                        });
                    }
                }
                _ => out.push(RecipientSummary {
                    kind,
                    issuer_serial: None,
                }),
            }
        }
        ffi::ERR_clear_error();
    }
    out
}

/// Whether a RecipientInfo of `cms` names `cert` (issuer+serial or subject key identifier).
/// Decrypting is only attempted for a matching identity: OpenSSL given no match would "decrypt"
/// with a random key (its MMA countermeasure) and return garbage without an error.
pub fn recipient_matches(cms: &CmsContentInfoRef, cert: &X509Ref) -> bool {
    let mut found = false;
    // SAFETY: all pointers are borrowed from cms/cert, which outlive the block; the cmp
    // functions only read them.
    unsafe {
        let ris = CMS_get0_RecipientInfos(cms.as_ptr());
        for i in 0..stack_len(ris) {
            let ri = stack_get(ris, i);
            match CMS_RecipientInfo_type(ri) {
                CMS_RECIPINFO_TRANS if CMS_RecipientInfo_ktri_cert_cmp(ri, cert.as_ptr()) == 0 => {
                    found = true;
                }
                CMS_RECIPINFO_AGREE => {
                    let reks = CMS_RecipientInfo_kari_get0_reks(ri);
                    for j in 0..stack_len(reks) {
                        if CMS_RecipientEncryptedKey_cert_cmp(stack_get(reks, j), cert.as_ptr())
                            == 0
                        {
                            found = true;
                        }
                    }
                }
                _ => {}
            }
        }
        ffi::ERR_clear_error();
    }
    found
}

/// The cryptographic check of one SignerInfo (no certificate path, no policy: see `verify`).
#[derive(Debug)]
pub struct SignerCheck {
    /// The signer's certificate, when the message or the extra certificates hold it.
    pub cert: Option<X509>,
    /// Issuer DN and serial the SignerInfo names (for reports when the certificate is missing).
    pub issuer_serial: Option<(String, String)>,
    /// The signature over the signed attributes and the message digest both hold.
    pub signature_ok: bool,
    /// Digest algorithm short name (sha256…).
    pub digest: String,
    /// signingTime attribute, seconds since the epoch.
    pub signing_time: Option<i64>,
    /// DER of the SMIMECapabilities attribute value, when present.
    pub smime_capabilities: Option<Vec<u8>>,
    /// The certificate (among the message's) that the signer's encryption-key preference
    /// attributes name, when there is one.
    pub key_preference: Option<X509>,
    /// The signer has such an attribute (whether or not the message carries what it names).
    pub key_preference_named: bool,
    /// Why the signer's key was not used at all (see [`refused_key`]); its signature was then
    /// not checked.
    pub key_refused: Option<String>,
}

/// Most bits of an RSA public exponent a signature is checked with. The sender chooses the key,
/// and a verification costs in proportion to the exponent's length: a 3072-bit exponent made
/// each check cost 4.5 ms instead of 30 µs. OpenSSL itself allows 64 bits for moduli over 3072
/// bits; real keys use 65537 (17 bits); NIST SP 800-56B allows up to 256.
const MAX_RSA_EXPONENT_BITS: i32 = 64;

/// Why a signer's key is not used to check a signature: an RSA public exponent longer than
/// [`MAX_RSA_EXPONENT_BITS`].
pub fn refused_key(cert: &X509Ref) -> Option<String> {
    let pk = cert.public_key().ok()?;
    let rsa = pk.rsa().ok()?;
    (rsa.e().num_bits() > MAX_RSA_EXPONENT_BITS).then(|| String::from("unsupported-rsa-exponent"))
}

/// Result of checking every signer of a SignedData.
#[derive(Debug)]
pub struct SignedCheck {
    pub signers: Vec<SignerCheck>,
    /// The signed content: the eContent for opaque signatures, None for detached ones.
    pub content: Option<Vec<u8>>,
}

struct BioChain {
    head: *mut ffi::BIO,
    upto: *mut ffi::BIO,
}

impl Drop for BioChain {
    fn drop(&mut self) {
        // SAFETY: head is the chain CMS_dataInit returned. When we supplied the content BIO
        // (`upto`), the filters in front of it are popped and freed one by one and `upto` is
        // freed by its own owner; otherwise the whole chain belongs to us.
        unsafe {
            if self.upto.is_null() {
                ffi::BIO_free_all(self.head);
            } else {
                let mut f = self.head;
                while !f.is_null() && f != self.upto {
                    let next = BIO_pop(f);
                    BIO_free(f);
                    f = next;
                }
            }
        }
    }
}

struct MemBio(*mut ffi::BIO);

/// `CMS_dataInit` over `detached` content (a read-only memory BIO borrowing it) or over the
/// structure's own content. The returned guards free the chain, then the memory BIO.
///
/// # Safety
/// `cms` must be a valid ContentInfo that outlives the returned chain, and `detached` must
/// outlive it too.
unsafe fn data_init(
    cms: *mut ffi::CMS_ContentInfo,
    detached: Option<&[u8]>,
) -> Result<(Option<MemBio>, BioChain), openssl::error::ErrorStack> {
    let input = match detached {
        Some(data) => {
            let len = c_int::try_from(data.len()).map_err(|_| openssl::error::ErrorStack::get())?;
            // SAFETY: BIO_new_mem_buf reads `len` bytes of `data`, which outlives the BIO.
            let b = unsafe { ffi::BIO_new_mem_buf(data.as_ptr() as *const c_void, len) };
            if b.is_null() {
                return Err(openssl::error::ErrorStack::get());
            }
            Some(MemBio(b))
        }
        None => None,
    };
    let icont = input.as_ref().map_or(ptr::null_mut(), |b| b.0);
    // SAFETY: cms is valid per the caller; icont is NULL or our live memory BIO.
    let head = unsafe { CMS_dataInit(cms, icont) };
    if head.is_null() {
        return Err(openssl::error::ErrorStack::get());
    }
    Ok((input, BioChain { head, upto: icont }))
}

impl Drop for MemBio {
    fn drop(&mut self) {
        // SAFETY: a BIO we created with BIO_new_mem_buf and still own.
        unsafe {
            ffi::BIO_free_all(self.0);
        }
    }
}

fn signing_time(si: *mut CMS_SignerInfo) -> Option<i64> {
    // SAFETY: si is borrowed; the returned ASN1_TIME is borrowed from its attributes.
    unsafe {
        let obj = ffi::OBJ_nid2obj(ffi::NID_pkcs9_signingTime);
        for ty in [ffi::V_ASN1_UTCTIME, ffi::V_ASN1_GENERALIZEDTIME] {
            let t = CMS_signed_get0_data_by_OBJ(si, obj, -3, ty);
            if !t.is_null() {
                let t = Asn1TimeRef::from_ptr(t as *mut ffi::ASN1_TIME);
                let epoch = Asn1Time::from_unix(0).ok()?;
                let d = epoch.diff(t).ok()?;
                ffi::ERR_clear_error();
                return Some(i64::from(d.days) * 86_400 + i64::from(d.secs));
            }
        }
        ffi::ERR_clear_error();
    }
    None
}

fn smime_capabilities(si: *mut CMS_SignerInfo) -> Option<Vec<u8>> {
    // SAFETY: si is borrowed; the returned ASN1_STRING (the SEQUENCE's DER) is borrowed.
    unsafe {
        let obj = ffi::OBJ_nid2obj(ffi::NID_SMIMECapabilities);
        let s = CMS_signed_get0_data_by_OBJ(si, obj, -3, ffi::V_ASN1_SEQUENCE);
        ffi::ERR_clear_error();
        if s.is_null() {
            return None;
        }
        let s = s as *mut ffi::ASN1_STRING;
        let len = usize::try_from(ffi::ASN1_STRING_length(s)).ok()?;
        let data = ffi::ASN1_STRING_get0_data(s);
        if data.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(data, len).to_vec())
    }
}

/// ASN1_TYPE's type for a value under a non-universal tag (openssl-sys lacks it).
const V_ASN1_OTHER: c_int = -3;

/// Microsoft's encryption-key preference attribute (an IssuerAndSerialNumber), which Outlook
/// writes next to SMIMEEncryptionKeyPreference.
const MS_ENCRYPTION_KEY_PREFERENCE: &std::ffi::CStr = c"1.3.6.1.4.1.311.16.4";

/// The certificate among the message's (`certs`, listed only when an attribute is there) that
/// the signer's SMIMEEncryptionKeyPreference or Microsoft's equivalent names.
fn key_preference<'c>(
    si: *mut CMS_SignerInfo,
    certs: impl FnOnce() -> &'c mut Vec<X509>,
) -> Option<X509> {
    let value = key_preference_value(si)?;
    let wanted = crate::ber::key_preference(&value)?;
    certs()
        .iter()
        .find(|c| match wanted {
            crate::ber::KeyPreference::IssuerSerial { issuer, serial } => {
                c.issuer_name().to_der().ok().as_deref() == Some(issuer)
                    && serial_der(c).ok().as_deref() == Some(serial)
            }
            crate::ber::KeyPreference::SubjectKeyId(id) => {
                c.subject_key_id().map(|k| k.as_slice()) == Some(id)
            }
        })
        .cloned()
}

/// The DER value of the signer's encryption-key preference attribute (RFC 8551's, or
/// Microsoft's), if it has one.
fn key_preference_value(si: *mut CMS_SignerInfo) -> Option<Vec<u8>> {
    let mut value = None;
    // SAFETY: si is borrowed; the ASN1_OBJECTs are ours (the NID one is static, the text one
    // freed below); the returned ASN1_STRINGs are borrowed from si and copied at once.
    unsafe {
        let ms = ffi::OBJ_txt2obj(MS_ENCRYPTION_KEY_PREFERENCE.as_ptr(), 1);
        let candidates = [
            (
                ffi::OBJ_nid2obj(ffi::NID_id_smime_aa_encrypKeyPref),
                V_ASN1_OTHER,
            ),
            (
                ffi::OBJ_nid2obj(ffi::NID_id_smime_aa_encrypKeyPref),
                ffi::V_ASN1_SEQUENCE,
            ),
            (ms, ffi::V_ASN1_SEQUENCE),
        ];
        for (obj, ty) in candidates {
            if obj.is_null() || value.is_some() {
                continue;
            }
            let s = CMS_signed_get0_data_by_OBJ(si, obj, -3, ty) as *mut ffi::ASN1_STRING;
            if s.is_null() {
                continue;
            }
            let (Ok(len), data) = (
                usize::try_from(ffi::ASN1_STRING_length(s)),
                ffi::ASN1_STRING_get0_data(s),
            ) else {
                continue;
            };
            if !data.is_null() {
                value = Some(std::slice::from_raw_parts(data, len).to_vec());
            }
        }
        if !ms.is_null() {
            ASN1_OBJECT_free(ms);
        }
        ffi::ERR_clear_error();
    }
    value
}

/// The lowercase short name of the digest an algorithm identifier makes OpenSSL compute: a
/// signature algorithm's OID in a digestAlgorithm field (md5WithRSAEncryption) names its digest
/// (MD5), since OpenSSL digests with it. The field is not signed, so a name taken as written
/// would let anyone relabel a broken digest.
pub fn digest_name(nid: Nid) -> String {
    let nid = nid.signature_algorithms().map_or(nid, |a| a.digest);
    nid.short_name()
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|_| String::from("unknown"))
}

/// Checks every SignerInfo of a SignedData on its own: the signature over the signed attributes
/// and the message digest over `detached` (multipart/signed) or the embedded content (opaque).
/// `extra_certs` are searched for signer certificates the message does not carry.
/// `size_hint`: an upper bound of the embedded content's size (the DER's), to read it into one
/// allocation.
pub fn check_signers(
    cms: &CmsContentInfoRef,
    detached: Option<&[u8]>,
    extra_certs: &StackRef<X509>,
    size_hint: usize,
) -> Result<SignedCheck, openssl::error::ErrorStack> {
    let cms_ptr = cms.as_ptr();
    // SAFETY: every pointer below is either borrowed from `cms` (alive for the whole function)
    // or owned by a guard (MemBio, BioChain) that frees it on every path.
    unsafe {
        let sis = CMS_get0_SignerInfos(cms_ptr);
        if sis.is_null() {
            return Err(openssl::error::ErrorStack::get());
        }
        // Attach signer certificates from the message and from extra_certs; a signer whose
        // certificate cannot be found keeps a NULL signer.
        CMS_set1_signers_certs(cms_ptr, extra_certs.as_ptr(), 0);
        ffi::ERR_clear_error();

        let mut signers = Vec::new();
        let mut ptrs = Vec::new();
        let mut message_certs: Option<Vec<X509>> = None;
        for i in 0..stack_len(sis) {
            let si = stack_get(sis, i);
            let (mut pk, mut signer, mut pdig, mut psig) = (
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            );
            CMS_SignerInfo_get0_algs(si, &mut pk, &mut signer, &mut pdig, &mut psig);
            let cert = if signer.is_null() {
                None
            } else {
                Some(X509Ref::from_ptr(signer).to_owned())
            };
            let (mut keyid, mut issuer, mut sno) =
                (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
            CMS_SignerInfo_get0_signer_id(si, &mut keyid, &mut issuer, &mut sno);
            let digest = if pdig.is_null() {
                String::from("unknown")
            } else {
                let mut obj = ptr::null();
                X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), pdig);
                digest_name(Nid::from_raw(ffi::OBJ_obj2nid(obj)))
            };
            let key_refused = cert.as_deref().and_then(refused_key);
            let _ = openssl::error::ErrorStack::get();
            // Signature over the signed attributes (only when there are signed attributes; without
            // them the signature covers the content digest and is checked below).
            let attrs_ok = if signer.is_null() || key_refused.is_some() {
                false
            } else if CMS_signed_get_attr_count(si) >= 0 {
                CMS_SignerInfo_verify(si) == 1
            } else {
                true
            };
            ffi::ERR_clear_error();
            let key_preference_named = key_preference_value(si).is_some();
            signers.push(SignerCheck {
                key_preference_named,
                cert,
                issuer_serial: name_serial(issuer, sno),
                signature_ok: attrs_ok,
                digest,
                key_refused,
                signing_time: signing_time(si),
                smime_capabilities: smime_capabilities(si),
                key_preference: key_preference(si, || {
                    // The message's certificates: those left in the structure and those taken
                    // out before parsing (`ber::detach_certificates`), which come as extras.
                    message_certs.get_or_insert_with(|| {
                        let mut v = embedded_certs(cms);
                        v.extend(extra_certs.iter().map(X509Ref::to_owned));
                        v
                    })
                }),
            });
            ptrs.push(si);
        }

        // Digest the content through the BIO chain CMS_dataInit builds.
        let (input, chain) = data_init(cms_ptr, detached)?;
        let mut content = Vec::with_capacity(if detached.is_none() { size_hint } else { 0 });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = ffi::BIO_read(
                chain.head,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
            );
            if n <= 0 {
                break;
            }
            if detached.is_none() {
                content.extend_from_slice(&buf[..n as usize]);
            }
        }
        // The signed content may be decrypted content: no copy of it stays in freed memory.
        crate::secret::wipe(&mut buf);
        for (check, si) in signers.iter_mut().zip(ptrs) {
            if check.cert.is_some() && check.key_refused.is_none() {
                let ok = CMS_SignerInfo_verify_content(si, chain.head) == 1;
                check.signature_ok = check.signature_ok && ok;
            }
        }
        drop(chain);
        drop(input);
        ffi::ERR_clear_error();
        Ok(SignedCheck {
            signers,
            content: if detached.is_none() {
                Some(content)
            } else {
                None
            },
        })
    }
}

/// Decrypts an EnvelopedData or AuthEnvelopedData for the RecipientInfo that names `cert`,
/// handing the plaintext to `sink` in chunks as the cipher produces it (OpenSSL's own CMS_decrypt
/// grows a memory BIO, copying and cleansing it at each step). Returns Ok only when the cipher
/// reported success at the end (for GCM: the tag matched); on Err the caller must discard
/// everything the sink received: it is not authenticated.
///
/// `detached`: the encrypted content, when the structure was parsed without it
/// (see `ber::detach_encrypted_content`).
pub fn decrypt_into(
    cms: &CmsContentInfoRef,
    pkey: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    cert: &X509Ref,
    detached: Option<&[u8]>,
    size_hint: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), openssl::error::ErrorStack> {
    let cms_ptr = cms.as_ptr();
    // SAFETY: cms, pkey and cert are valid for the call; CMS_decrypt_set1_pkey_and_peer uses the
    // key only to unwrap the content-encryption key and detaches it again. The BIO chain from
    // CMS_dataInit is ours and freed by BioChain. BIO_read writes at most `len` bytes into `buf`.
    unsafe {
        report_bad_content_keys(cms_ptr);
        if CMS_decrypt_set1_pkey_and_peer(cms_ptr, pkey.as_ptr(), cert.as_ptr(), ptr::null_mut())
            != 1
        {
            return Err(openssl::error::ErrorStack::get());
        }
        let (input, chain) = data_init(cms_ptr, detached)?;
        // A small message needs a small buffer (it is zeroed and wiped for every message).
        let mut buf = vec![0u8; size_hint.clamp(4096, 256 * 1024)];
        let mut failed = false;
        loop {
            let n = ffi::BIO_read(
                chain.head,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
            );
            if n > 0 {
                sink(&buf[..n as usize]);
                continue;
            }
            if n < 0 {
                failed = true;
            }
            break;
        }
        crate::secret::wipe(&mut buf);
        let status_ok = ffi::BIO_ctrl(chain.head, BIO_C_GET_CIPHER_STATUS, 0, ptr::null_mut()) > 0;
        drop(chain);
        drop(input);
        if failed || !status_ok {
            return Err(openssl::error::ErrorStack::get());
        }
        ffi::ERR_clear_error();
        Ok(())
    }
}

/// How many SignerInfos a SignedData has (0 for a certs-only bundle or another type).
pub fn signer_count(cms: &CmsContentInfoRef) -> usize {
    // SAFETY: the stack is borrowed from cms and only counted.
    let n = unsafe { stack_len(CMS_get0_SignerInfos(cms.as_ptr())) };
    // SAFETY: clearing the thread's error queue has no preconditions.
    unsafe { ffi::ERR_clear_error() };
    usize::try_from(n).unwrap_or(0)
}

/// The certificates a SignedData carries.
pub fn embedded_certs(cms: &CmsContentInfoRef) -> Vec<X509> {
    // SAFETY: CMS_get1_certs returns a new stack (or NULL) that we own; Stack::from_ptr takes
    // ownership and frees it and its up-ref'd certificates.
    unsafe {
        let st = CMS_get1_certs(cms.as_ptr());
        ffi::ERR_clear_error();
        if st.is_null() {
            return Vec::new();
        }
        let stack: Stack<X509> = Stack::from_ptr(st);
        stack.into_iter().collect()
    }
}

/// Key-usage bits of a certificate (X509v3_KU_*), None when the extension is absent.
pub fn key_usage(cert: &X509Ref) -> Option<u32> {
    // SAFETY: X509_get_key_usage only reads the (cached) extensions of a valid certificate.
    let ku = unsafe { X509_get_key_usage(cert.as_ptr()) };
    (ku != ABSENT).then_some(ku)
}

/// Whether a certificate is a CA as OpenSSL's path building takes it: basicConstraints cA
/// (and keyCertSign when key usage is present), or keyCertSign without basicConstraints. A
/// self-signed version 1 certificate, which OpenSSL also accepts as a root, is not counted: it
/// may as well be someone's own certificate.
pub fn is_ca(cert: &X509Ref) -> bool {
    // SAFETY: X509_check_ca only reads the (cached) extensions of a valid certificate.
    let r = unsafe { X509_check_ca(cert.as_ptr()) };
    matches!(r, 1 | 4 | 5)
}

/// Extended-key-usage flags of a certificate (XKU_*), None when the extension is absent.
pub fn ext_key_usage(cert: &X509Ref) -> Option<u32> {
    // SAFETY: as for key_usage.
    let xku = unsafe { X509_get_extended_key_usage(cert.as_ptr()) };
    (xku != ABSENT).then_some(xku)
}

/// Decodes a DER ExtKeyUsageSyntax (SEQUENCE OF OBJECT IDENTIFIER) into dotted OIDs.
pub fn decode_eku(der: &[u8]) -> Option<Vec<String>> {
    let len = c_long::try_from(der.len()).ok()?;
    // SAFETY: d2i reads at most `len` bytes from `p`; the returned stack is owned and freed with
    // its ASN1_OBJECT elements before returning.
    unsafe {
        let mut p = der.as_ptr();
        let st = d2i_EXTENDED_KEY_USAGE(ptr::null_mut(), &mut p, len);
        if st.is_null() {
            ffi::ERR_clear_error();
            return None;
        }
        let mut out = Vec::new();
        for i in 0..stack_len(st) {
            let obj = stack_get(st, i) as *const ffi::ASN1_OBJECT;
            let mut buf = [0u8; 128];
            let n = ffi::OBJ_obj2txt(buf.as_mut_ptr() as *mut _, buf.len() as c_int, obj, 1);
            if n > 0 {
                let n = (n as usize).min(buf.len() - 1);
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        while ffi::OPENSSL_sk_num(st) > 0 {
            ASN1_OBJECT_free(ffi::OPENSSL_sk_pop(st) as *mut ffi::ASN1_OBJECT);
        }
        ffi::OPENSSL_sk_free(st);
        Some(out)
    }
}

/// The trust settings of an OpenSSL "TRUSTED CERTIFICATE" (`openssl x509 -addtrust/-addreject
/// -trustout`: the certificate followed by an X509_CERT_AUX), for e-mail: None when the block
/// is not such a certificate or states nothing; Some(Ok) when its settings allow e-mail;
/// Some(Err(why)) when they reject emailProtection (or every use, anyExtendedKeyUsage) or list
/// trusted uses without it, as `openssl cms -verify` reads them (X509_TRUST_EMAIL).
pub fn aux_email_trust(der: &[u8]) -> Option<Result<(), String>> {
    let len = c_long::try_from(der.len()).ok()?;
    let names = |st: *mut ffi::OPENSSL_STACK| -> Vec<(c_int, String)> {
        (0..stack_len(st))
            .map(|i| {
                let obj = stack_get(st, i) as *const ffi::ASN1_OBJECT;
                let mut buf = [0u8; 128];
                // SAFETY: obj is an element of a live stack; buf bounds the text written.
                let n = unsafe {
                    ffi::OBJ_obj2txt(buf.as_mut_ptr() as *mut _, buf.len() as c_int, obj, 0)
                };
                let n = (n.max(0) as usize).min(buf.len() - 1);
                // SAFETY: as above.
                let nid = unsafe { ffi::OBJ_obj2nid(obj) };
                (nid, String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .collect()
    };
    // SAFETY: d2i reads at most `len` bytes from `p`; the certificate it returns is owned by
    // `cert`, which frees it, and the stacks are borrowed from it.
    unsafe {
        let mut p = der.as_ptr();
        let raw = d2i_X509_AUX(ptr::null_mut(), &mut p, len);
        if raw.is_null() {
            ffi::ERR_clear_error();
            return None;
        }
        let cert = X509::from_ptr(raw);
        let email =
            |nid: c_int| nid == ffi::NID_email_protect || nid == ffi::NID_anyExtendedKeyUsage;
        let reject = names(X509_get0_reject_objects(cert.as_ptr()));
        if reject.iter().any(|(n, _)| email(*n)) {
            let list: Vec<&str> = reject.iter().map(|(_, s)| s.as_str()).collect();
            return Some(Err(format!("rejected for {}", list.join(","))));
        }
        let trust = names(X509_get0_trust_objects(cert.as_ptr()));
        if trust.is_empty() {
            return (!reject.is_empty()).then_some(Ok(()));
        }
        if trust.iter().any(|(n, _)| email(*n)) {
            Some(Ok(()))
        } else {
            let list: Vec<&str> = trust.iter().map(|(_, s)| s.as_str()).collect();
            Some(Err(format!("trusted only for {}", list.join(","))))
        }
    }
}

/// A copy of `cert` whose OpenSSL trust settings reject it for e-mail (emailProtection) and
/// for any purpose (anyExtendedKeyUsage, which OpenSSL's purpose-less check reads): in a store,
/// it ends every path through it with X509_V_ERR_CERT_REJECTED, also when a message carries the
/// same certificate (OpenSSL takes issuers from the store first).
pub fn rejected_for_email(cert: &X509Ref) -> Option<X509> {
    let copy = X509::from_der(&cert.to_der().ok()?).ok()?;
    for nid in [ffi::NID_email_protect, ffi::NID_anyExtendedKeyUsage] {
        // SAFETY: OBJ_nid2obj returns a static object for a built-in NID; add1 copies it into
        // the certificate's aux, which `copy` owns.
        let ok = unsafe {
            let obj = ffi::OBJ_nid2obj(nid);
            !obj.is_null() && X509_add1_reject_object(copy.as_ptr(), obj) == 1
        };
        if !ok {
            let _ = openssl::error::ErrorStack::get();
            return None;
        }
    }
    Some(copy)
}

/// Changes the verification parameters of one verification (an initialised context, inside
/// X509StoreContext::init's closure): `set` flags, `clear` flags, and a depth when given.
fn tune_verification(
    ctx: &mut openssl::x509::X509StoreContextRef,
    set: std::ffi::c_ulong,
    clear: std::ffi::c_ulong,
    depth: Option<c_int>,
) {
    // SAFETY: the context is initialised; its parameters belong to it and are only changed
    // for this verification.
    unsafe {
        let param = X509_STORE_CTX_get0_param(ctx.as_ptr());
        if param.is_null() {
            return;
        }
        if set != 0 {
            ffi::X509_VERIFY_PARAM_set_flags(param, set);
        }
        if clear != 0 {
            ffi::X509_VERIFY_PARAM_clear_flags(param, clear);
        }
        if let Some(d) = depth {
            ffi::X509_VERIFY_PARAM_set_depth(param, d);
        }
    }
}

/// Makes one verification build the path up to a self-signed anchor, even though the store
/// takes any of its certificates as an anchor (X509_V_FLAG_PARTIAL_CHAIN): with CRLs, a trusted
/// intermediate's own revocation is then checked against its issuer's CRL.
pub fn require_full_chain(ctx: &mut openssl::x509::X509StoreContextRef) {
    tune_verification(ctx, 0, ffi::X509_V_FLAG_PARTIAL_CHAIN as _, None);
}

/// Makes one verification a bounded check of whether a certificate has a path at all: at most
/// `depth` certificates above it, validity times left out.
pub fn path_only(ctx: &mut openssl::x509::X509StoreContextRef, depth: i32) {
    tune_verification(ctx, ffi::X509_V_FLAG_NO_CHECK_TIME as _, 0, Some(depth));
}

/// The verification result "certificate revoked", for a revocation found by reading a CRL
/// directly (see `verify::revoked_above`).
pub fn cert_revoked() -> openssl::x509::X509VerifyResult {
    // SAFETY: a valid, constant X509_V_ERR code (from_raw is unsafe only for invalid numbers).
    unsafe { openssl::x509::X509VerifyResult::from_raw(ffi::X509_V_ERR_CERT_REVOKED) }
}

/// Adds a CRL to a store under construction.
pub fn store_add_crl(
    builder: &mut X509StoreBuilderRef,
    crl: &openssl::x509::X509CrlRef,
) -> Result<(), openssl::error::ErrorStack> {
    // SAFETY: X509_STORE_add_crl up-refs the CRL; both pointers are valid for the call.
    let r = unsafe { X509_STORE_add_crl(builder.as_ptr(), crl.as_ptr()) };
    if r == 1 {
        Ok(())
    } else {
        Err(openssl::error::ErrorStack::get())
    }
}

// ================================================================================================
// Outbound: signing with our own signed attributes, encrypting with per-recipient key parameters
// (RSA-OAEP, ECDH with a SHA-256 KDF), and reading SMIMECapabilities. Owned by the sendmail side.
// Invariants as above: every object created here is owned by a crate type or freed on every path.
// ================================================================================================

/// CMS_CADES (not exported by openssl-sys): adds the ESS signingCertificateV2 attribute.
const CMS_CADES: c_uint = 0x10_0000;
const RSA_PKCS1_OAEP_PADDING: c_int = 4;

#[allow(non_camel_case_types)]
type CMS_SignerInfoPtr = *mut c_void;

extern "C" {
    fn CMS_add1_signer(
        cms: *mut ffi::CMS_ContentInfo,
        signer: *mut ffi::X509,
        pk: *mut ffi::EVP_PKEY,
        md: *const ffi::EVP_MD,
        flags: c_uint,
    ) -> CMS_SignerInfoPtr;
    fn CMS_add_smimecap(si: CMS_SignerInfoPtr, algs: *mut ffi::OPENSSL_STACK) -> c_int;
    fn PKCS7_simple_smimecap(sk: *mut ffi::OPENSSL_STACK, nid: c_int, arg: c_int) -> c_int;
    fn d2i_X509_ALGOR(a: *mut *mut X509_ALGOR, pp: *mut *const u8, len: c_long) -> *mut X509_ALGOR;
    fn i2d_X509_ALGOR(a: *const X509_ALGOR, out: *mut *mut u8) -> c_int;
    fn CMS_signed_add1_attr_by_NID(
        si: CMS_SignerInfoPtr,
        nid: c_int,
        attrtype: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
    fn CMS_signed_add1_attr_by_txt(
        si: CMS_SignerInfoPtr,
        attrname: *const std::ffi::c_char,
        attrtype: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
    fn CMS_final(
        cms: *mut ffi::CMS_ContentInfo,
        data: *mut ffi::BIO,
        dcont: *mut ffi::BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_add1_recipient_cert(
        cms: *mut ffi::CMS_ContentInfo,
        recip: *mut ffi::X509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut ffi::EVP_PKEY_CTX;
    #[link_name = "EVP_PKEY_CTX_set_rsa_padding"]
    fn set_rsa_padding(ctx: *mut ffi::EVP_PKEY_CTX, pad: c_int) -> c_int;
    #[link_name = "EVP_PKEY_CTX_set_rsa_oaep_md"]
    fn set_rsa_oaep_md(ctx: *mut ffi::EVP_PKEY_CTX, md: *const ffi::EVP_MD) -> c_int;
    #[link_name = "EVP_PKEY_CTX_set_rsa_mgf1_md"]
    fn set_rsa_mgf1_md(ctx: *mut ffi::EVP_PKEY_CTX, md: *const ffi::EVP_MD) -> c_int;
    #[link_name = "EVP_PKEY_CTX_set_ecdh_kdf_md"]
    fn set_ecdh_kdf_md(ctx: *mut ffi::EVP_PKEY_CTX, md: *const ffi::EVP_MD) -> c_int;
    fn d2i_X509_ALGORS(
        a: *mut *mut ffi::OPENSSL_STACK,
        pp: *mut *const u8,
        len: c_long,
    ) -> *mut ffi::OPENSSL_STACK;
    fn i2d_ASN1_INTEGER(a: *const ffi::ASN1_INTEGER, out: *mut *mut u8) -> c_int;
}

/// The content-encryption and key-transport algorithms smimed offers in its SMIMECapabilities,
/// in our order of preference (RFC 8551 §2.7.1: strongest first, AEAD before CBC).
pub const OUR_CAPABILITIES: &[Capability] = &[
    Capability::Aes256Gcm,
    Capability::Aes128Gcm,
    Capability::Aes256Cbc,
    Capability::Aes128Cbc,
    Capability::RsaOaep,
];

/// RSAES-OAEP with SHA-256 and MGF1-SHA-256, as an SMIMECapability (RFC 3560 §5,
/// rSAES-OAEP-SHA256-Identifier): what smimed encrypts with when a recipient advertised it.
const OAEP_SHA256_CAPABILITY: &[u8] = &[
    0x30, 0x38, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x2b, 0xa0,
    0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0xa1, 0x1a,
    0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0b, 0x06,
    0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

/// The same with the SHA-256 identifiers' parameters written as NULL (RFC 4055 §2.1: accepted).
const OAEP_SHA256_CAPABILITY_NULLS: &[u8] = &[
    0x30, 0x3c, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x2f, 0xa0,
    0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
];

/// An algorithm named in an SMIMECapabilities attribute that smimed acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Aes256Gcm,
    Aes128Gcm,
    Aes256Cbc,
    Aes128Cbc,
    RsaOaep,
    /// A content cipher smimed does not encrypt with (3DES, AES-192, RC2…): a list holding only
    /// such says what its owner reads, and none of it is ours.
    OtherCipher,
}

impl Capability {
    /// Whether it is an authenticated content cipher (AuthEnvelopedData).
    pub fn is_gcm(self) -> bool {
        matches!(self, Capability::Aes256Gcm | Capability::Aes128Gcm)
    }
    /// Whether it is a content cipher (not a key transport).
    pub fn is_cipher(self) -> bool {
        !matches!(self, Capability::RsaOaep)
    }
    fn nid(self) -> c_int {
        match self {
            Capability::Aes256Gcm => ffi::NID_aes_256_gcm,
            Capability::Aes128Gcm => ffi::NID_aes_128_gcm,
            Capability::Aes256Cbc => ffi::NID_aes_256_cbc,
            Capability::Aes128Cbc => ffi::NID_aes_128_cbc,
            Capability::RsaOaep => ffi::NID_rsaesOaep,
            Capability::OtherCipher => ffi::NID_undef,
        }
    }
    fn from_nid(nid: c_int) -> Option<Capability> {
        OUR_CAPABILITIES.iter().copied().find(|c| c.nid() == nid)
    }
    pub fn name(self) -> &'static str {
        match self {
            Capability::Aes256Gcm => "aes256-gcm",
            Capability::Aes128Gcm => "aes128-gcm",
            Capability::Aes256Cbc => "aes256-cbc",
            Capability::Aes128Cbc => "aes128-cbc",
            Capability::RsaOaep => "rsaes-oaep",
            Capability::OtherCipher => "other-cipher",
        }
    }
}

/// The algorithms a DER SMIMECapabilities value lists that smimed knows, in the sender's order.
/// None when the value does not decode.
pub fn parse_capabilities(der: &[u8]) -> Option<Vec<Capability>> {
    let len = c_long::try_from(der.len()).ok()?;
    // SAFETY: d2i reads at most `len` bytes; the returned stack of X509_ALGOR is owned here and
    // freed with its elements before returning; X509_ALGOR_get0 borrows from an element.
    unsafe {
        let mut p = der.as_ptr();
        let st = d2i_X509_ALGORS(ptr::null_mut(), &mut p, len);
        if st.is_null() {
            ffi::ERR_clear_error();
            return None;
        }
        let mut out = Vec::new();
        for i in 0..stack_len(st) {
            let alg = stack_get(st, i) as *const X509_ALGOR;
            let mut obj = ptr::null();
            X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), alg);
            let nid = ffi::OBJ_obj2nid(obj);
            let c = match Capability::from_nid(nid) {
                Some(c) => c,
                // A cipher OpenSSL knows by that OID (EVP_get_cipherbynid).
                None if nid != ffi::NID_undef
                    && !ffi::EVP_get_cipherbyname(ffi::OBJ_nid2sn(nid)).is_null() =>
                {
                    Capability::OtherCipher
                }
                None => continue,
            };
            // RSA-OAEP counts only with the SHA-256 parameters smimed encrypts with: without
            // parameters (SHA-1, RFC 3560 §5) or with others, PKCS#1 v1.5 is used instead,
            // which every receiving agent supports.
            if c == Capability::RsaOaep {
                let mut der: *mut u8 = ptr::null_mut();
                let n = i2d_X509_ALGOR(alg, &mut der);
                let ours = n > 0
                    && !der.is_null()
                    && matches!(
                        std::slice::from_raw_parts(der, n as usize),
                        OAEP_SHA256_CAPABILITY | OAEP_SHA256_CAPABILITY_NULLS
                    );
                if !der.is_null() {
                    ffi::CRYPTO_free(der as *mut c_void, c"ossl.rs".as_ptr(), 0);
                }
                if !ours {
                    continue;
                }
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
        free_algors(st);
        Some(out)
    }
}

unsafe extern "C" fn free_algor(p: *mut c_void) {
    // SAFETY: called by OPENSSL_sk_pop_free on each X509_ALGOR element of a stack we own.
    unsafe { ffi::X509_ALGOR_free(p as *mut ffi::X509_ALGOR) }
}

/// Frees a stack of X509_ALGOR and its elements.
///
/// # Safety
/// `st` must be an owned STACK_OF(X509_ALGOR) not used afterwards.
unsafe fn free_algors(st: *mut ffi::OPENSSL_STACK) {
    // SAFETY: per the contract above.
    unsafe { ffi::OPENSSL_sk_pop_free(st, Some(free_algor)) }
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// The DER of a certificate's serial INTEGER.
fn serial_der(cert: &X509Ref) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    // SAFETY: i2d with a NULL output returns the length; the second call writes exactly that many
    // bytes into a buffer of that size; the serial is borrowed from the certificate.
    unsafe {
        let s = cert.serial_number().as_ptr();
        let n = i2d_ASN1_INTEGER(s, ptr::null_mut());
        if n <= 0 {
            return Err(openssl::error::ErrorStack::get());
        }
        let mut buf = vec![0u8; n as usize];
        let mut p = buf.as_mut_ptr();
        i2d_ASN1_INTEGER(s, &mut p);
        Ok(buf)
    }
}

/// DER of an IssuerAndSerialNumber for `cert` under `tag`: 0xA0 gives
/// SMIMEEncryptionKeyPreference ::= issuerAndSerialNumber [0] IMPLICIT IssuerAndSerialNumber
/// (RFC 8551 §2.5.3), 0x30 the plain SEQUENCE of Microsoft's attribute.
fn issuer_and_serial(cert: &X509Ref, tag: u8) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let issuer = cert.issuer_name().to_der()?;
    let serial = serial_der(cert)?;
    let mut out = vec![tag];
    der_length(issuer.len() + serial.len(), &mut out);
    out.extend_from_slice(&issuer);
    out.extend_from_slice(&serial);
    Ok(out)
}

fn owned_cms(p: *mut ffi::CMS_ContentInfo) -> Result<CmsContentInfo, openssl::error::ErrorStack> {
    if p.is_null() {
        Err(openssl::error::ErrorStack::get())
    } else {
        // SAFETY: a non-NULL ContentInfo freshly created by OpenSSL that nobody else owns.
        Ok(unsafe { CmsContentInfo::from_ptr(p) })
    }
}

fn mem_bio(data: &[u8]) -> Result<MemBio, openssl::error::ErrorStack> {
    let len = c_int::try_from(data.len()).map_err(|_| openssl::error::ErrorStack::get())?;
    // SAFETY: the BIO reads from `data`, which outlives every use of the returned guard (callers
    // drop it before `data`).
    let b = unsafe { ffi::BIO_new_mem_buf(data.as_ptr() as *const c_void, len) };
    if b.is_null() {
        Err(openssl::error::ErrorStack::get())
    } else {
        Ok(MemBio(b))
    }
}

/// The digest a signature by `key` uses, and its `micalg` name (RFC 8551 §3.5.3.2): SHA-256,
/// except for EC keys over larger curves, whose strength asks for a matching hash (RFC 5753
/// §5, RFC 5480 §4: P-384 with SHA-384, P-521 with SHA-512; gpgsm refuses "a 256 bit hash"
/// for a 384-bit key).
pub fn signing_digest(
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> (openssl::hash::MessageDigest, &'static str) {
    match (key.id(), key.bits()) {
        (openssl::pkey::Id::EC, b) if b > 384 => {
            (openssl::hash::MessageDigest::sha512(), "sha-512")
        }
        (openssl::pkey::Id::EC, b) if b > 256 => {
            (openssl::hash::MessageDigest::sha384(), "sha-384")
        }
        // RFC 8419 §3.1: Ed25519 signs in CMS with SHA-512 as the digest algorithm.
        (openssl::pkey::Id::ED25519, _) => (openssl::hash::MessageDigest::sha512(), "sha-512"),
        _ => (openssl::hash::MessageDigest::sha256(), "sha-256"),
    }
}

/// Signs `content` (already canonical: CRLF, 7-bit) with [`signing_digest`], returning the DER
/// ContentInfo.
/// Signed attributes: content-type, message-digest, signing-time, SMIMECapabilities
/// ([`OUR_CAPABILITIES`]), SMIMEEncryptionKeyPreference (`key_preference`: the signer's
/// certificate to encrypt to, which may differ from the signing one; left out when None) and
/// ESS signingCertificateV2. The certificate and `chain` are included. `detached` leaves the
/// content out (multipart/signed).
pub fn sign_der(
    cert: &X509Ref,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    chain: &[X509],
    key_preference: Option<&X509Ref>,
    content: &[u8],
    detached: bool,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut certs: Stack<X509> = Stack::new()?;
    for c in chain {
        certs.push(c.clone())?;
    }
    // The encryption certificate goes along too, so that the recipient can encrypt to it.
    if let Some(k) = key_preference {
        if k.to_der()? != cert.to_der()? {
            certs.push(k.to_owned())?;
        }
    }
    let detach = if detached { ffi::CMS_DETACHED } else { 0 };
    let keypref = key_preference
        .map(|k| {
            Ok::<_, openssl::error::ErrorStack>((
                issuer_and_serial(k, 0xA0)?,
                issuer_and_serial(k, 0x30)?,
            ))
        })
        .transpose()?;
    // SAFETY: all pointers are valid for the calls; the ContentInfo is owned by `cms` from the
    // moment it is created; the signer info is borrowed from it; the capability stack is owned
    // here and freed on every path; the content BIO guard outlives CMS_final.
    unsafe {
        let cms = owned_cms(ffi::CMS_sign(
            ptr::null_mut(),
            ptr::null_mut(),
            certs.as_ptr(),
            ptr::null_mut(),
            ffi::CMS_PARTIAL | ffi::CMS_BINARY | ffi::CMS_NOSMIMECAP | detach,
        ))?;
        let si = CMS_add1_signer(
            cms.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            signing_digest(key).0.as_ptr(),
            ffi::CMS_BINARY | ffi::CMS_NOSMIMECAP | CMS_CADES,
        );
        if si.is_null() {
            return Err(openssl::error::ErrorStack::get());
        }
        let algs = ffi::OPENSSL_sk_new_null();
        if algs.is_null() {
            return Err(openssl::error::ErrorStack::get());
        }
        let mut ok = true;
        for c in OUR_CAPABILITIES {
            if *c == Capability::RsaOaep {
                // With its SHA-256 parameters (RFC 3560 §5), never bare.
                let mut p = OAEP_SHA256_CAPABILITY.as_ptr();
                let alg = d2i_X509_ALGOR(
                    ptr::null_mut(),
                    &mut p,
                    OAEP_SHA256_CAPABILITY.len() as c_long,
                );
                let pushed = !alg.is_null() && ffi::OPENSSL_sk_push(algs, alg as *const c_void) > 0;
                if !pushed && !alg.is_null() {
                    ffi::X509_ALGOR_free(alg as *mut ffi::X509_ALGOR);
                }
                ok &= pushed;
            } else {
                ok &= PKCS7_simple_smimecap(algs, c.nid(), -1) == 1;
            }
        }
        ok = ok && CMS_add_smimecap(si, algs) == 1;
        free_algors(algs);
        if let Some((keypref, ms)) = &keypref {
            let kp_len =
                c_int::try_from(keypref.len()).map_err(|_| openssl::error::ErrorStack::get())?;
            let ms_len =
                c_int::try_from(ms.len()).map_err(|_| openssl::error::ErrorStack::get())?;
            ok = ok
                && CMS_signed_add1_attr_by_NID(
                    si,
                    ffi::NID_id_smime_aa_encrypKeyPref,
                    ffi::V_ASN1_SEQUENCE,
                    keypref.as_ptr() as *const c_void,
                    kp_len,
                ) == 1
                // Outlook writes and reads Microsoft's attribute too.
                && CMS_signed_add1_attr_by_txt(
                    si,
                    MS_ENCRYPTION_KEY_PREFERENCE.as_ptr(),
                    ffi::V_ASN1_SEQUENCE,
                    ms.as_ptr() as *const c_void,
                    ms_len,
                ) == 1;
        }
        if !ok {
            return Err(openssl::error::ErrorStack::get());
        }
        let input = mem_bio(content)?;
        if CMS_final(
            cms.as_ptr(),
            input.0,
            ptr::null_mut(),
            ffi::CMS_BINARY | detach,
        ) != 1
        {
            return Err(openssl::error::ErrorStack::get());
        }
        drop(input);
        cms.to_der()
    }
}

/// One recipient of an encryption: the certificate and whether to use RSA-OAEP (SHA-256) for an
/// RSA key. EC keys always use ECDH ephemeral-static with a SHA-256 X9.63 KDF.
pub struct EncryptTo<'a> {
    pub cert: &'a X509Ref,
    pub oaep: bool,
}

/// Encrypts `content` to every recipient with `cipher` (one of the content ciphers of
/// [`OUR_CAPABILITIES`]): AuthEnvelopedData for GCM, else EnvelopedData. Returns the DER
/// ContentInfo.
pub fn encrypt_der(
    recipients: &[EncryptTo<'_>],
    content: &[u8],
    cipher: Capability,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    // SAFETY: as in sign_der: the ContentInfo is owned by `cms`; RecipientInfos and their key
    // contexts are borrowed from it; the content BIO guard outlives CMS_final.
    unsafe {
        let cipher = match cipher {
            Capability::Aes256Gcm => ffi::EVP_aes_256_gcm(),
            Capability::Aes128Gcm => ffi::EVP_aes_128_gcm(),
            Capability::Aes128Cbc => ffi::EVP_aes_128_cbc(),
            Capability::Aes256Cbc | Capability::RsaOaep | Capability::OtherCipher => {
                ffi::EVP_aes_256_cbc()
            }
        };
        let cms = owned_cms(ffi::CMS_encrypt(
            ptr::null_mut(),
            ptr::null_mut(),
            cipher,
            ffi::CMS_BINARY | ffi::CMS_PARTIAL,
        ))?;
        for r in recipients {
            let is_ec = r
                .cert
                .public_key()
                .map(|k| k.id() == openssl::pkey::Id::EC)
                .unwrap_or(false);
            let ri = CMS_add1_recipient_cert(cms.as_ptr(), r.cert.as_ptr(), ffi::CMS_KEY_PARAM);
            if ri.is_null() {
                return Err(openssl::error::ErrorStack::get());
            }
            let pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
            if is_ec {
                if pctx.is_null() || set_ecdh_kdf_md(pctx, ffi::EVP_sha256()) <= 0 {
                    return Err(openssl::error::ErrorStack::get());
                }
            } else if r.oaep
                && (pctx.is_null()
                    || set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) <= 0
                    || set_rsa_oaep_md(pctx, ffi::EVP_sha256()) <= 0
                    || set_rsa_mgf1_md(pctx, ffi::EVP_sha256()) <= 0)
            {
                return Err(openssl::error::ErrorStack::get());
            }
        }
        let input = mem_bio(content)?;
        if CMS_final(cms.as_ptr(), input.0, ptr::null_mut(), ffi::CMS_BINARY) != 1 {
            return Err(openssl::error::ErrorStack::get());
        }
        drop(input);
        cms.to_der()
    }
}

// --- PKCS#12 bags ------------------------------------------------------------------------------

/// One bag of a PKCS#12 (opaque).
#[allow(non_camel_case_types)]
enum PKCS12_SAFEBAG {}

extern "C" {
    fn PKCS12_unpack_authsafes(p12: *const ffi::PKCS12) -> *mut ffi::OPENSSL_STACK;
    fn PKCS12_unpack_p7data(p7: *mut ffi::PKCS7) -> *mut ffi::OPENSSL_STACK;
    fn PKCS12_unpack_p7encdata(
        p7: *mut ffi::PKCS7,
        pass: *const std::ffi::c_char,
        passlen: c_int,
    ) -> *mut ffi::OPENSSL_STACK;
    fn PKCS12_SAFEBAG_get_nid(bag: *const PKCS12_SAFEBAG) -> c_int;
    fn PKCS12_SAFEBAG_get0_p8inf(bag: *const PKCS12_SAFEBAG) -> *const ffi::PKCS8_PRIV_KEY_INFO;
    fn PKCS12_decrypt_skey(
        bag: *const PKCS12_SAFEBAG,
        pass: *const std::ffi::c_char,
        passlen: c_int,
    ) -> *mut ffi::PKCS8_PRIV_KEY_INFO;
    fn PKCS12_SAFEBAG_get1_cert(bag: *const PKCS12_SAFEBAG) -> *mut ffi::X509;
    fn PKCS12_SAFEBAG_get0_safes(bag: *const PKCS12_SAFEBAG) -> *const ffi::OPENSSL_STACK;
    fn PKCS12_SAFEBAG_free(bag: *mut PKCS12_SAFEBAG);
}

unsafe extern "C" fn free_pkcs7(p: *mut c_void) {
    // SAFETY: an element of a STACK_OF(PKCS7) being freed with its stack.
    unsafe { ffi::PKCS7_free(p as *mut ffi::PKCS7) }
}

unsafe extern "C" fn free_safebag(p: *mut c_void) {
    // SAFETY: an element of a STACK_OF(PKCS12_SAFEBAG) being freed with its stack.
    unsafe { PKCS12_SAFEBAG_free(p as *mut PKCS12_SAFEBAG) }
}

/// A stack we own, freed with its elements.
struct OwnedStack(*mut ffi::OPENSSL_STACK, unsafe extern "C" fn(*mut c_void));

impl Drop for OwnedStack {
    fn drop(&mut self) {
        // SAFETY: a stack returned to us by OpenSSL, whose elements `self.1` frees.
        unsafe { ffi::OPENSSL_sk_pop_free(self.0, Some(self.1)) }
    }
}

/// Every private key and every certificate in a PKCS#12, whichever bag holds them: `parse2`
/// keeps only the first key, and a file exported with several (a signing and an encryption
/// key, as Exchange issues them, merged by Windows) lost the others. `pass`: the password the
/// file opened with (None: the file has none, or uses the empty BMPString form).
pub fn pkcs12_contents(
    p12: &openssl::pkcs12::Pkcs12Ref,
    pass: Option<&str>,
) -> Result<(Vec<openssl::pkey::PKey<openssl::pkey::Private>>, Vec<X509>), openssl::error::ErrorStack>
{
    let cpass = match pass {
        Some(p) => Some(std::ffi::CString::new(p).map_err(|_| openssl::error::ErrorStack::get())?),
        None => None,
    };
    let (pp, plen) = match &cpass {
        Some(c) => (
            c.as_ptr(),
            c_int::try_from(c.as_bytes().len()).map_err(|_| openssl::error::ErrorStack::get())?,
        ),
        None => (ptr::null(), 0),
    };
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    // SAFETY: p12 is valid; every stack returned is owned by an OwnedStack guard; bags are
    // borrowed from their stack; keys and certificates returned by get1/EVP_PKCS82PKEY are
    // owned (wrapped at once); a decrypted PKCS8_PRIV_KEY_INFO is freed after use.
    unsafe {
        let safes = PKCS12_unpack_authsafes(p12.as_ptr());
        if safes.is_null() {
            return Err(openssl::error::ErrorStack::get());
        }
        let safes = OwnedStack(safes, free_pkcs7);
        for i in 0..stack_len(safes.0) {
            let p7 = stack_get(safes.0, i) as *mut ffi::PKCS7;
            let mut bags = PKCS12_unpack_p7data(p7);
            if bags.is_null() {
                ffi::ERR_clear_error();
                bags = PKCS12_unpack_p7encdata(p7, pp, plen);
            }
            if bags.is_null() {
                return Err(openssl::error::ErrorStack::get());
            }
            let bags = OwnedStack(bags, free_safebag);
            collect_bags(bags.0, pp, plen, 0, &mut keys, &mut certs)?;
        }
    }
    Ok((keys, certs))
}

/// The keys and certificates of one SafeContents (and of nested ones, a few levels deep).
///
/// # Safety
/// `bags` must be a valid STACK_OF(PKCS12_SAFEBAG); `pass` NULL or a NUL-terminated string of
/// `plen` bytes.
unsafe fn collect_bags(
    bags: *const ffi::OPENSSL_STACK,
    pass: *const std::ffi::c_char,
    plen: c_int,
    depth: u8,
    keys: &mut Vec<openssl::pkey::PKey<openssl::pkey::Private>>,
    certs: &mut Vec<X509>,
) -> Result<(), openssl::error::ErrorStack> {
    // SAFETY: per the function's contract; see pkcs12_contents.
    unsafe {
        for i in 0..stack_len(bags) {
            let bag = stack_get(bags, i) as *const PKCS12_SAFEBAG;
            match PKCS12_SAFEBAG_get_nid(bag) {
                ffi::NID_keyBag | ffi::NID_pkcs8ShroudedKeyBag => {
                    let shrouded = PKCS12_SAFEBAG_get_nid(bag) == ffi::NID_pkcs8ShroudedKeyBag;
                    let p8 = if shrouded {
                        PKCS12_decrypt_skey(bag, pass, plen)
                    } else {
                        PKCS12_SAFEBAG_get0_p8inf(bag) as *mut ffi::PKCS8_PRIV_KEY_INFO
                    };
                    if p8.is_null() {
                        return Err(openssl::error::ErrorStack::get());
                    }
                    let pkey = ffi::EVP_PKCS82PKEY(p8);
                    if shrouded {
                        ffi::PKCS8_PRIV_KEY_INFO_free(p8);
                    }
                    if pkey.is_null() {
                        return Err(openssl::error::ErrorStack::get());
                    }
                    keys.push(openssl::pkey::PKey::from_ptr(pkey));
                }
                ffi::NID_certBag => {
                    let x = PKCS12_SAFEBAG_get1_cert(bag);
                    if !x.is_null() {
                        certs.push(X509::from_ptr(x));
                    }
                }
                ffi::NID_safeContentsBag if depth < 3 => {
                    collect_bags(
                        PKCS12_SAFEBAG_get0_safes(bag),
                        pass,
                        plen,
                        depth + 1,
                        keys,
                        certs,
                    )?;
                }
                _ => {}
            }
        }
        ffi::ERR_clear_error();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(items: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = items.concat();
        let mut out = vec![0x30];
        der_length(body.len(), &mut out);
        out.extend(body);
        out
    }

    #[test]
    fn rsa_oaep_counts_only_with_the_sha256_parameters_we_encrypt_with() {
        let oaep_oid: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07,
        ];
        let bare = seq(&[oaep_oid]);
        let sha1_default = seq(&[oaep_oid, &[0x30, 0x00]]);
        let aes256_gcm: &[u8] = &[
            0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e,
        ];
        let parse = |caps: &[&[u8]]| parse_capabilities(&seq(caps)).unwrap_or_default();
        assert_eq!(parse(&[aes256_gcm, &bare]), [Capability::Aes256Gcm]);
        assert_eq!(parse(&[&sha1_default]), []);
        assert_eq!(parse(&[OAEP_SHA256_CAPABILITY]), [Capability::RsaOaep]);
        assert_eq!(
            parse(&[OAEP_SHA256_CAPABILITY_NULLS]),
            [Capability::RsaOaep]
        );
    }
}
