//! The PostgreSQL backend of [`Store`]: several hosts' `vaultd` sharing one vault.
//!
//! PostgreSQL is untrusted storage: it holds exactly the rows SQLite holds — sealed records,
//! blind indexes, and the plaintext DESIGN.md allows (format version, vault id, keyslot KDF
//! parameters and salts, session names, timestamps) — with the same shapes, so every record's
//! AAD (vault id ‖ table ‖ session id ‖ row key ‖ format version) is the same in both stores
//! and a vault can be copied between them row by row. No key ever reaches the database.
//!
//! **Why the blocking `postgres` client, not `tokio-postgres` with a pool.** The [`Store`]
//! trait is synchronous and has exactly one caller at a time: the storage thread
//! ([`super::worker`]) or an inline reader holding the worker's mutex. Group commit needs one
//! connection (the open transaction *is* the group), so a pool would hold one connection
//! anyway and add an async/sync bridge on every row. The `postgres` crate is tokio-postgres
//! driven by a private current-thread runtime on the calling thread: the same protocol code,
//! no bridge, no runtime worker ever blocked by a query. Pooling would only pay off with
//! several storage threads, which the engine does not have. What pipelining would save on
//! the write path is had instead by holding row writes on the client (`Deferred`, `Held`):
//! an operation's, then, once it ended, the transaction's, one version per row, sent with
//! `COMMIT` as one multi-statement query (or before a statement they could change). A row
//! rewritten by many operations of one group commit reaches PostgreSQL once, which also
//! spares the server a chain of row versions it cannot prune before the commit.
//!
//! Schema: [`MIGRATIONS`], numbered, each run in its own transaction under an advisory lock
//! (two daemons starting at once migrate once). Row order: SQLite orders a session's rows by
//! `rowid`; here a `seq` column drawn from one sequence does the same, and
//! [`Store::put_last`] draws a new one (the row moves to the end).
//!
//! Durability: the session runs with `synchronous_commit = on` whatever the server's
//! default, so a commit returns once PostgreSQL flushed its WAL (and, with synchronous
//! replication configured, once a standby has it): durable-class writes keep their meaning.
//!
//! Connection loss (PostgreSQL restarted, failed over, network cut): the operation fails with
//! a `storage` error of kind `i/o`; the open transaction is gone with the connection, which
//! the worker treats as a failed commit (durable writers get the error, acknowledged
//! cache-class writes are re-applied). The next operation outside a transaction reconnects,
//! so the daemon recovers without a restart.
//!
//! Several daemons on one database: the manifest (`engine::manifest`) is written
//! compare-and-set against the version this store last read, so a daemon that has not seen
//! another's change to sessions, names, ACLs or keyslots gets a conflict ([`is_conflict`])
//! instead of dropping that change (the vault retries it a bounded number of times after
//! re-reading). The manifest is also the vault-wide version each daemon polls
//! ([`Store::manifest_changed`], driven by the server's `coherence`) to re-read its session
//! index, ACLs and keyslots. Audit appends are serialized by an advisory lock held until
//! commit ([`Store::lock_audit`]). Leases with fencing tokens live in [`lease`], taken by
//! the server's `host_leases`.
//!
//! Reads: the lease holder keeps the committed rows of its leased sessions and their peer
//! keys (`cache.rs`), so a point read or a new peer's write of such a session costs no round
//! trip; what another daemon wrote while this one did not hold the lease is never answered
//! from it (the lease row's `cache_owner`, kept by a trigger, says).
//!
//! Errors: only PostgreSQL's SQLSTATE and primary message are kept (never `DETAIL`, which
//! may quote key values); the connection string is shown without its password.
//!
//! Secure deletion: PostgreSQL has no `secure_delete`. [`Store::checkpoint`] (after keyslot
//! changes) rewrites the keyslot and meta tables (`VACUUM FULL`), so a replaced keyslot does
//! not stay in a live table file; PostgreSQL's WAL, archives and replicas keep old versions
//! until they are recycled, as they keep every row. A replaced keyslot is sealed under the old
//! passphrase: whoever holds both an old WAL segment and the old passphrase holds the DEK,
//! which is why a suspected passphrase leak calls for `rekey` (a new DEK), not just a change.

use std::collections::HashMap;

use postgres::{Client, Statement};

use super::crypto::Keyslot;
use super::error::Result;
use super::store::{Header, Index, IndexedRow, Row, SessionRow, Store, Table};

