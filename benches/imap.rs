//! Benchmark of the IMAP watcher against a private Dovecot on 127.0.0.1 (prints figures, asserts
//! nothing): backlog throughput of signed-then-encrypted ~38 KB messages with `--once`, and the
//! latency from an APPEND by another client to the processed copy while the watcher IDLEs,
//! next to Dovecot's own APPEND -> IDLE push delay (its fixed 500 ms notify delay).
//!
//! Run: `cargo bench --bench imap` (env BACKLOG=N, ROUNDS=N to change the sizes).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::{append, Dovecot, Opts, Session, PASSWORD};
use common::pki::pki;
use common::*;

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(body: &[u8], i: usize) -> Vec<u8> {
    let h = headers(
        "Alice <alice@example.org>",
        "bob@example.org",
        &format!("bench {i}"),
    );
    [h.as_bytes(), body].concat()
}

fn watcher(state: &std::path::Path, url: &str) -> Command {
    let mut c = smimed_as(&pki().bob);
    c.env("SMIMED_IMAP_PASSWORD", PASSWORD)
        .arg("watch")
        .arg("--state-dir")
        .arg(state)
        .arg(url);
    c
}

fn processed(s: &mut Session, i: usize) -> bool {
    let q = format!("HEADER Message-ID \"<bench.{i}@test>\"");
    let all = s.uid_search(&q).map(|v| v.len()).unwrap_or(0);
    let kw = s
        .uid_search(format!("KEYWORD $SMIMEProcessed {q}"))
        .map(|v| v.len())
        .unwrap_or(0);
    all == 1 && kw == 1
}

/// CPU seconds (user + sys) of waited-for children, from /proc/self/stat (cutime, cstime).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after "(comm)": f[0] is state (field 3), so cutime (16) and cstime (17) are 13, 14
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(13) + tick(14)) / 100.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n = env_n("BACKLOG", 1000);
    let rounds = env_n("ROUNDS", 15);
    let p = pki();
    // ~27 KB of text: ~38 KB once signed, encrypted and base64-encoded
    let text: String = (0..300)
        .map(|i| format!("line {i:04} of a longer message body, to reach the usual size.\n"))
        .collect();
    let signed = sign_as(&p.alice, false, &["-binary"], &sample_entity(&text));
    let body = encrypt_to(&[&p.bob], &["-aes256", "-binary"], &signed);
    let size = message(&body, 0).len();

    let d = Dovecot::start(Opts::default());
    let mut s = d.client();
    s.create("Lat").expect("create");
    for i in 0..n {
        append(&mut s, "INBOX", &message(&body, i), &[], None);
    }
    let state = tempfile::tempdir().expect("state");
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let mut cmd = watcher(state.path(), &d.url("INBOX"));
    cmd.arg("--once");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        cmd.env("RUST_LOG", "smimed::imap=debug");
    }
    let out = cmd.output().expect("run");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let el = t0.elapsed();
    let cpu = children_cpu() - cpu0;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "backlog: {n} signed-then-encrypted messages of {size} bytes in {:.2} s = {:.0} msgs/s \
         (whole --once run: start, key load, connect, {} jobs) [{}]",
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64(),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        String::from_utf8_lossy(&out.stdout).trim()
    );

    println!(
        "  smimed's own CPU (user+sys): {:.2} s = {:.2} ms/msg -> {:.0} msgs/s per core if the \
         server cost nothing; load average now {}",
        cpu,
        cpu * 1e3 / n as f64,
        n as f64 / cpu,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );

    // Dovecot's own APPEND -> EXISTS push delay, for reference
    let mut idle_client = d.client();
    idle_client.select("Lat").expect("select");
    let mut pushes = Vec::new();
    for i in 0..5 {
        let url_port = d.port;
        let b = message(&body, 100_000 + i);
        let appender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let c = imap::ClientBuilder::new("127.0.0.1", url_port)
                .mode(imap::ConnectionMode::Plaintext)
                .connect()
                .expect("connect");
            let mut s = c
                .login("alice", PASSWORD)
                .map_err(|(e, _)| e)
                .expect("login");
            let t = Instant::now();
            append(&mut s, "Lat", &b, &[], None);
            t
        });
        idle_client
            .idle()
            .timeout(Duration::from_secs(10))
            .wait_while(|r| !matches!(r, imap::types::UnsolicitedResponse::Exists(_)))
            .expect("idle");
        let got = Instant::now();
        let sent = appender.join().expect("join");
        pushes.push(got.duration_since(sent));
    }
    // empty Lat again
    idle_client
        .store("1:*", "+FLAGS.SILENT (\\Deleted)")
        .expect("store");
    idle_client.expunge().expect("expunge");
    let _ = idle_client.logout();

    let log = state.path().join("lat.log");
    let mut w = watcher(state.path(), &d.url("Lat"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1000));
    let mut poll = d.client();
    poll.examine("Lat").expect("examine");
    let mut lat = Vec::new();
    for i in 0..rounds {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        append(&mut s, "Lat", &message(&body, 200_000 + i), &[], None);
        while !processed(&mut poll, 200_000 + i) {
            std::thread::sleep(Duration::from_millis(5));
            assert!(t.elapsed() < Duration::from_secs(30), "not processed");
        }
        lat.push(t.elapsed());
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(w.id().to_string())
        .status();
    let _ = w.wait();
    let mp = median(pushes.clone());
    let ml = median(lat.clone());
    println!(
        "IDLE latency APPEND -> processed copy in place: median {:.0} ms over {rounds} (min {:.0}, max {:.0})",
        ml.as_secs_f64() * 1e3,
        lat.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        lat.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!(
        "  of which Dovecot's APPEND -> IDLE push (raw client): median {:.0} ms; watcher's own share ~{:.0} ms",
        mp.as_secs_f64() * 1e3,
        (ml.as_secs_f64() - mp.as_secs_f64()) * 1e3
    );
}
