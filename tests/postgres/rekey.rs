//! `rekey` on one host while others run: refused while another holds a lease, and then the
//! others, whose key no longer opens the vault, lock themselves and seal nothing under the
//! old key.

use std::time::{Duration, Instant};

use session_vault_proto::message::{ErrorCode, Request, Response, VaultState};
use session_vault_proto::model::{Peer, PeerKind};

use super::{TwoHosts, audit_verdict, refs, store_args_expiring};
use crate::util::pg::Cluster;
use crate::util::*;

/// `rekey` on one daemon is refused while another holds a lease (naming its host); once
/// done, the other daemon, whose key no longer opens the vault, locks itself and says so,
/// and unlocks again with the passphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_elsewhere_is_refused_under_a_lease_and_then_locks_the_other_daemon() {
    let Some(cluster) = Cluster::start_or_skip("rekey across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    // A writes before B starts.
    let (a, b) = (Env::new(), Env::new());
    let [args_a, args_b] = [&a, &b].map(|env| store_args_expiring(env, &cluster, &db));
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", false).await;
    set_home_dc(&ca, h, 5).await;
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    let hb = open_session(&cb, "bot", true).await;

    let rekey = || Request::Rekey {
        passphrase: passphrase(PASS),
        kdf: Some(CHEAP_KDF_SPEC),
    };
    let e = ca.call(rekey()).await.expect_err("refused under B's lease");
    let w = e.wire().expect("a wire error");
    assert!(
        matches!(w.code, ErrorCode::SessionBusy { .. }),
        "{:?}: {}",
        w.code,
        w.message
    );
    assert!(w.message.contains("on host "), "{}", w.message);

    // B lets go; its lease is given back within a renewal period.
    let r = cb.call(Request::CloseSession { handle: hb }).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let t = Instant::now();
    loop {
        match ca.call(rekey()).await {
            Ok(Response::Ok) => break,
            Err(e)
                if matches!(
                    e.wire().map(|w| &w.code),
                    Some(ErrorCode::SessionBusy { .. })
                ) =>
            {
                assert!(t.elapsed() < Duration::from_secs(5), "lease never released");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("rekey on A: {other:?}"),
        }
    }

    // B's key opens nothing now: it locks itself within a poll.
    let t = Instant::now();
    loop {
        match cb.call(Request::Status).await {
            Ok(Response::Status(s)) if s.state == VaultState::Locked => break,
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "B did not lock itself\n{}",
                    db_.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("status on B: {other:?}"),
        }
    }
    eprintln!(
        "B locked itself {} ms after A's rekey",
        t.elapsed().as_millis()
    );
    poll_until(Duration::from_secs(5), "B logs why it locked", || {
        db_.log().contains("locked itself")
    });
    let r = unlock_with(&cb, PASS).await;
    assert!(matches!(r, Ok(Response::Ok)), "B unlocks again: {r:?}");
    let hb = open_session(&cb, "bot", false).await;
    assert_home_dc(&cb, hb, 5, "on B, read from the re-sealed rows").await;
    // The audit log both appended to, re-sealed by the rekey, verifies on both.
    let (ok_a, n_a) = audit_verdict(&a);
    let (ok_b, _) = audit_verdict(&b);
    assert!(
        ok_a && ok_b,
        "audit verifies on A ({ok_a}) and B ({ok_b}), {n_a} entries"
    );
}

/// A host still holding the old key after another host's `rekey` seals nothing under it: its
/// writes are refused (the data key's id checked with each transaction) until it locks itself,
/// so every record of the vault still authenticates under the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rekey_elsewhere_a_host_with_the_old_key_writes_nothing() {
    let Some(cluster) = Cluster::start_or_skip("rekey and writes of another vaultd") else {
        return;
    };
    let db = cluster.create_database();
    let hosts = TwoHosts::start(&cluster, &db).await;
    let (ca, cb) = (&hosts.ca, &hosts.cb);
    // A bot on B with a shared handle (no lease, so the rekey is not refused).
    let hb = open_session(cb, "bot", false).await;
    let peer = |id: i64| {
        let mut p = Peer::new(PeerKind::User, id);
        p.access_hash = Some(id * 7);
        p
    };
    let cache = |id: i64| {
        cb.call(Request::CachePeers {
            handle: hb,
            peers: vec![peer(id)].into(),
        })
    };
    assert!(
        matches!(cache(1).await, Ok(Response::Ok)),
        "B writes before"
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // committed

    let r = ca
        .call(Request::Rekey {
            passphrase: passphrase(PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "rekey on A: {r:?}");
    // At once, before B's next check (every 0.5 s) has locked it: B still holds the old key.
    let after = cache(2).await;
    let refused = match &after {
        Ok(Response::Ok) => false,
        Err(e) => {
            let m = e.wire().map(|w| w.message.clone()).unwrap_or_default();
            assert!(
                m.contains("rekeyed by another vaultd") || m.contains("locked"),
                "{e:?}"
            );
            true
        }
        other => panic!("B's write after the rekey: {other:?}"),
    };
    assert!(
        refused,
        "B's write under the old key was accepted\n{}",
        hosts.daemon_b.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every record, B's earlier write included (re-sealed by the rekey), authenticates.
    match ca.call(Request::Verify).await {
        Ok(Response::Verified(report)) => {
            assert!(
                report.failures.is_empty(),
                "records sealed under the old key: {:?}",
                report.failures
            );
            assert!(report.peers >= 1, "B's first peer is there: {report:?}");
        }
        other => panic!("verify on A: {other:?}"),
    }
}
