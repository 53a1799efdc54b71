//! Peer maps of large sessions read off the storage thread (`sqlite::key_builds`):
//!
//! - the storage thread reads at most a small session's map itself; a larger one is read on
//!   the map thread while other sessions are served, and every peer stays found and written
//!   once, under concurrent reads and writes of sessions whose maps keep being dropped;
//! - a map read elsewhere is taken only if it is still the table's: not if a commit after its
//!   read changed the session, not if the open transaction did, not after a lock.

use super::peer_rows::{random_row, user};
use super::support::*;
use crate::vault::EngineError;
use crate::vault::sqlite::SqliteStore;
use crate::vault::store::{Row, Store, Table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sessions_maps_are_read_off_the_storage_thread_and_every_peer_stays_found() {
    // Commits soon after each write: a map with uncommitted rows is not dropped.
    let config = crate::vault::VaultConfig {
        flush_interval: std::time::Duration::from_millis(1),
    };
    let (_t, vault, a) = vault_with_session(config).await;
    let b = new_session(&vault, "b").await;
    let c = new_session(&vault, "c").await;
    vault
        .with_sqlite_store(|s| {
            // Three sessions of 200+ peers never fit in 450 keys; maps of over 50 rows are
            // read elsewhere.
            s.set_peer_keys_max(450);
            s.set_peer_maps_read_here_max(50);
        })
        .await
        .unwrap();
    let sessions = [a, b, c];
    for (n, sid) in sessions.iter().enumerate() {
        let base = 1_000_000 * (n as i64 + 1);
        for chunk in 0..2 {
            let peers = (0..100).map(|i| user(base + chunk * 100 + i)).collect();
            vault.cache_peers(*sid, peers).await.unwrap();
        }
    }
    // Six clients at once, each going round the sessions: look-ups of stored peers (whose
    // maps the other clients' uses keep dropping) and writes of new ones.
    let mut tasks = Vec::new();
    for client in 0..6i64 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..30i64 {
                let n = ((client + i) % 3) as usize;
                let sid = sessions[n];
                let base = 1_000_000 * (n as i64 + 1);
                let old = user(base + (client * 37 + i * 11) % 200);
                assert_eq!(vault.peer(sid, old.key()).await.unwrap(), Some(old));
                let new = user(base + 500 + client * 100 + i);
                vault.cache_peers(sid, vec![new.clone()]).await.unwrap();
                written.push((sid, new));
            }
            written
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    for (sid, p) in &written {
        assert_eq!(vault.peer(*sid, p.key()).await.unwrap().as_ref(), Some(p));
        for other in sessions.iter().filter(|s| *s != sid) {
            assert_eq!(vault.peer(*other, p.key()).await.unwrap(), None);
        }
    }
    for (n, sid) in sessions.iter().enumerate() {
        let rows = vault.export(*sid).await.unwrap().peers.len();
        let mine = written.iter().filter(|(s, _)| s == sid).count();
        assert_eq!(rows, 200 + mine, "session {n}: every peer written once");
    }
    let ((read, evicted, read_inline), (adopted, largest)) = vault
        .with_sqlite_store(|s| (s.peer_maps_stats(), s.peer_maps_elsewhere_stats()))
        .await
        .unwrap();
    assert!(
        evicted >= 3 && adopted >= 3,
        "maps dropped {evicted}, read elsewhere {adopted} (read here {read})"
    );
    assert!(
        largest <= 51,
        "the storage thread read {largest} rows of one map (at most 50 and the one that tells)"
    );
    assert_eq!(read_inline, 0);
    close(vault).await;
}

#[test]
fn a_map_read_elsewhere_is_taken_only_while_it_is_the_tables() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = TestDir::new();
    let mut store = SqliteStore::open(&t.db()).unwrap();
    let builds = store.read_maps_elsewhere_above(10).unwrap();
    let mut rng = Rng(17);
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    let mut rows: Vec<Row> = (0..20).map(|_| random_row(&mut rng)).collect();
    for r in &rows {
        store.put(Table::Peers, sid, r, [None, None]).unwrap();
    }
    store.commit().unwrap();
    let get = |store: &mut SqliteStore, r: &Row| store.get(Table::Peers, sid, &r.key);
    let needed = |e: Result<Option<Vec<u8>>, EngineError>| match e {
        Err(EngineError::KeysNeeded {
            session,
            generation,
            ..
        }) if session == sid => generation,
        other => panic!("expected the map to be asked for, got {other:?}"),
    };

    // Dropped, the map of 20 rows is not read here: asked for, read elsewhere, taken.
    store.forget_peer_map(sid);
    store.begin().unwrap();
    let generation = needed(get(&mut store, &rows[0]));
    rt.block_on(builds.build(sid, generation)).unwrap();
    assert_eq!(
        get(&mut store, &rows[0]).unwrap(),
        Some(rows[0].value.clone())
    );
    assert_eq!(store.peer_maps_elsewhere_stats(), (1, 11));

    // Read before a commit that changed the session: not taken (it lacks the new row).
    rt.block_on(builds.build(sid, generation)).unwrap();
    rows.push(random_row(&mut rng));
    store
        .put(Table::Peers, sid, &rows[20], [None, None])
        .unwrap();
    store.commit().unwrap();
    store.forget_peer_map(sid);
    store.begin().unwrap();
    needed(get(&mut store, &rows[20]));
    rt.block_on(builds.build(sid, generation)).unwrap();
    assert_eq!(
        get(&mut store, &rows[20]).unwrap(),
        Some(rows[20].value.clone())
    );
    assert_eq!(store.peer_maps_elsewhere_stats().0, 2);

    // Read before a change in the open transaction: not taken, nor is the map read whole
    // here (the storage thread would hold every session up for it); it is taken once read
    // again after that transaction committed.
    rt.block_on(builds.build(sid, generation)).unwrap();
    rows.push(random_row(&mut rng));
    store
        .put(Table::Peers, sid, &rows[21], [None, None])
        .unwrap();
    store.forget_peer_map(sid);
    needed(get(&mut store, &rows[21]));
    assert_eq!(store.peer_maps_elsewhere_stats(), (2, 11));
    store.commit().unwrap();
    rt.block_on(builds.build(sid, generation)).unwrap();
    store.begin().unwrap();
    assert_eq!(
        get(&mut store, &rows[21]).unwrap(),
        Some(rows[21].value.clone())
    );
    assert_eq!(store.peer_maps_elsewhere_stats().0, 3);
    store.commit().unwrap();

    // Asked for before a lock: not taken after it.
    store.set_data_key_id(None);
    assert_eq!(store.peer_maps_generation(), generation + 1);
    rt.block_on(builds.build(sid, generation)).unwrap();
    store.begin().unwrap();
    assert_eq!(needed(get(&mut store, &rows[0])), generation + 1);
    assert_eq!(store.peer_maps_elsewhere_stats().0, 3);
    rt.block_on(builds.build(sid, generation + 1)).unwrap();
    for r in &rows {
        assert_eq!(get(&mut store, r).unwrap(), Some(r.value.clone()));
    }
    assert_eq!(store.peer_maps_elsewhere_stats().0, 4);
    store.commit().unwrap();
}
