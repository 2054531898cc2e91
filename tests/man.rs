//! The man pages in man/ are generated from the clap definitions (src/cli.rs): this test fails
//! when they are out of date. Regenerate with `SMIMED_UPDATE_MAN=1 cargo test --test man`.

use std::path::PathBuf;

use clap::CommandFactory;

fn render(cmd: &clap::Command, name: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    let cmd = cmd.clone().name(leaked);
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .expect("render man page");
    out.push((format!("{name}.1"), buf));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render(sub, &format!("{name}-{}", sub.get_name()), out);
    }
}

#[test]
fn man_pages_are_current() {
    let mut pages = Vec::new();
    // Built: the shared (global) options appear on every subcommand's page, and each page's
    // synopsis names the command as it is typed (`smimed certs import`).
    let mut root = smimed::cli::Cli::command();
    root.build();
    render(&root, "smimed", &mut pages);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("SMIMED_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (file, content) in &pages {
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).expect("mkdir man");
            std::fs::write(&path, content).expect("write man page");
        } else if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            stale.push(file.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "man pages out of date: {stale:?}; run SMIMED_UPDATE_MAN=1 cargo test --test man"
    );
}
