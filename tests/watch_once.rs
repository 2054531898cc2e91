//! `smimed watch --once` on real Maildirs: what is rewritten and what is left, names and flags,
//! the archive (folder, path elsewhere, none), idempotence, finishing an interrupted move, and
//! temporary failures.

mod common;
mod watch_support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use common::*;
use watch_support::*;

fn run_once(c: &mut std::process::Command) -> (i32, String) {
    let out = c.output().expect("run smimed watch --once");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn messages_a_client_renames_meanwhile_are_read_where_they_are_now() {
    // A client moves every message from new/ to cur/ and toggles a flag on it again and again
    // while `--once` works through them. A message renamed between the scan and the read was
    // taken for gone: left encrypted and not reported. Now it is read where it is, or (renamed
    // again and again) reported as deferred with exit 75.
    renamed_meanwhile(None);
}

#[test]
fn messages_a_client_renames_meanwhile_are_archived_once_on_another_file_system() {
    // The same with the archive on another file system, where an original is copied, then
    // unlinked: an unlink that found the original re-flagged meanwhile made the next try copy
    // it into the archive a second time.
    let other =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) for a second file system");
    renamed_meanwhile(Some(&other.path().join("Originals")));
}

fn renamed_meanwhile(archive: Option<&std::path::Path>) {
    let md = Md::new();
    let n = 300;
    for i in 0..n {
        md.deliver(&smime_msg(&format!("r{i}")));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dir = md.path().to_path_buf();
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for sub in ["new", "cur"] {
                    let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        let name = e.file_name().into_string().unwrap();
                        if is_processed_name(&name) {
                            continue;
                        }
                        let unique = name.split(':').next().unwrap();
                        let next = if name.ends_with(":2,S") {
                            format!("{unique}:2,FS")
                        } else {
                            format!("{unique}:2,S")
                        };
                        let _ = std::fs::rename(e.path(), dir.join("cur").join(next));
                    }
                }
            }
        })
    };
    let mut args = vec!["--once"];
    if let Some(a) = archive {
        args.extend(["--archive", a.to_str().unwrap()]);
    }
    let (code, err) = run_once(&mut watch_cmd(&args, md.path(), None));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.join().unwrap();
    // Every original at most once in the archive (by its unique part).
    let archived: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(archive.unwrap_or(&md.archive()).join(s))
                .into_iter()
                .flatten()
        })
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| n.split(':').next().unwrap().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = archived.iter().collect();
    assert_eq!(unique.len(), archived.len(), "an original archived twice");
    let left: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(md.path().join(s)).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !is_processed_name(n))
        .collect();
    if left.is_empty() {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(
            code,
            75,
            "{} left unprocessed and not reported: {err}",
            left.len()
        );
        assert!(err.contains(&format!("{} deferred", left.len())), "{err}");
    }
}

