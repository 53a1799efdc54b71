//! Storage faults: a full disk, a file system that turns read-only under the daemon, a
//! read-only vault directory at startup, a truncated vault file.
//!
//! The data directory lives on a small tmpfs mounted for the test ([`Tmpfs`], unmounted on
//! drop); without the right to mount (not root) the tests print why and pass. A read-only
//! remount under a running daemon is refused by the kernel (`mount point is busy`: vaultd
//! holds its files open for writing), so a file system that turns read-only under it — what
//! the kernel does to ext4 after I/O errors, `errors=remount-ro` — is injected instead with
//! a small `LD_PRELOAD` shim ([`SHIM_C`], built with `cc` at test time) that fails writes
//! and syncs of files under the data directory with `EROFS` while a flag file exists.
//!
//! Garbage vault files, foreign SQLite files and newer formats at startup are covered by
//! `tests/startup.rs` (`a_garbage_vault_file_is_refused_and_left_unchanged` and its
//! neighbours); this file adds truncation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKey, PeerKind, SessionData};

use super::{Tmpfs, figure};
use crate::util::*;

/// Peers per filling batch, and the length of each one's name (padding the rows).
const BATCH: i64 = 100;
const NAME_LEN: usize = 200;

fn peer(id: i64) -> Peer {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(id.wrapping_mul(0x9e37_79b9));
    p.name = Some(format!("{id:0>width$}", width = NAME_LEN));
    p
}

fn batch(first: i64) -> Vec<Peer> {
    (first..first + BATCH).map(peer).collect()
}

fn code(r: &Result<Response, ClientError>) -> Option<ErrorCode> {
    match r {
        Err(ClientError::Daemon(e)) => Some(e.code.clone()),
        _ => None,
    }
}

async fn export(c: &Connection, name: &str) -> SessionData {
    match c
        .call(Request::ExportSession {
            name: name.to_owned(),
        })
        .await
    {
        Ok(Response::SessionData(d)) => d,
        other => panic!("export {name}: {other:?}"),
    }
}

/// Asserts that every peer of the batches starting at `firsts` is in `data`.
fn assert_has_batches(data: &SessionData, firsts: &[i64], when: &str) {
    for &first in firsts {
        for id in [first, first + BATCH - 1] {
            assert!(
                data.peers.iter().any(|p| *p == peer(id)),
                "{when}: committed peer {id} lost"
            );
        }
    }
}

/// Writes batches of peers, each made durable by a home DC write, halving the batch each
/// time a write fails, until a write of a single peer fails: the disk is then full even for
/// small transactions. Returns the committed peer ids, and every error code seen.
async fn fill(c: &Connection, h: u32) -> (Vec<i64>, Vec<ErrorCode>) {
    let mut committed = Vec::new();
    let mut errors = Vec::new();
    let mut size = BATCH;
    let mut next = 1i64;
    for i in 0..100_000 {
        let ids: Vec<i64> = (next..next + size).collect();
        next += size;
        let r = c
            .call(Request::CachePeers {
                handle: h,
                peers: ids.iter().map(|&id| peer(id)).collect(),
            })
            .await;
        let r = match r {
            Ok(Response::Ok) => {
                c.call(Request::SetHomeDc {
                    handle: h,
                    dc_id: i,
                })
                .await
            }
            other => other,
        };
        match r {
            Ok(Response::Ok) => committed.extend(ids),
            other => {
                errors.push(code(&other).unwrap_or_else(|| panic!("write: {other:?}")));
                if size == 1 {
                    return (committed, errors);
                }
                size /= 2;
            }
        }
    }
    panic!("the disk never filled");
}

/// Asserts that every peer of `ids` is in `data`.
fn assert_has(data: &SessionData, ids: &[i64], when: &str) {
    for &id in ids {
        assert!(
            data.peers.iter().any(|p| *p == peer(id)),
            "{when}: committed peer {id} lost"
        );
    }
}

