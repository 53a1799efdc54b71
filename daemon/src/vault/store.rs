//! The storage trait: what the engine needs from a database, in terms of encrypted rows.
//!
//! Everything passed through this trait is already sealed or blinded by the engine, except
//! what DESIGN.md allows in plaintext (format version, vault id, keyslot KDF parameters and
//! salts, session names, timestamps). A backend therefore never sees a secret, and a server
//! database (PostgreSQL) can hold the same rows by implementing this trait; the crypto and
//! the daemon stay untouched. [`super::sqlite::SqliteStore`] is the embedded default.
//!
//! Transactions: the engine calls [`Store::begin`] once, applies many operations each inside
//! a savepoint, and [`Store::commit`]s them together (group commit). A commit returns only
//! once the transaction is durable.

use super::crypto::Keyslot;
use super::error::{EngineError, Result};

/// The per-session tables of encrypted rows. Every one has the same shape:
/// `(session, key, value, index1, index2)`, unique on `(session, key)`, kept in insertion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per DC option, keyed by the blinded DC id.
    DcOptions,
    /// One row per cached peer, keyed by the blinded peer identity; index1 is the blinded
    /// username, index2 the blinded phone.
    Peers,
    /// Per-session singletons (update state), keyed by a fixed label.
    State,
    /// Per-channel update state, keyed by the blinded channel id; row order is write order.
    Channels,
    /// Telethon's sent-file cache, keyed by the blinded (md5, size, type).
    SentFiles,
}

impl Table {
    /// All tables, for deletes that must touch every one.
    pub const ALL: [Table; 5] = [
        Table::DcOptions,
        Table::Peers,
        Table::State,
        Table::Channels,
        Table::SentFiles,
    ];

    /// The table's name, in SQL and in record AADs.
    pub fn name(self) -> &'static str {
        match self {
            Table::DcOptions => "dc_options",
            Table::Peers => "peers",
            Table::State => "state",
            Table::Channels => "channels",
            Table::SentFiles => "sent_files",
        }
    }
}

/// A blinded secondary index column of [`Table::Peers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    /// Blinded lower-case username.
    Username,
    /// Blinded normalized phone.
    Phone,
}

/// One encrypted row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Blinded key.
    pub key: Vec<u8>,
    /// Sealed record.
    pub value: Vec<u8>,
}

/// A row with its two blinded index values (`None`: unset), oldest first in a scan.
pub type IndexedRow = (Row, [Option<Vec<u8>>; 2]);

/// A session's plaintext bookkeeping and its sealed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Internal id, never reused (bound into every record's AAD).
    pub id: i64,
    /// Name (plaintext by design: it is how operators address sessions).
    pub name: String,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds of the last write.
    pub updated_at: i64,
    /// Sealed session record (home DC, self user, extras, ACL).
    pub record: Vec<u8>,
}

/// The plaintext header of a vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Random vault id, bound into every AAD.
    pub vault_id: [u8; super::crypto::VAULT_ID_LEN],
    /// Unix seconds of `init`.
    pub created_at: i64,
}