#[test]
fn copies_keep_keyword_letters_and_the_archived_original_drops_them() {
    // Dovecot's keyword letters (a-z) mean what the folder's own dovecot-keywords file says:
    // the copy stays in the folder and keeps them; in the archive they would name other
    // keywords, so the original keeps only the standard flags.
    let md = Md::new();
    let n = md.put_cur(&smime_msg("k1"), "FSab");
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    let cur: Vec<String> = std::fs::read_dir(md.path().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(
        is_processed_name(&cur[0]) && cur[0].ends_with(":2,FSab"),
        "{cur:?}"
    );
    let archived: Vec<String> = std::fs::read_dir(md.archive().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let unique = n.split(':').next().unwrap();
    assert_eq!(archived, vec![format!("{unique}:2,FS")]);
    // and a second run changes nothing
    let before = snapshot(md.path());
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_same(&before, &snapshot(md.path()), "second --once");
}

#[test]
fn once_rewrites_smime_and_forged_keeps_flags_and_archives_originals() {
    let md = Md::new();
    let n_new = md.deliver(&smime_msg("a1"));
    let n_cur = md.put_cur(&smime_msg("a2"), "RS");
    let n_plain = md.deliver(&plain_msg("p1"));
    let n_forged = md.put_cur(&forged_msg("f1"), "S");

    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("smimed watch: 3 processed (2 decrypted, 2 verified, 0 failed), 1 skipped, 0 deferred, 3 archived"),
        "summary: {err}"
    );

    // The plain message: same name, same bytes.
    assert_eq!(
        std::fs::read(md.path().join("new").join(&n_plain)).unwrap(),
        plain_msg("p1")
    );

    // Processed copies: same subdirectory, same flags, marked name, new size, mode 0600.
    let new_names: Vec<String> = std::fs::read_dir(md.path().join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let key_new = n_new.split(',').next().unwrap();
    let p_new = new_names
        .iter()
        .find(|n| n.trim_start_matches("smimed=").starts_with(key_new))
        .expect("copy in new/");
    assert!(is_processed_name(p_new) && !p_new.contains(':'), "{p_new}");
    let bytes = std::fs::read(md.path().join("new").join(p_new)).unwrap();
    assert!(p_new.ends_with(&format!(",S={}", bytes.len())), "{p_new}");
    let mode = std::fs::metadata(md.path().join("new").join(p_new))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let st = status_of(&bytes);
    assert_eq!(status_word(&st, "encryption"), Some("decrypted"), "{st}");
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");

    let cur_names: Vec<String> = std::fs::read_dir(md.path().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cur_names.len(), 2, "{cur_names:?}");
    assert!(
        cur_names.iter().all(|n| is_processed_name(n)),
        "{cur_names:?}"
    );
    let key_cur = n_cur.split(',').next().unwrap();
    let p_cur = cur_names
        .iter()
        .find(|n| n.trim_start_matches("smimed=").starts_with(key_cur))
        .unwrap();
    assert!(p_cur.ends_with(":2,RS"), "{p_cur}");
    let key_f = n_forged.split(',').next().unwrap();
    let p_f = cur_names
        .iter()
        .find(|n| n.trim_start_matches("smimed=").starts_with(key_f))
        .unwrap();
    assert!(p_f.ends_with(":2,S"), "{p_f}");
    let forged_out =
        String::from_utf8(std::fs::read(md.path().join("cur").join(p_f)).unwrap()).unwrap();
    assert!(
        !forged_out.contains("signer=ceo@example.org"),
        "{forged_out}"
    );
    assert!(!forged_out.contains("smime=pass"), "{forged_out}");
    assert_eq!(
        status_word(&status_of(forged_out.as_bytes()), "signature"),
        Some("none")
    );

    // Originals in the archive, under their own names and subdirectories, byte for byte.
    let a = md.archive();
    assert!(a.join("maildirfolder").exists());
    assert_eq!(
        std::fs::read(a.join("new").join(&n_new)).unwrap(),
        smime_msg("a1")
    );
    assert_eq!(
        std::fs::read(a.join("cur").join(&n_cur)).unwrap(),
        smime_msg("a2")
    );
    assert_eq!(
        std::fs::read(a.join("cur").join(&n_forged)).unwrap(),
        forged_msg("f1")
    );
    assert!(leftover_tmp(md.path()).is_empty());

    // Idempotence: a second run changes nothing, byte for byte.
    let before = snapshot(md.path());
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(": 0 processed"), "{err}");
    assert_same(
        &snapshot(md.path()),
        &before,
        "second --once changed the Maildir",
    );
}

#[test]
fn archive_elsewhere_and_no_archive() {
    // --archive PATH: a Maildir outside the tree, created.
    let md = Md::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let arch = elsewhere.path().join("Originals");
    let name = md.deliver(&smime_msg("b1"));
    let (code, err) = run_once(&mut watch_cmd(
        &["--once", "--archive", arch.to_str().unwrap()],
        md.path(),
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(arch.join("new").join(&name)).unwrap(),
        smime_msg("b1")
    );
    assert!(
        !md.archive().exists(),
        "default archive made despite --archive"
    );
    assert_exactly_once(md.path(), &arch, &["b1".to_string()], &HashMap::new());

    // --no-archive: the original is gone, the copy is there.
    let md = Md::new();
    let name = md.deliver(&smime_msg("b2"));
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--no-archive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    // The summary says the original was removed, not archived.
    assert!(err.contains(", 0 archived, 1 removed"), "{err}");
    assert!(!md.path().join("new").join(&name).exists());
    assert!(!md.archive().exists());
    let live = by_message_id(md.path());
    assert_eq!(live["b2"].len(), 1);
    assert!(is_processed_name(&live["b2"][0].name));

    // Config file `[watch] archive = "Kept"` (a folder name): `.Kept` inside the Maildir.
    let md = Md::new();
    let cfg = md.path().join("smimed.toml");
    std::fs::write(&cfg, "[watch]\narchive = \"Kept\"\nrecursive = true\n").unwrap();
    let name = md.deliver(&smime_msg("b3"));
    let mut c = watch_cmd(&["--once"], md.path(), None);
    c.env("SMIMED_CONFIG", &cfg);
    let (code, err) = run_once(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(md.path().join(".Kept/new").join(&name).exists(), "{err}");
}

/// Every file in a Maildir's new/ and cur/, sorted.
fn contents(maildir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(maildir.join(s)).into_iter().flatten())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn originals_with_the_same_name_in_two_folders_are_both_archived() {
    // Maildir names are unique within one Maildir only: a folder copied with cp or rsync, or
    // Dovecot with maildir_copy_preserve_filename, gives two folders the same name. Under
    // --recursive (one archive for the tree), and with two Maildirs sharing `--archive PATH`,
    // the second original was unlinked as "already archived": lost, while the summary said
    // "2 archived".
    let md = Md::new();
    let sub = md.subfolder(".Work");
    // A third folder holds the same key under another name (another `,S=`): archived under a
    // key of its own too, since clients (neomutt) take the key for the message's identity.
    let other = md.subfolder(".Other");
    let name = unique_name(10);
    std::fs::write(md.path().join("new").join(&name), smime_msg("d1")).unwrap();
    std::fs::write(sub.join("new").join(&name), smime_msg("d2")).unwrap();
    let same_key = name.replace(",S=10", ",S=11");
    std::fs::write(other.join("new").join(&same_key), smime_msg("d3")).unwrap();
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(": 3 processed") && err.contains("3 archived"),
        "{err}"
    );
    let mut want = vec![smime_msg("d1"), smime_msg("d2"), smime_msg("d3")];
    want.sort();
    assert_eq!(contents(&md.archive()), want, "all originals archived");
    let mut keys: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(md.archive().join(s)).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| n.split([',', ':']).next().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "one key per archived original: {keys:?}");
    for (folder, id) in [
        (md.path(), "d1"),
        (sub.as_path(), "d2"),
        (other.as_path(), "d3"),
    ] {
        let live = by_message_id(folder);
        assert_eq!(live[id].len(), 1, "{live:?}");
        assert!(is_processed_name(&live[id][0].name), "{live:?}");
    }
    let before = snapshot(md.path());
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_same(&snapshot(md.path()), &before, "second run");
    // A user moves an original archived under a distinct key back into its folder: it goes
    // back to the archive, never processed a second time.
    // Whichever original finished last got the distinct key.
    let folders = [
        (md.path().to_path_buf(), "d1"),
        (sub.clone(), "d2"),
        (other.clone(), "d3"),
    ];
    let (renamed, bytes) = distinct_archived_original(&md);
    let at = folders
        .iter()
        .position(|(_, id)| bytes == smime_msg(id))
        .expect("one of the three");
    let (own, elsewhere) = (&folders[at].0, &folders[(at + 1) % 3].0);
    move_back_and_expect_it_archived_again(&md, &renamed, own, &before);
    // Into another folder, whose copy of that key is another message's: a message of its own
    // there, processed (once).
    std::fs::rename(
        md.archive().join("new").join(&renamed),
        elsewhere.join("new").join(&renamed),
    )
    .unwrap();
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(": 1 processed"), "{err}");
    let before = snapshot(md.path());
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_same(&snapshot(md.path()), &before, "and then left alone");

    // Two Maildirs sharing one archive elsewhere; a third, later, with an original of that name.
    let (a, b) = (Md::new(), Md::new());
    let elsewhere = tempfile::tempdir().unwrap();
    let arch = elsewhere.path().join("Originals");
    std::fs::write(a.path().join("new").join(&name), smime_msg("e1")).unwrap();
    std::fs::write(b.path().join("new").join(&name), smime_msg("e2")).unwrap();
    let args = [
        "--once",
        "--archive",
        arch.to_str().unwrap(),
        a.path().to_str().unwrap(),
    ];
    let (code, err) = run_once(&mut watch_cmd(&args, b.path(), None));
    assert_eq!(code, 0, "{err}");
    let c = Md::new();
    std::fs::write(
        c.path().join("cur").join(format!("{name}:2,S")),
        smime_msg("e3"),
    )
    .unwrap();
    let (code, err) = run_once(&mut watch_cmd(&args[..3], c.path(), None));
    assert_eq!(code, 0, "{err}");
    let mut want = vec![smime_msg("e1"), smime_msg("e2"), smime_msg("e3")];
    want.sort();
    assert_eq!(contents(&arch), want, "all three originals archived");
    for (m, id) in [(&a, "e1"), (&b, "e2"), (&c, "e3")] {
        let live = by_message_id(m.path());
        assert!(is_processed_name(&live[id][0].name), "{live:?}");
    }
}

