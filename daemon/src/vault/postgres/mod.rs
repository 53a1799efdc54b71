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

use super::crypto::{KdfParams, Keyslot, VAULT_ID_LEN};
use super::error::{EngineError, Result, StorageErrorKind};
use super::store::{Header, Index, IndexedRow, Row, SessionRow, Store, Table, audit_seq};

mod conn;
mod deferred;
mod errors;
#[cfg(test)]
mod hosts_tests;
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
use errors::{CONFLICT_MESSAGE, pg_error};
pub use idle::IdleTimeout;
pub use lease::{Acquired, Holder};
use rows::{audit_row, data_row, positioned_row, session_row, u32_col};
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
}

impl Store for PostgresStore {
    fn header(&mut self) -> Result<Option<Header>> {
        let Some(id) = self.meta("vault_id")? else {
            return Ok(None);
        };
        let vault_id: [u8; VAULT_ID_LEN] = id
            .as_slice()
            .try_into()
            .map_err(|_| self.not_a_vault("vault id has the wrong length".into()))?;
        let created = self.meta("created_at")?.unwrap_or_default();
        let created_at = i64::from_be_bytes(created.try_into().unwrap_or([0; 8]));
        Ok(Some(Header {
            vault_id,
            created_at,
        }))
    }

    fn put_header(&mut self, header: &Header) -> Result<()> {
        self.put_meta("vault_id", &header.vault_id)?;
        self.put_meta("created_at", &header.created_at.to_be_bytes())
    }

