//! Starting `vaultd`: one daemon per socket, stale sockets replaced, a damaged or foreign
//! vault file refused (and left as it was).

use session_vault_proto::message::{Request, Response, VaultState};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::util::*;

/// Asserts a failed start: non-zero exit, a message naming `words`, no panic.
#[track_caller]
fn assert_refused((status, log): (std::process::ExitStatus, String), words: &[&str]) {
    assert!(!status.success(), "vaultd started; log:\n{log}");
    for w in words {
        assert!(
            log.to_lowercase().contains(&w.to_lowercase()),
            "vaultd's message does not say {w:?}:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "vaultd panicked:\n{log}");
}

/// Starts a second vaultd on `env`'s socket and data dir while `first` runs; returns its
/// exit and log, after checking that the first was not disturbed.
async fn second_vaultd(env: &Env, first: &Daemon) -> (std::process::ExitStatus, String) {
    let c = env.connect().await;
    let h = open_session(&c, "bot", true).await;
    let inode = std::fs::metadata(env.socket()).unwrap().ino();

    let refused = Daemon::start_failing(env, &[]);

    // The first keeps serving: its socket untouched, old and new clients answered.
    assert_eq!(std::fs::metadata(env.socket()).unwrap().ino(), inode);
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(2))), "{r:?}");
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.pid, first.pid());
    assert_eq!(status.state, VaultState::Unlocked);
    refused
}

#[tokio::test]
async fn a_second_vaultd_on_the_same_socket_and_data_dir_fails_and_the_first_serves_on() {
    let env = Env::new();
    let (first, _c) = env.start_initialized(&[]).await;
    let (status, log) = second_vaultd(&env, &first).await;
    assert!(!status.success(), "second vaultd started; log:\n{log}");
}

#[tokio::test]
async fn a_second_vaultd_on_the_same_socket_and_data_dir_says_another_is_running() {
    let env = Env::new();
    let (first, _c) = env.start_initialized(&[]).await;
    let t = std::time::Instant::now();
    let refused = second_vaultd(&env, &first).await;
    assert_refused(refused, &["another vaultd is running"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "the refusal took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_second_vaultd_on_the_same_socket_with_another_data_dir_refuses_to_start() {
    let env = Env::new();
    let first = env.start();
    let other_data = env.path().join("data2");
    let refused = Daemon::start_failing_in(&env, &other_data, &[]);
    assert_refused(refused, &["another vaultd is running"]);
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.pid, first.pid());
}

#[tokio::test]
async fn a_stale_socket_of_a_killed_vaultd_is_replaced() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "bot", true).await;
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    drop(c);
    d.kill();
    let meta = std::fs::symlink_metadata(env.socket()).expect("socket file left by SIGKILL");
    assert!(meta.file_type().is_socket());

    let d = env.start();
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.pid, d.pid());
    assert_eq!(status.state, VaultState::Locked);
    assert!(
        d.log().contains("stale"),
        "replacing a stale socket is not logged:\n{}",
        d.log()
    );
    // The durable write made before the SIGKILL is there.
    let c = env.connect_unlocked().await;
    let r = c
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: true,
            create_if_missing: false,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Opened { home_dc: 5, .. })),
        "{r:?}"
    );
}

#[test]
fn a_file_that_is_not_a_socket_at_the_socket_path_is_left_alone() {
    let env = Env::new();
    std::fs::write(env.socket(), b"precious").unwrap();
    let refused = Daemon::start_failing(&env, &[]);
    assert_refused(refused, &["not a socket"]);
    assert_eq!(std::fs::read(env.socket()).unwrap(), b"precious");
}

