//! The store a vault runs on, chosen at start: the embedded SQLite file (the default) or a
//! PostgreSQL database shared by several hosts.
//!
//! [`Backend`] is an enum rather than `Box<dyn Store>`: the engine stays monomorphic (one
//! `match` per call, no vtable), and what only one store can do — SQLite's online backup and
//! file swap — stays reachable without downcasts, refused with a clear error on the other.

use std::path::{Path, PathBuf};

use super::crypto::Keyslot;
use super::error::{EngineError, Result};
use super::postgres::{PgTarget, PostgresStore};
use super::sqlite::{BackupProgress, SqliteStore};
use super::store::{Header, Index, IndexedRow, Row, SessionRow, Store, Table};

/// Where a vault is kept, as `vaultd --store` names it.
#[derive(Clone, Debug)]
// One value per vault, made once at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum StoreLocation {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgTarget),
}

impl StoreLocation {
    /// The path of the SQLite file, or the PostgreSQL connection string without password,
    /// as a path (what [`super::Vault::path`] reports).
    pub fn label(&self) -> PathBuf {
        match self {
            StoreLocation::Sqlite(path) => path.clone(),
            StoreLocation::Postgres(target) => PathBuf::from(target.display()),
        }
    }

    /// Opens the store (creating an empty vault where there is none) and migrates it.
    pub fn open(&self) -> Result<Backend> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Backend::Sqlite(SqliteStore::open(path)?),
            StoreLocation::Postgres(target) => {
                Backend::Postgres(Box::new(PostgresStore::open(target.clone())?))
            }
        })
    }
}

/// An open store of either kind. One per vault, for the vault's life: the size difference
/// of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    /// The embedded default.
    Sqlite(SqliteStore),
    /// A server database, shared by several hosts.
    Postgres(Box<PostgresStore>),
}

impl From<SqliteStore> for Backend {
    fn from(store: SqliteStore) -> Backend {
        Backend::Sqlite(store)
    }
}

fn sqlite_only(what: &str) -> EngineError {
    EngineError::Invalid(format!(
        "{what} works on the SQLite store only; back a PostgreSQL store up with \
         PostgreSQL's own tools (pg_dump, base backups, replicas)"
    ))
}

impl Backend {
    /// SQLite's online backup: see [`SqliteStore::backup_start`].
    pub fn backup_start(&mut self, dest: &Path) -> Result<()> {
        match self {
            Backend::Sqlite(s) => s.backup_start(dest),
            Backend::Postgres(_) => Err(sqlite_only("an online backup")),
        }
    }

    /// See [`SqliteStore::backup_step`].
    pub fn backup_step(&mut self, pages: i32) -> Result<BackupProgress> {
        match self {
            Backend::Sqlite(s) => s.backup_step(pages),
            Backend::Postgres(_) => Err(sqlite_only("an online backup")),
        }
    }

    /// See [`SqliteStore::backup_cancel`].
    pub fn backup_cancel(&mut self) {
        if let Backend::Sqlite(s) = self {
            s.backup_cancel();
        }
    }

    /// Refuses what needs the vault to be one SQLite file (a restore's file swap).
    pub fn require_sqlite(&self, what: &str) -> Result<()> {
        match self {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(_) => Err(sqlite_only(what)),
        }
    }
}

/// Forwards each [`Store`] method to the open store. `Store` has no default bodies, so a
/// method missing from the list below does not build.
macro_rules! forward {
    ($( fn $name:ident(&mut self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        impl Store for Backend {
            $(
                fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Backend::Sqlite(s) => s.$name($($arg),*),
                        Backend::Postgres(s) => s.$name($($arg),*),
                    }
                }
            )*
        }
    };
}

forward! {
    fn header(&mut self) -> Result<Option<Header>>;
    fn put_header(&mut self, header: &Header) -> Result<()>;
    fn keyslots(&mut self) -> Result<Vec<Keyslot>>;
    fn put_keyslot(&mut self, slot: &Keyslot) -> Result<()>;
    fn delete_keyslots(&mut self) -> Result<()>;
    fn delete_keyslot(&mut self, slot: u32) -> Result<()>;
    fn manifest(&mut self) -> Result<Option<Vec<u8>>>;
    fn put_manifest(&mut self, sealed: &[u8]) -> Result<()>;
    fn manifest_changed(&mut self) -> Result<bool>;
    fn lock_audit(&mut self) -> Result<bool>;
    fn try_lock_audit(&mut self) -> Result<Option<bool>>;
    fn lock_session(&mut self, id: i64, admin: bool) -> Result<()>;
    fn set_data_key_id(&mut self, id: Option<[u8; 16]>) -> ();
    fn replace_data_key_id(&mut self, id: &[u8; 16]) -> Result<()>;
    fn checkpoint(&mut self) -> Result<()>;
    fn begin(&mut self) -> Result<()>;
    fn begin_snapshot(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self) -> Result<()>;
    fn savepoint(&mut self) -> Result<()>;
    fn release(&mut self) -> Result<()>;
    fn rollback_to_savepoint(&mut self) -> Result<()>;
    fn unguarded_op(&mut self) -> Result<bool>;
    fn release_op(&mut self) -> Result<Result<()>>;
    fn sessions(&mut self) -> Result<Vec<SessionRow>>;
    fn session(&mut self, id: i64) -> Result<Option<SessionRow>>;
    fn insert_session(&mut self, name: &str, now: i64) -> Result<i64>;
    fn put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()>;
    fn touch_session(&mut self, id: i64, now: i64) -> Result<()>;
    fn rename_session(&mut self, id: i64, name: &str) -> Result<()>;
    fn delete_session(&mut self, id: i64) -> Result<()>;
    fn get(&mut self, table: Table, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn get_many(&mut self, table: Table, session: i64, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;
    fn put(&mut self, table: Table, session: i64, row: &Row, indexes: [Option<&[u8]>; 2]) -> Result<()>;
    fn insert_absent(&mut self, table: Table, session: i64, rows: &[(Row, [Option<&[u8]>; 2])]) -> Result<Vec<Option<Vec<u8>>>>;
    fn put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()>;
    fn scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>>;
    fn scan_page(&mut self, table: Table, session: i64, before: Option<i64>, limit: u32) -> Result<Vec<(i64, Row)>>;
    fn scan_keys_after(&mut self, table: Table, session: i64, after: Option<&[u8]>, limit: u32) -> Result<Vec<(i64, Row)>>;
    fn scan_indexed(&mut self, table: Table, session: i64) -> Result<Vec<(Row, [bool; 2])>>;
    fn scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>>;
    fn clear(&mut self, table: Table, session: i64) -> Result<()>;
    fn clear_some(&mut self, table: Table, session: i64, limit: u32) -> Result<u64>;
    fn count_up_to(&mut self, table: Table, session: i64, limit: u32) -> Result<u64>;
    fn clears_in_slices(&mut self) -> bool;
    fn find(&mut self, table: Table, session: i64, index: Index, value: &[u8]) -> Result<Option<Row>>;
    fn count(&mut self, table: Table, session: i64) -> Result<u64>;
    fn prepare_peers(&mut self, session: i64) -> Result<()>;
    fn put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()>;
    fn audit_range(&mut self, from_seq: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>>;
    fn audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>>;
    fn audit_head(&mut self) -> Result<Option<Vec<u8>>>;
    fn put_audit_head(&mut self, sealed: &[u8]) -> Result<()>;
}
