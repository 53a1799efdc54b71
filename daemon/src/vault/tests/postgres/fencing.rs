//! Leases with fencing tokens at the PostgreSQL store: a live lease keeps the session busy
//! for other stores, a lapsed one passes on, and the old holder's writes, whole operations
//! of them, are refused.

use std::time::Duration;

use super::{holder, two_stores};
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::postgres::{Acquired, PostgresStore};
use crate::vault::store::{Index, Row, Store, Table};

/// Leases with fencing tokens, at the store: a live lease makes the session busy elsewhere
/// (naming the holder and its host), renewal keeps it, and once it lapsed and another store
/// took it over, the old holder's writes are refused while nothing acknowledged is lost.
#[test]
fn a_lapsed_lease_is_fenced_and_a_live_one_is_busy_elsewhere() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL leases") else {
        return;
    };
    let (_dir, mut a, mut b) = two_stores(&cluster);
    let row = |k: &[u8]| Row {
        key: k.to_vec(),
        value: b"sealed".to_vec(),
    };
    let write = |s: &mut PostgresStore, sid: i64, k: &[u8]| {
        s.begin()?;
        let r = s.put(Table::State, sid, &row(k), [None, None]);
        match r {
            Ok(()) => s.commit(),
            Err(e) => {
                s.rollback()?;
                Err(e)
            }
        }
    };
    a.begin().unwrap();
    let sid = a.insert_session("leased", 1).unwrap();
    a.commit().unwrap();
    let (ha, hb) = (holder("host-a", 11), holder("host-b", 22));
    let ttl = Duration::from_millis(400);

    let Acquired::Token(ta) = a.acquire_lease(sid, &ha, ttl).unwrap() else {
        panic!("a free session's lease is taken");
    };
    assert_eq!(
        b.acquire_lease(sid, &hb, ttl).unwrap(),
        Acquired::Busy(ha.clone())
    );
    write(&mut a, sid, b"k1").expect("the holder writes");
    let refused = write(&mut b, sid, b"kb").expect_err("another store may not write");
    assert!(refused.to_string().contains("host-a"), "{refused}");

    // Renewed while the holder lives: still busy after more than one ttl.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.renew_leases(ttl).unwrap().is_empty(), "renewed");
    }
    assert!(matches!(
        b.acquire_lease(sid, &hb, ttl).unwrap(),
        Acquired::Busy(_)
    ));

    // The holder pauses past its expiry; another takes over with a larger token.
    std::thread::sleep(Duration::from_millis(600));
    let Acquired::Token(tb) = b.acquire_lease(sid, &hb, ttl).unwrap() else {
        panic!("an expired lease is taken over");
    };
    assert!(tb > ta, "fencing tokens grow");
    // The old holder resumes: its write is refused (fenced), its renewal reports the loss.
    let fenced = write(&mut a, sid, b"k2").expect_err("a lapsed holder's write is refused");
    assert!(fenced.to_string().contains("stale"), "{fenced}");
    assert!(
        a.renew_leases(ttl).unwrap().is_empty(),
        "nothing left to renew"
    );
    write(&mut b, sid, b"k3").expect("the new holder writes");
    assert!(
        b.get(Table::State, sid, b"k1").unwrap().is_some(),
        "acknowledged write kept"
    );
    assert!(
        b.get(Table::State, sid, b"k2").unwrap().is_none(),
        "fenced write absent"
    );

    // Released: free at once for the other.
    b.release_lease(sid).unwrap();
    assert!(matches!(a.acquire_lease(sid, &ha, ttl).unwrap(), Acquired::Token(t) if t > tb));
}

