//! Typed errors of the vault engine.
//!
//! Messages name what failed and where (table, session, path) and never carry plaintext,
//! key material or passphrases.

use std::path::PathBuf;

/// Everything the vault engine can refuse or fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The vault has no keyslot yet: `init` it first.
    #[error("the vault is not initialized")]
    Uninitialized,
    /// `init` on a vault that already has a keyslot.
    #[error("the vault is already initialized")]
    AlreadyInitialized,
    /// The vault is locked: unlock it first.
    #[error("the vault is locked")]
    Locked,
    /// No keyslot opens with the passphrase given.
    #[error("wrong passphrase")]
    BadPassphrase,
    /// The passphrase offered for a new keyslot is not acceptable (e.g. empty).
    #[error("unacceptable passphrase: {0}")]
    WeakPassphrase(&'static str),
    /// No session by that name.
    #[error("no session named {name:?}")]
    NoSuchSession {
        /// The name asked for.
        name: String,
    },
    /// A session by that name exists already.
    #[error("a session named {name:?} already exists")]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// A request the engine cannot carry out as given (bad name, bad parameter).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A record failed authentication or decoding: tampered with, moved, or damaged.
    #[error("corrupt record in table {table} (session id {session_id}, row {row}): {reason}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The internal session id (0 for vault-wide rows).
        session_id: i64,
        /// The row, as a hex prefix of its (already blinded) key.
        row: String,
        /// What was wrong, without plaintext.
        reason: &'static str,
    },
    /// The vault file has a format this build cannot read.
    #[error("unsupported vault format version {found} (this build reads up to {supported})")]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The file is not a Session Vault database at all, or its header is damaged.
    #[error("{path}: not a Session Vault database, or its header is damaged: {reason}")]
    NotAVault {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The storage failed: disk full, read-only, I/O error, database locked by another process.
    #[error("storage error ({kind}): {message}")]
    Storage {
        /// A short classification: `disk full`, `read-only`, `i/o`, `busy`, `other`.
        kind: StorageErrorKind,
        /// The underlying error text (SQLite's; never holds record plaintext).
        message: String,
    },
    /// The storage thread has stopped (the vault was closed).
    #[error("the vault storage thread has stopped")]
    Closed,
    /// A job run inline (on a caller's thread) that must run on the storage thread instead,
    /// refused before it changed anything (`worker::running_inline`); the worker queues it.
    /// Never an answer.
    #[error("this operation must run on the storage thread")]
    NotInline,
    /// A job that needs session `session`'s map of peer keys, too large to be read on the
    /// storage thread while others wait, refused before it changed anything: the caller has
    /// it read on the store's map thread (`builds`) and sends the job again. Never an answer.
    #[error("this session's peer map is being read; try again")]
    KeysNeeded {
        /// The session (its internal id).
        session: i64,
        /// The store's generation of maps when it was asked for (maps of another are not
        /// taken).
        generation: u64,
        /// The thread of the store that asked (a restore replaces the store, and its thread).
        builds: super::sqlite::KeyBuilds,
    },
    /// A whole update state refused before it wrote anything because the session holds more
    /// channel states than one job deletes: the caller deletes them in slices
    /// (`Vault::set_update_state_while`) and sends it again. Never an answer.
    #[error("this session's channel states are being deleted; try again")]
    ClearFirst,
}

/// Classification of a [`EngineError::Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// No space left on the device (or the database hit its size limit).
    DiskFull,
    /// The file or its directory is read-only.
    ReadOnly,
    /// Another process holds a lock on the database.
    Busy,
    /// A lower-level I/O failure.
    Io,
    /// Anything else.
    Other,
}

impl std::fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageErrorKind::DiskFull => "disk full",
            StorageErrorKind::ReadOnly => "read-only",
            StorageErrorKind::Busy => "busy",
            StorageErrorKind::Io => "i/o",
            StorageErrorKind::Other => "other",
        })
    }
}

impl From<rusqlite::Error> for EngineError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StorageErrorKind::DiskFull,
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => StorageErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StorageErrorKind::Busy
            }
            Some(ErrorCode::SystemIoFailure) => StorageErrorKind::Io,
            _ => StorageErrorKind::Other,
        };
        EngineError::Storage {
            kind,
            message: err.to_string(),
        }
    }
}

/// Result alias of the vault engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