#[test]
fn an_original_without_message_id_moved_back_is_not_processed_again() {
    // Archived as KEY-smimed-1 (another folder's original had its name), then moved back into
    // its own folder by a user: known by its outer fields when there is no Message-ID.
    let without_id = |id: &str| {
        let m = String::from_utf8(smime_msg(id)).unwrap();
        m.replace(&format!("Message-ID: <{id}@test>\r\n"), "")
            .into_bytes()
    };
    let md = Md::new();
    let sub = md.subfolder(".Work");
    let name = unique_name(10);
    std::fs::write(md.path().join("new").join(&name), without_id("n1")).unwrap();
    std::fs::write(sub.join("new").join(&name), without_id("n2")).unwrap();
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(": 2 processed"), "{err}");
    let before = snapshot(md.path());
    let (renamed, bytes) = distinct_archived_original(&md);
    let own = if bytes == without_id("n2") {
        sub.clone()
    } else {
        md.path().to_path_buf()
    };
    move_back_and_expect_it_archived_again(&md, &renamed, &own, &before);
}

/// The original archived under a distinct key (`KEY-smimed-N`) in the archive's new/: its name
/// and bytes.
fn distinct_archived_original(md: &Md) -> (String, Vec<u8>) {
    let renamed = std::fs::read_dir(md.archive().join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.contains("-smimed-"))
        .expect("an original archived under a distinct key");
    let bytes = std::fs::read(md.archive().join("new").join(&renamed)).unwrap();
    (renamed, bytes)
}

/// A user moves the archived original `renamed` back into `folder` (its own): the next
/// recursive --once processes nothing, archives it again, and the tree is as `before`.
fn move_back_and_expect_it_archived_again(
    md: &Md,
    renamed: &str,
    folder: &std::path::Path,
    before: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) {
    std::fs::rename(
        md.archive().join("new").join(renamed),
        folder.join("new").join(renamed),
    )
    .unwrap();
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(": 0 processed") && err.contains("1 archived"),
        "{err}"
    );
    assert_same(
        &snapshot(md.path()),
        before,
        "moved back and archived again",
    );
}

