//! Revocation with CRLs when the trust file lists intermediates (as an Office 365 .sst does), with
//! delta CRLs, and with a CA the message carries twice (cross-signed): the PKI root → A → B →
//! alice is made here with `openssl ca`, and each case is compared with what OpenSSL's own
//! `openssl verify -crl_check_all` says on the path to the root.

mod common;

use common::*;

/// The PKI and messages, made once for all the tests of this file.
fn pki_path() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(pki_dir).path()
}

fn pki_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("smimed-rev.")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = d.path().display().to_string();
    sh_in(
        d.path(),
        &format!(
            r#"set -e
D={dir}
mkca() {{
  mkdir -p $1/newcerts; : > $1/index.txt; echo 1000 > $1/serial; echo 1000 > $1/crlnumber
  cat > $1/ca.cnf <<EOC
[ ca ]
default_ca = c
[ c ]
dir = $D/$1
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = \$dir/cert.pem
private_key = \$dir/key.pem
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
default_days = 365
default_crl_days = 30
policy = pol
unique_subject = no
[ pol ]
commonName = supplied
emailAddress = optional
[ v3_ca ]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_leaf ]
basicConstraints = CA:false
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:copy
authorityKeyIdentifier = keyid:always
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOC
}}
for c in root A B R2; do mkca $c; openssl genrsa -out $c/key.pem 2048 2>/dev/null; done
for r in root R2; do
  openssl req -new -x509 -key $r/key.pem -subj "/CN=Test $r" -days 3650 -out $r/cert.pem \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign
done
issue() {{ openssl req -new -key $3 -subj "$2" -out $4.csr; openssl ca -batch -config $1/ca.cnf -extensions $5 -in $4.csr -out $4 -notext 2>/dev/null; }}
issue root "/CN=Test A" A/key.pem A/cert.pem v3_ca
issue A "/CN=Test B" B/key.pem B/cert.pem v3_ca
# A again, same key, under the second root (a root migration's cross-certificate).
issue R2 "/CN=Test A" A/key.pem A2.pem v3_ca
openssl genrsa -out alice.key 2048 2>/dev/null
issue B "/CN=Alice/emailAddress=alice@example.org" alice.key alice.pem v3_leaf
gencrl() {{ openssl ca -config $1/ca.cnf -gencrl -crlexts crl_ext -out $2 2>/dev/null; }}
gencrl root root-clean.crl; gencrl A A-clean.crl; gencrl B B-clean.crl
openssl ca -config root/ca.cnf -gencrl -crlexts crl_ext -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z -out root-expired.crl 2>/dev/null
# An older root CRL holding A, then a newer one that no longer lists it.
cp root/index.txt root/index.bak
openssl ca -config root/ca.cnf -revoke A/cert.pem -crl_hold holdInstructionReject 2>/dev/null
gencrl root root-holdA-old.crl
cp root/index.bak root/index.txt; sleep 1; gencrl root root-new.crl
openssl ca -config root/ca.cnf -revoke A/cert.pem 2>/dev/null; gencrl root root-revA.crl
openssl ca -config A/ca.cnf -revoke B/cert.pem 2>/dev/null; gencrl A A-revB.crl
# B's base CRL revoking alice, then a delta with nothing newly revoked (as AD CS publishes).
openssl ca -config B/ca.cnf -revoke alice.pem 2>/dev/null; gencrl B B-base.crl
base=$(openssl crl -in B-base.crl -noout -crlnumber | cut -d= -f2)
printf '[ delta_ext ]\nauthorityKeyIdentifier = keyid:always\n2.5.29.27 = critical,ASN1:INTEGER:%s\n' $base >> B/ca.cnf
sleep 1
cp B/index.txt B/index.bak; sed -i 's/^R\t\([^\t]*\)\t[^\t]*\t/V\t\1\t\t/' B/index.txt
openssl ca -config B/ca.cnf -gencrl -crlexts delta_ext -out B-delta.crl 2>/dev/null
cp root/cert.pem root.pem; cp A/cert.pem A.pem; cp B/cert.pem B.pem; cp R2/cert.pem R2.pem
cat root.pem B.pem > root+B.pem; cat A.pem B.pem > A+B.pem
printf 'Content-Type: text/plain\n\nhello\n' > content.txt
sign() {{ cat $1 > chain.pem; {{ printf 'From: alice@example.org\nTo: bob@example.org\nSubject: t\n'; openssl cms -sign -signer alice.pem -inkey alice.key -certfile chain.pem -in content.txt; }} > $2; }}
cat A.pem B.pem > AB; sign AB msg.eml
# (PKCS#7 as `openssl smime` writes it keeps the certificates in the order given.)
sign7() {{ cat $1 > chain.pem; {{ printf 'From: alice@example.org\nTo: bob@example.org\nSubject: t\n'; openssl smime -sign -signer alice.pem -inkey alice.key -certfile chain.pem -in content.txt; }} > $2; }}
cat B.pem A.pem A2.pem > cross1; sign7 cross1 cross-a-first.eml
cat B.pem A2.pem A.pem > cross2; sign7 cross2 cross-a2-first.eml
cat A2.pem A.pem B.pem > cross3; sign7 cross3 cross-a2-before-all.eml
# What anyone can put in a message: A's name and public key under an unknown CA (seventy of
# them, more than the budget for the message's certificates, before the real A), and A's name
# and key "self-signed" with another key.
openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=Evil" -days 30 -keyout evil.key -out evil.pem 2>/dev/null
openssl req -new -key A/key.pem -subj "/CN=Test A" -out Aevil.csr
printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
: > forged-all
for i in $(seq 1 70); do
  openssl x509 -req -in Aevil.csr -CA evil.pem -CAkey evil.key -set_serial $i -days 30 -extfile ca.ext -out forged$i.pem 2>/dev/null
  cat forged$i.pem >> forged-all
done
cat forged-all A.pem B.pem > forged-first; sign7 forged-first forged-first.eml
openssl genrsa -out junk.key 2048 2>/dev/null
openssl x509 -new -subj "/CN=Test A" -key junk.key -force_pubkey A/key.pem -days 30 -extfile ca.ext -out fakeroot.pem 2>/dev/null \
  || openssl x509 -req -in Aevil.csr -signkey junk.key -days 30 -extfile ca.ext -out fakeroot.pem 2>/dev/null
cat fakeroot.pem B.pem > fakeroot-chain; sign7 fakeroot-chain fake-root.eml
# A2 retired: its root R2 revokes it; the path through A and the first root stays good.
openssl ca -config R2/ca.cnf -revoke A2.pem -crl_reason cessationOfOperation 2>/dev/null; gencrl R2 R2-revA2.crl
cat root.pem R2.pem B.pem > roots+B.pem
cat A.pem A2.pem B.pem > both; sign7 both both-crossed.eml
cat root.pem A.pem B.pem > root+A+B.pem
# An older certificate of A from the root, for the same key, expired (no longer on the CRL).
openssl ca -batch -config root/ca.cnf -extensions v3_ca -in A/cert.pem.csr -startdate 20240101000000Z -enddate 20250101000000Z -out Aold.pem -notext 2>/dev/null
cat Aold.pem A.pem B.pem > with-old; sign7 with-old with-old.eml
cat root.pem B.pem Aold.pem > root+B+Aold.pem
"#
        ),
    );
    d
}

