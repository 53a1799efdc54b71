//! [`VaultError`]: why a [`VaultSession`](crate::VaultSession) operation failed.
//!
//! Typed so that a bot can match on what matters to it (the vault is locked, another process
//! holds the session, the session does not exist) and `Send + Sync + 'static`, so that
//! `grammers_session::storages::erase` accepts a `VaultSession`.

use std::path::PathBuf;

use session_vault_proto::message::{ErrorCode, WireError};

use crate::connection::ClientError;

/// Why a [`VaultSession`](crate::VaultSession) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault is locked, and the session's policy is not to wait (or it waited as long as
    /// [`wait_for_unlock`](crate::VaultSessionBuilder::wait_for_unlock) allowed).
    #[error("the vault is locked (run `vaultctl unlock`)")]
    Locked,
    /// Another process holds the session's lease (it opened the session exclusively).
    #[error("session {name:?} is in use by {}", holder_pid.map_or("another client".to_owned(), |p| format!("pid {p}")))]
    SessionBusy {
        /// The session's name.
        name: String,
        /// Pid of the lease holder, where the daemon knows it.
        holder_pid: Option<u32>,
    },
    /// No session by that name (and `create_if_missing` was not asked for).
    #[error("no session named {name:?} in the vault")]
    NoSuchSession {
        /// The session's name.
        name: String,
    },
    /// This process's uid may not use the session (or make the request).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The daemon's explanation.
        message: String,
    },
    /// Nothing answers at the socket path.
    #[error("cannot reach the Session Vault daemon at {}: {source}", path.display())]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The connection to the daemon was lost and could not be re-established in time.
    #[error("the connection to the Session Vault daemon was lost and could not be re-established")]
    Disconnected,
    /// An admin ended this client's connection (`vaultctl disconnect`). Final: the session
    /// does not reconnect, and every later request fails with this error; connect anew to
    /// use the vault again.
    #[error("an admin disconnected this client (vaultctl disconnect); it does not reconnect")]
    DisconnectedByAdmin,
    /// The daemon sent something this client does not understand.
    #[error("protocol error talking to the Session Vault daemon: {0}")]
    Protocol(String),
    /// Any other error the daemon answered with (`Corrupt`, `Storage`, `InvalidRequest`, a
    /// protocol version mismatch, …).
    #[error("the Session Vault daemon refused the request: {0}")]
    Daemon(WireError),
}

impl VaultError {
    /// The same error for another caller (a write sent on behalf of several tasks fails for
    /// each of them). An I/O source is copied as its kind and message.
    pub(crate) fn duplicate(&self) -> VaultError {
        match self {
            VaultError::Locked => VaultError::Locked,
            VaultError::SessionBusy { name, holder_pid } => VaultError::SessionBusy {
                name: name.clone(),
                holder_pid: *holder_pid,
            },
            VaultError::NoSuchSession { name } => VaultError::NoSuchSession { name: name.clone() },
            VaultError::PermissionDenied { message } => VaultError::PermissionDenied {
                message: message.clone(),
            },
            VaultError::Unreachable { path, source } => VaultError::Unreachable {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            VaultError::Disconnected => VaultError::Disconnected,
            VaultError::DisconnectedByAdmin => VaultError::DisconnectedByAdmin,
            VaultError::Protocol(m) => VaultError::Protocol(m.clone()),
            VaultError::Daemon(e) => VaultError::Daemon(e.clone()),
        }
    }

    /// The daemon's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            VaultError::Locked => Some(ErrorCode::Locked),
            VaultError::SessionBusy { holder_pid, .. } => Some(ErrorCode::SessionBusy {
                holder_pid: *holder_pid,
            }),
            VaultError::NoSuchSession { .. } => Some(ErrorCode::NoSuchSession),
            VaultError::PermissionDenied { .. } => Some(ErrorCode::PermissionDenied),
            VaultError::Daemon(e) => Some(e.code.clone()),
            _ => None,
        }
    }

    /// Builds the error for a daemon answer about session `name`.
    pub(crate) fn from_wire(e: WireError, name: &str) -> VaultError {
        match e.code {
            ErrorCode::Locked => VaultError::Locked,
            ErrorCode::SessionBusy { holder_pid } => VaultError::SessionBusy {
                name: name.to_owned(),
                holder_pid,
            },
            ErrorCode::NoSuchSession => VaultError::NoSuchSession {
                name: name.to_owned(),
            },
            ErrorCode::PermissionDenied => VaultError::PermissionDenied { message: e.message },
            _ => VaultError::Daemon(e),
        }
    }
}

/// How the retry loop treats a failed request.
pub(crate) enum Failure {
    /// The connection is gone (or going): reconnect, re-open, retry.
    Transient(VaultError),
    /// The vault is locked: wait for unlock if the policy says so, then retry.
    Locked,
    /// Anything else: give the error to the caller.
    Fatal(VaultError),
}

impl Failure {
    /// Classifies a connection-level error for session `name`.
    pub(crate) fn of(e: ClientError, name: &str) -> Failure {
        match e {
            ClientError::Disconnected => Failure::Transient(VaultError::Disconnected),
            // A failed write or read of a frame means the stream is broken.
            ClientError::Frame(session_vault_proto::FrameError::Io(_))
            | ClientError::Frame(session_vault_proto::FrameError::Truncated) => {
                Failure::Transient(VaultError::Disconnected)
            }
            ClientError::Unreachable { path, source } => {
                Failure::Transient(VaultError::Unreachable { path, source })
            }
            ClientError::Daemon(w) | ClientError::Handshake(w) => match w.code {
                ErrorCode::Locked => Failure::Locked,
                ErrorCode::ShuttingDown => Failure::Transient(VaultError::Disconnected),
                _ => Failure::Fatal(VaultError::from_wire(w, name)),
            },
            ClientError::Frame(f) => Failure::Fatal(VaultError::Protocol(f.to_string())),
            ClientError::Unexpected(what) => Failure::Fatal(VaultError::Protocol(format!(
                "unexpected response to {what}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use grammers_session::storages::{ErasedSession, erase};

    use crate::VaultSession;

    /// The module's promise, checked by the compiler: `erase` takes a `VaultSession`.
    #[test]
    fn erase_accepts_a_vault_session() {
        let _erase: fn(Arc<VaultSession>) -> Arc<ErasedSession> = erase::<VaultSession>;
    }
}
