//! A session deleted or replaced on one host while another host's client keeps writing it:
//! nothing of the old session may stay in the database (its rows are sealed, but an auth key
//! among them is still the account's key for whoever later holds the passphrase), and no
//! stale write may land in the replacement.

use std::time::Duration;

use session_vault_proto::message::Request;
use session_vault_proto::model::{Peer, PeerKind};

use session_vault_client::Connection;
use session_vault_proto::message::Response;
use session_vault_proto::model::SessionData;

use super::TwoHosts;
use crate::util::pg::Cluster;
use crate::util::*;

/// Host B's client has session `doomed` open (shared: no lease) and writes it flat out (new peers, cache class,
/// and its home DC, durable); host A's admin deletes it with `force`. B learns of the
/// delete at its next coherence check (up to 0.5 s later): its writes meanwhile must be
/// refused, or removed by the delete, never left behind as rows of a session that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_deleted_elsewhere_leaves_no_row_behind_its_writers() {
    let Some(cluster) = Cluster::start_or_skip("a delete racing another host's writes") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    // Shared: a lease held on B would make A's delete wait for it (refused as busy).
    let hb = open_session(&hosts.cb, "doomed", false).await;
    set_home_dc(&hosts.cb, hb, 4).await;
    let sid = cluster.psql(&db, "SELECT id FROM sessions WHERE name = 'doomed'");
    assert!(!sid.is_empty(), "the session has a row");

    let writer = tokio::spawn(write_flat_out(hosts.cb.clone(), hb));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = hosts
        .ca
        .call(Request::DeleteSession {
            name: "doomed".into(),
            force: true,
        })
        .await;
    assert!(r.is_ok(), "delete on A: {r:?}");
    let (acknowledged, ended) = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("B's writes end once B sees the delete")
        .expect("writer task");
    // Whatever B had acknowledged is committed within its flush interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = rows_left(&cluster, &db, &sid);
    eprintln!(
        "B's writes acknowledged before the first refusal: {acknowledged} (then {ended}); \
         rows left of the deleted session: {left:?}"
    );
    assert!(
        left.iter().all(|l| l.ends_with(" 0")),
        "rows of the deleted session stayed in the database: {left:?}"
    );
    assert_eq!(
        cluster.psql(
            &db,
            &format!("SELECT count(*) FROM sessions WHERE id = {sid}")
        ),
        "0"
    );
}

/// Writes session handle `hb` on `c` until a write is refused: new peers (cache class), and
/// every tenth write its home DC (1–5, durable). Returns how many were acknowledged and the
/// refusal.
async fn write_flat_out(c: Connection, hb: u32) -> (i64, String) {
    for i in 0i64.. {
        let mut p = Peer::new(PeerKind::User, 5_000_000 + i);
        p.access_hash = Some(i + 1);
        let r = if i % 10 == 0 {
            c.call(Request::SetHomeDc {
                handle: hb,
                dc_id: 1 + (i / 10 % 5) as i32,
            })
            .await
        } else {
            c.call(Request::CachePeers {
                handle: hb,
                peers: vec![p].into(),
            })
            .await
        };
        if r.is_err() {
            // Every write before this one was acknowledged.
            return (i, format!("{r:?}"));
        }
    }
    unreachable!()
}

/// Rows of session `sid` in each per-session table, as `"table count"`.
fn rows_left(cluster: &Cluster, db: &str, sid: &str) -> Vec<String> {
    ["peers", "dc_options", "state", "channels", "sent_files"]
        .iter()
        .map(|t| {
            let n = cluster.psql(
                db,
                &format!("SELECT count(*) FROM {t} WHERE session = {sid}"),
            );
            format!("{t} {n}")
        })
        .collect()
}

