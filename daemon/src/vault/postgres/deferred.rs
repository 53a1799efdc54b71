//! Row writes held back on the client: an operation's ([`Deferred`]) and, once it ended, the
//! transaction's, coalesced per row ([`Held`]) and sent once, at `COMMIT`; and the `bytea`
//! literals they are written with.

use std::collections::{HashMap, HashSet};

#[cfg(doc)]
use super::super::store::Store;
use super::super::store::Table;
use super::errors::pg_error;
use super::{DEFERRED_MAX, PostgresStore};
use crate::vault::error::Result;

/// The open operation's writes not sent yet. The worker runs each operation in a savepoint;
/// a cache-class write is a few statements (an upsert per row, the session's `updated_at`),
/// and PostgreSQL is a round trip away, so sending each on its own made such a write cost 5–8
/// round trips (`SAVEPOINT`, fencing check, each statement, `RELEASE`). The row writes
/// ([`Store::put`], [`Store::put_last`], [`Store::clear`], [`Store::touch_session`]) are
/// instead kept here, coalesced per row ([`Held`]). At [`Store::release_op`], once the
/// fencing checks they need passed, they join the transaction's held writes
/// (`PostgresStore::held`), which are sent once, at `COMMIT`: an operation that writes rows
/// already fenced in this transaction costs no round trip at all.
///
/// - Order: any statement other than a point read sends the held writes first
///   ([`PostgresStore::sync`]: the transaction's, then `SAVEPOINT op` and the operation's),
///   so the server sees the rows the engine's order of writes leaves. A point read
///   ([`Store::get`], [`Store::get_many`]) is answered from the operation's writes, then the
///   transaction's, when they decide it, and otherwise by the server (a row's value depends
///   only on writes of its key and clears of its table).
/// - Fencing: a session's lease check (`FOR SHARE`, once per session and transaction, its
///   row lock held until the transaction ends) runs at the end of the first operation that
///   writes the session's rows; if it refuses, nothing of the operation is kept, on the
///   client or on the server. The lock keeps the lease from passing to another holder before
///   the writes it fenced are committed: a stale token's write never reaches the database.
/// - Failure: an operation rolled back drops its writes here (and the server rolls back to
///   the savepoint if one was sent); the transaction's held writes, made by operations that
///   ended before, are untouched. A held write the server refuses (connection lost, disk
///   full; this schema has no constraint an upsert can break, but a trigger could) fails the
///   commit as a whole: the worker's path for a failed commit takes over, re-applying the
///   acknowledged cache-class writes one operation at a time, and until a commit succeeds
///   the store sends each operation's writes at its end (`PostgresStore::send_each`), so a
///   refused one fails alone and is dropped.
/// - Values: only sealed records, blind indexes (both as hex: `'\x…'` literals need no
///   escaping) and integers are written into the SQL text; never a name or other string.
///   PostgreSQL logs the text of a statement that fails (`log_min_error_statement`): that
///   is ciphertext and blind indexes, which the database holds anyway.
#[derive(Default)]
pub(super) struct Deferred {
    /// The operation's row writes not sent yet.
    pub(super) writes: Held,
    /// `SAVEPOINT op` has been sent (with statements that had to run inside it).
    pub(super) sent: bool,
    /// Sessions whose fencing check the writes still need.
    pub(super) to_fence: Vec<i64>,
}

/// Row writes held on the client, coalesced per row: the last value of each written row, to
/// be sent once ([`Held::render`]). The store keeps two: the open operation's writes
/// ([`Deferred::writes`], dropped if it is rolled back) and the transaction's
/// (`PostgresStore::held`: the writes of the operations that ended, sent at `COMMIT`, before
/// any statement whose result they could change, or past [`super::HELD_MAX`] bytes; the
/// operation's past [`super::DEFERRED_MAX`]).
///
/// Sending a row's final version instead of each write of it is what keeps a group commit's
/// cost flat: PostgreSQL cannot prune the row versions an open transaction made, so a row
/// rewritten hundreds of times in one transaction (the update state, a busy channel) made
/// every later read and write of it walk a growing version chain (BENCHMARKS-session.md,
/// run P2). The rendered statements leave the same rows as the sequence of writes did:
/// - values: each row's last write; a [`Held::clear`] drops the table's earlier writes and
///   is sent first (`DELETE`), before the writes that followed it;
/// - row order (`seq`): a row's place is decided by its first write since the last clear
///   (an insert draws a `seq`, an update keeps it) or by its last [`Store::put_last`] (a
///   new `seq`); rows are sent in that order, so new `seq` values come out in it too;
/// - index values (`i1`, `i2`, which a later [`Store::put`] of another row takes over): for
///   each value written, the row that wrote it last is its holder; every other row that
///   has it is cleared (`UPDATE … SET i1 = NULL … AND k <> holder`, as each put did), and a
///   held row keeps its value only if it is that value's holder;
/// - `updated_at`: each session's last [`Store::touch_session`].
#[derive(Default)]
pub(super) struct Held {
    rows: HashMap<(Table, i64, Vec<u8>), HeldRow>,
    /// Tables cleared before every row write held for them.
    cleared: HashSet<(Table, i64)>,
    /// Per index value written (table, session, column 0 or 1, value): the key of the row
    /// that wrote it last.
    holders: HashMap<(Table, i64, usize, Vec<u8>), Vec<u8>>,
    /// Per session: the last `updated_at` written.
    touched: HashMap<i64, i64>,
    /// The next row's place (see [`HeldRow::order`]).
    next: u64,
    /// About how many bytes the held values take (keys, values, index values, overhead).
    bytes: usize,
}