    fn keyslots(&mut self) -> Result<Vec<Keyslot>> {
        let rows = self.query(
            "SELECT slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum
             FROM keyslots ORDER BY slot",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Keyslot {
                    slot: u32_col(r, 0)?,
                    kind: r.get(1),
                    kdf: KdfParams {
                        m_cost_kib: u32_col(r, 2)?,
                        t_cost: u32_col(r, 3)?,
                        p_cost: u32_col(r, 4)?,
                    },
                    salt: r.get(5),
                    wrapped: r.get(6),
                    check: r.get(7),
                })
            })
            .collect()
    }

    fn put_keyslot(&mut self, s: &Keyslot) -> Result<()> {
        self.exec(
            "INSERT INTO keyslots (slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (slot) DO UPDATE SET kind = excluded.kind, m_cost = excluded.m_cost,
                 t_cost = excluded.t_cost, p_cost = excluded.p_cost, salt = excluded.salt,
                 wrapped = excluded.wrapped, check_sum = excluded.check_sum",
            &[
                &i64::from(s.slot),
                &s.kind,
                &i64::from(s.kdf.m_cost_kib),
                &i64::from(s.kdf.t_cost),
                &i64::from(s.kdf.p_cost),
                &s.salt,
                &s.wrapped,
                &s.check,
            ],
        )?;
        Ok(())
    }

    fn delete_keyslots(&mut self) -> Result<()> {
        self.exec("DELETE FROM keyslots", &[])?;
        Ok(())
    }

    fn delete_keyslot(&mut self, slot: u32) -> Result<()> {
        self.exec("DELETE FROM keyslots WHERE slot = $1", &[&i64::from(slot)])?;
        Ok(())
    }

    fn manifest(&mut self) -> Result<Option<Vec<u8>>> {
        let m = self.meta("manifest")?;
        self.manifest_seen = m.clone();
        Ok(m)
    }

    fn put_manifest(&mut self, sealed: &[u8]) -> Result<()> {
        // Compare-and-set against the manifest this store last read or wrote: two daemons
        // must not overwrite each other's manifest (each would drop the other's sessions from
        // it, which every later unlock reports as `Corrupt`). The loser gets a clear error
        // and re-reads the vault at its next unlock.
        let n = match &self.manifest_seen {
            Some(seen) => {
                let seen = seen.clone();
                self.exec(
                    "UPDATE meta SET v = $2 WHERE k = 'manifest' AND v = $1",
                    &[&seen, &sealed],
                )?
            }
            None => self.exec(
                "INSERT INTO meta (k, v) VALUES ('manifest', $1) ON CONFLICT (k) DO NOTHING",
                &[&sealed],
            )?,
        };
        if n == 0 {
            return Err(EngineError::Storage {
                kind: StorageErrorKind::Busy,
                message: CONFLICT_MESSAGE.into(),
            });
        }
        self.manifest_seen = Some(sealed.to_vec());
        Ok(())
    }

    fn manifest_changed(&mut self) -> Result<bool> {
        let stored = self.meta("manifest")?;
        Ok(stored != self.manifest_seen)
    }

    fn lock_session(&mut self, id: i64, admin: bool) -> Result<()> {
        self.exec("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", &[&id])?;
        if admin {
            // The fence is passed for this operation's writes of the session (see the trait),
            // not for the rest of the transaction: another handle's write of the session in
            // the same group commit is checked as ever.
            self.admin_pass.push(id);
        }
        Ok(())
    }

    fn set_data_key_id(&mut self, id: Option<[u8; 16]>) {
        self.begin_sql = begin_sql(id.as_ref());
    }

    fn replace_data_key_id(&mut self, id: &[u8; 16]) -> Result<()> {
        // Waits for the other daemons' open transactions (which hold the lock shared since
        // their `BEGIN`) and keeps new ones waiting until this one ends; this store's own
        // shared hold does not conflict with itself.
        self.exec("SELECT pg_advisory_xact_lock($1)", &[&DATA_KEY_LOCK])?;
        self.exec(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&DATA_KEY_ID, &&id[..]],
        )?;
        Ok(())
    }

    fn lock_audit(&mut self) -> Result<bool> {
        // Held until the transaction ends, so two daemons' entries cannot both take the same
        // number or link to the same predecessor: the chain stays one.
        self.exec("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
        Ok(true)
    }

    fn try_lock_audit(&mut self) -> Result<Option<bool>> {
        let got = self
            .query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&AUDIT_LOCK])?
            .is_some_and(|r| r.get::<_, bool>(0));
        Ok(got.then_some(true))
    }

    fn put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO audit (seq, entry) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET entry = excluded.entry",
            &[&audit_seq(seq)?, &sealed],
        )?;
        Ok(())
    }

    fn audit_range(&mut self, from_seq: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = self.query(
            "SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&audit_seq(from_seq)?, &i64::from(limit)],
        )?;
        Ok(rows.iter().map(audit_row).collect())
    }

    fn audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .query_opt(
                "SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .as_ref()
            .map(audit_row))
    }

    fn audit_head(&mut self) -> Result<Option<Vec<u8>>> {
        self.meta("audit_head")
    }

    fn put_audit_head(&mut self, sealed: &[u8]) -> Result<()> {
        self.put_meta("audit_head", sealed)
    }

    fn checkpoint(&mut self) -> Result<()> {
        // Rewrites the two tables into new files (the old ones are unlinked), so a replaced
        // keyslot's bytes do not stay in a live table file. See the module doc for the WAL.
        self.batch("VACUUM FULL keyslots, meta")
    }

    fn begin(&mut self) -> Result<()> {
        let sql = std::mem::take(&mut self.begin_sql);
        let begun = self.batch(&sql);
        self.begin_sql = sql;
        if let Err(e) = begun {
            // The server's transaction (if `BEGIN` ran) is aborted: end it.
            if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
                let _ = c.batch_execute("ROLLBACK");
            }
            return Err(e);
        }
        self.in_txn = true;
        self.manifest_at_begin = self.manifest_seen.clone();
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        // The held writes and `COMMIT` in one round trip.
        let done = (|| {
            if self.in_savepoint {
                self.sync()?;
            }
            let mut sql = String::new();
            std::mem::take(&mut self.held).render(&mut sql);
            sql.push_str("COMMIT");
            self.client()?.batch_execute(&sql).map_err(pg_error)
        })();
        self.end_txn();
        self.send_each = done.is_err();
        if done.is_err() {
            // A held write failed before `COMMIT` ran: the server's transaction is still open
            // (aborted). End it, so the next `BEGIN` starts afresh.
            if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
                let _ = c.batch_execute("ROLLBACK");
            }
        }
        done
    }

    fn begin_snapshot(&mut self) -> Result<()> {
        // No data-key check: nothing is written, and a copy runs with the vault locked. Not
        // ended for sitting idle: the copy waits on its target between reads (see `idle`).
        self.batch(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {}",
            idle::NO_TIMEOUT_LOCAL
        ))?;
        self.in_txn = true;
        self.manifest_at_begin = self.manifest_seen.clone();
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        let was = self.in_txn;
        self.end_txn();
        if was {
            self.manifest_seen = self.manifest_at_begin.take();
        }
        match self.client.as_mut() {
            // A dead connection took its transaction with it: nothing to roll back.
            Some(c) if was && !c.is_closed() => c.batch_execute("ROLLBACK").map_err(pg_error),
            _ => Ok(()),
        }
    }

    fn savepoint(&mut self) -> Result<()> {
        // Not sent yet: `SAVEPOINT` goes with the operation's first statement that must be
        // inside it, or with its deferred writes at `release_op`; an operation that only
        // reads costs no savepoint round trip. The transaction's held writes stay held.
        if self.in_savepoint {
            self.sync()?;
        }
        self.in_savepoint = true;
        self.deferred = Deferred::default();
        self.manifest_at_savepoint = self.manifest_seen.clone();
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        match self.release_op()? {
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn release_op(&mut self) -> Result<Result<()>> {
        if !self.in_savepoint {
            return Ok(Ok(()));
        }
        if !self.deferred.sent && self.deferred.writes.is_empty() {
            // Nothing reached the server inside the savepoint: nothing to release.
            self.end_savepoint();
            return Ok(Ok(()));
        }
        // The fencing checks; then, if the savepoint reached the server, `RELEASE op`. The
        // operation's writes join the transaction's held writes (sent at `COMMIT`).
        if let Err(e) = self.fence_deferred() {
            self.rollback_to_savepoint()?;
            return Ok(Err(e));
        }
        if self.send_each && !self.deferred.writes.is_empty() {
            // Since a failed commit: `SAVEPOINT op; writes` now, `RELEASE op` below.
            if let Err(e) = self.sync() {
                self.rollback_to_savepoint()?;
                return Ok(Err(e));
            }
        }
        if self.deferred.sent {
            // A statement failed (a constraint, a conflict): the server stopped at it, the
            // transaction waits for `ROLLBACK TO op`, which keeps the other operations' writes.
            // If that fails too (the connection is gone), the transaction is lost.
            if let Err(e) = self.client()?.batch_execute("RELEASE op").map_err(pg_error) {
                self.rollback_to_savepoint()?;
                return Ok(Err(e));
            }
        }
        let writes = std::mem::take(&mut self.deferred.writes);
        self.held.absorb(writes);
        self.end_savepoint();
        if self.held.bytes() >= HELD_MAX {
            // Outside the savepoint now: an error here is the transaction's.
            self.sync()?;
        }
        Ok(Ok(()))
    }

    fn unguarded_op(&mut self) -> Result<bool> {
        // A savepoint costs nothing here until a statement must run inside it, and the
        // operation's writes are held on the client until it ends: keep the savepoint.
        self.savepoint().map(|()| false)
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        if !self.in_savepoint {
            // Already rolled back (by `release_op`, whose caller may roll back again).
            return Ok(());
        }
        // Row locks taken inside the savepoint are released with it: check again next time.
        self.in_savepoint = false;
        self.fenced_in_savepoint.clear();
        self.admin_pass.clear();
        self.manifest_seen = self.manifest_at_savepoint.take();
        let sent = std::mem::take(&mut self.deferred).sent;
        if !sent {
            // The server never saw the savepoint nor anything done inside it.
            return Ok(());
        }
        self.client()?
            .batch_execute("ROLLBACK TO op; RELEASE op")
            .map_err(pg_error)
    }

    fn sessions(&mut self) -> Result<Vec<SessionRow>> {
        let rows = self.query(
            "SELECT id, name, created_at, updated_at, record FROM sessions ORDER BY name COLLATE \"C\"",
            &[],
        )?;
        Ok(rows.iter().map(session_row).collect())
    }

    fn session(&mut self, id: i64) -> Result<Option<SessionRow>> {
        Ok(self
            .query_opt(
                "SELECT id, name, created_at, updated_at, record FROM sessions WHERE id = $1",
                &[&id],
            )?
            .as_ref()
            .map(session_row))
    }

    fn insert_session(&mut self, name: &str, now: i64) -> Result<i64> {
        let row = self.query_opt(
            "INSERT INTO sessions (name, created_at, updated_at, record)
             VALUES ($1, $2, $2, ''::bytea) RETURNING id",
            &[&name, &now],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| EngineError::Storage {
            kind: StorageErrorKind::Other,
            message: "PostgreSQL returned no id for a new session".into(),
        })
    }

    fn put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()> {
        self.fence(id)?;
        self.exec(
            "UPDATE sessions SET record = $2, updated_at = $3 WHERE id = $1",
            &[&id, &record, &now],
        )?;
        Ok(())
    }

    fn touch_session(&mut self, id: i64, now: i64) -> Result<()> {
        if self.deferring() {
            self.deferred_write(id);
            self.deferred.writes.touch(id, now);
            return self.bound_held();
        }
        self.fence(id)?;
        self.exec(
            "UPDATE sessions SET updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )?;
        Ok(())
    }

    fn rename_session(&mut self, id: i64, name: &str) -> Result<()> {
        self.fence(id)?;
        self.exec("UPDATE sessions SET name = $2 WHERE id = $1", &[&id, &name])?;
        Ok(())
    }

    fn delete_session(&mut self, id: i64) -> Result<()> {
        self.fence(id)?;
        // First, at once: deleting the lease row waits for every other daemon's open
        // transaction that wrote the session (each holds the row `FOR SHARE` from its fencing
        // check), so the clears below, each a statement of its own, see and remove what those
        // wrote; and every later write of the session, anywhere, is refused by its check.
        // (A write once slipped in after the clears and stayed as rows of a deleted session.)
        self.query_opt_now(
            "DELETE FROM leases WHERE session = $1 RETURNING session",
            &[&id],
        )?;
        for table in Table::ALL {
            self.clear(table, id)?;
        }
        self.exec("DELETE FROM sessions WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = per_table!(table, "SELECT v FROM ", " WHERE session = $1 AND k = $2");
        // A row's value changes only by a write of its key or a clear of its table, so the
        // held writes answer it, or cannot change the server's answer: they stay held.
        if let Some(v) = self.held_row(table, session, key) {
            return Ok(v);
        }
        Ok(self
            .query_opt_now(sql, &[&session, &key])?
            .map(|r| r.get(0)))
    }

    fn get_many(
        &mut self,
        table: Table,
        session: i64,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.len() < 2 {
            return keys.iter().map(|k| self.get(table, session, k)).collect();
        }
        // What the deferred writes decide (as in `get`), then the rest in one statement.
        let answers: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|k| self.held_row(table, session, k))
            .collect();
        let asked: Vec<&[u8]> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        if !asked.is_empty() {
            // One primary-key probe per key, whatever the statistics say. With
            // `k = ANY($2)`, the plan cached for this prepared statement while the table was
            // small (before PostgreSQL first analyzed it) scans the session's whole
            // `(session, seq)` index and filters on `k`, and stays cached until the table is
            // analyzed (autovacuum: a minute or more): 30–190 ms per call for a session that
            // grew to 100k peers meanwhile. A lateral subquery with `LIMIT 1` is not
            // flattened into a join, so each key is an equality on the whole primary key.
            let sql = per_table!(
                table,
                "SELECT p.k, p.v FROM unnest($2::bytea[]) AS u(k), LATERAL (SELECT k, v FROM ",
                " WHERE session = $1 AND k = u.k LIMIT 1) AS p"
            );
            // The held writes cannot change these rows (see `get`).
            let (client, stmt) = self.stmt(sql)?;
            let rows = client.query(&stmt, &[&session, &asked]).map_err(pg_error)?;
            found = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
        Ok(answers
            .into_iter()
            .zip(keys)
            .map(|(a, k)| a.unwrap_or_else(|| found.get(*k).cloned()))
            .collect())
    }

    fn put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred
                .writes
                .put(table, session, &row.key, &row.value, idx);
            return self.bound_held();
        }
        self.fence(session)?;
        if let Some(i1) = idx[0] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i1 = NULL WHERE session = $1 AND i1 = $2 AND k <> $3"
            );
            self.exec(sql, &[&session, &i1, &row.key])?;
        }
        if let Some(i2) = idx[1] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i2 = NULL WHERE session = $1 AND i2 = $2 AND k <> $3"
            );
            self.exec(sql, &[&session, &i2, &row.key])?;
        }
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session, k) DO UPDATE SET v = excluded.v, i1 = excluded.i1, i2 = excluded.i2"
        );
        self.exec(sql, &[&session, &row.key, &row.value, &idx[0], &idx[1]])?;
        Ok(())
    }

    fn insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // One read of every key (answered by the held writes where they decide it, else in
        // one round trip), then held inserts of the absent ones.
        let keys: Vec<&[u8]> = rows.iter().map(|(row, _)| &row.key[..]).collect();
        let stored = self.get_many(table, session, &keys)?;
        for ((row, indexes), value) in rows.iter().zip(&stored) {
            if value.is_none() {
                self.put(table, session, row, *indexes)?;
            }
        }
        Ok(stored)
    }

    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred
                .writes
                .put_last(table, session, &row.key, &row.value);
            return self.bound_held();
        }
        self.fence(session)?;
        // A new `seq` moves the row to the end of the table's order, as SQLite's REPLACE
        // (delete, insert with a new rowid) does; its index columns are cleared likewise.
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v) VALUES ($1, $2, $3)
             ON CONFLICT (session, k) DO UPDATE
             SET v = excluded.v, i1 = NULL, i2 = NULL, seq = nextval('row_seq')"
        );
        self.exec(sql, &[&session, &row.key, &row.value])?;
        Ok(())
    }

    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        let sql = per_table!(
            table,
            "SELECT k, v FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        Ok(self.query(sql, &[&session])?.iter().map(data_row).collect())
    }

    fn scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // `(session, seq)` is indexed on peers and channels (the tables paged): a page is an
        // index range; on the others PostgreSQL keeps the top `limit` of the session's rows.
        let sql = per_table!(
            table,
            "SELECT seq, k, v FROM ",
            " WHERE session = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let limit = i64::from(limit);
        let rows = self.query(sql, &[&session, &before.unwrap_or(i64::MAX), &limit])?;
        Ok(rows.iter().map(positioned_row).collect())
    }

    fn scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A range of the primary key `(session, k)`; every key is above the empty one.
        let sql = per_table!(
            table,
            "SELECT seq, k, v FROM ",
            " WHERE session = $1 AND k > $2 ORDER BY k LIMIT $3"
        );
        let after: &[u8] = after.unwrap_or(&[]);
        let rows = self.query(sql, &[&session, &after, &i64::from(limit)])?;
        Ok(rows.iter().map(positioned_row).collect())
    }

    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1 IS NOT NULL, i2 IS NOT NULL FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        self.scan_with_indexes(sql, session)
    }

    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1, i2 FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        self.scan_with_indexes(sql, session)
    }

    fn clear(&mut self, table: Table, session: i64) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred.writes.clear(table, session);
            return self.bound_held();
        }
        self.fence(session)?;
        let sql = per_table!(table, "DELETE FROM ", " WHERE session = $1");
        self.exec(sql, &[&session])?;
        Ok(())
    }

    fn find(
        &mut self,
        table: Table,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>> {
        let sql = match index {
            Index::Username => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = $1 AND i1 = $2"
            ),
            Index::Phone => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = $1 AND i2 = $2"
            ),
        };
        Ok(self
            .query_opt(sql, &[&session, &value])?
            .as_ref()
            .map(data_row))
    }

    fn count(&mut self, table: Table, session: i64) -> Result<u64> {
        let sql = per_table!(table, "SELECT count(*) FROM ", " WHERE session = $1");
        let n: i64 = self
            .query_opt(sql, &[&session])?
            .map(|r| r.get(0))
            .unwrap_or(0);
        Ok(n as u64)
    }
}
