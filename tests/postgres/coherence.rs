//! What one host sees of another's changes on the same database: the vault itself (written
//! on one, read on another), names, ACLs, keyslots and the audit chain, and creates of one
//! name racing on two hosts.

use std::time::{Duration, Instant};

use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::SessionData;

use super::{TwoHosts, audit_verdict, names, refs, share_with_me, start_bot_host, store_args};
use crate::util::pg::Cluster;
use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_with_their_own_dirs_share_one_postgres_vault() {
    let Some(cluster) = Cluster::start_or_skip("vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();

    // "Host" A initializes the vault and writes a session, durably.
    let a = Env::new();
    let args_a = store_args(&a, &cluster, &db);
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    set_home_dc(&ca, h, 4).await;
    assert!(
        !a.vault_db().exists(),
        "no SQLite file is made beside a PostgreSQL store"
    );
    let status = ca.call(Request::Status).await;
    let shown = format!("{status:?}");
    assert!(shown.contains("postgres://svtest@"), "{shown}");
    assert!(!shown.contains(cluster.password()), "no password in status");
    drop(ca);
    da.terminate();

    // "Host" B: its own data dir and socket, the same database; it unlocks for itself (the
    // keyslots are in PostgreSQL) and reads what A wrote.
    let b = Env::new();
    let args_b = store_args(&b, &cluster, &db);
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    let hb = open_session(&cb, "bot", false).await;
    assert_home_dc(&cb, hb, 4, "on B").await;
    let log = db_.log();
    assert!(!log.contains(cluster.password()), "no password in the log");
    drop(cb);
    db_.terminate();

    // A restarts locked, and unlocks with the same passphrase.
    let (da, ca) = a.start_unlocked(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", false).await;
    assert_home_dc(&ca, h, 4, "on A").await;
    drop(ca);
    da.terminate();
}

/// One daemon's changes to names, ACLs and keyslots are followed by another on the same
/// database: a revoke on A ends B's handle within the 0.5 s poll (plus a round trip) and B
/// refuses new opens; sessions created, renamed and deleted on A show in B's `list` and
/// opens; a passphrase change on A leaves B serving, and B's next unlock takes the new
/// passphrase only; the audit entries both appended form one chain that verifies on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_follows_names_acls_and_keyslots_changed_by_another() {
    let Some(cluster) = Cluster::start_or_skip("coherence of vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    let (ca, cb) = (&hosts.ca, &hosts.cb);
    // "Host" C, where this process is an ordinary bot (another uid is the admin); it
    // unlocks unattended from a credential, as under systemd.
    let (_c, dc_, cc) = start_bot_host(&cluster, &db).await;

    // Created on A after B and C unlocked, owned by another uid, granted to this one.
    let me = share_with_me(ca, "shared").await;
    let hc = open_session(&cc, "shared", true).await;
    let r = cc.call(Request::GetHomeDc { handle: hc }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "granted on C: {r:?}");

    // Revoke on A: C's handle ends without any request to C in between (an idle bot):
    // C's own poll finds the change and ends it.
    let r = ca
        .call(Request::Revoke {
            name: "shared".into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke on A: {r:?}");
    let t = Instant::now();
    while !dc_.log().contains("access revoked by another vaultd") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "C did not end the revoked handle within 5 s\n{}",
            dc_.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "C's idle handle ended {} ms after A's revoke was answered (poll 500 ms)",
        t.elapsed().as_millis()
    );
    match cc.call(Request::GetHomeDc { handle: hc }).await {
        Err(e) => {
            let w = e.wire().expect("a wire error");
            assert_eq!(w.code, ErrorCode::NoSuchSession, "{}", w.message);
            assert!(w.message.contains("revoked"), "{}", w.message);
        }
        other => panic!("the revoked handle still works on C: {other:?}"),
    }
    let r = cc
        .call(Request::OpenSession {
            name: "shared".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert!(r.is_err(), "C refuses a new open after the revoke: {r:?}");
    drop(cc);
    dc_.terminate();

    // Names: created, renamed and deleted on A, seen by B at once.
    let _h = open_session(ca, "made-on-a", false).await;
    assert!(names(cb).await.contains(&"made-on-a".to_owned()));
    let r = ca
        .call(Request::RenameSession {
            old: "made-on-a".into(),
            new: "renamed-on-a".into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "rename on A: {r:?}");
    let seen = names(cb).await;
    assert!(
        seen.contains(&"renamed-on-a".to_owned()) && !seen.contains(&"made-on-a".to_owned()),
        "{seen:?}"
    );
    let r = ca
        .call(Request::ImportSession {
            name: "mine".into(),
            data: SessionData::default(),
            replace: false,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import on A: {r:?}");
    let r = ca
        .call(Request::DeleteSession {
            name: "renamed-on-a".into(),
            force: true,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "delete on A: {r:?}");
    assert!(!names(cb).await.contains(&"renamed-on-a".to_owned()));
    let hm = open_session(cb, "mine", false).await;

    // Passphrase changed on A: B keeps serving; after a lock, only the new one unlocks B.
    let r = ca
        .call(Request::ChangePassphrase {
            old: passphrase(PASS),
            new: passphrase("a new passphrase"),
            kdf: Some(CHEAP_KDF_SPEC),
            recovery: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "passwd on A: {r:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = cb.call(Request::GetHomeDc { handle: hm }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "B serves on: {r:?}");
    let r = cb
        .call(Request::SetHomeDc {
            handle: hm,
            dc_id: 3,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "B writes on: {r:?}");
    assert!(matches!(cb.call(Request::Lock).await, Ok(Response::Ok)));
    let old = err_code(unlock_with(cb, PASS).await);
    assert!(
        matches!(old, ErrorCode::BadPassphrase { .. }),
        "the old passphrase no longer unlocks B: {old:?}"
    );
    // The throttle spaces attempts after a wrong one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = unlock_with(cb, "a new passphrase").await;
    assert!(matches!(r, Ok(Response::Ok)), "the new one does: {r:?}");

    // One audit chain, appended by both, verifies on both.
    let (ok_a, n_a) = audit_verdict(&hosts.a);
    let (ok_b, n_b) = audit_verdict(&hosts.b);
    assert!(ok_a && ok_b, "audit verifies on A ({ok_a}) and B ({ok_b})");
    assert!(n_a >= 8, "A's and B's acts are logged: {n_a}");
    assert!(
        n_a.abs_diff(n_b) <= 2,
        "one log: {n_a} entries on A, {n_b} on B"
    );
}

/// Two daemons creating the same names at the same moment: for each name exactly one
/// creates it and the other gets `name_taken` (the conflict is retried after a re-read, at
/// most three tries), never a storage error; both then list every name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_on_two_daemons_give_name_taken() {
    let Some(cluster) = Cluster::start_or_skip("conflicts across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    let (ca, cb) = (&hosts.ca, &hosts.cb);
    let create = |name: String| Request::ImportSession {
        name,
        data: SessionData::default(),
        replace: false,
        owner_uid: None,
        force: false,
    };
    let n = 12;
    let mut created = 0;
    for i in 0..n {
        let name = format!("race-{i}");
        let (ra, rb) = tokio::join!(ca.call(create(name.clone())), cb.call(create(name)));
        for r in [ra, rb] {
            match r {
                Ok(Response::Ok) => created += 1,
                Err(e) => {
                    let w = e.wire().expect("a wire error");
                    assert_eq!(
                        w.code,
                        ErrorCode::NameTaken,
                        "{}\n{}",
                        w.message,
                        hosts.daemon_b.log()
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(created, n, "each name created exactly once");
    let (la, lb) = (names(ca).await, names(cb).await);
    assert_eq!(la.len(), n);
    assert_eq!(la, lb);
}
