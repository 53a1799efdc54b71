//! The two durability classes, checked on crash images (a copy of the database and its WAL
//! taken while the vault is open: what a power cut or SIGKILL would leave), not only by a
//! clean close.
//!
//! - cache class (`cache_peers`, `set_update_state`): visible to reads at once; committed
//!   by the flush timer within `flush_interval`, or by the next durable write or barrier;
//! - durable class (session create/import/rename/delete, home DC, DC options, extras, ACL,
//!   keyslots): on disk when the call returns.
//!
//! Also: an operation that fails is rolled back whole, on disk and in the engine's session
//! index (a storage fault is injected with an SQLite trigger).
//!
//! Semantics of the same operations (update state, peer merging, rename, delete) are in
//! [`super::semantics`].

use crate::vault::IfExists;
use std::time::{Duration, Instant};

use session_vault_proto::model::{
    DcOption, Peer, PeerKind, SessionAcl, SessionExtras, UpdateStateChange, UpdatesState,
};

use super::support::*;
use crate::vault::{EngineError, SessionId, Vault, VaultConfig};

/// An unlocked vault over a crash image of `t` taken now (keep the dir alive while using it).
async fn crash_now(t: &TestDir, pass: &[u8]) -> (TestDir, Vault) {
    let image = crash_image(t);
    let vault = open(&image);
    vault.unlock(pass).await.expect("unlock the crash image");
    (image, vault)
}

fn peer(id: i64, tag: &str) -> Peer {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(id.wrapping_mul(7919));
    p.username = Some(format!("user_{tag}"));
    p
}

fn state(pts: i32) -> UpdatesState {
    UpdatesState {
        pts,
        qts: pts + 1,
        date: pts + 2,
        seq: pts + 3,
        channels: vec![session_vault_proto::model::ChannelState {
            id: 1_000_000 + pts as i64,
            pts: pts + 4,
        }],
    }
}

async fn peer_in(vault: &Vault, name: &str, p: &Peer) -> Option<Peer> {
    let sid = vault.open_session(name).await.expect("session");
    vault.peer(sid, p.key()).await.expect("peer lookup")
}

