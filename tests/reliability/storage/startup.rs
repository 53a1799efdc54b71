//! The vault file at startup: truncated, or on a read-only file system; and a daemon whose
//! log stream (stderr) was closed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use session_vault_proto::message::{Request, Response};

use super::*;

// ---- damaged or read-only vault files at startup ---------------------------------------------

/// Starts a daemon, stores a few sessions with peers, stops it, and folds the WAL into the
/// vault file, so that the file alone holds everything.
async fn vault_with_sessions(env: &Env) {
    let (d, c) = env.start_initialized(&[]).await;
    for s in 0..4 {
        let h = open_session(&c, &format!("s{s}"), false).await;
        let r = c
            .call(Request::CachePeers {
                handle: h,
                peers: batch(1 + s * BATCH).into(),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    }
    drop(c);
    assert!(d.terminate().success());
    // Closing the last connection checkpoints the WAL into the file and removes it.
    let db = rusqlite::Connection::open(env.vault_db()).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(db);
    assert!(!env.data_dir().join("vault.db-wal").exists());
    let _ = std::fs::remove_file(env.socket());
}

/// What a `vaultd` started on a given vault file did.
enum Start {
    /// It exited; its log.
    Refused(String),
    /// It became ready; it runs (killed on drop).
    Served(Daemonish),
}

/// A `vaultd` that should not have started; killed on drop.
struct Daemonish(Child);

impl Drop for Daemonish {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts vaultd on `env`'s vault file as it is, and waits until it exits or is ready
/// (`Daemon::start_failing` would wait forever on a daemon that starts).
fn start_or_refuse(env: &Env) -> Start {
    let mut child = env
        .vaultd_cmd()
        .env("VAULTD_LOG", "info")
        .arg(crate::util::ALLOW_WEAK_KDF)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultd");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a closed stderr is a case of
        // its own (`a_closed_log_stream_does_not_hang_requests`), not this test's.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("vaultd listening") => {
                return Start::Served(Daemonish(child));
            }
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return Start::Refused(log);
            }
            Err(e) => panic!("vaultd neither started nor exited: {e}; log: {log}"),
        }
    }
}

/// Asserts that `vaultd` refuses to start on the vault file as it is, with a message that
/// names `names`, and leaves the file unchanged with no journal beside it. Returns the
/// refusal's last line.
async fn assert_refused_unchanged(env: &Env, names: &Path, what: &str) -> String {
    let before = std::fs::read(env.vault_db()).unwrap();
    let log = match start_or_refuse(env) {
        Start::Refused(log) => log,
        Start::Served(d) => {
            let seen = tokio::time::timeout(Duration::from_secs(20), probe(env))
                .await
                .unwrap_or_else(|_| "no answer within 20 s".into());
            drop(d);
            let changed = std::fs::read(env.vault_db()).unwrap() != before;
            panic!("{what}: vaultd started and served ({seen}); vault file changed: {changed}");
        }
    };
    assert!(
        log.contains(names.to_str().unwrap()),
        "{what}: the refusal does not name {}: {log}",
        names.display()
    );
    assert_eq!(
        std::fs::read(env.vault_db()).unwrap(),
        before,
        "{what}: vault file changed"
    );
    for suffix in ["-wal", "-journal"] {
        let side = env.data_dir().join(format!("vault.db{suffix}"));
        assert!(!side.exists(), "{what}: {} created", side.display());
    }
    let _ = std::fs::remove_file(env.socket());
    log.lines().last().unwrap_or_default().to_owned()
}

/// What a daemon that should have refused serves: unlock, then each session's export.
async fn probe(env: &Env) -> String {
    let Ok(c) = Connection::connect(&env.socket(), "probe").await else {
        return "no connection".into();
    };
    let r = unlock_with(&c, PASS).await;
    if !matches!(r, Ok(Response::Ok)) {
        return format!("unlock: {r:?}");
    }
    let mut out = Vec::new();
    for s in 0..4 {
        let r = c
            .call(Request::ExportSession {
                name: format!("s{s}"),
            })
            .await;
        out.push(match r {
            Ok(Response::SessionData(d)) => format!("s{s}: {} peers", d.peers.len()),
            other => format!("s{s}: {:?}", code(&other)),
        });
    }
    out.join(", ")
}