fn status(d: &std::path::Path, msg: &str, trust: &str, crls: &[&str]) -> String {
    let mut c = smimed();
    c.current_dir(d)
        .args(["--authserv-id", "mx.test", "--trust", trust]);
    for crl in crls {
        c.args(["--crl", crl]);
    }
    let out = run_with_stdin(c.arg("filter"), &std::fs::read(d.join(msg)).unwrap());
    status_of(&out.stdout)
}

fn lookup_code(d: &std::path::Path, trust: &str, crls: &[&str]) -> Option<i32> {
    let mut c = smimed();
    c.current_dir(d)
        .args(["--trust", trust, "--certs", "store"]);
    for crl in crls {
        c.args(["--crl", crl]);
    }
    let imp = run_with_stdin(
        smimed()
            .current_dir(d)
            .args(["--trust", trust, "--certs", "store", "certs", "import"])
            .args(["alice.pem", "A.pem", "B.pem"]),
        b"",
    );
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    run_with_stdin(c.args(["certs", "lookup", "alice@example.org"]), b"")
        .status
        .code()
}

#[test]
fn a_listed_intermediate_and_the_cas_above_it_are_read_for_revocation() {
    let d = pki_path();
    // root and B listed, A only in the message: the root's CRL revoking A still counts.
    let st = status(
        d,
        "msg.eml",
        "root+B.pem",
        &["root-revA.crl", "A-clean.crl", "B-clean.crl"],
    );
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    assert_eq!(
        lookup_code(
            d,
            "root+B.pem",
            &["root-revA.crl", "A-clean.crl", "B-clean.crl"]
        ),
        Some(1)
    );
    // A and B listed, no root: A's CRL revoking B counts, as with A alone listed.
    for trust in ["A.pem", "A+B.pem"] {
        let st = status(d, "msg.eml", trust, &["A-revB.crl", "B-clean.crl"]);
        assert_eq!(
            status_word(&st, "signature"),
            Some("revoked"),
            "{trust}: {st}"
        );
    }
    // Nothing revoked: valid, and every CRL on the path was read.
    let st = status(
        d,
        "msg.eml",
        "root+B.pem",
        &["root-clean.crl", "A-clean.crl", "B-clean.crl"],
    );
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert_eq!(status_word(&st, "revocation"), None, "{st}");
    // The root's CRL past its nextUpdate: A's revocation is unknown, so not all was read.
    let st = status(
        d,
        "msg.eml",
        "root+B.pem",
        &["root-expired.crl", "A-clean.crl", "B-clean.crl"],
    );
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    assert_eq!(status_word(&st, "revocation"), Some("unchecked"), "{st}");
    // An older CRL that held A, next to the newer one that released it: the newer counts.
    let st = status(
        d,
        "msg.eml",
        "root+B.pem",
        &[
            "root-holdA-old.crl",
            "root-new.crl",
            "A-clean.crl",
            "B-clean.crl",
        ],
    );
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    // Forgeries of A (its name and public key under an unknown CA, seventy of them first, more
    // than the budget for the message's certificates) do not hide A's revocation, whether A is
    // in the trust file or only in the message; a false "self-signed" A does not pass for a
    // root whose CRLs were all read.
    for trust in ["root+B.pem", "root+A+B.pem"] {
        let st = status(
            d,
            "forged-first.eml",
            trust,
            &["root-revA.crl", "A-clean.crl", "B-clean.crl"],
        );
        assert_eq!(
            status_word(&st, "signature"),
            Some("revoked"),
            "{trust}: {st}"
        );
    }
    let st = status(
        d,
        "fake-root.eml",
        "root+B.pem",
        &["root-clean.crl", "A-clean.crl", "B-clean.crl"],
    );
    assert_eq!(status_word(&st, "revocation"), Some("unchecked"), "{st}");
    // An expired older certificate of A (in the message, or in the trust file) is no way up
    // today: it cannot clear the current A's revocation.
    for (msg, trust) in [
        ("with-old.eml", "root+B.pem"),
        ("msg.eml", "root+B+Aold.pem"),
    ] {
        let st = status(
            d,
            msg,
            trust,
            &["root-revA.crl", "A-clean.crl", "B-clean.crl"],
        );
        assert_eq!(
            status_word(&st, "signature"),
            Some("revoked"),
            "{msg} {trust}: {st}"
        );
    }
    // A retired cross-certificate of A, revoked by its own (trusted) root, does not revoke A
    // while the path through the first root is good (RFC 5280 §6).
    let st = status(
        d,
        "both-crossed.eml",
        "roots+B.pem",
        &[
            "root-clean.crl",
            "R2-revA2.crl",
            "A-clean.crl",
            "B-clean.crl",
        ],
    );
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
    // A's cross-certificate from an unknown root first in the message does not hide A's
    // revocation by the root.
    let st = status(
        d,
        "cross-a2-before-all.eml",
        "root+B.pem",
        &["root-revA.crl", "A-clean.crl", "B-clean.crl"],
    );
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
}

#[test]
fn a_delta_crl_adds_to_its_base_and_never_cancels_it() {
    let d = pki_path();
    let base = ["root-clean.crl", "A-clean.crl", "B-base.crl"];
    let st = status(d, "msg.eml", "root.pem", &base);
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
    let st = status(
        d,
        "msg.eml",
        "root.pem",
        &[&base[..], &["B-delta.crl"]].concat(),
    );
    assert_eq!(status_word(&st, "signature"), Some("revoked"), "{st}");
}

#[test]
fn a_ca_sent_twice_is_followed_to_the_root_that_is_trusted_whatever_the_order() {
    let d = pki_path();
    for msg in ["cross-a-first.eml", "cross-a2-first.eml"] {
        let st = status(d, msg, "R2.pem", &[]);
        assert_eq!(status_word(&st, "signature"), Some("valid"), "{msg}: {st}");
    }
}