/// Bytes that are no SQLite database, deterministic.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Starts vaultd on the vault file as the test left it; asserts a clear refusal and an
/// untouched file.
#[track_caller]
fn assert_vault_refused(env: &Env, words: &[&str]) {
    let before = std::fs::read(env.vault_db()).unwrap();
    let mode = std::fs::metadata(env.vault_db()).unwrap().mode();
    let refused = Daemon::start_failing(env, &[]);
    let path = env.vault_db();
    let mut words = words.to_vec();
    words.push(path.to_str().unwrap());
    assert_refused(refused, &words);
    assert_eq!(
        std::fs::read(env.vault_db()).unwrap(),
        before,
        "vault file changed"
    );
    assert_eq!(std::fs::metadata(env.vault_db()).unwrap().mode(), mode);
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = env.data_dir().join(format!("vault.db{suffix}"));
        assert!(!side.exists(), "{} created", side.display());
    }
    assert!(!env.socket().exists(), "a socket was left behind");
}

#[test]
fn a_garbage_vault_file_is_refused_and_left_unchanged() {
    let env = Env::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    std::fs::write(env.vault_db(), garbage(8192)).unwrap();
    assert_vault_refused(&env, &["not a session vault database"]);

    // Short garbage and a damaged SQLite header too.
    std::fs::write(env.vault_db(), b"junk").unwrap();
    assert_vault_refused(&env, &["not a session vault database"]);
    let mut header = b"SQLite format 3\0".to_vec();
    header.extend(garbage(4080));
    std::fs::write(env.vault_db(), header).unwrap();
    assert_vault_refused(&env, &["not a session vault database"]);
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_unchanged() {
    let env = Env::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    {
        // Say, a Telethon session file copied to the wrong place.
        let db = rusqlite::Connection::open(env.vault_db()).unwrap();
        db.execute_batch(
            "CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY, server_address TEXT, port INTEGER, auth_key BLOB);
             INSERT INTO sessions VALUES (2, '149.154.167.41', 443, x'00112233');",
        )
        .unwrap();
    }
    assert_vault_refused(&env, &["not a session vault database"]);
}

#[test]
fn a_vault_of_a_newer_format_is_refused_and_left_unchanged() {
    let env = Env::new();
    let d = env.start();
    drop(d);
    {
        let db = rusqlite::Connection::open(env.vault_db()).unwrap();
        db.execute_batch("PRAGMA user_version = 999;").unwrap();
    }
    let _ = std::fs::remove_file(env.socket());
    assert_vault_refused(&env, &["999"]);
}

#[test]
fn a_vault_path_that_is_a_directory_is_refused() {
    let env = Env::new();
    std::fs::create_dir_all(env.vault_db()).unwrap();
    let refused = Daemon::start_failing(&env, &[]);
    assert_refused(refused, &[env.vault_db().to_str().unwrap()]);
    assert!(env.vault_db().is_dir());
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn the_vault_files_are_private() {
    for umask in [0o022, 0o077, 0o000] {
        let env = Env::new();
        let _d = Daemon::start_at(&env, &env.socket(), Some(umask));
        let c = env.connect().await;
        env.init_proto(&c).await;
        open_session(&c, "bot", true).await;
        assert_eq!(
            mode(&env.data_dir()),
            0o700,
            "data directory, umask {umask:03o}"
        );
        for f in ["vault.db", "vault.db-wal"] {
            let p = env.data_dir().join(f);
            if f == "vault.db" || p.exists() {
                assert_eq!(mode(&p), 0o600, "{f}, umask {umask:03o}");
            }
        }
    }
}

#[test]
fn the_socket_is_0660_in_a_0750_directory_whatever_the_umask() {
    for umask in [0o022, 0o077] {
        let env = Env::new();
        // A socket in a directory that does not exist yet, as /run/session-vault at first boot.
        let dir = env.path().join("run");
        let socket = dir.join("v.sock");
        let _d = Daemon::start_at(&env, &socket, Some(umask));
        assert_eq!(mode(&dir), 0o750, "socket directory, umask {umask:03o}");
        assert_eq!(mode(&socket), 0o660, "socket, umask {umask:03o}");
    }
}
