//! Storage faults: a full disk, a file system that turns read-only under the daemon, a
//! read-only vault directory at startup, a truncated vault file.
//!
//! The data directory lives on a small tmpfs mounted for the test ([`Tmpfs`], unmounted on
//! drop); without the right to mount (not root) the tests print why and pass. A read-only
//! remount under a running daemon is refused by the kernel (`mount point is busy`: vaultd
//! holds its files open for writing), so a file system that turns read-only under it — what
//! the kernel does to ext4 after I/O errors, `errors=remount-ro` — is injected instead with
//! a small `LD_PRELOAD` shim (`readonly::SHIM_C`, built with `cc` at test time) that fails writes
//! and syncs of files under the data directory with `EROFS` while a flag file exists.
//!
//! - here: a full disk;
//! - [`readonly`]: a file system that turns read-only under the daemon (and cache-class
//!   writes during such a fault);
//! - [`startup`]: damaged or read-only vault files at startup, and a closed log stream.
//!
//! Garbage vault files, foreign SQLite files and newer formats at startup are covered by
//! `tests/startup.rs` (`a_garbage_vault_file_is_refused_and_left_unchanged` and its
//! neighbours); [`startup`] adds truncation.

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKey, PeerKind, SessionData};

use super::{Tmpfs, figure};
use crate::util::*;

mod readonly;
mod startup;

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
            peers: batch(next).into(),
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
    unlock_proto(&c).await;
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
