//! Point reads and small cache-class writes on the caller's thread with PostgreSQL: inside
//! `block_in_place` on a multi-thread runtime (the daemon's), queued on a current-thread one
//! (where `block_in_place` would panic). Either way they read and write what the storage
//! thread would, and the storage thread commits the inline writes within the flush interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_vault_proto::model::{Peer, PeerKind};

use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::store::{Store, Table};
use crate::vault::tests::support::*;

fn user(id: i64) -> Peer {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(id.wrapping_mul(7919));
    p
}

/// Caches one new peer at a time and reads it back at once until `inline` writes and reads
/// ran on this thread (the storage thread may still be busy with the previous write's wake-up
/// job now and then, which queues the next one), at most 200 rounds; checks every read.
/// Returns the peers written and the jobs that ran inline.
async fn write_and_read_until_inline(runtime: &str, inline: usize) -> usize {
    let (t, vault, sid) = vault_with_session(flush_every(20)).await;
    let before = vault.inline_runs();
    let mut written = Vec::new();
    for round in 0..200 {
        let p = user(1_000_000 + round);
        vault.cache_peers(sid, vec![p.clone()]).await.unwrap();
        assert_eq!(
            vault.peer(sid, p.key()).await.unwrap().as_ref(),
            Some(&p),
            "{runtime}: a peer read back at once"
        );
        written.push(p);
        if inline > 0 && vault.inline_runs() - before >= inline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ran_inline = vault.inline_runs() - before;
    // Committed by the storage thread within the flush interval, without a barrier: the
    // store opened afresh (another connection) sees every peer.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let committed = with_store(&t, |store| store.count(Table::Peers, sid.0).unwrap());
        if committed == written.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{runtime}: inline writes never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    close(vault).await;
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    let sid = vault.open_session("acct").await.unwrap();
    for p in &written {
        assert_eq!(
            vault.peer(sid, p.key()).await.unwrap().as_ref(),
            Some(p),
            "{runtime}: after a reopen"
        );
    }
    close(vault).await;
    ran_inline
}

#[test]
fn point_reads_and_small_writes_run_inline_on_postgres_on_a_multi_thread_runtime_only() {
    let Some(cluster) = Cluster::start_or_skip("inline reads and writes on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(&cluster, || {
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ran = multi.block_on(write_and_read_until_inline("multi-thread", 4));
        assert!(ran >= 4, "multi-thread runtime: {ran} jobs ran inline");
    });
    with_postgres(&cluster, || {
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ran = current.block_on(write_and_read_until_inline("current-thread", 0));
        assert_eq!(ran, 0, "current-thread runtime: every job queued");
    });
}
