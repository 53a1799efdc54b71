//! What one PostgreSQL store's transactions meet of another's on the same database: a
//! manifest changed meanwhile, a `rekey` and the transactions open under the old key, a read
//! snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::two_stores;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::store::{Row, Store, Table};

/// Two daemons never overwrite each other's manifest: the second write over a manifest it
/// did not see is refused, and goes through once it has re-read it.
#[test]
fn a_manifest_changed_by_another_store_is_not_overwritten() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL manifest compare-and-set") else {
        return;
    };
    let (_dir, mut a, mut b) = two_stores(&cluster);
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

/// `rekey` on one daemon and the transactions of another that holds the old key: a
/// transaction open when the rekey starts makes it wait (and what it wrote is there to be
/// re-sealed once it committed); once the rekey committed, the other daemon's transactions
/// are refused until it holds the new key, so it can seal nothing under the old one.
#[test]
fn a_rekey_elsewhere_waits_for_open_transactions_and_then_refuses_the_old_key() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL rekey against other daemons") else {
        return;
    };
    let (_dir, mut a, mut b) = two_stores(&cluster);
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
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL read snapshot") else {
        return;
    };
    let (_dir, mut a, mut b) = two_stores(&cluster);
    a.begin_snapshot().unwrap();
    assert!(a.sessions().unwrap().is_empty());
    b.begin().unwrap();
    b.insert_session("written meanwhile", 1).unwrap();
    b.commit().unwrap();
    assert!(a.sessions().unwrap().is_empty(), "the snapshot holds");
    a.rollback().unwrap();
    assert_eq!(a.sessions().unwrap().len(), 1, "seen once it ended");
}
