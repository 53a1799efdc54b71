//! The peers table of schema version 5 (`sqlite::peer_keys`): rows numbered in insertion order
//! within each session's range, found by key through a map in memory.
//!
//! - a commit of new peers writes the pages they fill, not most of a key index (the reason
//!   for the layout: checked against the same writes into a version-4 file);
//! - a vault written at version 4 keeps each session's peers and their order, and new peers
//!   follow them;
//! - what a rolled-back operation or transaction inserted is gone from the map too;
//! - a key stored twice (the store never writes one: an edited file) is `Corrupt`.

use session_vault_proto::model::{Peer, PeerKind, SessionAcl};

use super::support::*;
use crate::vault::IfExists;
use crate::vault::sqlite::{SCHEMA_VERSION, SqliteStore};
use crate::vault::store::{Row, Store, Table};
use crate::vault::{EngineError, SessionId, VaultConfig};

/// A row as a peer's would be: a random 16-byte blind key, a 120-byte sealed value.
pub(super) fn random_row(rng: &mut Rng) -> Row {
    let mut key = vec![0u8; 16];
    rng.fill(&mut key);
    let mut value = vec![0u8; 120];
    rng.fill(&mut value);
    Row { key, value }
}

/// A blind index value as a username's or phone's would be: 16 random bytes.
fn random_value(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    rng.fill(&mut v);
    v
}

