//! `smimed watch` running: deliveries done as an MDA does them while it watches, a client
//! (a test thread) moving messages new/ -> cur/ and changing flags meanwhile, and SIGTERM.

mod common;
mod watch_support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{encrypt_to, headers, sample_entity, under_prlimit};
use watch_support::*;

#[test]
fn deliveries_while_running_are_processed_and_sigterm_exits_zero() {
    let md = Md::new();
    // A backlog before start, then deliveries while it runs. --rescan is long: only inotify
    // can find the new ones in time.
    let mut smime = vec!["pre1".to_string(), "pre2".to_string()];
    md.deliver(&smime_msg("pre1"));
    md.deliver(&smime_msg("pre2"));
    let child = spawn(watch_cmd(&["--rescan", "600"], md.path(), None));
    assert!(
        wait_for(Duration::from_secs(20), || processed_count(md.path()) == 2),
        "backlog not processed"
    );
    let mut plain = HashMap::new();
    for i in 0..30 {
        let id = format!("live{i}");
        if i % 4 == 3 {
            md.deliver(&plain_msg(&id));
            plain.insert(id, plain_msg(&format!("live{i}")));
        } else {
            md.deliver(&smime_msg(&id));
            smime.push(id);
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    let n = smime.len();
    let all = wait_for(Duration::from_secs(30), || processed_count(md.path()) == n);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(all, "only {} of {n} processed", processed_count(md.path()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(md.path(), &md.archive(), &smime, &plain);
    assert!(leftover_tmp(md.path()).is_empty());
}

#[test]
fn a_client_moving_and_flagging_meanwhile_loses_nothing() {
    let md = Md::new();
    let child = spawn(watch_cmd(
        &["--rescan", "2", "--jobs", "2"],
        md.path(),
        None,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let stop = Arc::new(AtomicBool::new(false));
    let root = md.path().to_path_buf();
    // The client: moves everything in new/ to cur/ with the Seen flag, and toggles the Flagged
    // flag of whatever is in cur/ (originals and processed copies alike), as mutt or Dovecot do.
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut moves = 0usize;
            let mut rng = Rng::new();
            while !stop.load(Ordering::SeqCst) {
                for e in std::fs::read_dir(root.join("new")).unwrap().flatten() {
                    let name = e.file_name().into_string().unwrap();
                    if rng.below(2) == 0 {
                        let _ =
                            std::fs::rename(e.path(), root.join("cur").join(format!("{name}:2,S")));
                        moves += 1;
                    }
                }
                for e in std::fs::read_dir(root.join("cur")).unwrap().flatten() {
                    if rng.below(4) != 0 {
                        continue;
                    }
                    let name = e.file_name().into_string().unwrap();
                    let (unique, info) = name.split_once(':').unwrap_or((&name, "2,"));
                    let flags = info.trim_start_matches("2,");
                    let new_flags = if flags.contains('F') {
                        flags.replace('F', "")
                    } else {
                        let mut f: Vec<char> = format!("F{flags}").chars().collect();
                        f.sort();
                        f.into_iter().collect()
                    };
                    let _ = std::fs::rename(
                        e.path(),
                        root.join("cur").join(format!("{unique}:2,{new_flags}")),
                    );
                    moves += 1;
                }
                std::thread::sleep(Duration::from_millis(rng.below(5)));
            }
            moves
        })
    };
    let mut smime = Vec::new();
    let mut plain = HashMap::new();
    for i in 0..200 {
        let id = format!("c{i}");
        if i % 5 == 4 {
            md.deliver(&plain_msg(&id));
            plain.insert(id.clone(), plain_msg(&id));
        } else {
            md.deliver(&smime_msg(&id));
            smime.push(id);
        }
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let n = smime.len();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let moves = client.join().unwrap();
    let all = wait_for(Duration::from_secs(40), || processed_count(md.path()) == n);
    signal(&child, "-INT"); // SIGINT stops it like SIGTERM
    let out = child.wait_with_output().unwrap();
    assert!(moves > 100, "the client did too little: {moves} renames");
    assert!(all, "only {} of {n} processed", processed_count(md.path()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(md.path(), &md.archive(), &smime, &plain);
}

#[test]
fn sigterm_during_a_backlog_finishes_what_is_in_hand() {
    let md = Md::new();
    let mut smime = Vec::new();
    for i in 0..600 {
        let id = format!("s{i}");
        md.deliver(&smime_msg(&id));
        smime.push(id);
    }
    let child = spawn(watch_cmd(&["--jobs", "2"], md.path(), None));
    // Stop it once it has started on the backlog, long before it is through.
    wait_for(Duration::from_secs(20), || processed_count(md.path()) > 0);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = processed_count(md.path());
    assert!(
        done > 0 && done < 600,
        "SIGTERM came too late to test anything: {done}"
    );
    // Every message is whole: processed and archived, or untouched; nothing half-done.
    assert!(leftover_tmp(md.path()).is_empty(), "tmp files left behind");
    let live = by_message_id(md.path());
    let arch = by_message_id(&md.archive());
    for id in &smime {
        let f = &live[id];
        assert_eq!(f.len(), 1, "{id}");
        if is_processed_name(&f[0].name) {
            assert_eq!(arch[id].len(), 1, "{id} processed but not archived");
        } else {
            assert_eq!(f[0].bytes, smime_msg(id));
            assert!(!arch.contains_key(id), "{id} archived but not processed");
        }
    }
    // The rest is done by the next run.
    let out = watch_cmd(&["--once"], md.path(), None).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_exactly_once(md.path(), &md.archive(), &smime, &HashMap::new());
}

#[test]
fn recursive_watch_picks_up_folders_made_while_running() {
    let md = Md::new();
    let start = std::time::Instant::now();
    let child = spawn(watch_cmd(
        &["--recursive", "--rescan", "8"],
        md.path(),
        None,
    ));
    std::thread::sleep(Duration::from_millis(1000));
    let deliver = |sub: &std::path::Path, id: &str| {
        deliver_into(sub, &smime_msg(id));
    };
    // Made whole, then renamed into place (as `maildirmake` in a temporary name): inotify on
    // the root sees it, long before the first full rescan.
    let building = md.path().join("building");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(building.join(d)).unwrap();
    }
    let sub = md.path().join(".Projects");
    std::fs::rename(&building, &sub).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    deliver(&sub, "n1");
    let first = wait_for(Duration::from_secs(15), || processed_count(&sub) == 1);
    let first_at = start.elapsed();
    // Made step by step (folder, then its subfolders): found while the watcher looks for
    // folders again after `.Lists` appeared (see a_folder_made_step_by_step_is_watched_at_once),
    // else by the next full rescan.
    let sub2 = md.path().join(".Lists");
    std::fs::create_dir(&sub2).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir(sub2.join(d)).unwrap();
    }
    deliver(&sub2, "n2");
    let second = wait_for(Duration::from_secs(20), || processed_count(&sub2) == 1);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first, "{err}");
    assert!(
        first_at < Duration::from_secs(6),
        "found by the rescan, not inotify: {first_at:?}"
    );
    assert!(second, "{err}");
    assert_eq!(out.status.code(), Some(0));
    let arch = by_message_id(&md.archive());
    for (folder, id) in [(&sub, "n1"), (&sub2, "n2")] {
        let live = by_message_id(folder);
        assert_eq!(live[id].len(), 1, "{id}");
        assert!(is_processed_name(&live[id][0].name), "{id}");
        assert_eq!(arch[id].len(), 1, "{id}");
    }
    assert_eq!(arch.len(), 2);
}

#[test]
fn an_original_moved_back_or_an_archive_removed_while_running_is_archived_again() {
    let md = Md::new();
    md.deliver(&smime_msg("back"));
    let child = spawn(watch_cmd(&["--rescan", "1"], md.path(), None));
    assert!(
        wait_for(Duration::from_secs(20), || processed_count(md.path()) == 1),
        "not processed"
    );
    // A user moves the archived original back into the Maildir, keeping its name (mv,
    // mblaze): it must not be deleted as if the archive still held it. (The copy is in place
    // a moment before the original is in the archive.)
    let arch_new = md.archive().join("new");
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_dir(&arch_new)
            .map(|d| d.flatten().count() == 1)
            .unwrap_or(false)),
        "not archived"
    );
    let name = std::fs::read_dir(&arch_new)
        .unwrap()
        .flatten()
        .next()
        .expect("archived")
        .file_name();
    std::fs::rename(
        arch_new.join(&name),
        md.path()
            .join("cur")
            .join(format!("{}:2,S", name.to_string_lossy())),
    )
    .unwrap();
    let back_in_archive = || {
        ["new", "cur"].iter().any(|s| {
            std::fs::read_dir(md.archive().join(s))
                .map(|d| d.flatten().count() == 1)
                .unwrap_or(false)
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), back_in_archive),
        "the original did not go back to the archive"
    );
    // The archive folder is removed (an IMAP DELETE): the next originals go to a new one,
    // and no message stays in the Maildir twice.
    std::fs::remove_dir_all(md.archive()).unwrap();
    md.deliver(&smime_msg("after1"));
    md.deliver(&smime_msg("after2"));
    assert!(
        wait_for(Duration::from_secs(20), || {
            processed_count(md.path()) == 3 && by_message_id(&md.archive()).len() == 2
        }),
        "not archived again: {:?}",
        by_message_id(md.path()).keys().collect::<Vec<_>>()
    );
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let live = by_message_id(md.path());
    assert_eq!(live.len(), 3, "{:?}", live.keys().collect::<Vec<_>>());
    assert!(live
        .values()
        .all(|v| v.len() == 1 && is_processed_name(&v[0].name)));
}

#[test]
fn a_folder_removed_and_made_again_is_watched_again() {
    let md = Md::new();
    // Made whole, then renamed into place: under load the watcher could look at a folder
    // made in steps half made.
    let make = |name: &str| {
        let staging = md.path().join("staging");
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(staging.join(d)).unwrap();
        }
        let sub = md.path().join(name);
        std::fs::rename(&staging, &sub).unwrap();
        sub
    };
    let sub = make(".Work");
    let child = spawn(watch_cmd(
        &["--recursive", "--rescan", "600"],
        md.path(),
        None,
    ));
    std::thread::sleep(Duration::from_millis(1000));
    let deliver = |sub: &std::path::Path, id: &str| {
        deliver_into(sub, &smime_msg(id));
    };
    deliver(&sub, "w1");
    let first = wait_for(Duration::from_secs(15), || processed_count(&sub) == 1);
    // Removed and made again under the same name (a client deleting and re-creating it).
    std::fs::remove_dir_all(&sub).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sub = make(".Work");
    // Long enough for the pass that the new folder's event starts to be over.
    std::thread::sleep(Duration::from_millis(1500));
    deliver(&sub, "w2");
    // Only inotify can find it: the full rescan is ten minutes away.
    let second = wait_for(Duration::from_secs(15), || processed_count(&sub) == 1);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first, "{err}");
    assert!(second, "not found after the folder was made again: {err}");
    assert_eq!(out.status.code(), Some(0));
}

