//! Reading other libraries' SQLite session files without touching them, and writing new ones.
//!
//! Reading: the file is opened through a `file:` URI with `mode=ro&immutable=1` and
//! `SQLITE_OPEN_READ_ONLY`: SQLite takes no lock and creates no `-journal`, `-wal` or `-shm`
//! file beside it, and cannot write it. `immutable` also means SQLite ignores a `-wal` file
//! left beside the database, whose transactions would then be missed: such a file is refused
//! with a message (let the owning program close the session, or checkpoint it). A SQLite
//! image given as bytes (standard input) is written to a private temporary file (mode 0600,
//! random name, `create_new`) that is overwritten with zeros and removed when dropped.
//!
//! Writing: a session is built in an in-memory database, then written out with
//! `VACUUM INTO` over an empty file created beforehand with mode 0600, so that the
//! credential is never readable by others, not even for a moment.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

/// The first bytes of every SQLite 3 database file.
pub const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

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

/// A SQLite session opened read-only.
pub struct SqliteSource {
    conn: Connection,
    // Declared after the connection: dropped (wiped and removed) after it is closed.
    _staged: Option<StagedFile>,
}

impl SqliteSource {
    /// Opens the database at `path` read-only and immutable (see the module docs).
    pub fn open_path(path: &Path) -> io::Result<SqliteSource> {
        let wal = sidecar(path, "-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(io::Error::other(format!(
                "{} has a write-ahead log ({}) holding changes not yet in the file: close the \
                 program using the session (or checkpoint it) first",
                path.display(),
                wal.display()
            )));
        }
        let conn = open_immutable(path).map_err(corrupt)?;
        Ok(SqliteSource {
            conn,
            _staged: None,
        })
    }

    /// Stages `bytes` in a private temporary file and opens it like [`Self::open_path`].
    pub fn from_bytes(bytes: &[u8]) -> io::Result<SqliteSource> {
        let staged = StagedFile::create(bytes)?;
        let conn = open_immutable(&staged.path).map_err(corrupt)?;
        Ok(SqliteSource {
            conn,
            _staged: Some(staged),
        })
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
            .map(|n| n.max(0) as u64)
    }
}

fn corrupt(e: rusqlite::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable SQLite database (truncated or corrupt?): {e}"),
    )
}

fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let uri = format!("file:{}?mode=ro&immutable=1", uri_path(path));
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Reading the schema checks the header: a file that is not a database fails here.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(conn)
}

/// `path` percent-encoded for a `file:` URI (`?`, `#`, `%` and non-ASCII bytes escaped).
fn uri_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = String::new();
    for &b in absolute.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A private temporary copy of a database image: 0600, wiped and removed on drop.
struct StagedFile {
    path: PathBuf,
    len: u64,
}

impl StagedFile {
    fn create(bytes: &[u8]) -> io::Result<StagedFile> {
        let (mut file, path) = create_private(&std::env::temp_dir(), "session-vault-import")?;
        let staged = StagedFile {
            path,
            len: bytes.len() as u64,
        };
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(staged)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // Best effort: the copy held a plaintext credential.
        let _ = overwrite_with_zeros(&self.path, self.len);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates a new file `PREFIX-<random>` in `dir` with mode 0600 (never an existing one).
pub(crate) fn create_private(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
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
pub(crate) fn new_file_0600(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Overwrites the first `len` bytes of `path` with zeros and syncs them to disk.
pub(crate) fn overwrite_with_zeros(path: &Path, len: u64) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let zeros = [0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
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