struct HeldRow {
    value: Vec<u8>,
    idx: [Option<Vec<u8>>; 2],
    /// A [`Store::put_last`] wrote it: it takes a new `seq` when sent.
    moved: bool,
    /// Its place among the held rows (see [`Held`]).
    order: u64,
}

/// A held row's share of [`Held::bytes`] (its statement's fixed text is about this much).
const ROW_OVERHEAD: usize = 160;

fn row_bytes(key: &[u8], r: &HeldRow) -> usize {
    ROW_OVERHEAD + key.len() + r.value.len() + r.idx.iter().flatten().map(Vec::len).sum::<usize>()
}

impl Held {
    /// Nothing held.
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.cleared.is_empty()
            && self.holders.is_empty()
            && self.touched.is_empty()
    }

    /// About how many bytes are held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many rows are held (tests).
    #[cfg(test)]
    pub(super) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// What the held writes make of a row: `Some(None)`: deleted (its table was cleared);
    /// `None`: not decided by them (the server's row, if any, is current).
    pub(super) fn lookup(&self, table: Table, session: i64, key: &[u8]) -> Option<Option<&[u8]>> {
        // A lookup by borrowed key would need the tuple borrowed; keys are short.
        if let Some(r) = self.rows.get(&(table, session, key.to_vec())) {
            return Some(Some(&r.value));
        }
        self.cleared.contains(&(table, session)).then_some(None)
    }

    fn set_row(&mut self, table: Table, session: i64, key: &[u8], new: HeldRow, keep_place: bool) {
        let id = (table, session, key.to_vec());
        let mut new = new;
        if let Some(old) = self.rows.get(&id) {
            self.bytes -= row_bytes(key, old);
            if keep_place {
                new.order = old.order;
                new.moved = old.moved;
            }
        }
        self.bytes += row_bytes(key, &new);
        self.rows.insert(id, new);
    }

    fn take_place(&mut self) -> u64 {
        let o = self.next;
        self.next += 1;
        o
    }

    /// [`Store::put`]: the row's value and index values; its place stays where it was.
    pub(super) fn put(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
        value: &[u8],
        idx: [Option<&[u8]>; 2],
    ) {
        for (col, v) in idx.iter().enumerate() {
            if let Some(v) = v {
                self.set_holder(table, session, col, v.to_vec(), key.to_vec());
            }
        }
        let order = self.take_place();
        let row = HeldRow {
            value: value.to_vec(),
            idx: idx.map(|v| v.map(<[u8]>::to_vec)),
            moved: false,
            order,
        };
        self.set_row(table, session, key, row, true);
    }

    /// [`Store::put_last`]: the row's value, no index values, and the newest place.
    pub(super) fn put_last(&mut self, table: Table, session: i64, key: &[u8], value: &[u8]) {
        let order = self.take_place();
        let row = HeldRow {
            value: value.to_vec(),
            idx: [None, None],
            moved: true,
            order,
        };
        self.set_row(table, session, key, row, false);
    }

    fn set_holder(&mut self, table: Table, session: i64, col: usize, value: Vec<u8>, key: Vec<u8>) {
        let (vlen, klen) = (value.len(), key.len());
        if let Some(old) = self.holders.insert((table, session, col, value), key) {
            self.bytes -= ROW_OVERHEAD + vlen + old.len();
        }
        self.bytes += ROW_OVERHEAD + vlen + klen;
    }

    /// [`Store::clear`]: every row of the table gone, held ones included.
    pub(super) fn clear(&mut self, table: Table, session: i64) {
        let mut freed = 0;
        self.rows.retain(|(t, s, k), r| {
            let keep = (*t, *s) != (table, session);
            if !keep {
                freed += row_bytes(k, r);
            }
            keep
        });
        self.holders.retain(|(t, s, _, v), k| {
            let keep = (*t, *s) != (table, session);
            if !keep {
                freed += ROW_OVERHEAD + v.len() + k.len();
            }
            keep
        });
        self.bytes -= freed;
        if self.cleared.insert((table, session)) {
            self.bytes += ROW_OVERHEAD;
        }
    }

    /// [`Store::touch_session`].
    pub(super) fn touch(&mut self, session: i64, now: i64) {
        if self.touched.insert(session, now).is_none() {
            self.bytes += ROW_OVERHEAD;
        }
    }

    /// Adds the writes of `later` (made after every write held here), as if they had been
    /// made one by one.
    pub(super) fn absorb(&mut self, later: Held) {
        for (table, session) in later.cleared {
            self.clear(table, session);
        }
        for ((table, session, col, value), key) in later.holders {
            self.set_holder(table, session, col, value, key);
        }
        let base = self.next;
        for ((table, session, key), mut row) in later.rows {
            row.order += base;
            // Rewritten in place (`put`) keeps the place it had here; `put_last` moves it.
            let keep_place = !row.moved;
            self.set_row(table, session, &key, row, keep_place);
        }
        self.next += later.next;
        for (session, now) in later.touched {
            self.touch(session, now);
        }
    }

    /// Tells the row cache what sending these writes will leave: the clears, then each
    /// row's last value.
    pub(super) fn tell(&self, mut to: super::cache::Sending<'_>) {
        for (table, session) in &self.cleared {
            to.clear(*table, *session);
        }
        for ((table, session, key), r) in &self.rows {
            to.row(*table, *session, key, &r.value);
        }
    }

    /// Appends the statements that leave the held rows as the writes did, each ended by `;`.
    pub(super) fn render(&self, sql: &mut String) {
        use std::fmt::Write as _;
        for (table, session) in &self.cleared {
            let _ = write!(
                sql,
                "DELETE FROM {} WHERE session = {session};",
                table.name()
            );
        }
        for ((table, session, col, value), key) in &self.holders {
            let (t, c) = (table.name(), ["i1", "i2"][*col]);
            let _ = write!(
                sql,
                "UPDATE {t} SET {c} = NULL WHERE session = {session} AND {c} = {} AND k <> {};",
                Hex(value),
                Hex(key)
            );
        }
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_unstable_by_key(|(_, r)| r.order);
        // One multi-row `INSERT` per run of rows of one table that are moved (or not) alike:
        // the server parses and plans it once, not once per row. Rows are taken in order and
        // each key appears once, so every row gets its `seq` in the same order as one
        // statement per row would give it.
        let mut run: Option<(Table, bool)> = None;
        for ((table, session, key), r) in rows {
            // An index value is the row's only if no later write of another row took it.
            let idx: [Option<&[u8]>; 2] = std::array::from_fn(|col| {
                r.idx[col].as_deref().filter(|v| {
                    self.holders
                        .get(&(*table, *session, col, v.to_vec()))
                        .is_some_and(|holder| holder == key)
                })
            });
            if run == Some((*table, r.moved)) {
                sql.push(',');
            } else {
                if let Some((_, moved)) = run {
                    end_upsert(sql, moved);
                }
                run = Some((*table, r.moved));
                let _ = write!(
                    sql,
                    "INSERT INTO {} (session, k, v, i1, i2) VALUES ",
                    table.name()
                );
            }
            let _ = write!(
                sql,
                "({session}, {}, {}, {}, {})",
                Hex(key),
                Hex(&r.value),
                OptHex(idx[0]),
                OptHex(idx[1]),
            );
        }
        if let Some((_, moved)) = run {
            end_upsert(sql, moved);
        }
        for (session, now) in &self.touched {
            let _ = write!(
                sql,
                "UPDATE sessions SET updated_at = {now} WHERE id = {session};"
            );
        }
    }
}