#[tokio::test]
pub(super) async fn cache_writes_are_visible_at_once_and_durable_within_the_flush_interval() {
    let (t, vault, sid) = vault_with_session(flush_every(20)).await;
    let (a, b) = (peer(11_111_111, "a"), peer(22_222_222, "b"));
    vault
        .cache_peers(sid, vec![a.clone(), b.clone()])
        .await
        .unwrap();
    vault
        .set_update_state(sid, UpdateStateChange::All(state(100)))
        .await
        .unwrap();
    // Visible at once, through the same storage thread.
    assert_eq!(vault.peer(sid, a.key()).await.unwrap().as_ref(), Some(&a));
    assert_eq!(vault.updates_state(sid).await.unwrap(), state(100));
    let by_name = vault.peer_by_username(sid, "USER_B").await.unwrap();
    assert_eq!(by_name.as_ref(), Some(&b));

    // A little longer than the flush interval: committed without any close or barrier.
    // (The writes above ran inline on this thread, the storage thread being idle: it must
    // still have been woken to arm its flush timer.)
    // Polled for up to 2 s more, so that a slow fsync on a loaded machine does not fail the
    // test (a timer that never fires still does).
    tokio::time::sleep(Duration::from_millis(120)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let (_image, crashed) = loop {
        let (image, crashed) = crash_now(&t, PASS).await;
        if peer_in(&crashed, "acct", &b).await.is_some() || Instant::now() > deadline {
            break (image, crashed);
        }
        close(crashed).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(peer_in(&crashed, "acct", &a).await.as_ref(), Some(&a));
    assert_eq!(peer_in(&crashed, "acct", &b).await.as_ref(), Some(&b));
    let csid = crashed.open_session("acct").await.unwrap();
    assert_eq!(crashed.updates_state(csid).await.unwrap(), state(100));
    close(crashed).await;

    // And after a clean close and reopen.
    close(vault).await;
    let vault = open_with(&t, flush_every(20));
    vault.unlock(PASS).await.unwrap();
    assert_eq!(peer_in(&vault, "acct", &b).await.as_ref(), Some(&b));
    let sid = vault.open_session("acct").await.unwrap();
    assert_eq!(vault.updates_state(sid).await.unwrap(), state(100));
    close(vault).await;
}

#[tokio::test]
pub(super) async fn cache_writes_wait_for_the_timer_or_ride_along_with_a_durable_commit() {
    // A flush interval far longer than the test: only durable writes and barriers commit.
    let (t, vault, sid) = vault_with_session(flush_every(60_000)).await;
    let p = peer(33_333_333, "c");
    vault.cache_peers(sid, vec![p.clone()]).await.unwrap();
    assert_eq!(vault.peer(sid, p.key()).await.unwrap().as_ref(), Some(&p));

    // Not committed yet: group commit batches cache-class writes instead of an fsync each.
    // (This also shows the crash image tells committed from uncommitted.)
    let (_image, crashed) = crash_now(&t, PASS).await;
    assert_eq!(peer_in(&crashed, "acct", &p).await, None);
    close(crashed).await;

    // A durable write commits the open transaction, which carries the cache write with it.
    vault.set_home_dc(sid, 5).await.unwrap();
    let (_image, crashed) = crash_now(&t, PASS).await;
    assert_eq!(peer_in(&crashed, "acct", &p).await.as_ref(), Some(&p));
    let csid = crashed.open_session("acct").await.unwrap();
    assert_eq!(crashed.session_record(csid).await.unwrap().home_dc, 5);
    close(crashed).await;

    // A barrier (lock) commits too.
    vault
        .set_update_state(sid, UpdateStateChange::Secondary { qts: 4242 })
        .await
        .unwrap();
    vault.lock().await.unwrap();
    let (_image, crashed) = crash_now(&t, PASS).await;
    let csid = crashed.open_session("acct").await.unwrap();
    assert_eq!(crashed.updates_state(csid).await.unwrap().qts, 4242);
    close(crashed).await;

    // close() commits what is pending.
    vault.unlock(PASS).await.unwrap();
    let q = peer(44_444_444, "d");
    vault.cache_peers(sid, vec![q.clone()]).await.unwrap();
    close(vault).await;
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    assert_eq!(peer_in(&vault, "acct", &q).await.as_ref(), Some(&q));
    close(vault).await;
}

/// Runs each durable write, takes a crash image right after it returns, and checks the write
/// is in the image; then checks everything again after a clean reopen.
#[tokio::test]
async fn durable_writes_are_on_disk_when_they_return() {
    const NEW_PASS: &[u8] = b"rotated passphrase";
    let t = TestDir::new();
    // A long flush interval, so that nothing but the durable commit can explain a write's
    // presence in the image.
    let vault = create_with(&t, flush_every(60_000)).await;

    let sid = new_session(&vault, "created").await;
    let (_i, c) = crash_now(&t, PASS).await;
    assert!(c.open_session("created").await.is_ok(), "create_session");
    close(c).await;

    let imported = import_new(&vault, "imported", full_session(1)).await;
    let (_i, c) = crash_now(&t, PASS).await;
    let csid = c.open_session("imported").await.unwrap();
    let got = c.export(csid).await.unwrap();
    assert_same(&normalized(got), &normalized(full_session(1)), "import");
    close(c).await;

    vault.set_home_dc(sid, 3).await.unwrap();
    let (_i, c) = crash_now(&t, PASS).await;
    let csid = c.open_session("created").await.unwrap();
    assert_eq!(c.session_record(csid).await.unwrap().home_dc, 3);
    close(c).await;

    let dc = DcOption {
        id: 3,
        ipv4: Some("10.0.0.3:443".parse().unwrap()),
        ipv6: None,
        auth_key: Some(auth_key(3)),
    };
    vault.set_dc_option(sid, dc.clone()).await.unwrap();
    let (_i, c) = crash_now(&t, PASS).await;
    let csid = c.open_session("created").await.unwrap();
    let dcs = c.dc_options(csid).await.unwrap();
    assert_same(&dcs.iter().find(|d| d.id == 3), &Some(&dc), "set_dc_option");
    close(c).await;

    let extras = SessionExtras {
        takeout_id: Some(987_654_321),
        api_id: Some(4),
        ..SessionExtras::default()
    };
    vault.set_extras(sid, extras.clone()).await.unwrap();
    let acl = SessionAcl {
        owner_uid: Some(1000),
        uids: vec![1001],
        gids: vec![50],
    };
    vault.set_acl(sid, acl.clone()).await.unwrap();
    let (_i, c) = crash_now(&t, PASS).await;
    let csid = c.open_session("created").await.unwrap();
    let record = c.session_record(csid).await.unwrap();
    assert_eq!(record.extras, extras, "set_extras");
    assert_eq!(record.acl, acl, "set_acl");
    close(c).await;

    vault.rename_session("created", "renamed").await.unwrap();
    let (_i, c) = crash_now(&t, PASS).await;
    assert!(matches!(
        c.open_session("created").await,
        Err(EngineError::NoSuchSession { .. })
    ));
    assert_eq!(c.open_session("renamed").await.unwrap(), sid);
    close(c).await;

    vault.delete_session("imported").await.unwrap();
    let (_i, c) = crash_now(&t, PASS).await;
    assert!(matches!(
        c.open_session("imported").await,
        Err(EngineError::NoSuchSession { .. })
    ));
    close(c).await;

    vault
        .change_passphrase(PASS, NEW_PASS, fast_kdf())
        .await
        .unwrap();
    let image = crash_image(&t);
    let c = open(&image);
    assert!(matches!(
        c.unlock(PASS).await,
        Err(EngineError::BadPassphrase)
    ));
    c.unlock(NEW_PASS)
        .await
        .expect("changed keyslot is on disk");
    close(c).await;

    // The same after a clean close and reopen.
    close(vault).await;
    let vault = open(&t);
    vault.unlock(NEW_PASS).await.unwrap();
    let record = vault.session_record(sid).await.unwrap();
    assert_eq!(
        (record.home_dc, record.extras, record.acl),
        (3, extras, acl)
    );
    assert!(
        vault.export(imported).await.is_err(),
        "deleted stays deleted"
    );
    let names = session_names(&vault).await;
    assert_eq!(names, ["renamed"]);
    close(vault).await;
}

#[tokio::test]
pub(super) async fn a_refused_write_leaves_nothing_behind() {
    // An operation that fails is rolled back to its savepoint; the group it shares a
    // transaction with is not affected.
    let t = TestDir::new();
    let vault = create_with(&t, flush_every(60_000)).await;
    let sid = import_new(&vault, "acct", full_session(1)).await;
    let p = peer(55_555_555, "e");
    vault.cache_peers(sid, vec![p.clone()]).await.unwrap();
    assert!(matches!(
        vault
            .import(
                "acct",
                full_session(2),
                IfExists::Refuse,
                SessionAcl::default()
            )
            .await,
        Err(EngineError::NameTaken { .. })
    ));
    assert!(matches!(
        vault
            .create_session(" bad name", SessionAcl::default())
            .await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        vault.set_home_dc(SessionId(9_999), 1).await,
        Err(EngineError::NoSuchSession { .. })
    ));
    close(vault).await;
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    let mut want = full_session(1);
    want.peers.push(p);
    let got = vault.export(sid).await.unwrap();
    assert_same(&normalized(got), &normalized(want), "acct");
    assert_eq!(vault.list_sessions().await.unwrap().len(), 1);
    close(vault).await;
}

#[tokio::test]
async fn a_write_that_fails_midway_leaves_the_session_index_as_on_disk() {
    // Fault injection: a trigger fails every peer write of any session but the first one, as
    // a full disk or an I/O error would half-way through an import.
    let t = TestDir::new();
    let vault = create(&t).await;
    let first = import_new(&vault, "a", full_session(1)).await;
    close(vault).await;
    raw(&t.db())
        .execute_batch(&format!(
            "CREATE TRIGGER inject_fault BEFORE INSERT ON peers WHEN NEW.session > {}
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            first.0
        ))
        .unwrap();
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();

    // A new session whose import fails: nothing of it remains, the name stays free.
    let r = vault
        .import(
            "b",
            full_session(2),
            IfExists::Refuse,
            SessionAcl::default(),
        )
        .await;
    assert!(r.is_err(), "the injected fault fails the import");
    let listed = session_names(&vault).await;
    assert_eq!(listed, ["a"], "on disk: only the first session");
    assert_eq!(vault.status().await.unwrap().sessions, Some(1));
    assert!(
        matches!(
            vault.open_session("b").await,
            Err(EngineError::NoSuchSession { .. })
        ),
        "the failed import's name resolves"
    );
    let r = vault.create_session("b", SessionAcl::default()).await;
    assert!(r.is_ok(), "the name is free: {r:?}");

    // A replacing import that fails keeps the replaced session, by its name.
    let r = vault
        .import(
            "a",
            full_session(3),
            IfExists::Replace,
            SessionAcl::default(),
        )
        .await;
    assert!(r.is_err(), "the injected fault fails the replacing import");
    let sid = vault.open_session("a").await.unwrap();
    assert_eq!(sid, first, "the name still points at the kept session");
    let got = vault.export(sid).await.unwrap();
    assert_same(&normalized(got), &normalized(full_session(1)), "kept data");
    close(vault).await;
}

#[tokio::test]
async fn a_cache_write_that_fails_midway_without_a_savepoint_keeps_the_writes_before_it() {
    // Cache-class writes run without a savepoint while nothing waits for the open
    // transaction's commit (the SQLite store's savepoint journal copied every page they
    // touched). One that fails half-way must still leave nothing, and keep what the
    // acknowledged writes before it in the same transaction did. A trigger fails a peer
    // insert once the session holds `limit` peers.
    let (t, vault, sid) = vault_with_session(flush_every(60_000)).await;
    close(vault).await;
    let limit = 12;
    raw(&t.db())
        .execute_batch(&format!(
            "CREATE TRIGGER inject_fault BEFORE INSERT ON peers
             WHEN (SELECT count(*) FROM peers WHERE session = NEW.session) >= {limit}
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
        ))
        .unwrap();
    let vault = open_with(&t, flush_every(60_000));
    vault.unlock(PASS).await.unwrap();

    // Acknowledged, not committed (the flush interval is a minute): 2 inline-sized writes
    // and one batch, 10 peers in all.
    let before: Vec<Peer> = (0..10)
        .map(|i| peer(70_000_000 + i, &format!("b{i}")))
        .collect();
    vault.cache_peers(sid, before[..1].to_vec()).await.unwrap();
    vault.cache_peers(sid, before[1..2].to_vec()).await.unwrap();
    vault.cache_peers(sid, before[2..].to_vec()).await.unwrap();
    // 5 new peers: the 3rd insert fails, after 2 were written.
    let failing: Vec<Peer> = (0..5)
        .map(|i| peer(80_000_000 + i, &format!("f{i}")))
        .collect();
    let r = vault.cache_peers(sid, failing.clone()).await;
    assert!(r.is_err(), "the injected fault fails the write: {r:?}");
    // A small failing write too (inline path): 1 peer after 2 more fit.
    let after: Vec<Peer> = (0..2)
        .map(|i| peer(90_000_000 + i, &format!("a{i}")))
        .collect();
    vault.cache_peers(sid, after.clone()).await.unwrap();
    let r = vault.cache_peers(sid, vec![peer(90_000_099, "late")]).await;
    assert!(r.is_err(), "the session is full for the trigger: {r:?}");

    let check = |vault: Vault, what: &'static str| {
        let before = before.clone();
        let failing = failing.clone();
        let after = after.clone();
        async move {
            for p in before.iter().chain(&after) {
                assert_eq!(
                    vault.peer(sid, p.key()).await.unwrap().as_ref(),
                    Some(p),
                    "{what}: an acknowledged write before or after the failed one is kept"
                );
            }
            for p in failing.iter().chain([&peer(90_000_099, "late")]) {
                assert_eq!(
                    vault.peer(sid, p.key()).await.unwrap(),
                    None,
                    "{what}: nothing of a failed write is kept"
                );
            }
            let exported = vault.export(sid).await.unwrap();
            assert_eq!(exported.peers.len(), 12, "{what}: peer count");
            vault
        }
    };
    let vault = check(vault, "before the commit").await;
    close(vault).await;
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    let vault = check(vault, "after the commit").await;
    close(vault).await;
}

#[tokio::test]
async fn an_unguarded_operation_is_abandoned_alone_only_if_it_wrote_nothing() {
    use crate::vault::store::{Row, Store, Table};
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    close(vault).await;
    with_store(&t, |s| {
        s.begin().unwrap();
        let row = |b: u8| Row {
            key: vec![b; 16],
            value: vec![b; 40],
        };
        // Kept: an earlier operation's write.
        s.savepoint().unwrap();
        s.put(Table::Peers, sid.0, &row(1), [None, None]).unwrap();
        s.release_op().unwrap().unwrap();
        // Refused before writing (it only read): abandoned alone, the transaction goes on.
        assert!(
            s.unguarded_op().unwrap(),
            "SQLite runs it without a savepoint"
        );
        assert_eq!(s.get(Table::Peers, sid.0, &[9; 16]).unwrap(), None);
        s.rollback_to_savepoint()
            .expect("an operation that wrote nothing is abandoned alone");
        assert!(s.get(Table::Peers, sid.0, &[1; 16]).unwrap().is_some());
        // Failed after writing: only a rollback of the transaction undoes it.
        assert!(s.unguarded_op().unwrap());
        s.put(Table::Peers, sid.0, &row(2), [None, None]).unwrap();
        assert!(
            s.rollback_to_savepoint().is_err(),
            "an operation that wrote cannot be abandoned alone"
        );
        s.rollback().unwrap();
        assert_eq!(s.get(Table::Peers, sid.0, &[1; 16]).unwrap(), None);
    });
}

/// PostgreSQL only (run by `postgres::…_on_postgres`): a commit fails (the server went
/// down), the storage thread rolls back and cannot even begin the transaction that
/// re-applies the acknowledged cache-class writes (`replay`: the server is still down), so it
/// keeps them pending and enters the failing state. The next write that arrives once the
/// server is back must re-apply them before its own: `begin_op` once began a bare
/// transaction, whose commit forgot them (found in review).
pub(super) fn acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(replay_could_not_begin(false));
}