#[test]
fn config_switches_are_turned_off_by_their_no_flags_and_imap_refuses_maildir_flags() {
    // `[watch] recursive = true` / `syslog = true` had no off switch on the command line.
    let md = Md::new();
    let sub = md.subfolder(".Work");
    let name = unique_name(10);
    std::fs::write(sub.join("new").join(&name), smime_msg("o1")).unwrap();
    let cfg = md.path().join("smimed.toml");
    std::fs::write(&cfg, "[watch]\nrecursive = true\nsyslog = true\n").unwrap();
    let mut c = watch_cmd(
        &["--once", "--no-recursive", "--no-syslog"],
        md.path(),
        None,
    );
    c.env("SMIMED_CONFIG", &cfg)
        .env("SMIMED_SYSLOG_SOCKET", "/nonexistent/log");
    let (code, err) = run_once(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("smimed watch: 0 processed"),
        "stderr, not syslog: {err}"
    );
    assert!(
        sub.join("new").join(&name).exists(),
        "the subfolder left alone"
    );
    // A bad value in the file is a configuration error (78), not a usage error.
    for bad in ["[watch]\njobs = 0\n", "[watch]\narchive = \"\"\n"] {
        std::fs::write(&cfg, bad).unwrap();
        let mut c = watch_cmd(&["--once"], md.path(), None);
        c.env("SMIMED_CONFIG", &cfg);
        assert_eq!(run_once(&mut c).0, 78, "{bad}");
    }
    // The IMAP watcher refuses the Maildir watcher's --recursive instead of ignoring it.
    let out = common::smimed()
        .args([
            "watch",
            "--once",
            "--recursive",
            "imap://u@127.0.0.1:1/INBOX",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--recursive"));
    // ... and honours --syslog (it logged to stderr whatever was asked).
    let out = common::smimed()
        .args(["watch", "--once", "--syslog", "imap://u@127.0.0.1:1/INBOX"])
        .env("SMIMED_SYSLOG_SOCKET", "/nonexistent/log")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
}

#[test]
fn recursive_covers_subfolders_but_not_the_archive() {
    let md = Md::new();
    let sub = md.subfolder(".Work");
    let name = unique_name(10);
    std::fs::write(sub.join("new").join(&name), smime_msg("r1")).unwrap();
    // Without --recursive the subfolder is left alone.
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(sub.join("new").join(&name).exists());
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(": 1 processed"), "{err}");
    assert_eq!(
        std::fs::read(md.archive().join("new").join(&name)).unwrap(),
        smime_msg("r1")
    );
    assert_exactly_once(&sub, &md.archive(), &["r1".to_string()], &HashMap::new());
    // A third run, recursive, does not process the archive's originals.
    let before = snapshot(md.path());
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_same(&snapshot(md.path()), &before, "third run");
}

#[test]
fn an_interrupted_move_is_finished_without_processing_again() {
    // The state a crash between "copy in place" and "original archived" leaves: the original
    // (re-flagged by a client since) next to a marked copy.
    let md = Md::new();
    let name = md.deliver(&smime_msg("c1"));
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--no-archive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    let copy = by_message_id(md.path())["c1"][0].clone();
    let unique = name.split(':').next().unwrap();
    std::fs::write(
        md.path().join("cur").join(format!("{unique}:2,S")),
        smime_msg("c1"),
    )
    .unwrap();

    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(": 0 processed") && err.contains("1 archived"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&copy.path).unwrap(),
        copy.bytes,
        "the copy was rewritten"
    );
    assert!(md
        .archive()
        .join("cur")
        .join(format!("{unique}:2,S"))
        .exists());
    assert_exactly_once(
        md.path(),
        &md.archive(),
        &["c1".to_string()],
        &HashMap::new(),
    );
}

#[test]
fn temporary_failure_leaves_the_message_and_it_is_retried() {
    let md = Md::new();
    let flag = md.path().join("agent-locked");
    std::fs::write(&flag, b"").unwrap();
    let calls = md.path().join("calls");
    let cmd = format!(
        "echo x >> '{}'; if [ -e '{}' ]; then exit 1; fi; echo test",
        calls.display(),
        flag.display()
    );
    let count = || {
        std::fs::read_to_string(&calls)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let name = md.deliver(&smime_msg("t1"));
    let plain = md.deliver(&plain_msg("t2"));
    let before = (
        snapshot(&md.path().join("new")),
        snapshot(&md.path().join("cur")),
    );

    // --once: left as it is, exit 75.
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), Some(&cmd)));
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("1 deferred"), "{err}");
    assert_same(
        &snapshot(&md.path().join("new")),
        &before.0,
        "a deferred message was touched",
    );
    assert_same(
        &snapshot(&md.path().join("cur")),
        &before.1,
        "a deferred message was touched",
    );

    // Running: still failing, then the passphrase becomes available and the rescan retries.
    let at_start = count();
    let mut child = spawn(watch_cmd(&["--rescan", "1"], md.path(), Some(&cmd)));
    std::thread::sleep(std::time::Duration::from_millis(5500));
    assert!(
        md.path().join("new").join(&name).exists(),
        "processed while failing"
    );
    // Retried at every full rescan (every second), not every other one: about six tries.
    let tries = count() - at_start;
    assert!(tries >= 5, "{tries} tries in 5.5 s with --rescan 1");
    assert_eq!(processed_count(md.path()), 0);
    std::fs::remove_file(&flag).unwrap();
    let done = wait_for(std::time::Duration::from_secs(20), || {
        processed_count(md.path()) == 1
    });
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(done, "not retried after the failure passed");
    assert_eq!(status.code(), Some(0));
    let mut plain_map = HashMap::new();
    plain_map.insert("t2".to_string(), plain_msg("t2"));
    assert_exactly_once(md.path(), &md.archive(), &["t1".to_string()], &plain_map);
    assert!(md.path().join("new").join(&plain).exists());
}

