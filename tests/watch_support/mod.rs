//! Helpers for the `smimed watch` tests: real Maildirs in temporary folders, deliveries done
//! the way an MDA does them (write in tmp/, rename into new/), S/MIME messages made by the
//! openssl command line, and the exactly-once checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::pki::pki;
use crate::common::*;

/// The signed-then-encrypted body (with its MIME header fields) made once by the openssl CLI:
/// signed by alice, encrypted to bob. Each message gets its own outer fields (Message-ID).
pub fn encrypted_body() -> &'static [u8] {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    BODY.get_or_init(|| {
        let p = pki();
        let signed = sign_as(
            &p.alice,
            false,
            &["-binary"],
            &sample_entity("the secret plan"),
        );
        encrypt_to(&[&p.bob], &["-aes256", "-binary"], &signed)
    })
}

fn outer(id: &str) -> String {
    format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: m {id}\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{id}@test>\r\n"
    )
}

/// An S/MIME message (signed then encrypted to bob) with Message-ID `<id@test>`.
pub fn smime_msg(id: &str) -> Vec<u8> {
    [outer(id).as_bytes(), encrypted_body()].concat()
}

/// A plain message with Message-ID `<id@test>`.
pub fn plain_msg(id: &str) -> Vec<u8> {
    format!(
        "{}MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\njust text\r\n",
        outer(id)
    )
    .into_bytes()
}

/// A plain message carrying a forged status field.
pub fn forged_msg(id: &str) -> Vec<u8> {
    format!(
        "{}X-Smime-Status: encryption=decrypted; signature=valid; signer=ceo@example.org\r\nAuthentication-Results: mx.test; smime=pass\r\nContent-Type: text/plain\r\n\r\ntrust me\r\n",
        outer(id)
    )
    .into_bytes()
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique part as an MDA makes it (`time.M<usec>P<pid>Q<n>.host`), with Dovecot's `,S=`.
pub fn unique_name(size: usize) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!(
        "{}.M{}P{}Q{n}.testhost,S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

/// A Maildir in a temporary folder.
pub struct Md {
    pub dir: tempfile::TempDir,
}

impl Md {
    pub fn new() -> Md {
        let dir = tempfile::tempdir().unwrap();
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Md { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Makes the Maildir++ subfolder `name` (`.Work`) with its new/, cur/ and tmp/.
    pub fn subfolder(&self, name: &str) -> PathBuf {
        let f = self.path().join(name);
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(f.join(d)).unwrap();
        }
        f
    }

    pub fn archive(&self) -> PathBuf {
        self.path().join(".SMIME-Originals")
    }
    /// Delivers as an MDA does: write in tmp/, then rename into new/. Returns the name.
    pub fn deliver(&self, bytes: &[u8]) -> String {
        deliver_into(self.path(), bytes)
    }
    /// Puts a message straight into cur/ with flags (as mbsync does for seen mail).
    pub fn put_cur(&self, bytes: &[u8], flags: &str) -> String {
        let name = format!("{}:2,{flags}", unique_name(bytes.len()));
        let tmp = self.path().join("tmp").join(&name);
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.path().join("cur").join(&name)).unwrap();
        name
    }
}

/// Delivers into the Maildir (or Maildir++ folder) `folder` as an MDA does: write in tmp/,
/// then rename into new/. Returns the name.
pub fn deliver_into(folder: &Path, bytes: &[u8]) -> String {
    let name = unique_name(bytes.len());
    let tmp = folder.join("tmp").join(&name);
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, folder.join("new").join(&name)).unwrap();
    name
}

/// Every file under `dir` (relative path -> bytes), for byte-for-byte comparisons.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The Message-ID of a message file (`id` of `<id@test>`), if any.
pub fn message_id(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Message-ID: <") {
            return v.split('@').next().map(str::to_string);
        }
    }
    None
}

/// A message file found in new/ or cur/ of a Maildir.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Message-ID -> files holding it, over new/ and cur/ of `maildir`.
pub fn by_message_id(maildir: &Path) -> HashMap<String, Vec<Found>> {
    let mut out: HashMap<String, Vec<Found>> = HashMap::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().into_string().unwrap();
            // A client may move the file between the listing and the read.
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let id = message_id(&bytes).unwrap_or_else(|| panic!("no Message-ID in {name}"));
            out.entry(id).or_default().push(Found {
                path: e.path(),
                name,
                bytes,
            });
        }
    }
    out
}

