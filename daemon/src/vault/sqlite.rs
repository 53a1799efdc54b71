//! The embedded SQLite backend of [`Store`]: schema, numbered migrations and pragmas.
//!
//! One connection, owned by the storage thread. WAL journal, `synchronous=FULL` (a commit
//! returns once the WAL is fsynced), `secure_delete=ON` (freed pages are zeroed so that old
//! ciphertext does not linger). A second `vaultd` on the same data directory is kept out by
//! the directory's `flock` (`server::datadir`); the file itself is opened in SQLite's normal
//! locking mode, so that a second connection of this process, the checkpointer
//! (`sqlite::checkpoint`), can copy the WAL into the database file off the commit path
//! (`wal_autocheckpoint=0` on the storage connection). The file is created
//! mode 0600 and never reached through a symbolic link (`O_NOFOLLOW` on our own opens,
//! `SQLITE_OPEN_NOFOLLOW` on SQLite's); SQLite gives its `-wal` file the same mode.
//! `temp_store=MEMORY` keeps savepoint and sort spills (copies of database pages) off the disk
//! and out of the hot path; a 64 MiB page cache keeps lookups in large vaults from going to
//! `pread`.

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};

use super::crypto::{KdfParams, Keyslot, VAULT_ID_LEN};
use super::error::{EngineError, Result};
use super::store::{Header, Index, IndexedRow, Row, SessionRow, Store, Table, audit_seq};

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

mod backup;
mod checkpoint;
mod data;
mod file;
mod key_builds;
mod open;
mod peer_hash;
mod peer_keys;
mod peers;
mod schema;

use file::{check_whole_pages, nofollow, open_private};

pub use backup::{BackupProgress, check_vault_file};
pub use key_builds::{BUILD_ROUNDS, KeyBuilds};
/// Session `session`'s range of peer rowids (tests).
#[cfg(test)]
pub use peer_keys::range as peer_rowids;
pub use schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// A vault in one SQLite file.
pub struct SqliteStore {
    /// An online backup in progress (see [`backup`]); declared before `conn` so that it is
    /// finished before the connection it reads closes.
    backup: Option<backup::OnlineBackup>,
    /// The background checkpointer (`None` in memory); declared before `conn` so that its
    /// connection closes first and the storage connection, closing last, removes the WAL.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// The thread that reads large sessions' peer maps ([`key_builds`]), if started; declared
    /// before `conn` for the same reason.
    key_builder: Option<key_builds::KeyBuilder>,
    conn: Connection,
    path: PathBuf,
    /// An operation begun by [`Store::unguarded_op`] is open (no savepoint to release), with
    /// the connection's count of changed rows when it began.
    unguarded: Option<u64>,
    /// Where each peer row is, by key ([`peer_keys`]).
    peer_keys: peer_keys::PeerKeys,
    /// The file is below schema version 5 (opened so by tests, [`SqliteStore::open_at_version`]):
    /// its peers table is keyed by `UNIQUE (session, k)` and written like the other tables.
    keyed_peers: bool,
    /// Whole-table reads of a session ([`Store::scan`]) so far (tests).
    #[cfg(test)]
    pub whole_scans: u64,
    /// The connection's count of changed rows when the current operation began, and the most
    /// rows one operation (one job's write) changed (tests).
    #[cfg(test)]
    op_start: u64,
    #[cfg(test)]
    pub largest_op: u64,
}

impl SqliteStore {
    fn meta(&mut self, k: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k = ?1")?
            .query_row([k], |r| r.get(0))
            .optional()?)
    }
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        record: r.get(4)?,
    })
}

impl Store for SqliteStore {
    // One daemon owns the file (its data directory's lock): nothing changes behind its back,
    // so the coordination between daemons sharing a store is a no-op here.
    fn manifest_changed(&mut self) -> Result<bool> {
        Ok(false)
    }

    fn lock_session(&mut self, _id: i64, _admin: bool) -> Result<()> {
        Ok(())
    }

    fn lock_audit(&mut self) -> Result<bool> {
        Ok(false)
    }

    fn try_lock_audit(&mut self) -> Result<Option<bool>> {
        Ok(Some(false))
    }

    fn set_data_key_id(&mut self, id: Option<[u8; 16]>) {
        // Locked: the peer maps are read again once unlocked.
        if id.is_none() {
            self.peer_keys.clear();
        }
    }

    fn replace_data_key_id(&mut self, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }

