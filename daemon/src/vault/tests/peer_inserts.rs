//! Peer batches whose insert fails: the map of keys stays the table's, and a batch inserted
//! without a savepoint (`Store::unguarded_op`) whose statement fails midway keeps none of its
//! rows. The peers' 32-row statements are `INSERT OR FAIL` (no statement journal), so the
//! rows before the failing one stay written; the store must then refuse to end the operation
//! as if nothing happened, so that the worker rolls the whole transaction back
//! (`Worker::undo_unguarded`) instead of committing part of a failed batch.

use super::peer_rows::random_row;
use super::support::*;
use crate::vault::sqlite::SqliteStore;
use crate::vault::store::{Row, Store, Table};

#[test]
fn a_batch_failing_midway_without_a_savepoint_keeps_none_of_its_rows() {
    let t = TestDir::new();
    let mut rng = Rng(21);
    // A rowid the batch's first 32-row statement will use, past its first rows, is taken:
    // those are inserted before the statement fails.
    let (mut store, sid, old, intruder) = store_with_intruder(&t, &mut rng, 1, 11);
    let new: Vec<Row> = (0..40).map(|_| random_row(&mut rng)).collect();
    let batch: Vec<(Row, [Option<&[u8]>; 2])> =
        new.iter().map(|r| (r.clone(), [None, None])).collect();
    // An acknowledged write earlier in the same transaction, as a group commit holds.
    let before = random_row(&mut rng);
    store.begin().unwrap();
    assert!(store.unguarded_op().unwrap());
    store.put(Table::Peers, sid, &before, [None, None]).unwrap();
    assert!(store.release_op().unwrap().is_ok());
    assert!(store.unguarded_op().unwrap());
    assert!(store.insert_absent(Table::Peers, sid, &batch).is_err());
    match store.rollback_to_savepoint() {
        // Said to have written nothing: then nothing of the batch may be in the table.
        Ok(()) => {}
        // It wrote: the whole transaction is rolled back (the worker then re-applies the
        // acknowledged writes before it).
        Err(_) => {
            store.rollback().unwrap();
            store.begin().unwrap();
            store.put(Table::Peers, sid, &before, [None, None]).unwrap();
        }
    }
    for r in &new {
        assert_eq!(store.get(Table::Peers, sid, &r.key).unwrap(), None);
    }
    store.commit().unwrap();
    let all: Vec<Row> = old.into_iter().chain([intruder, before]).collect();
    assert_eq!(store.scan(Table::Peers, sid).unwrap(), all);
    // Tried again: the map is read from the table, and the whole batch goes in.
    store.begin().unwrap();
    let answers = store.insert_absent(Table::Peers, sid, &batch).unwrap();
    assert!(answers.iter().all(Option::is_none));
    store.commit().unwrap();
    for r in &new {
        assert_eq!(
            store.get(Table::Peers, sid, &r.key).unwrap(),
            Some(r.value.clone())
        );
    }
}

/// A store with a session of `old` random peers, committed, and a row another writer (an
/// edited file: the store is the only one) put at the rowid `offset` after the first one the
/// session's map gives next: a batch of new peers fails at that row. Answers the store, the
/// session, the old rows and the intruder's.
fn store_with_intruder(
    t: &TestDir,
    rng: &mut Rng,
    old: usize,
    offset: i64,
) -> (SqliteStore, i64, Vec<Row>, Row) {
    let mut store = SqliteStore::open(&t.db()).unwrap();
    store.begin().unwrap();
    let sid = store.insert_session("acct", 0).unwrap();
    let old: Vec<Row> = (0..old).map(|_| random_row(rng)).collect();
    for r in &old {
        store.put(Table::Peers, sid, r, [None, None]).unwrap();
    }
    store.commit().unwrap();
    let (first, _) = crate::vault::sqlite::peer_rowids(sid).unwrap();
    let intruder = random_row(rng);
    rusqlite::Connection::open(t.db())
        .unwrap()
        .execute(
            "INSERT INTO peers (id, session, k, v) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![first + offset, sid, intruder.key, intruder.value],
        )
        .unwrap();
    (store, sid, old, intruder)
}

#[test]
fn a_batch_whose_insert_fails_leaves_the_map_as_the_table_is() {
    let t = TestDir::new();
    let mut rng = Rng(12);
    // The rowid the map gives third is taken, so that the batch's first statement fails.
    let (mut store, sid, old, intruder) = store_with_intruder(&t, &mut rng, 2, 3);
    let new: Vec<Row> = (0..40).map(|_| random_row(&mut rng)).collect();
    let batch: Vec<(Row, [Option<&[u8]>; 2])> =
        new.iter().map(|r| (r.clone(), [None, None])).collect();
    store.begin().unwrap();
    store.savepoint().unwrap();
    assert!(store.insert_absent(Table::Peers, sid, &batch).is_err());
    store.rollback_to_savepoint().unwrap();
    for r in &new {
        assert_eq!(store.get(Table::Peers, sid, &r.key).unwrap(), None);
    }
    // Tried again: the map is read from the table, the intruder's row with it.
    let answers = store.insert_absent(Table::Peers, sid, &batch).unwrap();
    assert!(answers.iter().all(Option::is_none));
    store.commit().unwrap();
    let all: Vec<Row> = old.iter().chain([&intruder]).chain(&new).cloned().collect();
    assert_eq!(store.scan(Table::Peers, sid).unwrap(), all);
    for r in &all {
        assert_eq!(
            store.get(Table::Peers, sid, &r.key).unwrap(),
            Some(r.value.clone())
        );
    }
}
