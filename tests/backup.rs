//! Backup, restore and verify (issue 18, item 1) against the real binaries: a backup taken
//! under a write load holds every write acknowledged before it began and restores; a
//! truncated, tampered, foreign or wrongly-unlocked backup is refused with the vault
//! untouched; `verify` counts records and fails on a tampered vault; only admins may do any
//! of it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use session_vault_client::Connection;
use session_vault_proto::backup::Blob;
use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKey, PeerKind};

use crate::util::child::{As, ChildClient};
use crate::util::{
    Env, PASS, as_other_uid, assert_success, can_switch_uid, err_code, executable_by_others,
    open_session, stderr, stdout,
};

fn peer(i: i64) -> Peer {
    let mut p = Peer::new(PeerKind::User, 1_000_000 + i);
    p.access_hash = Some(i * 7 + 1);
    p
}

/// Caches peers `from..to` in one request each.
async fn add_peers(c: &Connection, h: u32, from: i64, to: i64) {
    for i in from..to {
        let r = c
            .call(Request::CachePeers {
                handle: h,
                peers: vec![peer(i)].into(),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "cache_peers {i}: {r:?}");
    }
}

/// Asserts that session `name` holds peers `0..n` with their access hashes.
async fn assert_peers(env: &Env, name: &str, n: i64) {
    let c = env.connect().await;
    let h = open_session(&c, name, false).await;
    for i in 0..n {
        let key = PeerKey {
            kind: PeerKind::User,
            id: 1_000_000 + i,
        };
        match c
            .call(Request::GetPeer {
                handle: h,
                query: PeerQuery::Key(key),
            })
            .await
        {
            Ok(Response::Peer(Some(p))) => assert_eq!(p.access_hash, Some(i * 7 + 1), "peer {i}"),
            other => panic!("peer {i} of {name}: {other:?}"),
        }
    }
}

fn restore(env: &Env, file: &Path, pass: &str) -> Output {
    let pf = env.secret_file("restore-pass", pass);
    env.ctl(&[
        "restore",
        file.to_str().unwrap(),
        "--passphrase-file",
        pf.to_str().unwrap(),
    ])
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// Files a backup or restore leaves in the data dir: the vault kept aside, transfer files.
fn extra_files(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("vault.db.before-restore")
                || n.starts_with(".backup-")
                || n.starts_with(".restore-")
        })
        .collect();
    names.sort();
    names
}

