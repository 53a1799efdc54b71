//! Opening the vault file: the checks before anything is written, the pragmas, and the
//! migrations; the store's constructor and the threads it may start.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{
    APPLICATION_ID, KeyBuilds, MIGRATIONS, SCHEMA_VERSION, SqliteStore, check_whole_pages,
    checkpoint, key_builds, open_private, peer_keys, schema,
};
use crate::vault::error::{EngineError, Result};

impl SqliteStore {
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
                kind: crate::vault::error::StorageErrorKind::Io,
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
        let mut store = SqliteStore::with_connection(conn, path.to_owned());
        store.migrate(version, target)?;
        store.keyed_peers = store.schema_version()? < schema::PEERS_BY_ROWID;
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
    pub(super) fn migrate(&mut self, from: u32, target: u32) -> Result<()> {
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

    /// A store on `conn` (the file at `path`), with no backup, background thread or peer map
    /// yet: what opening a file or an empty vault in memory starts from.
    pub(super) fn with_connection(conn: Connection, path: PathBuf) -> SqliteStore {
        SqliteStore {
            backup: None,
            checkpointer: None,
            key_builder: None,
            #[cfg(test)]
            whole_scans: 0,
            #[cfg(test)]
            op_start: 0,
            #[cfg(test)]
            largest_op: 0,
            unguarded: None,
            peer_keys: Default::default(),
            keyed_peers: false,
            conn,
            path,
        }
    }

    /// An operation begins (tests count the rows each changes).
    pub(super) fn op_began_stats(&mut self) {
        #[cfg(test)]
        {
            self.op_start = self.conn.total_changes();
        }
    }

    /// An operation ends: the rows it changed (tests).
    pub(super) fn op_ended_stats(&mut self) {
        #[cfg(test)]
        {
            let n = self.conn.total_changes().saturating_sub(self.op_start);
            self.largest_op = self.largest_op.max(n);
        }
    }

    /// Reads the peer maps of sessions holding more than 50k rows (`peer_keys::READ_HERE_MAX`)
    /// on a thread of their own (`key_builds`); the handle to ask it through (`Vault`).
    pub fn read_maps_elsewhere(&mut self) -> Result<KeyBuilds> {
        self.read_maps_elsewhere_above(peer_keys::READ_HERE_MAX)
    }

    /// [`Self::read_maps_elsewhere`] for sessions of more than `max` rows (tests).
    #[doc(hidden)]
    pub fn read_maps_elsewhere_above(&mut self, max: usize) -> Result<KeyBuilds> {
        let builder = key_builds::KeyBuilder::start(&self.path)?;
        let builds = builder.builds();
        self.peer_keys.read_elsewhere(builds.clone(), max);
        self.key_builder = Some(builder);
        Ok(builds)
    }
}