/// As above, but host A's admin replaces the session (`import_session` with `replace` and
/// `force`: home DC 1, no peer), which deletes it and creates the replacement under a new id.
/// B's writes must neither stay as rows of the old id (9 peers once did) nor reach the
/// replacement (a bot still running on the old auth key would write it back over the new
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replaced_elsewhere_takes_no_write_from_its_old_writers() {
    let Some(cluster) = Cluster::start_or_skip("a replace racing another host's writes") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    let hb = open_session(&hosts.cb, "replaced", false).await;
    set_home_dc(&hosts.cb, hb, 4).await;
    let sid = cluster.psql(&db, "SELECT id FROM sessions WHERE name = 'replaced'");
    let writer = tokio::spawn(write_flat_out(hosts.cb.clone(), hb));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = hosts
        .ca
        .call(Request::ImportSession {
            name: "replaced".into(),
            data: SessionData {
                home_dc: 1,
                ..Default::default()
            },
            replace: true,
            owner_uid: None,
            force: true,
        })
        .await;
    assert!(r.is_ok(), "replace on A: {r:?}");
    let (acknowledged, ended) = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("B's writes end once B sees the replace")
        .expect("writer task");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = rows_left(&cluster, &db, &sid);
    let ha = open_session(&hosts.ca, "replaced", false).await;
    let home = hosts.ca.call(Request::GetHomeDc { handle: ha }).await;
    eprintln!(
        "B's writes acknowledged before the first refusal: {acknowledged} (then {ended}); \
         rows left of its old id: {left:?}; the replacement's home DC: {home:?}"
    );
    assert!(
        left.iter().all(|l| l.ends_with(" 0")),
        "B's writes stayed as rows of the replaced session's old id: {left:?}"
    );
    assert!(
        matches!(home, Ok(Response::HomeDc(1))),
        "the replacement's home DC was overwritten by B: {home:?}"
    );
}

/// Two hosts' admins each delete a session (`delete --force`, or a clean-up script run on
/// every host) while a shared handle on the host writes the session the other host deletes.
/// Each host's group commit holds, from its fencing check, the lease row of the session the
/// other deletes `FOR SHARE`, and a delete first deletes its session's lease row, waiting for
/// that lock. A review found the deletes run inside the group commits: the two waited for
/// each other until PostgreSQL aborted one (`40P01`): that admin's delete failed, and so did
/// the bots' writes in the same group commit (4 of 12 deletes). Deletes now run in a
/// transaction of their own, after the group commit; and a record change (`set_home_dc`)
/// takes the lease row before the session's row, as a delete does (it took the session row
/// first, and deadlocked with a delete still: 2 of 24 before that order). The deletes must
/// meet in open group commits: a few rounds of several pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_on_two_hosts_of_sessions_the_other_writes_all_succeed() {
    let Some(cluster) = Cluster::start_or_skip("deletes crossing on two hosts") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    const ROUNDS: usize = 3;
    const PAIRS: usize = 4;
    let mut failed = Vec::new();
    let mut writes_failed = Vec::new();
    for round in 0..ROUNDS {
        let mut writers = Vec::new();
        for i in 0..PAIRS {
            // Host A writes `b-…` (which B deletes), host B writes `a-…` (which A deletes).
            let on_a = open_session(&hosts.ca, &format!("b-{round}-{i}"), false).await;
            let on_b = open_session(&hosts.cb, &format!("a-{round}-{i}"), false).await;
            set_home_dc(&hosts.ca, on_a, 2).await;
            set_home_dc(&hosts.cb, on_b, 2).await;
            writers.push(tokio::spawn(write_flat_out(hosts.ca.clone(), on_a)));
            writers.push(tokio::spawn(write_flat_out(hosts.cb.clone(), on_b)));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut deletes = Vec::new();
        for i in 0..PAIRS {
            for (c, name) in [
                (hosts.ca.clone(), format!("a-{round}-{i}")),
                (hosts.cb.clone(), format!("b-{round}-{i}")),
            ] {
                deletes.push(tokio::spawn(async move {
                    let r = c
                        .call(Request::DeleteSession {
                            name: name.clone(),
                            force: true,
                        })
                        .await;
                    (name, format!("{r:?}"), r.is_ok())
                }));
            }
        }
        for d in deletes {
            let (name, r, ok) = tokio::time::timeout(Duration::from_secs(30), d)
                .await
                .expect("a delete answers")
                .expect("delete task");
            if !ok {
                failed.push(format!("{name}: {r}"));
            }
        }
        // Writers of a deleted session end at their first refusal; the others are stopped.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for w in writers {
            if w.is_finished() {
                let (_, ended) = w.await.expect("writer task");
                if !ended.contains("NoSuchSession") {
                    writes_failed.push(ended);
                }
            } else {
                w.abort();
            }
        }
    }
    eprintln!(
        "deletes failed: {failed:?}; writes failed otherwise than deleted: {writes_failed:?}"
    );
    assert!(
        failed.is_empty() && writes_failed.is_empty(),
        "deletes failed: {failed:?}; writes failed: {writes_failed:?}"
    );
}
