//! Revocation across hosts in the corner cases a review found: a revoke made elsewhere while
//! this host is locked, and an open racing a revoke elsewhere. Both must end the revoked
//! uid's handle here.

use std::time::Duration;

use session_vault_proto::message::{ErrorCode, Request, Response};

use super::{refs, share_with_me, start_bot_host, store_args};
use crate::util::child::{As, ChildClient};
use crate::util::pg::Cluster;
use crate::util::*;

/// One request on `env`'s daemon from a client process running as `OTHER_UID` (C's admin).
fn as_admin(env: &Env, request: Request) -> Response {
    let child = ChildClient::spawn(env, As::Other, &[request], false);
    let r = child.response();
    child.finish();
    r
}

/// A revoke made on host A while host C is locked ends the revoked uid's handle on C once C
/// is unlocked. C's coherence poll sees the change while locked and cannot read the
/// session's record then; the change is consumed by that look, so C must remember to check
/// again (it once skipped the handle for good, which kept reading the session, DC options and
/// auth keys included, for as long as its connection lived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_elsewhere_while_locked_ends_the_handle_once_unlocked() {
    if !can_switch_uid() {
        eprintln!("SKIPPED: needs root and setpriv (a client as another uid)");
        return;
    }
    let Some(cluster) = Cluster::start_or_skip("a revoke elsewhere while locked") else {
        return;
    };
    let db = cluster.create_database();
    let a = Env::new();
    let args_a = store_args(&a, &cluster, &db);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    // Host C: this process is an ordinary bot there (OTHER_UID is its admin); it unlocks
    // from a credential at start.
    let (c, dc_, cc) = start_bot_host(&cluster, &db).await;
    c.open_socket_to_everyone();

    let me = share_with_me(&ca, "shared").await;
    let hc = open_session(&cc, "shared", false).await;
    let r = cc.call(Request::GetHomeDc { handle: hc }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "granted on C: {r:?}");

    // C is locked (its admin, or its auto-lock); meanwhile A revokes this uid.
    let r = as_admin(&c, Request::Lock);
    assert!(matches!(r, Response::Ok), "lock C: {r:?}");
    let r = ca
        .call(Request::Revoke {
            name: "shared".into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke on A: {r:?}");
    // Several of C's 0.5 s polls while locked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = as_admin(&c, unlock_request(PASS));
    assert!(matches!(r, Response::Ok), "unlock C: {r:?}");
    // And several more once unlocked.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A new open is refused (it reads the ACL afresh)...
    let r = cc
        .call(Request::OpenSession {
            name: "shared".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert!(r.is_err(), "C refuses a new open after the revoke: {r:?}");
    // ...but the handle opened before the revoke must be ended too.
    match cc.call(Request::GetDcOptions { handle: hc }).await {
        Err(e) => {
            let w = e.wire().expect("a wire error");
            assert_eq!(w.code, ErrorCode::NoSuchSession, "{}", w.message);
        }
        Ok(other) => panic!(
            "the revoked handle still reads the session on C after its unlock: {other:?}\n{}",
            dc_.log()
        ),
    }
}

/// A row lock on `session`'s lease row held from a connection of its own (a stand-in for
/// another host's open group commit whose fencing check locked it, or a paused one) until
/// the returned sender is dropped or sent to.
fn hold_lease_row(cluster: &Cluster, db: &str, name: &str) -> std::sync::mpsc::Sender<()> {
    let conn = format!(
        "host={} user=svtest password={} dbname={db}",
        cluster.socket_dir().display(),
        cluster.password()
    );
    let name = name.to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut raw = postgres::Client::connect(&conn, postgres::NoTls).expect("raw connection");
        // An expired lease of a host gone, so that an open here takes it over (an update
        // of the row, which waits for the row lock).
        raw.batch_execute(&format!(
            "INSERT INTO leases (session, token, host, instance, expires_at) \
             SELECT id, nextval('lease_token'), 'gone', 'gone-instance', now() - interval '1 hour' \
             FROM sessions WHERE name = '{name}' \
             ON CONFLICT (session) DO UPDATE SET token = excluded.token, host = excluded.host, \
             instance = excluded.instance, expires_at = excluded.expires_at; \
             BEGIN; SELECT 1 FROM leases WHERE session = (SELECT id FROM sessions \
             WHERE name = '{name}') FOR SHARE"
        ))
        .expect("lock the lease row");
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
        let _ = raw.batch_execute("COMMIT");
    });
    locked_rx.recv().unwrap();
    release_tx
}

/// An open that decided on the ACL before a revoke elsewhere committed, and registers its
/// handle after this daemon's coherence poll handled that revoke, must decide again: every
/// change seen moves the handle epoch (it once moved only when some handle here was ended,
/// and a session without handles here had none, so the open kept its stale decision). The
/// window is the open's work between its ACL read and registering (the lease take and the DC
/// options); here it is widened by a lease row another host holds locked, so that the take
/// waits, as behind a paused host's group commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_racing_a_revoke_elsewhere_does_not_keep_its_handle() {
    let Some(cluster) = Cluster::start_or_skip("an open racing a revoke elsewhere") else {
        return;
    };
    let db = cluster.create_database();
    let a = Env::new();
    let args_a = store_args(&a, &cluster, &db);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let (c, dc_, cc) = start_bot_host(&cluster, &db).await;
    let me = share_with_me(&ca, "shared").await;
    // C follows the grant (its poll; the open checks first too).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let release = hold_lease_row(&cluster, &db, "shared");
    // The bot's exclusive open on C: its ACL check passes, then its lease take waits.
    let cc2 = c.connect().await;
    let opening = tokio::spawn(async move {
        let r = cc2
            .call(Request::OpenSession {
                name: "shared".into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await;
        (cc2, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = ca
        .call(Request::Revoke {
            name: "shared".into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke on A: {r:?}");
    // C's next poll is queued behind the waiting take.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(release);
    let (cc2, opened) = opening.await.unwrap();
    let handle = match opened {
        Ok(Response::Opened { handle, .. }) => handle,
        // Refused after all: the race went the safe way.
        other => {
            eprintln!("open refused: {other:?}");
            return;
        }
    };
    // Several polls later, the handle of the revoked uid must be gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match cc2.call(Request::GetDcOptions { handle }).await {
        Err(e) => {
            let w = e.wire().expect("a wire error");
            assert_eq!(w.code, ErrorCode::NoSuchSession, "{}", w.message);
        }
        Ok(other) => panic!(
            "the handle opened across the revoke still reads the session: {other:?}\n{}",
            dc_.log()
        ),
    }
    drop(cc);
}
