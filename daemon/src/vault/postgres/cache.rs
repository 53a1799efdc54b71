//! The lease holder's cache of its sessions' rows: a point read it can answer costs no
//! PostgreSQL round trip, and a new peer's write needs no read to learn that the peer is new.
//!
//! **Why it may answer.** While this daemon holds a session's lease, no other daemon writes
//! the session's rows: every write is fenced ([`super::lease`]), and a non-holder's is refused
//! while the lease is live. So whatever this store read or committed of such a session stays
//! true until it writes again, which it sees. A cached session is answered only until the
//! lease's expiry as this host counts it: the instant before the statement that took or
//! renewed the lease, plus its time to live (the database dates the expiry from a later
//! instant, so the local deadline is never later than the real one). Past it, or once the
//! lease was found lost, reads go to PostgreSQL again. The deadline is kept on a clock that
//! goes on counting while the host is suspended ([`Stamp`]), as the database's does: a host
//! that slept past its lease's expiry does not answer from its cache when it wakes.
//!
//! **Across a re-take.** A lease given back parks its cache (kept, not answered from). The
//! lease row's `cache_owner` names the daemon instance whose cache of the session is current:
//! the taker sets it to itself, and a trigger on every data table clears it whenever a
//! transaction of any other instance (or of an older `vaultd`, which knows nothing of it)
//! writes the session's rows; this daemon's own writes keep it, and reach its cache. When the
//! lease is taken again, the take says whether `cache_owner` still named this instance (the
//! row locked, so no write can slip between): the parked cache is answered from again, or
//! dropped. A restarted bot whose daemon kept running so finds its session's peers here.
//!
//! **Transactions.** The cache holds committed rows only. Every write of a cached session
//! marks its key touched for the open transaction; a touched key (or a key of a table cleared
//! in the transaction) is never answered from the cache nor filled by a read, since the server
//! may be answering with the transaction's own unsent or uncommitted writes. At a successful
//! `COMMIT` each touched key takes the value the transaction's held writes last gave it when
//! they say (`Held`, captured once each send succeeded), and is dropped otherwise; a failed
//! commit (its outcome unknown) drops every touched key; a rollback leaves the cache as it was.
//!
//! **Inline.** What the cache answers needs no statement, so a point read of a leased session
//! may run on a runtime thread (`Vault::read`); the store refuses every statement there
//! (`conn::refuse_inline`), and such a read is queued for the storage thread instead.
//!
//! **Peers known whole.** When the session is opened, its peer keys are loaded (bounded):
//! from then on a peer key not among them is known absent, so a new peer's `cache_peer` makes
//! no read. The key set is only ever a superset of the stored keys (every write adds its key,
//! nothing removes one), which is all an answer "absent" needs.
//!
//! **Bounds.** At most [`CACHE_MAX_BYTES`] (keys, sealed values and bookkeeping counted); past
//! it the least recently used sessions' rows are dropped. The cache holds what PostgreSQL
//! holds: sealed values and blind keys, never plaintext.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::vault::store::Table;

/// The most bytes the cache holds (about 250k peers' sealed rows).
pub const CACHE_MAX_BYTES: usize = 64 << 20;

/// The most peer keys loaded to know a session's peers whole; a larger session's absent peers
/// are asked of PostgreSQL.
pub const PEER_KEYS_MAX: i64 = 400_000;

/// Bookkeeping counted per entry (hash slot, vector headers).
const ENTRY_OVERHEAD: usize = 64;

/// The most keys a transaction marks per session before the session's cache is dropped at its
/// end instead (an import does not grow the bookkeeping without bound).
const TOUCHED_MAX: usize = 100_000;

/// A reading of the clock the cache's deadlines are kept on: on Linux `CLOCK_BOOTTIME`, which
/// counts the time a host spends suspended (the monotonic clock, and so `Instant`, stops then,
/// while the database's clock and the lease's expiry go on); elsewhere the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(Duration);

impl Stamp {
    /// Now.
    pub(super) fn now() -> Stamp {
        #[cfg(target_os = "linux")]
        {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
            let secs = u64::try_from(t.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(t.tv_nsec).unwrap_or(0);
            Stamp(Duration::new(secs, nanos))
        }
        #[cfg(not(target_os = "linux"))]
        {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            Stamp(START.get_or_init(std::time::Instant::now).elapsed())
        }
    }

    fn after(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(d))
    }
}