/// A database that holds a vault's encrypted rows.
///
/// No method has a default body: each store says what it does, and the daemon's
/// [`super::backend::Backend`] must forward every one (`backend.rs`'s `forward!`), which the
/// compiler then checks. A default body would be run for `Backend` whatever the store is,
/// had it been left out of the list (the data-key guard once did nothing that way).
pub trait Store: Send {
    /// The header, or `None` while the vault is uninitialized.
    fn header(&mut self) -> Result<Option<Header>>;
    /// Writes the header (once, at `init`).
    fn put_header(&mut self, header: &Header) -> Result<()>;
    /// All keyslots, by slot number.
    fn keyslots(&mut self) -> Result<Vec<Keyslot>>;
    /// Inserts or replaces a keyslot.
    fn put_keyslot(&mut self, slot: &Keyslot) -> Result<()>;
    /// Deletes every keyslot (`rekey`, which then writes the one new slot).
    fn delete_keyslots(&mut self) -> Result<()>;
    /// Deletes one keyslot (removing the recovery key).
    fn delete_keyslot(&mut self, slot: u32) -> Result<()>;
    /// The sealed manifest (`engine::manifest`), if written.
    fn manifest(&mut self) -> Result<Option<Vec<u8>>>;
    /// Writes the sealed manifest.
    fn put_manifest(&mut self, sealed: &[u8]) -> Result<()>;
    /// Whether the stored manifest differs from the one this store last read or wrote:
    /// another daemon sharing the database changed sessions, names, ACLs or keyslots (the
    /// manifest is re-sealed in the same transaction as each such change, so it serves as
    /// the vault-wide version). A store only this daemon writes (SQLite) never changes
    /// behind its back: `false`, without touching the database.
    fn manifest_changed(&mut self) -> Result<bool>;
    /// Locks session `id`'s row until the transaction ends, before its sealed record is
    /// read to be changed and written back, so that two daemons sharing the database cannot
    /// both change it from the same old version (one's change would be lost, or an ACL change
    /// undone). `admin`: the change is an admin act (an ACL change), which may be made while
    /// another daemon holds the session's lease: it touches only the record, serialized by
    /// this lock with the holder's own record writes. No-op on a store only this daemon
    /// writes.
    fn lock_session(&mut self, id: i64, admin: bool) -> Result<()>;
    /// Serializes audit appends between the daemons sharing the database until the open
    /// transaction ends; `true` when other daemons may have appended since this one last
    /// read the log, so the caller re-reads its head first. No-op (`false`) on a store only
    /// this daemon writes.
    fn lock_audit(&mut self) -> Result<bool>;
    /// [`Store::lock_audit`] only if the lock is free now: `None` if another daemon holds it
    /// (its open transaction appended an entry), without waiting.
    fn try_lock_audit(&mut self) -> Result<Option<bool>>;
    /// Tells the store the id of the data key the engine now holds (`None`: it holds none),
    /// so that a store other daemons share refuses transactions of this one once another
    /// re-keyed the vault (their rows would be sealed under a key no daemon holds any more).
    /// No-op on a store only this daemon writes.
    fn set_data_key_id(&mut self, id: Option<[u8; 16]>);
    /// `rekey`, at the start of its transaction: waits until no other daemon's transaction is
    /// open, keeps new ones from starting until this one ends, and records `id` as the data
    /// key's id from its commit on. No-op on a store only this daemon writes.
    fn replace_data_key_id(&mut self, id: &[u8; 16]) -> Result<()>;
    /// Stores audit entry `seq` (sealed by the engine, `engine::audit`), replacing any entry
    /// of that number (the engine appends; `rekey` re-seals in place).
    fn put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()>;
    /// Up to `limit` audit entries numbered `from_seq` or above, by ascending number.
    fn audit_range(&mut self, from_seq: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The highest-numbered audit entry, if any.
    fn audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>>;
    /// The audit log's sealed head (its last number and hash), if written.
    fn audit_head(&mut self) -> Result<Option<Vec<u8>>>;
    /// Writes the audit log's sealed head.
    fn put_audit_head(&mut self, sealed: &[u8]) -> Result<()>;
    /// Moves committed writes into the main database file and empties any write-ahead log, so
    /// that the versions they replaced (an old keyslot above all) do not linger in the log.
    /// Called with no transaction open.
    fn checkpoint(&mut self) -> Result<()>;

    /// Opens the write transaction that a group of operations shares.
    fn begin(&mut self) -> Result<()>;
    /// Opens a transaction that only reads, every read of which sees the store as it was at
    /// one moment, even while other daemons sharing it write (a copy of the whole vault);
    /// ended with [`Store::rollback`]. On a store only this daemon writes, [`Store::begin`].
    fn begin_snapshot(&mut self) -> Result<()>;
    /// Commits it; returns once it is durable.
    fn commit(&mut self) -> Result<()>;
    /// Abandons it.
    fn rollback(&mut self) -> Result<()>;
    /// Marks a point inside the transaction to roll one operation back to.
    fn savepoint(&mut self) -> Result<()>;
    /// Keeps what was done since the savepoint.
    fn release(&mut self) -> Result<()>;
    /// Undoes what was done since the savepoint.
    fn rollback_to_savepoint(&mut self) -> Result<()>;
    /// Starts an operation *without* a savepoint where that saves work (SQLite: the copy of
    /// every page the operation first touches into the savepoint's journal, about a fifth of
    /// a peer fill's CPU), and says so: `true` means that if the operation fails, only
    /// [`Store::rollback`] of the whole transaction undoes it; it still ends with
    /// [`Store::release_op`] when it succeeds, and when it fails
    /// [`Store::rollback_to_savepoint`] succeeds only if it changed nothing (nothing to undo).
    /// `false`: the store began an ordinary operation ([`Store::savepoint`]) instead, and every
    /// rule of one applies.
    fn unguarded_op(&mut self) -> Result<bool>;
    /// [`Store::release`] for a store that may defer an operation's writes until its end
    /// (PostgreSQL checks their fencing then, and holds them until the commit). `Ok(Ok(()))`: kept. `Ok(Err(e))`: the
    /// deferred writes failed (a stale fencing token, a constraint); the store rolled back to
    /// the savepoint itself and the transaction goes on without the operation, whose error
    /// `e` is. `Err(e)`: the savepoint could not end and the transaction is lost.
    fn release_op(&mut self) -> Result<Result<()>>;

    /// All sessions.
    fn sessions(&mut self) -> Result<Vec<SessionRow>>;
    /// One session by id.
    fn session(&mut self, id: i64) -> Result<Option<SessionRow>>;
    /// Creates a session row with an empty record and returns its new id.
    fn insert_session(&mut self, name: &str, now: i64) -> Result<i64>;
    /// Replaces a session's sealed record.
    fn put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()>;
    /// Bumps a session's `updated_at`.
    fn touch_session(&mut self, id: i64, now: i64) -> Result<()>;
    /// Renames a session.
    fn rename_session(&mut self, id: i64, name: &str) -> Result<()>;
    /// Deletes a session and every row of it in every table.
    fn delete_session(&mut self, id: i64) -> Result<()>;

    /// One row by key.
    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Several rows by key, in the order of `keys` (a key given twice is answered twice).
    fn get_many(
        &mut self,
        table: Table,
        session: i64,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(table, session, k)).collect()
    }
    /// Inserts or updates a row in place, with its index values. An index value names one
    /// row per session: the row written takes it from any other row that had it (a username
    /// that moved to another peer resolves to its new holder).
    fn put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        indexes: [Option<&[u8]>; 2],
    ) -> Result<()>;
    /// Inserts each row whose key the session does not hold yet, with its index values as
    /// [`Store::put`] would, and leaves each row that exists untouched; answers, in the order
    /// of `rows`, `None` for a row inserted and the stored value for one that was there. No
    /// key may be given twice. For writes of mostly new rows (a peer fill), where a read
    /// before each write costs a second index seek.
    fn insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>>;
    /// Inserts a row as the newest one of the table (replacing any row with its key).
    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()>;
    /// Every row of a session in a table, oldest first.
    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>>;
    /// A page of a session's rows in a table, newest first: up to `limit` rows whose position
    /// is below `before` (all when `None`), each with its position, the cursor of the next
    /// page. The position is the row's place in the table's order (SQLite's rowid,
    /// PostgreSQL's `seq`): an update in place keeps it, so for peers it is the order of first
    /// insertion. Rows written between two pages land above the cursor and are not returned.
    fn scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>>;
    /// A page of a session's rows in a table in key order: up to `limit` rows whose key is
    /// above `after` (all when `None`), each with its position ([`Store::scan_page`]'s). No
    /// write moves a row in this order (a rewrite keeps its key), so pages read by separate
    /// jobs never skip a row that was there throughout.
    fn scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>>;
    /// [`Store::scan`] with, for each row, whether its two index columns are set (`rekey`
    /// re-blinds exactly the index values that exist).
    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>>;
    /// [`Store::scan`] with each row's two index values, as stored: what a copy of the vault
    /// into another store (`migrate_store`) writes and then compares.
    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>>;
    /// Deletes every row of a session in a table.
    fn clear(&mut self, table: Table, session: i64) -> Result<()>;
    /// Deletes up to `limit` rows of a session in a table, so that a large session is
    /// cleared in bounded jobs before a whole-table write (`Vault::clear_in_slices`); how
    /// many it deleted. A store that clears only whole tables deletes none.
    fn clear_some(&mut self, table: Table, session: i64, limit: u32) -> Result<u64>;
    /// [`Store::count`], but counting at most `limit` (its cost grows with that, not with
    /// the table).
    fn count_up_to(&mut self, table: Table, session: i64, limit: u32) -> Result<u64>;
    /// Whether [`Store::clear_some`] deletes anything here (whole-table writes are then
    /// preceded by deletes in slices).
    fn clears_in_slices(&mut self) -> bool;
    /// The row whose index column matches `value`, if any.
    fn find(
        &mut self,
        table: Table,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>>;
    /// Number of rows of a session in a table.
    fn count(&mut self, table: Table, session: i64) -> Result<u64>;
    /// Makes the coming look-ups of a session's peers cheap, where a store has something to
    /// prepare for them (SQLite: reads the session's map of peer keys, `sqlite::peer_keys`,
    /// here on the storage thread, when the session is opened, rather than at a first look-up
    /// that may run on a runtime thread). No-op elsewhere.
    fn prepare_peers(&mut self, session: i64) -> Result<()>;
}

/// An audit entry number as the databases store it (a signed 64-bit integer).
pub fn audit_seq(seq: u64) -> Result<i64> {
    i64::try_from(seq)
        .map_err(|_| EngineError::Invalid(format!("audit entry {seq} is out of range")))
}
