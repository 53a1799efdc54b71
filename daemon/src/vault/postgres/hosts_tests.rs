//! The PostgreSQL store with several hosts, in the corner cases an adversarial review found
//! (and one found before): a live lease is busy at once under its holder's open group commit,
//! lost leases keep fencing, a write with no lease row cannot commit after a takeover,
//! acknowledged writes survive a connection lost while they are re-applied, another host's
//! audit lock stalls nothing here, an admin act's fence pass covers its own writes only.
//! Skipped with a loud message without PostgreSQL.

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

fn row(k: &[u8]) -> Row {
    Row {
        key: k.to_vec(),
        value: b"sealed".to_vec(),
    }
}

/// One write of `k` in a transaction of its own (the worker's shape: a savepoint, the
/// write deferred, `release_op` runs its fencing check, then `COMMIT`).
fn write(s: &mut PostgresStore, sid: i64, k: &[u8]) -> crate::vault::error::Result<()> {
    s.begin()?;
    s.savepoint()?;
    let r = s
        .put(Table::State, sid, &row(k), [None, None])
        .and_then(|()| s.release_op().and_then(|kept| kept));
    match r {
        Ok(()) => s.commit(),
        Err(e) => {
            let _ = s.rollback_to_savepoint();
            s.rollback()?;
            Err(e)
        }
    }
}

/// Opens a group commit on `s` with one write of `k` in session `sid`, fenced and left
/// uncommitted: a host whose transaction holds the session's lease row `FOR SHARE`.
fn open_fenced_write(s: &mut PostgresStore, sid: i64, k: &[u8]) {
    s.begin().unwrap();
    s.savepoint().unwrap();
    s.put(Table::State, sid, &row(k), [None, None]).unwrap();
    s.release_op()
        .unwrap()
        .expect("fenced: no live lease elsewhere");
}

struct Db {
    cluster: Cluster,
    name: String,
    _dir: tempfile::TempDir,
    target: PgTarget,
}

impl Db {
    /// A store on the database: one host.
    fn store(&self) -> PostgresStore {
        PostgresStore::open(self.target.clone()).expect("store")
    }

    /// Two stores on the database: hosts A and B.
    fn two_hosts(&self) -> (PostgresStore, PostgresStore) {
        (self.store(), self.store())
    }
}

fn database(what: &str) -> Option<Db> {
    let cluster = Cluster::start_or_skip(what)?;
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
    Some(Db {
        cluster,
        name: db,
        _dir: dir,
        target,
    })
}

/// A new session named `name`, committed (also used by `vault::tests::postgres`).
pub(crate) fn new_session(s: &mut PostgresStore, name: &str) -> i64 {
    s.begin().unwrap();
    let sid = s.insert_session(name, 1).unwrap();
    s.commit().unwrap();
    sid
}

/// A holder whose lease lapsed (paused past its expiry) and that nobody took over: its first
/// write is refused ("fencing token … is stale; re-open the session"), which also makes the
/// store forget the lease; its second write then goes through as if it had never held one
/// (the `(None, _)` arm of `fence`). The README promises such a daemon "can never write again
/// without re-acquiring"; the same happens after `renew_leases` reported the lease lost.
#[test]
fn a_lapsed_holder_stays_fenced_until_it_reacquires() {
    let Some(db) = database("lapsed holder fenced for good") else {
        return;
    };
    let mut a = db.store();
    let sid = new_session(&mut a, "lapsed");
    let ttl = Duration::from_millis(300);
    let Acquired::Token(_) = a.acquire_lease(sid, &holder("host-a"), ttl).unwrap() else {
        panic!("a free session's lease is taken");
    };
    write(&mut a, sid, b"k0").expect("the holder writes");
    // Paused past the expiry; nobody else opened the session meanwhile.
    std::thread::sleep(Duration::from_millis(600));
    let first = write(&mut a, sid, b"k1").expect_err("a lapsed holder's write is refused");
    assert!(first.to_string().contains("stale"), "{first}");
    let second = write(&mut a, sid, b"k2");
    assert!(
        second.is_err(),
        "the lapsed holder's next write must be refused too (it never re-acquired)"
    );
}

