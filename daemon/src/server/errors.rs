//! Mapping of engine errors to wire errors: a code to match on and a message for a person.

use std::time::Duration;

use session_vault_proto::message::{ErrorCode, WireError};

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

impl From<VaultError> for WireError {
    fn from(err: VaultError) -> Self {
        from_vault(&err, Duration::ZERO)
    }
}
