//! Many tasks share one `VaultSession` (one connection, requests in flight together); the
//! cache of the exclusive one stays coherent with the daemon. Whole sessions move in and out
//! (`export`, `import`, `import_from`).

use std::sync::Arc;
use std::time::Instant;

use grammers_session::Session;
use grammers_session::types::{PeerAuth, PeerInfo, UpdateState};

use super::{builder, open, runtime, unlocked, user, user_id};

#[test]
fn many_tasks_on_one_session() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        let s = Arc::new(open(&env, "bot").await);
        let t = Instant::now();
        let tasks: Vec<_> = (0..32i64)
            .map(|task| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    for k in 0..50 {
                        let id = task * 1000 + k + 1;
                        assert_eq!(s.peer(user_id(id)).await.unwrap(), None);
                        s.cache_peer(user(id, id * 3)).await.unwrap();
                        // A partial update merges: the hash stays.
                        s.cache_peer(PeerInfo::User {
                            id,
                            auth: None,
                            bot: Some(true),
                            is_self: None,
                        })
                        .await
                        .unwrap();
                        let want = PeerInfo::User {
                            id,
                            auth: Some(PeerAuth::from_hash(id * 3)),
                            bot: Some(true),
                            is_self: None,
                        };
                        assert_eq!(s.peer(user_id(id)).await.unwrap(), Some(want));
                        s.set_update_state(UpdateState::Channel {
                            id: task + 1,
                            pts: k as i32,
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        eprintln!(
            "32 tasks × 50 rounds (5 requests each) in {:?}",
            t.elapsed()
        );
        let state = s.updates_state().await.unwrap();
        assert_eq!(state.channels.len(), 32);
        assert!(state.channels.iter().all(|c| c.pts == 49));

        // The daemon holds what the cache says.
        let direct = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        assert_eq!(direct.updates_state().await.unwrap(), state);
        let data = direct.export().await.unwrap();
        assert_eq!(data.peer_infos.len(), 32 * 50);
        for (id, info) in &data.peer_infos {
            assert_eq!(s.peer(*id).await.unwrap().as_ref(), Some(info));
        }
    });
}

/// Concurrent `cache_peer` calls are combined into shared requests; callers cancelled while
/// waiting, or while sending for the others, must not fail or lose the others' peers, and the
/// cache must agree with the daemon about the cancelled ones.
#[test]
fn combined_cache_peer_calls_survive_cancelled_callers() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        let s = Arc::new(open(&env, "bot").await);
        let (mut kept, mut cancelled) = (Vec::new(), Vec::new());
        for round in 0..30i64 {
            let tasks: Vec<_> = (0..16i64)
                .map(|t| {
                    let s = Arc::clone(&s);
                    let id = round * 100 + t + 1;
                    (
                        id,
                        tokio::spawn(async move { s.cache_peer(user(id, id * 7)).await }),
                    )
                })
                .collect();
            // Let some start (one of them sends for the others), then cancel every third.
            tokio::task::yield_now().await;
            for (i, (_, t)) in tasks.iter().enumerate() {
                if i % 3 == (round as usize) % 3 {
                    t.abort();
                }
            }
            for (id, t) in tasks {
                match t.await {
                    Ok(r) => {
                        r.unwrap();
                        kept.push(id);
                    }
                    Err(e) if e.is_cancelled() => cancelled.push(id),
                    Err(e) => panic!("task {id}: {e}"),
                }
            }
        }
        assert!(!kept.is_empty() && !cancelled.is_empty());
        let direct = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        let stored: std::collections::HashMap<_, _> = direct
            .export()
            .await
            .unwrap()
            .peer_infos
            .into_iter()
            .collect();
        for id in &kept {
            let want = Some(user(*id, id * 7));
            assert_eq!(stored.get(&user_id(*id)).cloned(), want, "peer {id} (kept)");
            assert_eq!(
                s.peer(user_id(*id)).await.unwrap(),
                want,
                "peer {id} (kept)"
            );
        }
        for id in &cancelled {
            // Applied or not, the cache answers what the daemon holds.
            let daemon = stored.get(&user_id(*id)).cloned();
            assert_eq!(
                s.peer(user_id(*id)).await.unwrap(),
                daemon,
                "peer {id} (cancelled)"
            );
        }
        eprintln!(
            "{} calls completed, {} cancelled ({} of those applied anyway)",
            kept.len(),
            cancelled.len(),
            cancelled
                .iter()
                .filter(|id| stored.contains_key(&user_id(**id)))
                .count()
        );
    });
}

