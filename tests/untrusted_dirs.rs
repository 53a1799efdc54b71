//! Attacks through the data and socket directories (threat model: "a process that can write
//! the data or socket directory's parent"): a directory pre-made by another uid, one that
//! others may write, a symlinked directory, and symlinks planted where vaultd creates its lock
//! and its vault. vaultd must refuse to start, say which path is wrong and how to fix it,
//! create nothing, and leave every file a link points at as it was.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response, VaultState};

use crate::util::*;

/// How long a refused vaultd may take to exit (it exits at once; this only bounds a hang).
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Runs vaultd on `socket` and `data_dir` and expects it to refuse to start: it exits with
/// an error, without panicking, before it says it is listening. Returns its log.
#[track_caller]
fn refused(socket: &Path, data_dir: &Path) -> String {
    let mut child = vaultd_cmd(socket, data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultd");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let mut listening = false;
    // Until stderr closes (the process is gone) or the limit passes.
    while let Ok(line) = rx.recv_timeout(EXIT_LIMIT) {
        listening |= line.contains("vaultd listening");
        log.push_str(&line);
        log.push('\n');
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("wait vaultd");
    assert!(!listening, "vaultd started; log:\n{log}");
    assert!(!status.success(), "vaultd exited 0; log:\n{log}");
    assert!(!log.contains("panicked"), "vaultd panicked:\n{log}");
    log
}

/// Asserts that `log` says each of `words` (case-insensitive).
#[track_caller]
fn says(log: &str, words: &[&str]) {
    for w in words {
        assert!(
            log.to_lowercase().contains(&w.to_lowercase()),
            "vaultd's message does not say {w:?}:\n{log}"
        );
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {uid} {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The names inside `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A root-owned file in the temp dir that an attacker's link points at; returns its path.
fn precious(env: &Env, contents: &[u8]) -> PathBuf {
    let p = env.path().join("precious");
    std::fs::write(&p, contents).unwrap();
    chmod(&p, 0o644);
    p
}

#[track_caller]
fn assert_untouched(p: &Path, contents: &[u8]) {
    let meta = std::fs::symlink_metadata(p).unwrap();
    assert_eq!(
        std::fs::read(p).unwrap(),
        contents,
        "{} was written through the link",
        p.display()
    );
    assert_eq!(meta.mode() & 0o7777, 0o644, "{} mode changed", p.display());
    assert_eq!(meta.uid(), 0, "{} owner changed", p.display());
}

#[test]
fn a_data_dir_premade_by_another_uid_is_refused() {
    if !can_switch_uid() {
        eprintln!("SKIPPED: needs root (to chown)");
        return;
    }
    let env = Env::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    chmod(&env.data_dir(), 0o700);
    chown(&env.data_dir(), OTHER_UID);
    let log = refused(&env.socket(), &env.data_dir());
    says(
        &log,
        &[
            env.data_dir().to_str().unwrap(),
            &format!("owned by uid {OTHER_UID}"),
            "chown",
        ],
    );
    assert!(entries(&env.data_dir()).is_empty(), "vaultd created files");
    assert!(!env.socket().exists(), "vaultd made a socket");
}

#[test]
fn a_data_dir_others_may_write_is_refused() {
    for (mode, fix) in [
        (0o770, "chmod 0700"),
        (0o703, "chmod 0700"),
        (0o1777, "a directory of vaultd's own"),
    ] {
        let env = Env::new();
        std::fs::create_dir(env.data_dir()).unwrap();
        chmod(&env.data_dir(), mode);
        let log = refused(&env.socket(), &env.data_dir());
        says(&log, &[env.data_dir().to_str().unwrap(), fix]);
        assert!(
            entries(&env.data_dir()).is_empty(),
            "mode {mode:o}: vaultd created files"
        );
        assert_eq!(
            std::fs::metadata(env.data_dir()).unwrap().mode() & 0o7777,
            mode,
            "vaultd changed the mode it refused"
        );
    }
}

#[test]
fn a_symlinked_data_dir_is_refused() {
    let env = Env::new();
    let real = env.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    std::os::unix::fs::symlink(&real, env.data_dir()).unwrap();
    let log = refused(&env.socket(), &env.data_dir());
    says(&log, &[env.data_dir().to_str().unwrap(), "symbolic link"]);
    assert!(
        entries(&real).is_empty(),
        "vaultd created files through the link"
    );
}

#[test]
fn a_symlinked_lock_file_is_not_followed() {
    let env = Env::new();
    let target = precious(&env, b"root's file\n");
    std::fs::create_dir(env.data_dir()).unwrap();
    chmod(&env.data_dir(), 0o700);
    let lock = env.data_dir().join("vaultd.lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let log = refused(&env.socket(), &env.data_dir());
    says(&log, &[lock.to_str().unwrap(), "symbolic link"]);
    assert_untouched(&target, b"root's file\n");
    assert_eq!(entries(&env.data_dir()), ["vaultd.lock"]);
}

#[test]
fn a_symlinked_vault_file_is_not_followed() {
    for contents in [&b""[..], b"root's file\n"] {
        let env = Env::new();
        let target = precious(&env, contents);
        std::fs::create_dir(env.data_dir()).unwrap();
        chmod(&env.data_dir(), 0o700);
        std::os::unix::fs::symlink(&target, env.vault_db()).unwrap();
        let log = refused(&env.socket(), &env.data_dir());
        says(&log, &[env.vault_db().to_str().unwrap(), "symbolic link"]);
        assert_untouched(&target, contents);
        for side in ["vault.db-wal", "vault.db-journal", "vault.db-shm"] {
            assert!(
                !env.data_dir().join(side).exists(),
                "{side} created beside the link"
            );
        }
        assert!(!env.socket().exists(), "vaultd left a socket");
    }
}

#[test]
fn a_socket_dir_owned_by_another_uid_is_refused() {
    if !can_switch_uid() {
        eprintln!("SKIPPED: needs root (to chown)");
        return;
    }
    let env = Env::new();
    let run = env.path().join("run");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o755);
    chown(&run, OTHER_UID);
    let socket = run.join("v.sock");
    let log = refused(&socket, &env.data_dir());
    says(
        &log,
        &[
            run.to_str().unwrap(),
            &format!("owned by uid {OTHER_UID}"),
            "chown",
        ],
    );
    assert!(entries(&run).is_empty(), "vaultd made a socket there");
}

#[test]
fn a_socket_dir_others_may_write_is_refused() {
    // A shared directory such as /tmp (sticky, world-writable) among them: someone could
    // make the socket's name first and have clients (and `vaultctl unlock`) talk to them.
    for (mode, fix) in [
        (0o777, "chmod 0750"),
        (0o770, "chmod 0750"),
        (0o1777, "a directory of vaultd's own"),
    ] {
        let env = Env::new();
        let run = env.path().join("run");
        std::fs::create_dir(&run).unwrap();
        chmod(&run, mode);
        let socket = run.join("v.sock");
        let log = refused(&socket, &env.data_dir());
        says(&log, &[run.to_str().unwrap(), fix]);
        assert!(
            entries(&run).is_empty(),
            "mode {mode:o}: vaultd made a socket there"
        );
    }
}

#[test]
fn a_symlinked_socket_dir_is_refused() {
    let env = Env::new();
    let real = env.path().join("real-run");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o750);
    let run = env.path().join("run");
    std::os::unix::fs::symlink(&real, &run).unwrap();
    let log = refused(&run.join("v.sock"), &env.data_dir());
    says(&log, &[run.to_str().unwrap(), "symbolic link"]);
    assert!(
        entries(&real).is_empty(),
        "vaultd made a socket through the link"
    );
}

#[tokio::test]
async fn trusted_premade_dirs_and_a_stale_socket_are_used() {
    // The other side of the checks: directories of the daemon's own uid, closed to others
    // (as systemd's StateDirectory= and RuntimeDirectory= make them), are used as they are.
    let env = Env::new();
    let run = env.path().join("run");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o750);
    std::fs::create_dir(env.data_dir()).unwrap();
    chmod(&env.data_dir(), 0o750);
    let socket = run.join("v.sock");
    let d = Daemon::start_at(&env, &socket, None);
    d.kill();
    // The socket a SIGKILLed daemon left behind is replaced.
    let _d = Daemon::start_at(&env, &socket, None);
    let c = Connection::connect(&socket, "t").await.expect("connect");
    let r = c.call(Request::Status).await;
    assert!(
        matches!(&r, Ok(Response::Status(s)) if s.state == VaultState::Uninitialized),
        "{r:?}"
    );
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(
        std::fs::metadata(env.data_dir()).unwrap().mode() & 0o7777,
        0o750
    );
}

#[tokio::test]
async fn a_symlink_above_the_data_and_socket_dirs_is_fine() {
    // Only the directories themselves must not be links: a link higher up (as /var/run is
    // to /run) is resolved once, and the vault is opened by the resolved path.
    let env = Env::new();
    let real = env.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let above = env.path().join("above");
    std::os::unix::fs::symlink(&real, &above).unwrap();
    let socket = above.join("run").join("v.sock");
    let _d = Daemon::spawn_at(&socket, &above.join("data"));
    let c = Connection::connect(&socket, "t")
        .await
        .expect("connect through the linked parent");
    env.init_proto(&c).await;
    open_session(&c, "bot", true).await;
    assert!(real.join("data").join("vault.db").is_file());
    assert!(real.join("run").join("v.sock").exists());
}