/// WAL frames written by one commit of `new` peers into a session already holding `old`,
/// on a store at schema `version`; with `named`, every peer carries a username and a phone
/// (blind index values).
fn frames_of_one_commit(version: u32, old: usize, new: usize, named: bool) -> u64 {
    let t = TestDir::new();
    let mut store = SqliteStore::open_at_version(&t.db(), version).unwrap();
    let mut rng = Rng(0x5eed_0000 + u64::from(version));
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    for _ in 0..old {
        let row = random_row(&mut rng);
        let (u, p) = (random_value(&mut rng), random_value(&mut rng));
        let idx = if named {
            [Some(&u[..]), Some(&p[..])]
        } else {
            [None, None]
        };
        store.put(Table::Peers, sid, &row, idx).unwrap();
    }
    store.commit().unwrap();
    let wal = |t: &TestDir| {
        std::fs::metadata(&t.db_files()[1])
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // The background checkpointer may be copying the fill's WAL meanwhile, which makes a
    // truncating checkpoint give up: try again until the WAL is empty.
    for _ in 0..200 {
        store.checkpoint().unwrap();
        if wal(&t) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(wal(&t), 0, "the WAL starts empty");
    store.begin().unwrap();
    let values: Vec<[Vec<u8>; 2]> = (0..new)
        .map(|_| [random_value(&mut rng), random_value(&mut rng)])
        .collect();
    let rows: Vec<(Row, [Option<&[u8]>; 2])> = values
        .iter()
        .map(|[u, p]| {
            let idx = if named {
                [Some(&u[..]), Some(&p[..])]
            } else {
                [None, None]
            };
            (random_row(&mut rng), idx)
        })
        .collect();
    let inserted = store.insert_absent(Table::Peers, sid, &rows).unwrap();
    assert!(inserted.iter().all(Option::is_none), "all new");
    store.commit().unwrap();
    assert_eq!(
        store.count(Table::Peers, sid).unwrap(),
        (old + new) as u64,
        "every row stored"
    );
    let page: u64 = raw(&t.db())
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // A WAL file: a 32-byte header, then frames of a 24-byte header and a page.
    (wal(&t) - 32) / (page + 24)
}

#[test]
fn a_commit_of_new_peers_writes_the_pages_they_fill_not_most_of_a_key_index() {
    // 1000 new peers (about 140 KB of rows) into a session of 20,000.
    let keyed = frames_of_one_commit(4, 20_000, 1000, false);
    let by_rowid = frames_of_one_commit(SCHEMA_VERSION, 20_000, 1000, false);
    eprintln!("WAL frames for 1000 new peers: version 4 {keyed}, version 5 {by_rowid}");
    assert!(
        by_rowid < 60,
        "{by_rowid} pages written for 1000 new peers (their rows fill about 40)"
    );
    assert!(
        by_rowid * 3 < keyed,
        "version 5 wrote {by_rowid} pages, version 4 {keyed}: the random-key index is gone"
    );
}

#[test]
fn a_commit_of_named_peers_writes_no_random_index_leaves() {
    // The same, every peer with a username and a phone: at version 5 each went into two
    // partial indexes of random blind values as well.
    let indexed = frames_of_one_commit(5, 20_000, 1000, true);
    let in_memory = frames_of_one_commit(SCHEMA_VERSION, 20_000, 1000, true);
    eprintln!("WAL frames for 1000 new named peers: version 5 {indexed}, version 6 {in_memory}");
    assert!(
        in_memory < 60,
        "{in_memory} pages written for 1000 new named peers (their rows fill about 40)"
    );
    assert!(
        in_memory * 3 < indexed,
        "version 6 wrote {in_memory} pages, version 5 {indexed}: the random-value indexes are gone"
    );
}

#[test]
fn usernames_and_phones_are_found_through_the_map_across_hand_overs_rollbacks_and_reopens() {
    use crate::vault::store::Index;
    let t = TestDir::new();
    let mut store = SqliteStore::open(&t.db()).unwrap();
    let mut rng = Rng(13);
    let (a, b, c) = (
        random_row(&mut rng),
        random_row(&mut rng),
        random_row(&mut rng),
    );
    let (ua, pa, ub, uc) = (
        random_value(&mut rng),
        random_value(&mut rng),
        random_value(&mut rng),
        random_value(&mut rng),
    );
    let find = |store: &mut SqliteStore, index, v: &[u8]| {
        store
            .find(Table::Peers, 1, index, v)
            .unwrap()
            .map(|r| r.key)
    };
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    assert_eq!(sid, 1);
    store
        .put(Table::Peers, sid, &a, [Some(&ua), Some(&pa)])
        .unwrap();
    store.put(Table::Peers, sid, &b, [Some(&ub), None]).unwrap();
    assert_eq!(find(&mut store, Index::Username, &ua), Some(a.key.clone()));
    assert_eq!(find(&mut store, Index::Phone, &pa), Some(a.key.clone()));
    assert_eq!(find(&mut store, Index::Username, &ub), Some(b.key.clone()));
    assert_eq!(find(&mut store, Index::Phone, &ub), None, "another index");
    // b takes a's username: a holds it no more, in the map or the table.
    store.put(Table::Peers, sid, &b, [Some(&ua), None]).unwrap();
    assert_eq!(find(&mut store, Index::Username, &ua), Some(b.key.clone()));
    assert_eq!(find(&mut store, Index::Username, &ub), None, "b gave ub up");
    let held = |store: &mut SqliteStore| {
        store
            .scan_all(Table::Peers, sid)
            .unwrap()
            .into_iter()
            .map(|(row, idx)| (row.key, idx))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        held(&mut store),
        [
            (a.key.clone(), [None, Some(pa.clone())]),
            (b.key.clone(), [Some(ua.clone()), None]),
        ]
    );
    store.commit().unwrap();
    // A new peer taking a value, rolled back: found neither by its value nor as holder.
    store.begin().unwrap();
    store.savepoint().unwrap();
    store
        .put(Table::Peers, sid, &c, [Some(&uc), Some(&pa)])
        .unwrap();
    assert_eq!(find(&mut store, Index::Phone, &pa), Some(c.key.clone()));
    store.rollback_to_savepoint().unwrap();
    assert_eq!(find(&mut store, Index::Username, &uc), None);
    assert_eq!(find(&mut store, Index::Phone, &pa), Some(a.key.clone()));
    store.commit().unwrap();
    // As the table holds them, read afresh.
    drop(store);
    let mut store = SqliteStore::open(&t.db()).unwrap();
    assert_eq!(find(&mut store, Index::Username, &ua), Some(b.key.clone()));
    assert_eq!(find(&mut store, Index::Phone, &pa), Some(a.key.clone()));
    assert_eq!(find(&mut store, Index::Username, &ub), None);
    // A value of another length is held by no row.
    assert_eq!(find(&mut store, Index::Username, b"short"), None);
}

pub(super) fn user(id: i64) -> Peer {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(id * 31);
    p
}

fn ids(peers: &[Peer]) -> Vec<i64> {
    peers.iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn peers_written_at_version_4_keep_their_sessions_and_order_and_new_ones_follow() {
    let t = TestDir::new();
    {
        let mut engine = engine_at_version(&t, 4);
        let empty = Default::default();
        let a = engine
            .import("a", &empty, IfExists::Refuse, SessionAcl::default())
            .unwrap();
        let b = engine
            .import("b", &empty, IfExists::Refuse, SessionAcl::default())
            .unwrap();
        // Interleaved: a's rows and b's alternate in the old table's rowid order.
        for i in 1..=50 {
            engine.cache_peers(a, &[user(i)]).unwrap();
            engine.cache_peers(b, &[user(1000 + i)]).unwrap();
        }
        // A re-cached peer keeps its place.
        engine.cache_peers(a, &[user(1)]).unwrap();
    }
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    let a = vault.open_session("a").await.unwrap();
    let b = vault.open_session("b").await.unwrap();
    let (page, end) = vault.peers_page(a, None, 1000).await.unwrap();
    assert_eq!(ids(&page), (1..=50).rev().collect::<Vec<_>>(), "a's order");
    assert_eq!(end, None);
    let (page, _) = vault.peers_page(b, None, 1000).await.unwrap();
    assert_eq!(
        ids(&page),
        (1001..=1050).rev().collect::<Vec<_>>(),
        "b's order"
    );
    for i in 1..=50 {
        assert_eq!(vault.peer(a, user(i).key()).await.unwrap(), Some(user(i)));
        assert_eq!(vault.peer(a, user(1000 + i).key()).await.unwrap(), None);
    }
    vault.cache_peers(a, vec![user(51), user(7)]).await.unwrap();
    let (page, _) = vault.peers_page(a, None, 3).await.unwrap();
    assert_eq!(ids(&page), [51, 50, 49], "a new peer is the newest");
    assert_eq!(
        vault.export(a).await.unwrap().peers.len(),
        51,
        "a re-cached peer is not stored twice"
    );
    close(vault).await;
}

#[test]
fn what_a_rolled_back_operation_or_transaction_inserted_is_not_found() {
    let t = TestDir::new();
    let mut store = SqliteStore::open(&t.db()).unwrap();
    let mut rng = Rng(7);
    let (kept, undone_op, undone_txn) = (
        random_row(&mut rng),
        random_row(&mut rng),
        random_row(&mut rng),
    );
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    store.put(Table::Peers, sid, &kept, [None, None]).unwrap();
    store.savepoint().unwrap();
    store
        .put(Table::Peers, sid, &undone_op, [None, None])
        .unwrap();
    assert!(
        store
            .get(Table::Peers, sid, &undone_op.key)
            .unwrap()
            .is_some()
    );
    store.rollback_to_savepoint().unwrap();
    assert_eq!(store.get(Table::Peers, sid, &undone_op.key).unwrap(), None);
    assert_eq!(
        store.get(Table::Peers, sid, &kept.key).unwrap(),
        Some(kept.value.clone())
    );
    // Written again, it is stored once.
    store
        .put(Table::Peers, sid, &undone_op, [None, None])
        .unwrap();
    store.commit().unwrap();
    assert_eq!(store.count(Table::Peers, sid).unwrap(), 2);

    // An operation without a savepoint, kept, then the whole transaction rolled back.
    store.begin().unwrap();
    assert!(store.unguarded_op().unwrap());
    store
        .put(Table::Peers, sid, &undone_txn, [None, None])
        .unwrap();
    store.release_op().unwrap().unwrap();
    assert!(
        store
            .get(Table::Peers, sid, &undone_txn.key)
            .unwrap()
            .is_some()
    );
    store.rollback().unwrap();
    assert_eq!(store.get(Table::Peers, sid, &undone_txn.key).unwrap(), None);
    let values: Vec<Row> = store.scan(Table::Peers, sid).unwrap();
    assert_eq!(values, vec![kept.clone(), undone_op.clone()]);
    // Inserted afterwards, it takes the next place, once.
    store.begin().unwrap();
    let answers = store
        .insert_absent(Table::Peers, sid, &[(undone_txn.clone(), [None, None])])
        .unwrap();
    assert_eq!(answers, [None]);
    store.commit().unwrap();
    drop(store);
    let mut store = SqliteStore::open(&t.db()).unwrap();
    assert_eq!(
        store.scan(Table::Peers, sid).unwrap(),
        vec![kept, undone_op, undone_txn]
    );
}

#[test]
fn a_batch_of_new_peers_is_numbered_in_order_and_a_key_given_twice_inserted_once() {
    let t = TestDir::new();
    let mut store = SqliteStore::open(&t.db()).unwrap();
    let mut rng = Rng(11);
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    let old: Vec<Row> = (0..3).map(|_| random_row(&mut rng)).collect();
    for r in &old {
        store.put(Table::Peers, sid, r, [None, None]).unwrap();
    }
    // 70 new rows (two statements of 32, then 6 one at a time) with, among them, a stored
    // row given with another value, and at the end a new key given a second time.
    let new: Vec<Row> = (0..70).map(|_| random_row(&mut rng)).collect();
    let mut stored_again = old[1].clone();
    stored_again.value = vec![7; 120];
    let mut twice = new[40].clone();
    twice.value = vec![9; 120];
    let mut batch: Vec<Row> = new.clone();
    batch.insert(10, stored_again);
    batch.push(twice);
    let batch: Vec<(Row, [Option<&[u8]>; 2])> =
        batch.into_iter().map(|r| (r, [None, None])).collect();
    let answers = store.insert_absent(Table::Peers, sid, &batch).unwrap();
    let mut expected = vec![None; 72];
    expected[10] = Some(old[1].value.clone());
    expected[71] = Some(new[40].value.clone());
    assert_eq!(answers, expected);
    store.commit().unwrap();
    let all: Vec<Row> = old.iter().chain(&new).cloned().collect();
    assert_eq!(
        store.scan(Table::Peers, sid).unwrap(),
        all,
        "in call order, once each"
    );
    // As the table holds them, read afresh.
    drop(store);
    let mut store = SqliteStore::open(&t.db()).unwrap();
    assert_eq!(store.scan(Table::Peers, sid).unwrap(), all);
    for r in &all {
        assert_eq!(
            store.get(Table::Peers, sid, &r.key).unwrap(),
            Some(r.value.clone())
        );
    }
}

#[tokio::test]
async fn a_peer_key_stored_twice_or_of_the_wrong_length_is_corrupt() {
    for (what, edit) in [
        (
            "stored twice",
            "INSERT INTO peers (session, k, v) SELECT session, k, v FROM peers LIMIT 1",
        ),
        ("of the wrong length", "UPDATE peers SET k = x'0011'"),
    ] {
        let t = TestDir::new();
        let vault = create(&t).await;
        let sid = new_session(&vault, "acct").await;
        vault.cache_peers(sid, vec![user(1)]).await.unwrap();
        close(vault).await;
        raw(&t.db()).execute_batch(edit).unwrap();
        let vault = open(&t);
        vault.unlock(PASS).await.unwrap();
        let sid: SessionId = vault.open_session("acct").await.unwrap();
        let found = vault.peer(sid, user(2).key()).await;
        assert!(
            matches!(found, Err(EngineError::Corrupt { table: "peers", .. })),
            "{what}: {found:?}"
        );
        close(vault).await;
    }
}

#[test]
fn maps_past_the_memory_bound_are_dropped_least_recently_used_first_and_read_again() {
    let t = TestDir::new();
    let mut store = SqliteStore::open(&t.db()).unwrap();
    store.set_peer_keys_max(250);
    let mut rng = Rng(11);
    store.begin().unwrap();
    let sessions: Vec<i64> = (0..3)
        .map(|i| store.insert_session(&format!("s{i}"), 0).unwrap())
        .collect();
    let mut rows = vec![Vec::new(); 3];
    for (i, &sid) in sessions.iter().enumerate() {
        for _ in 0..100 {
            let row = random_row(&mut rng);
            store.put(Table::Peers, sid, &row, [None, None]).unwrap();
            rows[i].push(row);
        }
    }
    // Three maps of 100 keys never fit in 250: the third built dropped the first.
    assert_eq!(store.peer_maps_stats().1, 1);
    // Every session still answers every key, in any order, before and after the commit
    // (each look-up of a dropped map reads it again, dropping another).
    for round in 0..2 {
        for i in [0, 2, 1, 0] {
            for row in &rows[i] {
                assert_eq!(
                    store.get(Table::Peers, sessions[i], &row.key).unwrap(),
                    Some(row.value.clone()),
                    "round {round}, session {i}"
                );
            }
            assert_eq!(
                store
                    .get(Table::Peers, sessions[i], &rows[(i + 1) % 3][0].key)
                    .unwrap(),
                None
            );
        }
        if round == 0 {
            store.commit().unwrap();
        }
    }
    assert!(store.peer_maps_stats().1 >= 3, "maps were read again");
    for &sid in &sessions {
        assert_eq!(
            store.count(Table::Peers, sid).unwrap(),
            100,
            "no key stored twice"
        );
    }
}

#[test]
fn prepare_peers_reads_a_sessions_map_once_and_look_ups_read_nothing_more() {
    let t = TestDir::new();
    let mut rng = Rng(12);
    let rows: Vec<Row> = (0..50).map(|_| random_row(&mut rng)).collect();
    let sid = {
        let mut store = SqliteStore::open(&t.db()).unwrap();
        store.begin().unwrap();
        let sid = store.insert_session("acct", 0).unwrap();
        for row in &rows {
            store.put(Table::Peers, sid, row, [None, None]).unwrap();
        }
        store.commit().unwrap();
        sid
    };
    let mut store = SqliteStore::open(&t.db()).unwrap();
    assert_eq!(store.peer_maps_stats().0, 0, "nothing read at open");
    store.prepare_peers(sid).unwrap();
    assert_eq!(store.peer_maps_stats().0, 1);
    store.prepare_peers(sid).unwrap();
    for row in &rows {
        assert_eq!(
            store.get(Table::Peers, sid, &row.key).unwrap(),
            Some(row.value.clone())
        );
    }
    assert_eq!(
        store.peer_maps_stats().0,
        1,
        "look-ups used the prepared map"
    );
    assert!(
        store.prepare_peers(sid + 1).is_ok(),
        "an empty session prepares too"
    );
}

/// A look-up of a session whose map was dropped (the memory bound) runs on the storage
/// thread, which reads the map again, not inline on the caller's thread: reading a whole
/// session is no job for a runtime thread. Reads and small writes still run inline once the
/// map is back.
#[tokio::test]
async fn a_dropped_map_is_read_again_on_the_storage_thread_not_inline() {
    let (_t, vault, a) = vault_with_session(VaultConfig::default()).await;
    vault
        .with_sqlite_store(|s| s.set_peer_keys_max(150))
        .await
        .unwrap();
    let b = new_session(&vault, "other").await;
    let a_peers: Vec<Peer> = (1..=100).map(user).collect();
    let b_peers: Vec<Peer> = (1001..=1100).map(user).collect();
    vault.cache_peers(a, a_peers.clone()).await.unwrap();
    vault.cache_peers(b, b_peers.clone()).await.unwrap();
    for round in 0..3 {
        for (sid, peers) in [(a, &a_peers), (b, &b_peers)] {
            // The first look-up finds the map dropped (reading the other's dropped it).
            for p in peers.iter().step_by(7) {
                assert_eq!(
                    vault.peer(sid, p.key()).await.unwrap().as_ref(),
                    Some(p),
                    "round {round}"
                );
            }
            // A small write (inline when it can) into the session of the other's map.
            let other = if sid == a { b } else { a };
            let new = user(5000 + round * 10 + i64::from(sid == a));
            vault.cache_peers(other, vec![new.clone()]).await.unwrap();
            assert_eq!(vault.peer(other, new.key()).await.unwrap(), Some(new));
            // Committed (a barrier commits first): a map with uncommitted rows is not dropped.
            vault.with_sqlite_store(|_| ()).await.unwrap();
        }
    }
    let (read, evicted, read_inline) = vault
        .with_sqlite_store(|s| s.peer_maps_stats())
        .await
        .unwrap();
    assert!(
        evicted >= 5 && read >= 6,
        "maps read {read}, dropped {evicted}"
    );
    assert_eq!(read_inline, 0, "no map was read by an inline job");
    close(vault).await;
}
