//! A host paused (SIGSTOP) in the middle of a group commit, whose open transaction holds the
//! `FOR SHARE` lock on a session's lease row and the shared data-key lock: PostgreSQL ends its
//! session once it has sat idle for vaultd's `idle_in_transaction_session_timeout` (by
//! default four flush intervals, at least 5 s), so another host takes the session over then
//! instead of waiting for the paused host to resume; once resumed, its writes are refused.

use std::time::{Duration, Instant};

use session_vault_proto::message::{PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKey, PeerKind};

use super::{refs, store_args};
use crate::util::pg::Cluster;
use crate::util::*;

/// The backends of `db` that are idle inside a transaction, by pid.
fn idle_in_transaction(cluster: &Cluster, db: &str) -> Vec<String> {
    let out = cluster.psql(
        db,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' \
             AND state = 'idle in transaction' ORDER BY pid"
        ),
    );
    out.lines().map(str::to_owned).collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_inside_a_transaction_holds_a_takeover_up_for_its_idle_timeout_only() {
    let Some(cluster) = Cluster::start_or_skip("a paused vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    // A's group commits stay open up to 1 s (the lease renewal, every second, commits first);
    // its idle timeout is then the default: max(5 s, 4 × 1 s) = 5 s.
    let mut args_a = store_args(&a, &cluster, &db);
    args_a.extend(["--lease-expiry", "3s", "--flush-interval-ms", "1000"].map(String::from));
    let mut args_b = store_args(&b, &cluster, &db);
    args_b.extend(["--lease-expiry", "3s"].map(String::from));
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    assert!(
        da.log()
            .contains("PostgreSQL ends a transaction of this vaultd left idle this long"),
        "{}",
        da.log()
    );
    let h = open_session(&ca, "bot", true).await;
    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "durable write on A: {r:?}");
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;

    // A cache-class write, acknowledged inside an open group commit (its lease row locked
    // `FOR SHARE`), then A stopped before it commits. A lease renewal may commit the group
    // between the answer and the SIGSTOP: then resume A and try again.
    let peer = |id: i64| {
        let mut p = Peer::new(PeerKind::User, id);
        p.access_hash = Some(id * 7);
        p
    };
    let mut held_by_a = None;
    for id in 1..=20 {
        let r = ca
            .call(Request::CachePeers {
                handle: h,
                peers: vec![peer(id)].into(),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "cache write on A: {r:?}");
        signal(da.pid(), libc::SIGSTOP);
        let open = idle_in_transaction(&cluster, &db);
        if open.len() == 1 {
            held_by_a = Some((id, open[0].clone()));
            break;
        }
        signal(da.pid(), libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let (cached, backend) = held_by_a.expect("A stopped inside an open transaction");
    let paused = Instant::now();

    // B takes the session over: its lease statement waits for A's row lock until
    // PostgreSQL ends A's idle session (5 s), then until A's lease lapsed (3 s).
    // The outer timeout fires first, so that A is resumed before the test fails.
    let takeover = open_when_free(&cb, "bot", Duration::from_secs(60));
    let hb = match tokio::time::timeout(Duration::from_secs(30), takeover).await {
        Ok((hb, _)) => hb,
        Err(_) => {
            signal(da.pid(), libc::SIGCONT);
            panic!(
                "no takeover 30 s into A's pause: its open transaction still holds the lease row"
            );
        }
    };
    let took = paused.elapsed();
    eprintln!(
        "takeover {} ms into A's pause (idle timeout 5 s, lease expiry 3 s)",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let gone = cluster.psql(
        &db,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"),
    );
    assert_eq!(gone, "0", "PostgreSQL ended the paused host's session");

    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(4))),
        "A's acknowledged durable write is kept: {r:?}"
    );
    let r = cb
        .call(Request::SetHomeDc {
            handle: hb,
            dc_id: 5,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "the new holder writes: {r:?}"
    );

    // A resumes: its transaction is gone, and its writes are refused (fencing).
    signal(da.pid(), libc::SIGCONT);
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
    let r = ca
        .call(Request::CachePeers {
            handle: h,
            peers: vec![peer(100)].into(),
        })
        .await;
    assert!(r.is_err(), "and its cache-class writes too: {r:?}");
    // Let A's storage thread try its rolled-back group commit again (it re-applies it after
    // a failed commit, where the fencing check refuses it).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(5))),
        "the fenced write is absent: {r:?}"
    );
    for id in [cached, 100] {
        let r = cb
            .call(Request::GetPeer {
                handle: hb,
                query: PeerQuery::Key(PeerKey {
                    kind: PeerKind::User,
                    id,
                }),
            })
            .await;
        assert!(
            matches!(r, Ok(Response::Peer(None))),
            "A's write {id}, never committed, did not land after the takeover: {r:?}"
        );
    }
    drop(ca);
    drop(da);
}