/// Cuts the vault file at each of `cuts(len)` and asserts each time that startup refuses it.
async fn assert_cuts_refused(test: &str, cuts: impl Fn(usize) -> Vec<usize>) {
    let env = Env::new();
    vault_with_sessions(&env).await;
    let whole = std::fs::read(env.vault_db()).unwrap();
    let len = whole.len();
    let cuts = cuts(len);
    let mut refusals = Vec::new();
    for &cut in &cuts {
        std::fs::write(env.vault_db(), &whole[..cut]).unwrap();
        let what = format!("cut at {cut} of {len}");
        refusals.push(assert_refused_unchanged(&env, &env.vault_db(), &what).await);
    }
    figure(
        test,
        &format!(
            "vault file of {len} bytes cut at {cuts:?}: startup refused each time, file \
             unchanged; e.g. {:?}",
            refusals[refusals.len() / 2]
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_vault_file_is_refused_and_left_unchanged() {
    assert_cuts_refused("storage/truncated", |len| {
        // Not 0: an empty file is what vaultd's own first start leaves if it dies before the
        // schema is written, and is taken for a new vault (by design).
        vec![100, 4096, 4096 + 100, len / 2, len - 4096]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_file_missing_the_end_of_its_last_page_is_refused() {
    assert_cuts_refused("storage/truncated-last-page", |len| {
        vec![len - 100, len - 1]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_vault_directory_at_startup_is_refused_then_served_once_writable() {
    const TEST: &str = "storage/read-only-at-start";
    let env = Env::new();
    let Some(fs) = Tmpfs::mount(TEST, &env.data_dir(), 4096) else {
        return;
    };
    vault_with_sessions(&env).await;
    fs.remount("ro").expect("remount ro with no daemon running");
    let refusal = assert_refused_unchanged(&env, &env.data_dir(), "read-only directory").await;
    fs.remount("rw").expect("remount rw");
    let _d = env.start();
    let c = env.connect().await;
    unlock_proto(&c).await;
    for s in 0..4 {
        assert_has(
            &export(&c, &format!("s{s}")).await,
            &[1 + s * BATCH],
            "after the read-only start",
        );
    }
    figure(
        TEST,
        &format!("read-only data dir at startup refused ({refusal:?}); served once writable"),
    );
}

// ---- the log stream ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_stream_does_not_hang_requests() {
    let env = Env::new();
    let mut child = env
        .vaultd_cmd()
        .arg(crate::util::ALLOW_WEAK_KDF)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultd");
    {
        // Read up to readiness, then close the read end: the log's reader is gone (a
        // journald restart, `vaultd 2>&1 | head`, a closed terminal).
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("vaultd listening") {
                break;
            }
        }
    }
    let _daemon = Daemonish(child);
    let c = env.connect().await;
    let within = Duration::from_secs(5);
    let mut unanswered = Vec::new();
    let mut failed = Vec::new();
    let requests = [
        ("status", Request::Status),
        (
            "init",
            Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            },
        ),
        ("lock", Request::Lock),
        ("unlock", unlock_request(PASS)),
        (
            "open_session",
            Request::OpenSession {
                name: "bot".into(),
                exclusive: false,
                create_if_missing: true,
            },
        ),
        (
            "export_session",
            Request::ExportSession { name: "bot".into() },
        ),
    ];
    for (what, request) in requests {
        match tokio::time::timeout(within, c.request(request)).await {
            Err(_) => unanswered.push(what),
            Ok(Ok(Response::Error(e))) => failed.push(format!("{what}: {e}")),
            Ok(Err(e)) => failed.push(format!("{what}: {e}")),
            Ok(Ok(_)) => {}
        }
    }
    assert!(
        unanswered.is_empty(),
        "after vaultd's stderr was closed, no answer within {within:?} to {unanswered:?}"
    );
    // Answered is not enough: a log line that cannot be written must not fail the request
    // (the connection's panic guard would answer `internal`).
    assert!(
        failed.is_empty(),
        "after vaultd's stderr was closed, requests failed: {failed:?}"
    );
}
