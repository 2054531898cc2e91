#!/bin/sh
# Quick start: builds smimed and runs `smimed filter` on each demo message, printing the status
# header it writes and the first lines of the readable message.
set -eu
cd "$(dirname "$0")"
cargo build --release --quiet
# git does not keep file modes: smimed refuses keys that others can read.
chmod 600 bob.p12 passphrase.txt
for m in signed-encrypted.eml clear-signed.eml tampered.eml encrypted-gcm.eml forged-status.eml; do
  echo "=== $m"
  ../../target/release/smimed --key bob.p12 --passphrase-file passphrase.txt --trust ca.pem \
    --authserv-id demo.example filter < "$m" | sed -n '1,/^\r\{0,1\}$/p' | grep -E '^(X-Smime-Status|Authentication-Results|From|Subject|Content-Type):|^[[:space:]]' 
done