/// While the passphrase cannot be had, only the messages that need a key wait: a plain one with
/// forged status fields is rewritten and a signed one verified, in the same pass as the
/// encrypted ones it defers, and the passphrase command runs once per pass, not once per message.
#[test]
fn a_passphrase_that_cannot_be_had_defers_only_what_needs_the_key() {
    let md = Md::new();
    let calls = md.path().join("calls");
    let cmd = format!("echo x >> '{}'; exit 1", calls.display());
    let p = common::pki::pki();
    let signed = [
        b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: signed\r\n\
          Message-ID: <s1@test>\r\n"
            .as_slice(),
        &sign_as(&p.alice, false, &[], &sample_entity("signed only")),
    ]
    .concat();
    // Encrypted ones first and last, in new/ and cur/: whichever the workers take first.
    md.deliver(&smime_msg("k1"));
    md.deliver(&forged_msg("k2"));
    md.deliver(&signed);
    md.deliver(&smime_msg("k3"));
    md.put_cur(&forged_msg("k4"), "S");
    md.put_cur(&smime_msg("k5"), "S");
    for jobs in ["1", "2"] {
        let _ = std::fs::remove_file(&calls);
        let (code, err) = run_once(&mut watch_cmd(
            &["--once", "--jobs", jobs],
            md.path(),
            Some(&cmd),
        ));
        assert_eq!(code, 75, "{err}");
        let ran = std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count();
        assert_eq!(ran, 1, "the passphrase command ran {ran} times in one pass");
        assert!(err.contains("3 deferred"), "{err}");
    }
    // The first run rewrote the three that need no key; the second found nothing else to do.
    let found = by_message_id(md.path());
    for id in ["k2", "k4", "s1"] {
        let f = &found[id];
        assert_eq!(f.len(), 1, "{id}: {f:?}");
        assert!(is_processed_name(&f[0].name), "{id} not processed: {f:?}");
    }
    for id in ["k1", "k3", "k5"] {
        let f = &found[id];
        assert!(
            !is_processed_name(&f[0].name),
            "{id} processed without a key"
        );
    }
    let s1 = &found["s1"][0];
    let st = status_of(&std::fs::read(&s1.path).unwrap());
    assert_eq!(status_word(&st, "signature"), Some("valid"), "{st}");
}

#[test]
fn not_a_maildir_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let out = watch_cmd(&["--once"], d.path(), None).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn syslog_receives_the_log() {
    use std::os::unix::net::UnixDatagram;
    let md = Md::new();
    md.deliver(&smime_msg("l1"));
    let sock_path = md.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut c = watch_cmd(&["--once", "--syslog"], md.path(), None);
    c.env("SMIMED_SYSLOG_SOCKET", &sock_path);
    let (code, err) = run_once(&mut c);
    assert_eq!(code, 0, "{err}");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // RFC 3164: <PRI> with facility mail (2) and severity info (6): 2*8+6 = 22.
    assert!(
        got.iter()
            .any(|m| m.starts_with("<22>") && m.contains("smimed") && m.contains("1 processed")),
        "{got:?}"
    );

    // Unreachable syslog: 69 (EX_UNAVAILABLE), nothing touched.
    let mut c = watch_cmd(&["--once", "--syslog"], md.path(), None);
    c.env("SMIMED_SYSLOG_SOCKET", md.path().join("nothing-here"));
    let (code, err) = run_once(&mut c);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("nothing-here"), "the socket is named: {err}");
}

#[test]
fn a_backlog_on_a_terminal_shows_a_progress_bar() {
    let md = Md::new();
    for i in 0..320 {
        md.deliver(&smime_msg(&format!("g{i}")));
    }
    let p = common::pki::pki();
    // `script` gives the watcher a terminal (stderr is a tty); its output is what was drawn.
    let line = format!(
        "'{}' --authserv-id mx.test --trust '{}' --key '{}' watch --once '{}'",
        common::smimed_bin().display(),
        p.root_path.display(),
        p.bob.p12_path.display(),
        md.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("SMIMED_PASSPHRASE", common::pki::P12_PASS)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("SMIMED_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("/320 messages"),
        "no progress bar: {screen}"
    );
    assert!(screen.contains("320 processed"), "{screen}");

    // Not on a terminal: no bar.
    let md = Md::new();
    for i in 0..320 {
        md.deliver(&smime_msg(&format!("h{i}")));
    }
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("/320 messages"), "{err}");
}

