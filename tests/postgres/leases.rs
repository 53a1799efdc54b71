//! Leases across hosts (daemons with their own dirs on one database): a session held on one
//! host is busy on the others, and taken over once its holder died or stalled past the
//! lease expiry; a resumed, lapsed holder is fenced. (A holder stalled inside a transaction:
//! [`super::pause`].)

use std::time::{Duration, Instant};

use session_vault_proto::message::{ErrorCode, Request, Response};

use super::{refs, store_args_expiring};
use crate::util::pg::Cluster;
use crate::util::*;

/// Exclusive opens across "hosts" (daemons with their own dirs on one database), with a
/// one-second lease expiry: busy elsewhere, naming the holder's host; a SIGKILLed holder's
/// lease lapses and another daemon takes over with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_busy_on_other_hosts_and_taken_over_after_its_holder_dies() {
    let Some(cluster) = Cluster::start_or_skip("leases across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b, c3) = (Env::new(), Env::new(), Env::new());
    let [args_a, args_b, args_c] = [&a, &b, &c3].map(|env| store_args_expiring(env, &cluster, &db));
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    set_home_dc(&ca, h, 4).await;
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;
    let (_dc, cc) = c3.start_unlocked(&refs(&args_c)).await;

    for other in [&cb, &cc] {
        let r = other
            .call(Request::OpenSession {
                name: "bot".into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await;
        let e = r.expect_err("busy on another host");
        let w = e.wire().expect("a wire error");
        assert_eq!(
            w.code,
            ErrorCode::SessionBusy {
                holder_pid: Some(std::process::id())
            }
        );
        assert!(w.message.contains("on host "), "{}", w.message);
    }

    // The holder's daemon dies; its lease lapses; B takes over within expiry + 1 s.
    drop(ca);
    da.kill();
    let (hb, took) = open_when_free(&cb, "bot", Duration::from_secs(5)).await;
    eprintln!(
        "takeover {} ms after the holder's SIGKILL (expiry 1 s)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "{took:?}"
    );
    assert_home_dc(&cb, hb, 4, "kept from the acknowledged write").await;
    // Now C sees B as the holder.
    let r = cc
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: true,
            create_if_missing: false,
        })
        .await;
    assert!(r.is_err(), "busy: B holds it now");
}

/// A holder paused (SIGSTOP) past its lease expiry loses the session to another daemon, and
/// once resumed its writes are refused by the database (fencing); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_when_it_resumes() {
    let Some(cluster) = Cluster::start_or_skip("fencing of vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let [args_a, args_b] = [&a, &b].map(|env| store_args_expiring(env, &cluster, &db));
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    set_home_dc(&ca, h, 4).await;
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(da.pid() as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let hb = loop {
        match cb
            .call(Request::OpenSession {
                name: "bot".into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await
        {
            Ok(Response::Opened { handle, .. }) => break handle,
            _ => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "no takeover after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    set_home_dc(&cb, hb, 5).await; // the new holder writes
    // SAFETY: as above.
    unsafe { libc::kill(da.pid() as i32, libc::SIGCONT) };

    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 9,
        })
        .await;
    assert!(
        r.is_err(),
        "a resumed, lapsed holder's write is refused: {r:?}"
    );
    assert_home_dc(&cb, hb, 5, "without the fenced write").await;
    drop(ca);
    drop(da);
}