/// Whether a name is the watcher's processed copy's (`smimed=KEY…`).
pub fn is_processed_name(name: &str) -> bool {
    name.starts_with("smimed=")
}

/// Our files left in tmp/.
pub fn leftover_tmp(maildir: &Path) -> Vec<String> {
    std::fs::read_dir(maildir.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("smimed-tmp."))
        .collect()
}

/// Exactly once: every id in `smime` is in the Maildir once, processed (marked name, status
/// `encryption=decrypted`, readable text), and its original is in the archive once, byte for
/// byte; every id in `plain` is in the Maildir once, untouched, and not in the archive.
pub fn assert_exactly_once(
    md: &Path,
    archive: &Path,
    smime: &[String],
    plain: &HashMap<String, Vec<u8>>,
) {
    let live = by_message_id(md);
    let arch = by_message_id(archive);
    for id in smime {
        let got = live.get(id).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            got.len(),
            1,
            "message {id} is {} times in the Maildir: {:?}",
            got.len(),
            got.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        let f = &got[0];
        assert!(is_processed_name(&f.name), "{id} not processed: {}", f.name);
        let st = status_of(&f.bytes);
        assert_eq!(
            status_word(&st, "encryption"),
            Some("decrypted"),
            "{id}: {st}"
        );
        assert_eq!(status_word(&st, "signature"), Some("valid"), "{id}: {st}");
        assert!(String::from_utf8_lossy(&f.bytes).contains("the secret plan"));
        let a = arch.get(id).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            a.len(),
            1,
            "original of {id} is {} times in the archive",
            a.len()
        );
        assert_eq!(
            a[0].bytes,
            smime_msg(id),
            "archived original of {id} differs"
        );
    }
    for (id, bytes) in plain {
        let got = live.get(id).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            got.len(),
            1,
            "plain message {id} is {} times in the Maildir",
            got.len()
        );
        assert_eq!(&got[0].bytes, bytes, "plain message {id} was modified");
        assert!(!is_processed_name(&got[0].name));
        assert!(!arch.contains_key(id), "plain message {id} was archived");
    }
    let expected = smime.len() + plain.len();
    assert_eq!(live.len(), expected, "unexpected messages in the Maildir");
    assert_eq!(
        arch.len(),
        smime.len(),
        "unexpected messages in the archive"
    );
}

/// `smimed --authserv-id mx.test --trust ROOT --key bob.p12 watch ARGS…` (passphrase in the
/// environment unless `passphrase_command` is given).
pub fn watch_cmd(args: &[&str], maildir: &Path, passphrase_command: Option<&str>) -> Command {
    let mut c = smimed_as_with(&pki().bob, passphrase_command);
    // One state folder per Maildir: messages made alike in two tests are not taken for the
    // same message by the ledger.
    let name = maildir.file_name().and_then(|n| n.to_str()).unwrap_or("md");
    c.env("XDG_STATE_HOME", state_home(name));
    c.arg("watch").args(args).arg(maildir);
    c
}

/// Starts a watcher (stderr to a pipe read by the test at the end).
pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn smimed watch")
}

/// Sends `sig` ("-TERM", "-INT" or "-KILL") to the child.
pub fn signal(child: &Child, sig: &str) {
    use rustix::process::{kill_process, Pid, Signal};
    let sig = match sig {
        "-TERM" => Signal::TERM,
        "-INT" => Signal::INT,
        "-KILL" => Signal::KILL,
        other => panic!("signal {other}"),
    };
    kill_process(Pid::from_child(child), sig).expect("kill");
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Number of processed copies in new/ and cur/.
pub fn processed_count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(maildir.join(s)).unwrap().flatten())
        .filter(|e| is_processed_name(&e.file_name().to_string_lossy()))
        .count()
}

/// A small pseudo-random generator (xorshift), seeded from the clock and printed, so that a
/// failing run can be replayed with SMIMED_TEST_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("SMIMED_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("SMIMED_TEST_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Asserts two snapshots are equal, naming only the files that differ.
pub fn assert_same(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let keys: std::collections::BTreeSet<&PathBuf> = a.keys().chain(b.keys()).collect();
    let diff: Vec<&&PathBuf> = keys.iter().filter(|k| a.get(**k) != b.get(**k)).collect();
    assert!(diff.is_empty(), "{what}: these files differ: {diff:?}");
}