/// The worker's operations, each in a savepoint, have their row writes deferred, checked
/// (fencing) at `release_op` and then held until the commit (`postgres::Deferred`, `Held`).
/// An operation whose fencing check fails there leaves none of its rows, including rows of
/// another session it wrote, rows already sent mid-operation and its overwrite of a row an
/// earlier operation wrote (held), while the operations before and after it in the same
/// transaction keep theirs; and a read inside an operation sees its deferred writes.
#[test]
fn a_fenced_operation_leaves_no_row_and_its_neighbours_keep_theirs() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL deferred writes") else {
        return;
    };
    let (_dir, mut a, mut b) = two_stores(&cluster);
    let row = |k: &[u8], v: &[u8]| Row {
        key: k.to_vec(),
        value: v.to_vec(),
    };
    a.begin().unwrap();
    let free = a.insert_session("free", 1).unwrap();
    let leased = a.insert_session("leased", 1).unwrap();
    a.commit().unwrap();
    let ttl = Duration::from_millis(300);
    assert!(matches!(
        a.acquire_lease(leased, &holder("host-a", 1), ttl).unwrap(),
        Acquired::Token(_)
    ));

    a.begin().unwrap();
    // 1: kept.
    a.savepoint().unwrap();
    a.put(Table::Peers, free, &row(b"k1", b"v1"), [Some(b"u1"), None])
        .unwrap();
    a.put(Table::Peers, free, &row(b"k1", b"v1b"), [Some(b"u1"), None])
        .unwrap();
    assert_eq!(
        a.get(Table::Peers, free, b"k1").unwrap().as_deref(),
        Some(&b"v1b"[..]),
        "a read inside the operation sees its deferred write"
    );
    assert_eq!(
        a.get_many(Table::Peers, free, &[b"k1", b"kx", b"k1"])
            .unwrap(),
        [Some(b"v1b".to_vec()), None, Some(b"v1b".to_vec())],
        "so does a read of several rows"
    );
    a.release_op().unwrap().expect("operation 1 kept");

    // The lease of `leased` lapses and passes to b meanwhile.
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(
        b.acquire_lease(leased, &holder("host-b", 1), ttl).unwrap(),
        Acquired::Token(_)
    ));

    // 2: writes the free session (sent mid-operation by a scan), then the leased one.
    a.savepoint().unwrap();
    a.put(Table::Peers, free, &row(b"k2", b"v2"), [None, None])
        .unwrap();
    assert_eq!(a.scan(Table::Peers, free).unwrap().len(), 2, "k1 and k2");
    a.put_last(Table::Channels, leased, &row(b"c1", b"v"))
        .unwrap();
    a.clear(Table::Channels, leased).unwrap();
    assert_eq!(a.get(Table::Channels, leased, b"c1").unwrap(), None);
    // Overwrites a row operation 1 wrote (held by the transaction, not sent yet).
    a.put(
        Table::Peers,
        free,
        &row(b"k1", b"lost"),
        [Some(b"u9"), None],
    )
    .unwrap();
    assert_eq!(
        a.get(Table::Peers, free, b"k1").unwrap().as_deref(),
        Some(&b"lost"[..])
    );
    a.put(Table::State, leased, &row(b"s1", b"v"), [None, None])
        .unwrap();
    let fenced = a
        .release_op()
        .expect("the transaction survives")
        .expect_err("a stale token's operation is refused");
    assert!(fenced.to_string().contains("stale"), "{fenced}");
    assert_eq!(
        a.get(Table::Peers, free, b"k1").unwrap().as_deref(),
        Some(&b"v1b"[..]),
        "the refused operation's overwrite is gone, the earlier operation's value held"
    );

    // 3: kept, in the same transaction.
    a.savepoint().unwrap();
    a.put(Table::Peers, free, &row(b"k3", b"v3"), [None, None])
        .unwrap();
    a.touch_session(free, 7).unwrap();
    // More than an operation holds back (1 MiB): sent in parts, still one operation.
    let big = vec![0xa5; 400];
    for i in 0..3000u32 {
        a.put(
            Table::SentFiles,
            free,
            &row(&i.to_be_bytes(), &big),
            [None, None],
        )
        .unwrap();
    }
    assert_eq!(
        a.get(Table::SentFiles, free, &0u32.to_be_bytes()).unwrap(),
        Some(big.clone())
    );
    a.release_op().unwrap().expect("operation 3 kept");
    a.commit().unwrap();

    let keys = |s: &mut PostgresStore, table, sid| -> Vec<Vec<u8>> {
        s.scan(table, sid)
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect()
    };
    assert_eq!(
        keys(&mut b, Table::Peers, free),
        [b"k1".to_vec(), b"k3".to_vec()]
    );
    assert_eq!(
        b.get(Table::Peers, free, b"k1").unwrap().as_deref(),
        Some(&b"v1b"[..])
    );
    assert_eq!(
        b.get_many(Table::Peers, free, &[b"k3", b"k2", b"k1"])
            .unwrap(),
        [Some(b"v3".to_vec()), None, Some(b"v1b".to_vec())]
    );
    assert_eq!(b.count(Table::SentFiles, free).unwrap(), 3000);
    assert_eq!(
        b.find(Table::Peers, free, Index::Username, b"u1")
            .unwrap()
            .map(|r| r.key),
        Some(b"k1".to_vec()),
        "k1 keeps its username, the refused overwrite's is nowhere"
    );
    assert_eq!(
        b.find(Table::Peers, free, Index::Username, b"u9").unwrap(),
        None
    );
    assert!(keys(&mut b, Table::Channels, leased).is_empty());
    assert!(keys(&mut b, Table::State, leased).is_empty());
    assert_eq!(b.session(free).unwrap().expect("free").updated_at, 7);
}
