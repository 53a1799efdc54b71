//! Reading a session: the input read into memory (at most [`MAX_INPUT_BYTES`]), its format
//! told from its content when not given, and that format's reader run on it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use session_vault_proto::codec::ZeroizingWriter;
use zeroize::Zeroizing;

use super::sqlite_io::{self, SqliteSource};
use super::{
    ErrorKind, Format, FormatError, Imported, Input, MAX_INPUT_BYTES, Progress, grammers,
    grammers_tl, pyrogram, telethon, telethon_string,
};

/// Reads a session in `format`, or in the format its content shows when `format` is `None`.
///
/// Detection looks at the content only, never at a file name.
pub fn import(
    input: Input<'_>,
    format: Option<Format>,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    match input {
        Input::Path(path) => {
            let file = File::open(path).map_err(|e| io_error(format, path, e))?;
            import_file(&file, path, format, progress)
        }
        Input::File { file, path } => import_file(file, path, format, progress),
        Input::Bytes(bytes) => import_bytes(bytes, format, progress),
    }
}

fn import_file(
    file: &File,
    path: &Path,
    format: Option<Format>,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    let size_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bytes = read_limited(file, size_hint).map_err(|e| io_error(format, path, e))?;
    if bytes.starts_with(sqlite_io::SQLITE_MAGIC) {
        sqlite_io::check_no_pending_wal(path).map_err(|e| FormatError {
            format,
            kind: ErrorKind::Io,
            detail: e.to_string(),
        })?;
    }
    import_bytes(&bytes, format, progress)
}

/// Reads all of `input`, at most [`MAX_INPUT_BYTES`], into a buffer that leaves no copy of
/// itself behind as it grows (`size_hint` sizes it up front when known).
pub fn read_limited(input: impl Read, size_hint: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    // A hint beyond what usize holds (32-bit targets) just starts the buffer empty.
    let capacity = usize::try_from(size_hint.min(MAX_INPUT_BYTES)).map_or(0, |n| n + 1);
    let mut out = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(capacity)));
    std::io::copy(&mut input.take(MAX_INPUT_BYTES + 1), &mut out)?;
    if u64::try_from(out.0.len())
        .ok()
        .is_none_or(|n| n > MAX_INPUT_BYTES)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than 1 GiB: not a session",
        ));
    }
    Ok(out.0)
}

fn import_bytes(
    bytes: &[u8],
    format: Option<Format>,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    if bytes.starts_with(sqlite_io::SQLITE_MAGIC) {
        let db = SqliteSource::from_bytes(bytes).map_err(|e| FormatError {
            format,
            kind: match e.kind() {
                std::io::ErrorKind::InvalidData => ErrorKind::Malformed,
                _ => ErrorKind::Io,
            },
            detail: e.to_string(),
        })?;
        return import_sqlite(&db, format, progress);
    }
    let format = match format {
        Some(f) => f,
        None => detect_non_sqlite(bytes)?,
    };
    match format {
        Format::TelethonString => telethon_string::parse_string(text(bytes, format)?),
        Format::PyrogramString => pyrogram::parse_string(text(bytes, format)?),
        Format::GrammersTl => grammers_tl::parse_tl(bytes),
        f => Err(FormatError::new(
            f,
            ErrorKind::NotThisFormat,
            "not a SQLite database (its first bytes are not the SQLite header)",
        )),
    }
}

fn import_sqlite(
    db: &SqliteSource,
    format: Option<Format>,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    let format = match format {
        Some(f) => f,
        None => detect_sqlite(db)?,
    };
    match format {
        Format::TelethonSqlite => telethon::parse_sqlite(db, progress),
        Format::PyrogramSqlite => pyrogram::parse_sqlite(db, progress),
        Format::GrammersSqlite => grammers::parse_sqlite(db, progress),
        f => Err(FormatError::new(
            f,
            ErrorKind::NotThisFormat,
            "this is a SQLite database, not a string or a TL file",
        )),
    }
}

fn io_error(format: Option<Format>, path: &Path, e: std::io::Error) -> FormatError {
    FormatError {
        format,
        kind: match e.kind() {
            std::io::ErrorKind::InvalidData => ErrorKind::Malformed,
            _ => ErrorKind::Io,
        },
        detail: format!("cannot read {}: {e}", path.display()),
    }
}

fn text(bytes: &[u8], format: Format) -> Result<&str, FormatError> {
    std::str::from_utf8(bytes).map(str::trim).map_err(|_| {
        FormatError::malformed(format, "a session string is text, and this is not UTF-8")
    })
}

/// The format of a SQLite session, from its tables.
fn detect_sqlite(db: &SqliteSource) -> Result<Format, FormatError> {
    let unreadable = |e: rusqlite::Error| FormatError {
        format: None,
        kind: ErrorKind::Malformed,
        detail: format!("the SQLite database cannot be read (truncated or corrupt?): {e}"),
    };
    let tables = db.tables().map_err(unreadable)?;
    let has = |t: &str| tables.iter().any(|x| x == t);
    if has("dc_option") || has("dc_home") || has("peer_info") {
        return Ok(Format::GrammersSqlite);
    }
    if has("sessions") {
        let cols = db.columns("sessions").map_err(unreadable)?;
        if cols.iter().any(|c| c == "server_address") && has("entities") {
            return Ok(Format::TelethonSqlite);
        }
        if has("peers") || cols.iter().any(|c| c == "is_bot") {
            return Ok(Format::PyrogramSqlite);
        }
        if has("entities") || has("version") {
            return Ok(Format::TelethonSqlite);
        }
    }
    Err(FormatError {
        format: None,
        kind: ErrorKind::NotThisFormat,
        detail: format!(
            "a SQLite database, but not a Telethon, Pyrogram or grammers session (tables: {})",
            if tables.is_empty() {
                "none".to_owned()
            } else {
                tables.join(", ")
            }
        ),
    })
}

/// The format of a string or binary session.
fn detect_non_sqlite(bytes: &[u8]) -> Result<Format, FormatError> {
    if bytes.starts_with(&grammers_tl::TL_SESSION_ID.to_le_bytes()) {
        return Ok(Format::GrammersTl);
    }
    let unknown = |detail: String| FormatError {
        format: None,
        kind: ErrorKind::NotThisFormat,
        detail,
    };
    let Ok(s) = std::str::from_utf8(bytes) else {
        return Err(unknown(
            "neither a SQLite database, a grammers TL session, nor a session string".into(),
        ));
    };
    let s = s.trim();
    let bare = s.trim_end_matches('=');
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(unknown(
            "not a session string: it holds characters outside URL-safe base64".into(),
        ));
    }
    if s.starts_with('1') && telethon_string::STRING_LENGTHS.contains(&bare.len()) {
        return Ok(Format::TelethonString);
    }
    if pyrogram::STRING_LENGTHS.contains(&bare.len()) {
        return Ok(Format::PyrogramString);
    }
    Err(unknown(format!(
        "a string of {} characters: Telethon strings have 353 or 369 (352 or 368 without \
         padding) and start with 1, Pyrogram strings have 351, 356 or 362",
        s.len()
    )))
}
