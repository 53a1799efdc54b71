//! Where each peer row is, by its blind key, in memory: the peers table has no index on its
//! keys (schema version 5), nor on its username and phone index values (version 6), which
//! are mapped here too ([`SessionKeys::holder`]).
//!
//! **Why.** A peer's key is an HMAC (a blind index), so keys arrive in random order. Kept in a
//! `UNIQUE (session, k)` index, every new peer lands on a random leaf of that index: a group
//! commit of a few thousand new peers dirtied nearly every leaf, and each commit wrote all of
//! them to the WAL again (1–2 KB written per 150-byte peer at 30k–300k peers, growing with the
//! session; BENCHMARKS-session.md). Now a session's peers are numbered in insertion order
//! (`rowid` = session id × 2³² + n), so new rows append at the end of the session's range and
//! a commit writes the few pages they filled; the key → rowid map lives here.
//!
//! **Completeness.** A session's map is built from the table the first time one of its peers
//! is looked up (one read of its rows' `rowid, k, i1, i2`, in the open transaction if there is
//! one), and every row the store inserts afterwards goes into it, as does every index value a
//! row takes: every write of a peer goes through [`super::SqliteStore`], which owns the only
//! connection that writes the file. So a key the map lacks is a key the table lacks, and a
//! value the map lacks is one no row holds (an entry may be stale the other way: see
//! [`SessionKeys::holder`]). Rolled-back writes are the exception, and
//! handled so: each session whose map changed since the transaction (or the operation's
//! savepoint) began is noted, and a rollback forgets those maps, to be read again from what
//! the table holds after it. A map can therefore only hold *more* than the table (a row whose
//! insert SQLite rolled back by itself); a lookup checks the row it finds by its key and, if
//! the row is gone or holds another key, reads the map again ([`PeerKeys::forget`]).
//!
//! **Cost.** About 30–40 bytes of memory per peer of each session looked up since the vault
//! was unlocked (24 bytes of key and rowid, plus the hash table's slack), and one read of a
//! session's rows when its map is built (about 0.1 s per million peers). The maps together
//! hold at most [`MAX_KEYS`] keys and index values (~150–200 MiB): building one past that drops
//! the least recently used others, which are read again at their next use, always on the
//! storage thread (a look-up run inline that finds its map dropped is queued:
//! `EngineError::NotInline`); a single session larger than that is kept whole. All are dropped
//! at lock. Keys and values are blind indexes, already stored in the file and useless without
//! the vault's keys; they are still zeroized when a map is dropped.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use super::peer_hash::{KeyMap, SessionHasher};

use zeroize::Zeroize;

use super::key_builds::KeyBuilds;
use crate::vault::crypto::BLIND_LEN;
use crate::vault::error::{EngineError, Result};

/// A blind key.
pub type Key = [u8; BLIND_LEN];

/// A peer row as the map is read from: rowid, key, and index values (username, phone).
pub type StoredRow = (i64, Vec<u8>, [Option<Vec<u8>>; 2]);

/// The most keys and index values the maps hold together before the least recently used are
/// dropped.
pub const MAX_KEYS: usize = 4_000_000;

/// The most rows of a session whose map the storage thread reads itself (a few ms); a larger
/// session's map is read on another thread ([`KeyBuilds`]) while the storage thread serves
/// the other sessions.
pub const READ_HERE_MAX: usize = 50_000;

/// Maps of at least this many entries are dropped (zeroized, freed) on the thread that reads
/// maps rather than on the storage thread.
const DISPOSE_ELSEWHERE_MIN: usize = 4096;

/// Rows a session may hold in its range of rowids.
const SESSION_SPAN: i64 = 1 << 32;

/// The rowids of session `session`'s peers: `(first, last)`, inclusive. Session ids come from
/// `AUTOINCREMENT` and start at 1; one beyond 2³¹ − 1 (never reached) has no range.
pub fn range(session: i64) -> Result<(i64, i64)> {
    if !(1..i64::from(i32::MAX)).contains(&session) {
        return Err(EngineError::Invalid(format!(
            "session id {session} is outside the peers table's range"
        )));
    }
    let first = session * SESSION_SPAN;
    Ok((first, first + SESSION_SPAN - 1))
}

