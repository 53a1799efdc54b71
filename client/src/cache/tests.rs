//! Unit tests of the cache.

use super::*;
use session_vault_proto::model::ChannelKind;

fn user(id: i64) -> Peer {
    Peer::new(PeerKind::User, id)
}

#[test]
fn bounded_with_promotion() {
    let mut c = Cache::new(4);
    for id in 0..10 {
        c.fill_peer(user(id).key(), None);
        assert!(c.len() <= 4);
    }
    assert_eq!(c.peer(user(9).key()), Lookup::Hit(None));
    assert_eq!(c.peer(user(0).key()), Lookup::Miss);
    // 8 is old; a hit promotes it, so it survives the next rotation.
    assert_eq!(c.peer(user(8).key()), Lookup::Hit(None));
    c.fill_peer(user(20).key(), None);
    c.fill_peer(user(21).key(), None);
    assert_eq!(c.peer(user(8).key()), Lookup::Hit(None));
}

#[test]
fn write_during_read_voids_the_fill() {
    let mut c = Cache::new(100);
    let key = user(1).key();
    let t = c.begin(Slot::Peer(key));
    c.wrote_peers(&[Peer {
        access_hash: Some(5),
        ..user(1)
    }]);
    c.finish(t, |c| c.fill_peer(key, None));
    assert_eq!(c.peer(key), Lookup::Miss);
    let t = c.begin(Slot::Peer(key));
    c.finish(t, |c| c.fill_peer(key, None));
    assert_eq!(c.peer(key), Lookup::Hit(None));
}

#[test]
fn an_unacknowledged_write_is_forgotten() {
    let mut c = Cache::new(100);
    let key = user(1).key();
    c.fill_peer(key, None);
    c.fill_self(None);
    c.fill_state(UpdatesState::default());
    let t = c.begin(Slot::Peer(key));
    c.forget_peers(&[user(1)]);
    c.forget_state();
    c.finish(t, |c| c.fill_peer(key, None));
    assert_eq!(c.peer(key), Lookup::Miss);
    assert_eq!(c.self_peer(), Lookup::Miss);
    assert_eq!(c.state(), Lookup::Miss);
}

#[test]
fn a_written_peer_is_kept_only_when_grammers_reads_nothing_more_from_the_daemon() {
    let mut c = Cache::new(100);
    let full = Peer {
        access_hash: Some(7),
        bot: Some(false),
        is_self: Some(false),
        ..user(1)
    };
    let no_hash = Peer {
        access_hash: None,
        ..full.clone()
    };
    let no_is_self = Peer {
        is_self: None,
        ..user(3)
    };
    let chat = Peer::new(PeerKind::Chat, 4);
    let channel = Peer {
        access_hash: Some(9),
        channel_kind: Some(ChannelKind::Megagroup),
        ..Peer::new(PeerKind::Channel, 5)
    };
    let channel_no_kind = Peer {
        channel_kind: None,
        ..Peer::new(PeerKind::Channel, 6)
    };
    c.wrote_peers(&[
        full.clone(),
        Peer { id: 2, ..no_hash },
        no_is_self.clone(),
        chat.clone(),
        channel.clone(),
        channel_no_kind.clone(),
    ]);
    assert_eq!(c.peer(full.key()), Lookup::Hit(Some(full)));
    assert_eq!(c.peer(user(2).key()), Lookup::Miss);
    assert_eq!(c.peer(no_is_self.key()), Lookup::Miss);
    assert_eq!(c.peer(chat.key()), Lookup::Hit(Some(chat)));
    assert_eq!(c.peer(channel.key()), Lookup::Hit(Some(channel)));
    assert_eq!(c.peer(channel_no_kind.key()), Lookup::Miss);
}

#[test]
fn only_the_peers_whose_merge_changes_something_are_sent() {
    let mut c = Cache::new(100);
    let a = Peer {
        access_hash: Some(1),
        bot: Some(false),
        is_self: Some(false),
        ..user(1)
    };
    let me = Peer {
        is_self: Some(true),
        ..a.clone()
    };
    let me = Peer { id: 2, ..me };
    c.fill_peer(a.key(), Some(a.clone()));
    c.fill_self(Some(me.clone()));
    c.fill_peer(user(3).key(), None);
    let a_hash = |h| Peer {
        access_hash: Some(h),
        ..a.clone()
    };
    let keys = |v: Vec<Peer>| v.iter().map(|p| p.access_hash).collect::<Vec<_>>();

    // Same values, or fewer of them: nothing changes.
    assert_eq!(c.drop_unchanged(vec![a.clone()]), vec![]);
    assert_eq!(c.drop_unchanged(vec![user(1)]), vec![]);
    // A new value, an unknown peer, a known-absent one: sent.
    assert_eq!(c.drop_unchanged(vec![a_hash(2)]), vec![a_hash(2)]);
    assert_eq!(c.drop_unchanged(vec![user(4)]), vec![user(4)]);
    assert_eq!(c.drop_unchanged(vec![user(3)]), vec![user(3)]);
    // The self user: caching it again names it the self user again.
    assert_eq!(c.drop_unchanged(vec![me.clone()]), vec![me]);
    // A repeat in one batch merges into what the earlier one made: it is sent.
    assert_eq!(
        keys(c.drop_unchanged(vec![a_hash(2), a_hash(1)])),
        [Some(2), Some(1)]
    );
    assert_eq!(
        keys(c.drop_unchanged(vec![a_hash(1), a_hash(2)])),
        [Some(2)]
    );
}

