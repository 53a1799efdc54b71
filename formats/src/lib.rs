//! Session formats of other Telegram libraries: read them into a [`SessionData`], and write a
//! [`SessionData`] back out in them. Used by `vaultctl import`/`export`, and by bots that
//! import in code.
//!
//! | [`Format`] | read | write | versions (checked against the libraries' source) |
//! | --- | --- | --- | --- |
//! | `telethon-sqlite` | yes | yes (schema v8) | Telethon `SQLiteSession` schema v1–v8 (0.16 … 1.45) |
//! | `telethon-string` | yes | yes | Telethon `StringSession` version `1`, IPv4 and IPv6, padded or not |
//! | `pyrogram-sqlite` | yes | no | Pyrogram `FileStorage` schema v1–v3 (1.0 … 2.0.106); forks' v4–v7 by column |
//! | `pyrogram-string` | yes | yes (362) | Pyrogram session strings of 351, 356 and 362 characters |
//! | `grammers-sqlite` | yes | yes | grammers-session `SqliteSession` `user_version` 1 (0.8 … 0.11) |
//! | `grammers-tl` | yes | no | grammers-session binary TL session (0.4 … 0.8) |
//!
//! Reading never modifies the input and opens it once: a file is read into memory from one
//! descriptor (which the caller may have opened and checked itself, [`Input::File`]), and a
//! SQLite image is opened from that memory, read-only; no journal, WAL or lock file is
//! created beside the source and no plaintext copy goes to a temporary file (see
//! [`sqlite_io`]). Inputs are read up to [`MAX_INPUT_BYTES`].
//! What a format holds that the vault cannot (or what the vault needs that the format lacks)
//! is listed in [`Imported::notes`] rather than dropped silently.
//!
//! Adding a format is one [`Format`] variant (its name, what it reads and writes are data on
//! the enum: [`Format::ALL`], [`Format::name`], [`Format::reads`], [`Format::writes`]) and its
//! reader and writer; `vaultctl`'s `--format` values, help and completions follow from it.
//!
//! # Dependencies
//!
//! `session-vault-proto` (the data model, [`SessionData`]; it brings `serde`, `rmp-serde` and
//! `tokio` for its frame codec, which nothing here uses), `rusqlite` with bundled SQLite (no
//! system library), `base64` (session strings), `getrandom` (names of private temporary
//! files), `thiserror` and `zeroize`. Not the daemon, not the client, no runtime, no network:
//! nothing here talks to the daemon or touches the vault, so a bot can use this crate in its
//! own code, e.g. to turn the session string it was given into a [`SessionData`]:
//!
//! ```
//! use session_vault_formats::{Format, Input, import};
//! use session_vault_proto::model::SessionData;
//!
//! # fn main() -> Result<(), session_vault_formats::FormatError> {
//! # // A Telethon string: '1', then DC 2 at 149.154.167.51:443 and a key, in URL-safe base64.
//! # use base64::Engine as _;
//! # let mut raw = vec![2u8, 149, 154, 167, 51, 1, 187];
//! # raw.extend([7u8; 256]);
//! # let string = format!("1{}", base64::engine::general_purpose::URL_SAFE.encode(&raw));
//! // `string` holds what Telethon's `StringSession.save()` returned.
//! let imported = import(
//!     Input::Bytes(string.as_bytes()),
//!     Some(Format::TelethonString), // or None: detected from the content
//!     &mut |_done, _total| {},      // progress, for large SQLite files
//! )?;
//! for note in &imported.notes {
//!     eprintln!("not carried over: {note}"); // e.g. a string holds no peers
//! }
//! let data: SessionData = imported.data;
//! assert_eq!(data.home_dc, 2);
//! # Ok(())
//! # }
//! ```

mod grammers;
mod grammers_tl;
mod peer_rows;
mod pyrogram;
mod read;
mod shared;
pub mod sqlite_io;
mod telethon;
mod telethon_string;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod untrusted_schema_tests;