mod cache;
mod conn;
mod deferred;
mod errors;
#[cfg(test)]
pub(crate) mod hosts_tests;
pub mod idle;
pub mod lease;
#[cfg(test)]
mod plan_tests;
mod rows;
mod schema;
mod target;
#[cfg(test)]
pub mod test_cluster;

use deferred::{Deferred, Held, Hex};
pub use errors::is_conflict;
pub use idle::IdleTimeout;
pub use lease::{Acquired, Holder};
pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use target::{PASSWORD_CREDENTIAL, PgTarget, is_postgres_url};

/// About how many bytes of row writes the store holds before sending them (see [`Held`]):
/// an import or a long group commit is not held whole.
const DEFERRED_MAX: usize = 1 << 20;

/// About how many bytes of the ended operations' row writes the transaction holds before
/// sending them (see [`Held`]). Lower than [`DEFERRED_MAX`]: the operation that crosses it
/// (or the commit) pays for sending them all, which shows in the tail latency of a stream of
/// large writes; rewrites of one row do not grow it.
const HELD_MAX: usize = 128 << 10;

/// The advisory lock key that serializes audit appends between daemons ("SVLA").
const AUDIT_LOCK: i64 = 0x5356_4c41;

/// The advisory lock (key) between `rekey` and the other daemons' transactions: each
/// transaction of a daemon holding keys takes it shared at `BEGIN` and checks the data key's id
/// (see [`DATA_KEY_ID`]); `rekey` takes it exclusive before it re-seals anything.
const DATA_KEY_LOCK: i64 = 0x5356_444b;

/// The `meta` row naming the data key the vault's rows are sealed under: an HMAC of a constant
/// under the key's index subkey (`Keys::data_key_id`), written by `rekey`. Absent until the
/// first `rekey` of a vault.
const DATA_KEY_ID: &str = "data_key_id";

/// The SQLSTATE a transaction's check raises when the vault was rekeyed by another daemon
/// after this one read its keys.
const REKEYED_ELSEWHERE: &str = "SV001";

/// The statements that open a transaction of a store whose engine holds the data key `id`
/// (`None`: locked, it seals nothing). Holding keys, a transaction may seal rows: under the
/// data key the vault's rows are sealed under, and no other. The shared lock makes a `rekey`
/// elsewhere wait for this transaction (and then re-seal what it wrote), or this `BEGIN` wait
/// for the `rekey`; the check, run after the lock is granted, then sees the new key's id and
/// refuses: rows sealed under the old key would be unreadable to every daemon.
fn begin_sql(id: Option<&[u8; 16]>) -> String {
    const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    let Some(id) = id else {
        return BEGIN.to_owned();
    };
    format!(
        "{BEGIN}; SELECT pg_advisory_xact_lock_shared({DATA_KEY_LOCK}); \
         DO $$BEGIN IF EXISTS (SELECT 1 FROM meta WHERE k = '{DATA_KEY_ID}' AND v <> {}) \
         THEN RAISE EXCEPTION USING ERRCODE = '{REKEYED_ELSEWHERE}', MESSAGE = \
         'the vault was rekeyed by another vaultd: the key this one holds is out of date \
         (it locks itself at its next check; unlock it with the current passphrase)'; \
         END IF; END$$",
        Hex(id)
    )
}

/// Picks the SQL text for a table: `per_table!(t, "SELECT .. FROM ", " WHERE ..")`.
macro_rules! per_table {
    ($table:expr, $head:literal, $tail:literal) => {
        match $table {
            Table::DcOptions => concat!($head, "dc_options", $tail),
            Table::Peers => concat!($head, "peers", $tail),
            Table::State => concat!($head, "state", $tail),
            Table::Channels => concat!($head, "channels", $tail),
            Table::SentFiles => concat!($head, "sent_files", $tail),
        }
    };
}

pub mod migrate;

mod data;
pub(crate) mod sessions;
mod txn;
mod vault_rows;