/// A cached session's rows.
struct Cached {
    /// Reads may be answered until then; `None`: parked (the lease was given back).
    until: Option<Stamp>,
    rows: HashMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// A superset of the session's stored peer keys, when known (see the module doc).
    peer_keys: Option<HashSet<Vec<u8>>>,
    bytes: usize,
    used: u64,
}

impl Cached {
    fn new(until: Stamp) -> Cached {
        Cached {
            until: Some(until),
            rows: HashMap::new(),
            peer_keys: None,
            bytes: 0,
            used: 0,
        }
    }

    fn answering(&self, now: Stamp) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    fn forget_rows(&mut self) -> usize {
        let freed = self.bytes;
        self.rows = HashMap::new();
        self.peer_keys = None;
        self.bytes = 0;
        freed
    }
}

fn row_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    ENTRY_OVERHEAD + key.len() + value.map_or(0, <[u8]>::len)
}

/// The open transaction's writes of cached sessions.
#[derive(Default)]
struct TxnWrites {
    touched: HashSet<(Table, i64, Vec<u8>)>,
    cleared: HashSet<(Table, i64)>,
    /// The values the sent held writes gave touched keys.
    values: HashMap<(Table, i64, Vec<u8>), Vec<u8>>,
    /// Sessions that touched more than [`TOUCHED_MAX`] keys: dropped at the end.
    spoiled: HashSet<i64>,
    per_session: HashMap<i64, usize>,
}

/// See the module doc.
pub(super) struct RowCache {
    sessions: HashMap<i64, Cached>,
    bytes: usize,
    max_bytes: usize,
    tick: u64,
    txn: TxnWrites,
    /// Sessions found to hold more than [`PEER_KEYS_MAX`] peers.
    too_many_peers: HashSet<i64>,
}

impl Default for RowCache {
    fn default() -> Self {
        RowCache::with_max_bytes(CACHE_MAX_BYTES)
    }
}

impl RowCache {
    /// An empty cache holding at most `max_bytes`.
    pub(super) fn with_max_bytes(max_bytes: usize) -> RowCache {
        RowCache {
            sessions: HashMap::new(),
            bytes: 0,
            max_bytes,
            tick: 0,
            txn: TxnWrites::default(),
            too_many_peers: HashSet::new(),
        }
    }

    // ---- the lease's life --------------------------------------------------------------------

    /// The lease of `session` was taken at `since` for `ttl`; `kept`: the database says no
    /// other instance wrote the session since this one's cache of it was current.
    pub(super) fn taken(&mut self, session: i64, kept: bool, since: Stamp, ttl: Duration) {
        let until = since.after(ttl);
        match self.sessions.get_mut(&session) {
            Some(c) if kept => c.until = Some(until),
            _ => {
                self.drop_session(session);
                self.sessions.insert(session, Cached::new(until));
            }
        }
    }

    /// The lease of `session` was renewed at `since` for `ttl`.
    pub(super) fn renewed(&mut self, session: i64, since: Stamp, ttl: Duration) {
        if let Some(c) = self.sessions.get_mut(&session) {
            c.until = Some(since.after(ttl));
        }
    }

    /// The lease of `session` was given back: its cache is parked.
    pub(super) fn given_back(&mut self, session: i64) {
        if let Some(c) = self.sessions.get_mut(&session) {
            c.until = None;
        }
    }

    /// Forgets `session` (its lease was lost, or it was deleted).
    pub(super) fn drop_session(&mut self, session: i64) {
        if let Some(mut c) = self.sessions.remove(&session) {
            self.bytes -= c.forget_rows();
        }
    }

    /// Forgets everything (the keys changed: lock, unlock, rekey).
    pub(super) fn drop_all(&mut self) {
        self.sessions.clear();
        self.bytes = 0;
        self.txn = TxnWrites::default();
    }

    // ---- reads -------------------------------------------------------------------------------