/// Ends a multi-row `INSERT` of held rows: each row replaces the one of its key, and a row
/// `put_last` wrote takes a new `seq` (moves to the end of the table's order).
fn end_upsert(sql: &mut String, moved: bool) {
    sql.push_str(
        " ON CONFLICT (session, k) DO UPDATE \
         SET v = excluded.v, i1 = excluded.i1, i2 = excluded.i2",
    );
    if moved {
        sql.push_str(", seq = nextval('row_seq')");
    }
    sql.push(';');
}

/// Bytes as a PostgreSQL `bytea` literal (`'\x…'::bytea`; with `standard_conforming_strings`,
/// on since PostgreSQL 9.1 and set by [`PostgresStore::connect`], the backslash is literal).
pub(super) struct Hex<'a>(pub(super) &'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(2 * self.0.len() + 12);
        s.push_str("'\\x");
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s.push_str("'::bytea");
        f.write_str(&s)
    }
}

/// An optional `bytea` literal: [`Hex`] or `NULL`.
pub(super) struct OptHex<'a>(pub(super) Option<&'a [u8]>);

impl std::fmt::Display for OptHex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(b) => Hex(b).fmt(f),
            None => f.write_str("NULL"),
        }
    }
}

/// The store's side of the held writes: sending them, their fencing checks, their bounds, and
/// what they say of a row.
impl PostgresStore {
    /// Whether writes are deferred now: inside a savepoint (the worker's operations). Outside
    /// one (opening, migrating, engine tests without a worker) every write is sent at once.
    pub(super) fn deferring(&self) -> bool {
        self.in_savepoint
    }

