//! Mapping of engine errors to wire errors: a code to match on and a message for a person.

use std::time::Duration;

use session_vault_proto::message::{ErrorCode, WireError};

use super::throttle::NOT_CHECKED;
use crate::vault::EngineError;

/// A wire error from a code and a message.
pub fn wire_error(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError {
        code,
        message: message.into(),
    }
}

/// The wire form of an engine error. `retry_after` is the throttle's delay for
/// `BadPassphrase`.
pub fn from_engine(err: &EngineError, retry_after: Duration) -> WireError {
    let code = match err {
        EngineError::Uninitialized => ErrorCode::Uninitialized,
        EngineError::AlreadyInitialized => ErrorCode::AlreadyInitialized,
        EngineError::Locked => ErrorCode::Locked,
        EngineError::BadPassphrase => ErrorCode::BadPassphrase {
            retry_after_ms: retry_after.as_millis() as u64,
            unchecked: false,
        },
        EngineError::WeakPassphrase(_) => ErrorCode::WeakPassphrase,
        EngineError::NoSuchSession { .. } => ErrorCode::NoSuchSession,
        EngineError::NameTaken { .. } => ErrorCode::NameTaken,
        EngineError::Invalid(_) => ErrorCode::InvalidRequest,
        EngineError::Corrupt { .. } | EngineError::NotAVault { .. } => ErrorCode::Corrupt,
        EngineError::UnsupportedFormat { .. } => ErrorCode::Unsupported,
        EngineError::Storage { .. } => ErrorCode::Storage,
        EngineError::Closed => ErrorCode::ShuttingDown,
        // Queued by the worker, never answered; should one escape, it is the daemon's fault.
        EngineError::NotInline | EngineError::KeysNeeded { .. } | EngineError::ClearFirst => {
            ErrorCode::Storage
        }
    };
    let message = match err {
        EngineError::Locked => "the vault is locked (run `vaultctl unlock`)".to_owned(),
        EngineError::Uninitialized => {
            "the vault is not initialized (run `vaultctl init`)".to_owned()
        }
        EngineError::BadPassphrase if !retry_after.is_zero() => format!(
            "wrong passphrase; the next attempt is accepted after {} ms",
            retry_after.as_millis()
        ),
        other => other.to_string(),
    };
    WireError { code, message }
}

/// The answer to a passphrase attempt the throttle refused without judging it: the
/// `bad_passphrase` of a wrong one (so older clients need nothing new) marked `unchecked`,
/// with a message that says so.
pub fn not_judged(retry_after: Duration) -> WireError {
    // Rounded up, and never 0, which would read as "try again now".
    let ms = u64::try_from(retry_after.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1);
    WireError {
        code: ErrorCode::BadPassphrase {
            retry_after_ms: ms,
            unchecked: true,
        },
        message: format!(
            "{NOT_CHECKED}: attempts are held back after a wrong passphrase (or while another \
             attempt is checked); the next attempt is accepted after {ms} ms"
        ),
    }
}

impl From<EngineError> for WireError {
    fn from(err: EngineError) -> Self {
        from_engine(&err, Duration::ZERO)
    }
}