/// The same through the renewal: `renew_leases` reports the lease lost (and forgets it), the
/// server logs "its writes are refused until reopened", but the handle's next write passes.
#[test]
fn a_lease_reported_lost_by_renewal_still_fences_its_writes() {
    let Some(db) = database("lease lost at renewal") else {
        return;
    };
    let mut a = db.store();
    let sid = new_session(&mut a, "lost");
    let ttl = Duration::from_millis(300);
    let Acquired::Token(_) = a.acquire_lease(sid, &holder("host-a"), ttl).unwrap() else {
        panic!("a free session's lease is taken");
    };
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(a.renew_leases(ttl).unwrap(), vec![sid], "reported lost");
    assert!(
        write(&mut a, sid, b"k1").is_err(),
        "a write of a session whose lease was reported lost must be refused"
    );
}

/// A write by a store that holds no lease (a shared handle) is checked against "no live
/// lease exists"; when the session has no lease row at all (never leased, or given back:
/// `release_lease` deletes it), `FOR SHARE` locks nothing, so another host's
/// `acquire_lease` inserts its row at once, and the write, checked before, commits after the
/// new holder got its token. The lease module promises "a write checked under the old token
/// commits before the new holder's token exists, never after".
#[test]
fn a_write_checked_without_a_lease_row_does_not_commit_after_a_takeover() {
    let Some(db) = database("fence without a lease row") else {
        return;
    };
    let (mut a, mut b) = db.two_hosts();
    let sid = new_session(&mut a, "unleased");

    // A's group commit: a shared handle's write, fenced (no lease row), not committed yet.
    open_fenced_write(&mut a, sid, b"from-a");

    let (tx, rx) = mpsc::channel();
    let taking = std::thread::spawn(move || {
        let r = b.acquire_lease(sid, &holder("host-b"), Duration::from_secs(60));
        let _ = tx.send(r.map_err(|e| e.to_string()));
        b
    });
    let taken = rx.recv_timeout(Duration::from_secs(2));
    let committed = a.commit();
    let _b = taking.join().expect("taking thread");
    let took_first = matches!(taken, Ok(Ok(Acquired::Token(_))));
    assert!(
        !(took_first && committed.is_ok()),
        "host B got the lease while A's fenced write was open, and A's write then committed \
         (after B's token existed): taken {taken:?}, committed {committed:?}"
    );
}

