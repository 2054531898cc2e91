//! Fuzz target: the whole inbound pipeline on arbitrary bytes. Invariants checked on every
//! input: `process` never panics, returns Ok (no keys are configured, so nothing temporary or
//! fatal can happen), and its output starts with exactly one X-Smime-Status field.
//!
//! Run (needs nightly): `cargo +nightly fuzz run pipeline fuzz/corpus/pipeline` from the
//! repository root, after seeding that (git-ignored) folder with messages from tests/corpus/.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smimed::config::{PassphraseSource, Settings, DEFAULT_MAX_SIZE};
use smimed::pipeline::{process, Context};

fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        // A trust file with one anchor; written once per fuzzing process.
        let dir = std::env::temp_dir().join(format!("smimed-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let anchor = dir.join("anchor.pem");
        let _ = std::fs::write(&anchor, ANCHOR);
        Context::new(Settings {
            keys: Vec::new(),
            passphrase: PassphraseSource::default(),
            trust: vec![anchor],
            crls: Vec::new(),
            authserv_id: String::from("fuzz.test"),
            max_size: DEFAULT_MAX_SIZE,
            config_path: None,
            agent: None,
            certs: None,
            vcard: Vec::new(),
            outbound: Default::default(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let processed = process(context(), data).expect("no error without keys");
    let head = processed.output.get(..15).unwrap_or_default();
    assert!(head.eq_ignore_ascii_case(b"X-Smime-Status:"));
    let count = processed
        .output
        .split(|&b| b == b'\n')
        .take_while(|l| !l.is_empty() && *l != b"\r")
        .filter(|l| l.len() >= 15 && l[..15].eq_ignore_ascii_case(b"X-Smime-Status:"))
        .count();
    assert_eq!(count, 1);
});

/// RFC 4134's CarlRSA self-signed root (tests/corpus/rfc4134-bc-test-data), as PEM.
const ANCHOR: &str = include_str!("../anchor.pem");