    fn answerable(&self, table: Table, session: i64, key: &[u8]) -> Option<&Cached> {
        let c = self.sessions.get(&session)?;
        if !c.answering(Stamp::now())
            || self.txn.cleared.contains(&(table, session))
            || self.txn.spoiled.contains(&session)
            // (Asked only while the transaction wrote something: the probe copies the key.)
            || (!self.txn.touched.is_empty()
                && self.txn.touched.contains(&(table, session, key.to_vec())))
        {
            return None;
        }
        Some(c)
    }

    /// The committed row, if the cache may answer: `Some(None)`: known absent.
    pub(super) fn get(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
    ) -> Option<Option<Vec<u8>>> {
        let c = self.answerable(table, session, key)?;
        let answer = match c.rows.get(&(table, key.to_vec())) {
            Some(v) => Some(v.clone()),
            None => match &c.peer_keys {
                Some(keys) if table == Table::Peers && !keys.contains(key) => Some(None),
                _ => None,
            },
        };
        if answer.is_some() {
            self.tick += 1;
            let tick = self.tick;
            if let Some(c) = self.sessions.get_mut(&session) {
                c.used = tick;
            }
        }
        answer
    }

    /// Keeps what the server answered for a row read now (in or out of a transaction).
    pub(super) fn fill(&mut self, table: Table, session: i64, key: &[u8], value: Option<&[u8]>) {
        if self.answerable(table, session, key).is_none() {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        let c = self.sessions.get_mut(&session).expect("answerable");
        let added = row_bytes(key, value);
        if let Some(old) = c
            .rows
            .insert((table, key.to_vec()), value.map(<[u8]>::to_vec))
        {
            let freed = row_bytes(key, old.as_deref());
            c.bytes -= freed;
            self.bytes -= freed;
        }
        c.bytes += added;
        c.used = tick;
        self.bytes += added;
        self.bound(session);
    }

    /// Whether `session`'s peer keys should be loaded now (an open asks): its cache answers
    /// and has none, and the session was not found too large for them.
    pub(super) fn wants_peer_keys(&self, session: i64) -> bool {
        !self.too_many_peers.contains(&session)
            && self
                .sessions
                .get(&session)
                .is_some_and(|c| c.answering(Stamp::now()) && c.peer_keys.is_none())
    }

    /// Keeps `session`'s peer keys as loaded (`None`: too many to keep, which is remembered
    /// until the session's peers are cleared, so that each open does not read them again).
    pub(super) fn set_peer_keys(&mut self, session: i64, keys: Option<HashSet<Vec<u8>>>) {
        let Some(mut keys) = keys else {
            self.too_many_peers.insert(session);
            return;
        };
        let Some(c) = self.sessions.get_mut(&session) else {
            return;
        };
        // Written (and not yet committed) in the open transaction: a superset stays one.
        for (t, s, k) in &self.txn.touched {
            if *t == Table::Peers && *s == session {
                keys.insert(k.clone());
            }
        }
        let added: usize = keys.iter().map(|k| ENTRY_OVERHEAD + k.len()).sum();
        c.bytes += added;
        c.peer_keys = Some(keys);
        self.bytes += added;
        self.bound(session);
    }

    // ---- writes ------------------------------------------------------------------------------

    /// A write of `key` in the open transaction.
    pub(super) fn wrote(&mut self, table: Table, session: i64, key: &[u8]) {
        if !self.sessions.contains_key(&session) || self.txn.spoiled.contains(&session) {
            return;
        }
        if self.txn.touched.insert((table, session, key.to_vec())) {
            let n = self.txn.per_session.entry(session).or_default();
            *n += 1;
            if *n > TOUCHED_MAX {
                self.txn.spoiled.insert(session);
                self.txn.touched.retain(|(_, s, _)| *s != session);
                self.txn.values.retain(|(_, s, _), _| *s != session);
            }
        }
    }

    /// A clear of `session`'s `table` in the open transaction.
    pub(super) fn cleared(&mut self, table: Table, session: i64) {
        if table == Table::Peers {
            // Perhaps no longer too many (if the clear is rolled back, one more try).
            self.too_many_peers.remove(&session);
        }
        if !self.sessions.contains_key(&session) {
            return;
        }
        self.txn.cleared.insert((table, session));
        self.txn
            .values
            .retain(|(t, s, _), _| (*t, *s) != (table, session));
    }

    /// The transaction's held writes about to be sent, as `Held` lists them: its clears
    /// (made before its rows), then its rows' last values.
    pub(super) fn sending(&mut self) -> Sending<'_> {
        Sending { cache: self }
    }