/// The body of the repro above; `barrier_first`: a barrier job (which commits, retrying the
/// re-apply first) runs before the next write, the control that keeps the write.
pub(super) async fn replay_could_not_begin(barrier_first: bool) {
    let t = TestDir::new();
    let pg = t.pg.as_ref().expect("run under with_postgres");
    let vault = create_with(&t, flush_every(60_000)).await;
    let sid = vault
        .create_session("acct", SessionAcl::default())
        .await
        .unwrap();
    // Acknowledged, held in the open transaction (the flush interval is a minute).
    let first = peer(70_000_001, "first");
    vault.cache_peers(sid, vec![first.clone()]).await.unwrap();
    pg.cluster.kill();
    // A durable write that needs no round trip before its commit (the session is fenced in
    // this transaction already): its COMMIT fails, and so does the re-apply's BEGIN.
    let dc = DcOption {
        id: 2,
        ipv4: Some("10.0.0.2:443".parse().unwrap()),
        ipv6: None,
        auth_key: Some(auth_key(2)),
    };
    let r = vault.set_dc_option(sid, dc).await;
    assert!(r.is_err(), "the server is down: {r:?}");
    pg.cluster.pg_ctl_start();
    if barrier_first {
        vault.refresh().await.unwrap();
    }
    // Answered after a commit (the storage is failing), which succeeds.
    let second = peer(70_000_002, "second");
    vault.cache_peers(sid, vec![second.clone()]).await.unwrap();
    assert_eq!(
        vault.peer(sid, second.key()).await.unwrap().as_ref(),
        Some(&second)
    );
    assert_eq!(
        vault.peer(sid, first.key()).await.unwrap().as_ref(),
        Some(&first),
        "the write acknowledged before the failed commit is kept"
    );
    close(vault).await;
}

