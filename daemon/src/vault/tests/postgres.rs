//! The engine suite on the PostgreSQL store: every test below, written for SQLite, runs
//! again with its vault in a fresh database of one throwaway cluster
//! ([`crate::vault::postgres::test_cluster`]), through [`with_postgres`]. Tests that read or
//! edit the SQLite file itself (crash images, tampering, file migrations, backups) stay
//! SQLite-only; the plaintext scan runs over a `pg_dump` (raw and with `bytea` decoded) and
//! the database's files in the cluster.
//!
//! One cluster for the whole group (initdb + start cost ~1–2 s); skipped with a loud message
//! when PostgreSQL is not installed.

use std::sync::Arc;

use super::support::with_postgres;
use crate::vault::postgres::test_cluster::Cluster;

/// The store-agnostic tests of the suite, by name.
const CASES: &[(&str, fn())] = &[
    (
        "roundtrip::full_session_round_trips_through_lock_and_reopen",
        super::roundtrip::full_session_round_trips_through_lock_and_reopen,
    ),
    (
        "semantics::update_state_changes_follow_memory_session",
        super::semantics::update_state_changes_follow_memory_session,
    ),
    (
        "semantics::peer_pages_list_every_peer_newest_first",
        super::semantics::peer_pages_list_every_peer_newest_first,
    ),
    (
        "semantics::a_later_cache_of_a_peer_merges_field_by_field",
        super::semantics::a_later_cache_of_a_peer_merges_field_by_field,
    ),
    (
        "semantics::a_peer_cached_as_self_becomes_the_self_user",
        super::semantics::a_peer_cached_as_self_becomes_the_self_user,
    ),
    (
        "semantics::a_username_moved_to_another_peer_resolves_to_the_new_holder",
        super::semantics::a_username_moved_to_another_peer_resolves_to_the_new_holder,
    ),
    (
        "semantics::caching_peers_by_insert_first_reads_back_as_by_read_first",
        super::semantics::caching_peers_by_insert_first_reads_back_as_by_read_first,
    ),
    (
        "durability::cache_writes_are_visible_at_once_and_durable_within_the_flush_interval",
        super::durability::cache_writes_are_visible_at_once_and_durable_within_the_flush_interval,
    ),
    (
        "durability::cache_writes_wait_for_the_timer_or_ride_along_with_a_durable_commit",
        super::durability::cache_writes_wait_for_the_timer_or_ride_along_with_a_durable_commit,
    ),
    (
        "durability::a_refused_write_leaves_nothing_behind",
        super::durability::a_refused_write_leaves_nothing_behind,
    ),
    (
        "passphrase::wrong_passphrase_is_refused_and_changes_nothing",
        super::passphrase::wrong_passphrase_is_refused_and_changes_nothing,
    ),
    (
        "passphrase::changed_passphrase_keeps_the_data_and_retires_the_old_one",
        super::passphrase::changed_passphrase_keeps_the_data_and_retires_the_old_one,
    ),
    (
        "passphrase::passphrase_change_with_a_wrong_old_passphrase_is_refused",
        super::passphrase::passphrase_change_with_a_wrong_old_passphrase_is_refused,
    ),
    (
        "passphrase::empty_passphrase_is_refused_at_init",
        super::passphrase::empty_passphrase_is_refused_at_init,
    ),
    (
        "passphrase::init_twice_is_refused",
        super::passphrase::init_twice_is_refused,
    ),
    (
        "passphrase::every_operation_is_refused_while_locked",
        super::passphrase::every_operation_is_refused_while_locked,
    ),
    (
        "passphrase::every_operation_is_refused_while_uninitialized",
        super::passphrase::every_operation_is_refused_while_uninitialized,
    ),
    (
        "passphrase::lookups_with_empty_keys_are_refused_while_locked",
        super::passphrase::lookups_with_empty_keys_are_refused_while_locked,
    ),
    (
        "recovery::a_second_add_replaces_the_first_key",
        super::recovery::a_second_add_replaces_the_first_key,
    ),
    (
        "recovery::forgotten_passphrase_is_replaced_with_the_recovery_key",
        super::recovery::forgotten_passphrase_is_replaced_with_the_recovery_key,
    ),
    (
        "recovery::rekey_drops_the_recovery_key",
        super::recovery::rekey_drops_the_recovery_key,
    ),
    (
        "recovery::a_removed_or_replaced_recovery_keyslot_put_back_is_corrupt",
        super::recovery::a_removed_or_replaced_recovery_keyslot_put_back_is_corrupt,
    ),
    (
        "recovery::adding_or_removing_needs_the_vault_unlocked",
        super::recovery::adding_or_removing_needs_the_vault_unlocked,
    ),
    (
        "rollback::a_manifest_rolled_back_under_newer_records_is_corrupt",
        super::rollback::a_manifest_rolled_back_under_newer_records_is_corrupt,
    ),
    (
        "plaintext::no_secret_reaches_the_disk_in_plaintext",
        super::plaintext::no_secret_reaches_the_disk_in_plaintext,
    ),
];

