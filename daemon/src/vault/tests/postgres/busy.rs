//! A delete that meets another daemon's open transaction on the session: the store gives up
//! after its bound (`DELETE_WAIT`) and says busy; the vault tries again a little later, off the
//! storage thread, so that a group commit of another host that ends within a few seconds does
//! not fail an operator's delete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::vault::postgres::sessions::DELETE_WAIT;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::store::{Row, Store, Table};
use crate::vault::tests::support::*;
use crate::vault::{EngineError, StorageErrorKind, VaultConfig};

/// Host B's store on `t`'s database, in a transaction that wrote session `sid` (fenced: it
/// holds the session's lease row `FOR SHARE`) and commits after `hold`, on a thread.
fn other_host_writing(t: &TestDir, sid: i64, hold: Duration) -> std::thread::JoinHandle<()> {
    let location = t.location();
    let (ready, wait) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        let mut b = location.open().expect("host B's store");
        b.begin().unwrap();
        b.savepoint().unwrap();
        let row = Row {
            key: b"host-b".to_vec(),
            value: b"written".to_vec(),
        };
        b.put(Table::State, sid, &row, [None, None]).unwrap();
        b.release_op().unwrap().expect("fenced: no lease elsewhere");
        ready.send(()).unwrap();
        std::thread::sleep(hold);
        b.commit().unwrap();
    });
    wait.recv().expect("host B wrote");
    b
}

#[test]
fn a_delete_behind_another_hosts_transaction_is_tried_again_until_it_ends_or_gives_up() {
    let Some(cluster) = Cluster::start_or_skip("deletes retried behind another host") else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(&cluster, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = TestDir::new();
            let vault = create_with(&t, VaultConfig::default()).await;

            // B's transaction outlasts one wait but not two: the delete goes through.
            let sid = new_session(&vault, "short").await;
            let b = other_host_writing(&t, sid.0, DELETE_WAIT + DELETE_WAIT / 2);
            vault
                .delete_session("short")
                .await
                .expect("tried again once B committed");
            b.join().unwrap();
            assert!(vault.open_session("short").await.is_err(), "deleted");
            with_store(&t, |s| {
                assert_eq!(s.count(Table::State, sid.0).unwrap(), 0, "B's row too")
            });

            // B's transaction outlasts every try: busy, in bounded time.
            let sid = new_session(&vault, "long").await;
            let b = other_host_writing(&t, sid.0, DELETE_WAIT * 5);
            let started = Instant::now();
            let r = vault.delete_session("long").await;
            let waited = started.elapsed();
            match r {
                Err(EngineError::Storage {
                    kind: StorageErrorKind::Busy,
                    message,
                }) => assert!(message.contains("try again"), "{message}"),
                other => panic!("a delete behind a long transaction: {other:?}"),
            }
            assert!(
                waited >= DELETE_WAIT * 2 && waited < DELETE_WAIT * 5,
                "gave up after {waited:?}"
            );
            b.join().unwrap();
            vault
                .delete_session("long")
                .await
                .expect("once B committed");
            close(vault).await;
        });
    });
}
