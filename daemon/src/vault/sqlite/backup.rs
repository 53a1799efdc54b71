//! Online backup of the vault file, and the checks a file must pass before it may become the
//! vault (restore).
//!
//! The backup is SQLite's online backup API (`sqlite3_backup_*`) run on the storage thread's
//! own connection, a few hundred pages per step: the caller sends one step per storage-thread
//! job, with a pause between jobs, so that writers wait at most one step. The source stays
//! the storage connection (the only one that writes), and SQLite keeps the copy
//! consistent by itself: a page written through this connection after it was copied is copied
//! again, so the finished copy is the database as of the last step. (The checkpointer's
//! connection only copies committed WAL frames into the file; it changes no page's content.) A step must run with no
//! write transaction open (the storage thread's barrier jobs run so). The copy is the same
//! ciphertext as the vault: nothing is decrypted.
//!
//! `rusqlite::backup::Backup` borrows both connections for its lifetime, which cannot span
//! storage-thread jobs; so the handle is kept here, raw, inside the [`SqliteStore`] whose
//! connection it reads, declared before it, and finished when dropped.

use std::path::Path;
use std::ptr::NonNull;

use rusqlite::{Connection, OpenFlags, ffi};

use super::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, SqliteStore};
use crate::vault::error::{EngineError, Result, StorageErrorKind};

/// How far a backup got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupProgress {
    /// Pages still to copy.
    pub remaining: u64,
    /// Pages in the source database.
    pub total: u64,
    /// The copy is complete and its file closed.
    pub done: bool,
}

/// A running `sqlite3_backup` from the store's connection into `dest`.
pub(super) struct OnlineBackup {
    handle: NonNull<ffi::sqlite3_backup>,
    /// The destination; closed after the handle is finished (field drop follows `drop`).
    _dest: Connection,
}

// SAFETY: the handle is used only through `&mut SqliteStore` (on whichever thread holds the
// store, one at a time), and the bundled SQLite is built thread-safe (serialized), so moving
// it between threads with its connections is allowed.
unsafe impl Send for OnlineBackup {}

impl Drop for OnlineBackup {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `sqlite3_backup_init` and is finished exactly once, here,
        // while both connections are still open (the source outlives it: see `SqliteStore`).
        unsafe { ffi::sqlite3_backup_finish(self.handle.as_ptr()) };
    }
}

fn storage(message: String) -> EngineError {
    EngineError::Storage {
        kind: StorageErrorKind::Other,
        message,
    }
}

impl SqliteStore {
    /// Starts copying the vault into a new file `dest` (created mode 0600; it must not exist).
    /// Replaces a backup in progress.
    pub fn backup_start(&mut self, dest: &Path) -> Result<()> {
        self.backup = None;
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create_new(true);
        super::nofollow::set(&mut create, 0o600);
        create.open(dest).map_err(|e| {
            storage(format!(
                "cannot create the backup file {}: {e}",
                dest.display()
            ))
        })?;
        let dest_conn = Connection::open_with_flags(
            dest,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        // The copy needs no crash safety of its own: an interrupted one is thrown away.
        dest_conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
        // SAFETY: both handles are open connections; SQLite checks the rest and reports
        // failure as a null pointer with the error on the destination.
        let raw = unsafe {
            ffi::sqlite3_backup_init(
                dest_conn.handle(),
                c"main".as_ptr(),
                self.conn.handle(),
                c"main".as_ptr(),
            )
        };
        let Some(handle) = NonNull::new(raw) else {
            // SAFETY: the destination connection is open; the message is copied at once.
            let msg = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(dest_conn.handle())) }
                .to_string_lossy()
                .into_owned();
            return Err(storage(format!("cannot start the backup: {msg}")));
        };
        self.backup = Some(OnlineBackup {
            handle,
            _dest: dest_conn,
        });
        Ok(())
    }

    /// Copies up to `pages` more pages. When the copy is complete, finishes it and closes the
    /// destination (then `done`). Busy (a write transaction is open) copies nothing and
    /// reports the same progress.
    pub fn backup_step(&mut self, pages: i32) -> Result<BackupProgress> {
        let Some(b) = self.backup.as_ref() else {
            return Err(storage("no backup is in progress".into()));
        };
        let h = b.handle.as_ptr();
        // SAFETY: `h` is a live backup handle (finished only on drop), both connections open.
        let (rc, remaining, total) = unsafe {
            let rc = ffi::sqlite3_backup_step(h, pages);
            (
                rc,
                ffi::sqlite3_backup_remaining(h),
                ffi::sqlite3_backup_pagecount(h),
            )
        };
        let progress = BackupProgress {
            remaining: remaining.max(0) as u64,
            total: total.max(0) as u64,
            done: false,
        };
        match rc {
            ffi::SQLITE_OK | ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Ok(progress),
            ffi::SQLITE_DONE => {
                let b = self.backup.take();
                drop(b);
                Ok(BackupProgress {
                    remaining: 0,
                    done: true,
                    ..progress
                })
            }
            rc => {
                self.backup = None;
                // SAFETY: `sqlite3_errstr` returns a static string for any code.
                let msg = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errstr(rc)) }
                    .to_string_lossy()
                    .into_owned();
                Err(EngineError::from(rusqlite::Error::SqliteFailure(
                    ffi::Error::new(rc),
                    Some(format!("backup step failed: {msg}")),
                )))
            }
        }
    }

    /// Abandons a backup in progress (its file stays for the caller to delete).
    pub fn backup_cancel(&mut self) {
        self.backup = None;
    }

    /// An empty vault in memory: what the storage thread holds for the moment a restore swaps
    /// the files (see `vault::backup`).
    pub fn in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory()?;
        let mut store = SqliteStore::with_connection(conn, ":memory:".into());
        store.migrate(0, SCHEMA_VERSION)?;
        Ok(store)
    }
}

