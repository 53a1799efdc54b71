//! A session deleted on one host while another host's client keeps writing it: nothing of
//! the session may stay in the database (its rows are sealed, but an auth key among them is
//! still the account's key for whoever later holds the passphrase).

use std::time::Duration;

use session_vault_proto::message::Request;
use session_vault_proto::model::{Peer, PeerKind};

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

    let cb = hosts.cb.clone();
    let writer = tokio::spawn(async move {
        for i in 0i64.. {
            let mut p = Peer::new(PeerKind::User, 5_000_000 + i);
            p.access_hash = Some(i + 1);
            let r = if i % 10 == 0 {
                cb.call(Request::SetHomeDc {
                    handle: hb,
                    dc_id: 1 + (i / 10 % 5) as i32,
                })
                .await
            } else {
                cb.call(Request::CachePeers {
                    handle: hb,
                    peers: vec![p],
                })
                .await
            };
            if r.is_err() {
                // Every write before this one was acknowledged.
                return (i, format!("{r:?}"));
            }
        }
        unreachable!()
    });
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
    let left: Vec<String> = ["peers", "dc_options", "state", "channels", "sent_files"]
        .iter()
        .map(|t| {
            let n = cluster.psql(
                &db,
                &format!("SELECT count(*) FROM {t} WHERE session = {sid}"),
            );
            format!("{t} {n}")
        })
        .collect();
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
