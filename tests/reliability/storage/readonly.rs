//! A file system that turns read-only under the running daemon: the kernel refuses an
//! administrator's `mount -o remount,ro` while vaultd holds files open for writing, so the
//! kernel's own forced read-only (ext4 `errors=remount-ro`) is reproduced by an `LD_PRELOAD`
//! shim that fails writes and syncs under the data directory with `EROFS`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{PeerKey, PeerKind, SessionData};

use super::*;

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
        let mut child = vaultd_cmd(&env.socket(), &data)
            .env("VAULTD_LOG", "info")
            .env("LD_PRELOAD", shim)
            .env("SV_FAULT_DIR", &data)
            .env("SV_FAULT_FLAG", flag)
            .args(["--flush-interval-ms", "20", crate::util::ALLOW_WEAK_KDF])
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
            peers: batch(1).into(),
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
            force: false,
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
            peers: batch(1_000).into(),
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
    unlock_proto(&c).await;
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

/// Looks up user 1, the first peer of `batch(1)`.
fn get_first_peer(handle: u32) -> Request {
    Request::GetPeer {
        handle,
        query: PeerQuery::Key(PeerKey {
            kind: PeerKind::User,
            id: 1,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
            peers: batch(1).into(),
        })
        .await;
    if code(&r) == Some(ErrorCode::Storage) {
        return;
    }
    // Acknowledged: then it must not vanish, neither at the failed flush nor later.
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c.call(get_first_peer(h)).await;
    assert!(
        matches!(r, Ok(Response::Peer(Some(_)))),
        "an acknowledged cache-class write vanished at the failed flush: {r:?}"
    );
    // The fault is real (a durable write fails), and while it lasts a new cache-class write
    // is refused rather than acknowledged and dropped.
    let durable = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 3,
        })
        .await;
    assert_eq!(code(&durable), Some(ErrorCode::Storage), "{durable:?}");
    let during = c
        .call(Request::CachePeers {
            handle: h,
            peers: batch(1_000_000).into(),
        })
        .await;
    assert_eq!(code(&during), Some(ErrorCode::Storage), "{during:?}");
    let r = c.call(get_first_peer(h)).await;
    assert!(
        matches!(r, Ok(Response::Peer(Some(_)))),
        "the acknowledged write vanished at a later failed commit: {r:?}"
    );
    std::fs::remove_file(&flag).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(d);
    let _d = env.start();
    let c = env.connect().await;
    unlock_proto(&c).await;
    assert_has(
        &export(&c, "bot").await,
        &[1],
        "after the fault and a restart",
    );
    figure(
        TEST,
        "EROFS injected after a cache-class write was acknowledged: the failed flushes kept \
         it (served throughout, on disk after the fault cleared and a SIGKILL); during the \
         fault a durable write and a further cache-class write both got `storage`",
    );
}