async fn unlock(c: &Connection) {
    let r = c
        .call(Request::Unlock {
            passphrase: passphrase(PASS),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "unlock: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_with_storage_keeps_reads_and_recovers() {
    const TEST: &str = "storage/disk-full";
    let env = Env::new();
    let Some(_fs) = Tmpfs::mount(TEST, &env.data_dir(), 1024) else {
        return;
    };
    // Room to give back later, on the same file system.
    let filler = env.data_dir().join("filler");
    std::fs::write(&filler, vec![0x5au8; 256 * 1024]).unwrap();
    let (d, c) = env.start_initialized(&["--flush-interval-ms", "20"]).await;
    let h = open_session(&c, "bot", true).await;

    let (committed, errors) = fill(&c, h).await;
    assert!(
        errors.iter().all(|e| *e == ErrorCode::Storage),
        "writes on a full disk: want storage, got {errors:?}"
    );
    assert!(
        !committed.is_empty(),
        "nothing fitted before the disk filled"
    );
    // Still full: writes fail with `storage` (a smaller one than the last may still fit:
    // then it succeeds, which is fine; anything else is not).
    let mut still = Vec::new();
    for dc_id in 100..103 {
        let r = c.call(Request::SetHomeDc { handle: h, dc_id }).await;
        match code(&r) {
            Some(e) => still.push(e),
            None => assert!(matches!(r, Ok(Response::Ok)), "set_home_dc: {r:?}"),
        }
    }
    assert!(still.iter().all(|e| *e == ErrorCode::Storage), "{still:?}");
    // Reads keep working, and every committed write is there.
    assert_has(&export(&c, "bot").await, &committed, "disk full");
    let key = PeerKey {
        kind: PeerKind::User,
        id: committed[0],
    };
    let r = c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Key(key),
        })
        .await;
    assert!(matches!(r, Ok(Response::Peer(Some(_)))), "get_peer: {r:?}");
    assert!(matches!(
        c.call(Request::Status).await,
        Ok(Response::Status(_))
    ));

    // Space again: writes succeed.
    std::fs::remove_file(&filler).unwrap();
    let next = 1_000_000;
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: batch(next),
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "cache_peers after freeing: {r:?}"
    );
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "set_home_dc after freeing: {r:?}"
    );

    // And all of it survives a SIGKILL.
    d.kill();
    let _d = env.start();
    let c = env.connect().await;
    unlock(&c).await;
    let data = export(&c, "bot").await;
    assert_has(&data, &committed, "after restart");
    assert_has_batches(&data, &[next], "after restart");
    assert_eq!(data.home_dc, 4);
    figure(
        TEST,
        &format!(
            "1 MiB tmpfs filled with {} committed peers; {} writes failed, all with \
             `storage` ({} of 3 more once full); reads served; writes succeeded once 256 KiB \
             were freed; losses of committed writes: 0",
            committed.len(),
            errors.len(),
            still.len()
        ),
    );
}

// ---- a file system that turns read-only under the daemon -------------------------------------