/// A message written straight into new/ (against the Maildir protocol, as `cp x.eml new/`
/// does) may be read before it is complete and left as it is; the next full rescan looks at
/// it again once it changed. It stayed unprocessed until a restart.
#[test]
fn a_message_written_in_place_is_processed_by_the_next_full_rescan() {
    use std::io::Write;
    let md = Md::new();
    let child = spawn(watch_cmd(&["--rescan", "1"], md.path(), None));
    std::thread::sleep(Duration::from_millis(500));
    let msg = smime_msg("inplace");
    // First only the start of its header, without the Content-Type: not S/MIME yet.
    let cut = b"From: ".len();
    let path = md.path().join("new").join(unique_name(msg.len()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&msg[..cut]).unwrap();
    f.sync_all().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    f.write_all(&msg[cut..]).unwrap();
    drop(f);
    let done = wait_for(Duration::from_secs(20), || processed_count(md.path()) == 1);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(done, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

/// The state folder (the ledger's) removed while the watcher runs, as a user resetting state
/// does: it is made again and the watcher goes on. The watcher stopped with 75.
#[test]
fn the_state_folder_removed_while_running_does_not_stop_the_watcher() {
    let md = Md::new();
    let name = md.path().file_name().unwrap().to_str().unwrap().to_string();
    let child = spawn(watch_cmd(&["--rescan", "600"], md.path(), None));
    md.deliver(&smime_msg("before"));
    let first = wait_for(Duration::from_secs(15), || processed_count(md.path()) == 1);
    std::fs::remove_dir_all(common::state_home(&name)).unwrap();
    md.deliver(&smime_msg("after"));
    let second = wait_for(Duration::from_secs(15), || processed_count(md.path()) == 2);
    let made_again = common::state_home(&name)
        .join("smimed/maildir.ledger")
        .exists();
    // Replaced by a file: the ledger can be neither read nor written; mail is still processed.
    std::fs::remove_dir_all(common::state_home(&name)).unwrap();
    std::fs::write(common::state_home(&name), b"not a folder").unwrap();
    md.deliver(&smime_msg("third"));
    let third = wait_for(Duration::from_secs(15), || processed_count(md.path()) == 3);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first && second && third, "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(made_again);
}

/// A folder made step by step (`.Name`, then its cur/ new/ tmp/, as Dovecot's LDA or a Sieve
/// `fileinto :create` makes one) raises no event for the steps: the watcher looks for folders
/// again for a few seconds after a `.Name` appears, so mail delivered into it at once is not
/// left for the full rescan (ten minutes away here).
#[test]
fn a_folder_made_step_by_step_is_watched_at_once() {
    // (In a folder of its own: a Maildir whose own name starts with a dot, as a temporary
    // folder's does, made every event on it look like a new folder and hid what is tested.)
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let child = spawn(watch_cmd(&["--recursive", "--rescan", "600"], &root, None));
    std::thread::sleep(Duration::from_millis(1000));
    let sub = root.join(".Lists");
    std::fs::create_dir(&sub).unwrap();
    // (Long enough for the watcher to look at the folder before it is complete.)
    std::thread::sleep(Duration::from_millis(200));
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir(sub.join(d)).unwrap();
    }
    deliver_into(&sub, &smime_msg("s1"));
    let found = wait_for(Duration::from_secs(5), || processed_count(&sub) == 1);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(found, "not processed within 5 s: {err}");
    assert_eq!(out.status.code(), Some(0));
}

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A watcher started with stderr to a file (a log flood does not block it on a full pipe).
fn spawn_logging(mut c: Command, log: &std::path::Path) -> std::process::Child {
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"));
    c.spawn().expect("spawn smimed watch")
}

/// An idle watcher stays idle: its own reads (opening the root to list it, reading an original
/// it leaves in place) raised events that woke it again, a busy loop at 100% CPU. Three
/// cases: a Maildir whose own name starts with a dot (`~/.maildir`) under --recursive; the
/// seconds after a new folder appears; an original it cannot archive (over the file-size
/// limit, archive on another file system) left beside its copy.
#[test]
fn an_idle_watcher_does_not_wake_itself() {
    let dir = tempfile::tempdir().unwrap();
    let idle_cpu = |c: Command, name: &str, after_start: &dyn Fn()| -> (u64, String) {
        let log = dir.path().join(format!("{name}.log"));
        let mut child = spawn_logging(c, &log);
        std::thread::sleep(Duration::from_millis(1500));
        after_start();
        let t0 = cpu_ticks(child.id());
        std::thread::sleep(Duration::from_secs(3));
        let used = cpu_ticks(child.id()) - t0;
        signal(&child, "-TERM");
        let _ = child.wait();
        (used, std::fs::read_to_string(&log).unwrap_or_default())
    };
    // 1. `~/.maildir`, --recursive.
    let dotted = dir.path().join(".maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dotted.join(d)).unwrap();
    }
    let (used, log) = idle_cpu(
        watch_cmd(&["--recursive", "--rescan", "600"], &dotted, None),
        "dotted",
        &|| {},
    );
    assert!(used < 30, "{used} ticks in 3 s idle: {log}");
    // 2. The seconds after a folder appears.
    let root = dir.path().join("mail");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let (used, log) = idle_cpu(
        watch_cmd(&["--recursive", "--rescan", "600"], &root, None),
        "settle",
        &|| {
            for d in ["tmp", "new", "cur"] {
                std::fs::create_dir_all(root.join(".New").join(d)).unwrap();
            }
        },
    );
    assert!(
        used < 30,
        "{used} ticks in the 3 s after a new folder: {log}"
    );
    // 3. An original that cannot be archived.
    let md = Md::new();
    let other = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let arch = other.path().join("Originals");
    let p = common::pki::pki();
    let line = "a long line of the large message, repeated to make it big.\r\n";
    let body = encrypt_to(
        &[&p.bob],
        &["-aes256", "-binary"],
        &sample_entity(&line.repeat(300 * 1024 / line.len())),
    );
    md.deliver(
        &[
            headers("Alice <alice@example.org>", "bob@example.org", "big").as_bytes(),
            &body,
        ]
        .concat(),
    );
    let (used, log) = idle_cpu(
        under_prlimit(
            &watch_cmd(
                &["--archive", arch.to_str().unwrap(), "--rescan", "600"],
                md.path(),
                None,
            ),
            "--fsize=350000",
        ),
        "fsize",
        &|| {},
    );
    assert_eq!(processed_count(md.path()), 1, "{log}");
    assert!(
        used < 30,
        "{used} ticks in 3 s: {}",
        &log[..log.len().min(400)]
    );
    assert!(log.lines().count() < 10, "{}", &log[..log.len().min(400)]);
}

/// A message written in place (`cp x.eml new/`, against the Maildir protocol) is read while it
/// is still being written: a truncated S/MIME message must not become a "malformed" copy with
/// its original archived. It is left until a later pass finds it complete.
#[test]
fn a_message_still_being_written_in_place_is_not_processed_truncated() {
    let md = Md::new();
    let p = common::pki::pki();
    let line = "a line of a large message that a slow cp writes into new/ directly.\r\n";
    let body = encrypt_to(
        &[&p.bob],
        &["-aes256", "-binary"],
        &sample_entity(&line.repeat(700 * 1024 / line.len())),
    );
    let msg = [
        headers("Alice <alice@example.org>", "bob@example.org", "slow").as_bytes(),
        &body,
    ]
    .concat();
    let mut child = spawn(watch_cmd(&["--rescan", "3"], md.path(), None));
    std::thread::sleep(Duration::from_millis(1000));
    let name = "1800000000.M1P1.slowcp";
    {
        use std::io::Write;
        let mut f = std::fs::File::create(md.path().join("new").join(name)).unwrap();
        for chunk in msg.chunks(32 * 1024) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let done = wait_for(Duration::from_secs(20), || processed_count(md.path()) == 1);
    signal(&child, "-TERM");
    let _ = child.wait();
    assert!(done, "processed once complete");
    let copy = std::fs::read_dir(md.path().join("new"))
        .unwrap()
        .flatten()
        .find(|e| is_processed_name(&e.file_name().to_string_lossy()))
        .expect("the copy");
    let text = std::fs::read(copy.path()).unwrap();
    let head = String::from_utf8_lossy(&text[..text.len().min(2000)]).into_owned();
    assert!(head.contains("encryption=decrypted"), "{head}");
    let archived = std::fs::read(md.archive().join("new").join(name)).expect("the original");
    assert_eq!(archived, msg, "the whole original archived");
}