/// The backend pids of the vault's connections to `db` (every other client of the database).
fn vault_backends(db: &Db) -> String {
    db.cluster.psql(
        &db.name,
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
}

/// Acknowledged cache-class writes re-applied after a failed commit (`Worker::replay`) are
/// dropped as "no longer applies" when the connection is lost in the middle of the re-apply
/// (PostgreSQL restarted or failed over again, a network blip): every redo after the loss
/// fails with "the connection to PostgreSQL was lost with the open transaction", and
/// `replay` cannot tell that from a write refused for itself, so it logs "could not be
/// re-applied … and are lost" and forgets them, although the next transaction (on a new
/// connection) would apply them. The connection loss is injected with a one-shot trigger on
/// `sent_files` that terminates its own backend the first time it fires (the re-apply of the
/// second write: the first application was held on the client and never reached the
/// server, whose connection was cut before the commit).
#[test]
fn acknowledged_writes_survive_a_connection_lost_while_they_are_re_applied() {
    use session_vault_proto::model::{DcOption, Peer, PeerKind, SentFile, SessionAcl};

    use crate::vault::{KdfParams, StoreLocation, Vault, VaultConfig};

    let Some(db) = database("connection lost during the re-apply") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = VaultConfig {
            flush_interval: Duration::from_secs(60),
        };
        let vault = Vault::open_store(&StoreLocation::Postgres(db.target.clone()), config)
            .expect("open the vault");
        vault
            .init(b"review passphrase", KdfParams::insecure_fast_for_tests())
            .await
            .expect("init");
        let sid = vault
            .create_session("acct", SessionAcl::default())
            .await
            .unwrap();
        let peer = |id: i64| {
            let mut p = Peer::new(PeerKind::User, id);
            p.access_hash = Some(id * 3);
            p
        };
        let file = SentFile {
            md5_digest: vec![7; 16],
            file_size: 4096,
            file_type: 0,
            id: 11,
            hash: 12,
        };
        // Three acknowledged cache-class writes, held in the open transaction.
        vault.cache_peers(sid, vec![peer(1001)]).await.unwrap();
        vault.put_sent_file(sid, file.clone()).await.unwrap();
        vault.cache_peers(sid, vec![peer(1003)]).await.unwrap();

        db.cluster.psql(
            &db.name,
            "CREATE SEQUENCE review_oneshot; \
             CREATE FUNCTION review_cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF nextval('review_oneshot') = 1 THEN \
                 PERFORM pg_terminate_backend(pg_backend_pid()); END IF; \
               RETURN NEW; END $$; \
             CREATE TRIGGER review_cut BEFORE INSERT OR UPDATE ON sent_files \
               FOR EACH ROW EXECUTE FUNCTION review_cut();",
        );
        // The connection drops (a failover): the durable write's commit fails.
        let pids = vault_backends(&db);
        assert!(!pids.is_empty(), "the vault is connected");
        db.cluster.psql(
            &db.name,
            &format!("SELECT pg_terminate_backend(p) FROM unnest('{{{pids}}}'::int[]) AS p"),
        );
        let dc = DcOption {
            id: 2,
            ipv4: Some("10.0.0.2:443".parse().unwrap()),
            ipv6: None,
            auth_key: None,
        };
        let r = vault.set_dc_option(sid, dc.clone()).await;
        assert!(r.is_err(), "the connection was cut: {r:?}");
        // Back to normal: a durable write commits (with whatever was re-applied); the one
        // right after may still meet the transaction the cut re-apply left on the dead
        // connection.
        let mut tries = 0;
        while let Err(e) = vault.set_dc_option(sid, dc.clone()).await {
            tries += 1;
            assert!(tries < 3, "no commit after the server is back: {e}");
        }
        assert!(
            vault.peer(sid, peer(1001).key()).await.unwrap().is_some(),
            "the first acknowledged write is kept"
        );
        let kept_file = vault
            .sent_file(sid, file.md5_digest.clone(), file.file_size, file.file_type)
            .await
            .unwrap();
        let kept_third = vault.peer(sid, peer(1003).key()).await.unwrap();
        assert!(
            kept_file.is_some() && kept_third.is_some(),
            "acknowledged writes lost: sent file kept {}, third peer kept {}",
            kept_file.is_some(),
            kept_third.is_some()
        );
        vault.close().await.unwrap();
    });
}

/// Another host's open group commit that appended an audit entry (a session open there,
/// cache class) holds the audit advisory lock until it commits: up to a flush interval when
/// healthy, and for a paused host until PostgreSQL ends its session (`idle`: 5 s by default,
/// longer where the operator set it). This daemon's next cache-class audit append (any
/// session open here) once blocked its storage thread in `lock_audit`, and every request
/// behind it, reads of other sessions and lease renewals included; now the entry is kept
/// and appended once the lock is free. Here a raw connection stands in for the other host,
/// holding the lock 3 s; a point read of another session must not wait for it, and the
/// entry must reach the log.
#[test]
fn an_audit_lock_held_elsewhere_does_not_stall_unrelated_requests() {
    use session_vault_proto::audit::AuditEntry;
    use session_vault_proto::model::SessionAcl;

    use crate::vault::{KdfParams, StoreLocation, Vault, VaultConfig};

    let Some(db) = database("audit lock held by another host") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let vault = Vault::open_store(
            &StoreLocation::Postgres(db.target.clone()),
            VaultConfig::default(),
        )
        .expect("open the vault");
        vault
            .init(b"review passphrase", KdfParams::insecure_fast_for_tests())
            .await
            .expect("init");
        let sid = vault
            .create_session("other", SessionAcl::default())
            .await
            .unwrap();

        // "Host B", paused in a group commit that appended an audit entry.
        let target = db.target.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let paused = std::thread::spawn(move || {
            let mut raw = target.connect().expect("raw connection");
            raw.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                super::AUDIT_LOCK
            ))
            .unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(3));
            raw.batch_execute("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();

        // A session open here: its audit entry (cache class) waits for the lock.
        let entry = AuditEntry {
            seq: 0,
            time: 1,
            uid: 1000,
            gid: 1000,
            pid: Some(1),
            exe: "bot".into(),
            unit: None,
            action: "open_session".into(),
            session: Some("acct".into()),
            detail: None,
            result: "ok".into(),
        };
        let v = vault.clone();
        let audit = tokio::spawn(async move { v.audit(entry, false).await });
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Another client's read of another session.
        let t = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(10), vault.session_record(sid)).await;
        let waited = t.elapsed();
        let _ = release_tx.send(());
        paused.join().unwrap();
        audit
            .await
            .unwrap()
            .expect("the audit entry is appended once the lock is free");
        assert!(read.is_ok_and(|r| r.is_ok()), "the read is answered");
        assert!(
            waited < Duration::from_secs(1),
            "a read of another session waited {} ms for another host's audit lock",
            waited.as_millis()
        );
        // Kept while the lock was held elsewhere, appended at the next coherence check once
        // it is free.
        vault.refresh().await.unwrap();
        let page = vault.audit_page(0, 100, None, None).await.unwrap();
        assert!(
            page.entries
                .iter()
                .any(|e| e.action == "open_session" && e.session.as_deref() == Some("acct")),
            "the entry kept while the log was locked elsewhere is in the log: {:?}",
            page.entries.iter().map(|e| &e.action).collect::<Vec<_>>()
        );
        vault.close().await.unwrap();
    });
}

