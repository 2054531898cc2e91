//! A real client: neomutt in batch mode sends through `smimed sendmail` to a recording MTA; what
//! the MTA gets decrypts and verifies with openssl, and the Bcc recipient's copy is separate.

mod common;

use common::outbound::*;
use common::pki::{pki, P12_PASS};
use common::{path_str, run_with_stdin};

#[test]
fn neomutt_batch_send_is_signed_encrypted_and_bcc_split() {
    let p = pki();
    let env = Env::new();
    env.import(&[&p.bob.cert_path, &p.carol.cert_path, &p.intermediate_path]);
    let home = env.dir.path().join("home");
    let mail = env.dir.path().join("Mail");
    for d in ["Sent/cur", "Sent/new", "Sent/tmp"] {
        std::fs::create_dir_all(mail.join(d)).expect("maildir");
    }
    std::fs::create_dir_all(&home).expect("home");
    let sendmail = format!(
        "{} sendmail --trust {} --certs {} --key {} --mta {} --encrypt always -oem -oi",
        path_str(&common::smimed_bin()),
        path_str(&p.root_path),
        path_str(&env.certs),
        path_str(&p.alice.p12_path),
        path_str(&env.mta)
    );
    let muttrc = env.write(
        "muttrc",
        format!(
            "set sendmail=\"{sendmail}\"\nset mbox_type=Maildir\nset folder={}\n\
             set record=+Sent\nset from=\"Alice <alice@example.org>\"\nset use_from=yes\n\
             set charset=utf-8\nset send_charset=utf-8\n",
            path_str(&mail)
        )
        .as_bytes(),
    );
    let mut c = std::process::Command::new("neomutt");
    c.env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .env("SMIMED_PASSPHRASE", P12_PASS)
        .args([
            "-n",
            "-F",
            path_str(&muttrc),
            "-s",
            "neomutt subject",
            "-b",
            "carol@example.org",
            "--",
            "bob@example.org",
        ]);
    let out = run_with_stdin(&mut c, "Gr\u{fc}\u{df}e aus neomutt.\n".as_bytes());
    assert_ok(&out);
    let rec = env.take_recorded();
    assert_eq!(rec.len(), 2, "bob's copy and carol's (Bcc) copy");
    assert_eq!(rec[0].args, ["-oem", "-oi", "--", "bob@example.org"]);
    assert_eq!(rec[1].args, ["-oem", "-oi", "--", "carol@example.org"]);
    let users = [&p.alice, &p.bob, &p.carol];
    assert_eq!(recipient_names(&rec[0].message, &users), ["alice", "bob"]);
    assert_eq!(recipient_names(&rec[1].message, &users), ["alice", "carol"]);
    for (r, u) in [(&rec[0], &p.bob), (&rec[1], &p.carol)] {
        let text = r.text();
        assert!(text.contains("Subject: neomutt subject"), "{text}");
        assert!(!text.to_ascii_lowercase().contains("\nbcc:"), "{text}");
        let inner = openssl_decrypt(u, &r.message).expect("decrypts");
        let content = String::from_utf8_lossy(&openssl_verify(&inner)).into_owned();
        assert!(
            content.contains("Gr=C3=BC=C3=9Fe aus neomutt."),
            "{content}"
        );
    }
}
