//! Mapping of engine errors to wire errors: a code to match on and a message for a person.

use std::time::Duration;

use session_vault_proto::message::{ErrorCode, WireError};

use super::throttle::NOT_CHECKED;
use crate::vault::VaultError;

/// A wire error from a code and a message.
pub fn wire(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError {
        code,
        message: message.into(),
    }
}

/// The wire form of an engine error. `retry_after` is the throttle's delay for
/// `BadPassphrase`.
pub fn from_vault(err: &VaultError, retry_after: Duration) -> WireError {
    let code = match err {
        VaultError::Uninitialized => ErrorCode::Uninitialized,
        VaultError::AlreadyInitialized => ErrorCode::AlreadyInitialized,
        VaultError::Locked => ErrorCode::Locked,
        VaultError::BadPassphrase => ErrorCode::BadPassphrase {
            retry_after_ms: retry_after.as_millis() as u64,
            unchecked: false,
        },
        VaultError::WeakPassphrase(_) => ErrorCode::WeakPassphrase,
        VaultError::NoSuchSession { .. } => ErrorCode::NoSuchSession,
        VaultError::NameTaken { .. } => ErrorCode::NameTaken,
        VaultError::Invalid(_) => ErrorCode::InvalidRequest,
        VaultError::Corrupt { .. } | VaultError::NotAVault { .. } => ErrorCode::Corrupt,
        VaultError::UnsupportedFormat { .. } => ErrorCode::Unsupported,
        VaultError::Storage { .. } => ErrorCode::Storage,
        VaultError::Closed => ErrorCode::ShuttingDown,
    };
    let message = match err {
        VaultError::Locked => "the vault is locked (run `vaultctl unlock`)".to_owned(),
        VaultError::Uninitialized => {
            "the vault is not initialized (run `vaultctl init`)".to_owned()
        }
        VaultError::BadPassphrase if !retry_after.is_zero() => format!(
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

impl From<VaultError> for WireError {
    fn from(err: VaultError) -> Self {
        from_vault(&err, Duration::ZERO)
    }
}
