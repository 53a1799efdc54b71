//! Writes held back within an operation's savepoint and sent as one query ([`Deferred`]),
//! and the `bytea` literals they are written with.

use std::collections::HashMap;

use super::super::store::Table;
#[cfg(doc)]
use super::{super::store::Store, PostgresStore};

/// The writes of the open savepoint not sent yet. The worker runs each operation in a
/// savepoint; a cache-class write is a few statements (an upsert per row, the session's
/// `updated_at`), and PostgreSQL is a round trip away, so sending each on its own made such a
/// write cost 5–8 round trips (`SAVEPOINT`, fencing check, each statement, `RELEASE`). The
/// row writes ([`Store::put`], [`Store::put_last`], [`Store::clear`],
/// [`Store::touch_session`]) are instead kept here as SQL text and sent together, with
/// `SAVEPOINT op` before them and `RELEASE op` after, as one simple-protocol query at
/// [`Store::release_op`]: one round trip for the whole operation, plus its reads.
///
/// - Order: any other statement sends the deferred writes first ([`PostgresStore::sync`]), so
///   the server executes everything in the engine's order. A point read ([`Store::get`]) is
///   answered from [`Deferred::rows`] when a deferred write decides it, and otherwise runs at
///   once (a row's value depends only on writes of its key and clears of its table).
/// - Fencing: a session's lease check (`FOR SHARE`, once per session and transaction) runs
///   just before the writes that need it are sent; if it refuses, nothing of the operation
///   reaches the server. A stale token is refused exactly as before, atomically with the write.
/// - Failure: a statement that fails stops the query; the store rolls back to the savepoint
///   (which undoes the statements before it) and [`Store::release_op`] returns the
///   operation's error with the transaction intact, so other operations' writes are kept.
/// - Values: only sealed records, blind indexes (both as hex: `'\x…'` literals need no
///   escaping) and integers are written into the SQL text; never a name or other string.
///   PostgreSQL logs the text of a statement that fails (`log_min_error_statement`): that
///   is ciphertext and blind indexes, which the database holds anyway.
#[derive(Default)]
pub(super) struct Deferred {
    /// The statements, each ended by `;`.
    pub(super) sql: String,
    /// `SAVEPOINT op` has been sent (with statements that had to run inside it).
    pub(super) sent: bool,
    /// Sessions whose fencing check the deferred writes still need.
    pub(super) to_fence: Vec<i64>,
    /// The value each deferred row write leaves (`None`: cleared).
    pub(super) rows: HashMap<(Table, i64, Vec<u8>), Option<Vec<u8>>>,
    /// Tables cleared by a deferred write, per session.
    pub(super) cleared: std::collections::HashSet<(Table, i64)>,
}

impl Deferred {
    /// Forgets what the rows will be once the server has them (reads go to it again).
    pub(super) fn forget_rows(&mut self) {
        self.rows.clear();
        self.cleared.clear();
    }
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