/// A vault in one PostgreSQL database.
pub struct PostgresStore {
    target: PgTarget,
    /// `None` after the connection was found dead outside a transaction, until reconnected.
    client: Option<Client>,
    /// Prepared statements of the current connection, by their SQL text.
    statements: HashMap<&'static str, Statement>,
    /// A transaction is open on the server (its loss with the connection is an error).
    in_txn: bool,
    /// Leases this store holds: session id → fencing token (see [`lease`]).
    leases: HashMap<i64, i64>,
    /// Sessions whose lease this store held and lost (lapsed, or taken over): their writes
    /// are refused until the lease is taken again or given back ([`lease`]).
    lost: std::collections::HashSet<i64>,
    /// Sessions whose lease row this transaction has checked and locked.
    fenced: std::collections::HashSet<i64>,
    /// Sessions an admin act of the open operation writes, unfenced ([`Store::lock_session`]).
    admin_pass: Vec<i64>,
    /// The same, checked inside the open savepoint (its locks go if it is rolled back).
    fenced_in_savepoint: Vec<i64>,
    /// A savepoint is open (as the engine sees it: it may not have been sent yet).
    in_savepoint: bool,
    /// Writes deferred inside the open savepoint, see [`Deferred`].
    deferred: Deferred,
    /// The row writes of the transaction's ended operations, not sent yet (see [`Held`]).
    held: Held,
    /// The last commit failed and none succeeded since: each operation's writes are sent at
    /// its end instead of held, so that one the server refuses fails alone (the worker
    /// re-applies the acknowledged writes one by one after a failed commit and drops those
    /// that fail; held, a write the server always refuses would fail every commit).
    send_each: bool,
    /// The sealed manifest as this store last read or wrote it (see `put_manifest`), and as
    /// it was when the transaction and the savepoint began (restored when they roll back).
    manifest_seen: Option<Vec<u8>>,
    manifest_at_begin: Option<Vec<u8>>,
    manifest_at_savepoint: Option<Vec<u8>>,
    /// What `BEGIN` sends: with the data key's id the engine holds, its check against the
    /// vault's ([`begin_sql`], [`Store::set_data_key_id`]).
    begin_sql: String,
    /// The `idle_in_transaction_session_timeout` of the current connection ([`idle`]).
    idle_in_force: Option<idle::InForce>,
    /// The rows of the sessions this daemon holds the lease of ([`cache`]).
    cache: cache::RowCache,
    /// This daemon's instance id, once a lease was taken: set on each connection as
    /// `session_vault.instance`, so that its own writes leave its leases' `cache_owner`.
    instance: Option<String>,
    /// The data key's id the engine holds, as last told ([`Store::set_data_key_id`]).
    data_key_id: Option<[u8; 16]>,
    /// Point reads sent to the server (`get`, `get_many`; tests of the cache count them).
    point_reads: u64,
}

impl Store for PostgresStore {
    // Each method forwards to the inherent `do_` method of its concern's file.

    // The vault's own rows (header, keyslots, manifest, data key, audit log) and the locks
    // between daemons: `vault_rows.rs`.
    fn header(&mut self) -> Result<Option<Header>> {
        self.do_header()
    }

    fn put_header(&mut self, header: &Header) -> Result<()> {
        self.do_put_header(header)
    }

    fn keyslots(&mut self) -> Result<Vec<Keyslot>> {
        self.do_keyslots()
    }

    fn put_keyslot(&mut self, s: &Keyslot) -> Result<()> {
        self.do_put_keyslot(s)
    }

    fn delete_keyslots(&mut self) -> Result<()> {
        self.do_delete_keyslots()
    }

    fn delete_keyslot(&mut self, slot: u32) -> Result<()> {
        self.do_delete_keyslot(slot)
    }

    fn manifest(&mut self) -> Result<Option<Vec<u8>>> {
        self.do_manifest()
    }

    fn put_manifest(&mut self, sealed: &[u8]) -> Result<()> {
        self.do_put_manifest(sealed)
    }

    fn manifest_changed(&mut self) -> Result<bool> {
        self.do_manifest_changed()
    }

    fn lock_session(&mut self, id: i64, admin: bool) -> Result<()> {
        self.do_lock_session(id, admin)
    }

    fn set_data_key_id(&mut self, id: Option<[u8; 16]>) {
        // Told after every change of the engine's keys and after every re-read of its state
        // (a failed write): what was cached is kept while the key stays the same.
        if id != self.data_key_id {
            self.cache.drop_all();
            self.data_key_id = id;
        }
        self.do_set_data_key_id(id)
    }

    fn replace_data_key_id(&mut self, id: &[u8; 16]) -> Result<()> {
        self.cache.drop_all();
        self.do_replace_data_key_id(id)
    }

