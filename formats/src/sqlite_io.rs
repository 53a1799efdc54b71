//! Reading other libraries' SQLite session files without touching them, and writing new ones.
//!
//! Reading: the database image is read into memory first (from a descriptor the caller opened,
//! see [`super::Input`]) and handed to SQLite with `sqlite3_deserialize`, read-only. SQLite
//! never opens the source by name, so it cannot be sent elsewhere by a path swapped after the
//! caller checked it, it takes no lock, writes no `-journal`, `-wal` or `-shm` file beside
//! it, and no plaintext copy is ever staged in a temporary file. Opening the source's
//! `/proc/self/fd/N` instead was tried and rejected: SQLite resolves that link to the file's
//! *name* (its `readlink` text) and opens the name again, which is the race this avoids, and
//! fails on a file already unlinked ("… (deleted)").
//!
//! A database in WAL mode keeps its latest transactions in the `-wal` file beside it, which
//! an image cannot carry: a non-empty one is refused with a message (let the owning program
//! close the session, or checkpoint it), see [`check_no_pending_wal`]. The image's header is
//! marked as a rollback-journal database in the copy, as SQLite's in-memory VFS opens no
//! other kind.
//!
//! Writing: a session is built in an in-memory database, then written out with
//! `VACUUM INTO` over an empty file created beforehand with mode 0600, so that the
//! credential is never readable by others, not even for a moment.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The first bytes of every SQLite 3 database file.
pub const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Length of the SQLite database header.
const HEADER_LEN: usize = 100;

/// Offsets of the header's file format write and read versions: 1 = rollback journal,
/// 2 = WAL.
const FORMAT_VERSIONS: std::ops::Range<usize> = 18..20;

/// A TEXT, INTEGER or REAL cell as text: phone columns hold numbers or text depending on
/// the library and its version. Text that is not valid UTF-8 (a damaged file) is read
/// lossily; reading it as a `rusqlite` `Value` would panic instead.
pub(crate) fn text_value(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(format!("{f:.0}")),
        _ => None,
    }
}

/// Refuses a file whose tables compute what a read returns: a virtual table (its module
/// reads tables of the file's author's making, such as FTS5's shadow tables) or a generated
/// column (an expression of the file's schema, evaluated on every read: a few kB of file can
/// read back as gigabytes). No Telethon, Pyrogram or grammers session has either.
fn refuse_computed_tables(conn: &Connection) -> io::Result<()> {
    let refused = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a session file: {what} (session files have none)"),
        )
    };
    let virtual_table: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_table_list WHERE type NOT IN ('table', 'view') LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(corrupt)?;
    if let Some(t) = virtual_table {
        return Err(refused(format!(
            "table {:?} is a virtual table",
            t.escape_debug().to_string()
        )));
    }
    let generated: Option<(String, String)> = conn
        .query_row(
            "SELECT m.name, x.name FROM sqlite_master AS m, pragma_table_xinfo(m.name) AS x
             WHERE m.type = 'table' AND x.hidden <> 0 LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(corrupt)?;
    if let Some((t, c)) = generated {
        return Err(refused(format!(
            "column {c:?} of table {t:?} is computed (a generated column)"
        )));
    }
    Ok(())
}

/// A SQLite session image, opened read-only in memory.
pub struct SqliteSource {
    conn: Connection,
}