/// The fault shim: fails writes, truncations and syncs of files under `$SV_FAULT_DIR` with
/// `EROFS` while the file `$SV_FAULT_FLAG` exists.
const SHIM_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int faulty(int fd) {
    const char *flag = getenv("SV_FAULT_FLAG");
    const char *dir = getenv("SV_FAULT_DIR");
    char link[64], target[PATH_MAX];
    ssize_t n;
    if (!flag || !dir || access(flag, F_OK) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strncmp(target, dir, strlen(dir)) == 0;
}

#define SHIM(ret, name, params, args)                                   \
    ret name params {                                                   \
        static ret (*real) params;                                      \
        if (!real) real = (ret (*) params)dlsym(RTLD_NEXT, #name);      \
        if (faulty(fd)) { errno = EROFS; return -1; }                   \
        return real args;                                               \
    }

SHIM(ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n))
SHIM(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
SHIM(ssize_t, pwrite64, (int fd, const void *b, size_t n, off64_t o), (fd, b, n, o))
SHIM(ssize_t, writev, (int fd, const struct iovec *v, int c), (fd, v, c))
SHIM(int, fsync, (int fd), (fd))
SHIM(int, fdatasync, (int fd), (fd))
SHIM(int, ftruncate, (int fd, off_t l), (fd, l))
SHIM(int, ftruncate64, (int fd, off64_t l), (fd, l))
"#;

/// Builds the shim into `dir`; `None` (printed) without a C compiler.
fn build_shim(test: &str, dir: &Path) -> Option<PathBuf> {
    let src = dir.join("fault.c");
    let lib = dir.join("fault.so");
    std::fs::write(&src, SHIM_C).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output();
    match out {
        Ok(o) if o.status.success() => Some(lib),
        Ok(o) => {
            figure(
                test,
                &format!(
                    "SKIPPED: cannot build the fault shim: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
            );
            None
        }
        Err(e) => {
            figure(test, &format!("SKIPPED: no C compiler (cc): {e}"));
            None
        }
    }
}

/// A `vaultd` with the fault shim preloaded; killed on drop.
struct Shimmed {
    child: Child,
}

impl Shimmed {
    fn start(env: &Env, shim: &Path, flag: &Path) -> Shimmed {
        let data = env.data_dir().canonicalize().expect("data dir exists");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VAULTD_LOG", "info")
            .env("LD_PRELOAD", shim)
            .env("SV_FAULT_DIR", &data)
            .env("SV_FAULT_FLAG", flag)
            .arg("--socket")
            .arg(env.socket())
            .arg("--data-dir")
            .arg(&data)
            .args(["--flush-interval-ms", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultd");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("vaultd listening") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("vaultd with the fault shim became ready");
        Shimmed { child }
    }
}

impl Drop for Shimmed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_system_turning_read_only_under_the_daemon_fails_writes_with_storage() {
    const TEST: &str = "storage/read-only";
    let env = Env::new();
    let Some(fs) = Tmpfs::mount(TEST, &env.data_dir(), 4096) else {
        return;
    };
    let Some(shim) = build_shim(TEST, env.path()) else {
        return;
    };
    let flag = env.path().join("fault-on");
    let d = Shimmed::start(&env, &shim, &flag);
    let c = env.connect().await;
    env.init_proto(&c).await;
    let h = open_session(&c, "bot", true).await;
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: batch(1),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 3,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");

    // An administrator's read-only remount is refused while vaultd holds its files open.
    let remount = fs.remount("ro");
    assert!(remount.is_err(), "remount ro under a running vaultd worked");
    let _ = fs.remount("rw");

    // The kernel's forced read-only, injected.
    std::fs::write(&flag, b"").unwrap();
    let mut codes = Vec::new();
    for dc_id in 10..=12 {
        codes.push(code(&c.call(Request::SetHomeDc { handle: h, dc_id }).await));
    }
    let r = c
        .call(Request::ImportSession {
            name: "imported".into(),
            data: SessionData::default(),
            replace: false,
            owner_uid: None,
        })
        .await;
    codes.push(code(&r));
    assert!(
        codes.iter().all(|c| *c == Some(ErrorCode::Storage)),
        "durable writes on a read-only file system: {codes:?}"
    );
    // Reads keep working.
    assert_has_batches(&export(&c, "bot").await, &[1], "read-only");
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(3))), "get_home_dc: {r:?}");

    // Writable again: writes succeed, and survive a SIGKILL.
    std::fs::remove_file(&flag).unwrap();
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: batch(1_000),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "set_home_dc after the fault: {r:?}"
    );
    drop(d);
    let _d = env.start();
    let c = env.connect().await;
    unlock(&c).await;
    let data = export(&c, "bot").await;
    assert_has_batches(&data, &[1, 1_000], "after restart");
    assert_eq!(data.home_dc, 5);
    figure(
        TEST,
        &format!(
            "remount ro under vaultd: refused by the kernel ({}); EROFS injected on writes \
             and syncs: 4 durable writes got `storage`; reads served; writes succeeded once \
             the fault cleared; losses of committed writes: 0",
            remount
                .err()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: cache-class writes acknowledged while the storage fails are dropped silently \
            at the failed flush (daemon/src/vault/worker.rs Worker::abort); see RELIABILITY.md"]
async fn cache_class_writes_during_a_storage_fault_are_refused_or_kept() {
    const TEST: &str = "storage/cache-during-fault";
    let env = Env::new();
    let Some(_fs) = Tmpfs::mount(TEST, &env.data_dir(), 4096) else {
        return;
    };
    let Some(shim) = build_shim(TEST, env.path()) else {
        return;
    };
    let flag = env.path().join("fault-on");
    let d = Shimmed::start(&env, &shim, &flag);
    let c = env.connect().await;
    env.init_proto(&c).await;
    let h = open_session(&c, "bot", true).await;
    std::fs::write(&flag, b"").unwrap();
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: batch(1),
        })
        .await;
    if code(&r) == Some(ErrorCode::Storage) {
        return;
    }
    // Acknowledged: then it must not vanish, neither at the failed flush nor later.
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let key = PeerKey {
        kind: PeerKind::User,
        id: 1,
    };
    let r = c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Key(key),
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Peer(Some(_)))),
        "an acknowledged cache-class write vanished at the failed flush: {r:?}"
    );
    std::fs::remove_file(&flag).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(d);
    let _d = env.start();
    let c = env.connect().await;
    unlock(&c).await;
    assert_has(
        &export(&c, "bot").await,
        &[1],
        "after the fault and a restart",
    );
}

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
                peers: batch(1 + s * BATCH),
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VAULTD_LOG", "info")
        .arg("--socket")
        .arg(env.socket())
        .arg("--data-dir")
        .arg(env.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultd");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a daemon whose stderr closes
        // misbehaves (see `a_closed_log_stream_does_not_hang_requests`).
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
    let r = c
        .call(Request::Unlock {
            passphrase: passphrase(PASS),
        })
        .await;
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
#[ignore = "bug: a vault file cut inside its last page starts and serves (sessions there get \
            `corrupt`) instead of being refused (daemon/src/vault/sqlite.rs SqliteStore::open \
            checks no size or integrity); see RELIABILITY.md"]
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
    unlock(&c).await;
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
#[ignore = "bug: once vaultd's stderr is closed, every request that logs at info panics its \
            task and is never answered (tracing-subscriber's eprintln! fallback, \
            daemon/src/bin/vaultd.rs; no panic guard in daemon/src/server/conn.rs); see \
            RELIABILITY.md"]
async fn a_closed_log_stream_does_not_hang_requests() {
    let env = Env::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--socket")
        .arg(env.socket())
        .arg("--data-dir")
        .arg(env.data_dir())
        .stdin(Stdio::null())
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
        (
            "unlock",
            Request::Unlock {
                passphrase: passphrase(PASS),
            },
        ),
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
        if tokio::time::timeout(within, c.request(request))
            .await
            .is_err()
        {
            unanswered.push(what);
        }
    }
    assert!(
        unanswered.is_empty(),
        "after vaultd's stderr was closed, no answer within {within:?} to {unanswered:?}"
    );
}