/// A cache-class write that fails after writing, unguarded, is undone by rolling the
/// transaction back and re-applying the acknowledged writes before it: those stay due at
/// the flush interval after the first of them was acknowledged, not after the failure (the
/// re-apply once restarted the clock: a write could wait up to two flush intervals).
#[tokio::test]
async fn writes_re_applied_after_an_unguarded_failure_keep_their_flush_deadline() {
    let flush = Duration::from_secs(4);
    let (t, vault, sid) = vault_with_session(flush_every(flush.as_millis() as u64)).await;
    close(vault).await;
    // Fails a peer insert once the session holds 3 peers.
    raw(&t.db())
        .execute_batch(
            "CREATE TRIGGER inject_fault BEFORE INSERT ON peers
             WHEN (SELECT count(*) FROM peers WHERE session = NEW.session) >= 3
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
        )
        .unwrap();
    let vault = open_with(&t, flush_every(flush.as_millis() as u64));
    vault.unlock(PASS).await.unwrap();

    let first = peer(71_000_001, "first");
    vault.cache_peers(sid, vec![first.clone()]).await.unwrap();
    let acknowledged = Instant::now();
    // Half an interval later, a write that fails at its 3rd peer, after writing 2.
    tokio::time::sleep(flush / 2).await;
    let failing = (2..5).map(|i| peer(71_000_000 + i, "f")).collect();
    let r = vault.cache_peers(sid, failing).await;
    assert!(r.is_err(), "the injected fault fails the write: {r:?}");
    assert_eq!(
        vault.peer(sid, first.key()).await.unwrap().as_ref(),
        Some(&first),
        "re-applied"
    );
    // Committed by a quarter interval after its deadline (its commit restarted at the
    // failure would come a quarter interval after that).
    let by = acknowledged + flush + flush / 4;
    let committed = loop {
        let (_image, crashed) = crash_now(&t, PASS).await;
        let found = peer_in(&crashed, "acct", &first).await.is_some();
        close(crashed).await;
        if found || Instant::now() > by {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        committed,
        "the re-applied write was committed within its flush interval"
    );
    close(vault).await;
}