/// An admin act on a session (grant or revoke: `lock_session(id, admin = true)`) marks the
/// session fenced for the rest of the transaction, not for that act only: any later write of
/// the session in the same group commit (a shared handle's `cache_peers`, `set_home_dc`, …
/// on this host) then skips the lease check and lands while another host holds the lease,
/// which the same write one group commit later is refused.
#[test]
fn an_admin_act_does_not_open_the_fence_for_other_writes_of_its_group_commit() {
    let Some(db) = database("admin fence pass leaks to the group commit") else {
        return;
    };
    let (mut a, mut b) = db.two_hosts();
    let sid = new_session(&mut a, "leased-by-b");
    let Acquired::Token(_) = b
        .acquire_lease(sid, &holder("host-b"), Duration::from_secs(60))
        .unwrap()
    else {
        panic!("a free session's lease is taken");
    };
    // Control: a shared handle's write on A alone is refused.
    assert!(
        write(&mut a, sid, b"alone").is_err(),
        "B holds the lease: A's write is refused"
    );

    // A's group commit: an ACL change (admin) of the session, then a shared handle's write.
    a.begin().unwrap();
    a.savepoint().unwrap();
    a.lock_session(sid, true).unwrap();
    a.put_session_record(sid, b"record with the new acl", 2)
        .unwrap();
    a.release_op().unwrap().expect("the admin act passes");
    a.savepoint().unwrap();
    a.put(Table::State, sid, &row(b"riding-along"), [None, None])
        .unwrap();
    let kept = a.release_op().unwrap();
    let committed = a.commit();
    let landed = b.get(Table::State, sid, b"riding-along").unwrap().is_some();
    assert!(
        kept.is_err() || !landed,
        "a non-holder's write landed under B's lease by riding along with an admin act \
         (kept {kept:?}, committed {committed:?})"
    );
}

