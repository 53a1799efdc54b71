//! The lease holder's row cache at the PostgreSQL store (`postgres::cache`): reads it answers
//! send nothing, and whatever another writer did to the session while this store did not hold
//! its lease is read from the server, never from the cache.

use std::time::Duration;

use super::{holder, new_database};
use crate::vault::error::EngineError;
use crate::vault::postgres::hosts_tests::new_session;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::postgres::{Acquired, Holder, PostgresStore};
use crate::vault::store::{Row, Store, Table};
use crate::vault::worker::run_inline;

const TTL: Duration = Duration::from_secs(30);

fn row(k: &[u8], v: &[u8]) -> Row {
    Row {
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

/// One committed transaction putting `k = v` into `sid`'s peers.
fn put(s: &mut PostgresStore, sid: i64, k: &[u8], v: &[u8]) {
    s.begin().unwrap();
    s.savepoint().unwrap();
    s.put(Table::Peers, sid, &row(k, v), [None, None]).unwrap();
    s.release_op().unwrap().unwrap();
    s.commit().unwrap();
}

fn take(s: &mut PostgresStore, sid: i64, h: &Holder) {
    let got = s.acquire_lease(sid, h, TTL).unwrap();
    assert!(matches!(got, Acquired::Token(_)), "{got:?}");
}

/// `get` of `k`, and whether it was sent to the server.
fn read(s: &mut PostgresStore, sid: i64, k: &[u8]) -> (Option<Vec<u8>>, bool) {
    let before = s.point_reads();
    let v = s.get(Table::Peers, sid, k).unwrap();
    (v, s.point_reads() != before)
}

#[test]
fn a_holders_cache_answers_its_reads_and_never_what_another_writer_changed() {
    let Some(cluster) = Cluster::start_or_skip("the lease holder's row cache") else {
        return;
    };
    let (_dir, db, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).unwrap();
    let mut b = PostgresStore::open(target).unwrap();
    let (ha, hb) = (holder("host-a", 11), holder("host-b", 22));
    let sid = new_session(&mut a, "cached");
    let other = new_session(&mut a, "b's own");

    // The holder's committed writes and the reads it made are answered in-process; with the
    // peer keys loaded, a peer never written is known absent without asking.
    take(&mut a, sid, &ha);
    a.prepare_peers(sid).unwrap();
    put(&mut a, sid, b"k1", b"v1");
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1".to_vec()), false));
    assert_eq!(read(&mut a, sid, b"new"), (None, false));
    let before = a.point_reads();
    let many = a
        .get_many(Table::Peers, sid, &[b"k1".as_slice(), b"new2".as_slice()])
        .unwrap();
    assert_eq!(many, vec![Some(b"v1".to_vec()), None]);
    assert_eq!(a.point_reads(), before, "get_many answered by the cache");

    // A rolled-back write leaves the committed value; a committed one replaces it.
    a.begin().unwrap();
    a.savepoint().unwrap();
    a.put(Table::Peers, sid, &row(b"k1", b"rolled back"), [None, None])
        .unwrap();
    a.release_op().unwrap().unwrap();
    assert_eq!(
        a.get(Table::Peers, sid, b"k1").unwrap(),
        Some(b"rolled back".to_vec())
    );
    a.rollback().unwrap();
    assert_eq!(read(&mut a, sid, b"k1").0, Some(b"v1".to_vec()));
    put(&mut a, sid, b"k1", b"v1b");
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1b".to_vec()), false));

    // The engine tells the store its key after every re-read of its state (each failed
    // write): the same key keeps the cache; another (or none: locked) drops it, and the
    // sessions are cached again from their next lease take.
    a.set_data_key_id(None);
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1b".to_vec()), false));
    a.set_data_key_id(Some([7; 16]));
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1b".to_vec()), true));
    assert!(read(&mut a, sid, b"k1").1, "dropped until taken again");
    take(&mut a, sid, &ha);
    a.prepare_peers(sid).unwrap();
    assert!(read(&mut a, sid, b"k1").1);
    a.set_data_key_id(Some([7; 16]));
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1b".to_vec()), false));

    // Written, then sent before the commit (a scan sends the held writes first): the
    // transaction reads its own write, and once committed the cache has it.
    a.begin().unwrap();
    a.savepoint().unwrap();
    a.put(Table::Peers, sid, &row(b"k3", b"sent early"), [None, None])
        .unwrap();
    a.release_op().unwrap().unwrap();
    assert_eq!(a.scan(Table::Peers, sid).unwrap().len(), 2);
    assert_eq!(
        read(&mut a, sid, b"k3"),
        (Some(b"sent early".to_vec()), true)
    );
    a.commit().unwrap();
    assert_eq!(
        read(&mut a, sid, b"k3"),
        (Some(b"sent early".to_vec()), false)
    );

    // Run inline (a point read on a runtime thread), the store answers what needs no
    // statement and refuses the rest before sending anything, its held writes kept.
    assert_eq!(
        run_inline(|| a.get(Table::Peers, sid, b"k1")).unwrap(),
        Some(b"v1b".to_vec())
    );
    assert_eq!(
        run_inline(|| a.get(Table::Peers, sid, b"new3")).unwrap(),
        None
    );
    let before = a.point_reads();
    let refused = run_inline(|| a.get(Table::State, sid, b"never read"));
    assert!(
        matches!(refused, Err(EngineError::NotInline)),
        "{refused:?}"
    );
    assert_eq!(a.point_reads(), before);
    a.begin().unwrap();
    a.savepoint().unwrap();
    a.put(Table::Peers, sid, &row(b"k4", b"held"), [None, None])
        .unwrap();
    a.release_op().unwrap().unwrap();
    let refused = run_inline(|| a.scan(Table::Peers, sid));
    assert!(
        matches!(refused, Err(EngineError::NotInline)),
        "{refused:?}"
    );
    a.commit().unwrap();
    assert_eq!(read(&mut a, sid, b"k4"), (Some(b"held".to_vec()), false));

    // Given back and taken again with nobody writing meanwhile: the cache is kept (this
    // store's own writes did not clear the lease's cache owner).
    a.release_lease(sid).unwrap();
    take(&mut a, sid, &ha);
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"v1b".to_vec()), false));

    // Given back; another daemon (one that holds a lease of its own, so its connection
    // names its instance) writes the session; taken again: read from the server.
    a.release_lease(sid).unwrap();
    take(&mut b, other, &hb);
    put(&mut b, sid, b"k1", b"from b");
    put(&mut b, sid, b"k2", b"new from b");
    take(&mut a, sid, &ha);
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"from b".to_vec()), true));
    a.prepare_peers(sid).unwrap();
    assert_eq!(read(&mut a, sid, b"k2").0, Some(b"new from b".to_vec()));

    // A writer that knows nothing of the cache (a `vaultd` of an older schema, a hand-made
    // fix) is caught by the trigger all the same.
    a.release_lease(sid).unwrap();
    cluster.psql(
        &db,
        &format!(
            "UPDATE peers SET v = '\\x6f6c64'::bytea WHERE session = {sid} AND k = '\\x6b31'::bytea"
        ),
    );
    take(&mut a, sid, &ha);
    assert_eq!(read(&mut a, sid, b"k1"), (Some(b"old".to_vec()), true));

    // A lease lapsed and taken over: past its expiry as this host counts it, the old holder
    // asks the server (here before any renewal told it the lease was lost).
    let short = Duration::from_millis(300);
    a.release_lease(sid).unwrap();
    assert!(matches!(
        a.acquire_lease(sid, &ha, short).unwrap(),
        Acquired::Token(_)
    ));
    assert_eq!(read(&mut a, sid, b"k1").0, Some(b"old".to_vec()));
    assert!(
        !read(&mut a, sid, b"k1").1,
        "answered while the lease is live"
    );
    std::thread::sleep(Duration::from_millis(400));
    take(&mut b, sid, &hb);
    put(&mut b, sid, b"k1", b"taken over");
    assert_eq!(
        read(&mut a, sid, b"k1"),
        (Some(b"taken over".to_vec()), true)
    );
    b.release_lease(sid).unwrap();
    // And its re-take finds another instance named as the cache's owner.
    take(&mut a, sid, &ha);
    assert_eq!(
        read(&mut a, sid, b"k1"),
        (Some(b"taken over".to_vec()), true)
    );
}