    fn lock_audit(&mut self) -> Result<bool> {
        self.do_lock_audit()
    }

    fn try_lock_audit(&mut self) -> Result<Option<bool>> {
        self.do_try_lock_audit()
    }

    fn put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()> {
        self.do_put_audit(seq, sealed)
    }

    fn audit_range(&mut self, from_seq: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>> {
        self.do_audit_range(from_seq, limit)
    }

    fn audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        self.do_audit_last()
    }

    fn audit_head(&mut self) -> Result<Option<Vec<u8>>> {
        self.do_audit_head()
    }

    fn put_audit_head(&mut self, sealed: &[u8]) -> Result<()> {
        self.do_put_audit_head(sealed)
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.do_checkpoint()
    }

    // Transactions and savepoints: `txn.rs`.
    fn begin(&mut self) -> Result<()> {
        self.do_begin()
    }

    fn commit(&mut self) -> Result<()> {
        self.do_commit()
    }

    fn begin_snapshot(&mut self) -> Result<()> {
        self.do_begin_snapshot()
    }

    fn rollback(&mut self) -> Result<()> {
        self.do_rollback()
    }

    fn savepoint(&mut self) -> Result<()> {
        self.do_savepoint()
    }

    fn release(&mut self) -> Result<()> {
        self.do_release()
    }

    fn release_op(&mut self) -> Result<Result<()>> {
        self.do_release_op()
    }

    fn unguarded_op(&mut self) -> Result<bool> {
        self.do_unguarded_op()
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.do_rollback_to_savepoint()
    }

    // The sessions table: `sessions.rs`.
    fn sessions(&mut self) -> Result<Vec<SessionRow>> {
        self.do_sessions()
    }

    fn session(&mut self, id: i64) -> Result<Option<SessionRow>> {
        self.do_session(id)
    }

    fn insert_session(&mut self, name: &str, now: i64) -> Result<i64> {
        self.do_insert_session(name, now)
    }

    fn put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()> {
        self.do_put_session_record(id, record, now)
    }

    fn touch_session(&mut self, id: i64, now: i64) -> Result<()> {
        self.do_touch_session(id, now)
    }

    fn rename_session(&mut self, id: i64, name: &str) -> Result<()> {
        self.do_rename_session(id, name)
    }

    fn delete_session(&mut self, id: i64) -> Result<()> {
        self.cache.drop_session(id);
        self.do_delete_session(id)
    }

    // Each session's data rows: `data.rs`.
    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.do_get(table, session, key)
    }

    fn get_many(
        &mut self,
        table: Table,
        session: i64,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.do_get_many(table, session, keys)
    }

    fn put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        self.cache.wrote(table, session, &row.key);
        self.do_put(table, session, row, idx)
    }

    fn insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.do_insert_absent(table, session, rows)
    }

    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        self.cache.wrote(table, session, &row.key);
        self.do_put_last(table, session, row)
    }

    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        self.do_scan(table, session)
    }

    fn scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        self.do_scan_page(table, session, before, limit)
    }

    fn scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        self.do_scan_keys_after(table, session, after, limit)
    }

    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>> {
        self.do_scan_indexed(table, session)
    }

    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        self.do_scan_all(table, session)
    }

    fn clear(&mut self, table: Table, session: i64) -> Result<()> {
        self.cache.cleared(table, session);
        self.do_clear(table, session)
    }

    fn find(
        &mut self,
        table: Table,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>> {
        self.do_find(table, session, index, value)
    }

    fn count(&mut self, table: Table, session: i64) -> Result<u64> {
        self.do_count(table, session)
    }

    // Whole tables only: a write here goes through the deferred writes and the session's
    // lease checks, which a partial delete would have to join; `Vault` does not slice on
    // PostgreSQL (each daemon's storage thread waits on the server, not the CPU).
    fn clear_some(&mut self, _table: Table, _session: i64, _limit: u32) -> Result<u64> {
        Ok(0)
    }

    fn clears_in_slices(&mut self) -> bool {
        false
    }

    fn count_up_to(&mut self, table: Table, session: i64, limit: u32) -> Result<u64> {
        Ok(self.do_count(table, session)?.min(u64::from(limit)))
    }

    fn prepare_peers(&mut self, session: i64) -> Result<()> {
        self.do_prepare_peers(session)
    }
}
