#!/usr/bin/env bash
# Inbound benchmark (issue 2): prints figures, asserts nothing.
#  1. Whole process, per message, on a 38 KB signed-then-encrypted message: `smimed filter`
#     against `openssl cms -decrypt | openssl cms -verify` on the same machine in the same run.
#  2. A 94 MB signed-then-encrypted message (a 37 MB attachment): wall time and peak memory of
#     `smimed filter` against openssl's two steps.
# Usage: bash benches/inbound.sh [RUNS]     (needs openssl, hyperfine, GNU time; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}
cargo build --release --quiet
S=$PWD/target/release/smimed
W=$(mktemp -d /tmp/smimed-bench.XXXXXX); trap 'rm -rf "$W"' EXIT
cd "$W"

# A small PKI: CA, alice (signer), bob (recipient, PKCS#12 like a mail client exports it).
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -keyout ca.key -out ca.pem 2>/dev/null
for u in alice bob; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$u" -keyout $u.key -out $u.csr 2>/dev/null
  printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:%s@example.org\n' $u > $u.ext
  openssl x509 -req -in $u.csr -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial ca.srl -days 30 -extfile $u.ext -out $u.pem 2>/dev/null
done
openssl pkcs12 -export -inkey bob.key -in bob.pem -passout pass:bench -out bob.p12
chmod 600 bob.p12 bob.key
printf 'bench\n' > pass; chmod 600 pass

make_msg() { # make_msg OUT ATTACHMENT_BYTES
  {
    printf 'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    head -c "$2" /dev/urandom | base64 -w 76 | sed 's/$/\r/'
    printf -- '--b--\r\n'
  } > body.mime
  openssl cms -sign -nodetach -binary -signer alice.pem -inkey alice.key -in body.mime -out signed.p7m -outform SMIME
  { printf 'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: bench\r\nMessage-ID: <b@x>\r\n'
    openssl cms -encrypt -aes256 -binary -in signed.p7m bob.pem; } > "$1"
  rm -f body.mime signed.p7m
}

echo "== machine"
nproc; openssl version
openssl speed -seconds 2 rsa2048 2>/dev/null | grep -E '^rsa 2048' || true

echo; echo "== 1. 38 KB signed-then-encrypted message, whole process per message ($RUNS runs)"
make_msg small.eml 14000
ls -l small.eml | awk '{print "message size:", $5, "bytes"}'
cat > openssl2.sh <<'EOF2'
openssl cms -decrypt -in small.eml -recip bob.pem -inkey bob.key | openssl cms -verify -CAfile ca.pem -purpose smimesign > /dev/null 2>&1
EOF2
"$S" --key bob.p12 --passphrase-file pass --trust ca.pem filter < small.eml | head -1
cat bob.key bob.pem > bob-pem.key; chmod 600 bob-pem.key
# smimed agent: keys and trust loaded once; each filter process hands it the message.
"$S" --key bob.p12 --passphrase-file pass --trust ca.pem --authserv-id b.example agent --socket "$W/agent.sock" &
AGENT=$!
trap 'kill $AGENT 2>/dev/null; rm -rf "$W"' EXIT
while [ ! -S "$W/agent.sock" ]; do sleep 0.05; done
hyperfine -N --warmup 10 --runs "$RUNS" --export-json h.json \
  "$S --key bob-pem.key --trust ca.pem --authserv-id b.example filter --input small.eml --output /dev/null" \
  "$S --key bob.p12 --passphrase-file pass --trust ca.pem --authserv-id b.example filter --input small.eml --output /dev/null" \
  "$S --agent $W/agent.sock filter --input small.eml --output /dev/null" \
  "sh openssl2.sh" 2>/dev/null | grep -E 'Time|Benchmark' || true
python3 - <<'EOF2'
import json
r = json.load(open("h.json"))["results"]
pem, p12, agent, o = (x["median"] * 1000 for x in r)
print(f"median: smimed alone (PEM key, as openssl) {pem:.2f} ms; alone (PKCS#12) {p12:.2f} ms; via smimed agent {agent:.2f} ms; openssl decrypt|verify {o:.2f} ms")
print(f"ratio smimed/openssl: {pem/o:.2f} alone with the same PEM key, {p12/o:.2f} alone with PKCS#12, {agent/o:.2f} via the agent (goal <= 0.50)")
EOF2
if command -v valgrind >/dev/null; then
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null | grep -o 'refs: *[0-9,]*' | tr -d ', ' | cut -d: -f2; }
  a=$(ir "$S" --key bob-pem.key --trust ca.pem filter --input small.eml --output /dev/null)
  b=$(ir openssl cms -decrypt -in small.eml -recip bob.pem -inkey bob.key -out dec.eml)
  c=$(ir openssl cms -verify -in dec.eml -CAfile ca.pem -purpose smimesign -out /dev/null)
  echo "instructions (callgrind, load-independent): smimed $a; openssl decrypt $b + verify $c = $((b + c)); ratio $(echo "scale=2; $a/($b+$c)" | bc)"
fi

echo; echo "== 2. 94 MB signed-then-encrypted message (37 MB attachment)"
make_msg big.eml 37000000
ls -l big.eml | awk '{printf "message size: %.1f MB\n", $5/1e6}'
measure() { # label cmd...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o t.txt "$@" > /dev/null 2>&1 || true
  read -r secs kb < <(tail -1 t.txt)
  printf '%-34s %6.2f s  peak %6.1f MB\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}
measure "smimed filter" "$S" --key bob.p12 --passphrase-file pass --trust ca.pem filter --input big.eml --output /dev/null
/usr/bin/time -f "%e %M" -o t1.txt openssl cms -decrypt -in big.eml -recip bob.pem -inkey bob.key -out dec.eml 2>/dev/null
/usr/bin/time -f "%e %M" -o t2.txt openssl cms -verify -in dec.eml -CAfile ca.pem -purpose smimesign -out /dev/null 2>/dev/null
read -r s1 k1 < t1.txt; read -r s2 k2 < t2.txt
printf '%-34s %6.2f s  peak %6.1f MB\n' "openssl cms -decrypt" "$s1" "$(echo "$k1/1024" | bc -l)"
printf '%-34s %6.2f s  peak %6.1f MB\n' "openssl cms -verify" "$s2" "$(echo "$k2/1024" | bc -l)"
printf '%-34s %6.2f s\n' "openssl two steps together" "$(echo "$s1+$s2" | bc -l)"
size=$(stat -c %s big.eml)
echo "memory goal: peak <= 1.5 x message = $(echo "$size*1.5/1048576" | bc) MB"

echo; echo "== 3. Hostile MIME: 14 MB of short delimiter lines (each could start a part)"
python3 - <<'PY'
with open("parts.eml", "wb") as f:
    f.write(b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n")
    f.write(b"--XXy\r\n" * 2_000_000)
    f.write(b"--XX--\r\n")
PY
ls -l parts.eml | awk '{printf "message size: %.1f MB\n", $5/1e6}'
measure "smimed filter" "$S" --trust ca.pem filter --input parts.eml --output status.eml
grep -m1 '^X-Smime-Status' status.eml || true
echo "goal: peak well under 2 x message (mailparse built every part: about 35 x)"
