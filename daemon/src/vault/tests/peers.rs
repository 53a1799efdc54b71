//! What caching peers means, against grammers' `PeerInfo` rules: merging field by field,
//! the self user, username and phone lookups and their hand-over, pages, and the two ways
//! `cache_peers` writes (read first, insert first) giving the same result. Each checked live
//! and again after a close and reopen.

use session_vault_proto::model::{ChannelKind, Peer, PeerKind, SelfUser, SessionAcl};

use super::support::*;
use crate::vault::VaultConfig;

fn full_peer() -> Peer {
    let mut p = Peer::new(PeerKind::User, 1_234_567_890);
    p.access_hash = Some(-5_555);
    p.bot = Some(false);
    p.is_self = Some(false);
    p.username = Some("OldName".into());
    p.phone = Some("+44 20 7946 0000".into());
    p.name = Some("Old Display".into());
    p
}

#[tokio::test]
pub(super) async fn peer_pages_list_every_peer_newest_first() {
    let (_t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    let other = new_session(&vault, "other").await;
    // 1,300 peers, interleaved with another session's: a page of 1000 is opened on two
    // threads, the rest on one.
    for chunk in (0..1300i64).collect::<Vec<_>>().chunks(100) {
        let peers = chunk
            .iter()
            .map(|&id| {
                let mut p = Peer::new(PeerKind::User, id + 1);
                p.access_hash = Some(id);
                p
            })
            .collect();
        vault.cache_peers(sid, peers).await.unwrap();
        let stranger = Peer::new(PeerKind::Chat, chunk[0] + 1);
        vault.cache_peers(other, vec![stranger]).await.unwrap();
    }
    // Re-cached: keeps its place (first insertion order).
    let mut again = Peer::new(PeerKind::User, 1);
    again.bot = Some(true);
    vault.cache_peers(sid, vec![again]).await.unwrap();

    let (first, next) = vault.peers_page(sid, None, 0).await.unwrap();
    assert_eq!(first.len(), 1000);
    assert_eq!(first[0].id, 1300);
    assert_eq!(first[999].id, 301);
    let (rest, end) = vault.peers_page(sid, next, 5000).await.unwrap();
    assert_eq!(end, None);
    let ids: Vec<i64> = rest.iter().map(|p| p.id).collect();
    assert_eq!(ids, (1..=300).rev().collect::<Vec<_>>());
    assert_eq!(rest[299].bot, Some(true));
    assert_eq!(rest[299].access_hash, Some(0));
    // Small pages chain too.
    let (two, next) = vault.peers_page(sid, None, 2).await.unwrap();
    assert_eq!(two.iter().map(|p| p.id).collect::<Vec<_>>(), [1300, 1299]);
    let (two, _) = vault.peers_page(sid, next, 2).await.unwrap();
    assert_eq!(two.iter().map(|p| p.id).collect::<Vec<_>>(), [1298, 1297]);
    let (others, end) = vault.peers_page(other, None, 0).await.unwrap();
    assert_eq!((others.len(), end), (13, None));
    close(vault).await;
}

#[tokio::test]
pub(super) async fn a_later_cache_of_a_peer_merges_field_by_field() {
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    let old = full_peer();
    vault.cache_peers(sid, vec![old.clone()]).await.unwrap();

    // Every field None: nothing changes.
    let bare = Peer::new(PeerKind::User, old.id);
    vault.cache_peers(sid, vec![bare]).await.unwrap();
    assert_eq!(vault.peer(sid, old.key()).await.unwrap(), Some(old.clone()));

    // Some fields known: those replace, the rest stay.
    let mut newer = Peer::new(PeerKind::User, old.id);
    newer.access_hash = Some(7_777);
    newer.username = Some("NewName".into());
    newer.phone = Some("+44 20 7946 1111".into());
    vault.cache_peers(sid, vec![newer]).await.unwrap();
    let mut want = old.clone();
    want.access_hash = Some(7_777);
    want.username = Some("NewName".into());
    want.phone = Some("+44 20 7946 1111".into());
    assert_eq!(
        vault.peer(sid, old.key()).await.unwrap(),
        Some(want.clone())
    );

    // The lookup indexes follow the merged values.
    assert_eq!(vault.peer_by_username(sid, "oldname").await.unwrap(), None);
    assert_eq!(
        vault.peer_by_phone(sid, "442079460000").await.unwrap(),
        None
    );
    assert_eq!(
        vault.peer_by_username(sid, "@NEWNAME").await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(
        vault
            .peer_by_phone(sid, "+44 (20) 7946-1111")
            .await
            .unwrap(),
        Some(want.clone())
    );

    // Within one batch, later entries merge into earlier ones.
    let mut first = Peer::new(PeerKind::User, old.id);
    first.name = Some("Batch One".into());
    let mut second = Peer::new(PeerKind::User, old.id);
    second.bot = Some(true);
    vault.cache_peers(sid, vec![first, second]).await.unwrap();
    want.name = Some("Batch One".into());
    want.bot = Some(true);
    assert_eq!(
        vault.peer(sid, old.key()).await.unwrap(),
        Some(want.clone())
    );

    // Same id, other kinds: other peers, untouched by the merges above.
    let mut channel = Peer::new(PeerKind::Channel, old.id);
    channel.access_hash = Some(1);
    channel.channel_kind = Some(ChannelKind::Gigagroup);
    let chat = Peer::new(PeerKind::Chat, old.id);
    vault
        .cache_peers(sid, vec![channel.clone(), chat.clone()])
        .await
        .unwrap();
    assert_eq!(
        vault.peer(sid, old.key()).await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(vault.peer(sid, channel.key()).await.unwrap(), Some(channel));
    assert_eq!(vault.peer(sid, chat.key()).await.unwrap(), Some(chat));

    let vault = reopened(vault, &t).await;
    assert_eq!(
        vault.peer(sid, old.key()).await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(
        vault.peer_by_username(sid, "newname").await.unwrap(),
        Some(want)
    );
    assert_eq!(vault.export(sid).await.unwrap().peers.len(), 3);
    close(vault).await;
}

#[tokio::test]
pub(super) async fn a_peer_cached_as_self_becomes_the_self_user() {
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    assert_eq!(vault.self_peer(sid).await.unwrap(), None);

    let other = full_peer();
    let mut me = Peer::new(PeerKind::User, 42_424_242);
    me.is_self = Some(true);
    me.bot = Some(true);
    me.access_hash = Some(99);
    vault
        .cache_peers(sid, vec![other, me.clone()])
        .await
        .unwrap();
    assert_eq!(vault.self_peer(sid).await.unwrap(), Some(me.clone()));
    let record = vault.session_record(sid).await.unwrap();
    assert_eq!(
        record.self_user,
        Some(SelfUser {
            id: me.id,
            bot: true
        })
    );

    // A later cache that does not say is_self keeps the self user (merge keeps the flag).
    let mut renamed = Peer::new(PeerKind::User, me.id);
    renamed.name = Some("Me Renamed".into());
    vault.cache_peers(sid, vec![renamed]).await.unwrap();
    let mut want = me.clone();
    want.name = Some("Me Renamed".into());
    assert_eq!(vault.self_peer(sid).await.unwrap(), Some(want.clone()));

    let vault = reopened(vault, &t).await;
    assert_eq!(vault.self_peer(sid).await.unwrap(), Some(want));
    let listed = vault.list_sessions().await.unwrap();
    assert_eq!(listed[0].user_id, Some(me.id));
    let exported = vault.export(sid).await.unwrap();
    assert_eq!(
        exported.self_user,
        Some(SelfUser {
            id: me.id,
            bot: true
        })
    );
    close(vault).await;
}

#[tokio::test]
pub(super) async fn a_username_moved_to_another_peer_resolves_to_the_new_holder() {
    let (_t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    let mut old_holder = Peer::new(PeerKind::Channel, 1_000_001);
    old_holder.access_hash = Some(1);
    old_holder.username = Some("shared_name".into());
    vault.cache_peers(sid, vec![old_holder]).await.unwrap();
    // The username was released and taken by another peer; the old holder is not re-cached.
    let mut new_holder = Peer::new(PeerKind::User, 2_000_002);
    new_holder.access_hash = Some(2);
    new_holder.username = Some("Shared_Name".into());
    vault
        .cache_peers(sid, vec![new_holder.clone()])
        .await
        .unwrap();
    assert_eq!(
        vault.peer_by_username(sid, "shared_name").await.unwrap(),
        Some(new_holder)
    );
    close(vault).await;
}

/// One script of peer caches, run with `cache_peers` forced to one way of writing
/// (`PeerWrites` in the engine); answers what a reader sees after it, live and
/// after a reopen.
async fn peer_script(forced: u8) -> Vec<String> {
    use std::sync::atomic::Ordering;
    crate::vault::engine::FORCED_PEER_WRITES.store(forced, Ordering::SeqCst);
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    let mut rng = Rng(17);
    let first: Vec<Peer> = (0..20)
        .map(|i| random_user(&mut rng, &format!("a{i}")))
        .collect();
    vault.cache_peers(sid, first.clone()).await.unwrap();
    // One call with every kind of peer: unchanged, changed (a field learned, a username
    // changed), new, a new one taking an existing peer's username, a new self user, and a
    // peer given twice in one call (that call is written by reading first either way).
    let mut mixed: Vec<Peer> = first[..4].to_vec();
    for p in &first[4..8] {
        let mut q = Peer::new(p.kind, p.id);
        q.name = Some(format!("{} renamed", p.name.as_deref().unwrap_or("")));
        q.username = Some(format!("moved{}", p.id % 1000));
        mixed.push(q);
    }
    mixed.extend((0..5).map(|i| random_user(&mut rng, &format!("n{i}"))));
    let mut taker = random_user(&mut rng, "taker");
    taker.username = first[10].username.clone();
    mixed.push(taker);
    let mut me = random_user(&mut rng, "me");
    me.is_self = Some(true);
    mixed.push(me);
    let mut hashless = Peer::new(PeerKind::Channel, 777_000_777);
    hashless.name = Some("no hash yet".into());
    mixed.push(hashless.clone());
    vault.cache_peers(sid, mixed.clone()).await.unwrap();
    hashless.access_hash = Some(31_337);
    let mut twice = vec![hashless.clone(), random_user(&mut rng, "dup")];
    twice.push(twice[1].clone());
    vault.cache_peers(sid, twice).await.unwrap();
    // Single peers: a new one, then a change of it.
    let mut single = random_user(&mut rng, "single");
    vault.cache_peers(sid, vec![single.clone()]).await.unwrap();
    single.phone = Some("+1 555 0100".into());
    vault.cache_peers(sid, vec![single]).await.unwrap();
    // A large call (blinded and sealed on two threads when written insert-first), then one
    // that re-caches half of it with a field learned and brings as many new peers.
    let user = |i: i64| {
        let mut p = Peer::new(PeerKind::User, 5_000_000 + i);
        p.access_hash = Some(i * 7 + 1);
        p
    };
    vault
        .cache_peers(sid, (0..300).map(user).collect())
        .await
        .unwrap();
    let again: Vec<Peer> = (150..450)
        .map(|i| {
            let mut p = user(i);
            p.name = Some(format!("learned {i}"));
            p
        })
        .collect();
    vault.cache_peers(sid, again).await.unwrap();

    let mut seen = Vec::new();
    let mut vault = vault;
    for round in ["live", "reopened"] {
        if round == "reopened" {
            vault = reopened(vault, &t).await;
        }
        let data = normalized(vault.export(sid).await.unwrap());
        seen.push(format!("{round} peers {:?}", data.peers));
        seen.push(format!("{round} self {:?}", data.self_user));
        for p in &data.peers {
            for (what, v) in [("username", &p.username), ("phone", &p.phone)] {
                let Some(v) = v else { continue };
                let found = match what {
                    "username" => vault.peer_by_username(sid, v).await.unwrap(),
                    _ => vault.peer_by_phone(sid, v).await.unwrap(),
                };
                seen.push(format!("{round} {what} {v} -> {:?}", found.map(|f| f.id)));
            }
        }
    }
    close(vault).await;
    seen
}

#[tokio::test]
pub(super) async fn caching_peers_by_insert_first_reads_back_as_by_read_first() {
    let read_first = peer_script(1).await;
    let insert_first = peer_script(2).await;
    crate::vault::engine::FORCED_PEER_WRITES.store(0, std::sync::atomic::Ordering::SeqCst);
    assert!(read_first.len() > 60, "the script checks something");
    assert!(
        read_first.iter().any(|l| l.contains("learned 449")),
        "the large calls are in what is compared"
    );
    assert_eq!(read_first.len(), insert_first.len());
    for (a, b) in read_first.iter().zip(&insert_first) {
        assert_eq!(a, b, "read-first vs insert-first");
    }
}

/// Within one `cache_peers` call, a cached peer that changed (so is rewritten) and, after it,
/// a new peer carrying the same username. Written in call order, the new peer (the later
/// write) takes the username; insert-first, which inserts every new peer before rewriting the
/// cached ones, once gave it back to the stale holder (found in review), so a lookup by
/// username answered the wrong peer. Insert-first is now not taken for such a call.
async fn username_hand_over_in_one_batch(forced: u8) -> Option<i64> {
    use std::sync::atomic::Ordering;
    crate::vault::engine::FORCED_PEER_WRITES.store(forced, Ordering::SeqCst);
    let t = TestDir::new();
    let vault = create(&t).await;
    let sid = vault
        .create_session("acct", SessionAcl::default())
        .await
        .unwrap();
    // The username's old holder, cached earlier.
    let mut old_holder = Peer::new(PeerKind::User, 1_000_001);
    old_holder.access_hash = Some(1);
    old_holder.username = Some("shared_name".into());
    vault.cache_peers(sid, vec![old_holder]).await.unwrap();
    // One update brings both: the old holder with a new display name (username not sent: a
    // min peer; merging keeps the cached one) and, after it, the new holder of the username.
    let mut renamed = Peer::new(PeerKind::User, 1_000_001);
    renamed.name = Some("Renamed".into());
    let mut new_holder = Peer::new(PeerKind::User, 2_000_002);
    new_holder.access_hash = Some(2);
    new_holder.username = Some("shared_name".into());
    vault
        .cache_peers(sid, vec![renamed, new_holder])
        .await
        .unwrap();
    let live = vault
        .peer_by_username(sid, "shared_name")
        .await
        .unwrap()
        .map(|p| p.id);
    let vault = reopened(vault, &t).await;
    let stored = vault
        .peer_by_username(sid, "shared_name")
        .await
        .unwrap()
        .map(|p| p.id);
    assert_eq!(live, stored, "live and reopened agree");
    close(vault).await;
    live
}

#[tokio::test]
pub(super) async fn a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path() {
    let read_first = username_hand_over_in_one_batch(1).await;
    let insert_first = username_hand_over_in_one_batch(2).await;
    crate::vault::engine::FORCED_PEER_WRITES.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        read_first,
        Some(2_000_002),
        "read-first: the later write wins"
    );
    assert_eq!(insert_first, read_first, "insert-first vs read-first");
}