#[test]
fn messages_over_max_size_are_left_as_they_are() {
    let md = Md::new();
    let big = md.deliver(&smime_msg("big"));
    let mut big_forged = forged_msg("f2");
    big_forged.extend_from_slice(&[b'x'; 2000]);
    let forged = md.deliver(&big_forged);
    let (code, err) = run_once(&mut watch_cmd(
        &["--once", "--max-size", "1000"],
        md.path(),
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("1 processed") && err.contains("1 skipped"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(md.path().join("new").join(&big)).unwrap(),
        smime_msg("big")
    );
    // A forged status field is removed whatever the size (the pipeline reports size-limit).
    assert!(!md.path().join("new").join(&forged).exists());
    let live = by_message_id(md.path());
    assert!(is_processed_name(&live["f2"][0].name));
    let text = String::from_utf8_lossy(&live["f2"][0].bytes).into_owned();
    assert!(!text.contains("signer=ceo@example.org"), "{text}");
}

#[test]
fn archive_on_another_file_system_is_copied_durably_then_unlinked() {
    use std::os::unix::fs::MetadataExt;
    let md = Md::new();
    let other =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) for a second file system");
    assert_ne!(
        std::fs::metadata(other.path()).unwrap().dev(),
        std::fs::metadata(md.path()).unwrap().dev(),
        "/dev/shm is on the same file system as the Maildir: nothing would be tested"
    );
    let arch = other.path().join("Originals");
    let a = md.deliver(&smime_msg("x1"));
    let b = md.put_cur(&smime_msg("x2"), "S");
    let (code, err) = run_once(&mut watch_cmd(
        &["--once", "--archive", arch.to_str().unwrap()],
        md.path(),
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(arch.join("new").join(&a)).unwrap(),
        smime_msg("x1")
    );
    assert_eq!(
        std::fs::read(arch.join("cur").join(&b)).unwrap(),
        smime_msg("x2")
    );
    let mode = std::fs::metadata(arch.join("new").join(&a)).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(leftover_tmp(&arch).is_empty());
    assert_exactly_once(
        md.path(),
        &arch,
        &["x1".to_string(), "x2".to_string()],
        &HashMap::new(),
    );

    // The state a crash between the durable copy and the unlink leaves: the original is
    // still there although its key is archived. The next run only unlinks it.
    let before = std::fs::read(arch.join("new").join(&a)).unwrap();
    std::fs::write(md.path().join("new").join(&a), smime_msg("x1")).unwrap();
    let (code, err) = run_once(&mut watch_cmd(
        &["--once", "--archive", arch.to_str().unwrap()],
        md.path(),
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(": 0 processed") && err.contains("1 archived"),
        "{err}"
    );
    assert_eq!(std::fs::read(arch.join("new").join(&a)).unwrap(), before);
    assert_exactly_once(
        md.path(),
        &arch,
        &["x1".to_string(), "x2".to_string()],
        &HashMap::new(),
    );
}

/// A copy keeps its original's modification time, which Maildir readers take for the day the
/// message arrived (Dovecot's INTERNALDATE, mutt's date-received): processing an old Maildir
/// must not move its mail to today. The archived original keeps it too, also when copied to an
/// archive on another file system.
#[test]
fn copies_and_archived_originals_keep_the_arrival_time() {
    let arrived = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_740_830_400);
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let other =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) for a second file system");
    for archive in [None, Some(other.path().join("Originals"))] {
        let md = Md::new();
        let names = [
            md.deliver(&smime_msg("d1")),
            md.put_cur(&forged_msg("d2"), "S"),
        ];
        for (sub, n) in ["new", "cur"].iter().zip(&names) {
            std::fs::File::options()
                .write(true)
                .open(md.path().join(sub).join(n))
                .unwrap()
                .set_modified(arrived)
                .unwrap();
        }
        let mut args = vec!["--once"];
        if let Some(a) = &archive {
            args.extend(["--archive", a.to_str().unwrap()]);
        }
        let (code, err) = run_once(&mut watch_cmd(&args, md.path(), None));
        assert_eq!(code, 0, "{err}");
        let found = by_message_id(md.path());
        for id in ["d1", "d2"] {
            let f = &found[id][0];
            assert!(is_processed_name(&f.name), "{id}: {f:?}");
            assert_eq!(mtime(&f.path), arrived, "{id}: the copy's time");
        }
        let arch = archive.clone().unwrap_or_else(|| md.archive());
        for (sub, n) in ["new", "cur"].iter().zip(&names) {
            let key = n.split(':').next().unwrap();
            let path = std::fs::read_dir(arch.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(key))
                .unwrap_or_else(|| panic!("{n} not archived"));
            assert_eq!(mtime(&path), arrived, "{}", path.display());
        }
    }
}

/// `smimed watch` takes Maildirs or imap(s):// mailboxes, not both at once.
#[test]
fn maildirs_and_imap_urls_do_not_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    let out = common::smimed()
        .args(["watch", "--once"])
        .arg(dir.path())
        .arg("imaps://alice@127.0.0.1/INBOX")
        .output()
        .expect("run smimed");
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
}

#[test]
fn a_maildir_given_twice_or_also_reached_by_recursive_is_worked_through_once() {
    let md = Md::new();
    let sub = md.path().join(".Work");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(sub.join(d)).unwrap();
    }
    md.deliver(&smime_msg("d1"));
    md.deliver(&smime_msg("d2"));
    let name = unique_name(10);
    std::fs::write(sub.join("new").join(&name), smime_msg("d3")).unwrap();
    let mut c = smimed_as_with(&common::pki::pki().bob, None);
    c.env("XDG_STATE_HOME", common::state_home("twice"));
    c.args(["watch", "--once", "--recursive"])
        .arg(md.path())
        .arg(md.path())
        .arg(&sub);
    let (code, err) = run_once(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 processed"), "{err}");
    assert!(err.contains("3 archived"), "{err}");
    assert_eq!(processed_count(md.path()) + processed_count(&sub), 3);
}

#[test]
fn a_forged_field_or_smime_type_after_a_long_header_is_still_seen() {
    // The watcher reads up to 256 KiB of a header to classify a message; what lies beyond
    // (a forged status field, the Content-Type) is left to the pipeline, never skipped.
    let md = Md::new();
    let pad: String = (0..4000)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(70)))
        .collect();
    let with_pad = |m: Vec<u8>| [pad.as_bytes(), &m].concat();
    let forged = md.deliver(&with_pad(forged_msg("lf")));
    let smime = md.deliver(&with_pad(smime_msg("ls")));
    let plain_bytes = with_pad(plain_msg("lp"));
    let plain = md.deliver(&plain_bytes);
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 processed"), "{err}");
    let live = by_message_id(md.path());
    for (id, name) in [("lf", &forged), ("ls", &smime)] {
        assert!(!md.path().join("new").join(name).exists(), "{id} left");
        assert!(is_processed_name(&live[id][0].name), "{id}");
    }
    let text = String::from_utf8_lossy(&live["lf"][0].bytes).into_owned();
    assert!(
        !text.contains("signer=ceo@example.org"),
        "forged field kept"
    );
    let text = String::from_utf8_lossy(&live["ls"][0].bytes).into_owned();
    assert!(text.contains("encryption=decrypted"), "not decrypted");
    // a plain message with a long header is still left as it is
    assert_eq!(
        std::fs::read(md.path().join("new").join(&plain)).unwrap(),
        plain_bytes
    );
}