/// Checks that `path` is a whole, intact Session Vault database this build can open: a
/// whole number of pages, SQLite's integrity check, Session Vault's application id, a schema
/// version this build knows and exactly the schema of that version (no table, index, view or
/// trigger more or less), a vault id and at least one keyslot. It does not authenticate
/// records: that needs the keys (`Vault::verify`). The file is opened read-write (SQLite
/// needs to for a write-ahead-log file) but not changed.
pub fn check_vault_file(path: &Path) -> Result<()> {
    let not_a_vault = |reason: String| EngineError::NotAVault {
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(path)
        .map_err(|e| storage(format!("cannot open {}: {e}", path.display())))?;
    let mut magic = [0u8; 16];
    std::io::Read::read_exact(&mut file, &mut magic)
        .map_err(|_| not_a_vault("shorter than a SQLite header".into()))?;
    if &magic != b"SQLite format 3\0" {
        return Err(not_a_vault("not a SQLite database".into()));
    }
    super::check_whole_pages(&mut file).map_err(not_a_vault)?;
    drop(file);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    // The file is untrusted until checked: no schema-defined functions, no direct writes to
    // the schema or to b-tree pages.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    let damaged = |e: rusqlite::Error| not_a_vault(e.to_string());
    conn.execute_batch(
        "PRAGMA trusted_schema = OFF; PRAGMA locking_mode = EXCLUSIVE; PRAGMA query_only = ON;",
    )
    .map_err(damaged)?;
    let (app_id, version): (i32, u32) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(damaged)?;
    if app_id != APPLICATION_ID {
        return Err(not_a_vault(format!(
            "application id {app_id:#x} is not Session Vault's"
        )));
    }
    if version == 0 || version > SCHEMA_VERSION {
        return Err(EngineError::UnsupportedFormat {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(damaged)?;
    if problems != ["ok"] {
        return Err(not_a_vault(format!(
            "SQLite's integrity check failed: {}",
            problems.join("; ")
        )));
    }
    let expected = Connection::open_in_memory()?;
    for step in &MIGRATIONS[..version as usize] {
        expected.execute_batch(step)?;
    }
    if schema(&conn).map_err(damaged)? != schema(&expected)? {
        return Err(not_a_vault(format!(
            "its tables, indexes or triggers are not those of a version-{version} vault"
        )));
    }
    let (ids, slots): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM meta WHERE k = 'vault_id' AND length(v) = 16),
                    (SELECT count(*) FROM keyslots)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(damaged)?;
    if ids != 1 || slots == 0 {
        return Err(not_a_vault(
            "it holds no vault id or no keyslot (an uninitialized vault)".into(),
        ));
    }
    Ok(())
}

/// One schema entry: type, name, table, SQL text.
type SchemaEntry = (String, String, String, Option<String>);

/// The schema as SQLite stores it, in a fixed order.
fn schema(conn: &Connection) -> rusqlite::Result<Vec<SchemaEntry>> {
    conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE name <> 'sqlite_sequence' ORDER BY type, name",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
    .collect()
}