    fn begin_snapshot(&mut self) -> Result<()> {
        // The storage thread is the only writer: any transaction is a snapshot.
        self.begin()
    }

    fn release_op(&mut self) -> Result<Result<()>> {
        self.op_ended_stats();
        if self.unguarded.take().is_some() {
            self.peer_keys.op_ended();
            return Ok(Ok(()));
        }
        self.release().map(Ok)
    }

    fn header(&mut self) -> Result<Option<Header>> {
        let Some(id) = self.meta("vault_id")? else {
            return Ok(None);
        };
        let vault_id: [u8; VAULT_ID_LEN] =
            id.as_slice()
                .try_into()
                .map_err(|_| EngineError::NotAVault {
                    path: self.path.clone(),
                    reason: "vault id has the wrong length".into(),
                })?;
        let created = self.meta("created_at")?.unwrap_or_default();
        let created_at = i64::from_be_bytes(created.try_into().unwrap_or([0; 8]));
        Ok(Some(Header {
            vault_id,
            created_at,
        }))
    }

    fn put_header(&mut self, header: &Header) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?;
        stmt.execute(params!["vault_id", &header.vault_id[..]])?;
        stmt.execute(params!["created_at", &header.created_at.to_be_bytes()[..]])?;
        Ok(())
    }

    fn keyslots(&mut self) -> Result<Vec<Keyslot>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum
             FROM keyslots ORDER BY slot",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Keyslot {
                slot: r.get(0)?,
                kind: r.get(1)?,
                kdf: KdfParams {
                    m_cost_kib: r.get(2)?,
                    t_cost: r.get(3)?,
                    p_cost: r.get(4)?,
                },
                salt: r.get(5)?,
                wrapped: r.get(6)?,
                check: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn put_keyslot(&mut self, s: &Keyslot) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO keyslots
                 (slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                s.slot,
                s.kind,
                s.kdf.m_cost_kib,
                s.kdf.t_cost,
                s.kdf.p_cost,
                s.salt,
                s.wrapped,
                s.check
            ])?;
        Ok(())
    }

    fn delete_keyslots(&mut self) -> Result<()> {
        self.conn.execute("DELETE FROM keyslots", [])?;
        Ok(())
    }

    fn delete_keyslot(&mut self, slot: u32) -> Result<()> {
        self.conn
            .execute("DELETE FROM keyslots WHERE slot = ?1", params![slot])?;
        Ok(())
    }

    fn manifest(&mut self) -> Result<Option<Vec<u8>>> {
        self.meta("manifest")
    }

    fn put_manifest(&mut self, sealed: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES ('manifest', ?1)")?
            .execute([sealed])?;
        Ok(())
    }

    fn put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO audit (seq, entry) VALUES (?1, ?2)")?
            .execute(params![audit_seq(seq)?, sealed])?;
        Ok(())
    }

    fn audit_range(&mut self, from_seq: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, entry FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![audit_seq(from_seq)?, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?))
        })?;
        rows.map(|r| {
            let (seq, entry) = r?;
            Ok((seq.max(0) as u64, entry))
        })
        .collect()
    }

    fn audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)))
            .optional()?)
    }

    fn audit_head(&mut self) -> Result<Option<Vec<u8>>> {
        self.meta("audit_head")
    }

    fn put_audit_head(&mut self, sealed: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES ('audit_head', ?1)")?
            .execute([sealed])?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        // TRUNCATE: copy every committed frame into the database file (where secure_delete
        // has zeroed what they replace), then cut the WAL to zero bytes.
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::warn!(path = %self.path.display(), "vault WAL checkpoint could not complete");
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.peer_keys.committed();
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        match self.peer_keys.builds().map(KeyBuilds::committed) {
            Some(n) => self.peer_keys.committed_as(n),
            None => self.peer_keys.committed(),
        }
        if let Some(c) = &self.checkpointer {
            if c.take_overdue() {
                // The background checkpoints fell behind a long write stream: copy the
                // (short) rest here, so that the WAL restarts at the next write.
                let _: i64 = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))?;
            }
            c.nudge();
        }
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        self.unguarded = None;
        // Forgotten first: whatever the rollback's outcome, the maps are read again.
        self.peer_keys.rolled_back();
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        self.conn.execute_batch("SAVEPOINT op")?;
        self.peer_keys.op_ended();
        self.op_began_stats();
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE op")?;
        self.peer_keys.op_ended();
        Ok(())
    }

    fn unguarded_op(&mut self) -> Result<bool> {
        self.unguarded = Some(self.conn.total_changes());
        self.peer_keys.op_ended();
        self.op_began_stats();
        Ok(true)
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        // Forgotten first, whatever the outcome (a failure leads to a rollback of the whole
        // transaction, which forgets the rest).
        self.peer_keys.op_rolled_back();
        if let Some(at) = self.unguarded.take() {
            // Nothing to undo if the operation changed no row and the transaction is still
            // open (SQLite rolls a whole transaction back itself on some I/O errors); a
            // statement that failed undid its own partial changes. Otherwise only a rollback
            // of the transaction undoes it.
            if !self.conn.is_autocommit() && self.conn.total_changes() == at {
                return Ok(());
            }
            return Err(EngineError::Invalid(
                "an operation begun without a savepoint wrote before it failed".into(),
            ));
        }
        self.conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
        Ok(())
    }

    fn sessions(&mut self) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, created_at, updated_at, record FROM sessions ORDER BY name",
        )?;
        let rows = stmt.query_map([], session_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn session(&mut self, id: i64) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, name, created_at, updated_at, record FROM sessions WHERE id = ?1",
            )?
            .query_row([id], session_row)
            .optional()?)
    }

    fn insert_session(&mut self, name: &str, now: i64) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (name, created_at, updated_at, record) VALUES (?1, ?2, ?2, x'')",
            )?
            .execute(params![name, now])?;
        Ok(self.conn.last_insert_rowid())
    }

    fn put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET record = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, record, now])?;
        Ok(())
    }

    fn touch_session(&mut self, id: i64, now: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET updated_at = ?2 WHERE id = ?1")?
            .execute(params![id, now])?;
        Ok(())
    }

    fn rename_session(&mut self, id: i64, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET name = ?2 WHERE id = ?1")?
            .execute(params![id, name])?;
        Ok(())
    }

    fn delete_session(&mut self, id: i64) -> Result<()> {
        for table in Table::ALL {
            self.clear(table, id)?;
        }
        self.conn
            .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    // Each session's data rows: forwarded to `do_x` in `data.rs`.
    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_get(session, key),
            _ => self.do_get(table, session, key),
        }
    }

    fn put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_put(session, row, idx),
            _ => self.do_put(table, session, row, idx),
        }
    }

    fn insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_insert_absent(session, rows),
            _ => self.do_insert_absent(table, session, rows),
        }
    }

    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_put_last(session, row),
            _ => self.do_put_last(table, session, row),
        }
    }

    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        #[cfg(test)]
        {
            self.whole_scans += 1;
        }
        match table {
            Table::Peers if !self.keyed_peers => self.peers_scan(session),
            _ => self.do_scan(table, session),
        }
    }

    fn scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_scan_page(session, before, limit),
            _ => self.do_scan_page(table, session, before, limit),
        }
    }

    fn scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_scan_keys_after(session, after, limit),
            _ => self.do_scan_keys_after(table, session, after, limit),
        }
    }

    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_scan_indexed(session),
            _ => self.do_scan_indexed(table, session),
        }
    }

    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_scan_all(session),
            _ => self.do_scan_all(table, session),
        }
    }

    fn clear(&mut self, table: Table, session: i64) -> Result<()> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_clear(session),
            _ => self.do_clear(table, session),
        }
    }

    fn find(
        &mut self,
        table: Table,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_find(session, index, value),
            _ => self.do_find(table, session, index, value),
        }
    }

    fn count(&mut self, table: Table, session: i64) -> Result<u64> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_count(session),
            _ => self.do_count(table, session),
        }
    }

    fn clear_some(&mut self, table: Table, session: i64, limit: u32) -> Result<u64> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_clear_some(session, limit),
            _ => self.do_clear_some(table, session, limit),
        }
    }

    fn clears_in_slices(&mut self) -> bool {
        true
    }

    fn count_up_to(&mut self, table: Table, session: i64, limit: u32) -> Result<u64> {
        match table {
            Table::Peers if !self.keyed_peers => self.peers_count_up_to(session, limit),
            _ => self.do_count_up_to(table, session, limit),
        }
    }

    fn prepare_peers(&mut self, session: i64) -> Result<()> {
        if self.keyed_peers {
            return Ok(());
        }
        self.peers_prepare(session)
    }
}