    /// Sends the held writes: the transaction's, then, inside the open savepoint (the
    /// `SAVEPOINT` itself included), the operation's, after the fencing checks they need, in
    /// one round trip; the savepoint stays open. Called before any statement other than a
    /// point read, so the server sees the rows the engine's writes leave. An error is the
    /// operation's: the engine fails it and the worker rolls back to the savepoint (if the
    /// transaction's part failed, that fails too and the transaction is lost).
    pub(super) fn sync(&mut self) -> Result<()> {
        // Refused before the held writes are taken (they would be lost with the refusal).
        super::conn::refuse_inline()?;
        let op_pending =
            self.in_savepoint && !(self.deferred.sent && self.deferred.writes.is_empty());
        if !op_pending && self.held.is_empty() {
            return Ok(());
        }
        if op_pending {
            self.fence_deferred()?;
        }
        let mut sql = String::new();
        let held = std::mem::take(&mut self.held);
        held.render(&mut sql);
        if op_pending {
            if !self.deferred.sent {
                sql.push_str("SAVEPOINT op;");
            }
            std::mem::take(&mut self.deferred.writes).render(&mut sql);
            // Sent (or lost with the connection) from here on: a failure rolls back to it.
            self.deferred.sent = true;
        }
        self.client()?.batch_execute(&sql).map_err(pg_error)?;
        // Only what reached the transaction may reach the row cache at its commit (written
        // but not told, a key is dropped from the cache then instead).
        held.tell(self.cache.sending());
        Ok(())
    }

    /// The fencing checks of the sessions the deferred writes touch.
    pub(super) fn fence_deferred(&mut self) -> Result<()> {
        while let Some(&session) = self.deferred.to_fence.last() {
            self.fence(session)?;
            self.deferred.to_fence.pop();
        }
        Ok(())
    }

    /// Notes a row write of `session` deferred in the open savepoint (its fencing check is
    /// then due, see [`Deferred`]).
    pub(super) fn deferred_write(&mut self, session: i64) {
        if !self.fenced.contains(&session)
            && !self.fenced_in_savepoint.contains(&session)
            && !self.deferred.to_fence.contains(&session)
        {
            self.deferred.to_fence.push(session);
        }
    }

    /// Past [`DEFERRED_MAX`] bytes of the operation's held writes, sends them (a session
    /// import, say, is not held whole).
    pub(super) fn bound_held(&mut self) -> Result<()> {
        if self.deferred.writes.bytes() >= DEFERRED_MAX {
            self.sync()?;
        }
        Ok(())
    }

    /// What the held writes (the open operation's, then the transaction's) make of a row;
    /// `None`: not decided by them.
    pub(super) fn held_row(
        &self,
        table: Table,
        session: i64,
        key: &[u8],
    ) -> Option<Option<Vec<u8>>> {
        let op = self
            .in_savepoint
            .then(|| self.deferred.writes.lookup(table, session, key))
            .flatten();
        op.or_else(|| self.held.lookup(table, session, key))
            .map(|v| v.map(<[u8]>::to_vec))
    }

    /// Forgets the lease checks of the transaction that ended (its row locks are gone).
    pub(super) fn end_txn(&mut self) {
        self.in_txn = false;
        self.in_savepoint = false;
        self.fenced.clear();
        self.fenced_in_savepoint.clear();
        self.admin_pass.clear();
        self.deferred = Deferred::default();
        self.held = Held::default();
    }

    /// The open savepoint ended with its writes kept: its lease checks hold for the
    /// transaction.
    pub(super) fn end_savepoint(&mut self) {
        self.in_savepoint = false;
        self.admin_pass.clear();
        self.deferred = Deferred::default();
        let checked = std::mem::take(&mut self.fenced_in_savepoint);
        self.fenced.extend(checked);
    }
}