use std::fmt;
use std::fs::File;
use std::path::Path;

use session_vault_proto::model::SessionData;
use zeroize::Zeroizing;

pub use read::{import, read_limited};
use shared::{dc_at, dc_table_with, home_option, known_dc, mark, unmark};
pub use sqlite_io::SqliteSource;

/// A session format of another library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Telethon's `SQLiteSession` file (`*.session`).
    TelethonSqlite,
    /// Telethon's `StringSession`.
    TelethonString,
    /// Pyrogram's `FileStorage` file (`*.session`).
    PyrogramSqlite,
    /// Pyrogram's session string (`export_session_string`).
    PyrogramString,
    /// grammers-session's `SqliteSession` file.
    GrammersSqlite,
    /// grammers-session's older binary `TlSession` file.
    GrammersTl,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 6] = [
        Format::TelethonSqlite,
        Format::TelethonString,
        Format::PyrogramSqlite,
        Format::PyrogramString,
        Format::GrammersSqlite,
        Format::GrammersTl,
    ];

    /// The name used on the command line (`telethon-sqlite`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::TelethonSqlite => "telethon-sqlite",
            Format::TelethonString => "telethon-string",
            Format::PyrogramSqlite => "pyrogram-sqlite",
            Format::PyrogramString => "pyrogram-string",
            Format::GrammersSqlite => "grammers-sqlite",
            Format::GrammersTl => "grammers-tl",
        }
    }

    /// What it is, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Format::TelethonSqlite => "Telethon SQLite session file",
            Format::TelethonString => "Telethon session string",
            Format::PyrogramSqlite => "Pyrogram SQLite session file",
            Format::PyrogramString => "Pyrogram session string",
            Format::GrammersSqlite => "grammers SqliteSession file",
            Format::GrammersTl => "grammers TlSession file",
        }
    }

    /// The format named `name` on the command line.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether this format is a string (else a file).
    pub fn is_string(self) -> bool {
        matches!(self, Format::TelethonString | Format::PyrogramString)
    }

    /// What is read, and which versions: one line of `vaultctl import --help`.
    pub fn reads(self) -> &'static str {
        match self {
            Format::TelethonSqlite => {
                "Telethon SQLiteSession file, schema v1 to v8 (Telethon 0.16 to 1.45)"
            }
            Format::TelethonString => {
                "Telethon StringSession (IPv4 or IPv6; with or without its = padding)"
            }
            Format::PyrogramSqlite => {
                "Pyrogram session file, schema v1 to v3 (and forks' v4 to v7)"
            }
            Format::PyrogramString => "Pyrogram session string of 351, 356 or 362 characters",
            Format::GrammersSqlite => "grammers SqliteSession file (grammers-session 0.8 to 0.11)",
            Format::GrammersTl => "grammers binary TlSession file (grammers-session 0.4 to 0.8)",
        }
    }

    /// What is written, in which version, for `vaultctl export --help`; `None` for a format
    /// read only. This is the one place that says which formats [`export_string`] and
    /// [`export_file`] can write.
    pub fn writes(self) -> Option<&'static str> {
        match self {
            Format::TelethonSqlite => Some("Telethon SQLiteSession file, schema v8"),
            Format::TelethonString => Some("Telethon StringSession (home DC, address, auth key)"),
            Format::PyrogramSqlite => None,
            Format::PyrogramString => Some("Pyrogram session string, current 362-character layout"),
            Format::GrammersSqlite => Some("grammers SqliteSession file, user_version 1"),
            Format::GrammersTl => None,
        }
    }

    /// Whether [`export_string`] or [`export_file`] can write this format.
    pub fn can_write(self) -> bool {
        self.writes().is_some()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of problem an input has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is not in the format (or in none this version knows).
    NotThisFormat,
    /// The input is in the format but damaged, truncated or inconsistent.
    Malformed,
    /// A version of the format newer (or other) than this importer knows.
    UnsupportedVersion,
    /// The session holds no auth key: it was never logged in, or was logged out.
    NoAuthKey,
    /// The input or a temporary file could not be read or written.
    Io,
}

