#!/bin/sh
# Per-message cost of the outbound side, whole processes: `smimed sendmail` signing and
# encrypting to three recipients (plus the sender) and handing the result to the MTA, against
# `openssl cms -sign | openssl cms -encrypt` doing the same cryptography.
# Goal (issue 3): smimed at most half the time of the openssl pipeline. Printed: wall time and
# CPU time (user+sys; steadier than wall time on a loaded machine) of each, and the ratios,
# for a PEM key (the same key format the openssl side reads), for a PKCS#12 key, and through
# a `smimed agent` started here (PKCS#12 key loaded once; the timed process is the client).
# The timed rows use /bin/true as the MTA: it accepts at once and reads nothing, so only
# smimed's own cost is timed (smimed ignores the EPIPE of an MTA that exits without reading
# and keeps its exit code). The sanity checks use an MTA that stores the message.
#
# usage: benches/sendmail.sh [RUNS]     (needs openssl, hyperfine, python3; builds --release)
set -eu
RUNS=${1:-40}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
SMIMED="$ROOT/target/release/smimed"
W=$(mktemp -d /tmp/smimed-bench.XXXXXX)
AGENT=
trap '[ -z "$AGENT" ] || kill "$AGENT" 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"

# A throwaway PKI (RSA-2048, the common case): root CA, sender alice, recipients r1..r3.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=Bench/CN=Bench Root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.pem 2>/dev/null
for u in alice r1 r2 r3; do
  openssl req -newkey rsa:2048 -nodes -subj "/O=Bench/CN=$u" -keyout $u.key -out $u.csr 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:%s@example.org\n' $u > $u.ext
  openssl x509 -req -in $u.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile $u.ext -out $u.pem 2>/dev/null
done
chmod 600 *.key
openssl pkcs12 -export -inkey alice.key -in alice.pem -passout pass: -out alice.p12
cat alice.key alice.pem > alice-id.pem
chmod 600 alice.p12 alice-id.pem
"$SMIMED" --trust ca.pem --certs "$W/store" certs import r1.pem r2.pem r3.pem >/dev/null

# The agent: alice's PKCS#12 and the store loaded once.
"$SMIMED" --trust ca.pem --certs "$W/store" --key alice.p12 agent --socket "$W/agent.sock" 2>agent.log &
AGENT=$!
i=0; while [ ! -S "$W/agent.sock" ]; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "agent did not start: $(cat agent.log)"; exit 1; }; sleep 0.05
done

# A 4 KB plain-text message as a client hands it over.
{
  printf 'From: alice@example.org\nTo: r1@example.org, r2@example.org\nCc: r3@example.org\n'
  printf 'Subject: bench\nDate: Thu, 26 Nov 2026 12:00:00 +0000\nMessage-ID: <bench@example.org>\n'
  printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
  i=0; while [ $i -lt 64 ]; do printf 'Line %02d of the benchmark message, plain ASCII text only.\n' $i; i=$((i+1)); done
} > msg.eml
sed -n '/^$/,$p' msg.eml | tail -n +2 > body.txt

# Sanity: smimed's output, alone and through the agent, decrypts and verifies; /bin/true as the
# MTA is accepted.
"$SMIMED" sendmail --trust ca.pem --certs "$W/store" --key alice.p12 --mta /bin/true \
  --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml
"$SMIMED" sendmail --trust ca.pem --certs "$W/store" --key alice.p12 --mta "/bin/sh -c 'cat > $W/out.eml' sh" \
  --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml
"$SMIMED" --agent "$W/agent.sock" sendmail --mta "/bin/sh -c 'cat > $W/out-agent.eml' sh" \
  --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml
for f in out.eml out-agent.eml; do
  openssl cms -decrypt -recip r2.pem -inkey r2.key -in $f | openssl cms -verify -CAfile ca.pem >/dev/null 2>&1 \
    || { echo "sanity check failed: smimed output ($f) does not decrypt+verify"; exit 1; }
done