/// The holder's write fences on its lease row (`FOR SHARE`, held until its commit, up to a
/// flush interval later); another store's acquire must not queue behind that lock while the
/// lease is live. Before the fix it waited for the holder's commit (here: forever).
#[test]
fn a_live_lease_is_busy_at_once_while_its_holder_has_a_transaction_open() {
    let Some(db) = database("PostgreSQL leases under an open transaction") else {
        return;
    };
    let (mut a, mut b) = db.two_hosts();
    let sid = new_session(&mut a, "leased");
    let ttl = Duration::from_secs(60);
    let Acquired::Token(_) = a.acquire_lease(sid, &holder("host-a"), ttl).unwrap() else {
        panic!("a free session's lease is taken");
    };

    // A's group commit: a write fenced (its lease row locked FOR SHARE), not yet committed.
    a.begin().unwrap();
    a.put(Table::State, sid, &row(b"k"), [None, None]).unwrap();

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

/// Two hosts, each with a write of one session in its open group commit (fenced: the
/// session's lease row held `FOR SHARE` until the commit), then an admin's delete of the
/// other session (two operators cleaning up, or `import --replace` on each). A delete first
/// deletes the lease row, waiting for every transaction that fenced it. A review found the
/// delete run inside the group commit, holding its fence of the other session meanwhile:
/// each host waited for the other, PostgreSQL aborted one after `deadlock_timeout`, and that
/// host's delete and every write of its group commit failed with `40P01`. Deletes now run
/// as barrier jobs in a transaction of their own, after the group commit is committed.
#[test]
fn two_hosts_deleting_sessions_the_other_wrote_do_not_deadlock() {
    use session_vault_proto::model::{SessionAcl, UpdateStateChange};

    use crate::vault::{KdfParams, StoreLocation, Vault, VaultConfig};

    let Some(db) = database("deletes crossing two hosts' fenced writes") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A long flush interval: each host's write stays in its open group commit.
        let config = VaultConfig {
            flush_interval: std::time::Duration::from_secs(3),
        };
        let open = || {
            Vault::open_store(&StoreLocation::Postgres(db.target.clone()), config.clone())
                .expect("open the vault")
        };
        let a = open();
        a.init(b"review passphrase", KdfParams::insecure_fast_for_tests())
            .await
            .expect("init");
        let x = a.create_session("x", SessionAcl::default()).await.unwrap();
        let y = a.create_session("y", SessionAcl::default()).await.unwrap();
        let b = open();
        b.unlock(b"review passphrase").await.expect("unlock b");
        let both = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let host = |v: Vault,
                    wrote,
                    deletes: &'static str,
                    both: std::sync::Arc<tokio::sync::Barrier>| async move {
            v.set_update_state(wrote, UpdateStateChange::Channel { id: 7, pts: 1 })
                .await
                .expect("a cache-class write, fenced");
            both.wait().await;
            v.delete_session(deletes).await.map_err(|e| e.to_string())
        };
        let ta = tokio::spawn(host(a.clone(), y, "x", std::sync::Arc::clone(&both)));
        let tb = tokio::spawn(host(b.clone(), x, "y", both));
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        assert!(
            ra.is_ok() && rb.is_ok(),
            "host A (wrote y, deletes x): {ra:?}; host B (wrote x, deletes y): {rb:?}"
        );
    });
}

/// A delete waits for other hosts' open transactions that wrote the session (their group
/// commits), but not for ever: a paused host's transaction would hold it, and with it the
/// deleting daemon's storage thread and every request behind it, until PostgreSQL's idle
/// timeout (a review's suspicion: 3 s of a 3 s hold). It gives up after
/// [`super::sessions::DELETE_WAIT`] with a busy `storage` error, and succeeds once the
/// other transaction ended.
#[test]
fn a_delete_behind_a_paused_hosts_transaction_gives_up_in_bounded_time() {
    use super::sessions::DELETE_WAIT;
    use crate::vault::error::{EngineError, StorageErrorKind};

    let Some(db) = database("a delete behind a paused host") else {
        return;
    };
    let (mut a, mut b) = db.two_hosts();
    let s = new_session(&mut a, "held");
    // Host B, paused in a group commit that wrote the session.
    open_fenced_write(&mut b, s, b"paused");

    let t = std::time::Instant::now();
    a.begin().unwrap();
    let r = a.delete_session(s);
    let waited = t.elapsed();
    a.rollback().unwrap();
    match r {
        Err(EngineError::Storage { kind, message }) => {
            assert_eq!(kind, StorageErrorKind::Busy, "{message}");
            assert!(message.contains("try again"), "{message}");
        }
        other => panic!("a delete behind a paused host's transaction: {other:?}"),
    }
    assert!(
        waited >= DELETE_WAIT && waited < DELETE_WAIT * 4,
        "the delete gave up after {waited:?}"
    );

    // Host B resumes and commits: the delete goes through, and takes B's row with it.
    b.commit().unwrap();
    a.begin().unwrap();
    a.delete_session(s).expect("delete once B committed");
    a.commit().unwrap();
    a.begin().unwrap();
    assert_eq!(a.count(Table::State, s).unwrap(), 0);
    a.commit().unwrap();
}