/// `id`, a new peer's rowid, if it is within session rowids `range`; past its end, an error.
pub fn in_range(id: i64, range: (i64, i64)) -> Result<i64> {
    if id > range.1 {
        return Err(EngineError::Invalid(
            "this session has had 2^32 peers inserted; no room for more".into(),
        ));
    }
    Ok(id)
}

/// A peer key as the map holds it: every peer key the engine writes is a blind index of
/// [`BLIND_LEN`] bytes.
pub fn key(k: &[u8]) -> Result<Key> {
    k.try_into().map_err(|_| {
        EngineError::Invalid(format!(
            "a peer key is {BLIND_LEN} bytes, not {} (a blind index)",
            k.len()
        ))
    })
}

type BySession = BuildHasherDefault<SessionHasher>;

/// One session's peers: key → rowid, index value (blind username, blind phone) → the rowid
/// holding it, and the next rowid to give.
pub struct SessionKeys {
    rows: KeyMap,
    /// `[usernames, phones]`: each value → the row that took it last. An entry may be stale
    /// (its row gave the value up since); then no row holds the value, since a row taking it
    /// replaces the entry ([`SessionKeys::holder`]).
    values: [KeyMap; 2],
    next: i64,
    /// When it was last used ([`PeerKeys`]'s clock).
    used: u64,
}

impl SessionKeys {
    /// A map of `rows` (rowid, key, index values), read from the table, for session rowids
    /// `range`. A key met twice or of the wrong length, or an index value of the wrong length
    /// (a damaged or edited file: the store never writes one) is [`EngineError::Corrupt`].
    pub fn new(
        session: i64,
        range: (i64, i64),
        rows: impl Iterator<Item = Result<StoredRow>>,
    ) -> Result<Self> {
        let mut map = KeyMap::default();
        let mut values = [KeyMap::default(), KeyMap::default()];
        let mut last = range.0;
        for row in rows {
            let (id, k, idx) = row?;
            let corrupt = |reason| EngineError::Corrupt {
                table: "peers",
                session_id: session,
                row: format!("rowid {id}"),
                reason,
            };
            let k = key(&k).map_err(|_| corrupt("a peer key of the wrong length"))?;
            if map.insert(k, id).is_some() {
                return Err(corrupt("a peer key stored twice"));
            }
            for (held, v) in values.iter_mut().zip(idx) {
                if let Some(v) = v {
                    let v = key(&v).map_err(|_| corrupt("an index value of the wrong length"))?;
                    held.insert(v, id);
                }
            }
            last = last.max(id);
        }
        Ok(SessionKeys {
            rows: map,
            values,
            next: last + 1,
            used: 0,
        })
    }

    /// Keys held (rows read).
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Keys and index values held.
    pub(super) fn len(&self) -> usize {
        self.rows.len() + self.values[0].len() + self.values[1].len()
    }

    /// The row that took index value `v` of index `j` (0: username, 1: phone) last, if any:
    /// the row holding it, unless that row gave it up since (the caller checks the row).
    pub fn holder(&self, j: usize, v: &Key) -> Option<i64> {
        self.values[j].get(v)
    }

    /// The rowid of `k`, if the session holds it.
    pub fn get(&self, k: &Key) -> Option<i64> {
        self.rows.get(k)
    }

    /// The rowid the next new peer gets; past the range's end, an error.
    pub fn next_id(&self, range: (i64, i64)) -> Result<i64> {
        in_range(self.next, range)
    }

    /// Records that `k` was inserted as row `id` (the one [`SessionKeys::next_id`] gave);
    /// whether it was new to the map.
    fn inserted(&mut self, k: Key, id: i64) -> bool {
        self.next = self.next.max(id + 1);
        self.rows.insert(k, id).is_none()
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        let [usernames, phones] = &mut self.values;
        let values = usernames.drain().chain(phones.drain());
        for (mut k, _) in self.rows.drain().chain(values) {
            k.zeroize();
        }
    }
}