# Both sides run under `sh -c` with the message on stdin redirected, so both pay one shell.
ARGS="--trust ca.pem --certs $W/store --mta /bin/true --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml"
SM_PEM="$SMIMED sendmail --key alice-id.pem $ARGS"
SM_P12="$SMIMED sendmail --key alice.p12 $ARGS"
SM_AGENT="$SMIMED --agent $W/agent.sock sendmail $ARGS"
OS="openssl cms -sign -signer alice.pem -inkey alice.key -in body.txt | openssl cms -encrypt -aes256 r1.pem r2.pem r3.pem alice.pem > /dev/null"
hyperfine -N --warmup 5 --runs "$RUNS" --export-json bench.json \
  -n smimed-pem "sh -c '$SM_PEM'" -n smimed-p12 "sh -c '$SM_P12'" -n smimed-agent "sh -c '$SM_AGENT'" \
  -n openssl "sh -c '$OS'" >/dev/null
# The agent's own CPU for all runs (warm-up included), from /proc: the client's row does not
# include it.
AGENT_TICKS=$(awk '{print $14 + $15}' /proc/$AGENT/stat)
AGENT_RUNS=$((RUNS + 5 + 1))
echo "load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - bench.json "$AGENT_TICKS" "$AGENT_RUNS" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
agent_ticks, agent_runs, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ms = lambda x: x * 1000
labels = {
    "smimed-pem": "smimed sendmail, key PEM    ",
    "smimed-p12": "smimed sendmail, key PKCS#12",
    "smimed-agent": "smimed --agent S sendmail   ",
    "openssl": "openssl cms -sign | -encrypt",
}
for k, label in labels.items():
    x = r[k]
    print(f"{label}: wall mean {ms(x['mean']):6.1f} ms (median {ms(x['median']):6.1f}, "
          f"sd {ms(x['stddev']):5.1f}); CPU user+sys {ms(x['user'] + x['system']):6.1f} ms")
agent_cpu = agent_ticks / hz / agent_runs
print(f"agent's own CPU per send (start-up included, /proc, {1000 / hz:.0f} ms ticks): "
      f"{ms(agent_cpu):6.1f} ms")
o = r["openssl"]
ocpu = o['user'] + o['system']
for k in ("smimed-pem", "smimed-p12", "smimed-agent"):
    s = r[k]
    print(f"ratio {k}/openssl: wall {s['mean'] / o['mean']:.2f}, CPU "
          f"{(s['user'] + s['system']) / ocpu:.2f}  (goal <= 0.50)")
s = r["smimed-agent"]
print(f"ratio smimed-agent/openssl, CPU of client + agent: "
      f"{(s['user'] + s['system'] + agent_cpu) / ocpu:.2f}")
PY

# Instructions executed (valgrind, when installed): deterministic, unlike times on a busy machine.
if command -v valgrind >/dev/null 2>&1; then
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,; }
  a=$(ir "$SMIMED" sendmail --key alice-id.pem --trust ca.pem --certs "$W/store" --mta /bin/true --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml)
  b=$(ir "$SMIMED" sendmail --key alice.p12 --trust ca.pem --certs "$W/store" --mta /bin/true --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml)
  e=$(ir "$SMIMED" --agent "$W/agent.sock" sendmail --mta /bin/true --encrypt always -- r1@example.org r2@example.org r3@example.org < msg.eml)
  c=$(ir openssl cms -sign -signer alice.pem -inkey alice.key -in body.txt -out signed.eml)
  d=$(ir openssl cms -encrypt -aes256 -in signed.eml -out /dev/null r1.pem r2.pem r3.pem alice.pem)
  /usr/bin/python3 -c "
a, b, c, d, e = $a, $b, $c, $d, $e
print(f'instructions: smimed PEM {a/1e6:.1f} M, smimed PKCS#12 {b/1e6:.1f} M, '
      f'smimed --agent client {e/1e6:.1f} M (the agent not counted), '
      f'openssl sign {c/1e6:.1f} M + encrypt {d/1e6:.1f} M = {(c+d)/1e6:.1f} M; '
      f'ratios {a/(c+d):.2f} / {b/(c+d):.2f} / {e/(c+d):.2f}')"
fi
