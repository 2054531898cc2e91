#!/bin/sh
# Regenerates the demo PKI and messages in this folder (needs only the openssl CLI).
# The demo keys are public on purpose: they exist so that README's quick start runs anywhere.
# Never use them for anything else.
set -eu
cd "$(dirname "$0")"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/O=smimed demo/CN=smimed Demo CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$T/ca.key" -out ca.pem 2>/dev/null
for u in alice bob; do
  openssl req -newkey rsa:2048 -nodes -subj "/O=smimed demo/CN=$u" -keyout "$T/$u.key" -out "$T/$u.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:%s@demo.example\n' "$u" > "$T/$u.ext"
  openssl x509 -req -in "$T/$u.csr" -CA ca.pem -CAkey "$T/ca.key" -CAcreateserial -CAserial "$T/ca.srl" -days 3650 \
    -extfile "$T/$u.ext" -out "$T/$u.pem" 2>/dev/null
done
cp "$T/alice.pem" alice.pem
# bob's identity, as a mail client exports it: PKCS#12, passphrase in passphrase.txt
printf 'demo\n' > passphrase.txt
openssl pkcs12 -export -inkey "$T/bob.key" -in "$T/bob.pem" -certfile ca.pem -name bob \
  -passout pass:demo -out bob.p12
body() {
  printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nHello Bob,\r\n\r\nthe quarterly figures are attached in spirit.\r\n\r\nAlice\r\n'
}
hdr() {
  printf 'From: Alice <alice@demo.example>\r\nTo: Bob <bob@demo.example>\r\nSubject: %s\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s@demo.example>\r\n' "$1" "$2"
}
# 1. signed (opaque) then encrypted (AES-256-CBC) to bob
{ hdr "Signed and encrypted" demo-1; body | openssl cms -sign -nodetach -binary -signer "$T/alice.pem" -inkey "$T/alice.key" | openssl cms -encrypt -aes256 -binary "$T/bob.pem"; } > signed-encrypted.eml
# 2. clear-signed (multipart/signed), LF line endings as a Maildir stores them
{ hdr "Clear-signed" demo-2; body | openssl cms -sign -binary -signer "$T/alice.pem" -inkey "$T/alice.key"; } | tr -d '\r' > clear-signed.eml
# 3. the same, altered after signing
sed 's/quarterly/annual/' clear-signed.eml > tampered.eml
# 4. encrypted with AES-256-GCM (AuthEnvelopedData)
{ hdr "Encrypted with GCM" demo-4; body | openssl cms -encrypt -aes-256-gcm -binary "$T/bob.pem"; } > encrypted-gcm.eml
# 5. a plain message carrying a forged status header
{ printf 'X-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@demo.example\r\n'; hdr "Forged status" demo-5; printf '\r\nTrust me.\r\n'; } > forged-status.eml
