//! The exclusive client's cache answers what the daemon would, also when the daemon knows
//! more of a peer than this client wrote (left by an earlier process), and peers re-cached
//! unchanged are not sent. Whether a call was answered in-process is seen by locking the
//! vault: the daemon would answer `Locked`. Warm start is off here: these tests are about
//! what the cache learns from this client's own reads and writes (`warm` tests the load).

use grammers_session::Session;
use grammers_session::types::{ChannelKind, PeerAuth, PeerId, PeerInfo};

use super::{assert_locked, builder, lock, runtime, unlocked, user_id};
use crate::util::{PASS, assert_success};

fn user(id: i64, hash: Option<i64>, bot: bool, is_self: Option<bool>) -> PeerInfo {
    PeerInfo::User {
        id,
        auth: hash.map(PeerAuth::from_hash),
        bot: Some(bot),
        is_self,
    }
}

fn channel(id: i64, hash: Option<i64>, kind: ChannelKind) -> PeerInfo {
    PeerInfo::Channel {
        id,
        auth: hash.map(PeerAuth::from_hash),
        kind: Some(kind),
    }
}

/// Opens (creating) session `name` exclusively, without warm start.
async fn open(env: &crate::util::Env, name: &str) -> session_vault_client::VaultSession {
    builder(&env.socket(), name)
        .warm_start(false)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open session {name:?}: {e}"))
}

fn channel_id(id: i64) -> PeerId {
    PeerId::channel(id).expect("a valid channel id")
}

#[test]
fn written_peers_are_answered_locally_only_when_the_daemon_cannot_add_to_them() {
    let rt = runtime();
    let (env, _d) = unlocked();
    let s = rt.block_on(async {
        // An earlier process (no lease) left the access hashes of user 10 and channel 20.
        let earlier = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        earlier
            .cache_peer(user(10, Some(5), true, None))
            .await
            .unwrap();
        earlier
            .cache_peer(channel(20, Some(6), ChannelKind::Megagroup))
            .await
            .unwrap();
        drop(earlier);

        let s = open(&env, "bot").await;
        // Without the access hash: the daemon's copy still has one, grammers must see it.
        s.cache_peer(user(10, None, false, Some(false)))
            .await
            .unwrap();
        s.cache_peer(channel(20, None, ChannelKind::Broadcast))
            .await
            .unwrap();
        // Every field grammers reads is known: nothing the daemon holds can change them.
        s.cache_peer(user(11, Some(7), false, Some(false)))
            .await
            .unwrap();
        s.cache_peer(PeerInfo::Chat { id: 12 }).await.unwrap();
        s.cache_peer(channel(21, Some(8), ChannelKind::Gigagroup))
            .await
            .unwrap();
        s
    });
    lock(&env);
    rt.block_on(async {
        assert_eq!(
            s.peer(user_id(11)).await.unwrap(),
            Some(user(11, Some(7), false, Some(false)))
        );
        assert_eq!(
            s.peer(PeerId::chat(12).unwrap()).await.unwrap(),
            Some(PeerInfo::Chat { id: 12 })
        );
        assert_eq!(
            s.peer(channel_id(21)).await.unwrap(),
            Some(channel(21, Some(8), ChannelKind::Gigagroup))
        );
        // These need the daemon's copy.
        assert_locked(s.peer(user_id(10)).await);
        assert_locked(s.peer(channel_id(20)).await);
    });
    assert_success(&env.unlock(PASS), "unlock");
    rt.block_on(async {
        let merged_user = Some(user(10, Some(5), false, Some(false)));
        let merged_channel = Some(channel(20, Some(6), ChannelKind::Broadcast));
        assert_eq!(s.peer(user_id(10)).await.unwrap(), merged_user);
        assert_eq!(s.peer(channel_id(20)).await.unwrap(), merged_channel);
        // A client without a cache (every read from the daemon) sees the same.
        let direct = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        for id in [user_id(10), user_id(11), PeerId::chat(12).unwrap()] {
            assert_eq!(direct.peer(id).await.unwrap(), s.peer(id).await.unwrap());
        }
        for id in [channel_id(20), channel_id(21)] {
            assert_eq!(direct.peer(id).await.unwrap(), s.peer(id).await.unwrap());
        }
    });
}

#[test]
fn re_caching_peers_the_cache_shows_unchanged_needs_no_daemon() {
    let rt = runtime();
    let (env, _d) = unlocked();
    let known = user(11, Some(7), false, Some(false));
    let chan = channel(21, Some(8), ChannelKind::Gigagroup);
    let s = rt.block_on(async {
        let s = open(&env, "bot").await;
        s.cache_peers(vec![known.clone(), chan.clone()])
            .await
            .unwrap();
        s
    });
    lock(&env);
    rt.block_on(async {
        // Nothing would change: no request reaches the (locked) daemon.
        s.cache_peer(known.clone()).await.unwrap();
        s.cache_peer(PeerInfo::User {
            id: 11,
            auth: None,
            bot: None,
            is_self: None,
        })
        .await
        .unwrap();
        s.cache_peers(vec![chan.clone(), known.clone()])
            .await
            .unwrap();
        // A change must reach it; the failure leaves the peer unknown to the cache.
        assert_locked(s.cache_peer(user(11, Some(9), false, Some(false))).await);
        assert_locked(s.peer(user_id(11)).await);
        assert_eq!(s.peer(channel_id(21)).await.unwrap(), Some(chan));
    });
    assert_success(&env.unlock(PASS), "unlock");
    rt.block_on(async {
        assert_eq!(s.peer(user_id(11)).await.unwrap(), Some(known));
    });
}
