//! A locked vault: by default a `VaultSession` fails at once with `Locked`; with
//! `wait_for_unlock` it waits for `vaultctl unlock` (or for its limit), then goes on.

use std::time::{Duration, Instant};

use grammers_session::Session;
use grammers_session::types::PeerId;

use super::{assert_locked, builder, lock, runtime, unlocked, user, user_id};
use crate::util::{PASS, assert_success};

#[test]
fn default_policy_fails_at_once_with_locked() {
    let rt = runtime();
    let (env, _d) = unlocked();
    let s = rt.block_on(async {
        // No warm start: it would leave the (empty) session's cache complete, and answer peer
        // 12 "not found" in-process.
        let s = builder(&env.socket(), "bot")
            .warm_start(false)
            .connect()
            .await
            .unwrap();
        s.set_home_dc_id(4).await.unwrap();
        s.cache_peer(user(10, 11)).await.unwrap();
        s
    });
    lock(&env);
    rt.block_on(async {
        let t = Instant::now();
        // A read the cache cannot answer, and writes.
        assert_locked(s.peer(user_id(12)).await);
        assert_locked(s.cache_peer(user(13, 14)).await);
        assert_locked(s.set_home_dc_id(5).await);
        assert_locked(builder(&env.socket(), "bot2").connect().await);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        // What grammers asks synchronously still answers (from the session's copy).
        assert_eq!(s.home_dc_id().unwrap(), 4);
    });
    assert_success(&env.unlock(PASS), "unlock");
    rt.block_on(async {
        assert_eq!(s.peer(user_id(10)).await.unwrap(), Some(user(10, 11)));
        s.cache_peer(user(13, 14)).await.unwrap();
        assert_eq!(s.peer(user_id(13)).await.unwrap(), Some(user(13, 14)));
    });
}

#[test]
fn wait_for_unlock_completes_after_vaultctl_unlock() {
    let rt = runtime();
    let (env, _d) = unlocked();
    let socket = env.socket();
    let waiting = rt.block_on(async {
        builder(&socket, "bot")
            .wait_for_unlock(Duration::from_secs(60))
            .connect()
            .await
            .unwrap()
    });
    let waiting = std::sync::Arc::new(waiting);
    lock(&env);

    // An open session's request, and a connect, both wait.
    let s = std::sync::Arc::clone(&waiting);
    let request = rt.spawn(async move {
        s.cache_peer(user(20, 21)).await?;
        s.peer(user_id(20)).await
    });
    let sock = socket.clone();
    let connect = rt.spawn(async move {
        let s = builder(&sock, "other")
            .wait_for_unlock(Duration::from_secs(60))
            .connect()
            .await?;
        s.peer(PeerId::self_user()).await
    });
    // A short limit gives up with Locked once it is over.
    rt.block_on(async {
        let t = Instant::now();
        let short = builder(&socket, "third")
            .wait_for_unlock(Duration::from_millis(300))
            .connect()
            .await;
        assert_locked(short);
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    });
    assert!(
        !request.is_finished(),
        "the request did not wait for unlock"
    );
    assert!(
        !connect.is_finished(),
        "the connect did not wait for unlock"
    );

    let unlocked_at = Instant::now();
    assert_success(&env.unlock(PASS), "vaultctl unlock");
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("request finishes after unlock")
            .unwrap();
        assert_eq!(r.unwrap(), Some(user(20, 21)));
        let c = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .expect("connect finishes after unlock")
            .unwrap();
        assert_eq!(c.unwrap(), None);
    });
    eprintln!(
        "waiting requests completed {:?} after unlock",
        unlocked_at.elapsed()
    );
}
