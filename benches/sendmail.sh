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
# usage: benches/sendmail.sh [RUNS]     (needs openssl, python3; valgrind optional; builds
# --release)
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

# Timing: every command RUNS times, the commands interleaved (run 1 of each, run 2 of each...)
# so that the machine's drift touches them alike; a warm-up round first. Wall time around each
# process, CPU time (user+sys) of the process and its children from getrusage.
# `smimed sendmail` is exec'd directly with the message on stdin, as neomutt, mutt and git
# send-email run their sendmail; the openssl pipeline needs a shell to exist, so it runs under
# `sh -c`. For comparison, the agent row is also timed under `sh -c` (both sides then pay a
# shell, about 1.2 ms here).
echo "load average before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - "$RUNS" "$SMIMED" "$W" "$AGENT" <<'PY'
import os, resource, statistics, subprocess, sys, time
runs, smimed, w, agent = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
os.chdir(w)
rcpts = ["--", "r1@example.org", "r2@example.org", "r3@example.org"]
policy = ["--mta", "/bin/true", "--encrypt", "always"]
common = ["--trust", "ca.pem", "--certs", f"{w}/store", *policy]  # the agent has its own
rows = [
    ("smimed sendmail, key PEM          ", [smimed, "sendmail", "--key", "alice-id.pem", *common, *rcpts], True),
    ("smimed sendmail, key PKCS#12      ", [smimed, "sendmail", "--key", "alice.p12", *common, *rcpts], True),
    ("smimed --agent S sendmail         ", [smimed, "--agent", f"{w}/agent.sock", "sendmail", *policy, *rcpts], True),
    ("sh -c 'smimed --agent S sendmail' ", ["sh", "-c", " ".join([smimed, "--agent", f"{w}/agent.sock", "sendmail", *policy, *rcpts]) + " < msg.eml"], False),
    ("sh -c 'openssl cms -sign | -encrypt'", ["sh", "-c", "openssl cms -sign -signer alice.pem -inkey alice.key -in body.txt | openssl cms -encrypt -aes256 r1.pem r2.pem r3.pem alice.pem > /dev/null"], False),
]
def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
def once(argv, stdin_file):
    with open("msg.eml", "rb") as f:
        c0, t0 = cpu(), time.perf_counter()
        p = subprocess.run(argv, stdin=f if stdin_file else subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
        t1, c1 = time.perf_counter(), cpu()
    if p.returncode != 0:
        sys.exit(f"{argv[:3]}... exited {p.returncode}")
    return t1 - t0, c1 - c0
agent_before = None
for i in range(runs + 5):
    if i == 5:
        res = {name: ([], []) for name, _, _ in rows}
        with open(f"/proc/{agent}/stat") as f:
            agent_before = sum(int(x) for x in f.read().split()[13:15])
    for name, argv, direct in rows:
        wall, c = once(argv, direct)
        if i >= 5:
            res[name][0].append(wall)
            res[name][1].append(c)
with open(f"/proc/{agent}/stat") as f:
    agent_ticks = sum(int(x) for x in f.read().split()[13:15]) - agent_before
agent_cpu = agent_ticks / os.sysconf("SC_CLK_TCK") / (2 * runs)  # two agent rows per round
print(f"load average after measuring: {open('/proc/loadavg').read().split()[:3]}")
ms = lambda x: 1000 * x
stats = {}
for name, (walls, cpus) in res.items():
    stats[name] = (statistics.mean(walls), statistics.median(walls), statistics.mean(cpus))
    m, med, c = stats[name]
    print(f"{name}: wall mean {ms(m):6.2f} ms (median {ms(med):6.2f}, sd {ms(statistics.stdev(walls)):5.2f}); CPU {ms(c):6.2f} ms")
print(f"agent's own CPU per send (/proc, {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks): {ms(agent_cpu):5.2f} ms")
o = stats[rows[-1][0]]
for name, _, _ in rows[:-1]:
    s = stats[name]
    extra = f"; CPU with the agent's {(s[2] + agent_cpu) / o[2]:.2f}" if "agent" in name else ""
    print(f"ratio {name.strip()} / openssl: wall {s[0] / o[0]:.2f} (medians {s[1] / o[1]:.2f}), CPU {s[2] / o[2]:.2f}{extra}  (goal <= 0.50)")
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