/// A database an older `vaultd` left at schema 4, with a session, a peer and a live lease of
/// that daemon's instance: it migrates, and the lease taken again by the same instance keeps
/// no cache (none was kept under schema 4), then fills one as ever.
#[test]
fn a_schema_4_database_migrates_and_no_lease_of_it_keeps_a_cache() {
    let Some(cluster) = Cluster::start_or_skip("the row cache's migration") else {
        return;
    };
    let (_dir, db, target) = new_database(&cluster);
    let mut sql = String::from(
        "CREATE TABLE session_vault_schema (application TEXT NOT NULL, version INTEGER NOT NULL);
         INSERT INTO session_vault_schema VALUES ('session-vault', 4);",
    );
    for step in &crate::vault::postgres::MIGRATIONS[..4] {
        sql.push_str(step);
        sql.push(';');
    }
    sql.push_str(
        "INSERT INTO sessions (name, created_at, updated_at, record) VALUES ('old', 1, 1, '\\x00');
         INSERT INTO peers (session, k, v) VALUES (1, '\\x6b', '\\x76');
         INSERT INTO leases VALUES (1, 7, 'host-a', 'host-a-instance', 11, 1000, 'infinity');",
    );
    cluster.psql(&db, &sql);

    let mut a = PostgresStore::open(target).unwrap();
    assert_eq!(
        cluster.psql(&db, "SELECT version FROM session_vault_schema"),
        crate::vault::postgres::SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        cluster.psql(&db, "SELECT coalesce(cache_owner, '(none)') FROM leases"),
        "(none)"
    );
    take(&mut a, 1, &holder("host-a", 11));
    assert_eq!(read(&mut a, 1, b"k"), (Some(b"v".to_vec()), true));
    assert_eq!(read(&mut a, 1, b"k"), (Some(b"v".to_vec()), false));
}