/// Why an input could not be read (or a session not written) in a format.
///
/// The message names the format it tried and what was wrong; it never quotes a secret.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct FormatError {
    /// The format tried; `None` when none could be recognized.
    pub format: Option<Format>,
    /// The kind of problem.
    pub kind: ErrorKind,
    /// What was wrong.
    pub detail: String,
}

impl FormatError {
    pub(crate) fn new(format: Format, kind: ErrorKind, detail: impl Into<String>) -> Self {
        FormatError {
            format: Some(format),
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(format: Format, detail: impl Into<String>) -> Self {
        Self::new(format, ErrorKind::Malformed, detail)
    }

    pub(crate) fn no_auth_key(format: Format, detail: impl Into<String>) -> Self {
        Self::new(format, ErrorKind::NoAuthKey, detail)
    }

    fn message(&self) -> String {
        match self.format {
            Some(f) => format!("{} ({}): {}", f.describe(), f.name(), self.detail),
            None => format!("unrecognized session: {}", self.detail),
        }
    }
}

/// A session read from another library's format.
#[derive(Debug)]
pub struct Imported {
    /// The session.
    pub data: SessionData,
    /// The format it was read from.
    pub format: Format,
    /// The format's version, where it has one (`schema v8`, `362 characters`, …).
    pub version: Option<String>,
    /// What could not be mapped, or was filled in from elsewhere, one sentence each.
    pub notes: Vec<String>,
}

/// Progress of a long read: `done` of `total` rows.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// The largest input read (a file or standard input): no session comes near it.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Where a session comes from.
pub enum Input<'a> {
    /// A file on disk, opened once (symbolic links followed) and read into memory. A caller
    /// that must not follow links, or checks the file's type and owner first, opens it
    /// itself and passes [`Input::File`].
    Path(&'a Path),
    /// A file the caller opened, read from its current offset; `path` names it in messages
    /// and locates a `-wal` file beside it (whose size alone is looked at).
    File {
        /// The open file.
        file: &'a File,
        /// Its path, for messages and the `-wal` check.
        path: &'a Path,
    },
    /// Bytes in memory: a string, or a whole file read from standard input.
    Bytes(&'a [u8]),
}

/// Writes `data` as a session string (`telethon-string`, `pyrogram-string`).
///
/// The second value lists what the format cannot carry (peers, update state, …).
pub fn export_string(
    data: &SessionData,
    format: Format,
) -> Result<(Zeroizing<String>, Vec<String>), FormatError> {
    match format {
        Format::TelethonString => telethon_string::export_string(data),
        Format::PyrogramString => pyrogram::export_string(data),
        f => Err(FormatError::new(
            f,
            ErrorKind::NotThisFormat,
            "this format is a file, not a string: use export_file",
        )),
    }
}

/// Writes `data` as a session file (`telethon-sqlite`, `grammers-sqlite`) at `path`, which
/// must not exist or be empty; it is created with mode 0600.
///
/// Returns what the format cannot carry.
pub fn export_file(
    data: &SessionData,
    format: Format,
    path: &Path,
) -> Result<Vec<String>, FormatError> {
    match format {
        Format::TelethonSqlite => telethon::export_sqlite(data, path),
        Format::GrammersSqlite => grammers::export_sqlite(data, path),
        f if f.is_string() => Err(FormatError::new(
            f,
            ErrorKind::NotThisFormat,
            "this format is a string, not a file: use export_string",
        )),
        f => Err(FormatError::new(
            f,
            ErrorKind::UnsupportedVersion,
            "writing this format is not supported (it is read-only here)",
        )),
    }
}