/// Every session's map that has been read, and which changed in the open transaction.
pub struct PeerKeys {
    sessions: HashMap<i64, SessionKeys, BySession>,
    /// Keys and index values in `sessions`, all maps together.
    held: usize,
    /// Sessions whose map changed since the transaction began.
    in_txn: HashSet<i64, BySession>,
    /// Sessions whose map changed since the current operation began.
    in_op: HashSet<i64, BySession>,
    /// Counts uses, to tell the least recently used map.
    clock: u64,
    /// [`MAX_KEYS`], or less in tests.
    max_keys: usize,
    /// Maps read on another thread, and what tells whether one still matches the table
    /// (`None`: every map is read here, as in tests of the store alone).
    elsewhere: Option<Elsewhere>,
    /// Counts [`PeerKeys::clear`]s: a map read before one is not taken after it.
    generation: u64,
    /// Maps dropped to stay within `max_keys` (tests).
    pub evicted: u64,
    /// Maps read from the table (tests).
    pub read: u64,
    /// Maps read on another thread and taken (tests).
    pub adopted: u64,
    /// The most rows one read of a map here took (tests).
    pub largest_read_here: usize,
    /// Of those, read by a job run inline (tests: there must be none).
    #[cfg(test)]
    pub read_inline: u64,
}

/// What [`PeerKeys`] keeps for maps read on another thread ([`KeyBuilds`]).
struct Elsewhere {
    builds: KeyBuilds,
    /// Each session's last commit (the [`KeyBuilds`] count) that changed its map's rows: a
    /// map read from an older snapshot is not taken.
    touched: HashMap<i64, u64, BySession>,
    /// Sessions found to hold more than [`READ_HERE_MAX`] rows: their maps are read elsewhere
    /// without a first try here.
    large: HashSet<i64, BySession>,
    /// Read at most this many rows here ([`READ_HERE_MAX`], less in tests).
    read_here_max: usize,
}

impl Default for PeerKeys {
    fn default() -> Self {
        PeerKeys {
            sessions: HashMap::default(),
            held: 0,
            in_txn: HashSet::default(),
            in_op: HashSet::default(),
            clock: 0,
            max_keys: MAX_KEYS,
            elsewhere: None,
            generation: 0,
            evicted: 0,
            read: 0,
            adopted: 0,
            largest_read_here: 0,
            #[cfg(test)]
            read_inline: 0,
        }
    }
}

/// Where a missing map is to be read ([`PeerKeys::read_where`]).
pub enum ReadMap {
    /// Here, all of it.
    Whole,
    /// Here, if the session holds at most this many rows (else [`PeerKeys::too_large`]).
    AtMost(usize),
}

impl PeerKeys {
    /// Holds at most `max` keys (tests).
    #[cfg(test)]
    pub fn set_max_keys(&mut self, max: usize) {
        self.max_keys = max;
    }

    /// Reads maps of at most `max` rows here, larger ones elsewhere (tests).
    #[cfg(test)]
    pub fn set_read_here_max(&mut self, max: usize) {
        if let Some(e) = &mut self.elsewhere {
            e.read_here_max = max;
        }
    }

    /// The generation of maps a read elsewhere is asked for in (tests).
    #[cfg(test)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Session `session`'s map, if read.
    pub fn session(&mut self, session: i64) -> Option<&mut SessionKeys> {
        self.clock += 1;
        let keys = self.sessions.get_mut(&session)?;
        keys.used = self.clock;
        Some(keys)
    }

    /// Reads maps on another thread ([`KeyBuilds`]) when they hold more than `read_here_max`
    /// rows.
    pub fn read_elsewhere(&mut self, builds: KeyBuilds, read_here_max: usize) {
        self.elsewhere = Some(Elsewhere {
            builds,
            touched: HashMap::default(),
            large: HashSet::default(),
            read_here_max,
        });
    }

    /// Whether session `session`'s map is in memory.
    pub fn has(&self, session: i64) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Session `session`'s map read on another thread, if one is waiting and still matches
    /// the table: read after the last commit that changed the session's rows, in this
    /// generation, and with none of its rows changed in the open transaction. One that does
    /// not is dropped (elsewhere).
    pub fn take_built(&mut self, session: i64) -> Option<SessionKeys> {
        let e = self.elsewhere.as_ref()?;
        let built = e.builds.take(session)?;
        let current = built.generation == self.generation
            && !self.in_txn.contains(&session)
            && e.touched.get(&session).is_none_or(|n| *n <= built.as_of);
        if !current {
            e.builds.discard(built.keys);
            return None;
        }
        Some(built.keys)
    }

