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

mod writes;

use std::collections::{HashMap, HashSet};

use session_vault_proto::model::{Peer, PeerKey, PeerKind, UpdatesState};

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
        self.get_with(key, |p| p.cloned())
    }

    /// What `f` makes of the cached peer (`None`: known absent), without copying it.
    fn get_with<T>(&mut self, key: PeerKey, f: impl FnOnce(Option<&Peer>) -> T) -> Lookup<T> {
        if let Some(v) = self.young.get(&key) {
            return Lookup::Hit(f(v.as_ref()));
        }
        if self.young.len() >= self.half {
            // No room to promote it without dropping the old generation (a full cache, as a
            // warm start leaves it, would lose half of itself on the first hit): it stays old.
            if let Some(v) = self.old.get(&key) {
                return Lookup::Hit(f(v.as_ref()));
            }
        }
        match self.old.remove(&key) {
            Some(v) => {
                let out = f(v.as_ref());
                self.insert(key, v);
                Lookup::Hit(out)
            }
            None if self.authoritative => Lookup::Hit(f(None)),
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

    /// What `f` makes of a peer (`None`: known absent), if the cache knows whether it exists.
    pub(crate) fn peer_with<T>(
        &mut self,
        key: PeerKey,
        f: impl FnOnce(Option<&Peer>) -> T,
    ) -> Lookup<T> {
        self.get_with(key, f)
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
}

#[cfg(test)]
mod tests;
