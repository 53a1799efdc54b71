//! PostgreSQL errors as the engine's storage errors, and the write conflicts between daemons.

use postgres::error::SqlState;

use crate::vault::error::{EngineError, StorageErrorKind};

/// The message of the error a write gets when another daemon changed the vault's sessions,
/// names, ACLs or keyslots first (the manifest's compare-and-set failed, see
/// [`Store::put_manifest`]). [`is_conflict`] recognizes it.
pub(super) const CONFLICT_MESSAGE: &str = "another vaultd changed this vault (sessions, names, access or \
                                keyslots) at the same time";

/// Whether `e` is a write conflict with another daemon sharing the database: the manifest's
/// compare-and-set failed, or a session name taken meanwhile (`unique_violation`). The
/// write was rolled back and the engine re-read the vault; trying again decides afresh.
pub fn is_conflict(e: &EngineError) -> bool {
    match e {
        EngineError::Storage { kind, message } => {
            (*kind == StorageErrorKind::Busy && message == CONFLICT_MESSAGE)
                || message.starts_with("PostgreSQL 23505:")
        }
        _ => false,
    }
}

/// A PostgreSQL error as a storage error: SQLSTATE and primary message only (`DETAIL` may
/// quote row values).
pub(super) fn pg_error(e: postgres::Error) -> EngineError {
    let Some(db) = e.as_db_error() else {
        // Not from the server: the connection (refused, lost, timed out) or the protocol.
        return EngineError::Storage {
            kind: StorageErrorKind::Io,
            message: format!("PostgreSQL: {e}"),
        };
    };
    let code = db.code();
    let kind = if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
        StorageErrorKind::DiskFull
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
    {
        StorageErrorKind::ReadOnly
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        StorageErrorKind::Busy
    } else if code.code().starts_with("08")
        || code.code().starts_with("57P")
        || code.code() == "25P03"
        || code.code() == "25P04"
    {
        // Connection exceptions; operator intervention (shutdown, crash recovery); the
        // session ended for a transaction idle or open too long (`idle`: a paused vaultd).
        StorageErrorKind::Io
    } else {
        StorageErrorKind::Other
    };
    EngineError::Storage {
        kind,
        message: format!("PostgreSQL {}: {}", code.code(), db.message()),
    }
}
