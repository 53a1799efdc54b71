//! The write-through cache an exclusive [`VaultSession`](crate::VaultSession) keeps.
//!
//! With the session's lease the client is its only writer, so whatever it read or wrote stays
//! true until it writes again: peers (including "known absent" after the daemon answered
//! `None`), which user is the session's self user, and the update state. Repeat reads are
//! answered in-process; writes still go to the daemon and are mirrored here once it
//! acknowledged them (writes are serialized by the session, so the mirror sees them in the
//! daemon's order).
//!
//! A cached peer agrees with the daemon's copy in every field grammers reads (access hash,
//! bot, is_self, channel kind); username, phone and name, which grammers neither sets nor
//! reads, may be unknown (`None`) here where the daemon knows them (a Telethon import, say).
//!
//! Peers are bounded: two generations of at most `capacity / 2` entries each. A hit in the
//! old generation is promoted while the young one has room; when the young one is full, a new
//! peer makes it the old one and the old one is dropped. That approximates LRU at O(1) per operation, without a linked list.
//!
//! Warm start: a session opened with its lease loads the session's peers into the cache in
//! the background (`crate::warm`). The loaded rows are applied at once when the last page came
//! in ([`Cache::finish_load`]): a peer this client wrote, forgot or read meanwhile keeps what
//! the cache holds (newer than, or as new as, the loaded row). If the whole session was loaded
//! and nothing was lost since (no eviction, no forgotten write, no reconnect), the cache is
//! *authoritative*: a peer it does not hold is not in the session either, and is answered
//! "not found" in-process, until the first eviction or forgotten write.
//!
//! A read that missed goes to the daemon with a [`Ticket`]. Its answer fills the cache only if
//! no write to the same slot was mirrored while it was in flight (its answer might predate
//! that write) and the cache was not cleared meanwhile (after a reconnect).

use std::collections::{HashMap, HashSet};

use session_vault_proto::model::{Peer, PeerKey, PeerKind, UpdateStateChange, UpdatesState};

use crate::convert::{apply_change, grammers_complete};

/// What a read can be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    /// One peer.
    Peer(PeerKey),
    /// `PeerId::self_user()`.
    SelfUser,
    /// The update state.
    State,
}

/// A read in flight: what the cache looked like when it started.
#[derive(Debug)]
pub(crate) struct Ticket {
    slot: Slot,
    version: u64,
    epoch: u64,
}

/// Which user the daemon considers the session's self user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelfUser {
    /// Not known to the client.
    Unknown,
    /// The daemon knows of no self user.
    None,
    /// The daemon's self user has this id.
    Id(i64),
}

/// A lookup's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<T> {
    /// The cache knows the answer.
    Hit(T),
    /// Ask the daemon.
    Miss,
}

/// Peers, self user and update state, as far as the client knows them.
#[derive(Debug)]
pub(crate) struct Cache {
    half: usize,
    young: HashMap<PeerKey, Option<Peer>>,
    old: HashMap<PeerKey, Option<Peer>>,
    self_user: SelfUser,
    state: Option<UpdatesState>,
    /// Reads in flight per slot: (readers, writes mirrored since the first of them started).
    reads: HashMap<Slot, (usize, u64)>,
    /// Bumped by [`Cache::clear`].
    epoch: u64,
    /// Every peer of the session is held (see the module docs).
    authoritative: bool,
    /// While a warm load runs: the peers written or forgotten since it began.
    load_writes: Option<HashSet<PeerKey>>,
    /// Since the warm load began: something was dropped that the load will not bring back
    /// (an eviction, a forgotten write), so the cache cannot become authoritative.
    spoiled: bool,
}

