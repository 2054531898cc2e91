//! Crash safety: `smimed watch` is killed with SIGKILL at random instants while it works through
//! 1,000 messages, restarted each time, and in the end every message is in the Maildir exactly
//! once (processed when S/MIME, untouched otherwise) and every original is in the archive
//! exactly once. The seed is printed (SMIMED_TEST_SEED replays a run).

mod common;
mod watch_support;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use watch_support::*;

#[test]
fn sigkill_at_random_points_over_1000_messages_is_exactly_once() {
    let md = Md::new();
    let mut rng = Rng::new();
    let mut smime = Vec::new();
    let mut plain = HashMap::new();
    for i in 0..1000 {
        let id = format!("k{i}");
        let bytes = if i % 5 == 2 {
            plain_msg(&id)
        } else {
            smime_msg(&id)
        };
        // Some land in cur/ with flags, as mbsync delivers mail already seen elsewhere.
        if i % 7 == 0 {
            md.put_cur(&bytes, "S");
        } else {
            md.deliver(&bytes);
        }
        if i % 5 == 2 {
            plain.insert(id, bytes);
        } else {
            smime.push(id);
        }
    }

    let mut kills = 0;
    let mut halfway = 0;
    let mut progress = Vec::new();
    for round in 0..12 {
        // Alternate between --once and the watching mode: both must be safe to kill.
        let args: &[&str] = if round % 2 == 0 {
            &["--once", "--jobs", "2"]
        } else {
            &["--jobs", "2"]
        };
        // The kill comes at a random point: once a random number of further messages is
        // done (so that it lands in the middle of the work however fast the machine), or
        // after a random delay when there is little or nothing left to do.
        let before = processed_count(md.path());
        let remaining = smime.len().saturating_sub(before) as u64;
        let target = before + 1 + rng.below((remaining / 3).max(1)) as usize;
        let mut child = spawn(watch_cmd(args, md.path(), None));
        let delay = Duration::from_millis(30 + rng.below(1200));
        let start = Instant::now();
        let mut exited = None;
        while start.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                exited = Some(st);
                break;
            }
            if remaining > 1 && processed_count(md.path()) >= target {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if exited.is_none() {
            signal(&child, "-KILL");
            let st = child.wait().unwrap();
            // Either the kill landed, or the watcher finished its work and exited 0 in the
            // instant between the last look and the signal (then it was not a kill).
            if st.signal() == Some(9) {
                kills += 1;
            } else {
                assert_eq!(
                    st.code(),
                    Some(0),
                    "neither killed nor a clean exit: {st:?}"
                );
            }
        } else {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        progress.push(processed_count(md.path()));
        // In between runs: each message is there once, or, when the kill fell between
        // placing the copy and moving the original, as its original next to its marked copy
        // (which the next run finishes); never two copies, never two originals; nothing is
        // twice in the archive.
        let live = by_message_id(md.path());
        for (id, files) in &live {
            let copies = files.iter().filter(|f| is_processed_name(&f.name)).count();
            let ok = files.len() == 1 || (files.len() == 2 && copies == 1);
            assert!(
                ok,
                "after round {round}: {id} is there as {:?}",
                files.iter().map(|f| &f.name).collect::<Vec<_>>()
            );
            if files.len() == 2 {
                halfway += 1;
            }
        }
        if let Ok(arch) = std::fs::read_dir(md.archive()) {
            drop(arch);
            for (id, files) in by_message_id(&md.archive()) {
                assert_eq!(
                    files.len(),
                    1,
                    "after round {round}: {id} archived {} times",
                    files.len()
                );
            }
        }
        assert_eq!(live.len(), 1000, "after round {round}: messages lost");
    }
    eprintln!(
        "{kills} kills; processed after each round: {progress:?}; \
         originals left next to their copy, summed over rounds: {halfway}"
    );
    assert!(kills >= 6, "too few kills to test anything ({kills})");
    assert!(
        progress.iter().any(|&p| p > 0 && p < smime.len()),
        "no kill landed in the middle of the work: {progress:?}"
    );

    // The last run, left to finish.
    let out = watch_cmd(&["--once"], md.path(), None).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(md.path(), &md.archive(), &smime, &plain);
    assert!(leftover_tmp(md.path()).is_empty(), "tmp files left behind");
    assert!(
        leftover_tmp(&md.archive()).is_empty(),
        "tmp files left behind in the archive"
    );
}
