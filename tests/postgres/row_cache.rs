//! The lease holder's row cache across hosts (daemons with their own dirs on one database): a
//! daemon that gave a session's lease back and takes it again reads what another host wrote
//! meanwhile, changed peers and new ones alike, never its own older copy.

use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::{PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKey, PeerKind};

use super::{refs, store_args_expiring};
use crate::util::pg::Cluster;
use crate::util::*;

fn key(id: i64) -> PeerKey {
    PeerKey {
        kind: PeerKind::User,
        id,
    }
}

async fn cache(c: &Connection, handle: u32, id: i64, hash: i64) {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(hash);
    let r = c
        .call(Request::CachePeers {
            handle,
            peers: vec![p].into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "cache_peers: {r:?}");
}

/// The access hash the daemon answers for peer `id` (`None`: not found).
async fn hash(c: &Connection, handle: u32, id: i64) -> Option<i64> {
    match c
        .call(Request::GetPeer {
            handle,
            query: PeerQuery::Key(key(id)),
        })
        .await
    {
        Ok(Response::Peer(p)) => p.map(|p| p.access_hash.expect("cached with a hash")),
        other => panic!("get_peer {id}: {other:?}"),
    }
}

async fn close(c: &Connection, handle: u32) {
    let r = c.call(Request::CloseSession { handle }).await;
    assert!(matches!(r, Ok(Response::Ok)), "close: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retaken_session_reads_what_another_host_wrote_while_it_was_away() {
    let Some(cluster) = Cluster::start_or_skip("the lease holder's cache across vaultd") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let [args_a, args_b] = [&a, &b].map(|env| store_args_expiring(env, &cluster, &db));
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;
    let free = Duration::from_secs(5);

    // Host A's bot caches a peer and reads it back (A's daemon holds both in its cache), and
    // asks for one it never cached (known absent there).
    let h = open_session(&ca, "bot", true).await;
    cache(&ca, h, 1, 100).await;
    assert_eq!(hash(&ca, h, 1).await, Some(100));
    assert_eq!(hash(&ca, h, 2).await, None);
    close(&ca, h).await;

    // Host B's bot takes the session once A gave the lease back, changes the peer and adds
    // the one A found absent.
    let (hb, _) = open_when_free(&cb, "bot", free).await;
    assert_eq!(hash(&cb, hb, 1).await, Some(100));
    cache(&cb, hb, 1, 200).await;
    cache(&cb, hb, 2, 300).await;
    close(&cb, hb).await;

    // A's bot again: B's writes, not A's cached copy.
    let (h, _) = open_when_free(&ca, "bot", free).await;
    assert_eq!(hash(&ca, h, 1).await, Some(200), "changed on B");
    assert_eq!(hash(&ca, h, 2).await, Some(300), "added on B");
    // A's own writes and reads go on as before.
    cache(&ca, h, 3, 400).await;
    assert_eq!(hash(&ca, h, 3).await, Some(400));
    close(&ca, h).await;
}