impl Cache {
    /// An empty cache holding at most `capacity` peers (0 disables caching peers).
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            half: capacity / 2,
            young: HashMap::new(),
            old: HashMap::new(),
            self_user: SelfUser::Unknown,
            state: None,
            reads: HashMap::new(),
            epoch: 0,
            authoritative: false,
            load_writes: None,
            spoiled: false,
        }
    }

    /// Forgets everything (after a reconnect, someone else may have written meanwhile) and
    /// voids the tickets of reads in flight.
    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.self_user = SelfUser::Unknown;
        self.state = None;
        self.epoch += 1;
        self.lost();
        self.load_writes = None;
    }

    /// Something the session holds may be missing from the cache from now on.
    fn lost(&mut self) {
        self.authoritative = false;
        self.spoiled = true;
    }

    /// Whether the cache holds every peer of the session.
    pub(crate) fn authoritative(&self) -> bool {
        self.authoritative
    }

    /// The most peers it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.half * 2
    }

    /// A warm load begins: returns the epoch [`Cache::finish_load`] checks.
    pub(crate) fn begin_load(&mut self) -> u64 {
        self.load_writes = Some(HashSet::new());
        self.spoiled = false;
        self.epoch
    }

    /// The warm load failed: nothing of it is applied.
    pub(crate) fn abort_load(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.load_writes = None;
        }
    }

    /// Applies a warm load begun at `epoch`: `peers` newest first, `whole` when they are every
    /// peer of the session. A peer the cache holds, or that this client wrote or forgot since
    /// the load began, is left as it is. Returns how many peers were added; `None`, adding
    /// nothing, after a reconnect (the epoch moved: another writer may have changed the
    /// session since).
    pub(crate) fn finish_load(
        &mut self,
        epoch: u64,
        peers: Vec<Peer>,
        whole: bool,
    ) -> Option<usize> {
        if epoch != self.epoch {
            return None;
        }
        let written = self.load_writes.take().unwrap_or_default();
        // A peer written since the load began that the cache did not keep (grammers reads more
        // of it than was written): the daemon holds it, the cache does not, whether or not the
        // load's pages had it (the daemon serves a connection's requests concurrently, so a
        // page may have been read before that write was applied).
        if written
            .iter()
            .any(|k| !self.young.contains_key(k) && !self.old.contains_key(k))
        {
            self.spoiled = true;
        }
        self.young.reserve(peers.len().min(self.half));
        let mut added = 0;
        // Oldest first, so that the newest end in the young generation.
        for p in peers.into_iter().rev() {
            let key = p.key();
            if self.young.contains_key(&key) || self.old.contains_key(&key) {
                continue;
            }
            if written.contains(&key) {
                // Written since, and not kept (see above): the page's copy is older.
                continue;
            }
            self.insert(key, Some(p));
            added += 1;
        }
        self.authoritative = whole && !self.spoiled;
        Some(added)
    }

    /// Number of peers held (answers "known absent" included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn get(&mut self, key: PeerKey) -> Lookup<Option<Peer>> {
        if let Some(v) = self.young.get(&key) {
            return Lookup::Hit(v.clone());
        }
        if self.young.len() >= self.half {
            // No room to promote it without dropping the old generation (a full cache, as a
            // warm start leaves it, would lose half of itself on the first hit): it stays old.
            if let Some(v) = self.old.get(&key) {
                return Lookup::Hit(v.clone());
            }
        }
        match self.old.remove(&key) {
            Some(v) => {
                self.insert(key, v.clone());
                Lookup::Hit(v)
            }
            None if self.authoritative => Lookup::Hit(None),
            None => Lookup::Miss,
        }
    }

    fn insert(&mut self, key: PeerKey, value: Option<Peer>) {
        if self.half == 0 {
            return;
        }
        self.old.remove(&key);
        if self.young.len() >= self.half && !self.young.contains_key(&key) {
            if !self.old.is_empty() {
                self.lost();
            }
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// A peer, if the cache knows whether it exists.
    pub(crate) fn peer(&mut self, key: PeerKey) -> Lookup<Option<Peer>> {
        self.get(key)
    }

    /// The self user's peer as the daemon would answer it, if known.
    pub(crate) fn self_peer(&mut self) -> Lookup<Option<Peer>> {
        match self.self_user {
            SelfUser::Unknown => Lookup::Miss,
            SelfUser::None => Lookup::Hit(None),
            SelfUser::Id(id) => self.get(PeerKey {
                kind: PeerKind::User,
                id,
            }),
        }
    }

    /// The update state, if known.
    pub(crate) fn state(&self) -> Lookup<UpdatesState> {
        match &self.state {
            Some(s) => Lookup::Hit(s.clone()),
            None => Lookup::Miss,
        }
    }

    /// Starts a read of `slot` that missed.
    pub(crate) fn begin(&mut self, slot: Slot) -> Ticket {
        let entry = self.reads.entry(slot).or_insert((0, 0));
        entry.0 += 1;
        Ticket {
            slot,
            version: entry.1,
            epoch: self.epoch,
        }
    }

    /// Ends a read; `fill` runs (to store its answer) only if the answer is still current.
    /// Call it on every ticket, failed reads included (with a `fill` that does nothing).
    pub(crate) fn finish(&mut self, ticket: Ticket, fill: impl FnOnce(&mut Cache)) {
        let Some(entry) = self.reads.get_mut(&ticket.slot) else {
            return;
        };
        let current = entry.1 == ticket.version && self.epoch == ticket.epoch;
        entry.0 -= 1;
        if entry.0 == 0 {
            self.reads.remove(&ticket.slot);
        }
        if current {
            fill(self);
        }
    }

    fn wrote(&mut self, slot: Slot) {
        if let Some(entry) = self.reads.get_mut(&slot) {
            entry.1 += 1;
        }
    }

    /// Stores the daemon's answer for a peer (`None`: known absent).
    pub(crate) fn fill_peer(&mut self, key: PeerKey, peer: Option<Peer>) {
        self.insert(key, peer);
    }

    /// Stores the daemon's answer to a self-user query.
    pub(crate) fn fill_self(&mut self, peer: Option<Peer>) {
        match peer {
            None => self.self_user = SelfUser::None,
            Some(p) => {
                self.self_user = SelfUser::Id(p.id);
                self.insert(p.key(), Some(p));
            }
        }
    }

    /// Stores the daemon's update state.
    pub(crate) fn fill_state(&mut self, state: UpdatesState) {
        self.state = Some(state);
    }

    /// Mirrors an acknowledged `cache_peers`: each peer merges into what is known of it, in
    /// order, by `extend_info` rules; a user whose merged info says `is_self` becomes the self
    /// user (the daemon's rule). A peer the cache did not know is kept only if it knows every
    /// field grammers reads ([`grammers_complete`]): the daemon's merge with whatever it held
    /// then gives the same fields (a newly known field wins). Any other stays unknown, since
    /// the daemon's copy may fill in what it lacks.
    pub(crate) fn wrote_peers(&mut self, peers: &[Peer]) {
        for p in peers {
            let key = p.key();
            let merged = match self.get(key) {
                Lookup::Hit(Some(mut old)) => {
                    old.merge_from(p);
                    Some(old)
                }
                Lookup::Hit(None) => Some(p.clone()),
                Lookup::Miss => grammers_complete(p).then(|| p.clone()),
            };
            if p.kind == PeerKind::User {
                let is_self = merged.as_ref().map_or(p.is_self, |m| m.is_self);
                match (is_self, &merged) {
                    (Some(true), _) => self.self_user = SelfUser::Id(p.id),
                    // Unknown merge: the daemon's copy may say is_self.
                    (None, None) => self.self_user = SelfUser::Unknown,
                    _ => {}
                }
            }
            if let Some(m) = merged {
                self.insert(key, Some(m));
            }
            if let Some(w) = &mut self.load_writes {
                w.insert(key);
            }
            self.wrote(Slot::Peer(key));
        }
        self.wrote(Slot::SelfUser);
    }

    /// Leaves out of a `cache_peers` batch each peer whose merge would change nothing the
    /// daemon holds, so that re-caching known peers (which bots do all the time) costs no
    /// round trip and no daemon work. Call it holding the session's write lock: the cache has
    /// then mirrored every earlier write, and no other writer exists (the lease).
    ///
    /// A peer is left out only if it is the first of its key in the batch (a later one merges
    /// into what the earlier ones made, which the cache does not hold yet), the cache holds
    /// the peer, merging it there changes nothing, and the result is not a user marked
    /// `is_self` (caching one makes it the daemon's self user again, even unchanged). Fields
    /// the cache holds agree with the daemon's and the unknown ones take no value from an
    /// unchanged merge, so the daemon's merge would change nothing either.
    pub(crate) fn drop_unchanged(&mut self, peers: Vec<Peer>) -> Vec<Peer> {
        let mut seen = HashSet::with_capacity(peers.len());
        peers
            .into_iter()
            .filter(|p| !(seen.insert(p.key()) && self.unchanged_by(p)))
            .collect()
    }

    fn unchanged_by(&mut self, p: &Peer) -> bool {
        let Lookup::Hit(Some(old)) = self.get(p.key()) else {
            return false;
        };
        let mut merged = old.clone();
        merged.merge_from(p);
        merged == old && merged.is_self != Some(true)
    }

    /// Forgets what a write that may or may not have been applied (it failed, or its caller
    /// gave up on it) touched: those peers, the self user.
    pub(crate) fn forget_peers(&mut self, peers: &[Peer]) {
        for p in peers {
            let key = p.key();
            self.young.remove(&key);
            self.old.remove(&key);
            if let Some(w) = &mut self.load_writes {
                w.insert(key);
            }
            self.wrote(Slot::Peer(key));
        }
        self.lost();
        self.self_user = SelfUser::Unknown;
        self.wrote(Slot::SelfUser);
    }

    /// Forgets the update state (see [`Cache::forget_peers`]).
    pub(crate) fn forget_state(&mut self) {
        self.state = None;
        self.wrote(Slot::State);
    }

    /// Mirrors an acknowledged `set_update_state`.
    pub(crate) fn wrote_state(&mut self, change: &UpdateStateChange) {
        match (&mut self.state, change) {
            (Some(s), c) => apply_change(s, c),
            (None, UpdateStateChange::All(_)) => {
                let mut s = UpdatesState::default();
                apply_change(&mut s, change);
                self.state = Some(s);
            }
            (None, _) => {}
        }
        self.wrote(Slot::State);
    }
}

#[cfg(test)]
mod tests {
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
}