/// The task sending combined `cache_peer` calls is cancelled mid-request: the callers it was
/// sending for send their own again and succeed.
#[test]
fn callers_whose_combined_request_was_cancelled_send_again() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        let s = Arc::new(open(&env, "bot").await);
        let big = |base: i64| (0..2_000).map(|i| user(base + i, 5)).collect::<Vec<_>>();
        for round in 0..3i64 {
            let base = 1_000_000 * (round + 1);
            // A holds the write lock with a slow request; B (also slow) queues behind it,
            // then the small callers queue behind B. When A is done, B sends for all of them.
            let a = {
                let s = Arc::clone(&s);
                let peers = big(base);
                tokio::spawn(async move { s.cache_peers(peers).await })
            };
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let b = {
                let s = Arc::clone(&s);
                let peers = big(base + 10_000);
                tokio::spawn(async move { s.cache_peers(peers).await })
            };
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let small: Vec<_> = (0..8i64)
                .map(|t| {
                    let s = Arc::clone(&s);
                    let id = base + 50_000 + t;
                    (
                        id,
                        tokio::spawn(async move { s.cache_peer(user(id, id * 7)).await }),
                    )
                })
                .collect();
            a.await.unwrap().unwrap();
            // B is now sending its peers and the small ones: cancel it mid-request.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            b.abort();
            let _ = b.await;
            for (id, t) in small {
                t.await.unwrap().unwrap();
                let want = Some(user(id, id * 7));
                assert_eq!(s.peer(user_id(id)).await.unwrap(), want, "peer {id}");
                let direct = builder(&env.socket(), "bot")
                    .exclusive(false)
                    .connect()
                    .await
                    .unwrap();
                assert_eq!(direct.peer(user_id(id)).await.unwrap(), want, "peer {id}");
            }
        }
    });
}

#[test]
fn export_and_import_move_a_whole_session() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        let a = open(&env, "a").await;
        a.set_home_dc_id(4).await.unwrap();
        let mut dc = a.dc_option(4).unwrap().unwrap();
        dc.auth_key = Some([7; 256]);
        a.set_dc_option(&dc).await.unwrap();
        let me = PeerInfo::User {
            id: 99,
            auth: Some(PeerAuth::from_hash(-9)),
            bot: Some(true),
            is_self: Some(true),
        };
        // More peers than one request carries, to take the batched path.
        let mut peers: Vec<PeerInfo> = (1..=2500).map(|i| user(1000 + i, i)).collect();
        peers.push(me.clone());
        a.cache_peers(peers).await.unwrap();
        a.set_update_state(UpdateState::Primary {
            pts: 1,
            date: 2,
            seq: 3,
        })
        .await
        .unwrap();
        let data = a.export().await.unwrap();
        assert_eq!(data.home_dc, 4);
        assert_eq!(data.peer_infos.len(), 2501);
        assert_eq!(data.dc_options[&4].auth_key, Some([7; 256]));

        let b = open(&env, "b").await;
        assert_eq!(
            b.peer(grammers_session::types::PeerId::self_user())
                .await
                .unwrap(),
            None
        );
        b.import(&data).await.unwrap();
        assert_eq!(b.home_dc_id().unwrap(), 4);
        assert_eq!(b.dc_option(4).unwrap(), Some(dc));
        assert_eq!(
            b.peer(grammers_session::types::PeerId::self_user())
                .await
                .unwrap(),
            Some(me)
        );
        assert_eq!(b.updates_state().await.unwrap(), data.updates_state);
        let back = b.export().await.unwrap();
        assert_eq!(back.peer_infos, data.peer_infos);
        assert_eq!(back.dc_options, data.dc_options);

        // And into one of grammers' own storages.
        let mem = grammers_session::storages::MemorySession::default();
        back.import_to(&mem).await.unwrap();
        assert_eq!(mem.home_dc_id().unwrap(), 4);
    });
}

/// `import_from` reads another storage through the `Session` trait only. The source here is
/// another `VaultSession`, since grammers' `MemorySession` never answers
/// `PeerId::self_user()` (its `SqliteSession`, which does, is behind a feature this workspace
/// leaves off).
#[test]
fn import_from_another_grammers_storage_keeps_the_login() {
    use grammers_session::types::{ChannelKind, PeerId};
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        let old = open(&env, "old").await;
        old.set_home_dc_id(5).await.unwrap();
        let mut dc = old.dc_option(5).unwrap().unwrap();
        dc.auth_key = Some([9; 256]);
        old.set_dc_option(&dc).await.unwrap();
        let me = PeerInfo::User {
            id: 42,
            auth: None,
            bot: Some(true),
            is_self: Some(true),
        };
        let channel = PeerInfo::Channel {
            id: 77,
            auth: Some(PeerAuth::from_hash(-77)),
            kind: Some(ChannelKind::Megagroup),
        };
        old.cache_peers(vec![me.clone(), channel.clone(), user(1, 2)])
            .await
            .unwrap();
        old.set_update_state(UpdateState::Channel { id: 77, pts: 700 })
            .await
            .unwrap();
        old.set_update_state(UpdateState::Primary {
            pts: 1,
            date: 2,
            seq: 3,
        })
        .await
        .unwrap();

        let vault = open(&env, "migrated").await;
        vault.import_from(&old).await.unwrap();
        assert_eq!(vault.home_dc_id().unwrap(), 5);
        assert_eq!(vault.dc_option(5).unwrap(), Some(dc));
        assert_eq!(vault.peer(PeerId::self_user()).await.unwrap(), Some(me));
        assert_eq!(
            vault.peer(PeerId::channel(77).unwrap()).await.unwrap(),
            Some(channel)
        );
        assert_eq!(
            vault.updates_state().await.unwrap(),
            old.updates_state().await.unwrap()
        );
        // The trait cannot list the other peers: they stay behind.
        assert_eq!(vault.peer(user_id(1)).await.unwrap(), None);
    });
}