    /// The transaction committed: its writes are what the cache holds from now on.
    pub(super) fn committed(&mut self) {
        self.end_txn(true);
    }

    /// The commit failed, its outcome unknown: every row it wrote is forgotten.
    pub(super) fn commit_failed(&mut self) {
        self.end_txn(false);
    }

    /// The transaction was rolled back: the cache holds what was committed before it.
    pub(super) fn rolled_back(&mut self) {
        self.txn = TxnWrites::default();
    }

    /// A transaction begins. Writes still marked (made outside a transaction, or by one
    /// whose end was not seen) are forgotten: their outcome is unknown here.
    pub(super) fn begun(&mut self) {
        let t = &self.txn;
        if !(t.touched.is_empty() && t.cleared.is_empty() && t.spoiled.is_empty()) {
            self.end_txn(false);
        }
        self.txn = TxnWrites::default();
    }

    fn end_txn(&mut self, with_values: bool) {
        let txn = std::mem::take(&mut self.txn);
        for session in &txn.spoiled {
            if let Some(c) = self.sessions.get_mut(session) {
                self.bytes -= c.forget_rows();
            }
        }
        for (table, session) in &txn.cleared {
            let Some(c) = self.sessions.get_mut(session) else {
                continue;
            };
            let mut freed = 0;
            c.rows.retain(|(t, k), v| {
                let keep = t != table;
                if !keep {
                    freed += row_bytes(k, v.as_deref());
                }
                keep
            });
            c.bytes -= freed;
            self.bytes -= freed;
        }
        let mut values = txn.values;
        for id in txn.touched {
            let Some(c) = self.sessions.get_mut(&id.1) else {
                continue;
            };
            let value = if with_values {
                values.remove(&id)
            } else {
                None
            };
            let (table, _, key) = id;
            let mut added = 0;
            if let Some(keys) = c.peer_keys.as_mut().filter(|_| table == Table::Peers) {
                if !keys.contains(&key) {
                    added += ENTRY_OVERHEAD + key.len();
                    keys.insert(key.clone());
                }
            }
            let len = key.len();
            let old = match value {
                Some(v) => {
                    added += ENTRY_OVERHEAD + len + v.len();
                    c.rows.insert((table, key), Some(v))
                }
                None => c.rows.remove(&(table, key)),
            };
            let freed = old.map_or(0, |o| ENTRY_OVERHEAD + len + o.map_or(0, |v| v.len()));
            c.bytes = c.bytes + added - freed;
            self.bytes = self.bytes + added - freed;
        }
        self.bound(None);
    }

    /// Drops the rows of the least recently used sessions, parked ones first (`current`'s
    /// last), until the cache is within its bound.
    fn bound(&mut self, current: impl Into<Option<i64>>) {
        let current = current.into();
        while self.bytes > self.max_bytes {
            let victim = self
                .sessions
                .iter()
                .filter(|(s, c)| Some(**s) != current && c.bytes > 0)
                .min_by_key(|(_, c)| (c.until.is_some(), c.used))
                .map(|(s, _)| *s)
                .or(current);
            let Some(c) = victim.and_then(|v| self.sessions.get_mut(&v)) else {
                return;
            };
            self.bytes -= c.forget_rows();
            if c.until.is_none() {
                self.sessions.remove(&victim.expect("found above"));
            }
            if victim == current {
                return;
            }
        }
    }

    /// Bytes held (tests).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The held writes of one send, handed over as [`RowCache::sending`] describes.
pub(super) struct Sending<'a> {
    cache: &'a mut RowCache,
}

impl Sending<'_> {
    /// A clear, made before every row given after it.
    pub(super) fn clear(&mut self, table: Table, session: i64) {
        self.cache.cleared(table, session);
    }

    /// A row's last value.
    pub(super) fn row(&mut self, table: Table, session: i64, key: &[u8], value: &[u8]) {
        let c = &mut self.cache;
        if c.sessions.contains_key(&session) && !c.txn.spoiled.contains(&session) {
            c.txn
                .values
                .insert((table, session, key.to_vec()), value.to_vec());
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
