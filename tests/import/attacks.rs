//! The author of a session file attacks `vaultctl import` run by root (security issue 13,
//! item 5): a symbolic link or a hard link to someone else's session, a path swapped between
//! the parse and the shred, a directory, FIFO or device as the source, a file owned by
//! another uid. Each must leave the victim's file as it was, and no session of the victim's
//! in the vault.
//!
//! The attacker is [`OTHER_UID`] (its commands run through `setpriv`) and owns the directory
//! `bot/`; the victim is another uid whose session file sits in its own 0700 directory. The
//! tests need root and `setpriv`, and are skipped (with a message) without them.

use std::os::unix::fs::{PermissionsExt, chown, lchown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{fixture, proxy, session_names};
use crate::util::{Daemon, Env, OTHER_UID, as_other_uid, can_switch_uid, stderr, stdout};

/// How long one `vaultctl import` may take before the test calls it hung.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// The victim's uid: any uid other than root's and the attacker's.
fn victim_uid() -> u32 {
    if OTHER_UID == 4242 { 4343 } else { 4242 }
}

/// A temp dir with the attacker's directory and the victim's session file.
struct Scene {
    env: Env,
    /// `bot/`, owned by the attacker.
    bot: PathBuf,
    /// The victim's session file (0600, in a 0700 directory of the victim's).
    victim: PathBuf,
    /// Its content, to prove it unchanged.
    victim_bytes: Vec<u8>,
}

impl Scene {
    fn new() -> Scene {
        let env = Env::new();
        set_mode(env.path(), 0o755);
        let bot = env.path().join("bot");
        std::fs::create_dir(&bot).unwrap();
        chown(&bot, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        set_mode(&bot, 0o755);
        let victim_dir = env.path().join("victim");
        std::fs::create_dir(&victim_dir).unwrap();
        let victim = victim_dir.join("victim.session");
        std::fs::copy(fixture("telethon-v8.session"), &victim).unwrap();
        for p in [&victim_dir, &victim] {
            chown(p, Some(victim_uid()), Some(victim_uid())).unwrap();
        }
        set_mode(&victim_dir, 0o700);
        set_mode(&victim, 0o600);
        let victim_bytes = std::fs::read(&victim).unwrap();
        Scene {
            env,
            bot,
            victim,
            victim_bytes,
        }
    }

    /// Runs `script` with `sh -c` as the attacker, in `bot/`; asserts it succeeded.
    fn as_attacker(&self, script: &str) {
        let out = as_other_uid(Path::new("/bin/sh"))
            .arg("-c")
            .arg(script)
            .current_dir(&self.bot)
            .output()
            .expect("run sh as the attacker");
        assert!(out.status.success(), "{script}: {out:?}");
    }

    /// Asserts the victim's file is there with its content, and that it is not in the vault.
    async fn assert_victim_untouched(&self, socket: &Path) {
        assert_eq!(
            std::fs::read(&self.victim).expect("the victim's file is still there"),
            self.victim_bytes,
            "the victim's session file was changed"
        );
        let c = session_vault_client::Connection::connect(socket, "attack-test")
            .await
            .expect("connect");
        let names = session_names(&c).await;
        assert!(
            !names.iter().any(|n| n == "bot"),
            "the victim's session was imported: {names:?}"
        );
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `vaultctl import SOURCE --name bot EXTRA…` (as root), with `vars` set; fails the test if
/// it does not end within [`HANG_LIMIT`].
fn import(env: &Env, source: &Path, extra: &[&str], vars: &[(&str, String)]) -> Output {
    let mut args = vec!["import", source.to_str().unwrap(), "--name", "bot"];
    args.extend_from_slice(extra);
    let mut cmd: Command = env.ctl_cmd(&args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vaultctl");
    let start = Instant::now();
    while child.try_wait().expect("wait vaultctl").is_none() {
        if start.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("vaultctl output");
            panic!("vaultctl import {source:?} hung; stderr: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("vaultctl output")
}

/// Asserts `out` is a refusal (exit 2) whose message holds every one of `words`.
#[track_caller]
fn assert_refused(out: &Output, words: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "not refused: {err}{}",
        stdout(out)
    );
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

macro_rules! needs_root {
    () => {
        if !can_switch_uid() {
            eprintln!("skipped: needs root and setpriv");
            return;
        }
    };
}

#[tokio::test]
async fn a_symlink_to_another_users_session_is_refused() {
    needs_root!();
    let s = Scene::new();
    let _d = s.env.start();
    s.env.init();
    s.as_attacker("ln -s ../victim/victim.session bot.session");
    let link = s.bot.join("bot.session");

    for extra in [&["--shred"][..], &[][..]] {
        let out = import(&s.env, &link, extra, &[]);
        assert_refused(&out, &["bot.session", "symbolic link", "victim.session"]);
        s.assert_victim_untouched(&s.env.socket()).await;
    }
    // A symbolic link to a directory is followed (it may be how the system is laid out),
    // but it cannot lead to another user's file: the owner is checked on the file opened.
    s.as_attacker("ln -s ../victim dir");
    let out = import(&s.env, &s.bot.join("dir/victim.session"), &["--shred"], &[]);
    assert_refused(&out, &["victim.session", &format!("uid {}", victim_uid())]);
    s.assert_victim_untouched(&s.env.socket()).await;
}

#[tokio::test]
async fn a_hard_link_is_never_shredded() {
    needs_root!();
    let s = Scene::new();
    let _d = s.env.start();
    s.env.init();
    // Root's own session file, hard-linked into the attacker's directory (as an attacker can
    // where fs.protected_hardlinks is 0, or for any file it may write): a path the attacker
    // controls now names root's file, and the owner check alone would let it through.
    let root_dir = s.env.path().join("root");
    std::fs::create_dir(&root_dir).unwrap();
    set_mode(&root_dir, 0o700);
    let own = root_dir.join("own.session");
    std::fs::copy(fixture("telethon-v8.session"), &own).unwrap();
    let before = std::fs::read(&own).unwrap();
    let link = s.bot.join("bot.session");
    std::fs::hard_link(&own, &link).unwrap();

    for extra in [&["--shred"][..], &[][..]] {
        let out = import(&s.env, &link, extra, &[]);
        assert_refused(&out, &["bot.session", "2 hard links"]);
        assert_eq!(
            std::fs::read(&own).unwrap(),
            before,
            "root's file was changed"
        );
    }
    s.assert_victim_untouched(&s.env.socket()).await;
}

#[tokio::test]
async fn a_path_swapped_between_parse_and_shred_is_left_alone() {
    needs_root!();
    for (what, swap) in [
        (
            "a symlink to the victim's file",
            "mv bot.session kept.session && ln -s ../victim/victim.session bot.session",
        ),
        // The old shred opened the path for writing again: on a FIFO it waited forever.
        (
            "a FIFO",
            "mv bot.session kept.session && mkfifo bot.session",
        ),
    ] {
        let s = Scene::new();
        // vaultctl talks to vaultd through a proxy that lets the attacker swap the path
        // right after the daemon committed the import, before vaultctl shreds.
        let real = s.env.path().join("real.sock");
        let _d = Daemon::start_at(&s.env, &real, None);
        let c = session_vault_client::Connection::connect(&real, "attack-test")
            .await
            .expect("connect");
        s.env.init_proto(&c).await;
        // A session file of root's, copied by the admin into the bot's directory.
        let source = s.bot.join("bot.session");
        std::fs::copy(fixture("pyrogram.session"), &source).unwrap();
        let source_bytes = std::fs::read(&source).unwrap();
        let script = swap.to_owned();
        let bot = s.bot.clone();
        proxy::start(&s.env.socket(), real.clone(), move || {
            let out = as_other_uid(Path::new("/bin/sh"))
                .arg("-c")
                .arg(&script)
                .current_dir(&bot)
                .output()
                .expect("run the swap");
            assert!(out.status.success(), "swap: {out:?}");
        });

        let out = import(&s.env, &source, &["--shred"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("bot.session"), "{what}: {err}");
        assert!(
            err.contains("changed between open and shred"),
            "{what}: {err}"
        );
        // The import itself went through; the victim's file and the swapped-in entry are
        // untouched, and so is the original (nothing was overwritten once the path changed).
        let names = session_names(&c).await;
        assert!(names.iter().any(|n| n == "bot"), "{what}: {names:?}");
        assert_eq!(
            std::fs::read(&s.victim).unwrap(),
            s.victim_bytes,
            "{what}: the victim's file was changed"
        );
        assert!(
            std::fs::symlink_metadata(&source).is_ok(),
            "{what}: the swapped-in entry was removed"
        );
        assert_eq!(
            std::fs::read(s.bot.join("kept.session")).unwrap(),
            source_bytes,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_directory_fifo_or_device_is_refused_without_hanging() {
    needs_root!();
    let s = Scene::new();
    let _d = s.env.start();
    s.env.init();
    s.as_attacker("mkdir dir.session && mkfifo fifo.session");
    for (path, kind) in [
        (s.bot.join("dir.session"), "a directory"),
        (s.bot.join("fifo.session"), "a FIFO"),
        (PathBuf::from("/dev/null"), "a character device"),
    ] {
        for extra in [&["--shred"][..], &[][..]] {
            let out = import(&s.env, &path, extra, &[]);
            assert_refused(&out, &["not a regular file", kind]);
        }
    }
    assert!(std::fs::metadata("/dev/null").is_ok());
    s.assert_victim_untouched(&s.env.socket()).await;
}

#[tokio::test]
async fn another_users_file_is_read_only_when_its_owner_is_named() {
    needs_root!();
    let s = Scene::new();
    let _d = s.env.start();
    s.env.init();
    // The bot's own session file, in its own directory.
    let file = s.bot.join("bot.session");
    std::fs::copy(fixture("telethon-v8.session"), &file).unwrap();
    chown(&file, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    set_mode(&file, 0o600);

    // Root does not read a file of another uid on its own: the owner controls the path.
    for extra in [&["--shred"][..], &[][..]] {
        let out = import(&s.env, &file, extra, &[]);
        assert_refused(
            &out,
            &[
                "bot.session",
                &format!("owned by uid {OTHER_UID}"),
                &format!("--source-owner {OTHER_UID}"),
            ],
        );
        assert!(file.exists());
    }
    s.assert_victim_untouched(&s.env.socket()).await;
    // Naming the owner does not open the way to a third user's file.
    s.as_attacker("ln -s ../victim d");
    let other = s.bot.join("d/victim.session");
    let uid = OTHER_UID.to_string();
    let out = import(&s.env, &other, &["--source-owner", &uid, "--shred"], &[]);
    assert_refused(&out, &[&format!("owned by uid {}", victim_uid())]);
    s.assert_victim_untouched(&s.env.socket()).await;
    // Nor does running under sudo as the attacker's uid, for a file of someone else's.
    let out = import(&s.env, &other, &[], &[("SUDO_UID", uid.clone())]);
    assert_refused(&out, &[&format!("owned by uid {}", victim_uid())]);

    // Named, the bot's file is imported, and shredded on request.
    let out = import(&s.env, &file, &["--source-owner", &uid, "--shred"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Shredded"), "{}", stdout(&out));
    assert!(!file.exists());
    // Run by that uid through sudo, a file of its own needs no flag.
    let again = s.bot.join("again.session");
    std::fs::copy(fixture("telethon-v8.session"), &again).unwrap();
    chown(&again, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let out = import(&s.env, &again, &["--replace"], &[("SUDO_UID", uid.clone())]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A symbolic link made by root is refused too: no link is followed, whoever made it.
    let link = s.env.path().join("root-link.session");
    std::os::unix::fs::symlink(&again, &link).unwrap();
    lchown(&link, Some(0), Some(0)).unwrap();
    let out = import(&s.env, &link, &["--replace"], &[]);
    assert_refused(&out, &["symbolic link"]);
}
