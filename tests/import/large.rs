//! A Telethon session with 100,000 entities: built by copying the fixture's schema (the
//! fixture file written by Telethon 1.45) and inserting rows with rusqlite, then imported
//! through `vaultctl` into a daemon with default settings (its 1 MiB frame limit): in chunks
//! (`import_begin`/`import_chunk`/`import_commit`), one transaction. Timed (printed, not
//! asserted). An import broken off midway (its connection gone, a corrupt chunk) leaves
//! nothing; the export, also in chunks, gives every entity back.

use std::time::Instant;

use session_vault_client::Connection;
use session_vault_proto::backup::{Blob, CHUNK_MAX};
use session_vault_proto::message::{ErrorCode, Request, Response};

use super::{fixture, read_back};
use crate::util::{Env, assert_success, stdout};

const ENTITIES: i64 = 100_000;

fn big_file(env: &Env) -> std::path::PathBuf {
    let path = env.path().join("big.session");
    std::fs::copy(fixture("telethon-v8.session"), &path).unwrap();
    let mut c = rusqlite::Connection::open(&path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO entities VALUES (?1, ?2, ?3, ?4, ?5, 1700000000)")
            .unwrap();
        for i in 0..ENTITIES {
            // Users, chats and channels in turn, with usernames, phones and names.
            let (id, hash) = match i % 3 {
                0 => (1_000_000 + i, i * 7919),
                1 => (-(2_000_000 + i), 0),
                _ => (-(1_000_000_000_000 + 3_000_000 + i), -i * 104_729),
            };
            ins.execute(rusqlite::params![
                id,
                hash,
                format!("user_{i}"),
                (i % 3 == 0).then(|| format!("1555{i:07}")),
                format!("Name {i}")
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    path
}

#[tokio::test]
async fn a_telethon_file_with_100k_entities() {
    let env = Env::new();
    let path = big_file(&env);
    let src = path.to_str().unwrap();

    // A daemon with default settings: 1 MiB frames, 64 MiB of request memory.
    let _d = env.start_and_init();
    let t = Instant::now();
    let out = env.ctl(&["import", src, "--name", "big"]);
    let elapsed = t.elapsed();
    assert_success(&out, "import 100k entities");
    assert!(stdout(&out).contains(&format!("peers:        {}", ENTITIES + 6)));
    eprintln!(
        "import of a Telethon file with {ENTITIES} entities ({} KiB): {elapsed:.2?}",
        std::fs::metadata(&path).unwrap().len() / 1024
    );
    let c = env.connect().await;
    let (_, data) = read_back(&c, "big").await;
    assert_eq!(data.peers.len() as i64, ENTITIES + 6);

    // Out again, in chunks, as a Telethon file: every entity back.
    let back = env.path().join("back.session");
    let out = env.ctl(&[
        "export",
        "big",
        "--format",
        "telethon-sqlite",
        "--output",
        back.to_str().unwrap(),
    ]);
    assert_success(&out, "export 100k entities");
    let db = rusqlite::Connection::open(&back).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
        .unwrap();
    let orig: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, orig);
    // And in again under another name: the same session.
    let out = env.ctl(&["import", back.to_str().unwrap(), "--name", "again"]);
    assert_success(&out, "import the export");
    let (_, again) = read_back(&c, "again").await;
    assert_eq!(again.peers.len(), data.peers.len());
    assert_eq!(again.dc_options, data.dc_options);
}

/// A session of [`ENTITIES`] users, encoded as a streamed import carries it, and its SHA-256.
fn big_encoded() -> (Vec<u8>, Vec<u8>) {
    let (bytes, sha) = encoded(ENTITIES);
    assert!(bytes.len() > (1 << 20), "more than one frame");
    (bytes, sha)
}

/// A session of `n` users, encoded as `import_begin` takes it, and its SHA-256.
pub(crate) fn encoded(n: i64) -> (Vec<u8>, Vec<u8>) {
    use session_vault_proto::model::{Peer, PeerKind, SessionData};
    use sha2::Digest;
    let peers = (0..n)
        .map(|i| Peer {
            kind: PeerKind::User,
            id: 1_000_000 + i,
            access_hash: Some(i * 7919),
            bot: Some(false),
            is_self: None,
            channel_kind: None,
            username: Some(format!("user_{i}")),
            phone: Some(format!("1555{i:07}")),
            name: Some(format!("Name {i}")),
        })
        .collect();
    let data = SessionData {
        peers,
        ..SessionData::default()
    };
    let bytes = session_vault_proto::backup::encode_session(&data)
        .unwrap()
        .to_vec();
    let sha = sha2::Sha256::digest(&bytes).to_vec();
    (bytes, sha)
}

pub(crate) fn begin(name: &str, bytes: &[u8], sha: &[u8]) -> Request {
    Request::ImportBegin {
        name: name.into(),
        size: bytes.len() as u64,
        sha256: Blob(sha.to_vec()),
        replace: false,
        owner_uid: None,
        force: false,
    }
}

pub(crate) async fn send_chunks(c: &Connection, id: u64, bytes: &[u8], upto: usize) {
    for (i, chunk) in bytes[..upto].chunks(CHUNK_MAX).enumerate() {
        let r = c
            .call(Request::ImportChunk {
                id,
                offset: (i * CHUNK_MAX) as u64,
                data: Blob(chunk.to_vec()),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    }
}

pub(crate) async fn transfer_id(c: &Connection, request: Request) -> u64 {
    match c.call(request).await {
        Ok(Response::Transfer(t)) => t.id,
        other => panic!("begin: {other:?}"),
    }
}

async fn names(c: &Connection) -> Vec<String> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(s)) => s.into_iter().map(|l| l.summary.name).collect(),
        other => panic!("list: {other:?}"),
    }
}

#[tokio::test]
async fn an_import_broken_off_midway_leaves_nothing() {
    let env = Env::new();
    let (bytes, sha) = big_encoded();
    let _d = env.start_and_init();
    let admin = env.connect().await;

    // The connection goes away with half the chunks sent: nothing stored, and its memory is
    // back (a new import of the whole fits the budget at once).
    {
        let c = env.connect().await;
        let id = transfer_id(&c, begin("gone", &bytes, &sha)).await;
        send_chunks(&c, id, &bytes, bytes.len() / 2).await;
        assert!(names(&admin).await.is_empty());
    }
    // A chunk out of order is refused; a commit of an incomplete import stores nothing.
    let c = env.connect().await;
    let id = transfer_id(&c, begin("short", &bytes, &sha)).await;
    send_chunks(&c, id, &bytes, CHUNK_MAX).await;
    let r = c
        .call(Request::ImportChunk {
            id,
            offset: (3 * CHUNK_MAX) as u64,
            data: Blob(vec![0; 16]),
        })
        .await;
    assert!(r.is_err(), "{r:?}");
    let r = c.call(Request::ImportCommit { id }).await;
    assert!(r.is_err(), "{r:?}");
    assert!(names(&admin).await.is_empty());

    // A corrupt chunk: the whole arrives, its SHA-256 differs, nothing is stored.
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x55;
    let id = transfer_id(&c, begin("corrupt", &bytes, &sha)).await;
    send_chunks(&c, id, &bad, bad.len()).await;
    match c.call(Request::ImportCommit { id }).await {
        Err(session_vault_client::ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::Corrupt, "{e:?}")
        }
        other => panic!("commit of a corrupt import: {other:?}"),
    }
    assert!(names(&admin).await.is_empty());

    // The connection still works: the whole, intact, goes in.
    let id = transfer_id(&c, begin("whole", &bytes, &sha)).await;
    send_chunks(&c, id, &bytes, bytes.len()).await;
    let r = c.call(Request::ImportCommit { id }).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    assert_eq!(names(&admin).await, ["whole"]);
    let (_, data) = read_back(&admin, "whole").await;
    assert_eq!(data.peers.len() as i64, ENTITIES);
}

#[tokio::test]
async fn vaultctl_killed_mid_import_leaves_nothing() {
    let env = Env::new();
    let path = big_file(&env);
    let _d = env.start_and_init();
    let mut child = env
        .ctl_cmd(&["import", path.to_str().unwrap(), "--name", "killed"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while parsing or sending, whichever it is doing by then.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let _ = child.kill();
    let _ = child.wait();
    let c = env.connect().await;
    let listed = names(&c).await;
    // Either it had committed already (the whole session) or nothing is there.
    if listed.is_empty() {
        return;
    }
    assert_eq!(listed, ["killed"]);
    let (_, data) = read_back(&c, "killed").await;
    assert_eq!(data.peers.len() as i64, ENTITIES + 6);
}

#[tokio::test]
async fn a_non_admin_cannot_begin_a_streamed_import() {
    let env = Env::new();
    let (bytes, sha) = {
        let b = vec![0u8; 10];
        use sha2::Digest;
        let s = sha2::Sha256::digest(&b).to_vec();
        (b, s)
    };
    // The daemon's admin is another uid than this process's: every request of ours is a
    // non-admin's.
    let _d = env.start_with(&["--admin-uid", "4242"]);
    let c = env.connect().await;
    match c.call(begin("x", &bytes, &sha)).await {
        Err(session_vault_client::ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied, "{e:?}")
        }
        other => panic!("{other:?}"),
    }
}