/// Flips one bit in the sealed value of the first row of `table`, through SQLite (so the
/// file stays a well-formed database: only the AEAD can tell).
fn tamper_record(db: &Path, table: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (rowid, mut v): (i64, Vec<u8>) = conn
        .query_row(
            &format!("SELECT rowid, v FROM {table} ORDER BY rowid LIMIT 1"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = v.len() / 2;
    v[at] ^= 0x01;
    conn.execute(
        &format!("UPDATE {table} SET v = ?1 WHERE rowid = ?2"),
        rusqlite::params![v, rowid],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_keeps_every_acknowledged_write_and_restores() {
    let env = Env::new();
    let _d = env.start();
    env.init();
    let c = env.connect().await;
    let h = open_session(&c, "bot", true).await;
    add_peers(&c, h, 0, 200).await;

    // A bot writing peers as fast as it can, one request each, for the whole backup.
    let acked = Arc::new(AtomicI64::new(200));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 200;
            while !stop.load(Ordering::SeqCst) {
                add_peers(&c, h, i, i + 1).await;
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
            c
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = acked.load(Ordering::SeqCst);
    let file = env.path().join("nightly.db");
    let out = {
        let cmd = env.ctl_cmd(&["backup", file.to_str().unwrap()]);
        tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            cmd.stdin(Stdio::null()).output().unwrap()
        })
        .await
        .unwrap()
    };
    assert_success(&out, "vaultctl backup under load");
    stop.store(true, Ordering::SeqCst);
    let c = writer.await.unwrap();
    let after = acked.load(Ordering::SeqCst);
    assert!(after > before, "the writer kept writing during the backup");
    assert!(
        stdout(&out).contains("Backed up the vault to"),
        "{}",
        stdout(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the backup file is private");
    // An existing file is not replaced without --force.
    let again = env.ctl(&["backup", file.to_str().unwrap()]);
    assert_exit(&again, 2, "backup over an existing file");
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    // Changes after the backup, then a restore: back to the backup.
    add_peers(&c, h, 100_000, 100_010).await;
    drop(c);
    // A bot that keeps its session open across the restore.
    let bot = env.connect().await;
    let bot_h = open_session(&bot, "bot", true).await;
    assert_success(&env.ctl(&["lock"]), "lock");
    let out = restore(&env, &file, PASS);
    assert_success(&out, "vaultctl restore");
    let text = stdout(&out);
    assert!(text.contains("Restored the vault from"), "{text}");
    assert!(text.contains("sessions 1"), "{text}");
    assert!(text.contains("before-restore"), "{text}");
    let kept = extra_files(&env);
    assert_eq!(kept.len(), 1, "the old vault is kept aside: {kept:?}");
    assert!(kept[0].starts_with("vault.db.before-restore-"), "{kept:?}");

    // Its handle was ended: session ids of the old vault mean nothing in the restored one.
    let r = bot.call(Request::GetHomeDc { handle: bot_h }).await;
    match r {
        Err(session_vault_client::ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::NoSuchSession, "{e:?}");
            assert!(e.message.contains("restored"), "{e:?}");
        }
        other => panic!("a handle across a restore: {other:?}"),
    }
    let status = env.ctl(&["status", "--json"]);
    assert!(stdout(&status).contains("locked"), "{}", stdout(&status));
    assert_success(&env.unlock(PASS), "unlock the restored vault");
    assert_peers(&env, "bot", before).await;
    // Nothing written after the backup ended is there.
    let c = env.connect().await;
    let h = open_session(&c, "bot", false).await;
    let r = c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Key(PeerKey {
                kind: PeerKind::User,
                id: 1_000_000 + 100_000,
            }),
        })
        .await;
    assert!(matches!(r, Ok(Response::Peer(None))), "{r:?}");
    let v = env.ctl(&["verify"]);
    assert_success(&v, "verify the restored vault");
}

#[tokio::test]
async fn restore_refuses_truncated_tampered_foreign_and_wrongly_unlocked_backups() {
    let env = Env::new();
    let _d = env.start();
    env.init();
    let c = env.connect().await;
    let h = open_session(&c, "keep", true).await;
    add_peers(&c, h, 0, 300).await;
    drop(c);
    assert_success(&env.ctl(&["lock"]), "lock");
    // A backup of a locked vault works: it is ciphertext.
    let good = env.path().join("good.db");
    assert_success(
        &env.ctl(&["backup", good.to_str().unwrap()]),
        "backup while locked",
    );
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() >= 8192, "{} bytes", bytes.len());

    let bad = |name: &str, content: &[u8]| -> PathBuf {
        let p = env.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let mid_page = bad("cut.db", &bytes[..bytes.len() - 1000]);
    let whole_pages = bad("half.db", &bytes[..(bytes.len() / 2) & !4095]);
    let foreign = bad("foreign.db", b"not a vault at all, just some bytes");
    let tampered = bad("tampered.db", &bytes);
    tamper_record(&tampered, "peers");
    let tampered_dc = bad("tampered-session.db", &bytes);
    {
        // The session record itself.
        let conn = rusqlite::Connection::open(&tampered_dc).unwrap();
        let mut v: Vec<u8> = conn
            .query_row("SELECT record FROM sessions", [], |r| r.get(0))
            .unwrap();
        let at = v.len() - 3;
        v[at] ^= 0x80;
        conn.execute("UPDATE sessions SET record = ?1", [v])
            .unwrap();
    }

    for (file, pass, expect) in [
        (&mid_page, PASS, "truncated"),
        (&whole_pages, PASS, ""),
        (&foreign, PASS, "not a"),
        (&tampered, PASS, "tampered"),
        (&tampered_dc, PASS, "tampered"),
        (&good, "a wrong passphrase entirely", "passphrase"),
    ] {
        let out = restore(&env, file, pass);
        assert_exit(&out, 1, &format!("restore {}", file.display()));
        assert!(
            stderr(&out).to_lowercase().contains(expect),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(
            extra_files(&env).is_empty(),
            "nothing left behind or moved aside after {}: {:?}",
            file.display(),
            extra_files(&env)
        );
    }
    // The throttle delays the next passphrase check after the wrong one.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_success(&env.unlock(PASS), "the vault still opens");
    assert_peers(&env, "keep", 300).await;
    // Restoring over an unlocked vault is refused.
    let out = restore(&env, &good, PASS);
    assert_exit(&out, 1, "restore while unlocked");
    assert!(stderr(&out).contains("lock it first"), "{}", stderr(&out));
}

#[tokio::test]
async fn verify_counts_records_and_fails_on_a_tampered_vault() {
    let env = Env::new();
    let d = env.start();
    env.init();
    let c = env.connect().await;
    let h = open_session(&c, "a", true).await;
    add_peers(&c, h, 0, 40).await;
    let h2 = open_session(&c, "b", true).await;
    add_peers(&c, h2, 0, 2).await;
    drop(c);
    let out = env.ctl(&["verify", "--json"]);
    assert_success(&out, "verify");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"], 2, "{report}");
    assert_eq!(report["peers"], 42, "{report}");
    assert_eq!(report["keyslots"], 1, "{report}");
    assert!(report["dc_options"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        report["records"].as_u64().unwrap() >= 45,
        "every record counted: {report}"
    );
    // Nightly style: into a directory, keeping the newest one.
    let dir = env.path().join("nightly");
    for _ in 0..2 {
        let out = env.ctl(&["backup", "--dir", dir.to_str().unwrap(), "--keep", "1"]);
        assert_success(&out, "backup --dir --keep");
    }
    let kept: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let text = env.ctl(&["verify"]);
    assert!(
        stdout(&text).contains("Every record authenticated"),
        "{}",
        stdout(&text)
    );

    // Locked: verify needs the keys.
    assert_success(&env.ctl(&["lock"]), "lock");
    let out = env.ctl(&["verify"]);
    assert_exit(&out, 1, "verify while locked");
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));

    d.terminate();
    tamper_record(&env.vault_db(), "peers");
    let _d = env.start();
    assert_success(&env.unlock(PASS), "unlock the tampered vault");
    let out = env.ctl(&["verify"]);
    assert_exit(&out, 1, "verify of a tampered vault");
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("peers"), "{}", stdout(&out));
    assert!(stderr(&out).contains("tampered"), "{}", stderr(&out));
}

#[tokio::test]
async fn backup_restore_and_verify_are_admin_only() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let _d = env.start();
    env.init();
    env.open_socket_to_everyone();
    let exe = executable_by_others(&env, &crate::util::vaultctl_bin());
    for args in [&["verify"][..], &["backup", "/tmp/sv-never-written.db"]] {
        let out = as_other_uid(&exe)
            .env_clear()
            .arg("--socket")
            .arg(env.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_exit(&out, 1, &format!("{args:?} as another uid"));
        assert!(stderr(&out).contains("not an admin"), "{}", stderr(&out));
    }
    assert!(!Path::new("/tmp/sv-never-written.db").exists());
    let child = ChildClient::spawn(
        &env,
        As::Other,
        &[
            Request::BackupBegin,
            Request::BackupChunk { id: 1, offset: 0 },
            Request::RestoreBegin {
                size: 1,
                sha256: Blob(vec![0; 32]),
            },
            Request::TransferEnd { id: 1 },
            Request::Verify,
        ],
        false,
    );
    for _ in 0..5 {
        match child.response() {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::PermissionDenied, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    child.finish();
    // And the admin gets what the others did not.
    let c = env.connect().await;
    assert!(matches!(
        c.call(Request::Verify).await,
        Ok(Response::Verified(_))
    ));
    let code = err_code(c.call(Request::BackupChunk { id: 99, offset: 0 }).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
}
