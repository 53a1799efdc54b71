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

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::crypto::{KdfParams, Keyslot, VAULT_ID_LEN};
use super::error::{EngineError, Result};
use super::store::{Header, Index, IndexedRow, Row, SessionRow, Store, Table, audit_seq};

/// `PRAGMA application_id` of a Session Vault database ("SVLT").
pub const APPLICATION_ID: i32 = 0x5356_4c54;

/// The schema, one entry per version; `MIGRATIONS[n]` takes a database from version `n` to
/// `n + 1`. Append only: a released step is never edited.
pub const MIGRATIONS: &[&str] = &[
    // 1: header, keyslots, sessions and the first per-session tables.
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
     CREATE TABLE keyslots (
         slot INTEGER PRIMARY KEY, kind TEXT NOT NULL,
         m_cost INTEGER NOT NULL, t_cost INTEGER NOT NULL, p_cost INTEGER NOT NULL,
         salt BLOB NOT NULL, wrapped BLOB NOT NULL, check_sum BLOB NOT NULL);
     CREATE TABLE sessions (
         id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
         created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, record BLOB NOT NULL);
     CREATE TABLE dc_options (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE peers (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE state (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE channels (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));",
    // 2: Telethon's sent-file cache, and blind-index lookups of peers by username and phone.
    "CREATE TABLE sent_files (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE INDEX peers_username ON peers (session, i1) WHERE i1 IS NOT NULL;
     CREATE INDEX peers_phone ON peers (session, i2) WHERE i2 IS NOT NULL;",
    // 3: record format 2 (records carry the vault generation, plaintexts padded) and the
    // sealed manifest in `meta` (`engine::manifest`). No table changes: the version bump keeps
    // older builds, which cannot read format-2 records, from opening the vault at all
    // (`UnsupportedFormat`) instead of failing on every rewritten record as `Corrupt`.
    "",
    // 4: the audit log (`engine::audit`): one sealed entry per row, numbered from 1 without
    // gaps; its sealed head (last number and hash) is `meta.audit_head`.
    "CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

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
mod file;

use file::{check_whole_pages, nofollow, open_private};

pub use backup::{BackupProgress, check_vault_file};

/// A vault in one SQLite file.
pub struct SqliteStore {
    /// An online backup in progress (see [`backup`]); declared before `conn` so that it is
    /// finished before the connection it reads closes.
    backup: Option<backup::OnlineBackup>,
    /// The background checkpointer (`None` in memory); declared before `conn` so that its
    /// connection closes first and the storage connection, closing last, removes the WAL.
    checkpointer: Option<checkpoint::Checkpointer>,
    conn: Connection,
    path: PathBuf,
    /// An operation begun by [`Store::unguarded_op`] is open (no savepoint to release), with
    /// the connection's count of changed rows when it began.
    unguarded: Option<u64>,
}

impl SqliteStore {
    /// Clears the index values `idx` from every other row of the session: an index value
    /// names one row ([`Store::put`]).
    /// The rows `sql` (`SELECT rowid, k, v …`) selects, each with its position.
    fn positioned_rows(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(i64, Row)>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get(0)?,
                Row {
                    key: r.get(1)?,
                    value: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The rows `sql` (`SELECT k, v, <index 1>, <index 2> … WHERE session = ?1`) selects,
    /// each with what it says of the two index columns.
    fn scan_with_indexes<T: rusqlite::types::FromSql>(
        &mut self,
        sql: &str,
        session: i64,
    ) -> Result<Vec<(Row, [T; 2])>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([session], |r| {
            Ok((
                Row {
                    key: r.get(0)?,
                    value: r.get(1)?,
                },
                [r.get(2)?, r.get(3)?],
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn take_index_values(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        if let Some(i1) = idx[0] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i1 = NULL WHERE session = ?1 AND i1 = ?2 AND k <> ?3"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![session, i1, key])?;
        }
        if let Some(i2) = idx[1] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i2 = NULL WHERE session = ?1 AND i2 = ?2 AND k <> ?3"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![session, i2, key])?;
        }
        Ok(())
    }

    /// Opens (creating if missing, mode 0600) the vault file at `path`, checks that it is a
    /// Session Vault database, and migrates it to [`SCHEMA_VERSION`]. A file that is not a
    /// vault, or is newer than this build, is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at_version(path, SCHEMA_VERSION)
    }

    /// [`SqliteStore::open`], migrating only up to `target` (tests build old versions with it).
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, target: u32) -> Result<Self> {
        let mut file = open_private(path)?;
        let not_a_vault = |reason: String| EngineError::NotAVault {
            path: path.to_owned(),
            reason,
        };
        check_whole_pages(&mut file).map_err(not_a_vault)?;
        // SQLite opens by path: with NOFOLLOW it refuses a link anywhere on the path, so it
        // opens the file checked above unless a directory on the way was renamed meanwhile.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| match e.sqlite_error().map(|e| e.extended_code) {
            Some(rusqlite::ffi::SQLITE_CANTOPEN_SYMLINK) => EngineError::Storage {
                kind: super::error::StorageErrorKind::Io,
                message: format!(
                    "{} or a directory above it is a symbolic link; vaultd opens its vault \
                     only by a path without links",
                    path.display()
                ),
            },
            _ => e.into(),
        })?;
        drop(file);
        // The first read tells a damaged or foreign file apart before anything is written.
        let (app_id, version, tables): (i32, u32, i64) = conn
            .query_row(
                "SELECT (SELECT application_id FROM pragma_application_id),
                        (SELECT user_version FROM pragma_user_version),
                        (SELECT count(*) FROM sqlite_master)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    not_a_vault(e.to_string())
                }
                _ => e.into(),
            })?;
        if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
            return Err(not_a_vault(format!(
                "application id {app_id:#x} is not Session Vault's"
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(EngineError::UnsupportedFormat {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -65536;
             PRAGMA foreign_keys = OFF;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = SqliteStore {
            backup: None,
            checkpointer: None,
            unguarded: None,
            conn,
            path: path.to_owned(),
        };
        store.migrate(version, target)?;
        store.checkpointer = Some(checkpoint::Checkpointer::start(path)?);
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Applies every migration from `from` to `target`, each in its own transaction together
    /// with the version bump, so a crash leaves the file at one numbered version or the next.
    fn migrate(&mut self, from: u32, target: u32) -> Result<()> {
        for v in from..target {
            let tx = self.conn.transaction()?;
            tx.execute_batch(MIGRATIONS[v as usize])?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
                v + 1
            ))?;
            tx.commit()?;
            tracing::info!(path = %self.path.display(), version = v + 1, "vault schema migrated");
        }
        Ok(())
    }

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

    fn set_data_key_id(&mut self, _id: Option<[u8; 16]>) {}

    fn replace_data_key_id(&mut self, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }

    fn begin_snapshot(&mut self) -> Result<()> {
        // The storage thread is the only writer: any transaction is a snapshot.
        self.begin()
    }

    fn release_op(&mut self) -> Result<Result<()>> {
        if self.unguarded.take().is_some() {
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
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
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
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        self.conn.execute_batch("SAVEPOINT op")?;
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE op")?;
        Ok(())
    }

    fn unguarded_op(&mut self) -> Result<bool> {
        self.unguarded = Some(self.conn.total_changes());
        Ok(true)
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
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

    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = per_table!(table, "SELECT v FROM ", " WHERE session = ?1 AND k = ?2");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params![session, key], |r| r.get(0))
            .optional()?)
    }

    fn put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session, k) DO UPDATE SET v = excluded.v, i1 = excluded.i1, i2 = excluded.i2"
        );
        self.take_index_values(table, session, &row.key, idx)?;
        self.conn
            .prepare_cached(sql)?
            .execute(params![session, row.key, row.value, idx[0], idx[1]])?;
        Ok(())
    }

    fn insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // The insert's own uniqueness check is the one index seek a new row costs; only a
        // row that was there is read.
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session, k) DO NOTHING"
        );
        let mut out = Vec::with_capacity(rows.len());
        for (row, idx) in rows {
            let inserted = self
                .conn
                .prepare_cached(sql)?
                .execute(params![session, row.key, row.value, idx[0], idx[1]])?;
            if inserted == 0 {
                out.push(self.get(table, session, &row.key)?);
                continue;
            }
            self.take_index_values(table, session, &row.key, *idx)?;
            out.push(None);
        }
        Ok(out)
    }

    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        // REPLACE deletes the old row and inserts a new one with a larger rowid: the row moves
        // to the end of the table's order, as grammers' MemorySession moves a channel.
        let sql = per_table!(
            table,
            "INSERT OR REPLACE INTO ",
            " (session, k, v) VALUES (?1, ?2, ?3)"
        );
        self.conn
            .prepare_cached(sql)?
            .execute(params![session, row.key, row.value])?;
        Ok(())
    }

    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        let sql = per_table!(
            table,
            "SELECT k, v FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([session], |r| {
            Ok(Row {
                key: r.get(0)?,
                value: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A walk down the rowid B-tree from the cursor: each page costs its own rows (and the
        // rows of other sessions interleaved with them), never a sort of the session. The
        // unary `+` keeps the planner off the `(session, k)` index, through which it would
        // read every row of the session and sort them, per page (a warm start of 100k peers
        // took 2.7 s so, 0.40-0.50 s without: the restarted-bot benchmark).
        let sql = per_table!(
            table,
            "SELECT rowid, k, v FROM ",
            " WHERE +session = ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3"
        );
        self.positioned_rows(
            sql,
            params![session, before.unwrap_or(i64::MAX), i64::from(limit)],
        )
    }

    fn scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A range of the `(session, k)` index; every key is above the empty blob.
        let sql = per_table!(
            table,
            "SELECT rowid, k, v FROM ",
            " WHERE session = ?1 AND k > ?2 ORDER BY k LIMIT ?3"
        );
        self.positioned_rows(
            sql,
            params![session, after.unwrap_or(&[]), i64::from(limit)],
        )
    }

    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1 IS NOT NULL, i2 IS NOT NULL FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        self.scan_with_indexes(sql, session)
    }

    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1, i2 FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        self.scan_with_indexes(sql, session)
    }

    fn clear(&mut self, table: Table, session: i64) -> Result<()> {
        let sql = per_table!(table, "DELETE FROM ", " WHERE session = ?1");
        self.conn.prepare_cached(sql)?.execute([session])?;
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
                " WHERE session = ?1 AND i1 = ?2"
            ),
            Index::Phone => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = ?1 AND i2 = ?2"
            ),
        };
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params![session, value], |r| {
                Ok(Row {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .optional()?)
    }

    fn count(&mut self, table: Table, session: i64) -> Result<u64> {
        let sql = per_table!(table, "SELECT count(*) FROM ", " WHERE session = ?1");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([session], |r| r.get::<_, i64>(0))? as u64)
    }
}
