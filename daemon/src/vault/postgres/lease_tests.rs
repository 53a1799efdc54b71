//! Leases against a holder's open group commit: a second host asking for a live lease is
//! answered `Busy` at once, not after the holder's transaction ends. Skipped with a loud
//! message without PostgreSQL.

use std::sync::mpsc;
use std::time::Duration;

use super::lease::{Acquired, Holder};
use super::test_cluster::Cluster;
use super::{PgTarget, PostgresStore};
use crate::vault::store::{Row, Store, Table};

fn holder(host: &str) -> Holder {
    Holder {
        host: host.into(),
        instance: format!("{host}-instance"),
        pid: Some(7),
        uid: Some(1000),
    }
}

/// The holder's write fences on its lease row (`FOR SHARE`, held until its commit, up to a
/// flush interval later); another store's acquire must not queue behind that lock while the
/// lease is live. Before the fix it waited for the holder's commit (here: forever).
#[test]
fn a_live_lease_is_busy_at_once_while_its_holder_has_a_transaction_open() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL leases under an open transaction")
    else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
    a.begin().unwrap();
    let sid = a.insert_session("leased", 1).unwrap();
    a.commit().unwrap();
    let ttl = Duration::from_secs(60);
    let Acquired::Token(_) = a.acquire_lease(sid, &holder("host-a"), ttl).unwrap() else {
        panic!("a free session's lease is taken");
    };

    // A's group commit: a write fenced (its lease row locked FOR SHARE), not yet committed.
    a.begin().unwrap();
    let row = Row {
        key: b"k".to_vec(),
        value: b"sealed".to_vec(),
    };
    a.put(Table::State, sid, &row, [None, None]).unwrap();

    let (tx, rx) = mpsc::channel();
    let asking = std::thread::spawn(move || {
        let answer = b.acquire_lease(sid, &holder("host-b"), ttl);
        let _ = tx.send(answer.map_err(|e| e.to_string()));
        b
    });
    let answer = rx.recv_timeout(Duration::from_secs(20));
    // Whatever the answer, end A's transaction so that a waiting B finishes too.
    a.commit().unwrap();
    let mut b = asking.join().expect("asking thread");
    match answer {
        Ok(Ok(Acquired::Busy(h))) => assert_eq!(h, holder("host-a")),
        Ok(other) => panic!("a live lease held elsewhere: {other:?}"),
        Err(_) => panic!("the acquire waited for the holder's open transaction"),
    }
    // And once A's transaction is over, still busy (the lease is live), then free once given back.
    assert_eq!(
        b.acquire_lease(sid, &holder("host-b"), ttl).unwrap(),
        Acquired::Busy(holder("host-a"))
    );
    a.release_lease(sid).unwrap();
    assert!(matches!(
        b.acquire_lease(sid, &holder("host-b"), ttl).unwrap(),
        Acquired::Token(_)
    ));
}