    /// Keeps `keys`, read on another thread and just taken ([`PeerKeys::take_built`]), as
    /// session `session`'s map.
    pub fn adopt(&mut self, session: i64, keys: SessionKeys) -> &mut SessionKeys {
        self.adopted += 1;
        self.keep(session, keys)
    }

    /// Where session `session`'s missing map is read: here, whole, where it must be (no
    /// other thread reads maps; acknowledged writes are being re-applied); here if it is
    /// small; or, if it is known to be large, elsewhere ([`EngineError::KeysNeeded`]). One
    /// whose rows changed in the open transaction is tried here whatever it was (a clear may
    /// have emptied it); if it is still large, the map read elsewhere is taken only once
    /// that transaction committed, so the job waits for that rather than hold every other
    /// session up ([`PeerKeys::take_built`]).
    pub fn read_where(&self, session: i64, replaying: bool) -> Result<ReadMap> {
        match &self.elsewhere {
            Some(e) if !replaying => {
                if e.large.contains(&session) && !self.in_txn.contains(&session) {
                    Err(self.too_large(session))
                } else {
                    Ok(ReadMap::AtMost(e.read_here_max))
                }
            }
            _ => Ok(ReadMap::Whole),
        }
    }

    /// The error that has session `session`'s map read elsewhere (a store without that
    /// thread never asks: [`PeerKeys::read_where`] reads every map here then).
    pub fn too_large(&self, session: i64) -> EngineError {
        match &self.elsewhere {
            Some(e) => EngineError::KeysNeeded {
                session,
                generation: self.generation,
                builds: e.builds.clone(),
            },
            None => EngineError::NotInline,
        }
    }

    /// Notes that session `session` was found to hold more rows than are read here.
    pub fn found_large(&mut self, session: i64, partial: SessionKeys) {
        self.largest_read_here = self.largest_read_here.max(partial.rows());
        match &mut self.elsewhere {
            Some(e) => {
                e.large.insert(session);
                e.builds.discard(partial);
            }
            None => drop(partial),
        }
    }

    /// Keeps `keys`, just read from the table (here or elsewhere), as session `session`'s map
    /// (within [`MAX_KEYS`]: see [`PeerKeys::evict_for`]).
    pub fn insert(&mut self, session: i64, keys: SessionKeys) -> &mut SessionKeys {
        self.read += 1;
        self.largest_read_here = self.largest_read_here.max(keys.rows());
        #[cfg(test)]
        if crate::vault::worker::running_inline() {
            self.read_inline += 1;
        }
        self.keep(session, keys)
    }

    fn keep(&mut self, session: i64, mut keys: SessionKeys) -> &mut SessionKeys {
        self.forget(session);
        self.evict_for(session, keys.len());
        self.clock += 1;
        keys.used = self.clock;
        self.held += keys.len();
        self.sessions.entry(session).insert_entry(keys).into_mut()
    }

    /// Records that `k` was inserted into session `session`'s table as row `id` (the one its
    /// map's [`SessionKeys::next_id`] gave), in its map, which must be in memory.
    pub fn inserted(&mut self, session: i64, k: Key, id: i64) {
        let grew = self
            .sessions
            .get_mut(&session)
            .map(|keys| keys.inserted(k, id));
        self.noted(session, grew);
    }

    /// Records that row `id` of session `session` took index value `v` of index `j`, in its
    /// map, which must be in memory.
    pub fn value_taken(&mut self, session: i64, j: usize, v: Key, id: i64) {
        let grew = self
            .sessions
            .get_mut(&session)
            .map(|keys| keys.values[j].insert(v, id).is_none());
        self.noted(session, grew);
    }

    /// Accounts for a change to session `session`'s map (`None`: not in memory, nothing
    /// changed; `Some(true)`: it holds one entry more).
    fn noted(&mut self, session: i64, grew: Option<bool>) {
        let Some(grew) = grew else { return };
        if grew {
            self.held += 1;
            if self.held > self.max_keys {
                self.evict_for(session, 0);
            }
        }
        self.changed(session);
    }