/// A new database of `cluster`, its name and a target for it, with the password in a file of
/// the returned temp dir (keep it while the target is used).
fn new_database(
    cluster: &Cluster,
) -> (tempfile::TempDir, String, crate::vault::postgres::PgTarget) {
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = crate::vault::postgres::PgTarget::with_password_from(&cluster.url(&db), Some(&pw))
        .expect("target");
    (dir, db, target)
}

#[test]
fn the_engine_suite_passes_on_postgres() {
    let Some(cluster) = Cluster::start_or_skip("the engine suite on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    let started = std::time::Instant::now();
    for (name, case) in CASES {
        let t = std::time::Instant::now();
        eprintln!("postgres: {name} ...");
        with_postgres(&cluster, case);
        eprintln!("postgres: {name}: ok in {} ms", t.elapsed().as_millis());
    }
    eprintln!(
        "postgres: {} cases in {:.1} s",
        CASES.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Leases with fencing tokens, at the store: a live lease makes the session busy elsewhere
/// (naming the holder and its host), renewal keeps it, and once it lapsed and another store
/// took it over, the old holder's writes are refused while nothing acknowledged is lost.
#[test]
fn a_lapsed_lease_is_fenced_and_a_live_one_is_busy_elsewhere() {
    use std::time::Duration;

    use crate::vault::postgres::{Acquired, Holder, PostgresStore};
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL leases") else {
        return;
    };
    let (_dir, _, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
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
    let holder = |host: &str, pid| Holder {
        host: host.into(),
        instance: format!("{host}-instance"),
        pid: Some(pid),
        uid: Some(1000),
    };
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

/// Two daemons never overwrite each other's manifest: the second write over a manifest it
/// did not see is refused, and goes through once it has re-read it.
#[test]
fn a_manifest_changed_by_another_store_is_not_overwritten() {
    use crate::vault::postgres::PostgresStore;
    use crate::vault::store::Store;

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL manifest compare-and-set") else {
        return;
    };
    let (_dir, _, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
    assert_eq!(a.manifest().unwrap(), None);
    assert_eq!(b.manifest().unwrap(), None);
    assert!(!a.manifest_changed().unwrap(), "nothing changed yet");
    b.put_manifest(b"m1").expect("first manifest");
    assert!(!b.manifest_changed().unwrap(), "b wrote it itself");
    assert!(a.manifest_changed().unwrap(), "a sees b's change");
    let err = a
        .put_manifest(b"m2")
        .expect_err("a manifest written over an unseen one");
    assert!(crate::vault::postgres::is_conflict(&err), "{err}");
    assert!(err.to_string().contains("another vaultd changed"), "{err}");
    // A rolled-back write leaves what was seen as it was.
    b.begin().unwrap();
    b.put_manifest(b"m3").unwrap();
    b.rollback().unwrap();
    b.put_manifest(b"m4").expect("b still knows m1");
    assert_eq!(a.manifest().unwrap().as_deref(), Some(&b"m4"[..]));
    a.put_manifest(b"m5").expect("after re-reading");
    assert!(b.put_manifest(b"m6").is_err(), "b has not seen m5");
}

/// The worker's operations, each in a savepoint, have their row writes deferred, checked
/// (fencing) at `release_op` and then held until the commit (`postgres::Deferred`, `Held`).
/// An operation whose fencing check fails there leaves none of its rows, including rows of
/// another session it wrote, rows already sent mid-operation and its overwrite of a row an
/// earlier operation wrote (held), while the operations before and after it in the same
/// transaction keep theirs; and a read inside an operation sees its deferred writes.
#[test]
fn a_fenced_operation_leaves_no_row_and_its_neighbours_keep_theirs() {
    use std::time::Duration;

    use crate::vault::postgres::{Acquired, Holder, PostgresStore};
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL deferred writes") else {
        return;
    };
    let (_dir, _, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
    let row = |k: &[u8], v: &[u8]| Row {
        key: k.to_vec(),
        value: v.to_vec(),
    };
    a.begin().unwrap();
    let free = a.insert_session("free", 1).unwrap();
    let leased = a.insert_session("leased", 1).unwrap();
    a.commit().unwrap();
    let holder = |host: &str| Holder {
        host: host.into(),
        instance: format!("{host}-instance"),
        pid: Some(1),
        uid: Some(1000),
    };
    let ttl = Duration::from_millis(300);
    assert!(matches!(
        a.acquire_lease(leased, &holder("host-a"), ttl).unwrap(),
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
        b.acquire_lease(leased, &holder("host-b"), ttl).unwrap(),
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
        b.find(
            Table::Peers,
            free,
            crate::vault::store::Index::Username,
            b"u1"
        )
        .unwrap()
        .map(|r| r.key),
        Some(b"k1".to_vec()),
        "k1 keeps its username, the refused overwrite's is nowhere"
    );
    assert_eq!(
        b.find(
            Table::Peers,
            free,
            crate::vault::store::Index::Username,
            b"u9"
        )
        .unwrap(),
        None
    );
    assert!(keys(&mut b, Table::Channels, leased).is_empty());
    assert!(keys(&mut b, Table::State, leased).is_empty());
    assert_eq!(b.session(free).unwrap().expect("free").updated_at, 7);
}

/// One row write of [`held_writes_leave_what_the_writes_left`]'s script.
#[derive(Clone, Copy)]
enum W<'a> {
    Put(
        crate::vault::store::Table,
        usize,
        &'a [u8],
        &'a [u8],
        [Option<&'a [u8]>; 2],
    ),
    PutLast(crate::vault::store::Table, usize, &'a [u8], &'a [u8]),
    Clear(crate::vault::store::Table, usize),
    Touch(usize, i64),
}

/// The transaction's held writes (`postgres::Held`): operations' row writes are kept on the
/// client, one version per row, and sent at `COMMIT`. The same script of operations, run
/// once in one transaction (held, coalesced) and once with every write sent and committed
/// on its own, leaves the same rows: values, index values (taken over by later writes of
/// other rows), row order (`seq`: first insert, `put_last` moves a row to the end, `put`
/// keeps its place), clears followed by writes, `updated_at`. Rolled-back operations leave
/// nothing, including their overwrite of a row an earlier operation wrote; a row rewritten by
/// 200 operations is held once and reaches the table as one row version.
#[test]
fn held_writes_leave_what_the_writes_left() {
    use crate::vault::postgres::PostgresStore;
    use crate::vault::store::{Index, Row, Store, Table};
    use W::*;

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL held writes") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let (held_db, ref_db) = (cluster.create_database(), cluster.create_database());
    let open = |db: &str| {
        let target =
            crate::vault::postgres::PgTarget::with_password_from(&cluster.url(db), Some(&pw))
                .expect("target");
        PostgresStore::open(target).expect("store")
    };
    let (mut a, mut r) = (open(&held_db), open(&ref_db));
    let mut sids = Vec::new();
    for s in [&mut a, &mut r] {
        s.begin().unwrap();
        let ids = [
            s.insert_session("one", 1).unwrap(),
            s.insert_session("two", 1).unwrap(),
        ];
        s.commit().unwrap();
        sids.push(ids);
    }
    assert_eq!(sids[0], sids[1], "the same session ids in both databases");
    let sid = sids[0];
    let apply = |s: &mut PostgresStore, w: W| match w {
        Put(t, i, k, v, idx) => s.put(
            t,
            sid[i],
            &Row {
                key: k.to_vec(),
                value: v.to_vec(),
            },
            idx,
        ),
        PutLast(t, i, k, v) => s.put_last(
            t,
            sid[i],
            &Row {
                key: k.to_vec(),
                value: v.to_vec(),
            },
        ),
        Clear(t, i) => s.clear(t, sid[i]),
        Touch(i, now) => s.touch_session(sid[i], now),
    };
    // Rows both databases have before the transaction (committed, one statement each).
    let before = [
        Put(Table::Peers, 1, b"old1", b"o1", [Some(b"u-old"), None]),
        Put(Table::Peers, 1, b"old2", b"o2", [None, Some(b"p-old")]),
        PutLast(Table::Channels, 0, b"ch-old", b"c0"),
        PutLast(Table::Channels, 0, b"ch-old2", b"c0b"),
        Put(Table::Peers, 0, b"srv", b"s0", [Some(b"u-srv"), None]),
    ];
    for s in [&mut a, &mut r] {
        s.begin().unwrap();
        for w in before {
            apply(s, w).unwrap();
        }
        s.commit().unwrap();
    }
    // (writes, whether the operation fails and is rolled back)
    let ops: Vec<(Vec<W<'static>>, bool)> = vec![
        (
            vec![
                Put(Table::Peers, 0, b"A", b"a1", [Some(b"u"), None]),
                Put(Table::Peers, 0, b"B", b"b1", [Some(b"v"), Some(b"ph")]),
            ],
            false,
        ),
        // B takes username u from A, then moves to w: A has no username any more.
        (
            vec![Put(Table::Peers, 0, b"B", b"b2", [Some(b"u"), Some(b"ph")])],
            false,
        ),
        (
            vec![
                Put(Table::Peers, 0, b"B", b"b3", [Some(b"w"), None]),
                Touch(0, 5),
            ],
            false,
        ),
        // A server row's username taken by a held row.
        (
            vec![Put(Table::Peers, 0, b"C", b"c1", [Some(b"u-srv"), None])],
            false,
        ),
        (
            vec![
                PutLast(Table::Channels, 0, b"X", b"x1"),
                PutLast(Table::Channels, 0, b"Y", b"y1"),
                PutLast(Table::Channels, 0, b"X", b"x2"),
            ],
            false,
        ),
        // Fails: overwrites A and X, clears channels, takes w: none of it stays.
        (
            vec![
                Put(Table::Peers, 0, b"A", b"bad", [Some(b"w"), None]),
                Clear(Table::Channels, 0),
                PutLast(Table::Channels, 0, b"X", b"bad"),
                Touch(0, 99),
            ],
            true,
        ),
        // A keeps its place (its first insert), Y keeps the place put_last gave it.
        (
            vec![
                Put(Table::Peers, 0, b"A", b"a2", [None, None]),
                Put(Table::Channels, 0, b"Y", b"y2", [None, None]),
            ],
            false,
        ),
        // A server row moved to the end, another rewritten in place.
        (
            vec![
                PutLast(Table::Channels, 0, b"ch-old", b"c1"),
                Put(Table::Channels, 0, b"ch-old2", b"c1b", [None, None]),
                // A held row moved to the end by a later operation.
                PutLast(Table::Channels, 0, b"Y", b"y3"),
            ],
            false,
        ),
        // Session two: its server rows cleared, then written again; one cleared after.
        (
            vec![
                Put(Table::Peers, 1, b"old1", b"o1b", [Some(b"u-old"), None]),
                Clear(Table::Peers, 1),
                Put(Table::Peers, 1, b"new", b"n1", [None, Some(b"p-old")]),
                Put(Table::Peers, 1, b"old2", b"o2b", [None, None]),
                Touch(1, 6),
            ],
            false,
        ),
        (
            vec![
                PutLast(Table::Channels, 1, b"gone", b"g"),
                Clear(Table::Channels, 1),
            ],
            false,
        ),
        (vec![PutLast(Table::Channels, 1, b"after", b"f")], false),
    ];
    let run_op = |s: &mut PostgresStore, writes: &[W], fails: bool, held: bool| {
        if held {
            s.savepoint().unwrap();
        } else {
            s.begin().unwrap();
        }
        for &w in writes {
            apply(s, w).unwrap();
        }
        match (held, fails) {
            (true, true) => s.rollback_to_savepoint().unwrap(),
            (true, false) => s.release_op().unwrap().expect("kept"),
            (false, true) => s.rollback().unwrap(),
            (false, false) => s.commit().unwrap(),
        }
    };
    a.begin().unwrap();
    for (i, (writes, fails)) in ops.iter().enumerate() {
        run_op(&mut a, writes, *fails, true);
        run_op(&mut r, writes, *fails, false);
        if i == 3 {
            // A scan inside the transaction sends what is held first.
            let rows = a.scan_all(Table::Peers, sid[0]).unwrap();
            assert_eq!(rows, r.scan_all(Table::Peers, sid[0]).unwrap());
            assert_eq!(rows[1].0.key, b"A");
            assert_eq!(rows[1].1, [None, None], "A's username was taken by B");
            assert_eq!(a.held_rows(), 0, "sent by the scan");
        }
    }
    assert!(a.held_rows() > 0, "the operations' rows are held");
    // Reads inside the transaction see the held rows.
    assert_eq!(
        a.get(Table::Peers, sid[0], b"A").unwrap().as_deref(),
        Some(&b"a2"[..])
    );
    assert_eq!(
        a.get_many(Table::Peers, sid[1], &[b"old1", b"new", b"old2"])
            .unwrap(),
        [None, Some(b"n1".to_vec()), Some(b"o2b".to_vec())]
    );
    assert_eq!(a.get(Table::Channels, sid[1], b"gone").unwrap(), None);
    // One row rewritten by 200 operations: held once.
    let held_before = a.held_rows();
    let values: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for (i, v) in values.iter().enumerate() {
        let op = [
            Put(Table::State, 0, b"hot", v, [None, None]),
            Touch(0, 10 + i as i64),
        ];
        run_op(&mut a, &op, false, true);
        run_op(&mut r, &op, false, false);
        assert_eq!(a.held_rows(), held_before + 1);
    }
    assert_eq!(
        a.get(Table::State, sid[0], b"hot").unwrap().as_deref(),
        Some(&199u32.to_be_bytes()[..])
    );
    a.commit().unwrap();
    assert_eq!(a.held_rows(), 0);

    for (i, id) in sid.into_iter().enumerate() {
        for table in [Table::Peers, Table::Channels, Table::State] {
            assert_eq!(
                a.scan_all(table, id).unwrap(),
                r.scan_all(table, id).unwrap(),
                "session {i}, table {}",
                table.name()
            );
        }
        assert_eq!(
            a.session(id).unwrap().map(|s| s.updated_at),
            r.session(id).unwrap().map(|s| s.updated_at)
        );
        for (index, value) in [
            (Index::Username, &b"u"[..]),
            (Index::Username, b"w"),
            (Index::Username, b"u-srv"),
            (Index::Username, b"u-old"),
            (Index::Phone, b"ph"),
            (Index::Phone, b"p-old"),
        ] {
            assert_eq!(
                a.find(Table::Peers, id, index, value).unwrap(),
                r.find(Table::Peers, id, index, value).unwrap()
            );
        }
    }
    // Spot checks that the script did what it says (so the comparison compares something).
    let keys = |rows: Vec<crate::vault::store::IndexedRow>| -> Vec<Vec<u8>> {
        rows.into_iter().map(|(row, _)| row.key).collect()
    };
    assert_eq!(
        keys(a.scan_all(Table::Peers, sid[0]).unwrap()),
        [&b"srv"[..], b"A", b"B", b"C"].map(<[u8]>::to_vec)
    );
    assert_eq!(
        keys(a.scan_all(Table::Channels, sid[0]).unwrap()),
        [&b"ch-old2"[..], b"X", b"ch-old", b"Y"].map(<[u8]>::to_vec)
    );
    assert_eq!(
        a.find(Table::Peers, sid[0], Index::Username, b"w")
            .unwrap()
            .map(|r| r.key),
        Some(b"B".to_vec())
    );
    assert_eq!(
        a.find(Table::Peers, sid[0], Index::Username, b"u").unwrap(),
        None
    );
    assert_eq!(
        keys(a.scan_all(Table::Channels, sid[1]).unwrap()),
        [b"after".to_vec()]
    );
    assert_eq!(a.session(sid[0]).unwrap().unwrap().updated_at, 209);
    // The hot row reached its table once: the table's first and only row version.
    let ctid = cluster.psql(&held_db, "SELECT ctid FROM state");
    assert_eq!(ctid.trim(), "(0,1)", "one version of the hot row");
    let ctid = cluster.psql(&ref_db, "SELECT ctid FROM state");
    assert_ne!(ctid.trim(), "(0,1)", "200 versions when sent one by one");

    // Many distinct rows: the transaction holds a bounded amount and sends the rest early.
    a.begin().unwrap();
    let big = vec![0x5a; 300];
    let mut most = 0;
    for i in 0..2000u32 {
        a.savepoint().unwrap();
        a.put(
            Table::SentFiles,
            sid[1],
            &Row {
                key: i.to_be_bytes().to_vec(),
                value: big.clone(),
            },
            [None, None],
        )
        .unwrap();
        a.release_op().unwrap().expect("kept");
        most = most.max(a.held_rows());
    }
    assert!(0 < most && most < 1000, "held at most {most} rows");
    a.commit().unwrap();
    assert_eq!(a.count(Table::SentFiles, sid[1]).unwrap(), 2000);
}

/// Held writes go to the server at `COMMIT`, so a write the server refuses (here a trigger)
/// fails the commit, not its operation. After a failed commit the worker re-applies the
/// acknowledged writes, each in its own operation, and drops those that fail: the store then
/// sends each operation's writes at its end, so the refused one fails alone and the others
/// commit; once a commit succeeded, writes are held again.
#[test]
fn after_a_failed_commit_each_operation_is_sent_alone_until_one_commits() {
    use crate::vault::postgres::PostgresStore;
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL held writes after a failed commit")
    else {
        return;
    };
    let (_dir, db, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target).expect("store");
    a.begin().unwrap();
    let sid = a.insert_session("one", 1).unwrap();
    a.commit().unwrap();
    cluster.psql(
        &db,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON state FOR EACH ROW \
         WHEN (NEW.v = '\\x706f69736f6e'::bytea) EXECUTE FUNCTION refuse()",
    );
    let op = |s: &mut PostgresStore, k: &[u8], v: &[u8]| {
        s.savepoint().unwrap();
        let row = Row {
            key: k.to_vec(),
            value: v.to_vec(),
        };
        s.put(Table::State, sid, &row, [None, None]).unwrap();
        s.release_op().unwrap()
    };
    let ops = [
        (&b"k1"[..], &b"v1"[..]),
        (b"bad", b"poison"),
        (b"k2", b"v2"),
    ];
    a.begin().unwrap();
    for (k, v) in ops {
        op(&mut a, k, v).expect("held: the server has not seen it yet");
    }
    let err = a.commit().expect_err("the refused write fails the commit");
    assert!(err.to_string().contains("injected failure"), "{err}");
    a.rollback().unwrap();
    // The worker's re-apply: each acknowledged write in its own operation.
    a.begin().unwrap();
    let kept: Vec<bool> = ops.iter().map(|(k, v)| op(&mut a, k, v).is_ok()).collect();
    assert_eq!(kept, [true, false, true], "only the refused write fails");
    assert_eq!(a.held_rows(), 0, "sent, not held");
    a.commit().expect("the others commit");
    assert_eq!(
        a.get(Table::State, sid, b"k1").unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        a.get(Table::State, sid, b"k2").unwrap(),
        Some(b"v2".to_vec())
    );
    assert_eq!(a.get(Table::State, sid, b"bad").unwrap(), None);
    // Held again after a successful commit.
    a.begin().unwrap();
    op(&mut a, b"k3", b"v3").expect("kept");
    assert_eq!(a.held_rows(), 1);
    a.commit().unwrap();
    assert_eq!(
        a.get(Table::State, sid, b"k3").unwrap(),
        Some(b"v3".to_vec())
    );
}

/// `rekey` on one daemon and the transactions of another that holds the old key: a
/// transaction open when the rekey starts makes it wait (and what it wrote is there to be
/// re-sealed once it committed); once the rekey committed, the other daemon's transactions
/// are refused until it holds the new key, so it can seal nothing under the old one.
#[test]
fn a_rekey_elsewhere_waits_for_open_transactions_and_then_refuses_the_old_key() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crate::vault::postgres::PostgresStore;
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL rekey against other daemons") else {
        return;
    };
    let (_dir, _, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
    let (old, new) = ([1u8; 16], [2u8; 16]);
    a.set_data_key_id(Some(old));
    b.set_data_key_id(Some(old));
    a.begin().unwrap();
    let sid = a.insert_session("shared", 1).unwrap();
    a.commit().unwrap();
    let row = |k: &[u8]| Row {
        key: k.to_vec(),
        value: b"sealed under the old key".to_vec(),
    };

    // B's transaction is open (a bot's group commit) when A's rekey starts.
    b.begin().unwrap();
    b.put(Table::State, sid, &row(b"written-before"), [None, None])
        .unwrap();
    let b_committed = Arc::new(AtomicBool::new(false));
    let rekey = std::thread::spawn({
        let b_committed = Arc::clone(&b_committed);
        move || {
            a.begin().unwrap();
            a.replace_data_key_id(&new).unwrap();
            let waited = b_committed.load(Ordering::SeqCst);
            // What B committed is visible to the rekey, which would re-seal it here.
            let seen = a
                .get(Table::State, sid, b"written-before")
                .unwrap()
                .is_some();
            a.commit().unwrap();
            a.set_data_key_id(Some(new));
            (a, waited, seen)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !rekey.is_finished(),
        "the rekey waits for B's open transaction"
    );
    b_committed.store(true, Ordering::SeqCst);
    b.commit().unwrap();
    let (mut a, waited, seen) = rekey.join().unwrap();
    assert!(waited, "the rekey went on only after B committed");
    assert!(seen, "and then saw what B wrote, to re-seal it");

    // Now B still holds the old key: its next transaction is refused, nothing is written.
    let refused = b
        .begin()
        .expect_err("a transaction under a key rekeyed away");
    assert!(
        refused.to_string().contains("rekeyed by another vaultd"),
        "{refused}"
    );
    assert!(
        a.get(Table::State, sid, b"written-after")
            .unwrap()
            .is_none(),
        "nothing of B's"
    );
    // The refusal left B's connection usable: with the new key (after its unlock) it writes.
    b.set_data_key_id(Some(new));
    b.begin().unwrap();
    b.put(Table::State, sid, &row(b"written-after"), [None, None])
        .unwrap();
    b.commit().unwrap();
    assert!(
        a.get(Table::State, sid, b"written-after")
            .unwrap()
            .is_some()
    );
    // A store that holds no key (locked) begins as before: it seals nothing.
    b.set_data_key_id(None);
    b.begin().unwrap();
    b.rollback().unwrap();
}

/// `begin_snapshot` (what `migrate-store` reads its source in): every read sees the store as
/// it was when the snapshot began, even while another daemon commits.
#[test]
fn a_snapshot_does_not_see_what_another_store_commits_meanwhile() {
    use crate::vault::postgres::PostgresStore;
    use crate::vault::store::Store;

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL read snapshot") else {
        return;
    };
    let (_dir, _, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target.clone()).expect("store a");
    let mut b = PostgresStore::open(target).expect("store b");
    a.begin_snapshot().unwrap();
    assert!(a.sessions().unwrap().is_empty());
    b.begin().unwrap();
    b.insert_session("written meanwhile", 1).unwrap();
    b.commit().unwrap();
    assert!(a.sessions().unwrap().is_empty(), "the snapshot holds");
    a.rollback().unwrap();
    assert_eq!(a.sessions().unwrap().len(), 1, "seen once it ended");
}

/// Review repro, the PostgreSQL store: see
/// `semantics::a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path`.
#[test]
fn a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path_on_postgres() {
    let Some(cluster) = Cluster::start_or_skip("the username hand-over repro on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(
        &cluster,
        super::semantics::a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path,
    );
}

/// Review repro, see
/// `durability::acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin`.
#[test]
fn acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin_on_postgres() {
    let Some(cluster) = Cluster::start_or_skip("the lost-replay repro on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(
        &cluster,
        super::durability::acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin,
    );
}

/// The control of the repro above: the same failure, but a barrier job runs first once the
/// server is back (`commit` retries the re-apply before anything begins a transaction).
#[test]
fn acknowledged_cache_writes_survive_a_failed_commit_when_a_barrier_retries_the_replay() {
    let Some(cluster) = Cluster::start_or_skip("the lost-replay control on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(&cluster, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(super::durability::replay_could_not_begin(true));
    });
}