fn hashed(id: i64, hash: i64) -> Peer {
    Peer {
        access_hash: Some(hash),
        bot: Some(false),
        is_self: Some(false),
        ..user(id)
    }
}

#[test]
fn a_whole_load_makes_the_cache_authoritative_and_loses_no_write() {
    let mut c = Cache::new(100);
    let epoch = c.begin_load();
    // During the load: a complete write (kept), an incomplete one (not kept), a read.
    c.wrote_peers(&[hashed(1, 9)]);
    c.fill_peer(user(3).key(), Some(hashed(3, 8)));
    let loaded = vec![hashed(4, 1), hashed(3, 1), hashed(1, 1)];
    assert_eq!(c.finish_load(epoch, loaded, true), Some(1));
    assert!(c.authoritative());
    assert_eq!(c.peer(user(1).key()), Lookup::Hit(Some(hashed(1, 9))));
    assert_eq!(c.peer(user(3).key()), Lookup::Hit(Some(hashed(3, 8))));
    assert_eq!(c.peer(user(4).key()), Lookup::Hit(Some(hashed(4, 1))));
    assert_eq!(c.peer(user(5).key()), Lookup::Hit(None));

    // A write the cache did not keep: the daemon has a peer the cache lacks.
    let mut c = Cache::new(100);
    let epoch = c.begin_load();
    c.wrote_peers(&[user(2)]);
    c.finish_load(epoch, vec![hashed(2, 1)], true);
    assert!(!c.authoritative());
    assert_eq!(c.peer(user(2).key()), Lookup::Miss);
    assert_eq!(c.peer(user(5).key()), Lookup::Miss);

    // The same when the pages were read before that write was applied (they lack it):
    // the cache must not answer "not found" for a peer the daemon now holds.
    let mut c = Cache::new(100);
    let epoch = c.begin_load();
    c.wrote_peers(&[user(2)]);
    c.finish_load(epoch, vec![hashed(1, 1)], true);
    assert!(!c.authoritative());
    assert_eq!(c.peer(user(2).key()), Lookup::Miss);
    assert_eq!(c.peer(user(1).key()), Lookup::Hit(Some(hashed(1, 1))));
}

#[test]
fn a_reconnect_voids_a_load_and_a_drop_ends_authority() {
    let mut c = Cache::new(100);
    let epoch = c.begin_load();
    c.clear();
    assert_eq!(c.finish_load(epoch, vec![hashed(1, 1)], true), None);
    assert_eq!(c.peer(user(1).key()), Lookup::Miss);

    let epoch = c.begin_load();
    c.finish_load(epoch, vec![hashed(1, 1)], true);
    assert!(c.authoritative());
    c.forget_peers(&[hashed(7, 1)]);
    assert!(!c.authoritative());
    assert_eq!(c.peer(user(7).key()), Lookup::Miss);

    // An eviction too.
    let mut c = Cache::new(4);
    let epoch = c.begin_load();
    c.finish_load(epoch, (1..5).map(|id| hashed(id, 1)).collect(), true);
    assert!(c.authoritative());
    // Loaded oldest first: 4 and 3 (the oldest) are the old generation. A full cache
    // keeps an old hit where it is.
    assert_eq!(c.peer(user(4).key()), Lookup::Hit(Some(hashed(4, 1))));
    assert_eq!(c.len(), 4);
    c.fill_peer(user(9).key(), None);
    assert!(!c.authoritative());
    assert_eq!(c.peer(user(4).key()), Lookup::Miss);
    assert_eq!(c.peer(user(1).key()), Lookup::Hit(Some(hashed(1, 1))));
}

#[test]
fn merges_and_tracks_self() {
    let mut c = Cache::new(100);
    c.fill_self(None);
    c.fill_peer(user(1).key(), None);
    c.wrote_peers(&[Peer {
        bot: Some(true),
        ..user(1)
    }]);
    c.wrote_peers(&[Peer {
        is_self: Some(true),
        ..user(1)
    }]);
    let me = Peer {
        bot: Some(true),
        is_self: Some(true),
        ..user(1)
    };
    assert_eq!(c.self_peer(), Lookup::Hit(Some(me)));
    // A user the cache does not know, with is_self unknown: the daemon's copy decides.
    c.wrote_peers(&[user(2)]);
    assert_eq!(c.self_peer(), Lookup::Miss);
}