    /// Forgets the entry of index value `v` of index `j`: its row gave the value up.
    pub fn value_dropped(&mut self, session: i64, j: usize, v: &Key) {
        if let Some(keys) = self.sessions.get_mut(&session) {
            if keys.values[j].remove(v).is_some() {
                self.held -= 1;
            }
        }
    }

    /// Drops the least recently used maps other than `session`'s while the maps would hold
    /// more than the maximum with `more` keys added. Dropping one is always safe: it is read
    /// again, from the table as the open transaction sees it, at its next use. A map whose
    /// rows changed in the open transaction is kept until it commits if maps are read
    /// elsewhere (read again before, it would have to be read here: no other connection sees
    /// those changes), and a session larger than the maximum alone is kept whole.
    fn evict_for(&mut self, session: i64, more: usize) {
        while self.held + more > self.max_keys {
            let oldest = self
                .sessions
                .iter()
                .filter(|(s, _)| **s != session && !self.pinned(**s))
                .min_by_key(|(_, k)| k.used)
                .map(|(s, _)| *s);
            let Some(oldest) = oldest else { break };
            self.forget(oldest);
            self.evicted += 1;
        }
    }

    /// Whether session `session`'s map stays until the transaction ends: its rows changed in
    /// it, and maps are read elsewhere (where those changes are not seen; without that
    /// thread every map is read here, in the transaction, and any may go).
    fn pinned(&self, session: i64) -> bool {
        self.elsewhere.is_some() && self.in_txn.contains(&session)
    }

    /// Notes that session `session`'s rows all went (deleted) in the open transaction.
    pub fn changed(&mut self, session: i64) {
        self.in_txn.insert(session);
        self.in_op.insert(session);
    }

    /// Forgets session `session`'s map: read again at its next use.
    pub fn forget(&mut self, session: i64) {
        if let Some(keys) = self.sessions.remove(&session) {
            self.held -= keys.len();
            self.dispose(keys);
        }
    }

    /// Drops `keys`; a large map on the thread that reads maps, so that zeroizing and freeing
    /// it does not hold the storage thread up.
    fn dispose(&self, keys: SessionKeys) {
        match &self.elsewhere {
            Some(e) if keys.len() >= DISPOSE_ELSEWHERE_MIN => e.builds.discard(keys),
            _ => drop(keys),
        }
    }

    /// A transaction or an operation begins; or one was kept (committed, released).
    pub fn op_ended(&mut self) {
        self.in_op.clear();
    }

    /// The transaction committed (or a new one begins).
    pub fn committed(&mut self) {
        self.in_txn.clear();
        self.in_op.clear();
    }

    /// The transaction committed, as commit number `n` of [`KeyBuilds`]' count: maps of the
    /// sessions it changed read from older snapshots are not taken.
    pub fn committed_as(&mut self, n: u64) {
        if let Some(e) = &mut self.elsewhere {
            for s in &self.in_txn {
                e.touched.insert(*s, n);
            }
        }
        self.committed();
    }

    /// The thread that reads maps elsewhere and its count of commits, if there is one.
    pub fn builds(&self) -> Option<&KeyBuilds> {
        self.elsewhere.as_ref().map(|e| &e.builds)
    }

    /// The operation was rolled back to its savepoint: what it changed is gone from the table.
    pub fn op_rolled_back(&mut self) {
        for s in std::mem::take(&mut self.in_op) {
            self.forget(s);
        }
    }

    /// The transaction was rolled back: what it changed is gone from the table.
    pub fn rolled_back(&mut self) {
        self.in_op.clear();
        for s in std::mem::take(&mut self.in_txn) {
            self.forget(s);
        }
    }

    /// Forgets every map (the vault locked: read again once unlocked), and any read elsewhere
    /// and not taken yet.
    pub fn clear(&mut self) {
        for (_, keys) in std::mem::take(&mut self.sessions) {
            self.dispose(keys);
        }
        self.generation += 1;
        if let Some(e) = &mut self.elsewhere {
            e.builds.clear(self.generation);
            e.large.clear();
            // Reads begun from now on see every commit so far; older ones are not taken.
            e.touched.clear();
        }
        self.held = 0;
        self.in_txn.clear();
        self.in_op.clear();
    }
}