impl SqliteSource {
    /// Opens a copy of the database image `bytes` in memory, read-only (see the module docs).
    ///
    /// The copy lives in SQLite's own allocation and is freed (not wiped) when this is
    /// dropped, like the pages SQLite caches when it reads a file.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<SqliteSource> {
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a readable SQLite database: shorter than its 100-byte header (truncated?)",
            ));
        };
        // rusqlite sizes SQLite's allocation as a C int: a larger image would panic there.
        if u64::try_from(bytes.len())
            .ok()
            .is_none_or(|n| n > super::MAX_INPUT_BYTES)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "larger than 1 GiB: not a session",
            ));
        }
        let mut header = *header;
        for version in &mut header[FORMAT_VERSIONS] {
            if *version == 2 {
                *version = 1;
            }
        }
        let mut conn = Connection::open_in_memory_with_flags(
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(corrupt)?;
        conn.deserialize_read_exact(
            rusqlite::MAIN_DB,
            header.as_slice().chain(rest),
            bytes.len(),
            true,
        )
        .map_err(corrupt)?;
        // The file is untrusted: nothing of its schema may run when its rows are read.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(corrupt)?;
        conn.execute_batch("PRAGMA trusted_schema = OFF")
            .map_err(corrupt)?;
        // Reading the schema checks the header: a file that is not a database fails here.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(corrupt)?;
        refuse_computed_tables(&conn)?;
        Ok(SqliteSource { conn })
    }

    /// The connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Names of the tables, sorted.
    pub fn tables(&self) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    }

    /// Whether table `name` exists.
    pub fn has_table(&self, name: &str) -> rusqlite::Result<bool> {
        Ok(self.tables()?.iter().any(|t| t == name))
    }

    /// Column names of table `table`, in order (empty when there is no such table).
    pub fn columns(&self, table: &str) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
        let rows = stmt.query_map([table], |r| r.get::<_, String>(0))?;
        rows.collect()
    }

    /// Number of rows in `table` (a name from [`Self::tables`]).
    pub fn count(&self, table: &str) -> rusqlite::Result<u64> {
        self.conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
    }
}

fn corrupt(e: rusqlite::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable SQLite database (truncated or corrupt?): {e}"),
    )
}

/// Refuses a database at `path` whose `-wal` file holds changes not yet in the file.
///
/// Only the `-wal` file's own metadata is looked at (a symbolic link there is not followed):
/// nothing beside the source is opened or read.
pub fn check_no_pending_wal(path: &Path) -> io::Result<()> {
    let wal = sidecar(path, "-wal");
    match std::fs::symlink_metadata(&wal) {
        Ok(m) if m.is_file() && m.len() > 0 => Err(io::Error::other(format!(
            "{} has a write-ahead log ({}) holding changes not yet in the file: close the \
             program using the session (or checkpoint it) first",
            path.display(),
            wal.display()
        ))),
        _ => Ok(()),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates a new file `PREFIX-<random>` in `dir` with mode 0600 (never an existing one).
pub fn create_private(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    for _ in 0..16 {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{prefix}-{name}"));
        match new_file_0600(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot find a free temporary file name"))
}

/// Creates `path` (which must not exist) with mode 0600.
pub fn new_file_0600(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Writes the in-memory database `conn` to `path`, which must not exist: an empty 0600 file
/// is created first, then filled by `VACUUM INTO`. On failure the file is removed.
pub(crate) fn write_database(conn: &Connection, path: &Path) -> io::Result<()> {
    let file = new_file_0600(path)?;
    drop(file);
    let result = conn
        .execute("VACUUM INTO ?1", [path.to_string_lossy()])
        .map_err(io::Error::other)
        .and_then(|_| File::open(path)?.sync_all());
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, Input, import};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    #[test]
    fn an_open_file_is_read_from_its_descriptor_not_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.session");
        std::fs::copy(fixture("telethon-v8.session"), &path).unwrap();
        let file = File::open(&path).unwrap();
        // The path now names another session (a Pyrogram one): the open file is still read.
        let other = dir.path().join("other.session");
        std::fs::copy(fixture("pyrogram.session"), &other).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let imp = import(
            Input::File {
                file: &file,
                path: &path,
            },
            None,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(imp.format, Format::TelethonSqlite);
        // Nothing was created beside the source.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.session"]);
    }

    #[test]
    fn a_database_in_wal_mode_is_read_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.session");
        std::fs::copy(fixture("grammers-011.sqlite"), &path).unwrap();
        {
            let c = Connection::open(&path).unwrap();
            let mode: String = c
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[FORMAT_VERSIONS], &[2, 2]);
        let imp = import(Input::Bytes(&bytes), None, &mut |_, _| {}).unwrap();
        assert_eq!(imp.format, Format::GrammersSqlite);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the source was changed"
        );
    }

    #[test]
    fn images_shorter_than_a_header_are_refused() {
        for len in [0, 16, 99] {
            let mut bytes = SQLITE_MAGIC.to_vec();
            bytes.resize(len.max(16), 0);
            let e = SqliteSource::from_bytes(&bytes[..len]).err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }
}