#[test]
fn a_long_header_over_max_size_is_not_read_whole() {
    // The same long header, in a file over --max-size: left as it is, like every message over
    // the limit whose first 256 KiB show nothing to remove. (That it is not read whole into
    // memory on the way is not observable here; the pipeline would leave it as it is too.)
    let md = Md::new();
    let pad: String = (0..4000)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(70)))
        .collect();
    let bytes = [pad.as_bytes(), &smime_msg("lm")].concat();
    let name = md.deliver(&bytes);
    let (code, err) = run_once(&mut watch_cmd(
        &["--once", "--max-size", "300000"],
        md.path(),
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 processed") && err.contains("1 skipped"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(md.path().join("new").join(&name)).unwrap(),
        bytes
    );
}

/// Entries in new/ that are not mail files: a folder, a dangling symlink and a FIFO are left
/// alone and the run ends with 0. They were deferred forever (75 on every run), and a FIFO
/// blocked a worker in open() for good, past SIGTERM.
#[test]
fn folders_fifos_and_dangling_symlinks_in_new_are_skipped() {
    let md = Md::new();
    let id = "real";
    md.deliver(&smime_msg(id));
    let new = md.path().join("new");
    std::fs::create_dir(new.join("1800000000.M1P1.dir")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", new.join("1800000000.M2P1.link")).unwrap();
    let fifo = new.join("1800000000.M3P1.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A Unix socket cannot even be opened (ENXIO): it was deferred on every run.
    let socket = new.join("1800000000.M4P1.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut child = spawn(watch_cmd(&["--once"], md.path(), None));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut done = false;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !done {
        signal(&child, "-KILL");
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(done, "still running after 30 s: {err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(processed_count(md.path()), 1, "{err}");
    assert!(new.join("1800000000.M1P1.dir").is_dir());
    assert!(std::fs::symlink_metadata(new.join("1800000000.M2P1.link")).is_ok());
    assert!(std::fs::symlink_metadata(&fifo).is_ok());
    assert!(std::fs::symlink_metadata(&socket).is_ok());
}

/// A message written in place (against the Maildir protocol) and read while its header is cut
/// short reads as ambiguous MIME, not as malformed CMS: it was given a failed copy and the
/// original, still being written, went to the archive. Now it is left for later (75).
#[test]
fn a_message_cut_inside_its_header_while_written_is_left_for_later() {
    let md = Md::new();
    let full = smime_msg("cut");
    let cut = &full[..full
        .windows(27)
        .position(|w| w == b"Content-Transfer-Encoding: ")
        .map(|i| i + 20)
        .unwrap_or(200)];
    let path = md.path().join("new").join("1800000000.M1P1.cut");
    std::fs::write(&path, cut).unwrap();
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 75, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), cut, "left as it is");
    assert_eq!(processed_count(md.path()), 0, "{err}");

    // A whole message just delivered that reads as ambiguous MIME (a sender can write one at
    // will) is no message being written: processed at once, its forged field removed.
    std::fs::remove_file(&path).unwrap();
    let mut whole = b"X-Smime-Status: encryption=decrypted; signature=valid\r\n\
Content-Type: text/plain\r\n"
        .to_vec();
    whole.extend_from_slice(&full);
    md.deliver(&whole);
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_eq!(processed_count(md.path()), 1, "{err}");
}

/// Every file in `folder`'s new/ and cur/ (name, bytes).
fn messages_in(folder: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(folder.join(sub)).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            v.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    v.sort();
    v
}

/// A processed copy a client files into another folder under a name of its own (neomutt's
/// save, an IMAP MOVE through Dovecot) is still the watcher's: its status fields stay. It was
/// taken for mail with forged status fields, rewritten to `signature=none`, and archived.
/// A plain message with forged fields next to it is still rewritten.
#[test]
fn a_copy_filed_under_another_name_keeps_its_status() {
    let md = Md::new();
    let work = md.subfolder(".Work");
    md.deliver(&smime_msg("filed"));
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    let copies = messages_in(md.path());
    assert_eq!(copies.len(), 1, "{err}");
    let (name, copy) = &copies[0];
    assert!(is_processed_name(name));
    assert!(String::from_utf8_lossy(copy).contains("encryption=decrypted"));
    // The client files it: a new file in .Work, named by the client, as neomutt's save
    // writes it into this CRLF message: a Content-Length field after the header's last field
    // and the blank line, both with LF; the original goes.
    let at = copy.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let body = &copy[at + 2..];
    let copy = [
        &copy[..at],
        format!("Content-Length: {}\n\n", body.len()).as_bytes(),
        body,
    ]
    .concat();
    let filed = format!("{}:2,S", unique_name(copy.len()));
    std::fs::write(work.join("tmp").join(&filed), &copy).unwrap();
    std::fs::rename(work.join("tmp").join(&filed), work.join("cur").join(&filed)).unwrap();
    std::fs::remove_file(md.path().join("new").join(name)).unwrap();
    let forged = deliver_into(&work, &forged_msg("forged"));
    let (code, err) = run_once(&mut watch_cmd(&["--once", "--recursive"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(": 1 processed"), "only the forged one: {err}");
    assert_eq!(
        std::fs::read(work.join("cur").join(&filed)).unwrap(),
        copy,
        "the filed copy is left as it is: {err}"
    );
    assert!(!work.join("new").join(&forged).exists());
    let archived = messages_in(&md.archive());
    assert_eq!(
        archived.len(),
        2,
        "the original and the forged one: {archived:?}"
    );
}

/// An encrypted message to bob (made by openssl) of about `kb` KB of text.
fn large_message(md: &Md, id: &str, kb: usize) -> String {
    let p = common::pki::pki();
    let line = "a long line of the large message, repeated to make it big.\r\n";
    let body = encrypt_to(
        &[&p.bob],
        &["-aes256", "-binary"],
        &sample_entity(&line.repeat(kb * 1024 / line.len())),
    );
    md.deliver(
        &[
            headers("Alice <alice@example.org>", "bob@example.org", id).as_bytes(),
            format!("Message-ID: <{id}@test>\r\n").as_bytes(),
            &body,
        ]
        .concat(),
    )
}

#[test]
fn a_copy_over_the_file_size_limit_is_deferred_not_a_killed_watcher() {
    let md = Md::new();
    // Decrypted, about 300 KB: over the 200 KB limit below; the small message's copy is under it.
    let big = large_message(&md, "big", 300);
    md.deliver(&smime_msg("small"));
    let (code, err) = run_once(&mut under_prlimit(
        &watch_cmd(&["--once"], md.path(), None),
        "--fsize=200000",
    ));
    assert_eq!(code, 75, "deferred, not killed by SIGXFSZ: {err}");
    assert!(err.contains("1 deferred"), "{err}");
    assert_eq!(processed_count(md.path()), 1, "the small message: {err}");
    assert!(md.path().join("new").join(&big).exists(), "left in place");
    assert!(
        leftover_tmp(md.path()).is_empty(),
        "no partial copy in tmp/"
    );
    // Without the limit the next run does it.
    let (code, err) = run_once(&mut watch_cmd(&["--once"], md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert_eq!(processed_count(md.path()), 2);
}

/// With the archive on another file system, an original over the limit (its copy, smaller,
/// fits) stays beside its copy until it can be archived; the other originals are archived.
#[test]
fn an_original_over_the_file_size_limit_of_another_file_systems_archive_waits() {
    let md = Md::new();
    let other =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) for a second file system");
    let arch = other.path().join("Originals");
    let big = large_message(&md, "big", 300);
    let big_len = std::fs::metadata(md.path().join("new").join(&big))
        .unwrap()
        .len();
    assert!(big_len > 360_000, "{big_len}");
    md.deliver(&smime_msg("small"));
    let args = ["--once", "--archive", arch.to_str().unwrap()];
    let (code, err) = run_once(&mut under_prlimit(
        &watch_cmd(&args, md.path(), None),
        "--fsize=350000",
    ));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("2 processed") && err.contains("1 deferred"),
        "{err}"
    );
    assert!(err.contains("1 archived"), "the small original: {err}");
    assert!(
        md.path().join("new").join(&big).exists(),
        "left beside its copy"
    );
    assert!(
        leftover_tmp(&arch).is_empty(),
        "no partial copy in the archive"
    );
    let (code, err) = run_once(&mut watch_cmd(&args, md.path(), None));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 processed") && err.contains("1 archived"),
        "{err}"
    );
    assert!(!md.path().join("new").join(&big).exists());
    assert!(arch.join("new").join(&big).exists());
    assert_eq!(processed_count(md.path()), 2);
    assert_eq!(std::fs::read_dir(arch.join("new")).unwrap().count(), 2);
}

/// SIGTERM while the passphrase command still runs (a pinentry waiting for someone away): the
/// watcher stops at once with 0 and the message waits for the next run. It waited for the
/// command, as long as that took (systemd would end it with SIGKILL).
#[test]
fn sigterm_while_the_passphrase_command_runs_stops_at_once() {
    let md = Md::new();
    let name = md.deliver(&smime_msg("waiting"));
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("asked");
    // A command that starts others (here a pipeline): they are stopped too, or they would
    // hold the test's stderr pipe open for a minute.
    let cmd = format!("touch {}; sleep 60 | cat; echo x", started.display());
    let mut child = spawn(watch_cmd(&[], md.path(), Some(&cmd)));
    assert!(
        wait_for(std::time::Duration::from_secs(20), || started.exists()),
        "the passphrase command never ran"
    );
    signal(&child, "-TERM");
    let stopped = wait_for(std::time::Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        signal(&child, "-KILL");
    }
    let t = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "what the passphrase command started outlived the watcher"
    );
    assert!(
        stopped,
        "still waiting for the passphrase command 5 s after SIGTERM"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.path().join("new").join(&name).exists(), "left for later");
    assert_eq!(processed_count(md.path()), 0);
}

/// `--archive` naming the watched Maildir itself (by its path, or another spelling of it) is a
/// usage error: the watcher took the archive out of what it watches and silently watched
/// nothing, exit 0.
#[test]
fn an_archive_that_is_the_watched_maildir_is_a_usage_error() {
    let md = Md::new();
    let name = md.deliver(&smime_msg("self"));
    let with_slash = format!("{}/", md.path().display());
    for archive in [md.path().to_str().unwrap(), with_slash.as_str(), ".", ".."] {
        let (code, err) = run_once(&mut watch_cmd(
            &["--once", "--archive", archive],
            md.path(),
            None,
        ));
        assert_eq!(code, 64, "{archive}: {err}");
    }
    assert!(md.path().join("new").join(&name).exists());
    assert!(!md.path().join("maildirfolder").exists());
}
