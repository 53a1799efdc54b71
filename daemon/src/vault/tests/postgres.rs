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

    use crate::vault::postgres::{Acquired, Holder, PgTarget, PostgresStore};
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL leases") else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
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
    use crate::vault::postgres::{PgTarget, PostgresStore};
    use crate::vault::store::Store;

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL manifest compare-and-set") else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
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

/// The worker's operations, each in a savepoint, have their row writes deferred and sent in
/// one round trip at `release_op` (`postgres::Deferred`). An operation whose fencing check
/// fails there leaves none of its rows, including rows of another session it wrote and rows
/// already sent mid-operation, while the operations before and after it in the same
/// transaction keep theirs; and a read inside an operation sees its deferred writes.
#[test]
fn a_fenced_operation_leaves_no_row_and_its_neighbours_keep_theirs() {
    use std::time::Duration;

    use crate::vault::postgres::{Acquired, Holder, PgTarget, PostgresStore};
    use crate::vault::store::{Row, Store, Table};

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL deferred writes") else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
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
    a.put(Table::State, leased, &row(b"s1", b"v"), [None, None])
        .unwrap();
    let fenced = a
        .release_op()
        .expect("the transaction survives")
        .expect_err("a stale token's operation is refused");
    assert!(fenced.to_string().contains("stale"), "{fenced}");

    // 3: kept, in the same transaction.
    a.savepoint().unwrap();
    a.put(Table::Peers, free, &row(b"k3", b"v3"), [None, None])
        .unwrap();
    a.touch_session(free, 7).unwrap();
    // More than the store holds back (1 MiB of statements): sent in parts, still one operation.
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
    assert!(keys(&mut b, Table::Channels, leased).is_empty());
    assert!(keys(&mut b, Table::State, leased).is_empty());
    assert_eq!(b.session(free).unwrap().expect("free").updated_at, 7);
}
