//! A running client rides through a daemon restart: its next operations succeed after it
//! reconnected and re-opened its session (lease included), and operations issued while the
//! daemon is down complete once it is back and unlocked.

use std::sync::Arc;
use std::time::Duration;

use grammers_session::Session;
use grammers_session::types::{PeerId, UpdateState};
use session_vault_client::VaultError;

use super::{builder, open, restart, runtime, unlocked, user, user_id};
use crate::util::{PASS, assert_success};

#[test]
fn next_operations_succeed_after_a_restart() {
    let rt = runtime();
    let (env, d) = unlocked();
    let s = rt.block_on(async {
        let s = open(&env, "bot").await;
        s.set_home_dc_id(3).await.unwrap();
        s.cache_peer(user(1, 100)).await.unwrap();
        s.set_update_state(UpdateState::Channel { id: 5, pts: 50 })
            .await
            .unwrap();
        s
    });
    let d = restart(&env, d);
    rt.block_on(async {
        assert_eq!(s.peer(user_id(1)).await.unwrap(), Some(user(1, 100)));
        s.cache_peer(user(2, 200)).await.unwrap();
        assert_eq!(s.peer(user_id(2)).await.unwrap(), Some(user(2, 200)));
        assert_eq!(s.updates_state().await.unwrap().channels.len(), 1);
        assert_eq!(s.home_dc_id().unwrap(), 3);
        // The lease was taken again.
        match builder(&env.socket(), "bot").connect().await {
            Err(VaultError::SessionBusy { holder_pid, .. }) => {
                assert_eq!(holder_pid, Some(std::process::id()))
            }
            other => panic!("expected SessionBusy, got {other:?}"),
        }
    });
    drop(d);
}

#[test]
fn operations_issued_while_the_daemon_is_down_complete_after_it_returns() {
    let rt = runtime();
    let (env, d) = unlocked();
    let s = Arc::new(rt.block_on(async {
        builder(&env.socket(), "bot")
            .wait_for_unlock(Duration::from_secs(60))
            .reconnect_timeout(Duration::from_secs(60))
            .connect()
            .await
            .unwrap()
    }));
    rt.block_on(s.cache_peer(user(1, 100))).unwrap();
    assert!(d.terminate().success());

    // Eight tasks write and read while the daemon is gone.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            rt.spawn(async move {
                s.cache_peer(user(10 + i, 1000 + i)).await?;
                s.peer(user_id(10 + i)).await
            })
        })
        .collect();
    // The daemon comes back locked; the tasks wait for the unlock.
    let d = env.start();
    assert_success(&env.unlock(PASS), "unlock");
    rt.block_on(async {
        for (i, t) in tasks.into_iter().enumerate() {
            let i = i as i64;
            let r = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("task finishes")
                .unwrap();
            assert_eq!(r.unwrap(), Some(user(10 + i, 1000 + i)));
        }
        assert_eq!(s.peer(user_id(1)).await.unwrap(), Some(user(1, 100)));
        assert_eq!(s.peer(PeerId::self_user()).await.unwrap(), None);
    });
    drop(d);
}

#[test]
fn gives_up_after_the_reconnect_timeout() {
    let rt = runtime();
    let (env, d) = unlocked();
    let s = rt.block_on(async {
        // No warm start: the (empty) session's cache would be complete, and answer peer 1
        // "not found" without the daemon.
        builder(&env.socket(), "bot")
            .reconnect_timeout(Duration::from_millis(500))
            .warm_start(false)
            .connect()
            .await
            .unwrap()
    });
    assert!(d.terminate().success());
    rt.block_on(async {
        let t = std::time::Instant::now();
        let r = s.peer(user_id(1)).await;
        assert!(
            matches!(
                r,
                Err(VaultError::Unreachable { .. } | VaultError::Disconnected)
            ),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    });
}

/// `close()` gives the lease back before it returns, so the session opens again at once,
/// exclusively, from another connection (after a plain drop the daemon frees the lease only
/// once it notices the socket closed, and an open right after may get `SessionBusy`). What
/// was written is there.
#[test]
fn a_closed_session_opens_again_at_once() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        for round in 0..200 {
            let s = builder(&env.socket(), "bot")
                .create_if_missing(true)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("open in round {round}: {e}"));
            s.set_update_state(UpdateState::Channel { id: 5, pts: round })
                .await
                .unwrap();
            s.close().await.unwrap();
        }
        let s = open(&env, "bot").await;
        let state = s.updates_state().await.unwrap();
        assert_eq!(state.channels.len(), 1);
        assert_eq!(state.channels[0].pts, 199);
    });
}
